//! Tollgate's benchmark harness: the fixed payloads shared by the upstream fake and the load scenarios.
//!
//! The binaries are `bench-upstream` (an OpenAI-shaped fake), `bench-forwarder` (the minimal hyper hop) and
//! `tollgate-bench` (snapshot generator and the scenario runner behind `bash bench/run.sh`).

pub mod payload;

/// A listener with a deep accept queue: a thousand clients connecting at once must not meet SYN drops
/// (std's default backlog is 128), or the memory-per-stream figure would wait on retransmits.
pub fn listener(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
