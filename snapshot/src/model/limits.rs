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
}

impl Price {
    /// Cost in USD of one call.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input_per_million
            + output_tokens as f64 * self.output_per_million)
            / 1_000_000.0
    }
}
