//! What the proxy prepares from a snapshot for the requests it serves (the MCP tool catalog, the
//! guardrail policies), made by the first request that needs it and kept beside the snapshot, not in
//! it: it is the proxy's view of the snapshot, not part of what the controller sends. Found by the
//! snapshot's `Arc`, so that a new snapshot gets its own.

use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use tollgate_snapshot::Snapshot;

/// How many snapshots' values are kept: the one being served, and those that requests begun before a
/// swap still hold (and, in tests, those of other proxies in the same process).
const KEPT: usize = 4;

type Kept<T> = Vec<(Weak<Snapshot>, Arc<T>)>;

/// One value per snapshot, for the last few snapshots.
pub struct PerSnapshot<T> {
    kept: ArcSwap<Kept<T>>,
}

impl<T> Default for PerSnapshot<T> {
    fn default() -> Self {
        Self {
            kept: ArcSwap::from_pointee(Vec::new()),
        }
    }
}

impl<T> PerSnapshot<T> {
    /// The value of `snapshot`, made by `make` when this is the first request to it.
    pub fn of(&self, snapshot: &Arc<Snapshot>, make: impl FnOnce(&Snapshot) -> T) -> Arc<T> {
        // Found by address, without a weak reference made for every request.
        let at = Arc::as_ptr(snapshot);
        if let Some((_, v)) = self.kept.load().iter().find(|(s, _)| s.as_ptr() == at) {
            return v.clone();
        }
        let wanted = Arc::downgrade(snapshot);
        let made = Arc::new(make(snapshot));
        let mut chosen = made.clone();
        self.kept.rcu(|kept| {
            // Another request may have made it meanwhile: use the one kept, so that all share it.
            if let Some((_, v)) = kept.iter().find(|(s, _)| s.ptr_eq(&wanted)) {
                chosen = v.clone();
                return kept.clone();
            }
            chosen = made.clone();
            let mut next: Kept<T> = Vec::with_capacity(KEPT);
            next.push((wanted.clone(), made.clone()));
            next.extend(
                kept.iter()
                    .filter(|(s, _)| s.strong_count() > 0)
                    .take(KEPT - 1)
                    .cloned(),
            );
            Arc::new(next)
        });
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_snapshot::{Inputs, compile};

    #[test]
    fn a_snapshot_keeps_one_value_and_a_new_snapshot_gets_its_own_and_the_dropped_go() {
        let per = PerSnapshot::<u64>::default();
        let first = Arc::new(compile(&Inputs::default(), 1).snapshot);
        let a = per.of(&first, |s| s.version);
        assert!(Arc::ptr_eq(
            &a,
            &per.of(&first, |_| unreachable!("made once"))
        ));
        let second = Arc::new(compile(&Inputs::default(), 2).snapshot);
        let b = per.of(&second, |s| s.version);
        assert_eq!((*a, *b), (1, 2));
        drop(first);
        // A dropped snapshot's value goes when the next one is kept.
        let third = Arc::new(compile(&Inputs::default(), 3).snapshot);
        per.of(&third, |s| s.version);
        assert_eq!(per.kept.load().len(), 2);
        // At most KEPT, newest first.
        let more: Vec<_> = (4..10)
            .map(|v| Arc::new(compile(&Inputs::default(), v).snapshot))
            .collect();
        for s in &more {
            per.of(s, |s| s.version);
        }
        let kept: Vec<u64> = per.kept.load().iter().map(|(_, v)| **v).collect();
        assert_eq!(kept, [9, 8, 7, 6]);
    }
}
