//! Tollgate's compiled routing table ([`Snapshot`]) and the pure compiler that builds it.
//!
//! No I/O, no Kubernetes client, no async runtime: the controller and the proxy's standalone mode
//! both call [`compile`] and must get byte-identical results from the same resources.

mod catalog;
mod compile;
mod digest;
mod duration;
mod fx;
mod message;
mod model;
mod verdict;

pub use catalog::*;
pub use compile::*;
pub use duration::*;
pub use fx::{FxHashMap, FxHasher};
pub use message::Message;
pub use model::*;
pub use verdict::*;
