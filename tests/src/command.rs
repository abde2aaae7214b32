//! Running a command to completion and reading what it printed.

use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

/// Runs `cmd`: `Ok(stdout)` on success, `Err(stderr)` otherwise (or why it could not start).
pub fn run(cmd: Command) -> Result<String, String> {
    let out = output(cmd)?;
    if out.status.success() {
        Ok(lossy(&out.stdout))
    } else {
        Err(lossy(&out.stderr))
    }
}

/// Like [`run`], but a failure carries stdout followed by stderr.
///
/// Helm and `kubectl apply` print part of a failure on stdout, so tests that assert on the
/// message (or show it in a panic) want both.
pub fn run_combined(cmd: Command) -> Result<String, String> {
    let out = output(cmd)?;
    if out.status.success() {
        Ok(lossy(&out.stdout))
    } else {
        Err(format!("{}{}", lossy(&out.stdout), lossy(&out.stderr)))
    }
}

/// Runs `cmd` with `input` on stdin: `Ok(stdout)` on success, `Err(stderr)` otherwise.
pub fn run_with_stdin(mut cmd: Command, input: &str) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cmd.get_program().display()))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // Write from another thread: a large input could otherwise deadlock against a full stdout pipe.
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {}: {e}", cmd.get_program().display()))?;
    let _ = writer.join();
    let stdout = lossy(&output.stdout);
    let stderr = lossy(&output.stderr);
    if output.status.success() {
        Ok(stdout)
    } else if stderr.trim().is_empty() {
        Err(format!(
            "{} exited with {}: {stdout}",
            cmd.get_program().display(),
            output.status
        ))
    } else {
        Err(stderr)
    }
}

fn output(mut cmd: Command) -> Result<Output, String> {
    cmd.output()
        .map_err(|e| format!("cannot start {}: {e}", cmd.get_program().display()))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
