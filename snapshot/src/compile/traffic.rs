//! Traffic policy fields shared by several kinds: limits, budgets, retry budgets and provider health.

use tollgate_crds::{ModelProviderSpec, RetryBudget as RetryBudgetSpec};

use crate::duration::parse_duration_ms;
use crate::model::{Budget, HealthPolicy, Limits, MICRO_USD, RetryBudget};

/// The resource's limits as the snapshot holds them.
pub fn limits_of(given: Option<&tollgate_crds::Limits>) -> Limits {
    given
        .map(|l| Limits {
            requests_per_minute: l.requests_per_minute,
            tokens_per_minute: l.tokens_per_minute,
        })
        .unwrap_or_default()
}

/// A budget in whole micro-dollars (rounded to the nearest; negative or NaN read as zero).
pub fn budget_of(given: Option<&tollgate_crds::Budget>) -> Budget {
    fn micro(usd: Option<f64>) -> Option<u64> {
        // `as` saturates, and NaN becomes 0: a schema-bypassing value cannot wrap around.
        usd.map(|v| (v * MICRO_USD).round().max(0.0) as u64)
    }
    given
        .map(|b| Budget {
            monthly_micro_usd: micro(b.monthly_usd),
            daily_micro_usd: micro(b.daily_usd),
        })
        .unwrap_or_default()
}

fn lower<T: Ord + Copy>(wanted: Option<T>, ceiling: Option<T>) -> Option<T> {
    match (wanted, ceiling) {
        (Some(w), Some(c)) => Some(w.min(c)),
        (w, c) => w.or(c),
    }
}

/// The subscription's budget within the route's: each ceiling is the lower of the two, and one the
/// subscription leaves out is the route's.
pub fn clamp_budget(wanted: Budget, route: Budget) -> Budget {
    Budget {
        monthly_micro_usd: lower(wanted.monthly_micro_usd, route.monthly_micro_usd),
        daily_micro_usd: lower(wanted.daily_micro_usd, route.daily_micro_usd),
    }
}

/// A route's retry budget with defaults filled in.
pub fn retry_budget_of(given: Option<&RetryBudgetSpec>) -> RetryBudget {
    let defaults = RetryBudget::default();
    given
        .map(|r| RetryBudget {
            percent: r.percent.unwrap_or(defaults.percent),
            min_per_second: r.min_per_second.unwrap_or(defaults.min_per_second),
        })
        .unwrap_or(defaults)
}

/// A provider's health policy with defaults filled in; unreadable durations are reported in `invalid`.
pub fn health_of(spec: &ModelProviderSpec, invalid: &mut Vec<String>) -> HealthPolicy {
    let mut policy = HealthPolicy::default();
    if let Some(health) = &spec.health {
        if let Some(n) = health.consecutive_failures {
            policy.failures_to_eject = n.max(1);
        }
        if let Some(text) = &health.ejection_time {
            match parse_duration_ms(text) {
                Ok(ms) => policy.ejection_ms = ms,
                Err(e) => invalid.push(format!("spec.health.ejectionTime: {e}")),
            }
        }
    }
    if let Some(text) = spec.credentials.as_ref().and_then(|c| c.cooldown.as_ref()) {
        match parse_duration_ms(text) {
            Ok(ms) => policy.key_cooldown_ms = ms,
            Err(e) => invalid.push(format!("spec.credentials.cooldown: {e}")),
        }
    }
    policy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::budget_usd;

    #[test]
    fn budgets_are_whole_micro_dollars_and_clamp_per_ceiling() {
        let b = budget_of(Some(&tollgate_crds::Budget {
            monthly_usd: Some(12.345_678_9),
            daily_usd: Some(-1.0),
        }));
        assert_eq!(b.monthly_micro_usd, Some(12_345_679));
        assert_eq!(b.daily_micro_usd, Some(0));
        let route = Budget {
            monthly_micro_usd: Some(10_000_000),
            daily_micro_usd: None,
        };
        let wanted = Budget {
            monthly_micro_usd: Some(50_000_000),
            daily_micro_usd: Some(1_000_000),
        };
        assert_eq!(
            clamp_budget(wanted, route),
            Budget {
                monthly_micro_usd: Some(10_000_000),
                daily_micro_usd: Some(1_000_000),
            }
        );
        assert_eq!(clamp_budget(Budget::default(), route), route);
        assert_eq!(budget_usd(route).monthly_usd, Some(10.0));
    }
}
