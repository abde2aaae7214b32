//! Google service-account credentials for Vertex AI: the key read from its JSON file, a JWT signed
//! with it (RS256) exchanged at the OAuth token endpoint for an access token, and that token kept
//! until shortly before it expires (RFC 7523's JWT bearer grant, as Google's own libraries do it).
//!
//! Nothing here ever prints the private key, the signed JWT or an access token: `ServiceAccount`
//! and `AccessToken` debug-print redacted, headers carrying a token are marked sensitive, and every
//! error names what failed without quoting what was sent or answered.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tollgate_snapshot::FxHashMap;

use super::pool::{self, ConnPool, UpstreamError};
use crate::clock::Clock;

/// The OAuth scope that Vertex AI's endpoints accept.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// How long a signed JWT is valid (Google takes at most one hour).
const ASSERTION_LIFETIME_S: i64 = 3_600;
/// A token is replaced this long before it expires, so that no call goes out with one that lapses
/// on the way.
pub const REFRESH_AHEAD_MS: i64 = 5 * 60 * 1_000;
/// A token that could not be replaced is still used while it has at least this long left.
const LAST_RESORT_MS: i64 = 10_000;
/// Largest token endpoint answer read.
const ANSWER_CAP: usize = 64 * 1024;
/// The longest a connection to a token endpoint may take.
const CONNECT: Duration = Duration::from_secs(10);

/// Why a service-account key cannot be used; the words quote nothing of the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a JSON object with string members.
    #[error("it is not a service-account JSON key")]
    NotJson,
    /// No `client_email`.
    #[error("it has no client_email")]
    NoEmail,
    /// No PEM `private_key`, or its base64 is broken.
    #[error("its private_key is not a PEM-encoded PKCS#8 key")]
    NoKey,
    /// The PKCS#8 document is not an RSA key ring can sign with (2048 to 8192 bits).
    #[error("its private_key is not an RSA key of 2048 to 8192 bits")]
    NotRsa,
}

/// A service account's identity and signing key, read once per snapshot.
pub struct ServiceAccount {
    email: String,
    key_id: Option<String>,
    key: RsaKeyPair,
    /// SHA-256 of the whole JSON key: tokens are cached per key, so a rotated key gets new ones.
    digest: [u8; 32],
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("email", &self.email)
            .field("key", &"<redacted>")
            .finish()
    }
}

#[derive(Deserialize)]
struct KeyFile<'a> {
    #[serde(default, borrow)]
    client_email: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    private_key: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    private_key_id: Option<std::borrow::Cow<'a, str>>,
}

impl ServiceAccount {
    /// Reads a service-account JSON key (the file Google Cloud's console downloads).
    pub fn from_json(json: &[u8]) -> Result<Self, KeyError> {
        let file: KeyFile<'_> = serde_json::from_slice(json).map_err(|_| KeyError::NotJson)?;
        let email = file
            .client_email
            .filter(|e| !e.is_empty())
            .ok_or(KeyError::NoEmail)?;
        let der = file
            .private_key
            .as_deref()
            .and_then(pkcs8_der)
            .ok_or(KeyError::NoKey)?;
        let key = RsaKeyPair::from_pkcs8(&der).map_err(|_| KeyError::NotRsa)?;
        Ok(Self {
            email: email.into_owned(),
            key_id: file.private_key_id.map(|k| k.into_owned()),
            key,
            digest: Sha256::digest(json).into(),
        })
    }

    /// The account's e-mail address (its JWT issuer).
    pub fn email(&self) -> &str {
        &self.email
    }

    /// A JWT for the token endpoint `audience`, asking for `scope`, issued at `now_unix` and valid
    /// for an hour, signed with the account's key (RS256).
    pub fn assertion(&self, audience: &str, scope: &str, now_unix: i64) -> String {
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = kid.as_str().into();
        }
        let claims = serde_json::json!({
            "iss": self.email,
            "scope": scope,
            "aud": audience,
            "iat": now_unix,
            "exp": now_unix + ASSERTION_LIFETIME_S,
        });
        let mut jwt = URL_SAFE_NO_PAD.encode(header.to_string());
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                jwt.as_bytes(),
                &mut signature,
            )
            .expect("an RSA key of a supported size signs");
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
        jwt
    }

    /// The DER of the account's RSA public key (PKCS#1 `RSAPublicKey`), for tests that check a
    /// signature.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.key.public().as_ref().to_vec()
    }
}

/// The DER inside a PEM `PRIVATE KEY` block.
fn pkcs8_der(pem: &str) -> Option<Vec<u8>> {
    let (_, rest) = pem.split_once("-----BEGIN PRIVATE KEY-----")?;
    let (body, _) = rest.split_once("-----END PRIVATE KEY-----")?;
    let b64: String = body.split_ascii_whitespace().collect();
    STANDARD.decode(b64).ok()
}

/// The form body of a JWT bearer grant.
pub fn grant_body(assertion: &str) -> String {
    // A JWT is base64url and dots: nothing in it needs form encoding.
    format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
    )
}

/// An access token as the token endpoint gave it.
#[derive(PartialEq, Eq)]
pub struct Granted {
    /// The token.
    pub token: String,
    /// Seconds it is valid for.
    pub expires_in: u64,
}

impl fmt::Debug for Granted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Granted(<redacted>, expires_in: {})", self.expires_in)
    }
}

/// Why no access token came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// The token endpoint refused the key (a 4xx): the OAuth error code when it is a plain word
    /// (`invalid_grant`), never its description, which can quote the assertion.
    Refused(Option<String>),
    /// The endpoint failed: unreachable, too slow, a 5xx, or an answer that is no token.
    Failed(&'static str),
    /// The provider's key could not be read.
    Unusable(KeyError),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(Some(code)) => write!(
                f,
                "the token endpoint refused its service-account key ({code})"
            ),
            Self::Refused(None) => {
                f.write_str("the token endpoint refused its service-account key")
            }
            Self::Failed(why) => write!(f, "the token endpoint {why}"),
            Self::Unusable(why) => write!(f, "its service-account key cannot be used: {why}"),
        }
    }
}

#[derive(Deserialize)]
struct TokenAnswer<'a> {
    #[serde(borrow)]
    access_token: std::borrow::Cow<'a, str>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default, borrow)]
    token_type: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ErrorAnswer<'a> {
    #[serde(default, borrow)]
    error: Option<std::borrow::Cow<'a, str>>,
}

/// Reads the token endpoint's answer: a token (RFC 6749 §5.1) for a 2xx, a refusal (§5.2) for a 4xx.
pub fn read_token_answer(status: u16, body: &[u8]) -> Result<Granted, TokenError> {
    if (400..500).contains(&status) {
        let code = serde_json::from_slice::<ErrorAnswer<'_>>(body)
            .ok()
            .and_then(|e| e.error)
            .filter(|c| {
                (1..=64).contains(&c.len())
                    && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
            .map(|c| c.into_owned());
        return Err(TokenError::Refused(code));
    }
    if !(200..300).contains(&status) {
        return Err(TokenError::Failed("answered with an error status"));
    }
    let answer: TokenAnswer<'_> = serde_json::from_slice(body)
        .map_err(|_| TokenError::Failed("sent an answer that is no token"))?;
    let usable = !answer.access_token.is_empty()
        && answer
            .access_token
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b))
        && answer
            .token_type
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case("bearer"));
    if !usable {
        return Err(TokenError::Failed("sent a token that cannot be used"));
    }
    Ok(Granted {
        token: answer.access_token.into_owned(),
        // Google always says; an answer that does not is taken as Google's usual hour.
        expires_in: answer.expires_in.unwrap_or(3_600),
    })
}

/// A cached access token, ready as an `Authorization` header.
#[derive(Clone)]
struct AccessToken {
    header: HeaderValue,
    expires_at_ms: i64,
}

/// Which token a cache slot holds: one per token endpoint and key.
type SlotKey = (String, [u8; 32]);

/// One key's token, and the lock that lets one call at a time fetch a new one.
#[derive(Default)]
struct Slot {
    token: Mutex<Option<AccessToken>>,
    fetching: tokio::sync::Mutex<()>,
}

/// Access tokens of every service account, for the life of the process (across snapshot swaps).
pub struct GoogleTokens {
    clock: Clock,
    pool: Arc<ConnPool>,
    slots: Mutex<FxHashMap<SlotKey, Arc<Slot>>>,
}

impl GoogleTokens {
    /// A cache whose tokens age by `clock`, fetching over a pool that trusts the public roots.
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            pool: Arc::new(ConnPool::new(pool::connector(
                super::tls::public_roots(),
                CONNECT,
            ))),
            slots: Mutex::new(FxHashMap::default()),
        }
    }

    /// An `Authorization` header for `account` at `endpoint`: the cached token while it has more
    /// than [`REFRESH_AHEAD_MS`] left, else a new one (fetched by one caller while the others wait),
    /// waiting at most `due` for the endpoint.
    pub async fn bearer(
        &self,
        account: &ServiceAccount,
        endpoint: &str,
        due: Duration,
    ) -> Result<HeaderValue, TokenError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots
                .entry((endpoint.to_string(), account.digest))
                .or_default()
                .clone()
        };
        if let Some(header) = self.fresh(&slot, REFRESH_AHEAD_MS) {
            return Ok(header);
        }
        let _fetching = slot.fetching.lock().await;
        // Another call may have fetched one while this one waited.
        if let Some(header) = self.fresh(&slot, REFRESH_AHEAD_MS) {
            return Ok(header);
        }
        match self.fetch(account, endpoint, due).await {
            Ok(token) => {
                let header = token.header.clone();
                *slot.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(token);
                Ok(header)
            }
            // A token that could not be replaced in time still serves while it lasts.
            Err(e) => self.fresh(&slot, LAST_RESORT_MS).ok_or(e),
        }
    }

    /// Drops `account`'s cached token at `endpoint` (its API refused it): the next call fetches one.
    pub fn forget(&self, account: &ServiceAccount, endpoint: &str) {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(endpoint.to_string(), account.digest))
            .cloned();
        if let Some(slot) = slot {
            *slot.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    fn fresh(&self, slot: &Slot, margin_ms: i64) -> Option<HeaderValue> {
        let now = self.clock.now_unix_ms();
        slot.token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|t| now + margin_ms < t.expires_at_ms)
            .map(|t| t.header.clone())
    }

    async fn fetch(
        &self,
        account: &ServiceAccount,
        endpoint: &str,
        due: Duration,
    ) -> Result<AccessToken, TokenError> {
        let uri = Uri::try_from(endpoint).map_err(|_| TokenError::Failed("has no valid URL"))?;
        let issued_ms = self.clock.now_unix_ms();
        let assertion = account.assertion(endpoint, CLOUD_PLATFORM_SCOPE, issued_ms / 1_000);
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(Full::new(Bytes::from(grant_body(&assertion))))
            .expect("a request from valid parts");
        let headers = request.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let exchange = async {
            let (response, checkin) =
                self.pool
                    .send_within(request, due)
                    .await
                    .map_err(|e| match e {
                        UpstreamError::Timeout => TokenError::Failed("did not answer in time"),
                        UpstreamError::Connect => TokenError::Failed("could not be reached"),
                        UpstreamError::Broken => TokenError::Failed("broke the connection"),
                    })?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), ANSWER_CAP)
                .collect()
                .await
                .map_err(|_| TokenError::Failed("sent an answer that broke off or was too large"))?
                .to_bytes();
            drop(checkin);
            read_token_answer(status, &body)
        };
        let granted = tokio::time::timeout(due, exchange)
            .await
            .map_err(|_| TokenError::Failed("did not answer in time"))??;
        let mut header = HeaderValue::from_str(&format!("Bearer {}", granted.token))
            .map_err(|_| TokenError::Failed("sent a token that cannot be used"))?;
        header.set_sensitive(true);
        let lifetime_ms = i64::try_from(granted.expires_in)
            .unwrap_or(i64::MAX / 2_000)
            .saturating_mul(1_000);
        Ok(AccessToken {
            header,
            // Aged from when it was asked for: the answer's travel time only shortens it.
            expires_at_ms: issued_ms.saturating_add(lifetime_ms),
        })
    }
}

#[cfg(test)]
mod tests;
