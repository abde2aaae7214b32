//! This replica's store: entries by key within a byte budget, the least recently used evicted
//! first, expired ones dropped when met.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::entry::Entry;
use super::key::LocalKey;

/// What an insert did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Inserted {
    /// Whether the entry was kept (one larger than the whole budget is not).
    pub kept: bool,
    /// Entries evicted to make room.
    pub evicted: u64,
}

/// The store's size.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct Held {
    /// Entries.
    pub entries: usize,
    /// Bytes, by [`Entry::weight`].
    pub bytes: usize,
}

/// Entries within a byte budget.
pub struct LocalStore {
    budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<LocalKey, Slot>,
    /// Last use → key: the first is the least recently used.
    by_use: BTreeMap<u64, LocalKey>,
    tick: u64,
    bytes: usize,
}

struct Slot {
    entry: Arc<Entry>,
    used: u64,
}

impl Inner {
    fn remove(&mut self, key: &LocalKey) {
        if let Some(slot) = self.slots.remove(key) {
            self.by_use.remove(&slot.used);
            self.bytes -= slot.entry.weight();
        }
    }

    fn held(&self) -> Held {
        Held {
            entries: self.slots.len(),
            bytes: self.bytes,
        }
    }
}

impl LocalStore {
    /// A store holding at most `budget` bytes (0 keeps nothing).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::default(),
        }
    }

    /// The entry under `key` unless it has expired at `now_ms` (then it is dropped).
    pub fn get(&self, key: &LocalKey, now_ms: i64) -> Option<Arc<Entry>> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let expired = inner.slots.get(key)?.entry.expires_ms <= now_ms;
        if expired {
            inner.remove(key);
            return None;
        }
        inner.tick += 1;
        let tick = inner.tick;
        let slot = inner.slots.get_mut(key).expect("present");
        let before = std::mem::replace(&mut slot.used, tick);
        let entry = slot.entry.clone();
        inner.by_use.remove(&before);
        inner.by_use.insert(tick, *key);
        Some(entry)
    }

    /// Stores `entry` under `key`, replacing what was there, evicting the least recently used
    /// entries until it fits.
    pub fn insert(&self, key: LocalKey, entry: Arc<Entry>) -> Inserted {
        let weight = entry.weight();
        if weight > self.budget {
            return Inserted::default();
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.remove(&key);
        let mut evicted = 0;
        while inner.bytes + weight > self.budget {
            let Some((_, oldest)) = inner.by_use.pop_first() else {
                break;
            };
            if let Some(slot) = inner.slots.remove(&oldest) {
                inner.bytes -= slot.entry.weight();
            }
            evicted += 1;
        }
        inner.tick += 1;
        let used = inner.tick;
        inner.by_use.insert(used, key);
        inner.bytes += weight;
        inner.slots.insert(key, Slot { entry, used });
        Inserted {
            kept: true,
            evicted,
        }
    }

    /// Entries and bytes held now.
    pub fn held(&self) -> Held {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).held()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn key(n: u8) -> LocalKey {
        LocalKey(u128::from(n))
    }

    fn entry(body_len: usize, expires_ms: i64) -> Arc<Entry> {
        Arc::new(Entry {
            status: 200,
            stream: false,
            stored_ms: 0,
            expires_ms,
            tokens_in: 0,
            tokens_out: 0,
            cost_usd: 0.0,
            body: Bytes::from(vec![b'x'; body_len]),
        })
    }

    #[test]
    fn entries_expire_at_their_time() {
        let store = LocalStore::new(10_000);
        store.insert(key(1), entry(10, 1_000));
        assert!(store.get(&key(1), 999).is_some());
        assert!(store.get(&key(1), 1_000).is_none());
        assert_eq!(store.held(), Held::default(), "an expired entry is dropped");
    }

    #[test]
    fn the_least_recently_used_goes_first() {
        let weight = entry(100, i64::MAX).weight();
        let store = LocalStore::new(3 * weight);
        for n in 1..=3 {
            assert!(store.insert(key(n), entry(100, i64::MAX)).kept);
        }
        assert!(store.get(&key(1), 0).is_some(), "1 is now the most recent");
        let done = store.insert(key(4), entry(100, i64::MAX));
        assert_eq!(
            done,
            Inserted {
                kept: true,
                evicted: 1
            }
        );
        assert!(
            store.get(&key(2), 0).is_none(),
            "2 was the least recently used"
        );
        for n in [1, 3, 4] {
            assert!(store.get(&key(n), 0).is_some(), "{n}");
        }
        assert_eq!(
            store.held(),
            Held {
                entries: 3,
                bytes: 3 * weight
            }
        );
        // Larger than the whole budget: not kept, nothing evicted for it.
        assert_eq!(
            store.insert(key(5), entry(4 * weight, i64::MAX)),
            Inserted::default()
        );
        assert_eq!(store.held().entries, 3);
        // Replacing an entry frees its old bytes first.
        store.insert(key(3), entry(100, i64::MAX));
        assert_eq!(
            store.held(),
            Held {
                entries: 3,
                bytes: 3 * weight
            }
        );
    }

    proptest! {
        #[test]
        fn the_byte_budget_holds_whatever_is_stored(
            budget in 0usize..4_000,
            ops in prop::collection::vec((0u8..16, 0usize..1_500, any::<bool>()), 0..64),
        ) {
            let store = LocalStore::new(budget);
            for (k, len, read) in ops {
                if read {
                    let _ = store.get(&key(k), 0);
                } else {
                    store.insert(key(k), entry(len, i64::MAX));
                }
                let held = store.held();
                prop_assert!(held.bytes <= budget, "{held:?} over {budget}");
                let inner = store.inner.lock().unwrap();
                prop_assert_eq!(inner.slots.len(), inner.by_use.len());
                let sum: usize = inner.slots.values().map(|s| s.entry.weight()).sum();
                prop_assert_eq!(sum, inner.bytes);
            }
        }
    }
}
