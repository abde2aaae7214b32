//! Legacy-era MCP sessions (2025-06-18, 2025-11-25) without server state: the `Mcp-Session-Id` is
//! the session itself — the negotiated protocol version, who opened it and when — sealed with an
//! HMAC-SHA256 under a key every replica holds, so that any replica can continue a session another
//! began, with no shared store and no sticky routing. Nothing in it is secret; the seal only makes it
//! unforgeable and binds it to the consumer that opened it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// How long a session id is honoured after `initialize`.
pub const LIFETIME_SECS: u64 = 24 * 3600;
/// Layout version of a session id, so that a later layout can be told apart.
const LAYOUT: u8 = 1;
/// Bytes of the seal kept (128 bits).
const TAG: usize = 16;
/// Bytes of the sealed payload: layout, protocol version, issued-at, consumer tag.
const PAYLOAD: usize = 1 + 1 + 8 + 8;

/// What a session id says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// Index of the negotiated version in the caller's list of legacy versions.
    pub version: u8,
    /// Unix seconds of `initialize`.
    pub issued: u64,
    /// Who opened it: [`consumer_tag`] of the consumer.
    pub consumer: u64,
}

/// Why a presented session id is not honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a session id of ours at all.
    Malformed,
    /// The seal does not match: forged, or sealed under another key.
    Forged,
    /// Older than [`LIFETIME_SECS`].
    Expired,
}

/// The first 8 bytes of SHA-256 over a consumer's id, binding a session to it.
pub fn consumer_tag(consumer_id: &str) -> u64 {
    let digest = Sha256::digest(consumer_id.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The session id for `session`, sealed under `key`: visible ASCII, 46 characters.
pub fn seal(key: &[u8; 32], session: Session) -> String {
    let payload = payload(session);
    let tag = hmac(key, &payload);
    let mut raw = [0u8; PAYLOAD + TAG];
    raw[..PAYLOAD].copy_from_slice(&payload);
    raw[PAYLOAD..].copy_from_slice(&tag[..TAG]);
    URL_SAFE_NO_PAD.encode(raw)
}

/// The session `text` stands for, if it was sealed under `key` and has not expired at `now`.
pub fn open(key: &[u8; 32], text: &str, now: u64) -> Result<Session, Refused> {
    if text.len() != (PAYLOAD + TAG).div_ceil(3) * 4 - 2 {
        return Err(Refused::Malformed);
    }
    let raw = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| Refused::Malformed)?;
    if raw.len() != PAYLOAD + TAG || raw[0] != LAYOUT {
        return Err(Refused::Malformed);
    }
    let expected = hmac(key, &raw[..PAYLOAD]);
    // Constant time: how much of a guessed seal is right must not show in the timing.
    let differs = expected[..TAG]
        .iter()
        .zip(&raw[PAYLOAD..])
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if differs != 0 {
        return Err(Refused::Forged);
    }
    let session = Session {
        version: raw[1],
        issued: u64::from_be_bytes(raw[2..10].try_into().expect("8 bytes")),
        consumer: u64::from_be_bytes(raw[10..18].try_into().expect("8 bytes")),
    };
    if now.saturating_sub(session.issued) > LIFETIME_SECS || session.issued > now + 300 {
        return Err(Refused::Expired);
    }
    Ok(session)
}

fn payload(s: Session) -> [u8; PAYLOAD] {
    let mut p = [0u8; PAYLOAD];
    p[0] = LAYOUT;
    p[1] = s.version;
    p[2..10].copy_from_slice(&s.issued.to_be_bytes());
    p[10..18].copy_from_slice(&s.consumer.to_be_bytes());
    p
}

/// HMAC-SHA256 (RFC 2104) of `message` under a 32-byte key.
fn hmac(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut inner_pad = [0x36u8; 64];
    let mut outer_pad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        inner_pad[i] ^= k;
        outer_pad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(inner_pad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(outer_pad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// A session key from a shared secret of any length (the replicas' flag or Secret).
pub fn key_from_secret(secret: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"tollgate mcp session key\0")
        .chain_update(secret)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [7; 32];

    fn session() -> Session {
        Session {
            version: 1,
            issued: 1_800_000_000,
            consumer: consumer_tag("team-b/app"),
        }
    }

    #[test]
    fn hmac_matches_an_independent_implementation() {
        // The expected tag is Python's `hmac.new(b'\x0b' * 32, b'Hi There', hashlib.sha256)`.
        let tag = hmac(&[0x0b; 32], b"Hi There");
        assert_eq!(
            hex::encode(tag),
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
    }

    #[test]
    fn a_sealed_session_opens_on_any_replica_with_the_key() {
        let id = seal(&KEY, session());
        assert_eq!(id.len(), 46);
        assert!(id.bytes().all(|b| b.is_ascii_graphic()));
        assert_eq!(open(&KEY, &id, 1_800_000_100), Ok(session()));
        assert_eq!(open(&[8; 32], &id, 1_800_000_100), Err(Refused::Forged));
        assert_eq!(
            open(&KEY, &id, 1_800_000_000 + LIFETIME_SECS + 1),
            Err(Refused::Expired)
        );
        assert_eq!(open(&KEY, "abc", 0), Err(Refused::Malformed));
    }

    #[test]
    fn any_changed_character_breaks_the_seal() {
        let id = seal(&KEY, session());
        for i in 0..id.len() {
            let mut bytes = id.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).unwrap();
            assert!(open(&KEY, &changed, 1_800_000_100).is_err(), "{changed}");
        }
    }

    proptest! {
        #[test]
        fn any_text_is_refused_or_a_real_session(text in "\\PC{0,60}") {
            let _ = open(&KEY, &text, 1_800_000_000);
        }
    }
}
