"""The official `openai` package's Responses API (`client.responses`) against tollgate-proxy.

Run by proxy/tests/it/sdk/openai_responses.rs, which starts the proxy in front of one backend and
passes:
  TOLLGATE_BASE_URL  e.g. http://127.0.0.1:PORT/team-a/chat/v1
  TOLLGATE_KEY       the consumer's key
  EXPECT_TEXT        the backend's plain answer ("Hello from openai")
  STORED             "yes" if the backend keeps responses (OpenAI passthrough), else "no"
Prints one line per check and a final "N passed, N failed"; exits non-zero on any failure.
"""

import json
import os

import openai
from sdk_checks import BASE, KEY, run

EXPECT = os.environ["EXPECT_TEXT"]
STORED = os.environ["STORED"] == "yes"
MODEL = "front-model"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def client():
    return openai.OpenAI(base_url=BASE, api_key=KEY, max_retries=0, timeout=20)


def text():
    r = client().responses.create(model=MODEL, input="Say hello", instructions="Be brief.", store=False)
    assert r.object == "response" and r.status == "completed", r
    assert r.output_text == EXPECT, r.output_text
    assert r.output[0].type == "message" and r.output[0].role == "assistant", r.output
    assert r.usage.output_tokens > 0 and r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.input_tokens_details.cached_tokens > 0, r.usage


def streamed():
    events = list(client().responses.create(model=MODEL, input="Say hello", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert kinds[-1] == "response.completed", kinds
    assert "response.output_item.added" in kinds and "response.output_item.done" in kinds, kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == EXPECT, deltas
    done = events[-1].response
    assert done.output_text == EXPECT and done.usage.total_tokens > 0, done


def streamed_with_the_helper():
    # The SDK's stream helper rebuilds the response from the events and checks they fit together.
    with client().responses.stream(model=MODEL, input="Say hello") as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert deltas == EXPECT and final.output_text == EXPECT, (deltas, final)


def tool_round_trip():
    c = client()
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = c.responses.create(model=MODEL, input=question, tools=[WEATHER])
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather", first.output
    assert json.loads(calls[0].arguments) == {"city": "Paris"}, calls[0].arguments
    follow = question + [o.model_dump(exclude_none=True) for o in first.output]
    follow.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"})
    second = c.responses.create(model=MODEL, input=follow, tools=[WEATHER])
    assert second.output_text == "The tool said: sunny", second.output_text


def streamed_tool_call():
    events = list(
        client().responses.create(
            model=MODEL, input="Weather in Paris?", tools=[WEATHER], tool_choice="required", stream=True
        )
    )
    added = [e.item for e in events if e.type == "response.output_item.added" and e.item.type == "function_call"]
    assert len(added) == 1 and added[0].name == "get_weather", added
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "Paris"}, args
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done and done[0].arguments == args, done
    final = events[-1].response
    assert [o.type for o in final.output][-1] == "function_call", final.output


def json_schema_output():
    r = client().responses.create(
        model=MODEL,
        input="Which city? Answer as JSON.",
        text={
            "format": {
                "type": "json_schema",
                "name": "city",
                "schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
                "strict": True,
            }
        },
    )
    assert json.loads(r.output_text) == {"city": "Paris"}, r.output_text


def stored_state():
    c = client()
    if STORED:
        r = c.responses.create(model=MODEL, input="Say hello", store=True)
        again = c.responses.create(model=MODEL, input="And again", previous_response_id=r.id)
        assert again.previous_response_id == r.id, again
        return
    for kwargs in ({"store": True}, {"previous_response_id": "resp_123"}):
        try:
            c.responses.create(model=MODEL, input="Say hello", **kwargs)
        except openai.BadRequestError as e:
            param = next(iter(kwargs))
            assert e.status_code == 400 and e.param == param, (e.status_code, e.param)
            assert "OpenAI" in e.message, e.message
            continue
        raise AssertionError(f"no BadRequestError for {kwargs}")


def shown_reasoning():
    # Translated backends show their reasoning (Anthropic's thinking) as a reasoning item; the
    # OpenAI backend's own reasoning is OpenAI's business and is not asked for here.
    if STORED:
        return
    r = client().responses.create(model=MODEL, input="Say hello", reasoning={"effort": "low"})
    assert [o.type for o in r.output] == ["reasoning", "message"], r.output
    thought = r.output[0].content[0].text
    assert r.output[0].content[0].type == "reasoning_text" and thought, r.output[0]
    assert r.output_text == EXPECT, r.output_text
    with client().responses.stream(model=MODEL, input="Say hello", reasoning={"effort": "low"}) as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.reasoning_text.delta")
        final = stream.get_final_response()
    assert deltas == thought, (deltas, thought)
    assert final.output[0].type == "reasoning" and final.output[0].content[0].text == thought, final.output
    assert final.output_text == EXPECT, final.output_text


def unknown_model():
    try:
        client().responses.create(model="gpt-unknown", input="x")
    except openai.NotFoundError as e:
        assert e.code == "model_not_found", e.code
        return
    raise AssertionError("no NotFoundError")


CHECKS = [
    text,
    streamed,
    streamed_with_the_helper,
    tool_round_trip,
    streamed_tool_call,
    json_schema_output,
    stored_state,
    shown_reasoning,
    unknown_model,
]


if __name__ == "__main__":
    run(openai, CHECKS)
