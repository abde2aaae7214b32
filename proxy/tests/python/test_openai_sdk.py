"""The official `openai` Python package against a standalone tollgate-proxy serving the quickstart.

Run by proxy/tests/python_sdk.rs, which starts the proxy and passes:
  TOLLGATE_BASE_URL      e.g. http://127.0.0.1:PORT/demo/v1
  TOLLGATE_KEY           the quickstart consumer's key
  TOLLGATE_UNSUBSCRIBED  a valid key of a consumer without a subscription
Prints one line per check and a final "N passed, N failed"; exits non-zero on any failure.
"""

import os

import openai
from sdk_checks import BASE, KEY, run

UNSUBSCRIBED = os.environ["TOLLGATE_UNSUBSCRIBED"]
MESSAGES = [{"role": "user", "content": "Hello from the OpenAI SDK"}]


def client(key=KEY):
    return openai.OpenAI(base_url=BASE, api_key=key, max_retries=0, timeout=20)


def chat():
    r = client().chat.completions.create(model="fake-chat", messages=MESSAGES)
    assert r.object == "chat.completion", r
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == "stop"
    assert len(r.choices[0].message.content.split(" ")) == 12, r.choices[0].message.content
    assert r.usage.completion_tokens == 12 and r.usage.total_tokens == r.usage.prompt_tokens + 12, r.usage
    return r.choices[0].message.content


def streaming_chat():
    whole = chat()
    stream = client().chat.completions.create(model="fake-chat", messages=MESSAGES, stream=True)
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert all(c.choices for c in chunks), "a usage-only chunk reached a client that did not ask for it"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole, (text, whole)
    assert chunks[-1].choices[0].finish_reason == "stop"


def streaming_chat_with_usage():
    stream = client().chat.completions.create(
        model="fake-chat", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12, chunks[-1]


def embeddings():
    # The SDK asks for base64 and decodes it itself unless told otherwise.
    r = client().embeddings.create(model="fake-embed", input=["first", "second"])
    assert [d.index for d in r.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in r.data)
    norm = sum(x * x for x in r.data[0].embedding)
    assert abs(norm - 1.0) < 1e-3, norm
    f = client().embeddings.create(model="fake-embed", input="first", encoding_format="float")
    assert all(abs(a - b) < 1e-6 for a, b in zip(f.data[0].embedding, r.data[0].embedding))
    assert r.usage.prompt_tokens > 0


def models_list():
    ids = [m.id for m in client().models.list()]
    assert ids == ["fake-chat", "fake-embed"], ids
    assert client().models.retrieve("fake-embed").id == "fake-embed"


def bad_key():
    try:
        client("tg-not-a-key").chat.completions.create(model="fake-chat", messages=MESSAGES)
    except openai.AuthenticationError as e:
        assert e.status_code == 401 and e.code == "invalid_api_key", (e.status_code, e.code)
        return
    raise AssertionError("no AuthenticationError")


def unsubscribed_key():
    try:
        client(UNSUBSCRIBED).chat.completions.create(model="fake-chat", messages=MESSAGES)
    except openai.PermissionDeniedError as e:
        assert e.status_code == 403 and e.code == "not_subscribed", (e.status_code, e.code)
        return
    raise AssertionError("no PermissionDeniedError")


def unknown_model():
    try:
        client().chat.completions.create(model="gpt-unknown", messages=MESSAGES)
    except openai.NotFoundError as e:
        assert e.code == "model_not_found" and "fake-chat" in e.message, (e.code, e.message)
        return
    raise AssertionError("no NotFoundError")


CHECKS = [
    chat,
    streaming_chat,
    streaming_chat_with_usage,
    embeddings,
    models_list,
    bad_key,
    unsubscribed_key,
    unknown_model,
]


if __name__ == "__main__":
    run(openai, CHECKS)
