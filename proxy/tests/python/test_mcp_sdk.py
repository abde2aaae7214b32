"""The official MCP Python SDK (PyPI `mcp`, line 1.x or 2.x, whichever the venv holds) against a
route's MCP endpoint on a real proxy.

Environment: MCP_URL (the route's `<prefix>/mcp`), MCP_KEY (subscribed), MCP_UNSUBSCRIBED_KEY (a valid
key without a subscription), MCP_PROMPT_TOOL, MCP_REST_TOOL; MCP_CONSUMER_SCOPE=1 when MCP_URL is the
consumer scope `/mcp` (a consumer approved nowhere then sees no tools rather than an error);
MCP_FEDERATED_TOOLS, when set, names tools of upstream MCP servers (comma-separated) that add two integers
`a` and `b`; MCP_ALT_URL, when set, is another replica:
every HTTP request then goes to the two replicas in turn, so that a session (1.x) begun on one must
continue on the other. Exits non-zero on the first failed check.
"""

import asyncio
import contextlib
import importlib.metadata
import itertools
import os
import sys

LINE = int(importlib.metadata.version("mcp").split(".")[0])

if LINE >= 2:
    import httpx2 as httpx
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
else:
    import httpx
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

URL = os.environ["MCP_URL"]
ALT = os.environ.get("MCP_ALT_URL")
KEY = os.environ["MCP_KEY"]
PROMPT_TOOL = os.environ["MCP_PROMPT_TOOL"]
REST_TOOL = os.environ["MCP_REST_TOOL"]


def field(obj, snake, camel):
    """A result field under the 2.x (snake_case) or 1.x (camelCase) name."""
    return getattr(obj, snake) if hasattr(obj, snake) else getattr(obj, camel)


class Alternate(httpx.AsyncBaseTransport):
    """Sends each request to the next of the two replicas, whatever URL it names."""

    def __init__(self, ports):
        self.inner = httpx.AsyncHTTPTransport()
        self.ports = itertools.cycle(ports)
        self.seen = []

    async def handle_async_request(self, request):
        port = next(self.ports)
        self.seen.append(port)
        request.url = request.url.copy_with(port=port)
        return await self.inner.handle_async_request(request)

    async def aclose(self):
        await self.inner.aclose()


def http_client(key, transport=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30.0), transport=transport)


@contextlib.asynccontextmanager
async def connect(key, transport=None, mode=None):
    """A connected client session: 2.x's `Client` (negotiating the era itself), or 1.x's
    `ClientSession` after `initialize`."""
    async with http_client(key, transport) as client:
        if LINE >= 2:
            kwargs = {"mode": mode} if mode else {}
            async with Client(streamable_http_client(URL, http_client=client), **kwargs) as session:
                yield session
        else:
            async with streamable_http_client(URL, http_client=client) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    yield session


def error_of(exc):
    """The JSON-RPC error data an SDK exception carries, or None."""
    error = getattr(exc, "error", None)
    if error is None:
        for inner in getattr(exc, "exceptions", []):
            found = error_of(inner)
            if found is not None:
                return found
    return error


async def expect_refusal(key, code):
    """Connecting and listing tools with `key` fails, naming `code` when the SDK can read it."""
    try:
        async with connect(key) as session:
            await session.list_tools()
    except BaseException as exc:  # the SDKs raise their own errors, or exception groups of them
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        error = error_of(exc)
        if code is not None:
            assert error is not None, f"no JSON-RPC error in {exc!r}"
            assert error.data and error.data.get("code") == code, error
        return
    raise AssertionError(f"the key was accepted; expected {code}")


async def main():
    transport = None
    if ALT:
        ports = [httpx.URL(URL).port, httpx.URL(ALT).port]
        transport = Alternate(ports)
    modes = [None, "legacy"] if LINE >= 2 and not ALT else [None]
    for mode in modes:
        async with connect(KEY, transport, mode) as session:
            tools = await session.list_tools()
            names = [t.name for t in tools.tools]
            assert PROMPT_TOOL in names and REST_TOOL in names, names
            prompt_tool = next(t for t in tools.tools if t.name == PROMPT_TOOL)
            schema = field(prompt_tool, "input_schema", "inputSchema")
            assert "text" in schema["properties"], schema

            result = await session.call_tool(PROMPT_TOOL, {"text": "MCP clients reach tools over HTTP."})
            assert not field(result, "is_error", "isError"), result
            text = result.content[0].text
            assert text, result

            result = await session.call_tool(REST_TOOL, {"id": "42", "verbose": True})
            assert not field(result, "is_error", "isError"), result
            structured = field(result, "structured_content", "structuredContent")
            assert structured["path"] == "/v2/items/42", structured
            assert structured["query"] == "verbose=true", structured

            prompts = await session.list_prompts()
            assert PROMPT_TOOL in [p.name for p in prompts.prompts], prompts
            got = await session.get_prompt(PROMPT_TOOL, {"text": "abc"})
            texts = [m.content.text for m in got.messages]
            assert any("abc" in t for t in texts), texts

            # Bad arguments: the tool reports them for the model to correct.
            result = await session.call_tool(PROMPT_TOOL, {"nope": 1})
            assert field(result, "is_error", "isError"), result
            assert "nope" in result.content[0].text, result

            # Tools of upstream MCP servers behind the route, called through it.
            for tool in filter(None, os.environ.get("MCP_FEDERATED_TOOLS", "").split(",")):
                assert tool in names, (tool, names)
                result = await session.call_tool(tool, {"a": 2, "b": 3})
                assert not field(result, "is_error", "isError"), result
                assert result.content[0].text == "5", result

            # An unknown tool is a protocol error.
            try:
                await session.call_tool("no_such_tool", {})
                raise AssertionError("an unknown tool was called")
            except Exception as exc:
                error = error_of(exc)
                assert error is not None and error.code == -32602, repr(exc)
        print(f"mcp {LINE}.x mode={mode or 'auto'}: tools, prompt tool, REST tool, prompts, bad arguments, unknown tool: ok")
    if ALT:
        assert len(set(transport.seen)) == 2, transport.seen
        print(f"mcp {LINE}.x: {len(transport.seen)} requests alternated between both replicas: ok")
        return

    await expect_refusal("tg-not-a-key", "invalid_api_key" if LINE >= 2 else None)
    if os.environ.get("MCP_CONSUMER_SCOPE") == "1":
        async with connect(os.environ["MCP_UNSUBSCRIBED_KEY"]) as session:
            tools = await session.list_tools()
            assert tools.tools == [], tools
        print(f"mcp {LINE}.x: bad key refused, a consumer approved nowhere sees no tools: ok")
        return
    await expect_refusal(os.environ["MCP_UNSUBSCRIBED_KEY"], "not_subscribed")
    print(f"mcp {LINE}.x: bad key and unsubscribed consumer refused: ok")


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(), 120))
    except BaseException as exc:
        import traceback

        traceback.print_exception(exc)
        sys.exit(1)
