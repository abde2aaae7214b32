//! One side of a call checked against the rules that apply to it: what to reject, what to mask and
//! what to note.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use tollgate_snapshot::{
    GuardRule, Guardrail, GuardrailAction, GuardrailEndpoint, Matcher, ObjectRef,
};

use super::scan::{self, Wanted};

/// The rules that apply to one side of one call, gathered from the route's and the consumer's
/// guardrails (route first).
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Every rule, in order (set before the first check: what the rules detect is read then).
    pub rules: Vec<GuardRule>,
    /// The smallest `maxInputChars` of the guardrails (request side only).
    pub max_chars: Option<u32>,
    /// The smallest `maxInputTokens` of the guardrails (request side only).
    pub max_tokens: Option<u32>,
    /// An attached guardrail that could not be compiled: the call is refused.
    pub broken: Option<ObjectRef>,
    /// The built-in detectors the rules name, and whether every rule is one: read from the rules
    /// at the first check, not at every one (a stream's answer is checked once a chunk).
    /// Left to `Default`: never set by hand.
    pub(crate) scan: OnceLock<(Wanted, bool)>,
}

/// What one rule decided about a call: recorded in the access log and counted, never with the text.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Decision {
    /// The rule's name.
    pub rule: Arc<str>,
    /// What it did.
    pub action: GuardrailAction,
}

/// Why a call is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The input is longer than a guardrail allows.
    TooLong {
        /// `chars` or `tokens`.
        unit: &'static str,
        /// The ceiling.
        limit: u32,
    },
    /// An attached guardrail is unusable (see the route's or consumer's `GuardrailsValid`).
    Broken(ObjectRef),
}

/// The outcome of checking one text.
#[derive(Debug, Default)]
pub struct Checked {
    /// Spans to mask (sorted, not overlapping) with the token each becomes.
    pub masks: Vec<(Range<usize>, Arc<str>)>,
    /// The first Reject rule that matched.
    pub rejected: Option<Arc<str>>,
    /// Every rule that matched, once each.
    pub decisions: Vec<Decision>,
    /// Where any rule matched (masking or not): a stream never cuts through one.
    pub spans: Vec<Range<usize>>,
}

impl Policy {
    /// The rules that `guardrails` (route's, then consumer's) apply to `endpoint`, on the request side
    /// when `request`, else on the answer side.
    pub fn gather<'a>(
        guardrails: impl IntoIterator<Item = &'a Guardrail>,
        endpoint: GuardrailEndpoint,
        request: bool,
    ) -> Policy {
        let mut policy = Policy::default();
        for g in guardrails {
            if g.broken {
                policy.broken.get_or_insert_with(|| g.id.clone());
                continue;
            }
            if !g.covers(endpoint, request) {
                continue;
            }
            policy.rules.extend(g.rules.iter().cloned());
            if request {
                policy.max_chars = min_some(policy.max_chars, g.max_input_chars);
                policy.max_tokens = min_some(policy.max_tokens, g.max_input_tokens);
            }
        }
        policy
    }

    /// Whether nothing is checked.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
            && self.max_chars.is_none()
            && self.max_tokens.is_none()
            && self.broken.is_none()
    }

    /// Refuses an input of `chars` characters in all if it is longer than allowed (tokens estimated as
    /// four characters each, rounded up), or if a guardrail is unusable.
    pub fn admit(&self, chars: usize) -> Result<(), Refusal> {
        if let Some(id) = &self.broken {
            return Err(Refusal::Broken(id.clone()));
        }
        if let Some(limit) = self.max_chars
            && chars > limit as usize
        {
            return Err(Refusal::TooLong {
                unit: "characters",
                limit,
            });
        }
        if let Some(limit) = self.max_tokens
            && chars.div_ceil(4) > limit as usize
        {
            return Err(Refusal::TooLong {
                unit: "tokens",
                limit,
            });
        }
        Ok(())
    }

    /// Checks one text with every rule.
    pub fn check(&self, text: &str) -> Checked {
        self.check_with(text, true)
    }

    /// [`Self::check`] for a text no one cuts by its matches (a text checked whole, or a stream's
    /// held text checked only for a rejection): its [`Checked::spans`] are left empty.
    pub fn check_whole(&self, text: &str) -> Checked {
        self.check_with(text, false)
    }

    /// Checks one text with every rule; where any rule matched only with `spans`.
    fn check_with(&self, text: &str, spans: bool) -> Checked {
        let mut checked = Checked::default();
        let mut masks: Vec<(Range<usize>, Arc<str>)> = Vec::new();
        // Every built-in detector the rules name, in one pass over the text.
        let (wanted, detectors_only) = *self.scan.get_or_init(|| {
            let wanted = self
                .rules
                .iter()
                .fold(Wanted::default(), |w, r| match r.matcher {
                    Matcher::Detector(d) => w.and(d),
                    Matcher::Pattern(_) => w,
                });
            let detectors_only = self
                .rules
                .iter()
                .all(|r| matches!(r.matcher, Matcher::Detector(_)));
            (wanted, detectors_only)
        });
        // Most of a stream's pieces of prose: nothing any detector could begin to match.
        if detectors_only && scan::quiet(text) {
            return checked;
        }
        let detected = scan::scan(text, wanted);
        // The usual outcome, above all for a stream's many small checks: nothing found, nothing to
        // gather.
        if detected.is_empty() && detectors_only {
            return checked;
        }
        for rule in &self.rules {
            // A detector's spans are read where the scan left them; only a pattern's are gathered.
            let matched: Vec<Range<usize>>;
            let found: &[Range<usize>] = match &rule.matcher {
                Matcher::Detector(d) => detected.of(*d),
                Matcher::Pattern(p) => {
                    matched = p
                        .regex()
                        .find_iter(text)
                        .map(|m| m.range())
                        .filter(|r| !r.is_empty())
                        .collect();
                    &matched
                }
            };
            if found.is_empty() {
                continue;
            }
            let decision = Decision {
                rule: Arc::clone(&rule.name),
                action: rule.action,
            };
            if !checked.decisions.contains(&decision) {
                // The first one allocates room for a few, at once rather than by growing.
                if checked.decisions.capacity() == 0 {
                    checked.decisions = Vec::with_capacity(4);
                }
                checked.decisions.push(decision);
            }
            match rule.action {
                GuardrailAction::Reject => {
                    checked
                        .rejected
                        .get_or_insert_with(|| Arc::clone(&rule.name));
                }
                GuardrailAction::Mask => {
                    if masks.capacity() == 0 {
                        masks = Vec::with_capacity(found.len());
                    }
                    masks.extend(found.iter().map(|r| (r.clone(), Arc::clone(&rule.mask_as))))
                }
                GuardrailAction::Monitor => {}
            }
            if spans {
                checked.spans.extend_from_slice(found);
            }
        }
        checked.masks = merge(masks);
        checked.spans = merge(checked.spans);
        checked
    }
}

fn min_some(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A span of a text, alone or with a value.
trait Span {
    fn span(&self) -> &Range<usize>;
    fn span_mut(&mut self) -> &mut Range<usize>;
}

impl Span for Range<usize> {
    fn span(&self) -> &Range<usize> {
        self
    }
    fn span_mut(&mut self) -> &mut Range<usize> {
        self
    }
}

impl<T> Span for (Range<usize>, T) {
    fn span(&self) -> &Range<usize> {
        &self.0
    }
    fn span_mut(&mut self) -> &mut Range<usize> {
        &mut self.0
    }
}

/// Sorts spans and joins those that overlap; a joined span keeps the first one's value. In place; a
/// list already sorted and apart (the usual one, one rule's matches) is left as it is.
fn merge<S: Span>(mut spans: Vec<S>) -> Vec<S> {
    if spans
        .windows(2)
        .all(|w| w[0].span().end <= w[1].span().start)
    {
        return spans;
    }
    spans.sort_by_key(|s| {
        let r = s.span();
        (r.start, std::cmp::Reverse(r.end))
    });
    spans.dedup_by(|later, kept| {
        let later = later.span().clone();
        let kept = kept.span_mut();
        if later.start < kept.end {
            kept.end = kept.end.max(later.end);
            true
        } else {
            false
        }
    });
    spans
}

/// `text` with every span of `masks` that lies in `range` replaced by its token (offsets are `text`'s).
pub fn apply(text: &str, masks: &[(Range<usize>, Arc<str>)], range: Range<usize>) -> String {
    let mut out = String::with_capacity(range.len());
    apply_onto(&mut out, text, masks, range);
    out
}

/// [`apply`] written onto the end of `out`.
pub fn apply_onto(
    out: &mut String,
    text: &str,
    masks: &[(Range<usize>, Arc<str>)],
    range: Range<usize>,
) {
    let mut at = range.start;
    for (span, token) in masks {
        if span.start < range.start || span.end > range.end {
            continue;
        }
        out.push_str(&text[at..span.start]);
        out.push_str(token);
        at = span.end;
    }
    out.push_str(&text[at..range.end]);
}

impl Checked {
    /// `text` (the one checked) with its masks applied.
    pub fn masked(&self, text: &str) -> String {
        apply(text, &self.masks, 0..text.len())
    }
}

#[cfg(test)]
mod tests {
    use super::merge;

    /// Spans sorted and apart (adjacent ones included) stay as they are; others are sorted, and
    /// overlapping ones joined under the first one's value.
    #[test]
    fn spans_are_sorted_and_overlapping_ones_joined() {
        let apart = vec![(0..3, 'a'), (3..5, 'b'), (9..12, 'c')];
        assert_eq!(merge(apart.clone()), apart);
        assert_eq!(
            merge(vec![(9..12, 'c'), (0..3, 'a'), (2..6, 'b'), (3..5, 'd')]),
            vec![(0..6, 'a'), (9..12, 'c')]
        );
        assert_eq!(merge(vec![4..8, 0..2, 1..3]), vec![0..3, 4..8]);
        assert!(merge(Vec::<std::ops::Range<usize>>::new()).is_empty());
    }
}
