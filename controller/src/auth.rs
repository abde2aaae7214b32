//! Who may talk to the controller: proxies presenting a ServiceAccount token, checked by TokenReview.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::{Api, Client, api::PostParams};
use sha2::{Digest, Sha256};

use crate::args::ServiceAccount;

/// Most cached reviews kept; past this, expired entries are dropped, then everything.
const CACHE_LIMIT: usize = 4096;
/// How long an "invalid token" answer is reused (short: a token may just not be valid *yet*).
const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// The outcome of checking a request's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A token of an allowed ServiceAccount; carries its user name.
    Allowed(String),
    /// A valid token of some other identity (answer 403).
    Forbidden(String),
    /// No token, or one the API server does not accept (answer 401).
    Unauthenticated,
}

/// Checks bearer tokens with the TokenReview API and caches the answers briefly.
pub struct Authenticator {
    api: Api<TokenReview>,
    audience: String,
    allowed: Vec<String>,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], (Decision, Instant)>>,
}

impl Authenticator {
    /// An authenticator accepting tokens for `audience` held by one of `allowed`.
    pub fn new(
        client: Client,
        audience: String,
        allowed: &[ServiceAccount],
        ttl: Duration,
    ) -> Self {
        Self {
            api: Api::all(client),
            audience,
            allowed: allowed.iter().map(ServiceAccount::username).collect(),
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Decides on the value of an `Authorization` header (if any).
    pub async fn check(&self, authorization: Option<&str>) -> Decision {
        let Some(token) = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Decision::Unauthenticated;
        };
        // Keyed by digest, so the cache never holds a usable token.
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((decision, until)) = self.cache().get(&key)
            && Instant::now() < *until
        {
            return decision.clone();
        }
        let decision = match self.review(token).await {
            Ok(decision) => decision,
            Err(error) => {
                // Not cached: the API server being unavailable says nothing about the token.
                tracing::warn!(%error, "TokenReview failed");
                return Decision::Unauthenticated;
            }
        };
        let ttl = match decision {
            Decision::Unauthenticated => NEGATIVE_TTL.min(self.ttl),
            _ => self.ttl,
        };
        let mut cache = self.cache();
        if cache.len() >= CACHE_LIMIT {
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(key, (decision.clone(), Instant::now() + ttl));
        decision
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Decision, Instant)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn review(&self, token: &str) -> kube::Result<Decision> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let answer = self.api.create(&PostParams::default(), &review).await?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Ok(Decision::Unauthenticated);
        }
        // The API server only authenticates a token for an audience it was issued for, but a
        // server too old to know `spec.audiences` would ignore it: check the answer as well.
        if !status
            .audiences
            .as_ref()
            .is_some_and(|a| a.contains(&self.audience))
        {
            return Ok(Decision::Unauthenticated);
        }
        let user = status.user.and_then(|u| u.username).unwrap_or_default();
        Ok(if self.allowed.contains(&user) {
            Decision::Allowed(user)
        } else {
            Decision::Forbidden(user)
        })
    }
}
