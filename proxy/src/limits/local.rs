//! The limiter's arithmetic, free of locks, clocks and I/O, so it can be tested exactly.
//!
//! **Per-minute ceilings** (requests, tokens) are leaky buckets: each admitted call adds to the level,
//! which drains continuously at `limit` per minute, so capacity comes back smoothly rather than all at
//! once on a minute boundary. A call is admitted when the level plus what it asks for fits under the
//! limit. "Reset" is the time until the level is back to zero (OpenAI's `x-ratelimit-reset-*`: the time
//! until the limit is back to its initial state). Tokens are admitted on an estimate and settled with
//! the real usage afterwards; a settlement may leave the level above the limit (debt), which later calls
//! wait out.
//!
//! **Budgets** are spend in fixed calendar windows (UTC day, UTC month), in micro-dollars. Each admitted
//! call reserves what it could cost (its token estimate at the model's dearest price) until it is
//! settled with its real cost. A call is admitted when spend plus every reservation plus its own fits
//! under the ceiling, or, like a token estimate above the whole limit, when no other call holds a
//! reservation and the ceiling is not reached. So concurrent calls cannot overshoot a budget together:
//! spend exceeds a ceiling by at most one call admitted alone, plus whatever calls cost beyond their
//! reservations (only when the caller set no output ceiling, since output is not known in advance).

/// Length of the rate window.
pub const MINUTE_MS: i64 = 60_000;

/// A per-minute leaky bucket: `used` units at instant `at_ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bucket {
    /// Level at `at_ms`, in units (requests or tokens).
    pub used: f64,
    /// When `used` was last written (Unix milliseconds).
    pub at_ms: i64,
}

impl Bucket {
    /// The level at `now_ms` after draining at `limit` per minute.
    pub fn level(&self, limit: u64, now_ms: i64) -> f64 {
        let elapsed = (now_ms - self.at_ms).max(0) as f64;
        (self.used - elapsed * limit as f64 / MINUTE_MS as f64).max(0.0)
    }

    fn set(&mut self, level: f64, now_ms: i64) {
        self.used = level.max(0.0);
        self.at_ms = now_ms;
    }
}

/// Milliseconds until a bucket at `level` has drained down to `target`, at `limit` per minute.
pub fn drain_ms(level: f64, target: f64, limit: u64) -> u64 {
    if level <= target || limit == 0 {
        return 0;
    }
    ((level - target) * MINUTE_MS as f64 / limit as f64).ceil() as u64
}

/// Spend in one calendar window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spend {
    /// Which window (day or month number) `micro_usd` belongs to.
    pub window: i64,
    /// Micro-dollars spent in it.
    pub micro_usd: u64,
}

impl Spend {
    /// Spend in `window` (zero once the window has turned).
    pub fn in_window(&self, window: i64) -> u64 {
        if self.window == window {
            self.micro_usd
        } else {
            0
        }
    }

    fn add(&mut self, window: i64, micro_usd: u64) {
        let before = self.in_window(window);
        *self = Spend {
            window,
            micro_usd: before.saturating_add(micro_usd),
        };
    }
}

/// The ceilings in force for one scope (a subscription or a consumer), already divided into this
/// replica's share when counting locally.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ceilings {
    /// Requests per minute.
    pub requests: Option<u64>,
    /// Tokens per minute.
    pub tokens: Option<u64>,
    /// Micro-dollars per UTC day.
    pub daily_micro_usd: Option<u64>,
    /// Micro-dollars per UTC month.
    pub monthly_micro_usd: Option<u64>,
}

impl Ceilings {
    /// Whether nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        *self == Self::default()
    }

    /// This replica's share of every ceiling when `replicas` share the traffic (rounded up, at least 1).
    pub fn share(self, replicas: u32) -> Self {
        let n = u64::from(replicas.max(1));
        let part = |v: Option<u64>| v.map(|v| v.div_ceil(n).max(1));
        let spend = |v: Option<u64>| v.map(|v| v.div_ceil(n));
        Self {
            requests: part(self.requests),
            tokens: part(self.tokens),
            daily_micro_usd: spend(self.daily_micro_usd),
            monthly_micro_usd: spend(self.monthly_micro_usd),
        }
    }
}

/// The instant a decision is taken at, with its calendar windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instant {
    /// Unix milliseconds.
    pub now_ms: i64,
    /// Day number since 1970-01-01 (UTC).
    pub day: i64,
    /// Month number since 1970-01 (UTC).
    pub month: i64,
    /// When the day ends (Unix milliseconds).
    pub day_ends_ms: i64,
    /// When the month ends (Unix milliseconds).
    pub month_ends_ms: i64,
}

impl Instant {
    /// The windows of `now_ms`.
    pub fn at(now_ms: i64) -> Self {
        let day = now_ms.div_euclid(86_400_000);
        let (month, month_ends) = crate::clock::month_of(now_ms.div_euclid(1_000));
        Self {
            now_ms,
            day,
            month,
            day_ends_ms: (day + 1) * 86_400_000,
            month_ends_ms: month_ends * 1_000,
        }
    }
}

/// Everything counted for one scope.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    /// Requests this minute.
    pub requests: Bucket,
    /// Tokens this minute.
    pub tokens: Bucket,
    /// Spend today.
    pub day: Spend,
    /// Spend this month.
    pub month: Spend,
    /// Micro-dollars reserved by admitted calls not yet settled (any window: they settle in seconds).
    pub reserved_micro_usd: u64,
}

/// Where one per-minute dimension stands after a decision, for the `x-ratelimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gauge {
    /// The ceiling.
    pub limit: u64,
    /// What is left now.
    pub remaining: u64,
    /// Milliseconds until the bucket is empty again.
    pub reset_ms: u64,
}

impl Gauge {
    fn of(level: f64, limit: u64) -> Self {
        Self {
            limit,
            remaining: (limit as f64 - level).max(0.0).floor() as u64,
            reset_ms: drain_ms(level, 0.0, limit),
        }
    }

    /// Of two gauges, the one closer to refusing (fewer remaining; then the later reset).
    pub fn tighter(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if (b.remaining, a.reset_ms) < (a.remaining, b.reset_ms) {
                b
            } else {
                a
            }),
            (a, b) => a.or(b),
        }
    }
}

/// The `x-ratelimit-*` state of one call: requests and tokens, when limited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Requests per minute.
    pub requests: Option<Gauge>,
    /// Tokens per minute.
    pub tokens: Option<Gauge>,
}

impl Gauges {
    /// The tighter gauge of each dimension.
    pub fn merge(self, other: Self) -> Self {
        Self {
            requests: Gauge::tighter(self.requests, other.requests),
            tokens: Gauge::tighter(self.tokens, other.tokens),
        }
    }
}

/// Which ceiling refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
    /// The daily budget.
    DailyBudget,
    /// The monthly budget.
    MonthlyBudget,
}

/// Why a call was refused, and when trying again makes sense.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The ceiling reached.
    pub exceeded: Exceeded,
    /// Its value (units per minute, or micro-dollars).
    pub limit: u64,
    /// What was counted against it (level or spend).
    pub used: u64,
    /// What the call asked for (1 request, the token estimate, or 0 for budgets).
    pub requested: u64,
    /// Milliseconds until the call would fit.
    pub retry_after_ms: u64,
    /// The gauges at the time of the refusal.
    pub gauges: Gauges,
}

impl Counters {
    /// Where the per-minute dimensions stand at `now_ms`, without any call: what a call refused
    /// elsewhere shows of this scope.
    pub fn levels(&self, c: &Ceilings, now_ms: i64) -> Gauges {
        Gauges {
            requests: c
                .requests
                .map(|l| Gauge::of(self.requests.level(l, now_ms), l)),
            tokens: c.tokens.map(|l| Gauge::of(self.tokens.level(l, now_ms), l)),
        }
    }

    /// Whether a call asking for `tokens` fits under every ceiling now; nothing is changed.
    pub fn check(&self, c: &Ceilings, at: &Instant, tokens: u64) -> Result<Gauges, Refusal> {
        self.check_reserving(c, at, tokens, 0)
    }

    /// Whether a call asking for `tokens`, and reserving `reserve` micro-dollars of budget while it
    /// runs, fits under every ceiling now; nothing is changed.
    pub fn check_reserving(
        &self,
        c: &Ceilings,
        at: &Instant,
        tokens: u64,
        reserve: u64,
    ) -> Result<Gauges, Refusal> {
        let now = at.now_ms;
        let requests = c.requests.map(|l| (self.requests.level(l, now), l));
        let token_level = c.tokens.map(|l| (self.tokens.level(l, now), l));
        let before = Gauges {
            requests: requests.map(|(level, l)| Gauge::of(level, l)),
            tokens: token_level.map(|(level, l)| Gauge::of(level, l)),
        };
        let refuse = |exceeded, limit, used: f64, requested, retry_after_ms| Refusal {
            exceeded,
            limit,
            used: used.ceil() as u64,
            requested,
            retry_after_ms,
            gauges: before,
        };
        let pending = self.reserved_micro_usd;
        // Spent: wait for the window to turn. Only reserved: calls in flight settle within seconds,
        // usually below what they reserved.
        let budget = |limit: u64, spent: u64, window_ends_ms: i64| {
            let committed = spent.saturating_add(pending);
            let fits =
                committed < limit && (pending == 0 || committed.saturating_add(reserve) <= limit);
            match (fits, spent >= limit) {
                (true, _) => None,
                (false, true) => Some((spent, (window_ends_ms - now).max(0) as u64)),
                (false, false) => Some((committed, 1_000)),
            }
        };
        if let Some(limit) = c.monthly_micro_usd
            && let Some((used, wait)) =
                budget(limit, self.month.in_window(at.month), at.month_ends_ms)
        {
            return Err(refuse(Exceeded::MonthlyBudget, limit, used as f64, 0, wait));
        }
        if let Some(limit) = c.daily_micro_usd
            && let Some((used, wait)) = budget(limit, self.day.in_window(at.day), at.day_ends_ms)
        {
            return Err(refuse(Exceeded::DailyBudget, limit, used as f64, 0, wait));
        }
        if let Some((level, limit)) = requests
            && level + 1.0 > limit as f64
        {
            let wait = drain_ms(level, limit as f64 - 1.0, limit);
            return Err(refuse(Exceeded::Requests, limit, level, 1, wait.max(1)));
        }
        if let Some((level, limit)) = token_level {
            let asked = tokens.min(limit);
            let fits = if asked == 0 {
                level < limit as f64
            } else {
                level + asked as f64 <= limit as f64
            };
            if !fits {
                let target = (limit - asked) as f64;
                let wait = drain_ms(level, target, limit).max(1);
                return Err(refuse(Exceeded::Tokens, limit, level, tokens, wait));
            }
        }
        Ok(Gauges {
            requests: requests.map(|(level, l)| Gauge::of(level + 1.0, l)),
            tokens: token_level.map(|(level, l)| Gauge::of(level + tokens.min(l) as f64, l)),
        })
    }

    /// Counts an admitted call: one request and `tokens` estimated tokens.
    pub fn commit(&mut self, c: &Ceilings, at: &Instant, tokens: u64) {
        if let Some(limit) = c.requests {
            let level = self.requests.level(limit, at.now_ms);
            self.requests.set(level + 1.0, at.now_ms);
        }
        if let Some(limit) = c.tokens {
            let level = self.tokens.level(limit, at.now_ms);
            self.tokens.set(level + tokens.min(limit) as f64, at.now_ms);
        }
    }

    /// Holds `micro_usd` of budget for an admitted call until [`Counters::release`] (only where a
    /// budget is set).
    pub fn reserve(&mut self, c: &Ceilings, micro_usd: u64) {
        if c.daily_micro_usd.is_some() || c.monthly_micro_usd.is_some() {
            self.reserved_micro_usd = self.reserved_micro_usd.saturating_add(micro_usd);
        }
    }

    /// Gives back what [`Counters::reserve`] held for a call that has ended.
    pub fn release(&mut self, c: &Ceilings, micro_usd: u64) {
        if c.daily_micro_usd.is_some() || c.monthly_micro_usd.is_some() {
            self.reserved_micro_usd = self.reserved_micro_usd.saturating_sub(micro_usd);
        }
    }

    /// Settles a finished call: tokens actually used replace the estimate, and the cost is spent.
    pub fn settle(
        &mut self,
        c: &Ceilings,
        at: &Instant,
        estimate: u64,
        used: u64,
        cost_micro_usd: u64,
    ) {
        if let Some(limit) = c.tokens {
            let level = self.tokens.level(limit, at.now_ms);
            let charged = estimate.min(limit) as f64;
            self.tokens.set(level - charged + used as f64, at.now_ms);
        }
        if cost_micro_usd > 0 {
            self.day.add(at.day, cost_micro_usd);
            self.month.add(at.month, cost_micro_usd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_000_000_000; // 2025-11-24T16:00:00Z

    fn at(ms: i64) -> Instant {
        Instant::at(T0 + ms)
    }

    fn rpm(n: u64) -> Ceilings {
        Ceilings {
            requests: Some(n),
            ..Ceilings::default()
        }
    }

    fn admit(
        c: &mut Counters,
        ceilings: &Ceilings,
        when: &Instant,
        tokens: u64,
    ) -> Result<Gauges, Refusal> {
        let gauges = c.check(ceilings, when, tokens)?;
        c.commit(ceilings, when, tokens);
        Ok(gauges)
    }

    #[test]
    fn a_request_limit_admits_exactly_the_limit_then_refuses_with_the_wait_for_one_slot() {
        let ceilings = rpm(60);
        let mut c = Counters::default();
        for i in 0..60 {
            let g = admit(&mut c, &ceilings, &at(0), 0)
                .unwrap()
                .requests
                .unwrap();
            assert_eq!(g.remaining, 59 - i);
            assert_eq!(
                g.reset_ms,
                (i + 1) * 1_000,
                "one request drains in a second at 60/min"
            );
        }
        let refused = admit(&mut c, &ceilings, &at(0), 0).unwrap_err();
        assert_eq!(refused.exceeded, Exceeded::Requests);
        assert_eq!((refused.limit, refused.used), (60, 60));
        assert_eq!(refused.retry_after_ms, 1_000);
        assert_eq!(refused.gauges.requests.unwrap().remaining, 0);
        // A refusal counts nothing: after a second exactly one more fits.
        admit(&mut c, &ceilings, &at(1_000), 0).unwrap();
        assert!(admit(&mut c, &ceilings, &at(1_000), 0).is_err());
    }

    #[test]
    fn buckets_drain_continuously_and_are_full_again_after_a_minute() {
        let ceilings = rpm(10);
        let mut c = Counters::default();
        for _ in 0..10 {
            admit(&mut c, &ceilings, &at(0), 0).unwrap();
        }
        assert!(admit(&mut c, &ceilings, &at(5_999), 0).is_err());
        admit(&mut c, &ceilings, &at(6_000), 0).unwrap();
        // Half a minute later half the bucket has drained.
        let g = c
            .check(&ceilings, &at(36_000), 0)
            .unwrap()
            .requests
            .unwrap();
        assert_eq!(g.remaining, 4, "level 5 after draining, 6 with this call");
        assert_eq!(c.requests.level(10, T0 + 66_000), 0.0);
        for _ in 0..10 {
            admit(&mut c, &ceilings, &at(66_000), 0).unwrap();
        }
    }

    #[test]
    fn tokens_are_admitted_on_the_estimate_and_settled_with_the_real_usage() {
        let ceilings = Ceilings {
            tokens: Some(1_000),
            ..Ceilings::default()
        };
        let mut c = Counters::default();
        let g = admit(&mut c, &ceilings, &at(0), 300)
            .unwrap()
            .tokens
            .unwrap();
        assert_eq!(g.remaining, 700);
        // The call really used 900 tokens (a long answer): the bucket is charged the difference.
        c.settle(&ceilings, &at(0), 300, 900, 0);
        assert_eq!(c.tokens.level(1_000, T0), 900.0);
        let refused = admit(&mut c, &ceilings, &at(0), 200).unwrap_err();
        assert_eq!(refused.exceeded, Exceeded::Tokens);
        assert_eq!((refused.used, refused.requested), (900, 200));
        // 100 tokens must drain at 1000/min: 6 s.
        assert_eq!(refused.retry_after_ms, 6_000);
        admit(&mut c, &ceilings, &at(6_000), 200).unwrap();
        // A call that used fewer tokens than estimated gives the rest back.
        c.settle(&ceilings, &at(6_000), 200, 50, 0);
        assert_eq!(c.tokens.level(1_000, T0 + 6_000), 850.0);
    }

    #[test]
    fn settlement_can_put_a_bucket_in_debt_that_later_calls_wait_out() {
        let ceilings = Ceilings {
            tokens: Some(600),
            ..Ceilings::default()
        };
        let mut c = Counters::default();
        admit(&mut c, &ceilings, &at(0), 0).unwrap();
        c.settle(&ceilings, &at(0), 0, 1_200, 0);
        let refused = admit(&mut c, &ceilings, &at(0), 0).unwrap_err();
        // 1200 used of 600/min: the level is under the limit again after a minute.
        assert_eq!(refused.retry_after_ms, 60_000);
        assert_eq!(refused.gauges.tokens.unwrap().remaining, 0);
        assert_eq!(refused.gauges.tokens.unwrap().reset_ms, 120_000);
        admit(&mut c, &ceilings, &at(60_001), 0).unwrap();
    }

    #[test]
    fn an_estimate_above_the_limit_is_admitted_on_an_empty_bucket() {
        let ceilings = Ceilings {
            tokens: Some(100),
            ..Ceilings::default()
        };
        let mut c = Counters::default();
        let g = admit(&mut c, &ceilings, &at(0), 5_000)
            .unwrap()
            .tokens
            .unwrap();
        assert_eq!(g.remaining, 0);
        assert!(admit(&mut c, &ceilings, &at(0), 1).is_err());
    }

    #[test]
    fn budget_reservations_hold_concurrent_calls_under_the_ceiling() {
        let ceilings = Ceilings {
            daily_micro_usd: Some(1_000),
            ..Ceilings::default()
        };
        let now = at(0);
        let mut c = Counters::default();
        let admit_reserving = |c: &mut Counters, reserve: u64| {
            c.check_reserving(&ceilings, &now, 0, reserve)?;
            c.commit(&ceilings, &now, 0);
            c.reserve(&ceilings, reserve);
            Ok::<(), Refusal>(())
        };
        // Three calls reserving 300 fit in 1000; the fourth would not, and waits a second.
        for _ in 0..3 {
            admit_reserving(&mut c, 300).unwrap();
        }
        let refused = admit_reserving(&mut c, 300).unwrap_err();
        assert_eq!(refused.exceeded, Exceeded::DailyBudget);
        assert_eq!((refused.used, refused.retry_after_ms), (900, 1_000));
        // One ends having cost 100: its reservation goes back, its cost is spent.
        c.release(&ceilings, 300);
        c.settle(&ceilings, &now, 0, 0, 100);
        assert_eq!(c.reserved_micro_usd, 600);
        admit_reserving(&mut c, 300).unwrap();
        // Everything settles: spend 400, nothing reserved.
        for _ in 0..3 {
            c.release(&ceilings, 300);
            c.settle(&ceilings, &now, 0, 0, 100);
        }
        assert_eq!((c.reserved_micro_usd, c.day.in_window(now.day)), (0, 400));
        // A call dearer than what is left goes alone, as an estimate above a token limit does.
        admit_reserving(&mut c, 5_000).unwrap();
        assert!(admit_reserving(&mut c, 1).is_err());
        // Without a budget nothing is reserved.
        let mut free = Counters::default();
        free.reserve(&rpm(10), 500);
        assert_eq!(free.reserved_micro_usd, 0);
    }

    #[test]
    fn budgets_refuse_once_spent_until_the_window_turns() {
        // 2025-11-30T23:00:00Z: the day and the month both end in an hour.
        let t = 1_764_543_600_000;
        let ceilings = Ceilings {
            daily_micro_usd: Some(1_000_000),
            monthly_micro_usd: Some(1_500_000),
            ..Ceilings::default()
        };
        let mut c = Counters::default();
        let now = Instant::at(t);
        assert_eq!(now.day_ends_ms - t, 3_600_000);
        assert_eq!(now.month_ends_ms - t, 3_600_000);
        admit(&mut c, &ceilings, &now, 0).unwrap();
        c.settle(&ceilings, &now, 0, 0, 999_999);
        admit(&mut c, &ceilings, &now, 0).unwrap();
        c.settle(&ceilings, &now, 0, 0, 2);
        let refused = admit(&mut c, &ceilings, &now, 0).unwrap_err();
        assert_eq!(refused.exceeded, Exceeded::DailyBudget);
        assert_eq!((refused.limit, refused.used), (1_000_000, 1_000_001));
        assert_eq!(refused.retry_after_ms, 3_600_000);
        // The next day (and month) starts from zero.
        let tomorrow = Instant::at(t + 3_600_000);
        assert_eq!(tomorrow.month, now.month + 1);
        admit(&mut c, &ceilings, &tomorrow, 0).unwrap();
        c.settle(&ceilings, &tomorrow, 0, 0, 400_000);
        assert_eq!(c.day.in_window(tomorrow.day), 400_000);
        assert_eq!(c.month.in_window(tomorrow.month), 400_000);
    }

    #[test]
    fn the_monthly_budget_outlasts_days() {
        let t = 1_764_000_000_000;
        let ceilings = Ceilings {
            daily_micro_usd: Some(1_000_000),
            monthly_micro_usd: Some(1_500_000),
            ..Ceilings::default()
        };
        let mut c = Counters::default();
        let day1 = Instant::at(t);
        c.settle(&ceilings, &day1, 0, 0, 900_000);
        let day2 = Instant::at(t + 86_400_000);
        c.settle(&ceilings, &day2, 0, 0, 700_000);
        let refused = c
            .check(&ceilings, &Instant::at(t + 2 * 86_400_000), 0)
            .unwrap_err();
        assert_eq!(refused.exceeded, Exceeded::MonthlyBudget);
        assert_eq!(refused.used, 1_600_000);
        let december = Instant::at(1_764_547_200_000); // 2025-12-01T00:00:00Z
        assert!(c.check(&ceilings, &december, 0).is_ok());
    }

    #[test]
    fn shares_round_up_and_never_reach_zero() {
        let c = Ceilings {
            requests: Some(10),
            tokens: Some(1),
            daily_micro_usd: Some(0),
            monthly_micro_usd: Some(1_000_001),
        };
        assert_eq!(
            c.share(3),
            Ceilings {
                requests: Some(4),
                tokens: Some(1),
                daily_micro_usd: Some(0),
                monthly_micro_usd: Some(333_334),
            }
        );
        assert_eq!(c.share(0), c);
    }

    #[test]
    fn the_tighter_gauge_wins() {
        let a = Gauge {
            limit: 100,
            remaining: 50,
            reset_ms: 1,
        };
        let b = Gauge {
            limit: 10,
            remaining: 3,
            reset_ms: 9,
        };
        assert_eq!(Gauge::tighter(Some(a), Some(b)), Some(b));
        assert_eq!(Gauge::tighter(None, Some(a)), Some(a));
    }
}
