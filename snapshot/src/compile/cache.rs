//! `AIRoute.spec.cache` → [`CachePolicy`]: defaults filled in, the time to live read and bounded.

use tollgate_crds::{CacheEndpoint, CacheMode, CacheSettings};

use crate::duration::parse_duration_ms;
use crate::model::CachePolicy;

/// A route's cache policy with defaults filled in, or the problem that keeps the route out of service
/// (the API server refuses these already; files read by the standalone proxy are not checked there).
pub(crate) fn cache_policy_of(
    given: Option<&CacheSettings>,
) -> Result<Option<CachePolicy>, String> {
    let Some(settings) = given else {
        return Ok(None);
    };
    match settings.mode {
        CacheMode::Exact => {}
    }
    let ttl_ms = match &settings.ttl {
        None => CachePolicy::DEFAULT_TTL_MS,
        Some(text) => parse_duration_ms(text).map_err(|e| format!("spec.cache.ttl: {e}"))?,
    };
    if ttl_ms == 0 || ttl_ms > CachePolicy::MAX_TTL_MS {
        return Err(format!(
            "set spec.cache.ttl above 0 and at most 720h (30 days); it is {}",
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
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_crds::CacheScope;

    #[test]
    fn defaults_fill_in_and_ttl_is_bounded() {
        assert_eq!(cache_policy_of(None), Ok(None));
        let policy = cache_policy_of(Some(&CacheSettings::default()))
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
        let policy = cache_policy_of(Some(&only)).unwrap().unwrap();
        assert_eq!(policy.ttl_ms, 30 * 86_400_000);
        assert_eq!(policy.endpoints, vec![CacheEndpoint::Embeddings]);
        assert!(policy.covers(CacheEndpoint::Embeddings));
        assert!(!policy.covers(CacheEndpoint::Chat));

        for bad in ["0s", "721h", "1d", ""] {
            let settings = CacheSettings {
                ttl: Some(bad.into()),
                ..CacheSettings::default()
            };
            let err = cache_policy_of(Some(&settings)).unwrap_err();
            assert!(err.contains("spec.cache.ttl"), "{bad}: {err}");
        }
    }
}
