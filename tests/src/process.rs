//! Long-running child processes of a test (the real controller and proxy), and ports for them.

use std::{
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// Lines of a process's stderr shown when the test that owns it panics.
const LOG_TAIL_LINES: usize = 40;
/// How long [`Process::terminate`] waits for a graceful exit before it kills.
const TERMINATE_GRACE: Duration = Duration::from_secs(10);

/// A free loopback port (the listener is closed again; a clash with another process is unlikely,
/// and callers that start a server retry when it happens).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process that is killed when dropped, and also when the thread that started it dies.
///
/// Its stderr is collected (and echoed, tagged with its name, when `TOLLGATE_E2E_ECHO` is set);
/// if the owning test panics, the last lines are printed so the failure explains itself.
pub struct Process {
    /// The name it was started under, for messages.
    pub name: String,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Process {
    /// Starts `cmd` with stdin and stdout closed and stderr collected; panics if it cannot start.
    pub fn spawn(name: &str, mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        let echo = std::env::var_os("TOLLGATE_E2E_ECHO").is_some();
        let tag = name.to_owned();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if echo {
                    eprint!("[{tag}] {line}");
                }
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
            let _ = reader.read_to_string(&mut line);
        });
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (graceful shutdown); killed if it takes too long.
    pub fn terminate(&mut self) {
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + TERMINATE_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(LOG_TAIL_LINES).collect();
            eprintln!(
                "--- last lines of {} ---\n{}",
                self.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        self.kill();
    }
}
