//! Usage per subscription, counted on every answered call and reported to the controller in batches.

use std::sync::Mutex;

use tollgate_snapshot::{FxHashMap, ObjectRef};

/// Usage per subscription since the last report. Fx-hashed: the keys come from the snapshot, never
/// from callers.
pub type Tally = FxHashMap<ObjectRef, Delta>;

/// Usage counted per subscription since the last accepted report.
#[derive(Default)]
pub struct UsageTally {
    pending: Mutex<Tally>,
}

/// One subscription's usage since the last accepted report.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Delta {
    /// Answered calls.
    pub requests: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Cost in US dollars.
    pub cost_usd: f64,
}

impl Delta {
    fn add(&mut self, other: &Delta) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_usd += other.cost_usd;
    }
}

impl UsageTally {
    /// An empty tally.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one answered call of `subscription`.
    pub fn record(
        &self,
        subscription: &ObjectRef,
        input_tokens: u64,
        output_tokens: u64,
        cost_usd: f64,
    ) {
        let delta = Delta {
            requests: 1,
            input_tokens,
            output_tokens,
            cost_usd,
        };
        let mut pending = self.lock();
        // Found first, cloned only when new: this runs on every answered call.
        match pending.get_mut(subscription) {
            Some(total) => total.add(&delta),
            None => {
                pending.insert(subscription.clone(), delta);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Everything counted so far, leaving the tally empty.
    pub fn take(&self) -> Tally {
        std::mem::take(&mut *self.lock())
    }

    /// Adds back what [`UsageTally::take`] took, when the report carrying it was not accepted.
    pub fn put_back(&self, taken: Tally) {
        let mut pending = self.lock();
        for (id, delta) in taken {
            pending.entry(id).or_default().add(&delta);
        }
    }
}
