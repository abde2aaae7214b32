//! Reading a request body whole, within a size limit and without waiting forever for it.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::header::{self, HeaderMap};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::error::ApiError;

/// Reads the request body, refusing more than `limit` bytes with 413, and a body that stops for
/// `pause` between two of its pieces (or before its first) with 408: a client that promises a body
/// and never sends it would otherwise hold its connection and call for ever.
pub(super) async fn read_body(
    body: Incoming,
    headers: &HeaderMap,
    limit: usize,
    pause: Duration,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::body_too_large(limit));
    }
    let mut body = Limited::new(body, limit);
    // One piece (the usual case) is kept as it came; more are joined.
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    loop {
        let next = match tokio::time::timeout(pause, body.frame()).await {
            Ok(next) => next,
            Err(_) => return Err(stalled(pause)),
        };
        let frame = match next {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ApiError::body_too_large(limit));
            }
            Some(Err(_)) => {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "The request body could not be read.",
                ));
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            earlier => {
                if let Some(earlier) = earlier {
                    joined.extend_from_slice(&earlier);
                }
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

fn stalled(pause: Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "invalid_request_error",
        "request_timeout",
        format!(
            "The request body stopped arriving for {} s; send it whole, without pauses that long.",
            pause.as_secs_f64()
        ),
    )
}
