//! What makes two requests "the same": the cache key.
//!
//! The key is the SHA-256 of: a version tag, the endpoint, the route (`namespace/name`), the scope (the
//! consumer's `namespace/name` in Consumer scope, nothing in Route scope), the route's model name, the
//! answer's form (a whole body, a stream, a stream with a usage chunk), and the request body
//! normalised: object members in byte order of their names at every depth, no insignificant
//! whitespace, and the top-level members in [`IGNORED`] left out. Everything else counts, values as
//! JSON reads them (`1` and `1.0` differ; `"a"` and `"\u0061"` do not); a member named twice in one
//! object counts with its last value, as serde_json's map keeps it.
//!
//! The SHA-256 names an entry wherever replicas meet: in Redis and in the semantic index. This
//! replica's own store finds entries by a [`LocalKey`] instead, a 128-bit SipHash-2-4 of the same
//! bytes under a secret drawn from the OS when the process starts: a fraction of SHA-256's cost where
//! the CPU has no SHA extensions, and as safe for keeping teams apart, since nobody outside the
//! process can know which bytes collide. So a call on a route without Redis or Semantic mode never
//! computes the SHA-256; one with Redis computes it only when this replica's store misses.

use std::cell::RefCell;
use std::hash::Hasher;
use std::sync::{LazyLock, OnceLock};

use ring::digest;
use serde_json::Value;
use siphasher::sip128::{Hasher128, SipHasher24};

use crate::llm::canonical_json::Canonical;

/// Top-level request members that do not change the answer's content, and so are not in the key:
/// - `model`: replaced by the route's model name, which is in the key;
/// - `stream`, `stream_options`: the form of the answer, which is in the key on its own;
/// - `user`, `metadata`: who the caller says is asking (OpenAI's end-user id, Anthropic's
///   `metadata.user_id`, stored-completion tags);
/// - `store`: whether OpenAI keeps the completion for its dashboards.
pub const IGNORED: [&str; 6] = [
    "model",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
];

/// A cache key: 32 bytes of SHA-256.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The key's name in Redis.
    pub fn redis_key(&self) -> String {
        format!("tollgate:cache:v1:{}", hex::encode(self.0))
    }
}

/// The form of an answer: the same request asked for whole and as a stream is stored twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// One JSON body.
    Whole,
    /// Server-sent events.
    Stream,
    /// Server-sent events with OpenAI's usage chunk (`stream_options.include_usage`).
    StreamWithUsage,
}

impl Form {
    fn tag(self) -> &'static [u8] {
        match self {
            Self::Whole => b"whole",
            Self::Stream => b"stream",
            Self::StreamWithUsage => b"stream+usage",
        }
    }
}

/// Everything the key is made of besides the body.
pub struct KeyParts<'a> {
    /// `chat`, `embeddings` or `messages`.
    pub endpoint: &'a str,
    /// The route's `namespace/name`.
    pub route: &'a str,
    /// The consumer's `namespace/name` in Consumer scope; `None` in Route scope.
    pub consumer: Option<&'a str>,
    /// The route's model name.
    pub model: &'a str,
    /// The answer's form.
    pub form: Form,
}

/// Where a key will be needed, which decides what [`lookup_key`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// Only in this replica's store: the SHA-256 is never made.
    Local,
    /// In Redis too, when this replica's store misses: the hashed bytes are kept so that the
    /// SHA-256 can be made then.
    OnMiss,
    /// In the semantic index and Redis: the SHA-256 is made now, and the local key taken from it,
    /// so that an entry a semantic lookup finds by its SHA-256 is found here by the same local key.
    Now,
}

/// The key of one call: its local key, and its SHA-256 (made, or makeable) where it is shared.
#[derive(Debug)]
pub struct Lookup {
    /// This replica's store's key.
    pub local: LocalKey,
    /// The length-prefixed parts and the normal form, kept for the SHA-256 ([`Sharing::OnMiss`]).
    hashed: Option<Box<[u8]>>,
    shared: OnceLock<CacheKey>,
}

impl Lookup {
    /// The SHA-256 key, made now if it was not yet; `None` when it was asked for as
    /// [`Sharing::Local`].
    pub fn shared(&self) -> Option<CacheKey> {
        if let Some(key) = self.shared.get() {
            return Some(*key);
        }
        let hashed = self.hashed.as_deref()?;
        Some(*self.shared.get_or_init(|| sha256(&[hashed])))
    }

    /// What storing the answer needs: the local key, and the SHA-256 if the entry is shared.
    pub fn for_store(&self) -> StoreKey {
        StoreKey {
            local: self.local,
            shared: self.shared(),
        }
    }
}

/// Where an answer is stored: this replica's store's key, and the SHA-256 when it is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreKey {
    /// This replica's store's key.
    pub local: LocalKey,
    /// Redis's and the semantic index's key.
    pub shared: Option<CacheKey>,
}

/// An entry's key in this replica's store: a SipHash-2-4 (128 bits) under [`SECRET`] of what the
/// SHA-256 hashes, or, for an entry known by its SHA-256 ([`Sharing::Now`], entries found through
/// the semantic index), the first 16 bytes of that.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalKey(pub u128);

impl LocalKey {
    /// The local key of an entry known by its SHA-256.
    pub fn of(key: &CacheKey) -> Self {
        let mut head = [0u8; 16];
        head.copy_from_slice(&key.0[..16]);
        LocalKey(u128::from_be_bytes(head))
    }
}

/// This process's SipHash key, from the OS's random source.
static SECRET: LazyLock<(u64, u64)> = LazyLock::new(|| {
    let draw = || getrandom::u64().expect("the OS gives random bytes");
    (draw(), draw())
});

/// The key of a request body for `sharing`, or `None` when the body is not a JSON object (as
/// serde_json reads one). The body is put in canonical form straight from its bytes
/// (`llm::canonical_json`), with no `serde_json::Value` in between: the key is most of what a hit
/// costs.
pub fn lookup_key(parts: &KeyParts<'_>, body: &[u8], sharing: Sharing) -> Option<Lookup> {
    with_normal_form(body, |normal| {
        with_pieces(parts, normal, |pieces| match sharing {
            Sharing::Now => {
                let key = sha256(pieces);
                Lookup {
                    local: LocalKey::of(&key),
                    hashed: None,
                    shared: OnceLock::from(key),
                }
            }
            Sharing::Local => Lookup {
                local: sip(pieces),
                hashed: None,
                shared: OnceLock::new(),
            },
            Sharing::OnMiss => {
                let hashed = pieces.concat().into_boxed_slice();
                Lookup {
                    local: sip(&[&hashed]),
                    hashed: Some(hashed),
                    shared: OnceLock::new(),
                }
            }
        })
    })
}

/// The SipHash-2-4 (128 bits) of `pieces`, one after the other, under [`SECRET`].
fn sip(pieces: &[&[u8]]) -> LocalKey {
    let (k0, k1) = *SECRET;
    let mut sip = SipHasher24::new_with_keys(k0, k1);
    for piece in pieces {
        sip.write(piece);
    }
    LocalKey(sip.finish128().into())
}

/// The SHA-256 key of a request body, or `None` when the body is not a JSON object.
#[cfg(test)]
pub fn cache_key(parts: &KeyParts<'_>, body: &[u8]) -> Option<CacheKey> {
    with_normal_form(body, |normal| hash(parts, normal))
}

/// `then` of the body's normal form, in this thread's buffers.
fn with_normal_form<T>(body: &[u8], then: impl FnOnce(&[u8]) -> T) -> Option<T> {
    BUFFERS.with(|buffers| {
        let (canonical, normal) = &mut *buffers.borrow_mut();
        canonical.object(body, &IGNORED, normal)?;
        let made = then(normal);
        // A rare huge body does not keep its buffers for the thread's life.
        if normal.capacity() + canonical.retained_bytes() > KEPT_BUFFER {
            *normal = Vec::new();
            *canonical = Canonical::default();
        }
        Some(made)
    })
}

thread_local! {
    /// A thread's buffers for normalising bodies, kept between keys.
    static BUFFERS: RefCell<(Canonical, Vec<u8>)> = RefCell::new((Canonical::default(), Vec::new()));
}

/// Most bytes of buffers a thread keeps for its next key (a normalised body of up to about half this).
const KEPT_BUFFER: usize = 64 << 10;

/// The key of a request already read into a JSON object (semantic lookups' buckets, made from a
/// request with its last question taken out).
pub fn key_of(parts: &KeyParts<'_>, object: &serde_json::Map<String, Value>) -> CacheKey {
    let mut normal = Vec::with_capacity(256);
    write_object(&mut normal, object, true);
    hash(parts, &normal)
}

/// SHA-256 of the parts, each length-prefixed, then the normalised body. By ring's SHA-256, whose
/// assembly takes about 60% of the instructions of sha2's portable code where the CPU has no SHA
/// extensions (or valgrind hides them: 37,700 against 62,000 for the benchmark's ~1.1 KB); where it
/// has them, both use them.
fn hash(parts: &KeyParts<'_>, normal: &[u8]) -> CacheKey {
    with_pieces(parts, normal, sha256)
}

/// `then` of the bytes every key hashes, in order: each part length-prefixed (8 bytes, big-endian),
/// so that no two different part lists hash the same bytes, then the normalised body.
fn with_pieces<T>(parts: &KeyParts<'_>, normal: &[u8], then: impl FnOnce(&[&[u8]]) -> T) -> T {
    let fields = fields(parts);
    let lens = fields.map(|f| (f.len() as u64).to_be_bytes());
    let mut pieces: [&[u8]; 13] = [&[]; 13];
    for (i, field) in fields.iter().enumerate() {
        pieces[2 * i] = &lens[i];
        pieces[2 * i + 1] = field;
    }
    pieces[12] = normal;
    then(&pieces)
}

fn sha256(pieces: &[&[u8]]) -> CacheKey {
    let mut hasher = digest::Context::new(&digest::SHA256);
    for piece in pieces {
        hasher.update(piece);
    }
    CacheKey(
        hasher
            .finish()
            .as_ref()
            .try_into()
            .expect("a SHA-256 digest is 32 bytes"),
    )
}

/// What the key hashes before the body, in order.
fn fields<'a>(parts: &KeyParts<'a>) -> [&'a [u8]; 6] {
    [
        b"tollgate-cache-v1".as_slice(),
        parts.endpoint.as_bytes(),
        parts.route.as_bytes(),
        parts.consumer.map_or(b"*route*".as_slice(), str::as_bytes),
        parts.model.as_bytes(),
        parts.form.tag(),
    ]
}

/// The body as the key sees it, by way of a `serde_json::Value`: how the key was made before
/// `llm::canonical_json`, kept as the oracle the tests hold that to.
#[cfg(test)]
pub(super) fn normalised_by_value(body: &[u8]) -> Option<Vec<u8>> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    let mut out = Vec::new();
    write_object(&mut out, doc.as_object()?, true);
    Some(out)
}

/// The key made as it was before `llm::canonical_json` and ring: the body by way of a
/// `serde_json::Value` (see [`normalised_by_value`]), hashed by sha2. The oracle of the tests.
#[cfg(test)]
pub(super) fn cache_key_by_value(parts: &KeyParts<'_>, body: &[u8]) -> Option<CacheKey> {
    use sha2::{Digest, Sha256};
    let normal = normalised_by_value(body)?;
    let mut hasher = Sha256::new();
    for field in fields(parts) {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field);
    }
    hasher.update(&normal);
    Some(CacheKey(hasher.finalize().into()))
}

fn write_object(out: &mut Vec<u8>, object: &serde_json::Map<String, Value>, top: bool) {
    let mut members: Vec<(&String, &Value)> = object
        .iter()
        .filter(|(name, _)| !(top && IGNORED.contains(&name.as_str())))
        .collect();
    members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b'{');
    for (i, (name, value)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, name).expect("a string serialises");
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(object) => write_object(out, object, false),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        other => serde_json::to_writer(&mut *out, other).expect("a JSON value serialises"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn parts(consumer: Option<&str>) -> KeyParts<'_> {
        KeyParts {
            endpoint: "chat",
            route: "team-a/chat",
            consumer,
            model: "gpt",
            form: Form::Whole,
        }
    }

    /// Both keys of a body: its SHA-256 and its key in this replica's store.
    fn keys(p: &KeyParts<'_>, body: &[u8]) -> Option<(CacheKey, LocalKey)> {
        let local = lookup_key(p, body, Sharing::Local).map(|l| l.local);
        cache_key(p, body).zip(local)
    }

    fn key(body: &Value) -> (CacheKey, LocalKey) {
        keys(&parts(Some("team-a/app")), body.to_string().as_bytes()).unwrap()
    }

    /// Neither key of `a` is `b`'s.
    #[track_caller]
    fn apart(a: Option<(CacheKey, LocalKey)>, b: (CacheKey, LocalKey), what: &str) {
        let a = a.expect("a key");
        assert_ne!(a.0, b.0, "SHA-256, {what}");
        assert_ne!(a.1, b.1, "local, {what}");
    }

    #[test]
    fn member_order_and_ignored_fields_do_not_change_the_key() {
        let a = br#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"temperature":0}"#;
        let b = br#"{ "temperature" : 0, "messages":[{"content":"hi","role":"user"}], "model":"other",
            "stream":false, "stream_options":{"include_usage":true}, "user":"u-1", "metadata":{"x":"y"}, "store":true }"#;
        let p = parts(Some("team-a/app"));
        assert_eq!(keys(&p, a), keys(&p, b));
        assert!(keys(&p, a).is_some());
        assert_eq!(
            normalised_by_value(a).unwrap(),
            br#"{"messages":[{"content":"hi","role":"user"}],"temperature":0}"#
        );
    }

    #[test]
    fn fields_that_change_the_answer_change_the_key() {
        let base = json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0});
        let k = key(&base);
        for changed in [
            json!({"messages": [{"role": "user", "content": "hi!"}], "temperature": 0}),
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 1}),
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "seed": 1}),
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 5}),
            json!({"messages": [{"role": "system", "content": "hi"}], "temperature": 0}),
            // A nested member named like an ignored top-level one still counts.
            json!({"messages": [{"role": "user", "content": "hi", "user": "x"}], "temperature": 0}),
        ] {
            apart(Some(key(&changed)), k, &changed.to_string());
        }
        let body = base.to_string();
        assert_eq!(keys(&parts(Some("team-a/app")), body.as_bytes()), Some(k));
        apart(
            keys(&parts(Some("team-a/other-app")), body.as_bytes()),
            k,
            "consumer",
        );
        apart(keys(&parts(None), body.as_bytes()), k, "route scope");
        for (field, value) in [
            ("endpoint", "embeddings"),
            ("route", "team-b/chat"),
            ("model", "gpt-2"),
        ] {
            let mut p = parts(Some("team-a/app"));
            match field {
                "endpoint" => p.endpoint = value,
                "route" => p.route = value,
                _ => p.model = value,
            }
            apart(keys(&p, body.as_bytes()), k, field);
        }
        for form in [Form::Stream, Form::StreamWithUsage] {
            let p = KeyParts {
                form,
                ..parts(Some("team-a/app"))
            };
            apart(keys(&p, body.as_bytes()), k, &format!("{form:?}"));
        }
        // Where a part ends counts: moving a byte from one part to the next is another key.
        let p = KeyParts {
            route: "team-a/cha",
            model: "tgpt",
            ..parts(Some("team-a/app"))
        };
        apart(keys(&p, body.as_bytes()), k, "part boundary");
    }

    #[test]
    fn each_sharing_makes_the_sha256_only_where_it_is_needed_and_the_same_one() {
        let body = br#"{"messages":[{"role":"user","content":"hi"}]}"#;
        let p = parts(Some("team-a/app"));
        let sha = cache_key(&p, body).unwrap();
        let local = lookup_key(&p, body, Sharing::Local).unwrap();
        assert_eq!(local.shared(), None);
        assert_eq!(
            local.for_store(),
            StoreKey {
                local: local.local,
                shared: None
            }
        );
        // Redis: the same local key, and the SHA-256 made from the kept bytes when asked.
        let on_miss = lookup_key(&p, body, Sharing::OnMiss).unwrap();
        assert_eq!(on_miss.local, local.local);
        assert_eq!(on_miss.shared(), Some(sha));
        assert_eq!(on_miss.for_store().shared, Some(sha));
        // Semantic mode: the local key is the SHA-256's head, as for entries the index finds.
        let now = lookup_key(&p, body, Sharing::Now).unwrap();
        assert_eq!(now.shared(), Some(sha));
        assert_eq!(now.local, LocalKey::of(&sha));
        assert_ne!(now.local, local.local);
        assert_eq!(
            lookup_key(&p, b"[1]", Sharing::OnMiss).map(|l| l.local),
            None
        );
    }

    /// `hashlib.sha256` of the length-prefixed (8 bytes, big-endian) parts and
    /// `{"a":{"x":true,"y":null},"b":[1,2.5,"é"]}`, computed in Python.
    const KNOWN_KEY: &str = "3ee6e62260eb9279ca907caa8c32a5c1dfeeca517d495b4171790f695e177694";

    /// The key of one body, as Python's hashlib makes it from the same bytes: keys stored before
    /// (in Redis, by other replicas) stay found.
    #[test]
    fn the_key_is_sha256_of_the_length_prefixed_parts_and_the_normalised_body() {
        let body = br#"{"model":"m","b":[1,2.5,"\u00e9"],"a":{"y":null,"x":true}}"#;
        assert_eq!(
            hex::encode(cache_key(&parts(Some("team-a/app")), body).unwrap().0),
            KNOWN_KEY
        );
        for p in [parts(Some("team-a/app")), parts(None)] {
            assert_eq!(cache_key(&p, body), cache_key_by_value(&p, body));
        }
    }

    /// Bytes this thread's key buffers hold.
    fn retained() -> usize {
        BUFFERS.with(|b| {
            let (canonical, normal) = &*b.borrow();
            normal.capacity() + canonical.retained_bytes()
        })
    }

    #[test]
    fn a_huge_body_does_not_leave_its_buffers_behind() {
        std::thread::spawn(|| {
            let small = br#"{"messages":[{"role":"user","content":"hi"}]}"#;
            cache_key(&parts(None), small).unwrap();
            assert!((1..=KEPT_BUFFER).contains(&retained()));
            // Left out at the top, so the normal form is small; its members were put in order
            // through the scratch buffer all the same.
            let huge = format!(
                r#"{{"metadata":{{"b":"{}","a":1}},"x":1}}"#,
                "y".repeat(200_000)
            );
            cache_key(&parts(None), huge.as_bytes()).unwrap();
            assert!(retained() <= KEPT_BUFFER, "{}", retained());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn bodies_that_are_not_objects_have_no_key() {
        for body in [&b"[]"[..], b"null", b"{", b"\"x\""] {
            assert_eq!(cache_key(&parts(None), body), None);
        }
    }

    /// Any JSON value (objects with up to four members, nesting up to three levels).
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Writes `value` with every object's members in an order given by `seed`.
    fn shuffled(value: &Value, seed: &mut u64, out: &mut String) {
        match value {
            Value::Object(m) => {
                let mut members: Vec<_> = m.iter().collect();
                // A small LCG: each object gets its own rotation and maybe a reversal.
                *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                if !members.is_empty() {
                    let by = (*seed >> 33) as usize % members.len();
                    members.rotate_left(by);
                }
                if *seed & 1 == 1 {
                    members.reverse();
                }
                out.push('{');
                for (i, (k, v)) in members.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(" , ");
                    }
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push(':');
                    shuffled(v, seed, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    shuffled(v, seed, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    proptest! {
        #[test]
        fn the_key_ignores_member_order_at_every_depth(
            members in prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..6),
            seed in any::<u64>(),
        ) {
            let doc = Value::Object(members.into_iter().collect());
            let mut text = String::new();
            let mut s = seed;
            shuffled(&doc, &mut s, &mut text);
            let p = parts(Some("team-a/app"));
            prop_assert_eq!(
                keys(&p, doc.to_string().as_bytes()),
                keys(&p, text.as_bytes())
            );
        }

        #[test]
        fn a_changed_kept_member_changes_the_key(
            members in prop::collection::btree_map("[a-z]{1,6}", json_value(), 1..6),
            pick in any::<prop::sample::Index>(),
            replacement in json_value(),
        ) {
            let mut doc = serde_json::Map::new();
            for (k, v) in members {
                doc.insert(format!("x{k}"), v);
            }
            let name = pick.get(&doc.keys().cloned().collect::<Vec<_>>()).clone();
            prop_assume!(doc[&name] != replacement);
            let before = Value::Object(doc.clone());
            doc.insert(name, replacement);
            let after = Value::Object(doc);
            let p = parts(None);
            let before = keys(&p, before.to_string().as_bytes()).unwrap();
            let after = keys(&p, after.to_string().as_bytes()).unwrap();
            prop_assert_ne!(before.0, after.0);
            prop_assert_ne!(before.1, after.1);
        }

        #[test]
        fn ignored_members_never_change_the_key(
            members in prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..4),
            ignored in prop::collection::vec((0..IGNORED.len(), json_value()), 0..4),
        ) {
            let mut doc: serde_json::Map<String, Value> = members
                .into_iter()
                .map(|(k, v)| (format!("x{k}"), v))
                .collect();
            let before = Value::Object(doc.clone());
            for (i, v) in ignored {
                doc.insert(IGNORED[i].to_string(), v);
            }
            let after = Value::Object(doc);
            let p = parts(None);
            prop_assert_eq!(
                keys(&p, before.to_string().as_bytes()),
                keys(&p, after.to_string().as_bytes())
            );
        }
    }
}
