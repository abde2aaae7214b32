//! Child processes and scratch directories that cannot outlive the test process.
//!
//! No single mechanism covers every way a test binary ends, so there are three:
//!
//! - **Normal exit and panics.** libtest finishes with `process::exit` (or a return from `main`),
//!   both of which run C `atexit` hooks. The hook registered here SIGKILLs every child, reaps it
//!   and removes the registered scratch directories. Statics are never dropped, so `Drop` could
//!   not do this.
//! - **The test process is killed** (SIGKILL, OOM, abort: no `atexit`). Every child is started
//!   with `PR_SET_PDEATHSIG = SIGKILL`. The kernel sends that signal when the *thread* that forked
//!   the child ends, not the process, and libtest runs each test on a thread of its own; so all
//!   children are forked by one dedicated thread that blocks for as long as the process lives.
//! - **Scratch directories of a killed process** cannot be removed by that process. Their names
//!   carry the owner's pid, and [`sweep_stale_dirs`] removes those whose owner is gone.

use std::{
    io,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{Mutex, MutexGuard, Once, OnceLock, mpsc},
    thread,
    time::{Duration, Instant},
};

/// Name prefix of scratch directories; the owner's pid follows it.
const DIR_PREFIX: &str = "tollgate-e2e-";
/// A scratch directory holding this file is kept for a human to read, never swept.
const KEEP_MARKER: &str = "KEPT-FOR-DEBUGGING";

/// What the exit hook must clean up.
struct Registry {
    pids: Vec<libc::pid_t>,
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pids: Vec::new(),
    dirs: Vec::new(),
});

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();

/// Starts `cmd` on the spawner thread, with a parent-death signal, and registers it for the exit hook.
pub(crate) fn spawn(cmd: Command) -> io::Result<Child> {
    let spawner = SPAWNER.get_or_init(start_spawner);
    let gone = || io::Error::other("the process-spawning thread has ended");
    let (reply, answer) = mpsc::channel();
    spawner.send((cmd, reply)).map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

/// Kills a child now and stops tracking it (used when a start attempt is abandoned).
pub(crate) fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
    forget(child.id());
}

/// Stops tracking a child that has been reaped, so its pid is never signalled after reuse.
pub(crate) fn forget(pid: u32) {
    registry().pids.retain(|&p| p as u32 != pid);
}

/// Creates a fresh scratch directory that the exit hook removes.
pub(crate) fn scratch_dir() -> io::Result<PathBuf> {
    install_exit_hook();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
        .tempdir()?
        // Removal is the exit hook's job: a TempDir in a static would never be dropped.
        .keep();
    registry().dirs.push(dir.clone());
    Ok(dir)
}

/// Keeps a scratch directory after exit (and from later sweeps), so its logs can be read.
pub(crate) fn keep_dir(dir: &Path) {
    registry().dirs.retain(|d| d != dir);
    let _ = std::fs::write(
        dir.join(KEEP_MARKER),
        "remove this directory by hand when done\n",
    );
}

/// Removes scratch directories left behind by test processes that no longer exist.
pub(crate) fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let path = entry.path();
        if !process_exists(owner) && !path.join(KEEP_MARKER).exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn process_exists(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks for existence and permission; nothing is delivered.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn start_spawner() -> mpsc::Sender<SpawnRequest> {
    install_exit_hook();
    let (requests, incoming) = mpsc::channel::<SpawnRequest>();
    thread::Builder::new()
        .name("tollgate-e2e-spawner".into())
        .spawn(move || {
            // The sender lives in a static and is never dropped, so this loop only ends with
            // the process, which is exactly when the children's death signal should fire.
            while let Ok((cmd, reply)) = incoming.recv() {
                let _ = reply.send(spawn_on_this_thread(cmd));
            }
            loop {
                thread::park();
            }
        })
        .expect("cannot start the process-spawning thread");
    requests
}

fn spawn_on_this_thread(mut cmd: Command) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // If the parent died before prctl, the signal will never come: give up now.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let mut registry = registry();
    let child = cmd.spawn()?;
    registry.pids.push(child.id() as libc::pid_t);
    Ok(child)
}

fn install_exit_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // SAFETY: registering a plain `extern "C" fn()` has no preconditions.
        let rc = unsafe { libc::atexit(on_exit) };
        assert_eq!(rc, 0, "atexit refused the cleanup hook");
    });
}

extern "C" fn on_exit() {
    // Another thread may still be running while the process exits; never block on it for long.
    let deadline = Instant::now() + Duration::from_secs(2);
    let registry = loop {
        match REGISTRY.try_lock() {
            Ok(guard) => break guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => break poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(std::sync::TryLockError::WouldBlock) => return,
        }
    };
    for &pid in &registry.pids {
        // SAFETY: plain syscall on a pid we started and have not reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for &pid in &registry.pids {
        // Reap, so the directories below are no longer written to when they are removed.
        // SAFETY: WNOHANG never blocks; a null status pointer is allowed.
        while unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) } == 0
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(5));
        }
    }
    for dir in &registry.dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}
