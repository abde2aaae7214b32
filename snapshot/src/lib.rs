//! Tollgate's compiled routing table ([`Snapshot`]) and the pure compiler that builds it.
//!
//! No I/O, no Kubernetes client, no async runtime: the controller and the proxy's standalone mode
//! both call [`compile`] and must get byte-identical results from the same resources. The form in which
//! the controller streams snapshots to proxies, and proxies report usage back, is [`wire`].

mod compile;
mod digest;
mod duration;
mod fx;
pub mod mcp_tools;
mod message;
mod model;
pub mod openapi;
mod prices;
mod verdict;
pub mod wire;

pub use compile::*;
pub use duration::*;
pub use fx::{FxHashMap, FxHasher};
pub use message::Message;
pub use model::*;
pub use prices::*;
pub use verdict::*;
