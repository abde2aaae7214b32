//! Listeners, the top of the proxy: the data plane (HTTP/1.1 and h2c, or TLS with ALPN), idle
//! connections and slow request heads, graceful draining, and the admin port.

mod admin;
mod idle;
mod listen;
mod tls;

pub use admin::serve_admin;
pub use listen::{ConnectionLimits, serve_data_plane};
pub use tls::{TlsFiles, tls_acceptor};
