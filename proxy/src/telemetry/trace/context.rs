//! W3C Trace Context: the `traceparent` header read from callers and written upstream
//! (<https://www.w3.org/TR/trace-context/>, version 00; later versions read by their first four fields).

/// The `traceparent` header's name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header's name.
pub const TRACESTATE: &str = "tracestate";
/// Longest `tracestate` passed on: the specification asks for at least 512 characters to be kept.
pub const TRACESTATE_MAX: usize = 512;

/// A parsed `traceparent`: the caller's trace, its span (our parent) and its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id, never all zeros.
    pub trace_id: [u8; 16],
    /// The caller's span id, never all zeros.
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

impl TraceParent {
    /// Whether the caller sampled its span.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// Reads a `traceparent` value. `None` for anything the specification says to ignore: a wrong
    /// length or separator, upper-case or non-hex digits, version `ff`, all-zero ids, or a version-00
    /// header with anything after the flags.
    pub fn parse(value: &[u8]) -> Option<Self> {
        // version "-" trace-id "-" parent-id "-" trace-flags
        if value.len() < 55 {
            return None;
        }
        let version = hex_byte(&value[0..2])?;
        if version == 0xff || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        // Version 00 is exactly 55 characters; a later version may add fields after another '-'.
        if (version == 0 && value.len() != 55) || (value.len() > 55 && value[55] != b'-') {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, byte) in trace_id.iter_mut().enumerate() {
            *byte = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0u8; 8];
        for (i, byte) in span_id.iter_mut().enumerate() {
            *byte = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&value[53..55])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The header value, version 00, as 55 ASCII characters.
    pub fn format(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[0] = b'0';
        out[1] = b'0';
        write_hex(&mut out[3..35], &self.trace_id);
        write_hex(&mut out[36..52], &self.span_id);
        write_hex(&mut out[53..55], &[self.flags & 1]);
        out
    }
}

/// Whether a caller's `tracestate` may be passed on: visible ASCII, spaces and tabs only, not empty,
/// at most [`TRACESTATE_MAX`] bytes (longer ones are dropped whole rather than cut mid-member).
pub fn tracestate_ok(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= TRACESTATE_MAX
        && value
            .iter()
            .all(|&b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
}

/// The two lower-case hex digits of every byte, so that a byte is written with one look-up.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        pairs[b] = [HEX[b >> 4], HEX[b & 0xf]];
        b += 1;
    }
    pairs
};

/// Lower-case hex of `bytes` into `out` (twice as long).
pub fn write_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
    }
}

/// Two lower-case hex digits (the specification forbids upper case).
fn hex_byte(two: &[u8]) -> Option<u8> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    Some(digit(two[0])? << 4 | digit(two[1])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_the_specifications_example() {
        let tp = TraceParent::parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(tp.trace_id[0], 0x4b);
        assert_eq!(tp.trace_id[15], 0x36);
        assert_eq!(tp.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert!(tp.sampled());
        assert_eq!(&tp.format()[..], EXAMPLE.as_bytes());
    }

    #[test]
    fn refuses_what_the_specification_says_to_ignore() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            // upper case
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // all-zero trace id, all-zero span id
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // version ff
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // version 00 with more after the flags
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            // wrong separators
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-whatever";
        let tp = TraceParent::parse(later.as_bytes()).unwrap();
        assert_eq!(tp.flags, 3);
        // Written back as version 00 with only the sampled bit.
        assert!(tp.format().ends_with(b"-01"));
    }

    #[test]
    fn tracestate_is_passed_on_only_when_sane() {
        assert!(tracestate_ok(b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"));
        assert!(!tracestate_ok(b""));
        assert!(!tracestate_ok("caf\u{e9}=1".as_bytes()));
        assert!(!tracestate_ok(&[b'a'; TRACESTATE_MAX + 1]));
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = TraceParent::parse(&bytes);
            let _ = tracestate_ok(&bytes);
        }

        #[test]
        fn what_is_written_reads_back(trace in any::<[u8; 16]>(), span in any::<[u8; 8]>(), sampled in any::<bool>()) {
            prop_assume!(trace != [0; 16] && span != [0; 8]);
            let tp = TraceParent { trace_id: trace, span_id: span, flags: u8::from(sampled) };
            prop_assert_eq!(TraceParent::parse(&tp.format()), Some(tp));
        }

        #[test]
        fn near_misses_of_a_valid_header_are_refused_or_read_consistently(pos in 0usize..55, byte in any::<u8>()) {
            let mut v = EXAMPLE.as_bytes().to_vec();
            v[pos] = byte;
            if let Some(tp) = TraceParent::parse(&v) {
                // Whatever was accepted is what the bytes say.
                let again = tp.format();
                prop_assert_eq!(&again[3..52], &v[3..52]);
            }
        }
    }
}
