//! The official Python SDKs as clients: the test venv (`tests/python/ensure_venv.sh`, cached in
//! `~/.cache/tollgate/venv`) and one way to run a script of `tests/python` against a proxy. A missing
//! python3 or a failed install fails the test rather than skipping it.

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::standalone_bin::{manifest, wait_for};

/// How long one script may take: the SDKs retry with backoff, so a hung proxy shows as a timeout.
const SCRIPT_LIMIT: Duration = Duration::from_secs(180);

/// The python3 of the test venv, made once per run.
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = Command::new("bash")
            .arg(manifest().join("tests/python/ensure_venv.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("bash runs");
        assert!(
            venv.status.success(),
            "could not prepare a Python venv with the openai and anthropic packages \
             (python3 and PyPI are required)"
        );
        String::from_utf8(venv.stdout).unwrap().trim().to_string()
    })
}

/// Runs `tests/python/<script>` with `env` (and none of the SDKs' own endpoint and key variables) and
/// asserts it passes within 180 s. Blocking: async tests call it through `spawn_blocking`.
pub fn run_sdk_script(script: &str, env: &[(&str, &str)]) {
    let mut command = Command::new(python());
    command.arg(manifest().join("tests/python").join(script));
    for name in [
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_API_KEY",
    ] {
        command.env_remove(name);
    }
    let mut child = command
        .envs(env.iter().copied())
        .spawn()
        .expect("run python");
    let status = wait_for(&mut child, SCRIPT_LIMIT).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{script} did not finish within {SCRIPT_LIMIT:?}");
    });
    assert!(
        status.success(),
        "the SDK checks of {script} failed (see output above)"
    );
}

/// The python3 of the venv holding line `line` (1 or 2) of the official MCP SDK
/// (`tests/python/ensure_mcp_venv.sh`, cached in `~/.cache/tollgate/venv-mcp<line>`), made once per run.
fn mcp_python(line: u8) -> String {
    static PYTHONS: [OnceLock<String>; 2] = [OnceLock::new(), OnceLock::new()];
    PYTHONS[usize::from(line - 1)]
        .get_or_init(|| {
            let venv = Command::new("bash")
                .arg(manifest().join("tests/python/ensure_mcp_venv.sh"))
                .arg(line.to_string())
                .stderr(Stdio::inherit())
                .output()
                .expect("bash runs");
            assert!(
                venv.status.success(),
                "could not prepare a Python venv with the mcp {line}.x package (python3 and PyPI are required)"
            );
            String::from_utf8(venv.stdout).unwrap().trim().to_string()
        })
        .clone()
}

/// Runs `tests/python/<script>` with line `line` of the MCP SDK and `env`, and asserts it passes
/// within 180 s. Blocking: async tests call it through `spawn_blocking`.
pub fn run_mcp_script(line: u8, script: &str, env: &[(&str, &str)]) {
    let mut child = Command::new(mcp_python(line))
        .arg(manifest().join("tests/python").join(script))
        .envs(env.iter().copied())
        .spawn()
        .expect("run python");
    let status = wait_for(&mut child, SCRIPT_LIMIT).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{script} (mcp {line}.x) did not finish within {SCRIPT_LIMIT:?}");
    });
    assert!(
        status.success(),
        "the MCP SDK {line}.x checks of {script} failed (see output above)"
    );
}

/// An upstream MCP server written with line `line` of the official SDK (`tests/python/mcp_upstream.py`:
/// tools `add`, `echo` and `hidden`) on 127.0.0.1, recording the headers of every request it gets;
/// killed when dropped.
pub struct McpUpstream {
    child: std::process::Child,
    /// Its Streamable HTTP endpoint.
    pub url: String,
    record: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl McpUpstream {
    /// Starts it and waits until it accepts connections.
    pub fn start(line: u8) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("headers.jsonl");
        let port = super::standalone_bin::free_port();
        let child = Command::new(mcp_python(line))
            .arg(manifest().join("tests/python/mcp_upstream.py"))
            .arg(port.to_string())
            .arg(&record)
            .spawn()
            .expect("run python");
        let mut server = Self {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
            record,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the MCP {line}.x upstream server exited: {status}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the MCP {line}.x upstream server did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The headers of every request it got, in order (with its `params._meta` under `_meta`).
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Stops it at once, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for McpUpstream {
    fn drop(&mut self) {
        self.kill();
    }
}
