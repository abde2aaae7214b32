//! A consumer row: a calling application and the digests of its usable keys.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::limits::{Budget, Limits};
use super::refs::ObjectRef;
use super::shared_str;

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
    /// Its `metadata.uid` (empty when the object has none): see `Subscription::uid`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Keys that resolved and had not expired at compile time.
    pub keys: Vec<ConsumerKey>,
    /// Limits over all of the consumer's subscriptions together.
    #[serde(default)]
    pub limits: Limits,
    /// Spend ceiling over all of the consumer's subscriptions together.
    #[serde(default)]
    pub budget: Budget,
    /// Guardrails that resolved, in `spec.guardrails` order, checked after the route's. Left out of the
    /// encoding when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<super::guardrail::Guardrail>,
}
