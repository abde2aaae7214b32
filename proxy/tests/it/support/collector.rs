//! A real OpenTelemetry Collector (built from its Go modules by `tests/collector/ensure.sh`) with the
//! OTLP receiver on loopback ports and the file exporter writing what it receives — traces, metrics
//! and logs, one pipeline each — one JSON document (OTLP/JSON) a line, to a file the test reads.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The collector binary, built on first use (minutes on a fresh machine; cached after).
fn binary() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/collector/ensure.sh");
        let out = Command::new("bash")
            .arg(script)
            .stderr(Stdio::inherit())
            .output()
            .expect("bash runs tests/collector/ensure.sh");
        assert!(out.status.success(), "tests/collector/ensure.sh failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// A free loopback port (bound and let go; the collector binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running collector; killed on drop.
pub struct Collector {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// OTLP/gRPC port.
    pub grpc_port: u16,
    /// OTLP/HTTP port.
    pub http_port: u16,
    /// The HTTP receiver's certificate and key in PEM, when it serves TLS.
    tls: Option<(String, String)>,
}

impl Collector {
    /// Starts one on two free ports and waits until both accept connections.
    pub fn start() -> Self {
        let mut c = Self {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            grpc_port: free_port(),
            http_port: free_port(),
            tls: None,
        };
        c.restart();
        c
    }

    /// Starts one whose receivers (gRPC and HTTP) serve TLS only, with a new self-signed certificate
    /// for `localhost`; returns it with that certificate's PEM (the CA a client must trust).
    pub fn start_tls() -> (Self, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let pem = certified.cert.pem();
        let mut c = Self {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            grpc_port: free_port(),
            http_port: free_port(),
            tls: Some((pem.clone(), certified.signing_key.serialize_pem())),
        };
        c.restart();
        (c, pem)
    }

    /// `https://localhost:<port>` of the HTTP receiver started by [`Collector::start_tls`].
    pub fn https_endpoint(&self) -> String {
        format!("https://localhost:{}", self.http_port)
    }

    /// `https://localhost:<port>` of the gRPC receiver started by [`Collector::start_tls`].
    pub fn grpcs_endpoint(&self) -> String {
        format!("https://localhost:{}", self.grpc_port)
    }

    /// `http://127.0.0.1:<port>` of the HTTP receiver.
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `http://127.0.0.1:<port>` of the gRPC receiver.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    fn output(&self) -> PathBuf {
        self.dir.path().join("traces.jsonl")
    }

    /// Starts it (again) on the same ports and output file.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let config = self.dir.path().join("config.yaml");
        let tls = match &self.tls {
            None => String::new(),
            Some((cert, key)) => {
                let (cert_file, key_file) = (
                    self.dir.path().join("cert.pem"),
                    self.dir.path().join("key.pem"),
                );
                std::fs::write(&cert_file, cert).unwrap();
                std::fs::write(&key_file, key).unwrap();
                format!(
                    "        tls:\n          cert_file: {}\n          key_file: {}\n",
                    cert_file.display(),
                    key_file.display()
                )
            }
        };
        std::fs::write(
            &config,
            format!(
                "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{}\n{tls}      \
                 http:\n        endpoint: 127.0.0.1:{}\n{tls}\
                 exporters:\n  file:\n    path: {}\n    flush_interval: 50ms\n\
                 service:\n  telemetry:\n    metrics:\n      level: none\n  \
                 pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n    \
                 metrics:\n      receivers: [otlp]\n      exporters: [file]\n    \
                 logs:\n      receivers: [otlp]\n      exporters: [file]\n",
                self.grpc_port,
                self.http_port,
                self.output().display()
            ),
        )
        .unwrap();
        let child = Command::new(binary())
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("otelcol starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in [self.grpc_port, self.http_port] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "the collector did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Kills it (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Everything written to its output so far, as text.
    pub fn raw(&self) -> String {
        std::fs::read_to_string(self.output()).unwrap_or_default()
    }

    /// Every span written so far, each with its resource's attributes under `"resource"`.
    pub fn spans(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for doc in self.documents() {
            for rs in doc["resourceSpans"].as_array().into_iter().flatten() {
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for span in ss["spans"].as_array().into_iter().flatten() {
                        let mut span = span.clone();
                        span["resource"] = rs["resource"].clone();
                        span["scope"] = ss["scope"].clone();
                        out.push(span);
                    }
                }
            }
        }
        out
    }

    /// Every histogram data point of the metric `name` written so far, oldest first, each with its
    /// metric's `name`, `unit` and `aggregationTemporality` and its resource's attributes beside it.
    pub fn metric_points(&self, name: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for doc in self.documents() {
            for rm in doc["resourceMetrics"].as_array().into_iter().flatten() {
                for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
                    for m in sm["metrics"].as_array().into_iter().flatten() {
                        if m["name"] != name {
                            continue;
                        }
                        let h = &m["histogram"];
                        for p in h["dataPoints"].as_array().into_iter().flatten() {
                            let mut p = p.clone();
                            p["name"] = m["name"].clone();
                            p["unit"] = m["unit"].clone();
                            p["aggregationTemporality"] = h["aggregationTemporality"].clone();
                            p["resource"] = rm["resource"].clone();
                            p["scope"] = sm["scope"].clone();
                            out.push(p);
                        }
                    }
                }
            }
        }
        out
    }

    /// Every log record written so far, each with its resource's attributes under `"resource"`.
    pub fn log_records(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for doc in self.documents() {
            for rl in doc["resourceLogs"].as_array().into_iter().flatten() {
                for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
                    for r in sl["logRecords"].as_array().into_iter().flatten() {
                        let mut r = r.clone();
                        r["resource"] = rl["resource"].clone();
                        out.push(r);
                    }
                }
            }
        }
        out
    }

    /// The documents written whole so far: a last line still being written (no newline yet) is left
    /// for the next read.
    fn documents(&self) -> Vec<Value> {
        let raw = self.raw();
        let whole = raw.rfind('\n').map_or("", |end| &raw[..end]);
        whole
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("the file exporter writes JSON lines"))
            .collect()
    }

    /// Waits (up to 15 s) until `count` spans of `trace_id` (hex) have been written; returns them.
    pub async fn spans_of(&self, trace_id: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let spans: Vec<Value> = self
                .spans()
                .into_iter()
                .filter(|s| s["traceId"] == trace_id)
                .collect();
            if spans.len() >= count {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} spans of trace {trace_id} reached the collector",
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A span's attribute, as the JSON value of its `value` (`{"stringValue": …}` → the string, etc.).
pub fn attr(span: &Value, key: &str) -> Option<Value> {
    let kv = span["attributes"]
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)?;
    let v = &kv["value"];
    Some(if let Some(s) = v.get("stringValue") {
        s.clone()
    } else if let Some(i) = v.get("intValue") {
        // OTLP/JSON writes 64-bit integers as strings.
        Value::from(
            i.as_str()
                .and_then(|s| s.parse::<i64>().ok())
                .or(i.as_i64())?,
        )
    } else if let Some(d) = v.get("doubleValue") {
        d.clone()
    } else if let Some(b) = v.get("boolValue") {
        b.clone()
    } else if let Some(a) = v.get("arrayValue") {
        Value::Array(
            a["values"]
                .as_array()?
                .iter()
                .map(|x| x.get("stringValue").cloned().unwrap_or(Value::Null))
                .collect(),
        )
    } else {
        v.clone()
    })
}
