//! Which calls are traced: the standard samplers of `OTEL_TRACES_SAMPLER` (always_on, always_off,
//! traceidratio and their parentbased_ forms), decided once when a call (or, in the controller, a
//! piece of work) begins, before any span exists, so that an unsampled one costs a comparison.

use std::fmt;

/// A sampler as `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` name it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampler {
    /// What decides for a call without a parent (or for every call when not parent-based).
    pub root: Root,
    /// Follow the caller's sampled flag when it sent a `traceparent`.
    pub parent_based: bool,
}

/// The sampler of calls that start a trace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Root {
    /// Every trace.
    AlwaysOn,
    /// No trace.
    AlwaysOff,
    /// This fraction of trace ids, decided on the id so that every hop agrees.
    Ratio(f64),
}

/// A sampler name or argument that is not one of the standard ones.
#[derive(Debug, PartialEq)]
pub struct UnknownSampler(pub String);

impl fmt::Display for UnknownSampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown trace sampler {:?}: use always_on, always_off, traceidratio, parentbased_always_on, \
             parentbased_always_off or parentbased_traceidratio, with a ratio from 0 to 1",
            self.0
        )
    }
}

impl std::error::Error for UnknownSampler {}

impl Default for Sampler {
    /// The specification's default: `parentbased_always_on`.
    fn default() -> Self {
        Self {
            root: Root::AlwaysOn,
            parent_based: true,
        }
    }
}

impl Sampler {
    /// The sampler `name` names with `arg` (the ratio of the ratio samplers; 1 when absent).
    pub fn from_name(name: &str, arg: Option<&str>) -> Result<Self, UnknownSampler> {
        let ratio = || -> Result<f64, UnknownSampler> {
            match arg.map(str::trim).filter(|a| !a.is_empty()) {
                None => Ok(1.0),
                Some(a) => a
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| UnknownSampler(format!("{name} with argument {a}"))),
            }
        };
        let (root, parent_based) = match name.trim() {
            "always_on" => (Root::AlwaysOn, false),
            "always_off" => (Root::AlwaysOff, false),
            "traceidratio" => (Root::Ratio(ratio()?), false),
            "parentbased_always_on" => (Root::AlwaysOn, true),
            "parentbased_always_off" => (Root::AlwaysOff, true),
            "parentbased_traceidratio" => (Root::Ratio(ratio()?), true),
            other => return Err(UnknownSampler(other.to_string())),
        };
        Ok(Self { root, parent_based })
    }

    /// Whether a call without a parent needs its trace id drawn before the decision.
    pub fn needs_trace_id(&self) -> bool {
        matches!(self.root, Root::Ratio(r) if r < 1.0)
    }

    /// Whether to record the trace `trace_id` (the caller's, or a fresh one), given the sampled flag
    /// of the parent, when there is one (a caller's `traceparent`, a parent span).
    pub fn sample(&self, parent_sampled: Option<bool>, trace_id: &[u8; 16]) -> bool {
        if self.parent_based
            && let Some(sampled) = parent_sampled
        {
            return sampled;
        }
        match self.root {
            Root::AlwaysOn => true,
            Root::AlwaysOff => false,
            Root::Ratio(ratio) => ratio_samples(ratio, trace_id),
        }
    }
}

/// The ratio rule of the OpenTelemetry SDKs: the trace id's last 8 bytes, read as a number and
/// halved, below `ratio` × 2⁶³.
fn ratio_samples(ratio: f64, trace_id: &[u8; 16]) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    let tail = u64::from_be_bytes(trace_id[8..16].try_into().expect("8 bytes"));
    (tail >> 1) < bound
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_and_arguments_of_the_environment_variables() {
        assert_eq!(
            Sampler::from_name("parentbased_traceidratio", Some("0.25")),
            Ok(Sampler {
                root: Root::Ratio(0.25),
                parent_based: true
            })
        );
        assert_eq!(
            Sampler::from_name("traceidratio", None).unwrap().root,
            Root::Ratio(1.0)
        );
        assert!(Sampler::from_name("traceidratio", Some("1.5")).is_err());
        assert!(Sampler::from_name("jaeger_remote", None).is_err());
        assert_eq!(
            Sampler::default(),
            Sampler::from_name("parentbased_always_on", None).unwrap()
        );
    }

    #[test]
    fn a_parent_decides_when_parent_based() {
        let s = Sampler::from_name("parentbased_always_off", None).unwrap();
        assert!(s.sample(Some(true), &[7; 16]));
        assert!(!s.sample(Some(false), &[7; 16]));
        assert!(!s.sample(None, &[7; 16]));
        let s = Sampler::from_name("always_on", None).unwrap();
        assert!(s.sample(Some(false), &[7; 16]));
    }

    #[test]
    fn the_ratio_samples_about_its_share_of_random_ids() {
        let s = Sampler::from_name("traceidratio", Some("0.1")).unwrap();
        let n = 100_000;
        let sampled = (0..n)
            .filter(|_| s.sample(None, &fastrand::u128(..).to_be_bytes()))
            .count();
        assert!((8_500..11_500).contains(&sampled), "{sampled} of {n}");
        let none = Sampler::from_name("traceidratio", Some("0")).unwrap();
        assert!(!none.sample(None, &[0xff; 16]));
        assert!(!none.sample(None, &[0; 16]));
    }

    proptest! {
        #[test]
        fn any_name_and_argument_parse_without_panicking(name in "\\PC{0,30}", arg in proptest::option::of("\\PC{0,12}")) {
            if let Ok(s) = Sampler::from_name(&name, arg.as_deref())
                && let Root::Ratio(r) = s.root
            {
                prop_assert!((0.0..=1.0).contains(&r));
            }
        }

        #[test]
        fn every_ratio_from_0_to_1_is_taken(r in 0.0f64..=1.0) {
            let s = Sampler::from_name("parentbased_traceidratio", Some(&r.to_string())).unwrap();
            prop_assert_eq!(s.root, Root::Ratio(r));
            prop_assert!(s.parent_based);
        }
    }
}
