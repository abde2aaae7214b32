//! Server-sent events decoded incrementally: bytes split anywhere in, complete events out.
//!
//! Follows the WHATWG event-stream rules that providers use: lines end in `\n` or `\r\n`, a blank
//! line dispatches the event, `:` starts a comment, `data:` lines accumulate, one space after the
//! colon is dropped. A lone `\r` line ending is not used by any provider and is not recognised.

/// Longest line or event kept while waiting for its end; past it the event is dropped.
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// The lines of `bytes`, as `bytes.split(|&b| b == b'\n')` gives them (a trailing `\n` gives a last
/// empty line, no bytes one empty line), with each end found by `memchr`: an event has a few long
/// lines, and a byte-at-a-time split cost more than the rest of relaying it.
pub fn lines(bytes: &[u8]) -> Lines<'_> {
    Lines { rest: Some(bytes) }
}

/// The iterator of [`lines`].
pub struct Lines<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match memchr::memchr(b'\n', rest) {
            Some(end) => {
                self.rest = Some(&rest[end + 1..]);
                Some(&rest[..end])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// An incremental decoder.
#[derive(Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    event: Option<String>,
    data: String,
    has_data: bool,
    oversized: bool,
}

impl SseDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next bytes; pushes every event they complete.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        let mut rest = bytes;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            if self.line.len() + i <= MAX_EVENT_BYTES {
                self.line.extend_from_slice(&rest[..i]);
            } else {
                self.oversized = true;
            }
            rest = &rest[i + 1..];
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line_done(&line, out);
            line.clear();
            self.line = line;
        }
        if self.line.len() + rest.len() <= MAX_EVENT_BYTES {
            self.line.extend_from_slice(rest);
        } else {
            self.oversized = true;
            self.line.clear();
        }
    }

    /// The stream ended: an event still open (no blank line after it) is dispatched.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.line.is_empty() {
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line_done(&line, out);
        }
        self.line_done(b"", out);
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data && !self.oversized {
                out.push(SseEvent {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.event = None;
            self.data.clear();
            self.has_data = false;
            self.oversized = false;
            return;
        }
        if line[0] == b':' || self.oversized {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() > MAX_EVENT_BYTES {
                    self.oversized = true;
                    return;
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn lines_are_the_split_at_each_newline(
            bytes in proptest::collection::vec(proptest::prop_oneof![
                proptest::strategy::Just(b'\n'),
                proptest::strategy::Just(b'\r'),
                proptest::strategy::Just(b'a'),
                proptest::prelude::any::<u8>(),
            ], 0..64),
        ) {
            let split: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
            proptest::prop_assert_eq!(lines(&bytes).collect::<Vec<_>>(), split);
        }
    }

    fn decode_in_two(text: &[u8], cut: usize) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        d.feed(&text[..cut], &mut out);
        d.feed(&text[cut..], &mut out);
        d.finish(&mut out);
        out
    }

    #[test]
    fn decodes_events_split_anywhere() {
        let text = b"event: message_start\ndata: {\"a\":1}\n\n: comment\r\ndata:x\r\ndata: y\r\n\r\ndata: tail";
        let want = vec![
            SseEvent {
                event: Some("message_start".into()),
                data: "{\"a\":1}".into(),
            },
            SseEvent {
                event: None,
                data: "x\ny".into(),
            },
            SseEvent {
                event: None,
                data: "tail".into(),
            },
        ];
        for cut in 0..=text.len() {
            assert_eq!(decode_in_two(text, cut), want, "cut at {cut}");
        }
    }

    #[test]
    fn events_without_data_are_not_dispatched() {
        assert!(decode_in_two(b"event: ping\n\n\n\n", 3).is_empty());
    }
}
