//! Where snapshots come from and where usage goes: the snapshot store (one `ArcSwap`, with the
//! upstream parts of each snapshot made when it is stored), the controller client (the snapshot stream
//! in, usage reports out) and standalone mode (the same YAML files read from disk and watched).

pub mod client;
pub mod generated_keys;
pub mod standalone;
mod store;

pub use store::SnapshotStore;
