//! Hot-path lookups over a table's rows: consumers by key digest, routes by prefix and host,
//! subscriptions by consumer and route.

use std::collections::hash_map::Entry;

use super::consumer::{Consumer, KeyDigest};
use super::refs::{ConsumerIdx, RouteIdx};
use super::route::Route;
use super::subscription::Subscription;
use crate::fx::{FxHashMap, map_with_capacity};

/// Lookups the hot path needs, rebuilt from a table's rows.
#[derive(Clone, Debug, Default)]
pub(crate) struct Index {
    // Digests are uniformly random, index pairs are ours and prefixes come from the cluster's resources
    // like the object names the compiler indexes the same way: a fast unkeyed hash suits all three.
    by_key: FxHashMap<KeyDigest, (ConsumerIdx, u32)>,
    by_prefix: FxHashMap<String, Routes>,
    /// Which lengths (in bytes) the prefixes have, a bit each: a path's shorter candidates whose
    /// length no prefix has are passed over without hashing them.
    prefix_lengths: PrefixLengths,
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

impl Index {
    /// Key and prefix lookups; subscriptions come later ([`Index::add_subscriptions`]).
    pub(super) fn of_tables(routes: &[Route], consumers: &[Consumer]) -> Self {
        let keys = consumers.iter().map(|c| c.keys.len()).sum();
        let mut index = Index {
            by_key: map_with_capacity(keys),
            by_prefix: map_with_capacity(routes.len()),
            prefix_lengths: PrefixLengths::default(),
            by_consumer_route: FxHashMap::default(),
        };
        for (c, consumer) in consumers.iter().enumerate() {
            for (k, key) in consumer.keys.iter().enumerate() {
                index.by_key.insert(key.digest, (c as u32, k as u32));
            }
        }
        for (r, route) in routes.iter().enumerate() {
            index.prefix_lengths.add(route.prefix.len());
            match index.by_prefix.entry(route.prefix.clone()) {
                Entry::Vacant(slot) => {
                    slot.insert(Routes::One(r as u32));
                }
                Entry::Occupied(mut slot) => slot.get_mut().push(r as u32),
            }
        }
        index
    }

    /// Adds the subscription lookup.
    pub(super) fn add_subscriptions(&mut self, subscriptions: &[Subscription]) {
        self.by_consumer_route.reserve(subscriptions.len());
        for (s, sub) in subscriptions.iter().enumerate() {
            self.by_consumer_route
                .insert((sub.consumer, sub.route), s as u32);
        }
    }

    /// The consumer holding a key, and the key's position among its keys.
    pub(super) fn key(&self, digest: &KeyDigest) -> Option<(ConsumerIdx, u32)> {
        self.by_key.get(digest).copied()
    }

    /// The position of a consumer's subscription to a route.
    pub(super) fn subscription(&self, consumer: ConsumerIdx, route: RouteIdx) -> Option<u32> {
        self.by_consumer_route.get(&(consumer, route)).copied()
    }

    /// The route serving `path` on `host`, and where its prefix ends in `path`: longest prefix on a
    /// segment boundary, hostname-specific routes first.
    pub(super) fn route_for(
        &self,
        routes: &[Route],
        host: Option<&str>,
        path: &str,
    ) -> Option<(RouteIdx, usize)> {
        let host = host.map(strip_port);
        let mut end = path.len();
        loop {
            let candidate = &path[..end];
            if self.prefix_lengths.has(end)
                && let Some(at_prefix) = self.by_prefix.get(candidate)
                && let Some(idx) = pick_by_host(routes, at_prefix.as_slice(), host)
            {
                return Some((idx, end));
            }
            if end == 0 {
                return None;
            }
            end = path.as_bytes()[..end]
                .iter()
                .rposition(|&b| b == b'/')
                .unwrap_or(0);
        }
    }
}

/// A set of lengths, a bit each.
#[derive(Clone, Debug, Default)]
struct PrefixLengths(Vec<u64>);

impl PrefixLengths {
    fn add(&mut self, len: usize) {
        let (word, bit) = (len / 64, len % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }

    fn has(&self, len: usize) -> bool {
        self.0
            .get(len / 64)
            .is_some_and(|w| w & (1 << (len % 64)) != 0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The length set holds exactly the lengths added, including those past a word's end.
        #[test]
        fn prefix_lengths_hold_what_was_added(
            added in proptest::collection::btree_set(0usize..300, 0..20),
            asked in 0usize..400,
        ) {
            let mut lengths = PrefixLengths::default();
            for &len in &added {
                lengths.add(len);
            }
            prop_assert_eq!(lengths.has(asked), added.contains(&asked));
        }
    }
}
