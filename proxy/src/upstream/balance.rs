//! Which backend a call goes to: a weighted choice among the healthy weighted backends, then the other
//! weighted backends, then the ordered fallbacks — each attempt after the first paid from the route's
//! retry budget, so retries cannot multiply the load on a struggling provider.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tollgate_snapshot::FxHashMap;

use tollgate_snapshot::{Backend, ObjectRef, RetryBudget, Snapshot};

use crate::upstream::health::{Availability, Health, ProviderHealth};

/// Most weighted backends a model can have (the CRD allows 16).
const MAX_WEIGHTED: usize = 64;

/// The attempts of one call, produced one at a time as earlier ones fail.
pub struct Plan<'a> {
    again: Option<Attempt<'a>>,
    weighted: &'a [Backend],
    fallbacks: &'a [Backend],
    tried: u64,
    next_fallback: usize,
    ignore_health: bool,
    attempts: u32,
}

/// One attempt to make.
pub struct Attempt<'a> {
    /// The backend.
    pub backend: &'a Backend,
    /// Its provider's health record, to report the outcome to.
    pub health: Arc<ProviderHealth>,
}

impl<'a> Plan<'a> {
    /// A plan over a model's weighted backends (at most 64 are considered) and fallbacks.
    pub fn new(weighted: &'a [Backend], fallbacks: &'a [Backend]) -> Self {
        Self {
            again: None,
            weighted: &weighted[..weighted.len().min(MAX_WEIGHTED)],
            fallbacks,
            tried: 0,
            next_fallback: 0,
            ignore_health: false,
            attempts: 0,
        }
    }

    /// The next backend to try, or `None` when every one was tried or is ejected. When every backend
    /// is ejected from the start, health is ignored: serving from a possibly sick backend beats
    /// refusing every call.
    pub fn next(
        &mut self,
        snapshot: &Snapshot,
        health: &Health,
        now_ms: i64,
    ) -> Option<Attempt<'a>> {
        if let Some(again) = self.again.take() {
            return Some(again);
        }
        let found = self.find(snapshot, health, now_ms);
        if found.is_none() && self.attempts == 0 && !self.ignore_health {
            self.ignore_health = true;
            self.tried = 0;
            self.next_fallback = 0;
            let again = self.find(snapshot, health, now_ms);
            self.attempts += u32::from(again.is_some());
            return again;
        }
        self.attempts += u32::from(found.is_some());
        found
    }

    /// Makes the next attempt the same backend again (with another key of its pool).
    pub fn again(&mut self, attempt: Attempt<'a>) {
        self.again = Some(attempt);
    }

    /// Whether a backend may be tried; claims the probe of an ejected provider whose time is up.
    fn usable(&self, h: &ProviderHealth, now_ms: i64) -> bool {
        if self.ignore_health {
            return true;
        }
        match h.availability(now_ms) {
            Availability::Healthy => true,
            Availability::ProbeDue => h.claim_probe(now_ms),
            Availability::Ejected => false,
        }
    }

    fn find(&mut self, snapshot: &Snapshot, health: &Health, now_ms: i64) -> Option<Attempt<'a>> {
        // Weighted backends not yet tried, in weighted random order; sick ones are skipped.
        loop {
            let mut weights = [0u64; MAX_WEIGHTED];
            let mut records: [Option<Arc<ProviderHealth>>; MAX_WEIGHTED] =
                std::array::from_fn(|_| None);
            let mut total = 0u64;
            for (i, b) in self.weighted.iter().enumerate() {
                if self.tried & (1 << i) != 0 || b.weight == 0 {
                    continue;
                }
                let provider = snapshot.provider(b.provider);
                let h = health.of(provider);
                let sick = h.availability(now_ms) == Availability::Ejected
                    || h.keys_exhausted(provider.credentials.len(), now_ms);
                if self.ignore_health || !sick {
                    weights[i] = u64::from(b.weight);
                    total += weights[i];
                    records[i] = Some(h);
                }
            }
            if total == 0 {
                break;
            }
            let i = pick(&weights[..self.weighted.len()], fastrand::u64(..total));
            self.tried |= 1 << i;
            let h = records[i]
                .take()
                .expect("a weighted candidate has a record");
            if self.usable(&h, now_ms) {
                return Some(Attempt {
                    backend: &self.weighted[i],
                    health: h,
                });
            }
        }
        while let Some(backend) = self.fallbacks.get(self.next_fallback) {
            self.next_fallback += 1;
            let provider = snapshot.provider(backend.provider);
            let h = health.of(provider);
            let keys_rest =
                !self.ignore_health && h.keys_exhausted(provider.credentials.len(), now_ms);
            if !keys_rest && self.usable(&h, now_ms) {
                return Some(Attempt { backend, health: h });
            }
        }
        None
    }
}

/// The index a ticket in `0..sum(weights)` falls on.
fn pick(weights: &[u64], mut ticket: u64) -> usize {
    for (i, &w) in weights.iter().enumerate() {
        if ticket < w {
            return i;
        }
        ticket -= w;
    }
    weights.iter().rposition(|&w| w > 0).unwrap_or(0)
}

/// One route's retry allowance: a balance that every call adds `percent`% of a retry to and time
/// refills at `min_per_second`, capped at ten seconds' worth; each retry takes one.
struct Allowance {
    balance: f64,
    at: Instant,
}

/// Retry budgets of every route, keyed by the route's `namespace/name`.
#[derive(Default)]
pub struct RetryBudgets {
    routes: RwLock<FxHashMap<ObjectRef, Arc<Mutex<Allowance>>>>,
}

/// A call's handle on its route's retry budget.
pub struct RetryGate {
    allowance: Arc<Mutex<Allowance>>,
    policy: RetryBudget,
}

impl RetryBudgets {
    /// No route known yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a call on `route` and returns the gate its retries must pass.
    pub fn call(&self, route: &ObjectRef, policy: RetryBudget) -> RetryGate {
        let allowance = self.allowance(route, policy);
        {
            let mut a = allowance.lock().expect("retry budget lock");
            a.refill(policy);
            a.balance = (a.balance + f64::from(policy.percent) / 100.0).min(cap(policy));
        }
        RetryGate { allowance, policy }
    }

    fn allowance(&self, route: &ObjectRef, policy: RetryBudget) -> Arc<Mutex<Allowance>> {
        if let Some(a) = self.routes.read().expect("retry budget lock").get(route) {
            return a.clone();
        }
        self.routes
            .write()
            .expect("retry budget lock")
            .entry(route.clone())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Allowance {
                    balance: cap(policy),
                    at: Instant::now(),
                }))
            })
            .clone()
    }
}

fn cap(policy: RetryBudget) -> f64 {
    (f64::from(policy.min_per_second) * 10.0).max(1.0)
}

impl Allowance {
    fn refill(&mut self, policy: RetryBudget) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        self.balance = (self.balance + elapsed * f64::from(policy.min_per_second)).min(cap(policy));
    }
}

impl RetryGate {
    /// Gives back a retry taken for an attempt that was not made.
    pub fn refund(&self) {
        let mut a = self.allowance.lock().expect("retry budget lock");
        a.balance = (a.balance + 1.0).min(cap(self.policy));
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn try_retry(&self) -> bool {
        let mut a = self.allowance.lock().expect("retry budget lock");
        a.refill(self.policy);
        if a.balance >= 1.0 {
            a.balance -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_fall_on_their_weights() {
        let w = [1, 0, 3];
        assert_eq!(pick(&w, 0), 0);
        assert_eq!(pick(&w, 1), 2);
        assert_eq!(pick(&w, 3), 2);
        assert_eq!(pick(&w, 99), 2);
    }

    #[test]
    fn the_retry_budget_allows_a_share_of_calls_plus_a_floor() {
        let budgets = RetryBudgets::new();
        let route = ObjectRef::new("t", "r");
        let policy = RetryBudget {
            percent: 20,
            min_per_second: 0,
        };
        // The initial balance is the cap (ten seconds of the floor, at least one retry).
        let gate = budgets.call(&route, policy);
        assert!(gate.try_retry());
        assert!(!gate.try_retry());
        // Ten calls earn two retries.
        let mut allowed = 0;
        for _ in 0..10 {
            let gate = budgets.call(&route, policy);
            allowed += u32::from(gate.try_retry());
        }
        assert!(allowed <= 2, "{allowed}");
        let floor = RetryBudget {
            percent: 0,
            min_per_second: 5,
        };
        let other = ObjectRef::new("t", "other");
        let gate = budgets.call(&other, floor);
        let burst = (0..100).filter(|_| gate.try_retry()).count();
        assert_eq!(burst, 50, "ten seconds of five per second");
    }
}
