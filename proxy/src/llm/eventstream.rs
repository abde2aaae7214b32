//! AWS's binary event-stream framing (`application/vnd.amazon.eventstream`), decoded incrementally.
//!
//! Each message: total length (u32 BE), headers length (u32 BE), CRC-32 of those 8 bytes, the headers,
//! the payload, and a CRC-32 of everything before it. Each header: name length (u8), name, value type
//! (u8), value. Both checksums are verified; a bad frame ends the stream, since nothing after it can
//! be trusted to start on a frame boundary.

/// Largest message accepted (AWS documents 16 MiB as the limit).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Prelude (12 bytes) plus the message CRC (4 bytes).
const OVERHEAD: usize = 16;

/// A header value, by its wire type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue {
    /// Types 0 and 1.
    Bool(bool),
    /// Type 2.
    Byte(i8),
    /// Type 3.
    Short(i16),
    /// Type 4.
    Int(i32),
    /// Type 5.
    Long(i64),
    /// Type 6.
    Bytes(Vec<u8>),
    /// Type 7.
    String(String),
    /// Type 8: milliseconds since the epoch.
    Timestamp(i64),
    /// Type 9.
    Uuid([u8; 16]),
}

/// One decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Headers in wire order.
    pub headers: Vec<(String, HeaderValue)>,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

impl Message {
    /// A string header's value.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(n, v)| match v {
            HeaderValue::String(s) if n == name => Some(s.as_str()),
            _ => None,
        })
    }
}

/// Why the stream cannot be decoded further.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The prelude checksum does not match.
    #[error("event-stream prelude checksum mismatch")]
    PreludeCrc,
    /// The message checksum does not match.
    #[error("event-stream message checksum mismatch")]
    MessageCrc,
    /// Lengths that cannot describe a message.
    #[error("event-stream message length out of range")]
    Length,
    /// Headers that do not parse.
    #[error("event-stream headers malformed")]
    Headers,
}

/// An incremental decoder.
#[derive(Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    broken: bool,
}

impl FrameDecoder {
    #[cfg(test)]
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next bytes; pushes every message they complete, or the error that stops decoding.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Result<Message, FrameError>>) {
        if self.broken {
            return;
        }
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            let rest = &self.buf[start..];
            if rest.len() < 12 {
                break;
            }
            let total = u32::from_be_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
            let headers_len = u32::from_be_bytes(rest[4..8].try_into().expect("4 bytes")) as usize;
            let prelude_crc = u32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
            if crc32(&rest[0..8]) != prelude_crc {
                self.fail(FrameError::PreludeCrc, out);
                return;
            }
            if !(OVERHEAD..=MAX_MESSAGE).contains(&total) || headers_len > total - OVERHEAD {
                self.fail(FrameError::Length, out);
                return;
            }
            if rest.len() < total {
                break;
            }
            let frame = &rest[..total];
            let message_crc = u32::from_be_bytes(frame[total - 4..].try_into().expect("4 bytes"));
            if crc32(&frame[..total - 4]) != message_crc {
                self.fail(FrameError::MessageCrc, out);
                return;
            }
            let headers = match parse_headers(&frame[12..12 + headers_len]) {
                Some(h) => h,
                None => {
                    self.fail(FrameError::Headers, out);
                    return;
                }
            };
            out.push(Ok(Message {
                headers,
                payload: frame[12 + headers_len..total - 4].to_vec(),
            }));
            start += total;
        }
        self.buf.drain(..start);
    }

    #[cfg(test)]
    /// Bytes left over at the end of the stream (a truncated message), if any.
    pub fn leftover(&self) -> usize {
        self.buf.len()
    }

    fn fail(&mut self, e: FrameError, out: &mut Vec<Result<Message, FrameError>>) {
        self.broken = true;
        self.buf = Vec::new();
        out.push(Err(e));
    }
}

fn parse_headers(mut b: &[u8]) -> Option<Vec<(String, HeaderValue)>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Some(head)
    }
    let mut headers = Vec::new();
    while !b.is_empty() {
        let name_len = take(&mut b, 1)?[0] as usize;
        let name = String::from_utf8(take(&mut b, name_len)?.to_vec()).ok()?;
        let kind = take(&mut b, 1)?[0];
        let value = match kind {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(take(&mut b, 1)?[0] as i8),
            3 => HeaderValue::Short(i16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?)),
            4 => HeaderValue::Int(i32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?)),
            5 => HeaderValue::Long(i64::from_be_bytes(take(&mut b, 8)?.try_into().ok()?)),
            6 | 7 => {
                let len = u16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?) as usize;
                let raw = take(&mut b, len)?;
                if kind == 6 {
                    HeaderValue::Bytes(raw.to_vec())
                } else {
                    HeaderValue::String(String::from_utf8(raw.to_vec()).ok()?)
                }
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(take(&mut b, 8)?.try_into().ok()?)),
            9 => HeaderValue::Uuid(take(&mut b, 16)?.try_into().ok()?),
            _ => return None,
        };
        headers.push((name, value));
    }
    Some(headers)
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE 802.3, the one gzip uses).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Encodes a message with string headers (tests and fuzzing build streams with it).
#[cfg(test)]
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = (OVERHEAD + h.len() + payload.len()) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn decodes_a_known_frame() {
        // A payload-only message `{"foo": "bar"}`: total 30 bytes, prelude CRC 0xbaf2f68a (these bytes
        // are the worked example of the format's public descriptions).
        let frame: [u8; 30] = [
            0, 0, 0, 30, 0, 0, 0, 0, 186, 242, 246, 138, 123, 34, 102, 111, 111, 34, 58, 32, 34,
            98, 97, 114, 34, 125, 174, 114, 88, 228,
        ];
        let mut d = FrameDecoder::new();
        let mut out = Vec::new();
        d.feed(&frame, &mut out);
        assert_eq!(
            out,
            vec![Ok(Message {
                headers: vec![],
                payload: br#"{"foo": "bar"}"#.to_vec()
            })]
        );
        assert_eq!(encode(&[], br#"{"foo": "bar"}"#), frame);
    }

    #[test]
    fn decodes_across_any_split_and_rejects_corruption() {
        let mut stream = encode(
            &[(":event-type", "messageStart"), (":message-type", "event")],
            br#"{"role":"assistant"}"#,
        );
        stream.extend(encode(&[(":event-type", "messageStop")], b"{}"));
        for cut in 0..=stream.len() {
            let mut d = FrameDecoder::new();
            let mut out = Vec::new();
            d.feed(&stream[..cut], &mut out);
            d.feed(&stream[cut..], &mut out);
            assert_eq!(out.len(), 2, "cut at {cut}");
            let first = out[0].as_ref().unwrap();
            assert_eq!(first.header_str(":event-type"), Some("messageStart"));
            assert_eq!(d.leftover(), 0);
        }
        let mut bad = stream.clone();
        bad[20] ^= 1;
        let mut out = Vec::new();
        FrameDecoder::new().feed(&bad, &mut out);
        assert_eq!(out, vec![Err(FrameError::MessageCrc)]);
        let mut bad = stream;
        bad[2] ^= 1;
        let mut out = Vec::new();
        FrameDecoder::new().feed(&bad, &mut out);
        assert_eq!(out, vec![Err(FrameError::PreludeCrc)]);
    }
}
