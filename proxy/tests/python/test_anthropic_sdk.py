"""The official `anthropic` Python package against Tollgate's `<prefix>/v1/messages`.

Run by proxy/tests/anthropic_sdk.rs once per backend, which starts the proxy and passes:
  TOLLGATE_BASE_URL  the route prefix, e.g. http://127.0.0.1:PORT/team-a/chat (the SDK adds /v1/messages)
  TOLLGATE_KEY       a consumer key
  EXPECT_TEXT        what the backend answers to a plain prompt
  COUNTED_TOKENS     what count_tokens answers for ASK and TOOLS, or "estimated" when the backend cannot count
Prints one line per check and a final "N passed, N failed"; exits non-zero on any failure.
"""

import os

import anthropic
from sdk_checks import BASE, KEY, run

EXPECT = os.environ["EXPECT_TEXT"]
TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
ASK = [{"role": "user", "content": "Weather in Paris?"}]


def client(key=KEY):
    return anthropic.Anthropic(base_url=BASE, api_key=key, max_retries=0, timeout=20)


def text():
    m = client().messages.create(model="front-model", max_tokens=100, messages=[{"role": "user", "content": "hi"}])
    assert m.type == "message" and m.role == "assistant", m
    assert m.content[0].type == "text" and m.content[0].text == EXPECT, m.content
    assert m.stop_reason == "end_turn", m.stop_reason
    assert m.usage.output_tokens > 0 and m.usage.input_tokens > 0, m.usage


def streaming():
    with client().messages.stream(
        model="front-model", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) >= 2, pieces
    assert "".join(pieces) == EXPECT, pieces
    assert final.stop_reason == "end_turn", final.stop_reason
    assert final.usage.output_tokens > 0, final.usage


def tool_call():
    m = client().messages.create(model="front-model", max_tokens=200, tools=TOOLS, messages=ASK)
    assert m.stop_reason == "tool_use", m.stop_reason
    use = [b for b in m.content if b.type == "tool_use"]
    assert len(use) == 1 and use[0].name == "get_weather" and use[0].input == {"city": "Paris"}, m.content
    follow = ASK + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use[0].id, "content": "sunny"}]},
    ]
    r = client().messages.create(model="front-model", max_tokens=200, tools=TOOLS, messages=follow)
    assert r.content[0].text == "The tool said: sunny", r.content
    assert r.stop_reason == "end_turn"


def streamed_tool_call():
    with client().messages.stream(model="front-model", max_tokens=200, tools=TOOLS, messages=ASK) as stream:
        final = stream.get_final_message()
    use = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use", final.stop_reason
    assert len(use) == 1 and use[0].input == {"city": "Paris"}, final.content


def bad_key():
    try:
        client("tg-not-a-key").messages.create(
            model="front-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    except anthropic.AuthenticationError as e:
        assert e.status_code == 401
        assert e.body["error"]["type"] == "authentication_error", e.body
        return
    raise AssertionError("no AuthenticationError")


def count_tokens():
    raw = client().messages.with_raw_response.count_tokens(
        model="front-model", system="Be brief.", messages=ASK, tools=TOOLS
    )
    counted = raw.parse()
    if os.environ["COUNTED_TOKENS"] == "estimated":
        assert raw.headers.get("x-tollgate-token-count") == "estimated", dict(raw.headers)
        assert counted.input_tokens > 0, counted
    else:
        assert counted.input_tokens == int(os.environ["COUNTED_TOKENS"]), counted
        assert raw.headers.get("x-tollgate-token-count") is None


def beta_header():
    m = client().messages.create(
        model="front-model",
        max_tokens=100,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-beta": "token-efficient-tools-2025-02-19", "anthropic-version": "2023-01-01"},
    )
    assert m.content[0].text == EXPECT, m.content


def thinking_stream():
    # Anthropic backends think in thinking blocks; reasoning OpenAI-compatible ones in reasoning_content,
    # which arrives here as thinking blocks too.
    with client().messages.stream(
        model="front-model",
        max_tokens=4000,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[{"role": "user", "content": "hi"}],
    ) as stream:
        thoughts = "".join(e.thinking for e in stream if e.type == "thinking")
        final = stream.get_final_message()
    assert thoughts == "Let me think.", thoughts
    assert [b.type for b in final.content] == ["thinking", "text"], final.content
    assert final.content[0].thinking == "Let me think." and final.content[1].text == EXPECT, final.content
    whole = client().messages.create(
        model="front-model",
        max_tokens=4000,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[{"role": "user", "content": "hi"}],
    )
    assert whole.content[0].type == "thinking" and whole.content[0].thinking == "Let me think.", whole.content


CHECKS = [text, streaming, tool_call, streamed_tool_call, bad_key, count_tokens, beta_header, thinking_stream]


if __name__ == "__main__":
    run(anthropic, CHECKS)
