"""The official `openai` Python package meets Tollgate's limits: a 429 is `openai.RateLimitError` with the
retry hint, and a spent budget is one the SDK does not retry.

Run by proxy/tests/python_limits.rs, which starts a standalone proxy and passes:
  TOLLGATE_BASE_URL   e.g. http://127.0.0.1:PORT/limited/v1
  TOLLGATE_KEY        a key whose subscription allows 2 requests per minute
  TOLLGATE_BROKE_KEY  a key whose consumer has a budget of 0 USD
Prints one line per check and a final "N passed, N failed"; exits non-zero on any failure.
"""

import os
import time

import openai
from sdk_checks import BASE, KEY, run

BROKE = os.environ["TOLLGATE_BROKE_KEY"]
MESSAGES = [{"role": "user", "content": "Hello from the OpenAI SDK"}]


def client(key, retries=0):
    return openai.OpenAI(base_url=BASE, api_key=key, max_retries=retries, timeout=20)


def headers_on_success():
    raw = client(KEY).chat.completions.with_raw_response.create(model="fake-chat", messages=MESSAGES)
    assert raw.headers["x-ratelimit-limit-requests"] == "2", dict(raw.headers)
    assert raw.headers["x-ratelimit-remaining-requests"] == "1", dict(raw.headers)
    assert raw.headers["x-ratelimit-reset-requests"].endswith("s"), dict(raw.headers)
    assert raw.parse().choices[0].message.content


def rate_limit_error_with_retry_hint():
    client(KEY).chat.completions.create(model="fake-chat", messages=MESSAGES)
    try:
        client(KEY).chat.completions.create(model="fake-chat", messages=MESSAGES)
    except openai.RateLimitError as e:
        assert e.status_code == 429, e.status_code
        assert e.code == "rate_limit_exceeded", e.code
        assert e.type == "requests", e.type
        assert "Please try again in" in e.message, e.message
        retry_after = int(e.response.headers["retry-after"])
        assert 1 <= retry_after <= 60, retry_after
        assert int(e.response.headers["retry-after-ms"]) > 0
        assert e.response.headers["x-ratelimit-remaining-requests"] == "0"
        return
    raise AssertionError("no RateLimitError")


def budget_exceeded_is_not_retried():
    started = time.monotonic()
    try:
        # Retries allowed: the SDK must still give up at once, told so by x-should-retry.
        client(BROKE, retries=3).chat.completions.create(model="fake-chat", messages=MESSAGES)
    except openai.RateLimitError as e:
        assert e.code == "budget_exceeded", e.code
        assert e.type == "insufficient_quota", e.type
        assert e.response.headers["x-should-retry"] == "false"
        assert int(e.response.headers["retry-after"]) > 0
        assert time.monotonic() - started < 5, "the SDK waited to retry"
        return
    raise AssertionError("no RateLimitError")


CHECKS = [headers_on_success, rate_limit_error_with_retry_hint, budget_exceeded_is_not_retried]


if __name__ == "__main__":
    run(openai, CHECKS)
