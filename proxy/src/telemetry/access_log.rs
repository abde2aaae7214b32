//! The access log: one JSON line per call on stdout, written in batches by a thread of its own.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tollgate_snapshot::ObjectRef;

use crate::clock;

/// Where access-log lines go.
pub enum AccessLog {
    /// Appended to a shared buffer that a background thread writes to stdout in batches, so that
    /// neither a slow pipe nor a wake-up per line costs a request anything.
    Stdout(Arc<LogBuffer>),
    /// Kept in memory (tests read them).
    Collect(Arc<Mutex<Vec<String>>>),
    /// Dropped.
    Discard,
}

/// Lines waiting for the writer thread, bounded: past [`LogBuffer::CAP`] bytes they are dropped and
/// counted rather than held (stdout blocked must not turn into unbounded memory).
pub struct LogBuffer {
    pending: Mutex<Vec<u8>>,
    more: Condvar,
}

impl LogBuffer {
    /// Most bytes held for the writer; about a second of lines at 20,000 calls per second.
    pub const CAP: usize = 16 * 1024 * 1024;
    /// Pending bytes that wake the writer before its next tick.
    const WAKE_AT: usize = 256 * 1024;
    /// How long a line may wait for the writer when traffic is light.
    const TICK: Duration = Duration::from_millis(100);

    fn new() -> Self {
        Self {
            pending: Mutex::new(Vec::with_capacity(64 * 1024)),
            more: Condvar::new(),
        }
    }

    /// Appends one line (serialised under the lock, straight into the buffer). False when it was
    /// dropped because the buffer is full.
    fn push(&self, line: &AccessLine<'_>) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let before = pending.len();
        if before >= Self::CAP {
            return false;
        }
        line.write_json(&mut pending);
        if before < Self::WAKE_AT && pending.len() >= Self::WAKE_AT {
            self.more.notify_one();
            drop(pending);
            // Let the writer have the CPU now. A request thread that keeps its CPU (saturated under
            // a real-time or CPU-throttled scheduler) would otherwise go on filling the buffer until
            // its time slice ends: 100 ms of lines, megabytes held twice over.
            std::thread::yield_now();
        }
        true
    }

    /// Takes what is pending, waiting up to a tick for enough to be worth a write.
    fn take(&self, spare: Vec<u8>) -> Vec<u8> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() < Self::WAKE_AT {
            pending = self
                .more
                .wait_timeout(pending, Self::TICK)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        std::mem::replace(&mut *pending, spare)
    }

    /// Writes what is pending now (at shutdown, so that no line is lost).
    pub fn flush(&self) {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&batch);
        let _ = out.flush();
    }
}

impl AccessLog {
    /// Starts the stdout writer thread.
    pub fn stdout() -> Self {
        let buffer = Arc::new(LogBuffer::new());
        let shared = buffer.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut spare = Vec::with_capacity(64 * 1024);
                loop {
                    let mut batch = shared.take(spare);
                    if !batch.is_empty() {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&batch);
                        let _ = out.flush();
                    }
                    batch.clear();
                    // A burst's large buffer is not kept for ever.
                    if batch.capacity() > 4 * LogBuffer::WAKE_AT {
                        batch = Vec::with_capacity(64 * 1024);
                    }
                    spare = batch;
                }
            })
            .expect("spawn access-log thread");
        Self::Stdout(buffer)
    }

    /// Writes whatever lines are still waiting (call before the process exits).
    pub fn flush(&self) {
        if let Self::Stdout(buffer) = self {
            buffer.flush();
        }
    }

    /// Logs one line; false when it had to be dropped.
    pub(super) fn write(&self, line: &AccessLine<'_>) -> bool {
        match self {
            Self::Stdout(buffer) => buffer.push(line),
            Self::Collect(lines) => {
                let mut text = Vec::with_capacity(512);
                line.write_json(&mut text);
                let text = String::from_utf8(text).expect("the line is UTF-8");
                lines.lock().expect("log lock").push(text);
                true
            }
            Self::Discard => true,
        }
    }
}

/// One access-log line. Written by hand rather than through serde: it is produced for every call, and
/// a generic serializer spent more on it than on anything else the proxy does per call.
pub struct AccessLine<'a> {
    pub time_unix_ms: i64,
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub namespace: Option<&'a str>,
    pub route: Option<&'a str>,
    pub consumer: Option<&'a ObjectRef>,
    pub subscription: Option<&'a ObjectRef>,
    pub model_requested: Option<&'a str>,
    pub model_served: Option<&'a str>,
    pub provider: Option<&'a ObjectRef>,
    pub stream: bool,
    pub status: u16,
    pub latency_us: u64,
    pub ttft_us: Option<u64>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    pub retries: u32,
    pub error_class: Option<&'a str>,
    pub snapshot_version: Option<u64>,
    /// `model` (the OpenAI/Anthropic endpoints), `prompt`, `rest` or `mcp`.
    pub api: &'a str,
    /// The prompt's name, or the REST operation's `operationId` (`METHOD /path` when it has none);
    /// for MCP, the tool or prompt named.
    pub operation: Option<&'a str>,
    /// The prompt's version, when it has one.
    pub operation_version: Option<&'a str>,
    /// The MCP JSON-RPC method, for `api: mcp`.
    pub mcp_method: Option<&'a str>,
    pub cache: Option<&'a str>,
    /// On a cache hit, what the call that made the stored answer spent (and this one did not).
    pub saved: Option<Saved>,
    /// Guardrail rules that matched, with what they did (rule names only, never the text).
    pub guardrails: &'a [(std::sync::Arc<str>, &'static str)],
}

/// What a call answered from the cache did not spend: the tokens and cost of the call that made
/// the stored answer.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Saved {
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Completion tokens.
    pub tokens_out: u64,
    /// USD, at the prices of the backend that made the answer.
    pub cost_usd: f64,
}

impl AccessLine<'_> {
    /// Appends the line as one JSON object and a newline.
    pub(super) fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":\"");
        out.extend_from_slice(&clock::Rfc3339Ms(self.time_unix_ms).bytes());
        out.extend_from_slice(b"\",\"request_id\":");
        json::string(out, self.request_id);
        out.extend_from_slice(b",\"method\":");
        json::string(out, self.method);
        out.extend_from_slice(b",\"path\":");
        json::string(out, self.path);
        out.extend_from_slice(b",\"namespace\":");
        json::opt_string(out, self.namespace);
        out.extend_from_slice(b",\"route\":");
        json::opt_string(out, self.route);
        out.extend_from_slice(b",\"consumer\":");
        json::opt_object_ref(out, self.consumer);
        out.extend_from_slice(b",\"subscription\":");
        json::opt_object_ref(out, self.subscription);
        out.extend_from_slice(b",\"model_requested\":");
        json::opt_string(out, self.model_requested);
        out.extend_from_slice(b",\"model_served\":");
        json::opt_string(out, self.model_served);
        out.extend_from_slice(b",\"provider\":");
        json::opt_object_ref(out, self.provider);
        out.extend_from_slice(if self.stream {
            b",\"stream\":true,\"status\":"
        } else {
            b",\"stream\":false,\"status\":"
        });
        json::integer(out, self.status);
        out.extend_from_slice(b",\"latency_ms\":");
        json::millis(out, self.latency_us);
        out.extend_from_slice(b",\"ttft_ms\":");
        match self.ttft_us {
            Some(us) => json::millis(out, us),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"tokens_in\":");
        json::integer(out, self.tokens_in);
        out.extend_from_slice(b",\"tokens_out\":");
        json::integer(out, self.tokens_out);
        out.extend_from_slice(b",\"cost_usd\":");
        json::float(out, self.cost_usd);
        out.extend_from_slice(b",\"retries\":");
        json::integer(out, self.retries);
        out.extend_from_slice(b",\"error_class\":");
        json::opt_string(out, self.error_class);
        if let Some(cache) = self.cache {
            out.extend_from_slice(b",\"cache\":");
            json::string(out, cache);
        }
        if let Some(saved) = self.saved {
            out.extend_from_slice(b",\"saved_tokens_in\":");
            json::integer(out, saved.tokens_in);
            out.extend_from_slice(b",\"saved_tokens_out\":");
            json::integer(out, saved.tokens_out);
            out.extend_from_slice(b",\"saved_cost_usd\":");
            json::float(out, saved.cost_usd);
        }
        if !self.guardrails.is_empty() {
            out.extend_from_slice(b",\"guardrails\":[");
            for (i, (rule, action)) in self.guardrails.iter().enumerate() {
                out.extend_from_slice(if i > 0 { b",{\"rule\":" } else { b"{\"rule\":" });
                json::string(out, rule);
                // An action is one of Tollgate's own words (`mask`, `fail_open`, …): no escapes.
                debug_assert!(json::plain(action), "{action}");
                out.extend_from_slice(b",\"action\":\"");
                out.extend_from_slice(action.as_bytes());
                out.extend_from_slice(b"\"}");
            }
            out.push(b']');
        }
        out.extend_from_slice(b",\"snapshot_version\":");
        match self.snapshot_version {
            Some(v) => json::integer(out, v),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"api\":");
        json::string(out, self.api);
        if let Some(operation) = self.operation {
            out.extend_from_slice(b",\"operation\":");
            json::string(out, operation);
            out.extend_from_slice(b",\"operation_version\":");
            json::opt_string(out, self.operation_version);
        }
        if let Some(method) = self.mcp_method {
            out.extend_from_slice(b",\"mcp_method\":");
            json::string(out, method);
        }
        out.extend_from_slice(b"}\n");
    }
}

/// The few JSON writers the access log needs.
mod json {
    use tollgate_snapshot::ObjectRef;

    /// A JSON string; text without quotes, backslashes or control characters (nearly all of it) is
    /// copied as it is.
    pub fn string(out: &mut Vec<u8>, s: &str) {
        if plain(s) {
            out.reserve(s.len() + 2);
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        } else {
            serde_json::to_writer(&mut *out, s).expect("a string serialises");
        }
    }

    /// Whether `s` needs no escaping in JSON.
    pub(super) fn plain(s: &str) -> bool {
        !crate::escape::needs_escape(s.as_bytes())
    }

    pub fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => string(out, s),
            None => out.extend_from_slice(b"null"),
        }
    }

    /// `"namespace/name"` or `null`.
    pub fn opt_object_ref(out: &mut Vec<u8>, id: Option<&ObjectRef>) {
        let Some(id) = id else {
            out.extend_from_slice(b"null");
            return;
        };
        let (namespace, name): (&str, &str) = (&id.namespace, &id.name);
        if plain(namespace) && plain(name) {
            out.push(b'"');
            out.extend_from_slice(namespace.as_bytes());
            out.push(b'/');
            out.extend_from_slice(name.as_bytes());
            out.push(b'"');
        } else {
            string(out, &format!("{namespace}/{name}"));
        }
    }

    pub fn integer(out: &mut Vec<u8>, n: impl itoa::Integer) {
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    /// Microseconds as milliseconds with up to three decimals (`1.47`, `12.0`).
    pub fn millis(out: &mut Vec<u8>, us: u64) {
        integer(out, us / 1_000);
        let frac = us % 1_000;
        if frac == 0 {
            out.extend_from_slice(b".0");
            return;
        }
        let digits = [
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        let len = 3 - digits.iter().rev().take_while(|&&d| d == b'0').count();
        out.push(b'.');
        out.extend_from_slice(&digits[..len]);
    }

    /// A finite float as JSON (non-finite ones, which a price cannot make, as 0).
    pub fn float(out: &mut Vec<u8>, v: f64) {
        serde_json::to_writer(&mut *out, &if v.is_finite() { v } else { 0.0 })
            .expect("a float serialises");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Eight bytes at a time or one by one, the same strings need escaping.
        #[test]
        fn plain_strings_are_those_without_quotes_backslashes_or_controls(
            s in "(\\PC|[\"\\\\\u{0}-\u{1f}\u{7f}]|ü|€){0,40}",
        ) {
            let one_by_one = s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
            proptest::prop_assert_eq!(json::plain(&s), one_by_one);
        }
    }

    fn line<'a>(id: &'a ObjectRef) -> AccessLine<'a> {
        AccessLine {
            time_unix_ms: 1_709_210_096_007,
            request_id: "id \"quoted\" \\ \u{1}",
            method: "POST",
            path: "/team/v1/chat/completions",
            namespace: Some("team"),
            route: None,
            consumer: Some(id),
            subscription: None,
            model_requested: Some("gpt-ü"),
            model_served: None,
            provider: Some(id),
            stream: true,
            status: 200,
            latency_us: 1_470,
            ttft_us: Some(12_000),
            tokens_in: 5,
            tokens_out: 7,
            cost_usd: 0.000_125,
            retries: 1,
            error_class: None,
            snapshot_version: Some(3),
            api: "model",
            operation: None,
            operation_version: None,
            mcp_method: None,
            cache: None,
            saved: None,
            guardrails: &[],
        }
    }

    #[test]
    fn access_log_lines_are_json_with_every_field() {
        let id = ObjectRef::new("team", "app");
        let mut out = Vec::new();
        line(&id).write_json(&mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v["time"], "2024-02-29T12:34:56.007Z");
        assert_eq!(v["request_id"], "id \"quoted\" \\ \u{1}");
        assert_eq!(v["consumer"], "team/app");
        assert_eq!(v["subscription"], serde_json::Value::Null);
        assert_eq!(v["model_requested"], "gpt-ü");
        assert_eq!(v["stream"], true);
        assert_eq!(v["status"], 200);
        assert_eq!(v["latency_ms"], 1.47);
        assert_eq!(v["ttft_ms"], 12.0);
        assert_eq!(v["cost_usd"], 0.000_125);
        assert_eq!(v["retries"], 1);
        assert_eq!(v["snapshot_version"], 3);
        assert_eq!(v["api"], "model");
        assert_eq!(v.as_object().map(|o| o.len()), Some(22));

        let mut rest = line(&id);
        rest.api = "rest";
        rest.operation = Some("getItem");
        let mut out = Vec::new();
        rest.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v["api"], "rest");
        assert_eq!(v["operation"], "getItem");
        assert_eq!(v["operation_version"], serde_json::Value::Null);
        assert_eq!(v.as_object().map(|o| o.len()), Some(24));

        let mut mcp = line(&id);
        mcp.api = "mcp";
        mcp.operation = Some("summarise");
        mcp.mcp_method = Some("tools/call");
        let mut out = Vec::new();
        mcp.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v["api"], "mcp");
        assert_eq!(v["mcp_method"], "tools/call");
        assert_eq!(v["operation"], "summarise");
    }

    #[test]
    fn a_cache_hit_says_what_it_saved() {
        let id = ObjectRef::new("team", "app");
        let mut hit = line(&id);
        hit.cache = Some("hit");
        hit.saved = Some(Saved {
            tokens_in: 11,
            tokens_out: 7,
            cost_usd: 0.000_25,
        });
        let mut out = Vec::new();
        hit.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v["cache"], "hit");
        assert_eq!(v["saved_tokens_in"], 11);
        assert_eq!(v["saved_tokens_out"], 7);
        assert_eq!(v["saved_cost_usd"], 0.000_25);
        assert_eq!(v.as_object().map(|o| o.len()), Some(26));
    }

    #[test]
    fn milliseconds_keep_three_decimals_at_most() {
        let text = |us| {
            let mut out = Vec::new();
            json::millis(&mut out, us);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(0), "0.0");
        assert_eq!(text(1), "0.001");
        assert_eq!(text(1_500), "1.5");
        assert_eq!(text(1_234_567), "1234.567");
    }

    #[test]
    fn strings_are_escaped_only_when_they_need_it() {
        for s in ["plain-ü", "a\"b", "back\\slash", "new\nline", "\u{1}", ""] {
            let mut out = Vec::new();
            json::string(&mut out, s);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s);
            assert_eq!(
                out.len() == s.len() + 2,
                s == "plain-ü" || s.is_empty(),
                "{s:?}"
            );
        }
    }
}
