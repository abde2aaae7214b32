//! A stored answer, and its form in Redis.

use bytes::Bytes;

/// An answer as the caller received it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The answer's HTTP status (2xx).
    pub status: u16,
    /// Server-sent events rather than one JSON body.
    pub stream: bool,
    /// When it was stored (Unix ms).
    pub stored_ms: i64,
    /// When it stops being served (Unix ms).
    pub expires_ms: i64,
    /// Prompt tokens the answer cost (what each hit saves).
    pub tokens_in: u64,
    /// Completion tokens the answer cost.
    pub tokens_out: u64,
    /// What the call that made the answer cost, in USD, at the prices of the backend that answered
    /// it (what each hit saves).
    pub cost_usd: f64,
    /// The body the caller received.
    pub body: Bytes,
}

// Version 2 added the completion tokens and the cost; a version 1 entry (written by an older
// replica) reads as a miss and is replaced by the next answer.
const MAGIC: &[u8; 4] = b"TGC2";
const HEAD: usize = 4 + 2 + 1 + 8 + 8 + 8 + 8 + 8;

impl Entry {
    /// Bytes it takes in a store: the body's allocation as the allocator sizes it, and an allowance
    /// for the rest — the `Arc<Entry>` (~96 bytes), the store's map slot and its place in the
    /// use order (~150 with the maps' spare room), the body's shared header once a hit clones it.
    /// Measured by `bench/cache.sh`'s RSS run: the store's count and the process's growth agree.
    pub fn weight(&self) -> usize {
        allocation(self.body.len()) + 320
    }

    /// The form kept in Redis.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.status.to_be_bytes());
        out.push(u8::from(self.stream));
        out.extend_from_slice(&self.stored_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        out.extend_from_slice(&self.tokens_in.to_be_bytes());
        out.extend_from_slice(&self.tokens_out.to_be_bytes());
        out.extend_from_slice(&self.cost_usd.to_bits().to_be_bytes());
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
            tokens_in: u(23),
            tokens_out: u(31),
            // A cost is finite and not negative; anything else was not written by `encode`.
            cost_usd: Some(f64::from_bits(u(39))).filter(|c| c.is_finite() && *c >= 0.0)?,
            body: Bytes::copy_from_slice(&bytes[HEAD..]),
        })
    }
}

/// The size jemalloc gives an allocation of `n` bytes: size classes are four to each doubling
/// (2,048, 2,560, 3,072, 3,584, 4,096, …), 16 bytes at the least.
fn allocation(n: usize) -> usize {
    if n <= 16 {
        return 16;
    }
    let bits = usize::BITS - (n - 1).leading_zeros();
    let step = 1usize << bits.saturating_sub(3).max(4);
    n.div_ceil(step) * step
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn allocations_are_rounded_up_to_jemallocs_size_classes() {
        let classes = [
            (1, 16),
            (17, 32),
            (100, 112),
            (2048, 2048),
            (2049, 2560),
            (2100, 2560),
            (3585, 4096),
            (4097, 5120),
            (100_000, 114_688),
        ];
        for (n, want) in classes {
            assert_eq!(allocation(n), want, "{n} bytes");
        }
    }

    proptest! {
        #[test]
        fn entries_round_trip(
            status in 200u16..300,
            stream in any::<bool>(),
            stored_ms in any::<i64>(),
            expires_ms in any::<i64>(),
            tokens_in in any::<u64>(),
            tokens_out in any::<u64>(),
            cost_usd in 0.0f64..1e6,
            body in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            let e = Entry {
                status, stream, stored_ms, expires_ms, tokens_in, tokens_out, cost_usd,
                body: Bytes::from(body),
            };
            prop_assert_eq!(Entry::decode(&e.encode()), Some(e));
        }

        #[test]
        fn any_bytes_decode_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Entry::decode(&bytes);
            let mut tagged = MAGIC.to_vec();
            tagged.extend_from_slice(&bytes);
            if let Some(e) = Entry::decode(&tagged) {
                prop_assert!((200..300).contains(&e.status));
                prop_assert!(e.cost_usd.is_finite() && e.cost_usd >= 0.0);
            }
        }
    }

    #[test]
    fn entries_of_the_first_version_are_not_read() {
        let e = Entry {
            status: 200,
            stream: false,
            stored_ms: 1,
            expires_ms: 2,
            tokens_in: 3,
            tokens_out: 4,
            cost_usd: 0.5,
            body: Bytes::from_static(b"{}"),
        };
        let mut old = e.encode();
        old[..4].copy_from_slice(b"TGC1");
        assert_eq!(Entry::decode(&old), None);
    }
}
