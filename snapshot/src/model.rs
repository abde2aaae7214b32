//! The compiled routing table: what a proxy needs to serve requests, and nothing else.
//!
//! The serialisable part ([`Content`]) holds only vectors in a canonical order, so encoding is
//! deterministic. Hash maps for the hot path are rebuilt by [`Snapshot::from_content`] after decoding.

use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fx::{FxHashMap, map_with_capacity};

pub use tollgate_crds::{Approval, Phase, ProviderType, Stage};

/// Index of a provider in [`Content::providers`].
pub type ProviderIdx = u32;
/// Index of a route in [`Content::routes`].
pub type RouteIdx = u32;
/// Index of a consumer in [`Content::consumers`].
pub type ConsumerIdx = u32;

/// `namespace/name` of a Kubernetes object.
///
/// Shared strings: a compiled table and its verdicts name the same objects, and many objects share a
/// namespace, so a clone is two reference counts rather than two allocations. Encoded like two `String`s.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// Namespace (the team).
    #[serde(deserialize_with = "shared_str::deserialize")]
    pub namespace: Arc<str>,
    /// Object name.
    #[serde(deserialize_with = "shared_str::deserialize")]
    pub name: Arc<str>,
}

impl ObjectRef {
    /// Builds a reference.
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Reads a shared string straight from the decoder's text: serde's own `Arc<str>` goes through a
/// `Box<str>` first, two allocations and a copy for each of a snapshot's many names.
mod shared_str {
    use std::sync::Arc;

    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        d.deserialize_str(SharedStrVisitor)
    }

    struct SharedStrVisitor;

    impl serde::de::Visitor<'_> for SharedStrVisitor {
        type Value = Arc<str>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Arc<str>, E> {
            Ok(Arc::from(text))
        }
    }
}

/// SHA-256 of a consumer API key. The key itself never enters a snapshot.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyDigest(#[serde(with = "hex_bytes")] pub [u8; 32]);

impl KeyDigest {
    /// Digest of a presented key.
    pub fn of(key: &[u8]) -> Self {
        Self(Sha256::digest(key).into())
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({})", hex::encode(&self.0[..6]))
    }
}

mod hex_bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        let mut text = [0u8; 64];
        hex::encode_to_slice(bytes, &mut text).expect("64 hex digits for 32 bytes");
        s.serialize_str(std::str::from_utf8(&text).expect("hex is ASCII"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        d.deserialize_str(HexVisitor)
    }

    /// Accepts borrowed and transient strings alike, so decoding works from readers and `Value`s too.
    struct HexVisitor;

    impl serde::de::Visitor<'_> for HexVisitor {
        type Value = [u8; 32];

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("64 hex digits")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<[u8; 32], E> {
            let mut out = [0u8; 32];
            hex::decode_to_slice(text, &mut out).map_err(E::custom)?;
            Ok(out)
        }
    }
}

/// A provider credential. Plaintext because the proxy must send it upstream; never printed.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(transparent)]
pub struct Credential(pub String);

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

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

/// Passive health of a provider and cooldown of the keys in its pool.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive failures (connect errors, timeouts, 5xx) after which the provider is taken out of rotation.
    pub failures_to_eject: u32,
    /// How long an ejected provider stays out before one probe call is let through.
    pub ejection_ms: u64,
    /// How long a key that got 401/403/429 is left unused.
    pub key_cooldown_ms: u64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            failures_to_eject: 5,
            ejection_ms: 30_000,
            key_cooldown_ms: 60_000,
        }
    }
}

/// How many retries and fallbacks a route may add on top of its calls, so retries cannot multiply load.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryBudget {
    /// Retries allowed as a percentage of calls.
    pub percent: u32,
    /// Retries allowed per second regardless of traffic, so a quiet route can still fail over.
    pub min_per_second: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            percent: 20,
            min_per_second: 10,
        }
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

/// Upstream timeouts in milliseconds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP/TLS connect.
    pub connect_ms: u64,
    /// Request sent → response headers.
    pub first_byte_ms: u64,
    /// Longest gap between two body chunks.
    pub idle_ms: u64,
    /// Whole call.
    pub total_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_ms: 5_000,
            first_byte_ms: 60_000,
            idle_ms: 60_000,
            total_ms: 600_000,
        }
    }
}

/// How the built-in Fake provider answers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct FakeBehaviour {
    /// Delay before the response headers.
    pub latency_ms: u64,
    /// Delay between stream chunks.
    pub chunk_interval_ms: u64,
    /// Completion tokens per answer.
    pub completion_tokens: u32,
    /// Chunks a streamed answer is split into.
    pub stream_chunks: u32,
    /// Embedding vector length.
    pub embedding_dimensions: u32,
}

impl Default for FakeBehaviour {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            chunk_interval_ms: 0,
            completion_tokens: 16,
            stream_chunks: 16,
            embedding_dimensions: 8,
        }
    }
}

/// How the credential is presented upstream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AuthScheme {
    /// Header name, e.g. `authorization`, `api-key`, `x-api-key`.
    pub header: String,
    /// Prefix before the key, e.g. `Bearer `.
    pub prefix: String,
}

/// A model offered by a provider, with its resolved price.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProviderModel {
    /// Name at the provider.
    pub name: String,
    /// Azure deployment name (defaults to `name`).
    pub deployment: Option<String>,
    /// Price after catalog defaults and overrides.
    pub price: Price,
}

/// One upstream account, resolved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Provider {
    /// The `ModelProvider` object.
    pub id: ObjectRef,
    /// Which API it speaks.
    pub provider_type: ProviderType,
    /// Base URL, without a trailing `/`, e.g. `https://api.openai.com/v1`.
    pub endpoint: String,
    /// How the key is sent.
    pub auth: AuthScheme,
    /// The key pool, in the order of `spec.credentials.secretRefs`. Empty for keyless providers.
    pub credentials: Vec<Credential>,
    /// Models offered, sorted by name.
    pub models: Vec<ProviderModel>,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// Azure `api-version`.
    pub azure_api_version: Option<String>,
    /// Bedrock region.
    pub bedrock_region: Option<String>,
    /// Fake provider behaviour (only for `ProviderType::Fake`).
    pub fake: Option<FakeBehaviour>,
    /// Ejection and key cooldown.
    #[serde(default)]
    pub health: HealthPolicy,
}

/// A model at a provider that a route model can send traffic to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Backend {
    /// The provider.
    pub provider: ProviderIdx,
    /// Model name sent upstream (shared by every backend naming the same model of a provider).
    #[serde(deserialize_with = "shared_str::deserialize")]
    pub upstream_model: Arc<str>,
    /// Relative share among the weighted backends (unused for fallbacks).
    pub weight: u32,
    /// Price of this model at this provider.
    pub price: Price,
}

/// A model name clients may send on a route, with only the backends that resolved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RouteModel {
    /// Client-facing name (routes serving one model share the string).
    #[serde(deserialize_with = "shared_str::deserialize")]
    pub name: Arc<str>,
    /// Weighted backends (weight > 0 only).
    pub backends: Vec<Backend>,
    /// Ordered fallbacks.
    pub fallbacks: Vec<Backend>,
}

/// A published API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Route {
    /// The `AIRoute` object.
    pub id: ObjectRef,
    /// Path prefix without a trailing `/` (`""` for the root prefix `/`).
    pub prefix: String,
    /// Hostnames it answers on (lower-case; `*.example.com` wildcards allowed). Empty: any host.
    pub hostnames: Vec<String>,
    /// Lifecycle stage.
    pub stage: Stage,
    /// Sunset instant (Unix seconds) for Deprecated routes.
    pub sunset_unix: Option<i64>,
    /// Served models, sorted by name. Empty for Retired routes (never routed upstream).
    pub models: Vec<RouteModel>,
    /// Default per-subscription limits.
    pub limits: Limits,
    /// How subscriptions are approved.
    pub approval: Approval,
    /// Default (and ceiling of) each subscription's budget.
    #[serde(default)]
    pub budget: Budget,
    /// Retries and fallbacks allowed on top of the calls.
    #[serde(default)]
    pub retry_budget: RetryBudget,
}

/// One usable key of a consumer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ConsumerKey {
    /// `spec.keys[].name` (consumers naming their keys alike share the string).
    #[serde(deserialize_with = "shared_str::deserialize")]
    pub name: Arc<str>,
    /// SHA-256 of the key.
    pub digest: KeyDigest,
    /// Expiry instant (Unix seconds); the proxy refuses the key after it.
    pub expires_unix: Option<i64>,
}

/// A calling application.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Consumer {
    /// The `Consumer` object.
    pub id: ObjectRef,
    /// Keys that resolved and had not expired at compile time.
    pub keys: Vec<ConsumerKey>,
    /// Limits over all of the consumer's subscriptions together.
    #[serde(default)]
    pub limits: Limits,
    /// Spend ceiling over all of the consumer's subscriptions together.
    #[serde(default)]
    pub budget: Budget,
}

/// A consumer's access to a route, with its effective limits and phase.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The `ApiSubscription` object.
    pub id: ObjectRef,
    /// Who subscribes.
    pub consumer: ConsumerIdx,
    /// To what.
    pub route: RouteIdx,
    /// Only `Approved` serves.
    pub phase: Phase,
    /// Subscription limits clamped to the route's.
    pub limits: Limits,
    /// Subscription budget clamped to the route's.
    #[serde(default)]
    pub budget: Budget,
}

/// Everything that is encoded and hashed, in canonical order (each vector sorted by object reference).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Content {
    /// Providers that were accepted.
    pub providers: Vec<Provider>,
    /// Routes that were accepted (path conflicts lost are left out).
    pub routes: Vec<Route>,
    /// Consumers with at least the object accepted (possibly zero usable keys).
    pub consumers: Vec<Consumer>,
    /// Subscriptions whose consumer and route both exist.
    pub subscriptions: Vec<Subscription>,
    /// Proxy replicas sharing the traffic (0: unknown, taken as 1). Without Redis each replica enforces
    /// this share of every limit and budget.
    #[serde(default)]
    pub proxy_replicas: u32,
}

/// Lookups the hot path needs, rebuilt from [`Content`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Index {
    // Digests are uniformly random, index pairs are ours and prefixes come from the cluster's resources
    // like the object names the compiler indexes the same way: a fast unkeyed hash suits all three.
    by_key: FxHashMap<KeyDigest, (ConsumerIdx, u32)>,
    by_prefix: FxHashMap<String, Routes>,
    by_consumer_route: FxHashMap<(ConsumerIdx, RouteIdx), u32>,
    // Route models need no index: each route's are few and sorted by name (checked on decode).
}

/// The routes sharing one prefix (on different hostnames). Almost always one, kept without a vector.
#[derive(Clone, Debug)]
enum Routes {
    One(RouteIdx),
    Many(Vec<RouteIdx>),
}

impl Routes {
    fn as_slice(&self) -> &[RouteIdx] {
        match self {
            Self::One(r) => std::slice::from_ref(r),
            Self::Many(rs) => rs,
        }
    }

    fn push(&mut self, r: RouteIdx) {
        match self {
            Self::One(first) => *self = Self::Many(vec![*first, r]),
            Self::Many(rs) => rs.push(r),
        }
    }
}

/// An immutable, versioned routing table.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Monotonic version assigned by whoever publishes (not part of the hash).
    pub version: u64,
    /// Hex SHA-256 of the content's canonical binary form (see `digest.rs`); equal content, equal hash.
    pub hash: String,
    /// The table itself.
    pub content: Content,
    index: Index,
}

/// What a route lookup found.
#[derive(Clone, Copy, Debug)]
pub struct RouteMatch<'a> {
    /// Index of the route.
    pub idx: RouteIdx,
    /// The route.
    pub route: &'a Route,
    /// Path after the prefix, starting with `/` (e.g. `/v1/chat/completions`).
    pub rest: &'a str,
}

/// Error decoding a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not valid JSON of the expected shape.
    #[error("snapshot is not valid: {0}")]
    Malformed(#[from] serde_json::Error),
    /// An index points outside its table.
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

impl Snapshot {
    /// Wraps content: computes the hash and the hot-path indexes.
    pub fn from_content(version: u64, content: Content) -> Self {
        let hash = crate::digest::content_hash(&content);
        let index = Index::build(&content);
        Self {
            version,
            hash,
            content,
            index,
        }
    }

    /// Wraps content hashed and indexed by an [`Assembly`].
    pub(crate) fn assembled(
        version: u64,
        content: Content,
        (hash, index): (String, Index),
    ) -> Self {
        Self {
            version,
            hash,
            content,
            index,
        }
    }

    /// An empty table (nothing routed).
    pub fn empty(version: u64) -> Self {
        Self::from_content(version, Content::default())
    }

    /// The wire form: `{"version":…,"hash":…,"content":…}` as JSON.
    pub fn encode(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Wire<'a> {
            version: u64,
            hash: &'a str,
            content: &'a Content,
        }
        serde_json::to_vec(&Wire {
            version: self.version,
            hash: &self.hash,
            content: &self.content,
        })
        .expect("snapshot always serialises")
    }

    /// Parses the wire form, checks the hash and every cross-index, and rebuilds lookups.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct Wire {
            version: u64,
            hash: String,
            content: Content,
        }
        let wire: Wire = serde_json::from_slice(bytes)?;
        check_indexes(&wire.content).map_err(DecodeError::Inconsistent)?;
        let snapshot = Self::from_content(wire.version, wire.content);
        if snapshot.hash != wire.hash {
            return Err(DecodeError::Inconsistent(format!(
                "hash {} does not match content hash {}",
                wire.hash, snapshot.hash
            )));
        }
        Ok(snapshot)
    }

    /// The consumer holding a key, and which of its keys it is.
    pub fn consumer_by_key(
        &self,
        digest: &KeyDigest,
    ) -> Option<(ConsumerIdx, &Consumer, &ConsumerKey)> {
        let &(c, k) = self.index.by_key.get(digest)?;
        let consumer = &self.content.consumers[c as usize];
        Some((c, consumer, &consumer.keys[k as usize]))
    }

    /// The route serving `path` on `host`: longest prefix on a segment boundary, hostname-specific routes first.
    pub fn route_for<'a>(&'a self, host: Option<&str>, path: &'a str) -> Option<RouteMatch<'a>> {
        let host = host.map(strip_port);
        let mut end = path.len();
        loop {
            let candidate = &path[..end];
            if let Some(routes) = self.index.by_prefix.get(candidate)
                && let Some(idx) = pick_by_host(&self.content.routes, routes.as_slice(), host)
            {
                return Some(RouteMatch {
                    idx,
                    route: &self.content.routes[idx as usize],
                    rest: &path[end..],
                });
            }
            if end == 0 {
                return None;
            }
            end = path[..end].rfind('/').unwrap_or(0);
        }
    }

    /// The subscription of a consumer to a route, if any.
    pub fn subscription(&self, consumer: ConsumerIdx, route: RouteIdx) -> Option<&Subscription> {
        let &s = self.index.by_consumer_route.get(&(consumer, route))?;
        Some(&self.content.subscriptions[s as usize])
    }

    /// A model of a route by client-facing name.
    pub fn model(&self, route: RouteIdx, name: &str) -> Option<&RouteModel> {
        self.model_with_index(route, name).map(|(_, m)| m)
    }

    /// A model of a route by client-facing name, with its index among the route's models.
    pub fn model_with_index(&self, route: RouteIdx, name: &str) -> Option<(u32, &RouteModel)> {
        let models = &self.content.routes.get(route as usize)?.models;
        let m = models.binary_search_by(|m| (*m.name).cmp(name)).ok()?;
        Some((m as u32, &models[m]))
    }

    /// A provider by index.
    pub fn provider(&self, idx: ProviderIdx) -> &Provider {
        &self.content.providers[idx as usize]
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map(|(h, _)| &host[..h.len() + 1])
            .unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            // Bytes, not str slicing: a non-ASCII Host header must not panic, and DNS ignores case.
            let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
            host.len() > suffix.len() + 1
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && host[host.len() - suffix.len() - 1] == b'.'
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

fn pick_by_host(routes: &[Route], candidates: &[RouteIdx], host: Option<&str>) -> Option<RouteIdx> {
    let mut any_host = None;
    for &idx in candidates {
        let route = &routes[idx as usize];
        if route.hostnames.is_empty() {
            any_host.get_or_insert(idx);
        } else if let Some(h) = host
            && route.hostnames.iter().any(|p| host_matches(p, h))
        {
            return Some(idx);
        }
    }
    any_host
}

impl Index {
    fn build(content: &Content) -> Self {
        let mut index = Self::of_tables(&content.routes, &content.consumers);
        index.add_subscriptions(&content.subscriptions);
        index
    }

    /// Key and prefix lookups; subscriptions come later ([`Index::add_subscriptions`]).
    fn of_tables(routes: &[Route], consumers: &[Consumer]) -> Self {
        let keys = consumers.iter().map(|c| c.keys.len()).sum();
        let mut index = Index {
            by_key: map_with_capacity(keys),
            by_prefix: map_with_capacity(routes.len()),
            by_consumer_route: FxHashMap::default(),
        };
        for (c, consumer) in consumers.iter().enumerate() {
            for (k, key) in consumer.keys.iter().enumerate() {
                index.by_key.insert(key.digest, (c as u32, k as u32));
            }
        }
        for (r, route) in routes.iter().enumerate() {
            match index.by_prefix.entry(route.prefix.clone()) {
                Entry::Vacant(slot) => {
                    slot.insert(Routes::One(r as u32));
                }
                Entry::Occupied(mut slot) => slot.get_mut().push(r as u32),
            }
        }
        index
    }

    fn add_subscriptions(&mut self, subscriptions: &[Subscription]) {
        self.by_consumer_route.reserve(subscriptions.len());
        for (s, sub) in subscriptions.iter().enumerate() {
            self.by_consumer_route
                .insert((sub.consumer, sub.route), s as u32);
        }
    }
}

/// Hashes and indexes a snapshot's tables as they become ready, in [`Content`]'s field order; the
/// result is the one [`Snapshot::from_content`] gives. The compiler hashes providers, routes and
/// consumers while it still plans subscriptions.
pub(crate) struct Assembly {
    hasher: crate::digest::ContentHasher,
    index: Index,
}

impl Assembly {
    /// Starts on the first three tables.
    pub fn new(providers: &[Provider], routes: &[Route], consumers: &[Consumer]) -> Self {
        let mut hasher = crate::digest::ContentHasher::new();
        hasher.add(providers);
        hasher.add(routes);
        hasher.add(consumers);
        Self {
            hasher,
            index: Index::of_tables(routes, consumers),
        }
    }

    /// Adds the remaining fields; returns the hash and the finished lookups.
    pub fn finish(
        mut self,
        subscriptions: &[Subscription],
        proxy_replicas: u32,
    ) -> (String, Index) {
        self.hasher.add(subscriptions);
        self.hasher.add(&proxy_replicas);
        self.index.add_subscriptions(subscriptions);
        (self.hasher.finish(), self.index)
    }
}

fn check_indexes(content: &Content) -> Result<(), String> {
    let providers = content.providers.len() as u32;
    for route in &content.routes {
        if route.models.windows(2).any(|w| w[0].name >= w[1].name) {
            return Err(format!(
                "route {} lists its models out of order or twice",
                route.id
            ));
        }
        for model in &route.models {
            for backend in model.backends.iter().chain(&model.fallbacks) {
                if backend.provider >= providers {
                    return Err(format!(
                        "route {} refers to provider #{}",
                        route.id, backend.provider
                    ));
                }
            }
        }
    }
    for sub in &content.subscriptions {
        if sub.consumer as usize >= content.consumers.len()
            || sub.route as usize >= content.routes.len()
        {
            return Err(format!("subscription {} refers outside the table", sub.id));
        }
    }
    Ok(())
}
