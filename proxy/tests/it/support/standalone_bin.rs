//! The real `tollgate-proxy` binary in standalone mode, for tests whose client is another program or
//! that need more than one proxy process: a proxy on free loopback ports with its access log in a
//! file, killed if the test fails first, and a bare HTTP/1 GET for its admin port.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The proxy crate's folder.
pub fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A running standalone proxy; killed when dropped.
pub struct Proxy {
    pub child: Child,
    pub port: u16,
    pub admin: u16,
    pub access_log: PathBuf,
}

impl Proxy {
    /// Serves the YAML files in `dir`, with stdout (the access log) in `dir/access.log`, and waits up to
    /// 30 s for `/readyz`.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, "access.log", &[])
    }

    /// Like `start`, with the access log in `dir/<log_name>` and `args` added to the command line.
    pub fn start_with(dir: &Path, log_name: &str, args: &[&str]) -> Self {
        Self::spawn(dir, log_name, args, Stdio::inherit())
    }

    /// Like `start_with`, with the diagnostic log (stderr) in `dir/<log_name>.stderr`, for tests that
    /// read it.
    pub fn start_logging(dir: &Path, log_name: &str, args: &[&str]) -> Self {
        let stderr = std::fs::File::create(dir.join(format!("{log_name}.stderr"))).unwrap();
        Self::spawn(dir, log_name, args, Stdio::from(stderr))
    }

    /// The diagnostic log of a proxy started with `start_logging`.
    pub fn stderr_text(&self) -> String {
        let mut path = self.access_log.clone().into_os_string();
        path.push(".stderr");
        std::fs::read_to_string(path).unwrap()
    }

    fn spawn(dir: &Path, log_name: &str, args: &[&str], stderr: Stdio) -> Self {
        let access_log = dir.join(log_name);
        let (port, admin) = (free_port(), free_port());
        let mut proxy = Self {
            child: Command::new(env!("CARGO_BIN_EXE_tollgate-proxy"))
                .arg("standalone")
                .arg(dir)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
                .args(args)
                .stdout(std::fs::File::create(&access_log).unwrap())
                .stderr(stderr)
                .spawn()
                .expect("start tollgate-proxy"),
            port,
            admin,
            access_log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(admin, "/readyz").map(|r| r.0) != Some(200) {
            assert!(
                proxy.child.try_wait().unwrap().is_none(),
                "the proxy exited at startup"
            );
            assert!(
                Instant::now() < deadline,
                "the proxy was not ready within 30s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        proxy
    }

    /// The access log written so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.access_log).unwrap()
    }

    /// The access log written so far, one JSON value a line.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .map(|l| serde_json::from_str(l).expect("access-log lines are JSON"))
            .collect()
    }

    /// The value of an unlabelled metric on the admin port.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = http_get(self.admin, "/metrics")?;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `limit` for `child` to exit.
pub fn wait_for(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on a loopback port over a fresh HTTP/1.1 connection: status and body, `None` if there is
/// no answer within 5 s.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}
