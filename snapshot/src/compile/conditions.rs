//! Conditions every kind words alike.

use tollgate_crds::condition_type;

use super::objects::sentences;
use crate::verdict::VerdictCondition;

/// `ResolvedRefs` false for references that could not be used: the first problem's `reason`, every
/// problem's clause in one sentence, then `advice`, one sentence each.
pub(crate) fn unresolved_refs(
    reason: &'static str,
    clauses: &[&str],
    advice: &[&str],
) -> VerdictCondition {
    let mut parts = Vec::with_capacity(1 + advice.len());
    parts.push(clauses.join("; "));
    parts.extend(advice.iter().map(|a| a.to_string()));
    VerdictCondition::new(
        condition_type::RESOLVED_REFS,
        false,
        reason,
        sentences(&parts),
    )
}
