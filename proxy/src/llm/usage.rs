//! Token counts of one call, as every format reads them.

/// Tokens of one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
    /// Prompt tokens read from the provider's prompt cache (counted in `input` too).
    pub cache_read: u64,
    /// Prompt tokens written to the provider's prompt cache (counted in `input` too).
    pub cache_write: u64,
}
