//! Reads a shared string straight from the decoder's text: serde's own `Arc<str>` goes through a
//! `Box<str>` first, two allocations and a copy for each of a snapshot's many names.

use std::sync::Arc;

use serde::Deserializer;

/// Decodes a string field as `Arc<str>` in one allocation.
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
