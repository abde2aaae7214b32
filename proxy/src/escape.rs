//! Which bytes a JSON string literal escapes, looked for eight bytes at a time: the access log asks it
//! of every string it writes, the guardrails of every masked text and token. And whether a body's
//! bytes are text at all ([`utf8`]).

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);

/// Each byte of `x` below `n` (at most 0x80) marked by its high bit (Bit Twiddling Hacks' `hasless`).
/// A byte is marked falsely only above a truly marked one (the borrow runs upward), so whether any
/// byte is marked, and which is the lowest, are exact.
pub const fn below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * n as u64) & !x & HIGH
}

/// The bytes of `x` equal to `c`, marked as [`below`] marks them.
pub const fn equal(x: u64, c: u8) -> u64 {
    below(x ^ (ONES * c as u64), 1)
}

/// `b` as a string if it is UTF-8. Bodies and their texts are most often ASCII, which one test of
/// their bytes tells for about half of what `from_utf8` costs (several times less for a streamed
/// piece of a few dozen bytes, where its setup dominates).
pub fn utf8(b: &[u8]) -> Option<&str> {
    if b.is_ascii() {
        // SAFETY: every ASCII byte sequence is UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(b) })
    } else {
        std::str::from_utf8(b).ok()
    }
}

/// Whether `b` holds a byte a JSON string literal escapes: `"`, `\` or a control character.
pub fn needs_escape(b: &[u8]) -> bool {
    let marked = |word: &[u8]| {
        let x = u64::from_ne_bytes(word.try_into().expect("eight bytes"));
        below(x, 0x20) | equal(x, b'"') | equal(x, b'\\') != 0
    };
    if b.len() < 8 {
        return b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
    }
    // The last eight bytes as one more word, overlapping the one before: what it marks lies in `b`
    // too, and no byte is read one at a time.
    b.chunks_exact(8).any(marked) || marked(&b[b.len() - 8..])
}
