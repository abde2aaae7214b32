//! The whole table: its rows in canonical order, their hash and lookups, and its JSON form.

use serde::{Deserialize, Serialize};

use super::consumer::{Consumer, ConsumerKey, KeyDigest};
use super::index::Index;
use super::provider::Provider;
use super::refs::{ConsumerIdx, ProviderIdx, RouteIdx};
use super::route::{Route, RouteModel};
use super::subscription::Subscription;
use crate::digest::{ContentHasher, content_hash};

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
        let hash = content_hash(&content);
        let mut index = Index::of_tables(&content.routes, &content.consumers);
        index.add_subscriptions(&content.subscriptions);
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
        let (c, k) = self.index.key(digest)?;
        let consumer = &self.content.consumers[c as usize];
        Some((c, consumer, &consumer.keys[k as usize]))
    }

    /// The route serving `path` on `host`: longest prefix on a segment boundary, hostname-specific routes first.
    pub fn route_for<'a>(&'a self, host: Option<&str>, path: &'a str) -> Option<RouteMatch<'a>> {
        let (idx, end) = self.index.route_for(&self.content.routes, host, path)?;
        Some(RouteMatch {
            idx,
            route: &self.content.routes[idx as usize],
            rest: &path[end..],
        })
    }

    /// The subscription of a consumer to a route, if any.
    pub fn subscription(&self, consumer: ConsumerIdx, route: RouteIdx) -> Option<&Subscription> {
        let s = self.index.subscription(consumer, route)?;
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

/// Hashes and indexes a snapshot's tables as they become ready, in [`Content`]'s field order; the
/// result is the one [`Snapshot::from_content`] gives. The compiler hashes providers, routes and
/// consumers while it still plans subscriptions.
pub(crate) struct Assembly {
    hasher: ContentHasher,
    index: Index,
}

impl Assembly {
    /// Starts on the first three tables.
    pub fn new(providers: &[Provider], routes: &[Route], consumers: &[Consumer]) -> Self {
        let mut hasher = ContentHasher::new();
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
