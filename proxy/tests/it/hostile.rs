//! Malformed and hostile requests against the real proxy binary (the quickstart, standalone): each
//! input with the exact answer it gets, and the proxy no worse off after all of them — it still
//! answers, its memory has not grown past a bound, and every connection the inputs opened is closed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::standalone_bin::Proxy;

const KEY: &str = "tg-quickstart-demo-key";
const CHAT: &str = "/demo/v1/chat/completions";
/// The proxy's limits for this test: small, so that the oversize inputs stay small too.
const MAX_BODY: usize = 64 * 1024;
const MAX_HEAD: usize = 16 * 1024;

/// What came back on one connection: the status line's code and the body, or nothing before the
/// proxy closed it.
#[derive(Debug, PartialEq)]
enum Answer {
    Status(u16, String),
    Closed,
    /// Neither an answer nor a close within 10 s.
    Silent,
}

impl Answer {
    fn status(&self) -> Option<u16> {
        match self {
            Answer::Status(s, _) => Some(*s),
            Answer::Closed | Answer::Silent => None,
        }
    }
}

/// What an input must get: a status, with the OpenAI error `code` when the proxy itself answered
/// (hyper's own refusals of a broken head have no body), or the connection closed with no answer.
#[derive(Debug)]
enum Want {
    Status(u16, Option<&'static str>),
    Closed,
}

/// Sends `bytes` on a fresh connection (in `pieces` with `pause` between them, for slow senders)
/// and reads until the proxy closes it or 10 s pass. The first answer on it counts.
fn exchange(port: u16, pieces: &[Vec<u8>], pause: Duration) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(pause);
        }
        // A proxy that has already refused may close before the rest is written.
        if s.write_all(piece).is_err() {
            break;
        }
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if got.is_empty() {
                    return Answer::Silent;
                }
                break;
            }
            Err(_) => break,
        }
    }
    parse_first(&got)
}

fn parse_first(got: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(got);
    let Some(code) = text
        .strip_prefix("HTTP/1.")
        .and_then(|t| t.get(2..5))
        .and_then(|c| c.parse().ok())
    else {
        return Answer::Closed;
    };
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Answer::Status(code, body)
}

/// A request head with the key, closing the connection after the answer.
fn head(method_target: &str, extra: &str) -> String {
    format!(
        "{method_target} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {KEY}\r\nconnection: close\r\n{extra}"
    )
}

/// A POST of `body` to the chat endpoint with a correct length.
fn post(body: &[u8]) -> Vec<u8> {
    post_to(CHAT, body)
}

/// A POST of `body` to `path` with a correct length.
fn post_to(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = head(
        &format!("POST {path}"),
        &format!(
            "content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        ),
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

const GOOD: &str = r#"{"model":"fake-chat","messages":[{"role":"user","content":"hi"}]}"#;

/// The table: name, the input's pieces, the pause between them, and what it must get.
fn table() -> Vec<(&'static str, Vec<Vec<u8>>, Duration, Want)> {
    let one = |b: Vec<u8>| vec![b];
    let raw = |s: &str| vec![s.as_bytes().to_vec()];
    let now = Duration::ZERO;
    let deep = format!(
        r#"{{"model":"fake-chat","messages":[{{"role":"user","content":{}1{}}}]}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let mut nul_header = head(&format!("POST {CHAT}"), "x-note: a\0b\r\n").into_bytes();
    nul_header
        .extend_from_slice(format!("content-length: {}\r\n\r\n{GOOD}", GOOD.len()).as_bytes());
    let big_header = head(
        &format!("POST {CHAT}"),
        &format!(
            "x-big: {}\r\ncontent-length: 0\r\n\r\n",
            "a".repeat(MAX_HEAD * 2)
        ),
    );
    let many_headers = head(
        &format!("POST {CHAT}"),
        &format!(
            "{}content-length: 0\r\n\r\n",
            (0..400)
                .map(|i| format!("x-h{i}: v\r\n"))
                .collect::<String>()
        ),
    );
    let long_uri = head(
        &format!("GET /demo/v1/models/{}", "m".repeat(MAX_HEAD * 2)),
        "\r\n",
    );
    let mut big_body = head(
        &format!("POST {CHAT}"),
        &format!(
            "content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            MAX_BODY + 1
        ),
    )
    .into_bytes();
    big_body.extend(std::iter::repeat_n(b' ', MAX_BODY + 1));
    let mut big_chunked = head(
        &format!("POST {CHAT}"),
        "transfer-encoding: chunked\r\n\r\n",
    )
    .into_bytes();
    for _ in 0..(MAX_BODY / 4096 + 2) {
        big_chunked.extend_from_slice(format!("1000\r\n{}\r\n", " ".repeat(4096)).as_bytes());
    }
    big_chunked.extend_from_slice(b"0\r\n\r\n");
    let mut bad_utf8 = br#"{"model":"fake-chat","messages":[{"role":"user","content":""#.to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    bad_utf8.extend_from_slice(br#""}]}"#);
    let pipelined = {
        let mut p = head(&format!("POST {CHAT}"), "")
            .replace("connection: close\r\n", "")
            .into_bytes();
        p.extend_from_slice(
            format!(
                "content-type: application/json\r\ncontent-length: {}\r\n\r\n{GOOD}",
                GOOD.len()
            )
            .as_bytes(),
        );
        let mut second = head("GET /demo/v1/models", "\r\n").into_bytes();
        p.append(&mut second);
        p
    };
    vec![
        (
            "a well-formed call, for reference",
            one(post(GOOD.as_bytes())),
            now,
            Want::Status(200, None),
        ),
        (
            // RFC 9112 §6.3: chunked wins, so the whole JSON is read (by the length, 3 bytes of it).
            "Content-Length and Transfer-Encoding together",
            raw(&format!(
                "{}content-length: 3\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{GOOD}\r\n0\r\n\r\n",
                head(&format!("POST {CHAT}"), ""),
                GOOD.len()
            )),
            now,
            Want::Status(200, None),
        ),
        (
            "two different Content-Lengths",
            raw(&format!(
                "{}content-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
                head(&format!("POST {CHAT}"), "")
            )),
            now,
            Want::Status(400, None),
        ),
        (
            "a Content-Length that is not a number",
            raw(&format!(
                "{}content-length: 5x\r\n\r\nhello",
                head(&format!("POST {CHAT}"), "")
            )),
            now,
            Want::Status(400, None),
        ),
        (
            "a negative Content-Length",
            raw(&format!(
                "{}content-length: -1\r\n\r\n",
                head(&format!("POST {CHAT}"), "")
            )),
            now,
            Want::Status(400, None),
        ),
        (
            "a Transfer-Encoding that does not end in chunked",
            raw(&format!(
                "{}transfer-encoding: gzip\r\n\r\nabc",
                head(&format!("POST {CHAT}"), "")
            )),
            now,
            Want::Status(400, None),
        ),
        (
            "a chunk size that is not hex",
            raw(&format!(
                "{}transfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
                head(&format!("POST {CHAT}"), "")
            )),
            now,
            Want::Status(400, Some("invalid_body")),
        ),
        (
            "a chunk larger than it says",
            raw(&format!(
                "{}transfer-encoding: chunked\r\n\r\n2\r\nabcdef\r\n0\r\n\r\n",
                head(&format!("POST {CHAT}"), "")
            )),
            now,
            Want::Status(400, Some("invalid_body")),
        ),
        (
            "a chunk extension 64 KiB long",
            raw(&format!(
                "{}transfer-encoding: chunked\r\n\r\n2;{}\r\nab\r\n0\r\n\r\n",
                head(&format!("POST {CHAT}"), ""),
                "e".repeat(64 * 1024)
            )),
            now,
            Want::Status(400, Some("invalid_body")),
        ),
        (
            "a header twice the head limit",
            raw(&big_header),
            now,
            Want::Status(431, None),
        ),
        (
            "400 headers",
            raw(&many_headers),
            now,
            Want::Status(431, None),
        ),
        (
            "a request target twice the head limit",
            raw(&long_uri),
            now,
            Want::Status(431, None),
        ),
        (
            "a body one byte over the limit",
            one(big_body),
            now,
            Want::Status(413, Some("request_too_large")),
        ),
        (
            "a chunked body over the limit",
            one(big_chunked),
            now,
            Want::Status(413, Some("request_too_large")),
        ),
        (
            "invalid UTF-8 inside a JSON string",
            one(post(&bad_utf8)),
            now,
            Want::Status(400, Some("invalid_json")),
        ),
        (
            "JSON nested 10,000 deep",
            one(post(deep.as_bytes())),
            now,
            Want::Status(400, Some("invalid_type")),
        ),
        (
            "an empty body",
            one(post(b"")),
            now,
            Want::Status(400, Some("invalid_json")),
        ),
        (
            "a JSON array for a body",
            one(post(b"[1,2,3]")),
            now,
            Want::Status(400, Some("invalid_json")),
        ),
        (
            "a prompt variable of 1e400 (valid JSON no float holds)",
            one(post_to(
                "/demo/prompts/summarise",
                br#"{"variables":{"text":"a","words":1e400}}"#,
            )),
            now,
            Want::Status(400, Some("invalid_variable")),
        ),
        (
            "a prompt variable holding a lone surrogate",
            one(post_to(
                "/demo/prompts/summarise",
                br#"{"variables":{"text":"a\ud800"}}"#,
            )),
            now,
            Want::Status(400, Some("invalid_variable")),
        ),
        (
            "a lone surrogate escape in a string",
            one(post(
                br#"{"model":"fake-chat","messages":[{"role":"user","content":"\ud800"}]}"#,
            )),
            now,
            Want::Status(400, Some("invalid_type")),
        ),
        (
            "a NUL byte in a header value",
            one(nul_header),
            now,
            Want::Status(400, None),
        ),
        (
            "a header line without a colon",
            raw(&head("GET /demo/v1/models", "no colon here\r\n\r\n")),
            now,
            Want::Status(400, None),
        ),
        (
            "a space before a header's colon",
            raw(&head("GET /demo/v1/models", "x-a : b\r\n\r\n")),
            now,
            Want::Status(400, None),
        ),
        (
            "an obs-fold continuation line",
            raw(&head("GET /demo/v1/models", "x-a: b\r\n  folded\r\n\r\n")),
            now,
            Want::Status(400, None),
        ),
        (
            "a request line of garbage",
            raw("GARBAGE\r\n\r\n"),
            now,
            Want::Status(400, None),
        ),
        (
            "a method with a space in it",
            raw("GE T /demo/v1/models HTTP/1.1\r\nhost: a\r\n\r\n"),
            now,
            Want::Status(400, None),
        ),
        (
            "an unknown HTTP version",
            raw("GET /demo/v1/models HTTP/9.9\r\nhost: a\r\n\r\n"),
            now,
            Want::Status(400, None),
        ),
        (
            "an absolute-form target naming another host",
            raw(&head("GET http://evil.example/demo/v1/models", "\r\n")),
            now,
            Want::Status(200, None),
        ),
        (
            "a target with .. climbing out of the route",
            raw(&head("GET /demo/../admin/v1/models", "\r\n")),
            now,
            Want::Status(404, Some("unknown_url")),
        ),
        (
            "a percent-encoded .. in the target",
            raw(&head("GET /demo/%2e%2e/v1/models", "\r\n")),
            now,
            Want::Status(404, Some("unknown_url")),
        ),
        (
            "HTTP/1.0 without a Host",
            raw(&format!(
                "GET /demo/v1/models HTTP/1.0\r\nauthorization: Bearer {KEY}\r\n\r\n"
            )),
            now,
            Want::Status(200, None),
        ),
        (
            "a key of 10,000 bytes",
            raw(&format!(
                "GET /demo/v1/models HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
                "k".repeat(10_000)
            )),
            now,
            Want::Status(401, Some("invalid_api_key")),
        ),
        (
            "a key with a control character",
            raw(
                "GET /demo/v1/models HTTP/1.1\r\nhost: a\r\nauthorization: Bearer a\x01b\r\nconnection: close\r\n\r\n",
            ),
            now,
            Want::Status(400, None),
        ),
        (
            "two requests pipelined on one write",
            one(pipelined),
            now,
            Want::Status(200, None),
        ),
        (
            "a head sent a byte at a time",
            head("GET /demo/v1/models", "\r\n")
                .bytes()
                .map(|b| vec![b])
                .collect(),
            Duration::from_millis(2),
            Want::Status(200, None),
        ),
        (
            "a body promised and never sent (cut after the idle timeout's pause)",
            raw(&format!(
                "{}content-length: 100\r\n\r\n{{",
                head(&format!("POST {CHAT}"), "")
            )),
            now,
            Want::Status(408, Some("request_timeout")),
        ),
        (
            "a head never finished (cut by the idle timeout)",
            raw("GET /demo/v1/models HTTP/1.1\r\nhost: a\r\n"),
            now,
            Want::Closed,
        ),
    ]
}

/// The proxy's resident memory in KiB and its open sockets.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let sockets = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_string_lossy().starts_with("socket:"))
        .count();
    (rss, sockets)
}

#[test]
fn hostile_http1_inputs_get_exact_answers_and_leave_the_proxy_as_it_was() {
    let quickstart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/quickstart");
    let proxy = Proxy::start_with(
        &quickstart_copy(&quickstart),
        "access.log",
        &[
            "--max-body-bytes",
            &MAX_BODY.to_string(),
            "--max-header-bytes",
            &MAX_HEAD.to_string(),
            "--idle-timeout",
            "1s",
        ],
    );
    let pid = proxy.child.id();
    // Warm up (first connections, allocator arenas), then take the baseline.
    for _ in 0..20 {
        assert_eq!(
            exchange(proxy.port, &[post(GOOD.as_bytes())], Duration::ZERO).status(),
            Some(200)
        );
    }
    let (rss_before, sockets_before) = usage(pid);
    let mut wrong = Vec::new();
    for round in 0..3 {
        for (name, pieces, pause, want) in table() {
            let started = Instant::now();
            let got = exchange(proxy.port, &pieces, pause);
            let ok = match (&want, &got) {
                (Want::Closed, Answer::Closed) => true,
                (Want::Status(s, code), Answer::Status(g, body)) => {
                    s == g && code.is_none_or(|c| body.contains(&format!("\"code\":\"{c}\"")))
                }
                _ => false,
            };
            if round == 0 {
                eprintln!("{name}: {got:?} in {:?}", started.elapsed());
            }
            if !ok && round == 0 {
                wrong.push(format!("{name}: wanted {want:?}, got {got:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        proxy.child.id() == pid
            && exchange(proxy.port, &[post(GOOD.as_bytes())], Duration::ZERO).status() == Some(200)
    );
    // Every connection the inputs opened is closed (the idle timeout is 1 s: closed within 2 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut rss_after, mut sockets_after) = usage(pid);
    while sockets_after > sockets_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        (rss_after, sockets_after) = usage(pid);
    }
    eprintln!(
        "RSS {rss_before} KiB -> {rss_after} KiB, sockets {sockets_before} -> {sockets_after}"
    );
    assert!(
        sockets_after <= sockets_before,
        "sockets {sockets_before} -> {sockets_after}"
    );
    assert!(
        rss_after <= rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB over three rounds"
    );
}

/// The quickstart in a scratch folder, so that its access log is written there.
fn quickstart_copy(from: &Path) -> std::path::PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

/// HTTP/2 over cleartext (prior knowledge) on a fresh connection: the preface and an empty SETTINGS.
fn h2_connect(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.write_all(&frame(0x4, 0, 0, &[])).unwrap();
    s
}

/// One HTTP/2 frame: its 9-byte header and `payload`.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK header block for `GET path` (static-table method and scheme, literal path and authority).
fn get_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x04, path.len() as u8];
    b.extend_from_slice(path.as_bytes());
    b.extend_from_slice(&[0x01, 9]);
    b.extend_from_slice(b"127.0.0.1");
    b
}

/// Reads frames until the proxy sends GOAWAY (its error code) or closes; `None` if it did neither
/// within 10 s, or closed without GOAWAY (then `Some(None)`).
fn goaway(s: &mut TcpStream) -> Option<Option<u32>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Walk the frames received so far.
        let mut at = 0;
        while got.len() >= at + 9 {
            let len = (usize::from(got[at]) << 16)
                | (usize::from(got[at + 1]) << 8)
                | usize::from(got[at + 2]);
            if got.len() < at + 9 + len {
                break;
            }
            if got[at + 3] == 0x7 && len >= 8 {
                let p = &got[at + 9..];
                return Some(Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]])));
            }
            at += 9 + len;
        }
        if Instant::now() > deadline {
            return None;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return Some(None),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn h2_rapid_reset_and_continuation_floods_end_the_connection_not_the_proxy() {
    let quickstart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/quickstart");
    let proxy = Proxy::start_with(
        &quickstart_copy(&quickstart),
        "access.log",
        &[
            "--max-header-bytes",
            &MAX_HEAD.to_string(),
            "--idle-timeout",
            "1s",
        ],
    );
    let pid = proxy.child.id();
    for _ in 0..20 {
        assert_eq!(
            exchange(proxy.port, &[post(GOOD.as_bytes())], Duration::ZERO).status(),
            Some(200)
        );
    }
    let (rss_before, sockets_before) = usage(pid);

    // Rapid reset (CVE-2023-44487): 5,000 streams each opened and cancelled at once.
    let mut s = h2_connect(proxy.port);
    let block = get_block("/demo/v1/models");
    let mut burst = Vec::new();
    for i in 0..5_000u32 {
        let id = 2 * i + 1;
        burst.extend(frame(0x1, 0x5, id, &block));
        burst.extend(frame(0x3, 0, id, &8u32.to_be_bytes()));
    }
    let _ = s.write_all(&burst);
    let reset = goaway(&mut s);
    eprintln!("rapid reset: GOAWAY {reset:?}");

    // CONTINUATION flood (CVE-2024-27316 and kin): one header block that never ends.
    let mut s = h2_connect(proxy.port);
    let _ = s.write_all(&frame(0x1, 0x1, 1, &get_block("/demo/v1/models")));
    let mut piece = Vec::new();
    while piece.len() < 16_000 {
        piece.extend_from_slice(&[0x00, 10]);
        piece.extend_from_slice(b"x-flooding");
        piece.push(80);
        piece.extend(std::iter::repeat_n(b'v', 80));
    }
    let mut sent = 0usize;
    for _ in 0..2_000 {
        if s.write_all(&frame(0x9, 0, 1, &piece)).is_err() {
            break;
        }
        sent += 1;
    }
    let flood = goaway(&mut s);
    eprintln!("continuation flood: {sent} frames written, GOAWAY {flood:?}");

    assert_eq!(
        exchange(proxy.port, &[post(GOOD.as_bytes())], Duration::ZERO).status(),
        Some(200)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut rss_after, mut sockets_after) = usage(pid);
    while sockets_after > sockets_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        (rss_after, sockets_after) = usage(pid);
    }
    eprintln!(
        "RSS {rss_before} KiB -> {rss_after} KiB, sockets {sockets_before} -> {sockets_after}"
    );
    assert_eq!(
        reset,
        Some(Some(0xb)),
        "rapid reset ends with GOAWAY ENHANCE_YOUR_CALM"
    );
    assert_eq!(
        flood,
        Some(Some(0xb)),
        "the flood ends with GOAWAY ENHANCE_YOUR_CALM"
    );
    assert!(
        sockets_after <= sockets_before,
        "sockets {sockets_before} -> {sockets_after}"
    );
    assert!(
        rss_after <= rss_before + 32 * 1024,
        "RSS {rss_before} KiB -> {rss_after} KiB"
    );
}
