//! A real `redis-server` (Debian's; `scripts/test.sh` installs it) on a loopback port, and one-line
//! RESP commands to look inside it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Sends one RESP command (inline form) and returns the lines of the answer.
pub fn redis_reply_lines(port: u16, command: &str) -> Option<Vec<String>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "{command}\r\n").ok()?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).ok()?;
    Some(
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

/// Sends one RESP command (inline form) and returns the first line of the answer.
pub fn redis_command(port: u16, command: &str) -> Option<String> {
    redis_reply_lines(port, command)?.into_iter().next()
}

/// Like [`redis_reply_lines`], logged in first as `user` with `password` (`AUTH`).
pub fn redis_reply_lines_as(
    port: u16,
    (user, password): (&str, &str),
    command: &str,
) -> Option<Vec<String>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut buf = [0u8; 256];
    write!(s, "AUTH {user} {password}\r\n").ok()?;
    let n = s.read(&mut buf).ok()?;
    if !buf[..n].starts_with(b"+OK") {
        return Some(vec![
            String::from_utf8_lossy(&buf[..n]).trim_end().to_owned(),
        ]);
    }
    write!(s, "{command}\r\n").ok()?;
    let n = s.read(&mut buf).ok()?;
    Some(
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

/// A `redis-server` child process; killed on drop.
pub struct Redis {
    child: Child,
    /// Where it listens on 127.0.0.1.
    pub port: u16,
}

impl Redis {
    /// Starts one on `port` without persistence and waits for it to answer PING.
    pub fn start(port: u16) -> Self {
        Self::start_with(port, &[], None)
    }

    /// Like `start`, with `args` added to the command line (TLS ports, ACL users); `login` is the
    /// user and password that may PING when the default user is off.
    pub fn start_with(port: u16, args: &[&str], login: Option<(&str, &str)>) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        let pong = || match login {
            None => redis_command(port, "PING"),
            Some(login) => redis_reply_lines_as(port, login, "PING")?
                .into_iter()
                .next(),
        };
        while pong().as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    /// Like `start`, in cluster mode (its node file in `dir`), a cluster of this one node serving
    /// every hash slot: commands see cluster rules (a script's keys in one slot) without a second node.
    pub fn start_cluster(port: u16, dir: &std::path::Path) -> Self {
        let nodes = dir.join(format!("nodes-{port}.conf"));
        let redis = Self::start_with(
            port,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                nodes.to_str().expect("a UTF-8 path"),
            ],
            None,
        );
        assert_eq!(
            redis_command(port, "CLUSTER ADDSLOTSRANGE 0 16383").as_deref(),
            Some("+OK")
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis_reply_lines(port, "CLUSTER INFO")
            .is_some_and(|l| l.iter().any(|l| l.starts_with("cluster_state:ok")))
        {
            assert!(
                Instant::now() < deadline,
                "the one-node cluster never became ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    /// Stops it now.
    pub fn kill(self) {}
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
