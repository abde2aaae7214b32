//! A compiled `AIGuardrail`: its rules with their regular expressions built, attached to the routes and
//! consumers that name it.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use tollgate_crds::{
    Detector, FailureMode, GuardrailAction, GuardrailDirection, GuardrailEndpoint,
};

use super::refs::ObjectRef;
use super::rest::RestCredential;

/// Largest compiled program one pattern may make: bounds the memory a rule can take in a proxy
/// (matching is linear-time whatever the pattern, so no rule can hang one).
pub const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// A regular expression, encoded as its source and built again when a snapshot is decoded.
#[derive(Clone)]
pub struct Pattern {
    regex: regex::Regex,
}

impl Pattern {
    /// Builds a pattern, or says why it cannot be built.
    pub fn new(source: &str) -> Result<Self, String> {
        regex::RegexBuilder::new(source)
            .size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .map(|regex| Self { regex })
            .map_err(|e| match e {
                regex::Error::Syntax(text) => text,
                regex::Error::CompiledTooBig(limit) => {
                    format!("the pattern compiles to more than {limit} bytes")
                }
                other => other.to_string(),
            })
    }

    /// The compiled expression.
    pub fn regex(&self) -> &regex::Regex {
        &self.regex
    }

    /// The source text.
    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.as_str())
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let source = String::deserialize(d)?;
        Pattern::new(&source).map_err(serde::de::Error::custom)
    }
}

/// What a rule looks for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Matcher {
    /// A built-in detector.
    Detector(Detector),
    /// A regular expression.
    Pattern(Pattern),
}

/// One rule of a guardrail.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct GuardRule {
    /// `spec.rules[].name`.
    pub name: Arc<str>,
    /// What it looks for.
    pub matcher: Matcher,
    /// What a match does.
    pub action: GuardrailAction,
    /// The text a masked match becomes.
    pub mask_as: Arc<str>,
}

/// A rule that asks a moderation service about a call's text.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ModerationRule {
    /// `spec.rules[].name`.
    pub name: Arc<str>,
    /// What a flagged text does: Reject or Monitor.
    pub action: GuardrailAction,
    /// Which API the service speaks.
    pub api: ModerationApi,
    /// The whole URL posted to.
    pub url: String,
    /// The header sent with it, if any (a provider's key, or the webhook's Secret). Never printed.
    pub credential: Option<RestCredential>,
    /// Only these categories count; empty: whatever the service flags.
    pub categories: Vec<String>,
    /// A category counts when its score reaches this many thousandths (provider only).
    pub threshold_millis: Option<u32>,
    /// The longest wait for the whole answer.
    pub timeout_ms: u64,
    /// What a failure of the service does.
    pub failure_mode: FailureMode,
}

/// The API a moderation service speaks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ModerationApi {
    /// OpenAI's `POST /moderations` of this provider, asking for this model.
    OpenAi {
        /// The `ModelProvider`.
        provider: ObjectRef,
        /// The model asked for.
        model: String,
    },
    /// The generic webhook contract (`proxy/README.md`).
    Webhook,
}

/// A guardrail as routes and consumers carry it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Guardrail {
    /// The `AIGuardrail` object.
    pub id: ObjectRef,
    /// Which side of a call it checks.
    pub applies_to: GuardrailDirection,
    /// Endpoints it checks, sorted; empty means all.
    pub endpoints: Vec<GuardrailEndpoint>,
    /// Its rules, in order.
    pub rules: Vec<GuardRule>,
    /// Its moderation rules, in order, asked after the text rules found no Reject. Left out of the
    /// encoding when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moderations: Vec<ModerationRule>,
    /// Longest input, in characters.
    pub max_input_chars: Option<u32>,
    /// Longest input, in estimated tokens (four characters each, rounded up).
    pub max_input_tokens: Option<u32>,
    /// Attached but unusable (missing, not shared with the referrer, or invalid): calls it would check
    /// are refused rather than let through unchecked, as Gateway API does for a filter it cannot apply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub broken: bool,
}

impl Guardrail {
    /// The stand-in for an attached guardrail that cannot be used.
    pub fn broken(id: ObjectRef) -> Self {
        Self {
            id,
            applies_to: GuardrailDirection::Both,
            endpoints: Vec::new(),
            rules: Vec::new(),
            moderations: Vec::new(),
            max_input_chars: None,
            max_input_tokens: None,
            broken: true,
        }
    }

    /// Whether it checks `endpoint` on the request side (`request`) or the answer side.
    pub fn covers(&self, endpoint: GuardrailEndpoint, request: bool) -> bool {
        let side = match self.applies_to {
            GuardrailDirection::Both => true,
            GuardrailDirection::Request => request,
            GuardrailDirection::Response => !request,
        };
        side && (self.endpoints.is_empty() || self.endpoints.contains(&endpoint))
    }
}

/// The token a detector's matches are masked with unless a rule says otherwise.
pub fn default_mask(detector: Option<Detector>) -> &'static str {
    match detector {
        Some(Detector::Email) => "[EMAIL]",
        Some(Detector::Phone) => "[PHONE]",
        Some(Detector::CreditCard) => "[CREDIT_CARD]",
        Some(Detector::Iban) => "[IBAN]",
        Some(Detector::UsSsn) => "[SSN]",
        Some(Detector::IpAddress) => "[IP_ADDRESS]",
        Some(Detector::Secret) => "[SECRET]",
        None => "[REDACTED]",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_encodes_as_its_source_and_is_built_again_when_decoded() {
        let p = Pattern::new(r"EMP-\d{6}").unwrap();
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(text, r#""EMP-\\d{6}""#);
        let back: Pattern = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);
        assert!(back.regex().is_match("id EMP-123456"));
        assert!(serde_json::from_str::<Pattern>(r#""(unclosed""#).is_err());
    }

    #[test]
    fn a_pattern_too_big_to_compile_is_refused_with_a_reason() {
        let err = Pattern::new(r"\w{1000}\w{1000}\w{1000}").unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }
}
