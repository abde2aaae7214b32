//! Passive health of providers and cooldown of the keys in their pools.
//!
//! Nothing is probed on the side: the outcome of real calls decides. A provider that fails
//! `failures_to_eject` calls in a row (connect errors, timeouts, 5xx) is ejected for `ejection_ms`;
//! after that one call is let through as a probe, and its outcome either restores the provider or
//! ejects it again. A key that the provider refused (401/403) or rate limited (429) cools down for
//! `key_cooldown_ms` while the pool's other keys carry the calls.
//!
//! State is keyed by the provider's `namespace/name`, so it outlives snapshot swaps.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tollgate_snapshot::FxHashMap;

use tollgate_snapshot::{HealthPolicy, ObjectRef, Provider};

/// Whether a provider may be sent a call now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    /// In rotation.
    Healthy,
    /// Ejected, and its time out is over: one call may probe it.
    ProbeDue,
    /// Ejected.
    Ejected,
}

/// How an attempt at a provider ended, as health sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The provider answered (any answer that is not a provider fault).
    Success,
    /// Connect error, timeout, broken connection or 5xx.
    Failure,
    /// The key was refused or rate limited; the provider itself is fine.
    KeyRejected,
    /// Says nothing about the provider (e.g. a translation this release lacks).
    Neutral,
}

/// A probe whose outcome was never recorded (its call was cancelled) stops blocking others after this.
const PROBE_STALE_MS: i64 = 120_000;

/// One provider's health.
#[derive(Default)]
pub struct ProviderHealth {
    failures: AtomicU32,
    ejected_until_ms: AtomicI64,
    /// When the current probe call started; 0 when none is out.
    probe_since_ms: AtomicI64,
    next_key: AtomicUsize,
    key_cool_until_ms: Mutex<Vec<i64>>,
}

impl ProviderHealth {
    /// Where the provider stands at `now_ms` (takes nothing).
    pub fn availability(&self, now_ms: i64) -> Availability {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        let probe = self.probe_since_ms.load(Ordering::Relaxed);
        if until == 0 {
            Availability::Healthy
        } else if now_ms < until || (probe != 0 && now_ms - probe < PROBE_STALE_MS) {
            Availability::Ejected
        } else {
            Availability::ProbeDue
        }
    }

    /// Claims the single probe call of an ejected provider; `false` if another call has it.
    pub fn claim_probe(&self, now_ms: i64) -> bool {
        let probe = self.probe_since_ms.load(Ordering::Relaxed);
        if probe != 0 && now_ms - probe < PROBE_STALE_MS {
            return false;
        }
        self.probe_since_ms
            .compare_exchange(probe, now_ms.max(1), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Records an attempt's outcome; returns `true` when it ejected the provider.
    pub fn record(
        &self,
        outcome: Outcome,
        policy: &HealthPolicy,
        key: Option<usize>,
        now_ms: i64,
    ) -> bool {
        match outcome {
            Outcome::Success | Outcome::KeyRejected => {
                if outcome == Outcome::KeyRejected
                    && let Some(k) = key
                {
                    self.cool_key(k, now_ms + policy.key_cooldown_ms as i64);
                }
                self.failures.store(0, Ordering::Relaxed);
                self.ejected_until_ms.store(0, Ordering::Relaxed);
                self.probe_since_ms.store(0, Ordering::Release);
                false
            }
            Outcome::Failure => {
                let was_probe = self.probe_since_ms.swap(0, Ordering::AcqRel) != 0;
                let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if was_probe || failures >= policy.failures_to_eject.max(1) {
                    self.failures.store(0, Ordering::Relaxed);
                    self.ejected_until_ms
                        .store(now_ms + policy.ejection_ms.max(1) as i64, Ordering::Relaxed);
                    true
                } else {
                    false
                }
            }
            Outcome::Neutral => {
                self.probe_since_ms.store(0, Ordering::Release);
                false
            }
        }
    }

    fn cool_key(&self, key: usize, until_ms: i64) {
        let mut keys = self.key_cool_until_ms.lock().expect("key pool lock");
        if keys.len() <= key {
            keys.resize(key + 1, 0);
        }
        keys[key] = until_ms;
    }

    /// The key of a pool of `pool` keys to use next: in turn, skipping cooling keys; when every key
    /// cools, the one that is warm again soonest. `None` for keyless providers.
    pub fn pick_key(&self, pool: usize, now_ms: i64) -> Option<usize> {
        if pool == 0 {
            return None;
        }
        let start = self.next_key.fetch_add(1, Ordering::Relaxed);
        let keys = self.key_cool_until_ms.lock().expect("key pool lock");
        let cool_until = |k: usize| keys.get(k).copied().unwrap_or(0);
        let mut soonest = (i64::MAX, start % pool);
        for i in 0..pool {
            let k = (start + i) % pool;
            let until = cool_until(k);
            if until <= now_ms {
                return Some(k);
            }
            if until < soonest.0 {
                soonest = (until, k);
            }
        }
        Some(soonest.1)
    }

    /// Keys of a pool of `pool` that are cooling down at `now_ms`.
    pub fn cooling_keys(&self, pool: usize, now_ms: i64) -> usize {
        let keys = self.key_cool_until_ms.lock().expect("key pool lock");
        keys.iter()
            .take(pool)
            .filter(|&&until| until > now_ms)
            .count()
    }

    /// Whether every key of a pool of `pool` is cooling down (a keyless provider never is).
    pub fn keys_exhausted(&self, pool: usize, now_ms: i64) -> bool {
        pool > 0 && self.cooling_keys(pool, now_ms) == pool
    }
}

/// Health of every provider seen.
#[derive(Default)]
pub struct Health {
    providers: RwLock<FxHashMap<ObjectRef, Arc<ProviderHealth>>>,
}

impl Health {
    /// No provider known yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The health record of a provider.
    pub fn of(&self, provider: &Provider) -> Arc<ProviderHealth> {
        if let Some(h) = self
            .providers
            .read()
            .expect("health lock")
            .get(&provider.id)
        {
            return h.clone();
        }
        self.providers
            .write()
            .expect("health lock")
            .entry(provider.id.clone())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            failures_to_eject: 3,
            ejection_ms: 1_000,
            key_cooldown_ms: 5_000,
        }
    }

    #[test]
    fn consecutive_failures_eject_and_one_probe_restores() {
        let h = ProviderHealth::default();
        let p = policy();
        assert!(!h.record(Outcome::Failure, &p, None, 0));
        assert!(!h.record(Outcome::Failure, &p, None, 0));
        h.record(Outcome::Success, &p, None, 0);
        assert!(
            !h.record(Outcome::Failure, &p, None, 0),
            "a success resets the count"
        );
        assert!(!h.record(Outcome::Failure, &p, None, 0));
        assert!(h.record(Outcome::Failure, &p, None, 10));
        assert_eq!(h.availability(500), Availability::Ejected);
        assert_eq!(h.availability(1_010), Availability::ProbeDue);
        assert!(h.claim_probe(1_010));
        assert!(!h.claim_probe(1_011), "one probe at a time");
        assert_eq!(h.availability(1_010), Availability::Ejected);
        // The probe fails: out again at once, without waiting for three more failures.
        assert!(h.record(Outcome::Failure, &p, None, 1_020));
        assert_eq!(h.availability(2_000), Availability::Ejected);
        assert!(h.claim_probe(2_020));
        h.record(Outcome::Success, &p, None, 2_030);
        assert_eq!(h.availability(2_030), Availability::Healthy);
        // A probe whose call was cancelled does not block the provider forever.
        h.record(Outcome::Failure, &p, None, 3_000);
        h.record(Outcome::Failure, &p, None, 3_000);
        h.record(Outcome::Failure, &p, None, 3_000);
        assert!(h.claim_probe(4_000));
        assert_eq!(
            h.availability(4_000 + PROBE_STALE_MS - 1),
            Availability::Ejected
        );
        assert_eq!(
            h.availability(4_000 + PROBE_STALE_MS),
            Availability::ProbeDue
        );
    }

    #[test]
    fn rejected_keys_cool_down_and_the_pool_goes_round_the_others() {
        let h = ProviderHealth::default();
        let p = policy();
        h.record(Outcome::KeyRejected, &p, Some(1), 0);
        let picks: Vec<_> = (0..6).map(|_| h.pick_key(3, 100).unwrap()).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert!(picks.contains(&0) && picks.contains(&2));
        assert_eq!(h.cooling_keys(3, 100), 1);
        assert!(!h.keys_exhausted(3, 100));
        // Every key cooling: the one warm soonest.
        h.record(Outcome::KeyRejected, &p, Some(0), 200);
        h.record(Outcome::KeyRejected, &p, Some(2), 300);
        assert_eq!(h.pick_key(3, 400), Some(1));
        assert!(h.keys_exhausted(3, 400));
        // Cooldowns end.
        assert_eq!(h.cooling_keys(3, 5_300), 0);
        assert_eq!(h.pick_key(0, 0), None);
    }
}
