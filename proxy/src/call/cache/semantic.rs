//! Semantic lookups: a question asked in other words is answered from a stored answer.
//!
//! Only the text of the last turn, a user's, is compared by meaning (its embedding). Everything
//! else in the request must be exactly the same — the system prompt, the earlier turns, the
//! sampling options, the tools — so it goes into a *bucket* key made like the exact key with that
//! one text left out. Calls with tool calls or tool results, or with more user and assistant turns
//! than the route allows, are not asked semantically: an exact match still answers them.
//!
//! This replica's index holds, per bucket, the embeddings of the questions whose answers were
//! stored and their exact keys; a lookup is an exact nearest-neighbour search over the bucket
//! (cosine similarity of unit vectors), and the answer is then read under its exact key.

use std::collections::HashMap;
use std::sync::RwLock;

use serde_json::Value;

use super::key::{CacheKey, KeyParts, key_of};

/// A question that may be looked up by meaning.
#[derive(Debug, PartialEq, Eq)]
pub struct Question {
    /// The last user turn's text: what is embedded.
    pub text: String,
    /// Everything else in the request, as a key: only entries under the same bucket may answer.
    pub bucket: CacheKey,
}

/// Reads a chat (OpenAI) or messages (Anthropic) request for a semantic lookup: `None` when it is
/// not a JSON object with messages, has more than `max_turns` user and assistant turns, carries tool
/// calls or tool results, or does not end with a user turn made only of text.
pub fn question(parts: &KeyParts<'_>, body: &[u8], max_turns: u32) -> Option<Question> {
    let mut doc: Value = serde_json::from_slice(body).ok()?;
    let messages = doc.get_mut("messages")?.as_array_mut()?;
    let mut turns = 0usize;
    for message in messages.iter() {
        let message = message.as_object()?;
        let role = message.get("role")?.as_str()?;
        match role {
            "system" | "developer" => {}
            "user" | "assistant" => turns += 1,
            // `tool`, `function` and anything unknown: not a plain conversation.
            _ => return None,
        }
        if message.contains_key("tool_calls") || message.contains_key("function_call") {
            return None;
        }
        if let Some(Value::Array(blocks)) = message.get("content")
            && blocks.iter().any(|b| {
                matches!(
                    b.get("type").and_then(Value::as_str),
                    Some("tool_use" | "tool_result" | "server_tool_use" | "mcp_tool_use")
                )
            })
        {
            return None;
        }
    }
    if turns == 0 || turns > max_turns as usize {
        return None;
    }
    let last = messages.last_mut()?.as_object_mut()?;
    if last.get("role")?.as_str()? != "user" {
        return None;
    }
    let text = text_of(last.get("content")?)?;
    if text.trim().is_empty() {
        return None;
    }
    last.insert("content".into(), Value::Null);
    let bucket_parts = KeyParts {
        endpoint: &format!("{}+semantic", parts.endpoint),
        ..*parts
    };
    let bucket = key_of(&bucket_parts, doc.as_object()?);
    Some(Question { text, bucket })
}

/// A turn's text: a string, or text parts only (OpenAI's `{"type":"text","text":…}`, Anthropic's
/// text blocks), joined by newlines. Images, audio, files: `None`.
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for part in parts {
                if part.get("type")?.as_str()? != "text" {
                    return None;
                }
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(part.get("text")?.as_str()?);
            }
            Some(out)
        }
        _ => None,
    }
}

/// An embedding scaled to unit length (so a dot product is the cosine similarity), or `None` when it
/// is empty, zero or not finite.
pub fn unit(vector: Vec<f32>) -> Option<Box<[f32]>> {
    // The norm in f64: squares of f32 values below about 1e-19 fall into f32's subnormal range (or to
    // zero) and those above 1e19 overflow, either of which would leave the "unit" vector far from length 1.
    let norm = vector
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if vector.is_empty() || !norm.is_finite() || norm == 0.0 {
        return None;
    }
    Some(
        vector
            .into_iter()
            .map(|x| (f64::from(x) / norm) as f32)
            .collect(),
    )
}

/// The dot product, in eight lanes so that the compiler can vectorise it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Most questions one replica's index holds; past it, expired ones go first, then the bucket's
/// oldest. About 6 KiB each with 1536 dimensions: 100 000 of them are some 600 MiB, so this also
/// bounds the index's memory for the common embedding sizes.
pub const MAX_QUESTIONS: usize = 100_000;

/// This replica's embeddings of stored questions, by bucket.
pub struct SemanticIndex {
    inner: RwLock<Inner>,
    max: usize,
}

#[derive(Default)]
struct Inner {
    buckets: HashMap<CacheKey, Vec<Slot>>,
    held: usize,
}

struct Slot {
    vector: Box<[f32]>,
    key: CacheKey,
    expires_ms: i64,
}

impl Default for SemanticIndex {
    fn default() -> Self {
        Self::new(MAX_QUESTIONS)
    }
}

impl SemanticIndex {
    /// An index of at most `max` questions.
    pub fn new(max: usize) -> Self {
        Self {
            inner: RwLock::default(),
            max: max.max(1),
        }
    }

    /// The stored question of `bucket` nearest to `query` (a unit vector) that is still live at
    /// `now_ms`, with its similarity.
    pub fn nearest(
        &self,
        bucket: &CacheKey,
        query: &[f32],
        now_ms: i64,
    ) -> Option<(CacheKey, f32)> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut best: Option<(CacheKey, f32)> = None;
        for slot in inner.buckets.get(bucket)? {
            if slot.expires_ms <= now_ms || slot.vector.len() != query.len() {
                continue;
            }
            let similarity = dot(&slot.vector, query);
            if best.is_none_or(|(_, b)| similarity > b) {
                best = Some((slot.key, similarity));
            }
        }
        best
    }

    /// Keeps `vector` (a unit vector) as the question stored under `key` in `bucket` until
    /// `expires_ms`, replacing what `key` had.
    pub fn insert(
        &self,
        bucket: CacheKey,
        key: CacheKey,
        vector: Box<[f32]>,
        expires_ms: i64,
        now_ms: i64,
    ) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *inner;
        if let Some(slots) = inner.buckets.get_mut(&bucket)
            && let Some(at) = slots.iter().position(|s| s.key == key)
        {
            slots.swap_remove(at);
            inner.held -= 1;
        }
        if inner.held >= self.max {
            // Expired questions go first, from every bucket.
            let mut held = 0;
            inner.buckets.retain(|_, slots| {
                slots.retain(|s| s.expires_ms > now_ms);
                held += slots.len();
                !slots.is_empty()
            });
            inner.held = held;
        }
        let slots = inner.buckets.entry(bucket).or_default();
        if inner.held >= self.max {
            // Still full: this bucket's question closest to its end makes room, if it has one.
            let Some(at) = (0..slots.len()).min_by_key(|&i| slots[i].expires_ms) else {
                return;
            };
            slots.swap_remove(at);
            inner.held -= 1;
        }
        slots.push(Slot {
            vector,
            key,
            expires_ms,
        });
        inner.held += 1;
    }

    /// Questions held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).held
    }
}

impl CacheKey {
    /// The name in Redis of the hash holding a bucket's questions: field the exact key in hex, value
    /// [`encode_question`].
    pub fn redis_bucket(&self) -> String {
        format!("tollgate:cache:v1:q:{}", hex::encode(self.0))
    }

    /// A key written as 64 hex digits, as in a bucket's field names.
    pub fn from_hex(text: &[u8]) -> Option<CacheKey> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(CacheKey(out))
    }
}

const QUESTION_MAGIC: &[u8; 4] = b"TGQ1";

/// A stored question as kept in Redis: a tag, when its answer expires (Unix ms, big-endian), then the
/// unit vector's numbers (little-endian `f32`).
pub fn encode_question(expires_ms: i64, vector: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + 4 * vector.len());
    out.extend_from_slice(QUESTION_MAGIC);
    out.extend_from_slice(&expires_ms.to_be_bytes());
    for x in vector {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Reads what [`encode_question`] wrote; anything else (another version, a foreign value, numbers
/// that are not a unit vector) is `None`.
pub fn decode_question(bytes: &[u8]) -> Option<(i64, Box<[f32]>)> {
    let rest = bytes.strip_prefix(QUESTION_MAGIC)?;
    let (expires, numbers) = rest.split_at_checked(8)?;
    if numbers.is_empty() || numbers.len() % 4 != 0 {
        return None;
    }
    let expires_ms = i64::from_be_bytes(expires.try_into().ok()?);
    let vector: Vec<f32> = numbers
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    // Scaled again: a value written by anything else still compares as a cosine.
    Some((expires_ms, unit(vector)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::cache::key::Form;
    use proptest::prelude::*;
    use serde_json::json;

    fn parts() -> KeyParts<'static> {
        KeyParts {
            endpoint: "chat",
            route: "team-a/chat",
            consumer: Some("team-a/app"),
            model: "front-model",
            form: Form::Whole,
        }
    }

    fn ask(body: &Value, max_turns: u32) -> Option<Question> {
        question(&parts(), body.to_string().as_bytes(), max_turns)
    }

    #[test]
    fn only_the_last_user_turn_is_compared_by_meaning() {
        let one = ask(
            &json!({"model": "m", "temperature": 0.2, "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is the capital of France?"}]}),
            1,
        )
        .unwrap();
        assert_eq!(one.text, "What is the capital of France?");
        // Another wording, members in another order, text parts: the same bucket.
        let other = ask(
            &json!({"messages": [
                {"content": "Be brief.", "role": "system"},
                {"role": "user", "content": [{"type": "text", "text": "France's capital?"}]}],
                "temperature": 0.2, "model": "m", "user": "u-9"}),
            1,
        )
        .unwrap();
        assert_eq!(other.text, "France's capital?");
        assert_eq!(other.bucket, one.bucket);
        // Anything else changed: another bucket.
        for changed in [
            json!({"model": "m", "temperature": 0.3, "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "France's capital?"}]}),
            json!({"model": "m", "temperature": 0.2, "messages": [
                {"role": "system", "content": "Be very brief."},
                {"role": "user", "content": "France's capital?"}]}),
            json!({"model": "m", "temperature": 0.2, "tools": [], "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "France's capital?"}]}),
        ] {
            assert_ne!(ask(&changed, 1).unwrap().bucket, one.bucket, "{changed}");
        }
        // The bucket is not the exact key of the same request.
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let exact = super::super::key::cache_key(&parts(), body.to_string().as_bytes()).unwrap();
        assert_ne!(ask(&body, 1).unwrap().bucket, exact);
    }

    #[test]
    fn multi_turn_tool_and_non_text_calls_are_not_asked_by_meaning() {
        let three = json!({"messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}]});
        assert_eq!(ask(&three, 1), None);
        assert_eq!(ask(&three, 3).unwrap().text, "c");
        for refused in [
            json!({"messages": [{"role": "tool", "tool_call_id": "x", "content": "42"}]}),
            json!({"messages": [
                {"role": "assistant", "content": null, "tool_calls": []},
                {"role": "user", "content": "c"}]}),
            json!({"messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": "42"}]}]}),
            json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:,"}}]}]}),
            json!({"messages": [{"role": "assistant", "content": "b"}]}),
            json!({"messages": [{"role": "user", "content": "   "}]}),
            json!({"messages": []}),
            json!({"input": "embed me"}),
            json!(["not", "an", "object"]),
        ] {
            assert_eq!(ask(&refused, 4), None, "{refused}");
        }
        // Anthropic's format: `system` on top, text blocks.
        let messages = json!({"system": "Be brief.", "max_tokens": 50, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}]});
        assert_eq!(ask(&messages, 1).unwrap().text, "Capital of France?");
    }

    #[test]
    fn the_nearest_live_question_of_the_bucket_answers() {
        let index = SemanticIndex::new(10);
        let (b1, b2) = (CacheKey([1; 32]), CacheKey([2; 32]));
        let v = |x: &[f32]| unit(x.to_vec()).unwrap();
        index.insert(b1, CacheKey([10; 32]), v(&[1.0, 0.0]), 100, 0);
        index.insert(b1, CacheKey([11; 32]), v(&[0.6, 0.8]), 100, 0);
        index.insert(b2, CacheKey([12; 32]), v(&[0.0, 1.0]), 100, 0);
        let (key, similarity) = index.nearest(&b1, &v(&[0.0, 1.0]), 0).unwrap();
        assert_eq!(key, CacheKey([11; 32]));
        assert!((similarity - 0.8).abs() < 1e-6);
        assert_eq!(index.nearest(&CacheKey([3; 32]), &v(&[1.0, 0.0]), 0), None);
        // Another dimension never matches; expired questions are not found.
        assert_eq!(index.nearest(&b1, &v(&[1.0, 0.0, 0.0]), 0), None);
        assert_eq!(index.nearest(&b1, &v(&[1.0, 0.0]), 100), None);
        // The same key again replaces its question.
        index.insert(b1, CacheKey([11; 32]), v(&[-1.0, 0.0]), 100, 0);
        assert_eq!(index.len(), 3);
        assert_eq!(unit(vec![0.0, 0.0]), None);
        assert_eq!(unit(vec![]), None);
        assert_eq!(unit(vec![f32::NAN]), None);
        // Found by the proptest below in CI: squares this small fall out of f32's normal range.
        let tiny = f32::from_le_bytes([0, 0, 1, 154]);
        assert_eq!(unit(vec![0.0, 0.0, tiny]).unwrap()[2], -1.0);
        let huge = unit(vec![3e38, 3e38]).unwrap();
        assert!((huge[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    }

    #[test]
    fn a_full_index_drops_expired_questions_then_the_buckets_oldest() {
        let index = SemanticIndex::new(2);
        let b = CacheKey([1; 32]);
        let v = || unit(vec![1.0]).unwrap();
        index.insert(b, CacheKey([10; 32]), v(), 50, 0);
        index.insert(b, CacheKey([11; 32]), v(), 200, 0);
        index.insert(CacheKey([2; 32]), CacheKey([12; 32]), v(), 300, 60);
        assert_eq!(index.len(), 2, "the expired one went");
        index.insert(b, CacheKey([13; 32]), v(), 400, 60);
        assert_eq!(index.len(), 2);
        assert_eq!(index.nearest(&b, &v(), 60).unwrap().0, CacheKey([13; 32]));
        assert!(index.nearest(&CacheKey([2; 32]), &v(), 60).is_some());
    }

    /// Lookup time over one bucket of 10k and 100k questions (the worst case: every question of the
    /// route in one bucket). Not a test of correctness: run it in release mode and read the figures,
    /// `cargo test --release -p tollgate-proxy --lib -- --ignored --nocapture semantic_lookup_time`.
    #[test]
    #[ignore = "a measurement, run in release mode"]
    fn semantic_lookup_time() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        for (questions, dims) in [
            (10_000, 1536),
            (10_000, 768),
            (100_000, 768),
            (100_000, 384),
        ] {
            let index = SemanticIndex::new(questions);
            let bucket = CacheKey([7; 32]);
            let started = std::time::Instant::now();
            for i in 0..questions {
                let v = unit((0..dims).map(|_| next()).collect()).unwrap();
                let mut key = [0u8; 32];
                key[..8].copy_from_slice(&(i as u64).to_le_bytes());
                index.insert(bucket, CacheKey(key), v, i64::MAX, 0);
            }
            let filled = started.elapsed();
            let queries: Vec<Box<[f32]>> = (0..20)
                .map(|_| unit((0..dims).map(|_| next()).collect()).unwrap())
                .collect();
            let started = std::time::Instant::now();
            for q in &queries {
                std::hint::black_box(index.nearest(&bucket, q, 0));
            }
            let per_lookup = started.elapsed() / queries.len() as u32;
            println!(
                "| {questions} | {dims} | {:.2} ms | {:.1} s |",
                per_lookup.as_secs_f64() * 1000.0,
                filled.as_secs_f64()
            );
        }
    }

    proptest! {
        #[test]
        fn nearest_is_the_brute_force_best(
            vectors in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, 11), 1..40),
            query in prop::collection::vec(-1.0f32..1.0, 11),
        ) {
            let index = SemanticIndex::new(1000);
            let bucket = CacheKey([0; 32]);
            let mut units = Vec::new();
            for (i, v) in vectors.into_iter().enumerate() {
                if let Some(u) = unit(v) {
                    index.insert(bucket, CacheKey([i as u8; 32]), u.clone(), 10, 0);
                    units.push(u);
                }
            }
            let Some(query) = unit(query) else { return Ok(()) };
            let want = units
                .iter()
                .map(|u| u.iter().zip(query.iter()).map(|(a, b)| a * b).sum::<f32>())
                .fold(f32::NEG_INFINITY, f32::max);
            match index.nearest(&bucket, &query, 0) {
                None => prop_assert!(units.is_empty()),
                Some((_, got)) => {
                    prop_assert!((got - want).abs() < 1e-4, "{} vs {}", got, want);
                    prop_assert!(got <= 1.0001);
                }
            }
        }

        #[test]
        fn questions_round_trip_through_their_redis_form(
            expires_ms in any::<i64>(),
            vector in prop::collection::vec(-1.0f32..1.0, 1..20),
        ) {
            let Some(vector) = unit(vector) else { return Ok(()) };
            let (e, v) = decode_question(&encode_question(expires_ms, &vector)).unwrap();
            prop_assert_eq!(e, expires_ms);
            for (a, b) in v.iter().zip(vector.iter()) {
                prop_assert!((a - b).abs() < 1e-6);
            }
        }

        #[test]
        fn any_redis_value_decodes_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_question(&bytes);
            let mut tagged = QUESTION_MAGIC.to_vec();
            tagged.extend_from_slice(&bytes);
            if let Some((_, v)) = decode_question(&tagged) {
                let norm: f32 = v.iter().map(|x| x * x).sum();
                prop_assert!((norm - 1.0).abs() < 1e-3);
            }
            let _ = CacheKey::from_hex(&bytes);
        }

        #[test]
        fn any_body_reads_without_panicking(body in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = question(&parts(), &body, 3);
        }

        #[test]
        fn any_messages_read_without_panicking(
            roles in prop::collection::vec(
                prop::sample::select(vec!["user", "assistant", "system", "tool", "x"]), 0..5),
            texts in prop::collection::vec("\\PC{0,12}", 5),
            as_parts in any::<bool>(),
        ) {
            let messages: Vec<Value> = roles
                .iter()
                .zip(&texts)
                .map(|(role, text)| if as_parts {
                    json!({"role": role, "content": [{"type": "text", "text": text}]})
                } else {
                    json!({"role": role, "content": text})
                })
                .collect();
            let body = json!({"model": "m", "messages": messages});
            if let Some(q) = ask(&body, 3) {
                prop_assert_eq!(roles.last().copied(), Some("user"));
                prop_assert_eq!(&q.text, texts[roles.len() - 1].as_str());
            }
        }
    }
}
