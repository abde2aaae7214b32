//! Ceilings on traffic and spend (rate limits, budgets) and the prices spend is counted in.

use serde::{Deserialize, Serialize};

/// Micro-dollars in one US dollar.
pub(crate) const MICRO_USD: f64 = 1_000_000.0;

/// Requests and tokens per minute; `None` is unlimited.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Input plus output tokens per minute.
    pub tokens_per_minute: Option<u64>,
}

impl Limits {
    /// Whether neither ceiling is set.
    pub fn is_unlimited(&self) -> bool {
        self.requests_per_minute.is_none() && self.tokens_per_minute.is_none()
    }
}

/// Spend ceilings in micro-dollars (millionths of a US dollar); `None` is unlimited.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Per calendar month (UTC).
    pub monthly_micro_usd: Option<u64>,
    /// Per calendar day (UTC).
    pub daily_micro_usd: Option<u64>,
}

impl Budget {
    /// Whether neither ceiling is set.
    pub fn is_unlimited(&self) -> bool {
        self.monthly_micro_usd.is_none() && self.daily_micro_usd.is_none()
    }
}

/// A budget as status shows it, in US dollars.
pub fn budget_usd(budget: Budget) -> tollgate_crds::Budget {
    tollgate_crds::Budget {
        monthly_usd: budget.monthly_micro_usd.map(|m| m as f64 / MICRO_USD),
        daily_usd: budget.daily_micro_usd.map(|m| m as f64 / MICRO_USD),
    }
}

/// US dollars per million tokens.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Price {
    /// Input (prompt) tokens.
    pub input_per_million: f64,
    /// Output (completion) tokens.
    pub output_per_million: f64,
    /// Cached input tokens, where the provider prices them apart.
    pub cached_input_per_million: Option<f64>,
    /// Input tokens written to the provider's prompt cache, where the provider prices them apart.
    #[serde(default)]
    pub cache_write_per_million: Option<f64>,
}

impl Price {
    /// Cost in USD of one call, every input token at the input price.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        self.cost_with_cache(input_tokens, 0, 0, output_tokens)
    }

    /// Cost in USD of one call whose `input_tokens` include `cache_read` tokens read from the
    /// provider's prompt cache and `cache_write` tokens written to it: those are charged at their own
    /// prices where the provider publishes them, else at the input price.
    pub fn cost_with_cache(
        &self,
        input_tokens: u64,
        cache_read: u64,
        cache_write: u64,
        output_tokens: u64,
    ) -> f64 {
        let cache_read = cache_read.min(input_tokens);
        let cache_write = cache_write.min(input_tokens - cache_read);
        let fresh = input_tokens - cache_read - cache_write;
        let read_price = self
            .cached_input_per_million
            .unwrap_or(self.input_per_million);
        let write_price = self
            .cache_write_per_million
            .unwrap_or(self.input_per_million);
        (fresh as f64 * self.input_per_million
            + cache_read as f64 * read_price
            + cache_write as f64 * write_price
            + output_tokens as f64 * self.output_per_million)
            / 1_000_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_tokens_are_charged_at_their_own_prices() {
        let p = Price {
            input_per_million: 3.0,
            output_per_million: 15.0,
            cached_input_per_million: Some(0.3),
            cache_write_per_million: Some(3.75),
        };
        // 1M input of which 400K read and 100K written, 1M output.
        let want = 500_000.0 * 3.0 + 400_000.0 * 0.3 + 100_000.0 * 3.75 + 1_000_000.0 * 15.0;
        let got = p.cost_with_cache(1_000_000, 400_000, 100_000, 1_000_000);
        assert!((got - want / 1e6).abs() < 1e-9, "{got}");
        // Without published cache prices every input token costs the input price.
        let plain = Price {
            cached_input_per_million: None,
            cache_write_per_million: None,
            ..p
        };
        assert_eq!(plain.cost_with_cache(10, 4, 3, 2), plain.cost(10, 2));
        // Counts that do not add up never make the cost negative.
        assert!(p.cost_with_cache(5, 9, 9, 0) >= 0.0);
    }
}
