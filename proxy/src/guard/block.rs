//! Sixteen bytes tested at once for a range of values: where the detectors' scan stops, the digits
//! and separators of a card run, a domain's labels, the quotes and backslashes of a JSON document.
//! One SSE2 comparison on x86-64 (its baseline), eight bytes at a time elsewhere.

/// The high bit of each byte of `x` that lies in `FIRST..=LAST`, every other bit clear (`LAST`
/// below 0x7f).
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
fn in_range<const FIRST: u8, const LAST: u8>(x: u64) -> u64 {
    const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    let low = x & LOW7;
    // Each byte's sum stays below 0x100, so no carry reaches the next byte; the high bit says
    // `byte >= FIRST`, and in the second `byte > LAST`.
    let from_first = low + ONES * u64::from(0x80 - FIRST);
    let past_last = low + ONES * u64::from(0x7f - LAST);
    from_first & !past_last & !x & HIGH
}

/// Bit `k` set for each byte `k` of `block` that lies in `FIRST..=LAST` (`LAST` below 0x7f). With
/// SSE2 (every x86-64 processor has it) one comparison for the sixteen bytes: a byte moved down by
/// `FIRST` lies in the range when it is below the range's length, which is a signed comparison once
/// both are moved by 0x80.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
pub(super) fn in_range16<const FIRST: u8, const LAST: u8>(block: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_add_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    // SAFETY: these intrinsics need SSE2, which the build enables (this function exists only when
    // it does: it is part of the x86-64 baseline). The one that reads memory reads sixteen bytes,
    // unaligned, from where `block` points: the sixteen bytes it borrows.
    unsafe {
        let x = _mm_loadu_si128(block.as_ptr().cast());
        let moved = _mm_add_epi8(x, _mm_set1_epi8(0x80u8.wrapping_sub(FIRST) as i8));
        let inside = _mm_cmplt_epi8(moved, _mm_set1_epi8((LAST - FIRST + 1) as i8 ^ i8::MIN));
        _mm_movemask_epi8(inside) as u32
    }
}

/// [`in_range16`] eight bytes at a time, each byte's high bit gathered into one bit.
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
fn in_range16_words<const FIRST: u8, const LAST: u8>(block: &[u8; 16]) -> u32 {
    let half = |h: &[u8]| {
        let high = in_range::<FIRST, LAST>(u64::from_le_bytes(h.try_into().expect("eight bytes")));
        // The high bits, one a byte, multiplied into the top byte in order.
        ((high >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
    };
    half(&block[..8]) | half(&block[8..]) << 8
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
pub(super) fn in_range16<const FIRST: u8, const LAST: u8>(block: &[u8; 16]) -> u32 {
    in_range16_words::<FIRST, LAST>(block)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{in_range16, in_range16_words};

    fn naive(block: &[u8; 16], first: u8, last: u8) -> u32 {
        (0..16).fold(0, |bits, k| {
            bits | u32::from((first..=last).contains(&block[k])) << k
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4_000, failure_persistence: None, ..ProptestConfig::default() })]

        /// The sixteen-byte range test, with SSE2 and eight bytes at a time, marks exactly the
        /// bytes in the range, whatever bytes surround it (edges of the ranges the scan uses,
        /// bytes above 0x7f).
        #[test]
        fn the_block_range_test_marks_exactly_the_bytes_in_range(
            bytes in prop::array::uniform16(prop_oneof![
                any::<u8>(),
                prop::sample::select(vec![b'(', b'\'', b'Z', b'[', b'_', b'`', b'-', b',', 0x7f, 0x80, 0xa8, 0xda, 0xdf, 0xff]),
            ]),
        ) {
            prop_assert_eq!(in_range16::<b'(', b'Z'>(&bytes), naive(&bytes, b'(', b'Z'));
            prop_assert_eq!(in_range16::<b'(', b'_'>(&bytes), naive(&bytes, b'(', b'_'));
            prop_assert_eq!(in_range16::<b'-', b'_'>(&bytes), naive(&bytes, b'-', b'_'));
            prop_assert_eq!(in_range16_words::<b'(', b'Z'>(&bytes), naive(&bytes, b'(', b'Z'));
            prop_assert_eq!(in_range16_words::<b'(', b'_'>(&bytes), naive(&bytes, b'(', b'_'));
            prop_assert_eq!(in_range16_words::<b'-', b'_'>(&bytes), naive(&bytes, b'-', b'_'));
        }
    }
}
