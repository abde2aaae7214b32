"""An upstream MCP server for the federation tests, written with the official SDK's FastMCP (1.x:
`mcp.server.fastmcp.FastMCP`, the 2025-11-25 era with sessions; 2.x: `mcp.server.mcpserver.MCPServer`,
which also serves the stateless 2026-07-28 revision). Listens on 127.0.0.1:<port> at /mcp and appends
the headers of every request it receives, and its `params._meta` under the key `_meta`, as one JSON
object per line, to <record file>, so that a test can check what reached it (the gateway's credential,
never the caller's key; the trace context).

    python mcp_upstream.py <port> <record file>
"""

import json
import sys

import uvicorn

try:
    from mcp.server.mcpserver import MCPServer as Server  # 2.x
except ImportError:
    from mcp.server.fastmcp import FastMCP as Server  # 1.x

port, record = int(sys.argv[1]), sys.argv[2]
mcp = Server("upstream")


@mcp.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@mcp.tool()
def echo(text: str) -> str:
    """Says the text back."""
    return text


@mcp.tool()
def hidden() -> str:
    """A tool the routes filter out."""
    return "should not be reachable"


inner = mcp.streamable_http_app()


async def app(scope, receive, send):
    if scope["type"] != "http":
        await inner(scope, receive, send)
        return
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    # The body is read here to record its params._meta (under the key "_meta"), then handed on.
    received, body, more = [], b"", True
    while more:
        message = await receive()
        received.append(message)
        body += message.get("body", b"")
        more = message.get("more_body", False) and message["type"] == "http.request"
    try:
        headers["_meta"] = json.loads(body).get("params", {}).get("_meta")
    except (ValueError, AttributeError):
        headers["_meta"] = None
    with open(record, "a") as out:
        out.write(json.dumps(headers) + "\n")

    async def replay():
        return received.pop(0) if received else await receive()

    await inner(scope, replay, send)


uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
