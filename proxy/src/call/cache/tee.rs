//! A copy of an answer taken as it goes to the caller, stored once the answer is complete: whole,
//! within the entry size, with a successful status, no failure recorded on the call and, for
//! streams, the stream's last event and the usage seen. Errors, partial answers and answers the
//! caller stopped reading are never stored.

use std::sync::Arc;

use bytes::Bytes;
use memchr::memmem;

use super::entry::Entry;
use super::key::{CacheKey, StoreKey};
use super::store::ResponseCache;
use crate::call::record::Call;

/// An answer being copied.
pub struct Tee {
    cache: Arc<ResponseCache>,
    key: StoreKey,
    ttl_ms: u64,
    max_bytes: usize,
    status: u16,
    stream: bool,
    copy: Vec<u8>,
    /// Over the size limit: nothing will be stored.
    spoiled: bool,
    /// Semantic mode: the question's bucket and embedding, indexed once the answer is stored.
    question: Option<(CacheKey, Box<[f32]>)>,
}

impl Tee {
    /// Copies an answer of `status` into `cache` under `key` for `ttl_ms`, if it is at most `max_bytes`.
    pub fn new(
        cache: Arc<ResponseCache>,
        key: StoreKey,
        ttl_ms: u64,
        max_bytes: usize,
        status: u16,
        stream: bool,
    ) -> Self {
        Self {
            cache,
            key,
            ttl_ms,
            max_bytes,
            status,
            stream,
            copy: Vec::new(),
            spoiled: false,
            question: None,
        }
    }

    /// Indexes the answer, once stored, as the answer to the question embedded as `vector` in
    /// `bucket`.
    pub fn answering(mut self, bucket: CacheKey, vector: Box<[f32]>) -> Self {
        self.question = Some((bucket, vector));
        self
    }

    /// A piece of the answer went to the caller.
    pub fn push(&mut self, data: &Bytes) {
        if self.spoiled {
            return;
        }
        if self.copy.len() + data.len() > self.max_bytes {
            self.spoiled = true;
            self.copy = Vec::new();
            return;
        }
        self.copy.extend_from_slice(data);
    }

    /// The answer ended without error: stores it if it is whole and the call succeeded.
    pub fn finish(self, call: Option<&Call>) {
        if self.spoiled || !(200..300).contains(&self.status) {
            return;
        }
        let Some(call) = call else { return };
        if call.error_class.is_some() {
            return;
        }
        if self.stream && (call.usage.is_none() || !stream_complete(&self.copy)) {
            return;
        }
        let now = self.cache.clock.now_unix_ms();
        let usage = call.usage.unwrap_or_default();
        let entry = Entry {
            status: self.status,
            stream: self.stream,
            stored_ms: now,
            expires_ms: now.saturating_add(i64::try_from(self.ttl_ms).unwrap_or(i64::MAX)),
            tokens_in: usage.input,
            tokens_out: usage.output,
            cost_usd: call.cost_usd(),
            // Without its spare capacity: a `Bytes` made from a `Vec` keeps the whole allocation,
            // and a copy grown by doubling can be twice its length.
            body: Bytes::from({
                let mut copy = self.copy;
                copy.shrink_to_fit();
                copy
            }),
        };
        let expires_ms = entry.expires_ms;
        self.cache.put(self.key, entry);
        // Semantic mode makes every key's SHA-256 (`Sharing::Now`): the index names entries by it.
        if let (Some((bucket, vector)), Some(shared)) = (self.question, self.key.shared) {
            self.cache
                .index_question(bucket, shared, vector, expires_ms);
        }
    }
}

/// Whether a stream reached its last event: OpenAI's `data: [DONE]`, or Anthropic's `message_stop`
/// as the last event.
pub fn stream_complete(body: &[u8]) -> bool {
    let end = body.trim_ascii_end();
    if end.ends_with(b"data: [DONE]") {
        return true;
    }
    let tail = &end[end.len().saturating_sub(256)..];
    memmem::rfind(tail, b"event: message_stop").is_some_and(|at| {
        // Nothing but the event's own data may follow it.
        !tail[at + 1..].windows(7).any(|w| w == b"event: ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_streams_that_reached_their_end_are_complete() {
        assert!(stream_complete(b"data: {}\n\ndata: [DONE]\n\n"));
        assert!(!stream_complete(b"data: {}\n\n"));
        assert!(!stream_complete(b""));
        assert!(stream_complete(
            b"event: message_delta\ndata: {}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        ));
        assert!(!stream_complete(
            b"event: message_stop\ndata: {}\n\nevent: error\ndata: {}\n\n"
        ));
        assert!(!stream_complete(
            b"event: content_block_delta\ndata: {}\n\n"
        ));
    }
}
