//! The snapshot being served, and the upstream parts made for it when it is stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arc_swap::ArcSwapOption;
use tollgate_snapshot::Snapshot;

use crate::clock;
use crate::upstream::{Prepared, Upstreams};

/// The snapshot being served. Swapping is one atomic store; a request loads it once and keeps its `Arc`,
/// so in-flight calls finish on the table they started with.
#[derive(Default)]
pub struct SnapshotStore {
    current: ArcSwapOption<Snapshot>,
    swapped_at_ms: AtomicI64,
    /// Connection pools (which outlive swaps) and the request parts of the current snapshot.
    upstreams: Upstreams,
}

impl SnapshotStore {
    /// An empty store: the proxy is not ready until the first [`SnapshotStore::store`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `snapshot` the one new requests use, its providers' request parts made first so that
    /// the swap is finished before the first request sees it.
    pub fn store(&self, snapshot: Arc<Snapshot>) {
        self.upstreams.prepare(&snapshot);
        self.current.store(Some(snapshot));
        self.swapped_at_ms
            .store(clock::now_unix_ms(), Ordering::Relaxed);
    }

    /// The snapshot to serve one request from, if any was stored yet.
    pub fn load(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// Whether a snapshot is held (readiness).
    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }

    /// Version of the current snapshot.
    pub fn version(&self) -> Option<u64> {
        self.current.load().as_ref().map(|s| s.version)
    }

    /// The request parts of `snapshot`'s providers (see [`Upstreams::prepared`]).
    pub fn prepared(&self, snapshot: &Arc<Snapshot>) -> Arc<Prepared> {
        self.upstreams.prepared(snapshot)
    }

    /// Seconds since the last swap.
    pub fn age_seconds(&self) -> Option<f64> {
        if !self.is_ready() {
            return None;
        }
        let at = self.swapped_at_ms.load(Ordering::Relaxed);
        Some((clock::now_unix_ms() - at).max(0) as f64 / 1_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_snapshot::{Inputs, compile};

    #[test]
    fn a_stored_snapshots_upstream_parts_are_made_once_when_it_is_stored() {
        let store = SnapshotStore::new();
        let first = Arc::new(compile(&Inputs::default(), 1).snapshot);
        store.store(first.clone());
        // Made at the swap: every call then gets the same parts, none makes its own.
        let made = store.prepared(&first);
        assert!(Arc::ptr_eq(&made, &store.prepared(&first)));

        let second = Arc::new(compile(&Inputs::default(), 2).snapshot);
        store.store(second.clone());
        let current = store.prepared(&second);
        assert!(!Arc::ptr_eq(&current, &made));
        // A call still on the first snapshot gets parts of its own, and does not displace the
        // current snapshot's (which made calls rebuild them in turn when both were in use).
        assert!(!Arc::ptr_eq(&store.prepared(&first), &current));
        assert!(Arc::ptr_eq(&store.prepared(&second), &current));
    }
}
