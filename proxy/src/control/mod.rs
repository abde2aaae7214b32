//! Where snapshots come from and where usage goes: the snapshot store (one `ArcSwap`, with the
//! upstream parts of each snapshot made when it is stored), the controller client (the snapshot stream
//! in, usage reports out) and standalone mode (the same YAML files read from disk and watched); and
//! what the layers above prepare from a snapshot, kept beside it (`PerSnapshot`).

pub mod client;
pub mod generated_keys;
mod per_snapshot;
pub mod standalone;
mod store;

pub use per_snapshot::PerSnapshot;
pub use store::SnapshotStore;
