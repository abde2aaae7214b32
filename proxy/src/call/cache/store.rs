//! The response cache of a process: this replica's store first, then Redis when the proxy has one,
//! so that every replica shares what any of them stored. Redis slow, down or answering nonsense is a
//! miss, counted, never a failed call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;

use super::entry::Entry;
use super::key::{CacheKey, LocalKey, Lookup, StoreKey};
use super::local::LocalStore;
use super::semantic::{SemanticIndex, decode_question, encode_question};
use crate::clock::Clock;
use crate::limits::redis::RedisCounters;
use crate::telemetry::Recorder;

/// How the response cache is set up.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Bytes this replica's store may hold.
    pub local_bytes: usize,
    /// The clock entries age by.
    pub clock: Clock,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            local_bytes: 64 * 1024 * 1024,
            clock: Clock::system(),
        }
    }
}

/// Where answers are kept.
pub struct ResponseCache {
    local: LocalStore,
    redis: Option<Arc<RedisCounters>>,
    recorder: Arc<Recorder>,
    /// The clock entries age by.
    pub clock: Clock,
    /// Embeddings of stored questions, for Semantic mode.
    semantic: SemanticIndex,
    /// When each bucket's questions were last read from Redis (Unix ms).
    filled: Mutex<HashMap<CacheKey, i64>>,
}

/// How often a bucket's questions are read again from Redis, for those other replicas stored.
const REFILL_MS: i64 = 1_000;
/// Buckets whose last reading is remembered; past it, all are read again.
const FILLED_MAX: usize = 10_000;

impl ResponseCache {
    /// A cache with `config`'s local budget, sharing entries through `redis` when given.
    pub fn new(
        config: &CacheConfig,
        redis: Option<Arc<RedisCounters>>,
        recorder: Arc<Recorder>,
    ) -> Self {
        Self {
            local: LocalStore::new(config.local_bytes),
            redis,
            recorder,
            clock: config.clock.clone(),
            semantic: SemanticIndex::default(),
            filled: Mutex::default(),
        }
    }

    /// Whether entries are shared with other replicas through Redis.
    pub fn shares(&self) -> bool {
        self.redis.is_some()
    }

    /// The live entry under `key`: this replica's, else Redis's (then kept here too).
    pub async fn get(&self, key: &Lookup) -> Option<Arc<Entry>> {
        self.get_by(key.local, || key.shared()).await
    }

    /// The live entry whose SHA-256 key is `key` (as the semantic index names entries): this
    /// replica's, else Redis's (then kept here too).
    pub async fn get_shared(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        self.get_by(LocalKey::of(key), || Some(*key)).await
    }

    async fn get_by(
        &self,
        local: LocalKey,
        shared: impl FnOnce() -> Option<CacheKey>,
    ) -> Option<Arc<Entry>> {
        let now = self.clock.now_unix_ms();
        if let Some(entry) = self.local.get(&local, now) {
            return Some(entry);
        }
        let redis = self.redis.as_ref()?;
        let key = shared()?;
        let Some(mut conn) = redis.connection() else {
            self.recorder.metrics.cache_store_error("get");
            return None;
        };
        let read = conn.get::<_, Option<Vec<u8>>>(key.redis_key());
        let bytes = match tokio::time::timeout(redis.timeout(), read).await {
            Ok(Ok(bytes)) => bytes?,
            Ok(Err(error)) => {
                self.redis_failed(redis, "get", &error.to_string());
                return None;
            }
            Err(_) => {
                self.recorder.metrics.cache_store_error("get");
                return None;
            }
        };
        let entry = Arc::new(Entry::decode(&bytes)?);
        if entry.expires_ms <= now {
            return None;
        }
        self.keep_locally(local, entry.clone());
        Some(entry)
    }

    /// Stores `entry` here and, off the request path, in Redis.
    pub fn put(&self, key: StoreKey, entry: Entry) {
        let entry = Arc::new(entry);
        if let (Some(redis), Some(shared)) = (&self.redis, key.shared) {
            match redis.connection() {
                None => self.recorder.metrics.cache_store_error("set"),
                Some(mut conn) => {
                    let ttl_ms = entry.expires_ms - entry.stored_ms;
                    let value = entry.encode();
                    let redis = redis.clone();
                    let recorder = self.recorder.clone();
                    // Writes may wait longer than reads: nobody is waiting for them.
                    let timeout = (redis.timeout() * 4).max(Duration::from_millis(100));
                    tokio::spawn(async move {
                        let write = conn.pset_ex::<_, _, ()>(
                            shared.redis_key(),
                            value,
                            u64::try_from(ttl_ms.max(1)).unwrap_or(1),
                        );
                        match tokio::time::timeout(timeout, write).await {
                            Ok(Ok(())) => {}
                            Ok(Err(error)) => {
                                recorder.metrics.cache_store_error("set");
                                if redis.mark_down() {
                                    tracing::warn!(%error, "Redis failed a cache write");
                                }
                            }
                            Err(_) => recorder.metrics.cache_store_error("set"),
                        }
                    });
                }
            }
        }
        self.keep_locally(key.local, entry);
    }

    /// The stored question of `bucket` nearest to `query`, with its similarity: this replica's
    /// index, filled first (at most every second per bucket) with the questions other replicas wrote
    /// to Redis.
    pub async fn nearest(&self, bucket: &CacheKey, query: &[f32]) -> Option<(CacheKey, f32)> {
        let now = self.clock.now_unix_ms();
        if let Some(redis) = &self.redis {
            let due = {
                let mut filled = self.filled.lock().unwrap_or_else(|e| e.into_inner());
                if filled.len() >= FILLED_MAX {
                    filled.clear();
                }
                let last = filled.entry(*bucket).or_insert(i64::MIN);
                let due = now.saturating_sub(*last) >= REFILL_MS;
                if due {
                    *last = now;
                }
                due
            };
            if due {
                self.fill(redis, bucket, now).await;
            }
        }
        self.semantic.nearest(bucket, query, now)
    }

    async fn fill(&self, redis: &RedisCounters, bucket: &CacheKey, now: i64) {
        let Some(mut conn) = redis.connection() else {
            self.recorder.metrics.cache_store_error("get");
            return;
        };
        let read = conn.hgetall::<_, Vec<(Vec<u8>, Vec<u8>)>>(bucket.redis_bucket());
        let fields = match tokio::time::timeout(redis.timeout(), read).await {
            Ok(Ok(fields)) => fields,
            Ok(Err(error)) => return self.redis_failed(redis, "get", &error.to_string()),
            Err(_) => return self.recorder.metrics.cache_store_error("get"),
        };
        for (field, value) in fields {
            if let (Some(key), Some((expires_ms, vector))) =
                (CacheKey::from_hex(&field), decode_question(&value))
                && expires_ms > now
            {
                self.semantic.insert(*bucket, key, vector, expires_ms, now);
            }
        }
    }

    /// Indexes the answer stored under `key` as the answer to the question embedded as `vector` in
    /// `bucket`, here and, off the request path, in Redis.
    pub fn index_question(
        &self,
        bucket: CacheKey,
        key: CacheKey,
        vector: Box<[f32]>,
        expires_ms: i64,
    ) {
        let now = self.clock.now_unix_ms();
        if let Some(redis) = &self.redis {
            match redis.connection() {
                None => self.recorder.metrics.cache_store_error("set"),
                Some(mut conn) => {
                    let value = encode_question(expires_ms, &vector);
                    let ttl_ms = u64::try_from(expires_ms.saturating_sub(now).max(1)).unwrap_or(1);
                    let recorder = self.recorder.clone();
                    let timeout = (redis.timeout() * 4).max(Duration::from_millis(100));
                    tokio::spawn(async move {
                        let name = bucket.redis_bucket();
                        // The hash lives as long as its newest question: every question of a
                        // bucket has its route's time to live.
                        let mut pipe = redis::pipe();
                        pipe.hset(&name, hex::encode(key.0), value)
                            .ignore()
                            .pexpire(&name, i64::try_from(ttl_ms).unwrap_or(i64::MAX))
                            .ignore();
                        let write = pipe.query_async::<()>(&mut conn);
                        match tokio::time::timeout(timeout, write).await {
                            Ok(Ok(())) => {}
                            _ => recorder.metrics.cache_store_error("set"),
                        }
                    });
                }
            }
        }
        self.semantic.insert(bucket, key, vector, expires_ms, now);
    }

    fn keep_locally(&self, key: LocalKey, entry: Arc<Entry>) {
        let done = self.local.insert(key, entry);
        let held = self.local.held();
        self.recorder
            .metrics
            .cache_held(held.entries, held.bytes, done.evicted);
    }

    fn redis_failed(&self, redis: &RedisCounters, op: &'static str, error: &str) {
        self.recorder.metrics.cache_store_error(op);
        // The connection keeper reconnects once it is marked down.
        if redis.mark_down() {
            tracing::warn!(%error, "Redis failed a cache {op}: answering from this replica's cache");
        }
    }
}
