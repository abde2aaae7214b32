//! A stored answer, and its form in Redis.

use bytes::Bytes;

/// An answer as the caller received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The answer's HTTP status (2xx).
    pub status: u16,
    /// Server-sent events rather than one JSON body.
    pub stream: bool,
    /// When it was stored (Unix ms).
    pub stored_ms: i64,
    /// When it stops being served (Unix ms).
    pub expires_ms: i64,
    /// Provider tokens the answer cost (what each hit saves).
    pub tokens: u64,
    /// The body the caller received.
    pub body: Bytes,
}

const MAGIC: &[u8; 4] = b"TGC1";
const HEAD: usize = 4 + 2 + 1 + 8 + 8 + 8;

impl Entry {
    /// Bytes it takes in a store: the body and a fixed allowance for the rest.
    pub fn weight(&self) -> usize {
        self.body.len() + 160
    }

    /// The form kept in Redis.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.status.to_be_bytes());
        out.push(u8::from(self.stream));
        out.extend_from_slice(&self.stored_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        out.extend_from_slice(&self.tokens.to_be_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// Reads what [`Entry::encode`] wrote; anything else (another version, a foreign value) is `None`.
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        if bytes.len() < HEAD || &bytes[..4] != MAGIC {
            return None;
        }
        let u = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let status = u16::from_be_bytes([bytes[4], bytes[5]]);
        if !(200..300).contains(&status) || bytes[6] > 1 {
            return None;
        }
        Some(Entry {
            status,
            stream: bytes[6] == 1,
            stored_ms: u(7) as i64,
            expires_ms: u(15) as i64,
            tokens: u(23),
            body: Bytes::copy_from_slice(&bytes[HEAD..]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn entries_round_trip(
            status in 200u16..300,
            stream in any::<bool>(),
            stored_ms in any::<i64>(),
            expires_ms in any::<i64>(),
            tokens in any::<u64>(),
            body in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            let e = Entry { status, stream, stored_ms, expires_ms, tokens, body: Bytes::from(body) };
            prop_assert_eq!(Entry::decode(&e.encode()), Some(e));
        }

        #[test]
        fn any_bytes_decode_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Entry::decode(&bytes);
            let mut tagged = MAGIC.to_vec();
            tagged.extend_from_slice(&bytes);
            if let Some(e) = Entry::decode(&tagged) {
                prop_assert!((200..300).contains(&e.status));
            }
        }
    }
}
