//! Sealed cookies: bytes encrypted and authenticated with ChaCha20-Poly1305 under a key only the
//! controller holds. A session cookie carries the person's Kubernetes token, so it must be secret as
//! well as unforgeable: a signature alone (as the proxy's MCP session ids have) would not do.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{
    aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};
use sha2::{Digest, Sha256};

/// Layout version, first byte of every sealed value, so a later layout can be told apart.
const LAYOUT: u8 = 1;
/// Bound to every seal, so a value sealed for another purpose under the same key does not open here.
const CONTEXT: &[u8] = b"tollgate-portal-session-v1";
/// Largest sealed text accepted (browsers keep about 4 KiB per cookie anyway).
pub const MAX_SEALED_CHARS: usize = 4096;

/// Why a sealed value does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not one of our sealed values at all.
    Malformed,
    /// The tag does not match: forged, altered, or sealed under another key.
    Forged,
}

/// Seals and opens values under one key.
pub struct Sealer {
    key: LessSafeKey,
    random: SystemRandom,
}

impl Sealer {
    /// A sealer whose key is derived from `secret` (SHA-256 of it, so any length of 32 bytes or
    /// more serves; shorter secrets are refused by the caller).
    pub fn from_secret(secret: &[u8]) -> Self {
        let key: [u8; 32] = Sha256::digest(secret).into();
        Self::from_key(&key)
    }

    /// A sealer with a fresh random key.
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .expect("the system's random source");
        Self::from_key(&key)
    }

    fn from_key(key: &[u8; 32]) -> Self {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key");
        Self {
            key: LessSafeKey::new(unbound),
            random: SystemRandom::new(),
        }
    }

    /// Random bytes from the system's source (for CSRF secrets).
    pub fn random_bytes<const N: usize>(&self) -> [u8; N] {
        let mut out = [0u8; N];
        self.random
            .fill(&mut out)
            .expect("the system's random source");
        out
    }

    /// `plain` sealed as URL-safe text: layout, random nonce, ciphertext and tag.
    pub fn seal(&self, plain: &[u8]) -> String {
        let nonce: [u8; NONCE_LEN] = self.random_bytes();
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(CONTEXT),
                &mut buf,
            )
            .expect("sealing cannot fail for in-memory sizes");
        let mut raw = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        raw.push(LAYOUT);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&buf);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The bytes `text` was sealed from, if it was sealed under this key.
    pub fn open(&self, text: &str) -> Result<Vec<u8>, Refused> {
        if text.len() > MAX_SEALED_CHARS {
            return Err(Refused::Malformed);
        }
        let mut raw = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| Refused::Malformed)?;
        let tag_len = CHACHA20_POLY1305.tag_len();
        if raw.len() < 1 + NONCE_LEN + tag_len || raw[0] != LAYOUT {
            return Err(Refused::Malformed);
        }
        let nonce: [u8; NONCE_LEN] = raw[1..1 + NONCE_LEN].try_into().expect("nonce length");
        let sealed = &mut raw[1 + NONCE_LEN..];
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(CONTEXT),
                sealed,
            )
            .map_err(|_| Refused::Forged)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_sealed_value_opens_under_its_key_only() {
        let a = Sealer::from_secret(b"0123456789abcdef0123456789abcdef");
        let b = Sealer::from_secret(b"another secret of 32 bytes or so!");
        let text = a.seal(b"hello token");
        assert!(!text.contains("hello"), "the plaintext is not readable");
        assert_eq!(a.open(&text).unwrap(), b"hello token");
        assert_eq!(b.open(&text), Err(Refused::Forged));
        // Two seals of the same bytes differ (random nonce).
        assert_ne!(a.seal(b"x"), a.seal(b"x"));
    }

    #[test]
    fn any_altered_byte_is_refused() {
        let a = Sealer::random();
        let text = a.seal(b"the session");
        let raw = URL_SAFE_NO_PAD.decode(&text).unwrap();
        for i in 1..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 1;
            assert_eq!(a.open(&URL_SAFE_NO_PAD.encode(&bad)), Err(Refused::Forged));
        }
        let mut other_layout = raw.clone();
        other_layout[0] = 2;
        assert_eq!(
            a.open(&URL_SAFE_NO_PAD.encode(&other_layout)),
            Err(Refused::Malformed)
        );
        assert_eq!(a.open("not base64!"), Err(Refused::Malformed));
        assert_eq!(a.open(""), Err(Refused::Malformed));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_opens_and_never_panics(text in ".{0,300}") {
            let a = Sealer::from_secret(b"0123456789abcdef0123456789abcdef");
            prop_assert!(a.open(&text).is_err());
        }

        #[test]
        fn whatever_is_sealed_opens_unchanged(plain in proptest::collection::vec(any::<u8>(), 0..512)) {
            let a = Sealer::random();
            prop_assert_eq!(a.open(&a.seal(&plain)).unwrap(), plain);
        }
    }
}
