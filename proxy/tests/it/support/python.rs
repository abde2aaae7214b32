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
