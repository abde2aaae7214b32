//! What lives for the whole process: the current snapshot, and the state that must outlive swaps.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arc_swap::ArcSwapOption;
use tollgate_snapshot::Snapshot;

use crate::clock;
use crate::record::Recorder;
use crate::upstream::Upstreams;

/// The snapshot being served. Swapping is one atomic store; a request loads it once and keeps its `Arc`,
/// so in-flight calls finish on the table they started with.
#[derive(Default)]
pub struct SnapshotStore {
    current: ArcSwapOption<Snapshot>,
    swapped_at_ms: AtomicI64,
}

impl SnapshotStore {
    /// An empty store: the proxy is not ready until the first [`SnapshotStore::store`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `snapshot` the one new requests use.
    pub fn store(&self, snapshot: Arc<Snapshot>) {
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

    /// Seconds since the last swap.
    pub fn age_seconds(&self) -> Option<f64> {
        if !self.is_ready() {
            return None;
        }
        let at = self.swapped_at_ms.load(Ordering::Relaxed);
        Some((clock::now_unix_ms() - at).max(0) as f64 / 1_000.0)
    }
}

/// Limits applied to every request.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    /// Largest request body accepted; larger gets 413.
    pub max_body_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Everything a request handler needs, shared by all connections.
pub struct Shared {
    /// The routing table.
    pub store: Arc<SnapshotStore>,
    /// Upstream connection pools, keyed by provider identity (outlive swaps).
    pub upstreams: Upstreams,
    /// Metrics and access log.
    pub recorder: Arc<Recorder>,
    /// Request limits.
    pub limits: RequestLimits,
    /// Rate limits and budgets of subscriptions and consumers.
    pub limiter: Arc<crate::limits::Limiter>,
    /// Passive health of providers and their key pools.
    pub health: crate::health::Health,
    /// Retry budgets of routes.
    pub retries: crate::balance::RetryBudgets,
}
