"""How late a streamed answer's text reaches the caller through the proxy: the delay of every byte of text.

Runs a slow OpenAI-shaped upstream on 127.0.0.1 (one SSE chunk of a few bytes every --gap-ms) and a
client that streams chat calls through the proxy, both in this process on one clock. For every byte of
the answer's text: the time from the upstream's write of the chunk holding it to the client's receipt
of the event holding it, and how many more bytes of text the upstream had written by then. Prints one
JSON object. Standard library only; used by bench/guardrails.sh, not part of the test suite.
"""

import argparse
import http.client
import http.server
import json
import statistics
import threading
import time

WORDS = "the quarterly report lists revenue by region and the forecast for next year " \
    "with notes on hiring plans travel budgets and the new office lease terms".split()


def pieces(count):
    """The answer's text in the upstream's chunks: a word and a space each, like a model's tokens."""
    return [WORDS[i % len(WORDS)] + " " for i in range(count)]


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    writes = []  # (time after the write, text bytes written so far) of the stream being answered
    settings = None

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        writes = Upstream.writes
        writes.clear()
        written = 0

        def send(event):
            data = ("data: " + json.dumps(event) + "\n\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def chunk(delta, finish=None):
            return {"id": "chatcmpl-delay", "object": "chat.completion.chunk", "created": 1700000000,
                    "model": "bench-chat",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        gap = Upstream.settings.gap_ms / 1000
        for i, text in enumerate(pieces(Upstream.settings.pieces)):
            delta = {"role": "assistant", "content": text} if i == 0 else {"content": text}
            send(chunk(delta))
            written += len(text.encode())
            writes.append((time.perf_counter(), written))
            time.sleep(gap)
        send(chunk({}, "stop"))
        send({"id": "chatcmpl-delay", "object": "chat.completion.chunk", "created": 1700000000,
              "model": "bench-chat", "choices": [],
              "usage": {"prompt_tokens": 20, "completion_tokens": Upstream.settings.pieces,
                        "total_tokens": 20 + Upstream.settings.pieces}})
        data = b"data: [DONE]\n\n"
        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
        self.wfile.flush()


def one_stream(args):
    """(per-byte delays in ms, per-byte bytes written after it by the time it arrived) of one call."""
    conn = http.client.HTTPConnection("127.0.0.1", args.proxy_port, timeout=30)
    body = json.dumps({"model": "bench-chat", "stream": True,
                       "messages": [{"role": "user", "content": "Summarise the quarterly report."}]})
    conn.request("POST", args.prefix + "/v1/chat/completions", body=body,
                 headers={"authorization": "Bearer " + args.key, "content-type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit(f"the proxy answered {resp.status}: {resp.read()[:300]!r}")
    received = []  # (time, text bytes received so far)
    text = b""
    while True:
        line = resp.readline()
        if not line:
            break
        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
            continue
        event = json.loads(line[6:])
        for choice in event.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                text += content.encode()
                received.append((time.perf_counter(), len(text)))
    conn.close()
    expected = "".join(pieces(args.pieces)).encode()
    if text != expected:
        raise SystemExit(f"the text arrived changed ({len(text)} bytes, {len(expected)} sent)")
    writes = list(Upstream.writes)
    delays, behind = [], []
    w = 0
    r = 0
    for pos in range(1, len(text) + 1):
        while writes[w][1] < pos:
            w += 1
        while received[r][1] < pos:
            r += 1
        arrived = received[r][0]
        delays.append((arrived - writes[w][0]) * 1000)
        later = max((n for t, n in writes if t <= arrived), default=pos)
        behind.append(max(later - pos, 0))
    return delays, behind


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--upstream-port", type=int, required=True)
    p.add_argument("--proxy-port", type=int, required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--streams", type=int, default=10)
    p.add_argument("--pieces", type=int, default=200)
    p.add_argument("--gap-ms", type=float, default=2.0)
    args = p.parse_args()
    Upstream.settings = args
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.upstream_port), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    one_stream(args)  # warm-up: connections, first-call work
    delays, behind = [], []
    for _ in range(args.streams):
        d, b = one_stream(args)
        delays += d
        behind += b
    server.shutdown()
    delays.sort()
    writes = Upstream.writes
    rate = writes[-1][1] / (writes[-1][0] - writes[0][0])  # text bytes per second, upstream
    print(json.dumps({
        "bytes": len(delays),
        "delay_ms_p50": round(statistics.median(delays), 2),
        "delay_ms_p99": round(delays[int(len(delays) * 0.99)], 2),
        "delay_ms_max": round(delays[-1], 2),
        "behind_bytes_max": max(behind),
        "upstream_bytes_per_s": round(rate),
    }))


if __name__ == "__main__":
    main()
