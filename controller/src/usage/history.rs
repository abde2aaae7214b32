//! Usage history, pure: adding a batch of per-day amounts to a subscription's `status.usage`, keeping it
//! bounded, and adding subscriptions up for their route and consumer.
//!
//! **Kept**: one bucket per UTC day with traffic in the current and the previous calendar month (at most
//! 62), one per month with traffic in the last 12 months, this one included (at most 12), and the last
//! write of at most 8 controller replicas. A bucket is about 110 bytes of JSON, so a full history is
//! under 10 KB per object, far below the API server's 1.5 MB.
//!
//! **Once and only once**: every write is a read-modify-write guarded by `resourceVersion`, so two
//! writers (an old and a new leader) can only add on top of each other, never overwrite. Each write
//! also records `(writer, seq)` in `writes`: a batch whose answer was lost (a timeout after the API
//! server applied it) is retried with the same `seq`, and the retry sees its mark and adds nothing.

use std::collections::BTreeMap;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{Timestamp, civil::Date, tz::TimeZone},
};
use tollgate_crds::{Usage, UsageBucket, UsageWrite};

/// Months kept in `months`, the current one included.
pub const KEPT_MONTHS: i32 = 12;
/// Daily buckets kept at most: two months of 31 days.
pub const KEPT_DAYS: usize = 62;
/// Replicas whose last write is remembered.
pub const KEPT_WRITERS: usize = 8;

/// Calls, tokens and cost to add. Cost is in micro-dollars so sums are exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amount {
    /// Calls answered.
    pub requests: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost in micro-dollars.
    pub cost_micros: i64,
}

impl Amount {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Amount) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost_micros = self.cost_micros.saturating_add(other.cost_micros);
    }

    /// What a stored bucket holds.
    pub fn of(bucket: &UsageBucket) -> Self {
        Self {
            requests: u64::try_from(bucket.requests).unwrap_or(0),
            input_tokens: u64::try_from(bucket.input_tokens).unwrap_or(0),
            output_tokens: u64::try_from(bucket.output_tokens).unwrap_or(0),
            cost_micros: micros(&bucket.cost_usd),
        }
    }
}

/// A UTC calendar month, counted as `year * 12 + month - 1` so months subtract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month(i32);

impl Month {
    /// The month `day` is in.
    pub fn of(day: Date) -> Self {
        Self(i32::from(day.year()) * 12 + i32::from(day.month()) - 1)
    }

    /// `n` months earlier.
    pub fn back(self, n: i32) -> Self {
        Self(self.0 - n)
    }

    /// Its first day.
    pub fn first_day(self) -> Date {
        let year = i16::try_from(self.0.div_euclid(12)).unwrap_or(1970);
        let month = i8::try_from(self.0.rem_euclid(12) + 1).unwrap_or(1);
        Date::new(year, month, 1).unwrap_or(Date::constant(1970, 1, 1))
    }

    /// Its first instant.
    pub fn start(self) -> Timestamp {
        self.first_day()
            .to_zoned(TimeZone::UTC)
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }

    /// Its bucket name, `2026-12`.
    pub fn key(self) -> String {
        let day = self.first_day();
        format!("{:04}-{:02}", day.year(), day.month())
    }
}

/// A day's bucket name, `2026-12-06`.
pub fn day_key(day: Date) -> String {
    format!("{:04}-{:02}-{:02}", day.year(), day.month(), day.day())
}

/// The UTC day `now` falls on.
pub fn today(now: Timestamp) -> Date {
    now.to_zoned(TimeZone::UTC).date()
}

/// Parses `costUsd` (`"12.345678"`) into micro-dollars; anything unreadable counts as zero.
pub fn micros(cost: &str) -> i64 {
    let (whole, frac) = cost.split_once('.').unwrap_or((cost, ""));
    let whole: i64 = whole.parse().unwrap_or(0);
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
    whole
        .saturating_mul(1_000_000)
        .saturating_add(frac.parse::<i64>().unwrap_or(0))
}

/// Formats micro-dollars as `costUsd`.
pub fn dollars(micros: i64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// Whether `writer`'s batch `seq` (or a later one) is already in `usage`.
pub fn applied(usage: Option<&Usage>, writer: &str, seq: i64) -> bool {
    usage.is_some_and(|u| u.writes.iter().any(|w| w.writer == writer && w.seq >= seq))
}

/// `current` plus a batch of per-day amounts, marked as `writer`'s batch `seq`, settled for `today`.
pub fn add(
    current: Option<&Usage>,
    batch: &[(Date, Amount)],
    writer: &str,
    seq: i64,
    today: Date,
) -> Usage {
    let mut usage = current.cloned().unwrap_or_default();
    adopt_window(&mut usage);
    for (day, amount) in batch {
        bump(&mut usage.days, &day_key(*day), amount);
        bump(&mut usage.months, &Month::of(*day).key(), amount);
    }
    usage.writes.retain(|w| w.writer != writer);
    usage.writes.insert(
        0,
        UsageWrite {
            writer: writer.to_owned(),
            seq,
        },
    );
    usage.writes.truncate(KEPT_WRITERS);
    settle(&mut usage, today);
    usage
}

/// The sum of several histories (a route's or a consumer's subscriptions), settled for `today`;
/// `None` when there is none. Linear in the buckets (a map per period), so a route with thousands of
/// subscriptions costs milliseconds.
pub fn total<'a>(usages: impl IntoIterator<Item = &'a Usage>, today: Date) -> Option<Usage> {
    let mut days: BTreeMap<String, Amount> = BTreeMap::new();
    let mut months: BTreeMap<String, Amount> = BTreeMap::new();
    let mut any = false;
    for usage in usages {
        any = true;
        let adopted;
        let usage = if usage.months.is_empty() {
            let mut copy = usage.clone();
            adopt_window(&mut copy);
            adopted = copy;
            &adopted
        } else {
            usage
        };
        for (sums, buckets) in [(&mut days, &usage.days), (&mut months, &usage.months)] {
            for bucket in buckets {
                sums.entry(bucket.period.clone())
                    .or_default()
                    .add(&Amount::of(bucket));
            }
        }
    }
    if !any {
        return None;
    }
    let buckets = |sums: BTreeMap<String, Amount>| -> Vec<UsageBucket> {
        sums.into_iter().map(|(p, a)| filled(p, &a)).collect()
    };
    let mut sum = Usage {
        days: buckets(days),
        months: buckets(months),
        ..Usage::default()
    };
    settle(&mut sum, today);
    Some(sum)
}

/// Drops buckets too old to keep, orders them, and sets the current window's totals from this
/// month's bucket.
pub fn settle(usage: &mut Usage, today: Date) {
    let this = Month::of(today);
    let first_day = day_key(this.back(1).first_day());
    let first_month = this.back(KEPT_MONTHS - 1).key();
    usage.days.retain(|b| b.period >= first_day);
    usage.months.retain(|b| b.period >= first_month);
    usage.days.sort_by(|a, b| a.period.cmp(&b.period));
    usage.months.sort_by(|a, b| a.period.cmp(&b.period));
    // Buckets after today only come from a clock running ahead; the newest are kept within the bounds.
    let extra = usage.days.len().saturating_sub(KEPT_DAYS);
    usage.days.drain(..extra);
    let extra = usage.months.len().saturating_sub(KEPT_MONTHS as usize);
    usage.months.drain(..extra);
    let key = this.key();
    let now = usage
        .months
        .iter()
        .find(|b| b.period == key)
        .map(Amount::of)
        .unwrap_or_default();
    usage.window_start = Some(Time(this.start()));
    usage.requests = saturating_i64(now.requests);
    usage.input_tokens = saturating_i64(now.input_tokens);
    usage.output_tokens = saturating_i64(now.output_tokens);
    usage.total_tokens = usage.input_tokens.saturating_add(usage.output_tokens);
    usage.cost_usd = dollars(now.cost_micros);
}

/// A usage written before there was history holds only the window's totals: they become that month's
/// bucket, so the first write with history does not forget them.
fn adopt_window(usage: &mut Usage) {
    if !usage.months.is_empty() || (usage.requests == 0 && micros(&usage.cost_usd) == 0) {
        return;
    }
    let Some(start) = &usage.window_start else {
        return;
    };
    let amount = Amount {
        requests: u64::try_from(usage.requests).unwrap_or(0),
        input_tokens: u64::try_from(usage.input_tokens).unwrap_or(0),
        output_tokens: u64::try_from(usage.output_tokens).unwrap_or(0),
        cost_micros: micros(&usage.cost_usd),
    };
    bump(&mut usage.months, &Month::of(today(start.0)).key(), &amount);
}

fn bump(buckets: &mut Vec<UsageBucket>, period: &str, amount: &Amount) {
    match buckets.iter_mut().find(|b| b.period == period) {
        Some(bucket) => {
            let mut sum = Amount::of(bucket);
            sum.add(amount);
            *bucket = filled(period.to_owned(), &sum);
        }
        None => buckets.push(filled(period.to_owned(), amount)),
    }
}

/// The bucket of `period` holding `amount`.
fn filled(period: String, amount: &Amount) -> UsageBucket {
    UsageBucket {
        period,
        requests: saturating_i64(amount.requests),
        input_tokens: saturating_i64(amount.input_tokens),
        output_tokens: saturating_i64(amount.output_tokens),
        cost_usd: dollars(amount.cost_micros),
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn day(text: &str) -> Date {
        text.parse().unwrap()
    }

    fn calls(n: u64) -> Amount {
        Amount {
            requests: n,
            input_tokens: 10 * n,
            output_tokens: 20 * n,
            cost_micros: 29 * n as i64,
        }
    }

    fn periods(buckets: &[UsageBucket]) -> Vec<&str> {
        buckets.iter().map(|b| b.period.as_str()).collect()
    }

    fn requests_in(buckets: &[UsageBucket], period: &str) -> i64 {
        buckets
            .iter()
            .find(|b| b.period == period)
            .map_or(0, |b| b.requests)
    }

    #[test]
    fn cost_round_trips_in_micro_dollars() {
        assert_eq!(micros("12.345678"), 12_345_678);
        assert_eq!(micros("0.5"), 500_000);
        assert_eq!(micros(""), 0);
        assert_eq!(dollars(12_345_678), "12.345678");
        assert_eq!(dollars(42), "0.000042");
    }

    #[test]
    fn a_day_rolls_over_into_a_new_bucket_of_the_same_month() {
        let first = add(
            None,
            &[(day("2026-03-16"), calls(2))],
            "c-0",
            1,
            day("2026-03-16"),
        );
        let second = add(
            Some(&first),
            &[(day("2026-03-17"), calls(3))],
            "c-0",
            2,
            day("2026-03-17"),
        );
        assert_eq!(periods(&second.days), ["2026-03-16", "2026-03-17"]);
        assert_eq!(requests_in(&second.days, "2026-03-16"), 2);
        assert_eq!(requests_in(&second.days, "2026-03-17"), 3);
        assert_eq!(periods(&second.months), ["2026-03"]);
        assert_eq!(requests_in(&second.months, "2026-03"), 5);
        assert_eq!(second.requests, 5);
        assert_eq!(second.total_tokens, 150);
        assert_eq!(second.cost_usd, "0.000145");
        assert_eq!(
            second.window_start.unwrap().0.to_string(),
            "2026-03-01T00:00:00Z"
        );
    }

    #[test]
    fn a_month_rolls_over_keeping_the_previous_months_days() {
        let march = add(
            None,
            &[(day("2026-03-31"), calls(4))],
            "c-0",
            1,
            day("2026-03-31"),
        );
        let april = add(
            Some(&march),
            &[(day("2026-04-01"), calls(1))],
            "c-0",
            2,
            day("2026-04-01"),
        );
        assert_eq!(periods(&april.days), ["2026-03-31", "2026-04-01"]);
        assert_eq!(periods(&april.months), ["2026-03", "2026-04"]);
        assert_eq!(april.requests, 1, "the window is April alone");
        // In May, March's days go (two months back) but its month stays.
        let may = add(
            Some(&april),
            &[(day("2026-05-02"), calls(1))],
            "c-0",
            3,
            day("2026-05-02"),
        );
        assert_eq!(periods(&may.days), ["2026-04-01", "2026-05-02"]);
        assert_eq!(periods(&may.months), ["2026-03", "2026-04", "2026-05"]);
    }

    #[test]
    fn a_year_rolls_over_and_only_twelve_months_are_kept() {
        let mut usage = None;
        let mut seq = 0;
        for month in 1..=12 {
            seq += 1;
            let d = Date::new(2025, month, 15).unwrap();
            usage = Some(add(usage.as_ref(), &[(d, calls(1))], "c-0", seq, d));
        }
        let december = usage.unwrap();
        assert_eq!(december.months.len(), 12);
        assert_eq!(december.months[0].period, "2025-01");
        let new_year = add(
            Some(&december),
            &[(day("2026-01-01"), calls(7))],
            "c-0",
            seq + 1,
            day("2026-01-01"),
        );
        assert_eq!(new_year.months.len(), 12);
        assert_eq!(
            new_year.months[0].period, "2025-02",
            "January 2025 is dropped"
        );
        assert_eq!(new_year.months[11].period, "2026-01");
        assert_eq!(periods(&new_year.days), ["2025-12-15", "2026-01-01"]);
        assert_eq!(new_year.requests, 7);
        assert_eq!(
            new_year.window_start.unwrap().0.to_string(),
            "2026-01-01T00:00:00Z"
        );
    }

    #[test]
    fn a_batch_accepted_before_midnight_counts_on_its_own_day() {
        let usage = add(
            None,
            &[(day("2026-04-30"), calls(2)), (day("2026-05-01"), calls(1))],
            "c-0",
            1,
            day("2026-05-01"),
        );
        assert_eq!(requests_in(&usage.days, "2026-04-30"), 2);
        assert_eq!(requests_in(&usage.months, "2026-04"), 2);
        assert_eq!(usage.requests, 1);
    }

    #[test]
    fn totals_written_before_history_become_their_months_bucket() {
        let old = Usage {
            window_start: Some(Time(Month::of(day("2026-03-01")).start())),
            requests: 9,
            input_tokens: 90,
            output_tokens: 10,
            total_tokens: 100,
            cost_usd: "0.500000".into(),
            ..Usage::default()
        };
        let usage = add(
            Some(&old),
            &[(day("2026-03-20"), calls(1))],
            "c-0",
            1,
            day("2026-03-20"),
        );
        assert_eq!(usage.requests, 10);
        assert_eq!(usage.cost_usd, "0.500029");
    }

    #[test]
    fn a_writer_remembers_its_last_batch_and_only_eight_writers_are_kept() {
        let mut usage = add(None, &[], "c-0", 5, day("2026-03-20"));
        assert!(applied(Some(&usage), "c-0", 5));
        assert!(applied(Some(&usage), "c-0", 4));
        assert!(!applied(Some(&usage), "c-0", 6));
        assert!(!applied(Some(&usage), "c-1", 1));
        for n in 0..10 {
            usage = add(Some(&usage), &[], &format!("r-{n}"), 1, day("2026-03-20"));
        }
        assert_eq!(usage.writes.len(), KEPT_WRITERS);
        assert_eq!(usage.writes[0].writer, "r-9");
    }

    #[test]
    fn a_route_adds_up_its_subscriptions() {
        let a = add(
            None,
            &[(day("2026-03-20"), calls(2))],
            "c-0",
            1,
            day("2026-03-20"),
        );
        let b = add(
            None,
            &[(day("2026-03-20"), calls(3)), (day("2026-03-21"), calls(1))],
            "c-0",
            2,
            day("2026-03-21"),
        );
        let sum = total([&a, &b], day("2026-03-21")).unwrap();
        assert_eq!(requests_in(&sum.days, "2026-03-20"), 5);
        assert_eq!(requests_in(&sum.days, "2026-03-21"), 1);
        assert_eq!(sum.requests, 6);
        assert!(sum.writes.is_empty());
        assert_eq!(total([], day("2026-03-21")), None);
    }

    /// A replica's writes as the API server sees them: a write guarded by the `resourceVersion` it read
    /// lands only if nobody wrote since; its answer may still be lost.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        /// Leader `0` or `1` accepts a report of `n` calls.
        Accept(usize, u64),
        /// Replica `0` or `1` flushes; `lost` drops the answer after the write landed.
        Flush(usize, bool),
        /// Replica `0` or `1` flushes from a stale read (another write landed since it read).
        StaleFlush(usize),
        /// The day turns.
        Midnight,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..2usize, 1..50u64).prop_map(|(r, n)| Step::Accept(r, n)),
            (0..2usize, any::<bool>()).prop_map(|(r, lost)| Step::Flush(r, lost)),
            (0..2usize).prop_map(Step::StaleFlush),
            Just(Step::Midnight),
        ]
    }

    /// One replica's ledger for one subscription, as `super::super::Ledger` keeps it: pending
    /// amounts per day and at most one batch in doubt, retried with its own seq.
    #[derive(Default)]
    struct Replica {
        pending: Vec<(Date, Amount)>,
        in_doubt: Option<(i64, Vec<(Date, Amount)>)>,
        next_seq: i64,
    }

    proptest! {
        /// Two replicas take turns leading mid-day, writes race and answers get lost: the stored history
        /// always ends up holding every accepted call exactly once.
        #[test]
        fn leader_changes_lose_nothing_and_count_nothing_twice(
            steps in proptest::collection::vec(step(), 1..60)
        ) {
            let names = ["c-0", "c-1"];
            let mut replicas = [Replica::default(), Replica::default()];
            let mut stored: Option<Usage> = None;
            let mut version = 0u64;
            let mut now = day("2026-03-01");
            let mut accepted = 0u64;
            let flush = |r: usize, replica: &mut Replica, stored: &mut Option<Usage>, version: &mut u64, read_version: u64, lost: bool, now: Date| {
                let (seq, batch) = match replica.in_doubt.take() {
                    Some(b) => b,
                    None if replica.pending.is_empty() => return,
                    None => {
                        replica.next_seq += 1;
                        (replica.next_seq, std::mem::take(&mut replica.pending))
                    }
                };
                if applied(stored.as_ref(), names[r], seq) {
                    return;
                }
                if read_version != *version {
                    // 409: the write did not land; keep the batch.
                    replica.in_doubt = Some((seq, batch));
                    return;
                }
                *stored = Some(add(stored.as_ref(), &batch, names[r], seq, now));
                *version += 1;
                if lost {
                    replica.in_doubt = Some((seq, batch));
                }
            };
            for step in steps {
                match step {
                    Step::Accept(r, n) => {
                        replicas[r].pending.push((now, calls(n)));
                        accepted += n;
                    }
                    Step::Flush(r, lost) => {
                        let v = version;
                        flush(r, &mut replicas[r], &mut stored, &mut version, v, lost, now);
                    }
                    Step::StaleFlush(r) => {
                        let v = version.wrapping_sub(1);
                        flush(r, &mut replicas[r], &mut stored, &mut version, v, false, now);
                    }
                    Step::Midnight => now = now.tomorrow().unwrap(),
                }
            }
            // Both replicas drain what they hold (the old leader too: its writes stay safe).
            for _ in 0..3 {
                for (r, replica) in replicas.iter_mut().enumerate() {
                    let v = version;
                    flush(r, replica, &mut stored, &mut version, v, false, now);
                }
            }
            let stored = stored.unwrap_or_default();
            let in_months: i64 = stored.months.iter().map(|b| b.requests).sum();
            let in_days: i64 = stored.days.iter().map(|b| b.requests).sum();
            prop_assert_eq!(in_months, accepted as i64);
            prop_assert_eq!(in_days, accepted as i64, "60 steps stay within the two months of days kept");
        }
    }
}
