//! The controller ⇄ proxy protocol: snapshot stream frames one way, usage reports the other.
//!
//! `GET` [`SNAPSHOTS_PATH`] answers with a stream of frames: a 4-byte big-endian payload length, then
//! that many bytes of [`Snapshot::encode`]. A zero length is a heartbeat, so a proxy can tell a quiet
//! controller from a dead connection. `POST` [`USAGE_PATH`] takes a [`UsageReport`] as JSON.
//!
//! Data and pure functions only: both sides bring their own HTTP stack and runtime.

use serde::{Deserialize, Serialize};

use crate::model::{DecodeError, Snapshot};

/// Where a proxy follows the snapshot stream (`GET`).
pub const SNAPSHOTS_PATH: &str = "/v1/snapshots";
/// Where a proxy sends usage reports (`POST`).
pub const USAGE_PATH: &str = "/v1/usage";

/// Bytes of the length that starts every frame.
pub const FRAME_HEADER_LEN: usize = 4;
/// Largest frame payload a reader accepts; a larger length means a broken stream, not a big table.
pub const MAX_FRAME_LEN: usize = 512 << 20;
/// A heartbeat: a frame with an empty payload.
pub const HEARTBEAT: [u8; FRAME_HEADER_LEN] = [0; FRAME_HEADER_LEN];

/// Why bytes read from the controller could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A frame header announced more than [`MAX_FRAME_LEN`] bytes.
    #[error("a frame of {len} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    FrameTooLarge {
        /// The announced payload length.
        len: usize,
    },
}

/// A snapshot as one frame: its length, then its encoding.
pub fn encode_frame(snapshot: &Snapshot) -> Vec<u8> {
    let body = snapshot.encode();
    let mut framed = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    framed
}

/// The payload length announced by the frame starting `buffered`, once its header has arrived.
///
/// The payload itself may still be on its way: the frame is complete when `buffered` holds
/// [`FRAME_HEADER_LEN`] plus this many bytes.
pub fn frame_len(buffered: &[u8]) -> Result<Option<usize>, WireError> {
    let Some(header) = buffered.first_chunk::<FRAME_HEADER_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(WireError::FrameTooLarge { len });
    }
    Ok(Some(len))
}

/// Reads a frame's payload (the bytes after its header): a snapshot, or `None` for a heartbeat.
pub fn decode_payload(payload: &[u8]) -> Result<Option<Snapshot>, DecodeError> {
    if payload.is_empty() {
        return Ok(None);
    }
    Snapshot::decode(payload).map(Some)
}

/// The body of `POST /v1/usage`: what one proxy counted since its previous accepted report.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    /// The reporting proxy process, so the leader can count live proxies (for local shares of limits).
    /// Optional so reports from proxies that predate replica counting are still read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Counts since the proxy's previous accepted report, one entry per subscription.
    pub deltas: Vec<UsageDelta>,
}

/// Traffic of one subscription since the last report.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsageDelta {
    /// Namespace of the `ApiSubscription`.
    pub namespace: String,
    /// Name of the `ApiSubscription`.
    pub name: String,
    /// Calls answered.
    pub requests: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost in US dollars.
    pub cost_usd: f64,
}

impl UsageReport {
    /// The JSON body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a usage report always serialises")
    }

    /// Parses a JSON body.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Content;

    fn snapshot() -> Snapshot {
        Snapshot::from_content(
            7,
            Content {
                proxy_replicas: 2,
                ..Content::default()
            },
        )
    }

    /// Splits one frame off the front of `buffered`, as a stream reader does.
    fn split(buffered: &[u8]) -> Option<(&[u8], &[u8])> {
        let len = frame_len(buffered).unwrap()?;
        let rest = &buffered[FRAME_HEADER_LEN..];
        (rest.len() >= len).then(|| rest.split_at(len))
    }

    #[test]
    fn a_frame_is_the_length_then_the_encoding() {
        let original = snapshot();
        let framed = encode_frame(&original);
        assert_eq!(
            frame_len(&framed).unwrap(),
            Some(framed.len() - FRAME_HEADER_LEN)
        );
        assert_eq!(&framed[FRAME_HEADER_LEN..], &original.encode()[..]);
        let (payload, rest) = split(&framed).unwrap();
        assert!(rest.is_empty());
        let back = decode_payload(payload)
            .unwrap()
            .expect("a snapshot frame, not a heartbeat");
        assert_eq!(back.version, original.version);
        assert_eq!(back.hash, original.hash);
        assert_eq!(back.content, original.content);
    }

    #[test]
    fn frames_and_heartbeats_split_from_one_stream() {
        let mut stream = encode_frame(&snapshot());
        stream.extend_from_slice(&HEARTBEAT);
        stream.extend_from_slice(&encode_frame(&Snapshot::empty(8)));

        let (first, rest) = split(&stream).unwrap();
        assert!(matches!(decode_payload(first), Ok(Some(s)) if s.version == 7));
        let (beat, rest) = split(rest).unwrap();
        assert!(matches!(decode_payload(beat), Ok(None)));
        let (last, rest) = split(rest).unwrap();
        assert!(matches!(decode_payload(last), Ok(Some(s)) if s.version == 8));
        assert!(rest.is_empty());
    }

    #[test]
    fn a_partial_header_waits_and_an_oversized_frame_is_refused() {
        assert_eq!(frame_len(&[0, 0, 1]).unwrap(), None);
        assert_eq!(frame_len(&[0, 0, 0, 9, 1]).unwrap(), Some(9));
        let err = frame_len(&u32::MAX.to_be_bytes()).unwrap_err();
        assert!(matches!(err, WireError::FrameTooLarge { len } if len == u32::MAX as usize));
    }

    #[test]
    fn a_corrupt_payload_is_a_decode_error() {
        assert!(decode_payload(b"{").is_err());
    }

    #[test]
    fn a_report_as_the_proxy_sends_it_is_what_the_controller_reads() {
        let sent = UsageReport {
            proxy: Some("proxy-7f-1".into()),
            deltas: vec![UsageDelta {
                namespace: "team".into(),
                name: "sub".into(),
                requests: 2,
                input_tokens: 15,
                output_tokens: 24,
                cost_usd: 0.5,
            }],
        };
        let body = sent.encode();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"proxy":"proxy-7f-1","deltas":[{"namespace":"team","name":"sub","requests":2,"inputTokens":15,"outputTokens":24,"costUsd":0.5}]}"#
        );
        assert_eq!(UsageReport::decode(&body).unwrap(), sent);
    }

    #[test]
    fn a_report_without_a_proxy_name_is_still_read_and_written_alike() {
        let text = r#"{"deltas":[{"namespace":"t","name":"s","requests":1,"inputTokens":2,"outputTokens":3,"costUsd":0.25}]}"#;
        let report = UsageReport::decode(text.as_bytes()).unwrap();
        assert_eq!(report.proxy, None);
        assert_eq!(report.deltas[0].output_tokens, 3);
        assert_eq!(report.encode(), text.as_bytes());
        let report = UsageReport::decode(br#"{"proxy":"p-1","deltas":[]}"#).unwrap();
        assert_eq!(report.proxy.as_deref(), Some("p-1"));
    }
}
