//! Nothing the harness starts may outlive the test process, however that process ends.
//!
//! The parent test re-runs this very binary, filtered to [`control_plane_in_a_child_process`],
//! which starts a control plane, reports its pids and scratch directory, and then ends the way
//! the parent asks: returning, panicking, or hanging until the parent SIGKILLs it.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use tollgate_e2e::ControlPlane;

/// Set by the parent to tell the child how to end; absent, the child test does nothing.
const MODE_ENV: &str = "TOLLGATE_E2E_TEARDOWN_MODE";
/// Marks the child's report line on stdout.
const REPORT: &str = "TEARDOWN-REPORT";
/// A child must report within this (it includes a control-plane start).
const REPORT_TIMEOUT: Duration = Duration::from_secs(150);
/// Killed processes must be gone within this.
const GONE_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn control_plane_in_a_child_process() {
    let Ok(mode) = std::env::var(MODE_ENV) else {
        return;
    };
    let cp = ControlPlane::shared();
    let pids: Vec<String> = cp.process_ids().iter().map(u32::to_string).collect();
    println!("\n{REPORT} {} {}", pids.join(","), cp.work_dir().display());
    std::io::stdout().flush().unwrap();
    match mode.as_str() {
        "return" => {}
        "panic" => panic!("deliberate panic, to prove teardown after a failed test"),
        "hang" => loop {
            thread::sleep(Duration::from_secs(1));
        },
        other => panic!("unknown {MODE_ENV}={other}"),
    }
}

#[test]
fn nothing_outlives_the_test_process() {
    // Killed outright: no atexit hook runs, so the parent-death signal must stop the children.
    // The scratch directory cannot be removed by a dead process; the next start sweeps it.
    let mut hung = start_child("hang");
    let killed = wait_for_report(&mut hung);
    hung.child.kill().expect("SIGKILL the child");
    hung.child.wait().expect("reap the child");
    assert_all_gone(&killed.pids, "after SIGKILL of the test process");
    assert!(
        killed.dir.exists(),
        "nothing can remove the directory of a killed process"
    );

    // A normal exit: the atexit hook kills the children and removes the directory.
    let mut clean = start_child("return");
    let report = wait_for_report(&mut clean);
    let (status, stderr) = finish(clean);
    assert!(
        status.success(),
        "the child test should pass: {status}\n{stderr}"
    );
    assert_all_gone(&report.pids, "after a normal exit");
    assert!(
        !report.dir.exists(),
        "{} was left behind",
        report.dir.display()
    );
    assert!(
        !killed.dir.exists(),
        "the next start sweeps {}",
        killed.dir.display()
    );

    // A failing test: libtest exits with 101 through process::exit, which still runs atexit.
    let mut failing = start_child("panic");
    let report = wait_for_report(&mut failing);
    let (status, stderr) = finish(failing);
    assert_eq!(
        status.code(),
        Some(101),
        "the child test should fail:\n{stderr}"
    );
    assert_all_gone(&report.pids, "after a failed test");
    assert!(
        !report.dir.exists(),
        "{} was left behind",
        report.dir.display()
    );
}

struct ChildRun {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Removed when dropped, even if the test fails.
    stderr: tempfile::NamedTempFile,
}

struct Report {
    pids: Vec<i32>,
    dir: PathBuf,
}

fn start_child(mode: &str) -> ChildRun {
    let stderr = tempfile::NamedTempFile::new().expect("a file for the child's stderr");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "control_plane_in_a_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MODE_ENV, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr.reopen().expect("reopening the stderr file"))
        .spawn()
        .expect("re-running the test binary");
    let stdout = child.stdout.take().unwrap();
    let (send, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    ChildRun {
        child,
        lines,
        stderr,
    }
}

fn wait_for_report(run: &mut ChildRun) -> Report {
    let deadline = Instant::now() + REPORT_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = run.lines.recv_timeout(left) else {
            let _ = run.child.kill();
            panic!(
                "the child reported nothing within {REPORT_TIMEOUT:?}; its stderr:\n{}",
                std::fs::read_to_string(run.stderr.path()).unwrap_or_default()
            );
        };
        // libtest may have printed the test's name on the same line.
        let Some(rest) = line.split_once(REPORT).map(|(_, rest)| rest) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let pids = fields.next().unwrap_or_default().split(',');
        let pids: Vec<i32> = pids.map(|p| p.parse().expect("a pid")).collect();
        assert_eq!(pids.len(), 2, "etcd and kube-apiserver: {line}");
        let dir = PathBuf::from(fields.next().expect("a work dir"));
        return Report { pids, dir };
    }
}

/// Waits for the child to exit; its status and stderr.
fn finish(mut run: ChildRun) -> (ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = run.child.kill();
            panic!("the child test did not exit");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(run.stderr.path()).unwrap_or_default();
    (status, stderr)
}

/// Every pid is gone or a zombie (dead; whoever adopted it may reap it later).
fn assert_all_gone(pids: &[i32], when: &str) {
    let deadline = Instant::now() + GONE_TIMEOUT;
    for &pid in pids {
        while is_running(pid) {
            assert!(Instant::now() < deadline, "process {pid} still runs {when}");
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn is_running(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat"))
    else {
        return false;
    };
    // The state letter follows the parenthesised command name, which may itself hold spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X'))
}
