//! `AIRoute.spec.cache` (and a model's `cache`) → [`CachePolicy`]: defaults filled in, the time to
//! live read and bounded, Semantic mode's embeddings model found among the route's models.

use tollgate_crds::{CacheEndpoint, CacheMode, CacheSettings};

use crate::duration::parse_duration_ms;
use crate::model::{CachePolicy, ModelCache, SemanticPolicy};

/// A model's own cache settings (`spec.models[].cache`): the route's policy when absent, none
/// when `enabled: false`, else its own, checked as the route's are. `name` is the model's.
pub(crate) fn model_cache_of(
    given: Option<&CacheSettings>,
    name: &str,
    models: &[&str],
) -> Result<ModelCache, String> {
    let Some(settings) = given else {
        return Ok(ModelCache::Route);
    };
    let at = format!("spec.models[{name}].cache");
    Ok(match settings_policy(settings, &at, models)? {
        None => ModelCache::Off,
        Some(policy) => ModelCache::Own(policy),
    })
}

/// A route's cache policy with defaults filled in, or the problem that keeps the route out of service
/// (the API server refuses field-level mistakes already; files read by the standalone proxy are not
/// checked there). `models` are the route's model names: Semantic mode's embeddings model must be one.
pub(crate) fn cache_policy_of(
    given: Option<&CacheSettings>,
    models: &[&str],
) -> Result<Option<CachePolicy>, String> {
    match given {
        None => Ok(None),
        Some(settings) => settings_policy(settings, "spec.cache", models),
    }
}

/// `settings` (found at `at`) with defaults filled in; `None` when they turn caching off.
fn settings_policy(
    settings: &CacheSettings,
    at: &str,
    models: &[&str],
) -> Result<Option<CachePolicy>, String> {
    if settings.enabled == Some(false) {
        return Ok(None);
    }
    let semantic = match (settings.mode, &settings.semantic) {
        (CacheMode::Exact, None) => None,
        (CacheMode::Exact, Some(_)) => {
            return Err(format!(
                "set {at}.mode to Semantic, or leave out {at}.semantic"
            ));
        }
        (CacheMode::Semantic, None) => {
            return Err(format!(
                "set {at}.semantic.embeddingModel: Semantic mode needs an embeddings model"
            ));
        }
        (CacheMode::Semantic, Some(given)) => {
            if !models.contains(&given.embedding_model.as_str()) {
                return Err(format!(
                    "{at}.semantic.embeddingModel names {}, which this route does not serve; \
                     name one of spec.models ({})",
                    given.embedding_model,
                    models.join(", ")
                ));
            }
            let threshold = given.threshold.unwrap_or(SemanticPolicy::DEFAULT_THRESHOLD);
            if !(threshold > 0.0 && threshold <= 1.0) {
                return Err(format!(
                    "set {at}.semantic.threshold above 0 and at most 1; it is {threshold}"
                ));
            }
            Some(SemanticPolicy {
                embedding_model: given.embedding_model.clone(),
                threshold,
                max_turns: given
                    .max_turns
                    .unwrap_or(SemanticPolicy::DEFAULT_MAX_TURNS)
                    .clamp(1, 64),
            })
        }
    };
    let ttl_ms = match &settings.ttl {
        None => CachePolicy::DEFAULT_TTL_MS,
        Some(text) => parse_duration_ms(text).map_err(|e| format!("{at}.ttl: {e}"))?,
    };
    if ttl_ms == 0 || ttl_ms > CachePolicy::MAX_TTL_MS {
        return Err(format!(
            "set {at}.ttl above 0 and at most 720h (30 days); it is {}",
            settings.ttl.as_deref().unwrap_or_default()
        ));
    }
    let mut endpoints = if settings.endpoints.is_empty() {
        vec![
            CacheEndpoint::Chat,
            CacheEndpoint::Embeddings,
            CacheEndpoint::Messages,
        ]
    } else {
        settings.endpoints.clone()
    };
    endpoints.sort_unstable();
    endpoints.dedup();
    Ok(Some(CachePolicy {
        ttl_ms,
        scope: settings.scope,
        max_entry_bytes: settings
            .max_entry_bytes
            .unwrap_or(CachePolicy::DEFAULT_MAX_ENTRY_BYTES)
            .max(1),
        endpoints,
        semantic,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_crds::{CacheScope, SemanticCache};

    #[test]
    fn defaults_fill_in_and_ttl_is_bounded() {
        assert_eq!(cache_policy_of(None, &[]), Ok(None));
        let policy = cache_policy_of(Some(&CacheSettings::default()), &[])
            .unwrap()
            .unwrap();
        assert_eq!(policy.ttl_ms, 3_600_000);
        assert_eq!(policy.scope, CacheScope::Consumer);
        assert_eq!(policy.max_entry_bytes, 1 << 20);
        assert_eq!(policy.endpoints.len(), 3);

        let only = CacheSettings {
            ttl: Some("720h".into()),
            endpoints: vec![CacheEndpoint::Embeddings, CacheEndpoint::Embeddings],
            scope: CacheScope::Route,
            ..CacheSettings::default()
        };
        let policy = cache_policy_of(Some(&only), &[]).unwrap().unwrap();
        assert_eq!(policy.ttl_ms, 30 * 86_400_000);
        assert_eq!(policy.endpoints, vec![CacheEndpoint::Embeddings]);
        assert!(policy.covers(CacheEndpoint::Embeddings));
        assert!(!policy.covers(CacheEndpoint::Chat));

        for bad in ["0s", "721h", "1d", ""] {
            let settings = CacheSettings {
                ttl: Some(bad.into()),
                ..CacheSettings::default()
            };
            let err = cache_policy_of(Some(&settings), &[]).unwrap_err();
            assert!(err.contains("spec.cache.ttl"), "{bad}: {err}");
        }
    }

    #[test]
    fn semantic_mode_needs_an_embeddings_model_the_route_serves() {
        let models = ["chat", "embed"];
        let semantic = |model: &str, threshold: Option<f64>| CacheSettings {
            mode: CacheMode::Semantic,
            semantic: Some(SemanticCache {
                embedding_model: model.into(),
                threshold,
                max_turns: None,
            }),
            ..CacheSettings::default()
        };
        let policy = cache_policy_of(Some(&semantic("embed", None)), &models)
            .unwrap()
            .unwrap();
        assert_eq!(
            policy.semantic,
            Some(SemanticPolicy {
                embedding_model: "embed".into(),
                threshold: 0.95,
                max_turns: 1,
            })
        );
        let err = cache_policy_of(Some(&semantic("nope", None)), &models).unwrap_err();
        assert_eq!(
            err,
            "spec.cache.semantic.embeddingModel names nope, which this route does not serve; \
             name one of spec.models (chat, embed)"
        );
        for bad in [0.0, -0.5, 1.01, f64::NAN] {
            let err = cache_policy_of(Some(&semantic("embed", Some(bad))), &models).unwrap_err();
            assert!(
                err.contains("spec.cache.semantic.threshold"),
                "{bad}: {err}"
            );
        }
        let no_settings = CacheSettings {
            mode: CacheMode::Semantic,
            ..CacheSettings::default()
        };
        let err = cache_policy_of(Some(&no_settings), &models).unwrap_err();
        assert!(err.contains("embeddingModel"), "{err}");
        let stray = CacheSettings {
            semantic: semantic("embed", None).semantic,
            ..CacheSettings::default()
        };
        let err = cache_policy_of(Some(&stray), &models).unwrap_err();
        assert!(err.contains("mode to Semantic"), "{err}");
        // Exact routes encode as they did before the semantic field existed.
        let exact = cache_policy_of(Some(&CacheSettings::default()), &models)
            .unwrap()
            .unwrap();
        let encoded = serde_json::to_string(&exact).unwrap();
        assert!(!encoded.contains("semantic"), "{encoded}");
    }

    #[test]
    fn a_model_follows_the_route_unless_it_has_settings_of_its_own() {
        let models = ["chat", "embed"];
        assert_eq!(model_cache_of(None, "chat", &models), Ok(ModelCache::Route));
        let off = CacheSettings {
            enabled: Some(false),
            ..CacheSettings::default()
        };
        assert_eq!(
            model_cache_of(Some(&off), "chat", &models),
            Ok(ModelCache::Off)
        );
        // Off at the route is the same as no settings.
        assert_eq!(cache_policy_of(Some(&off), &models), Ok(None));
        let own = CacheSettings {
            ttl: Some("5m".into()),
            scope: CacheScope::Route,
            ..CacheSettings::default()
        };
        let Ok(ModelCache::Own(policy)) = model_cache_of(Some(&own), "embed", &models) else {
            panic!("own settings");
        };
        assert_eq!((policy.ttl_ms, policy.scope), (300_000, CacheScope::Route));
        let bad = CacheSettings {
            ttl: Some("800h".into()),
            ..CacheSettings::default()
        };
        assert_eq!(
            model_cache_of(Some(&bad), "chat", &models),
            Err(
                "set spec.models[chat].cache.ttl above 0 and at most 720h (30 days); it is 800h"
                    .into()
            )
        );
    }
}
