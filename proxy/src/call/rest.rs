//! One REST passthrough call: the caller's request sent to the route's REST service with the
//! service's credential in place of the caller's key, and the answer relayed as it comes.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use smallvec::SmallVec;
use tollgate_snapshot::{RouteIdx, Snapshot};

use super::ask::REQUEST_ID;
use super::body::ResponseBody;
use super::record::{Call, client_span_to, insert_trace};
use super::relay::{Relay, RelayMode};
use super::shared::Shared;
use crate::error::ApiError;
use crate::upstream::UpstreamError;

/// The caller's request to a REST operation, as the gateway read it.
pub struct RestRequest {
    /// The route whose REST service answers.
    pub route: RouteIdx,
    /// The caller's method.
    pub method: Method,
    /// The path below `<prefix>/api` (starting with `/`) and the query, as the caller sent them.
    pub path_and_query: String,
    /// The caller's headers.
    pub headers: HeaderMap,
    /// The caller's body, read whole within the service's limit.
    pub body: Bytes,
}

/// Sends `request` to the route's REST service and relays its answer.
pub async fn rest_call(
    shared: &Shared,
    snapshot: &Arc<Snapshot>,
    request: RestRequest,
    call: &mut Call,
) -> Result<Response<ResponseBody>, ApiError> {
    let route = &snapshot.content.routes[request.route as usize];
    let unavailable = || {
        ApiError::upstream(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            format!("The REST service of the API {} is not available.", route.id),
        )
    };
    let service = route.rest.as_ref().ok_or_else(unavailable)?;
    let prepared = shared.store.prepared(snapshot);
    let parts = prepared.rest(request.route).ok_or_else(unavailable)?;
    let uri = parts.uri(&request.path_and_query).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_path",
            "The request path cannot be sent to the REST service.",
        )
    })?;

    let mut headers = request.headers;
    drop_headers(&mut headers, Leg::Request);
    if let Some(host) = parts.host() {
        headers.insert(header::HOST, host);
    }
    headers.insert(REQUEST_ID, call.request_id.clone());
    let credential = parts.credential();
    let injected = credential.is_some();
    if let Some((name, value)) = credential {
        headers.insert(name, value);
    }
    // Recorded: a client span of its own, named upstream as the parent (replacing the caller's
    // `traceparent`); not recorded: the caller's context passes as it came.
    if call.traced()
        && let Some(trace) = call.start_client(|| client_span_to(&request.method, &uri))
    {
        insert_trace(&mut headers, trace);
    }
    let mut upstream = Request::new(Full::new(request.body));
    *upstream.method_mut() = request.method;
    *upstream.uri_mut() = uri;
    *upstream.headers_mut() = headers;

    let t = service.timeouts;
    let deadline =
        tokio::time::Instant::from_std(call.started()) + Duration::from_millis(t.total_ms);
    let headers_due = Duration::from_millis(t.connect_ms + t.first_byte_ms)
        .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
    let sent = parts
        .send(upstream, headers_due)
        .await
        .map_err(|e| transport(&route.id, e));
    if let Some(span) = call.client_span() {
        match &sent {
            Ok((answer, _)) => {
                let status = answer.status().as_u16();
                span.status = Some(status);
                // The HTTP conventions: a client span's 4xx and 5xx are errors, typed by status.
                if status >= 400 {
                    span.error = Some(Cow::Owned(status.to_string()));
                }
            }
            Err(e) => span.finish(Some(Cow::Borrowed(e.code))),
        }
    }
    let (answer, checkin) = sent?;
    call.upstream = checkin;

    // A refused credential is the gateway's problem, not the caller's: their key was fine.
    if injected && answer.status() == StatusCode::UNAUTHORIZED {
        return Err(ApiError::upstream(
            StatusCode::BAD_GATEWAY,
            "upstream_auth_failed",
            format!(
                "The REST service of the API {} refused the gateway's credential.",
                route.id
            ),
        ));
    }
    let (mut head, incoming) = answer.into_parts();
    drop_headers(&mut head.headers, Leg::Answer);
    let relay = Relay::new(
        incoming,
        RelayMode::Bytes,
        Duration::from_millis(t.idle_ms),
        deadline,
    );
    let mut response = Response::new(ResponseBody::relay(relay));
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    Ok(response)
}

/// Which way a message goes through the gateway.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leg {
    /// The caller's request, on its way to the service.
    Request,
    /// The service's answer, on its way back.
    Answer,
}

/// Whether a header never passes on `leg`: the headers of one connection (RFC 9110 §7.6.1) and
/// `Transfer-Encoding` (the body is framed anew) either way; on a request also the caller's key,
/// wherever it may be, and the host and length the client writes anew.
fn is_dropped(name: &str, leg: Leg) -> bool {
    match name {
        "connection"
        | "keep-alive"
        | "proxy-connection"
        | "proxy-authenticate"
        | "proxy-authorization"
        | "te"
        | "trailer"
        | "upgrade"
        | "transfer-encoding" => true,
        "authorization" | "x-api-key" | "api-key" | "host" | "content-length" => {
            leg == Leg::Request
        }
        _ => false,
    }
}

/// Removes the headers that do not pass on `leg`, and those that `Connection` names, reading the
/// headers once (this runs twice on every REST call).
fn drop_headers(headers: &mut HeaderMap, leg: Leg) {
    // Kept inline: a request drops three or four names, an answer fewer.
    let mut dropped: SmallVec<[HeaderName; 6]> = SmallVec::new();
    // Names once each (`keys`, not every value); `Connection`'s values are read on their own.
    for name in headers.keys() {
        if is_dropped(name.as_str(), leg) {
            dropped.push(name.clone());
        }
    }
    if dropped.contains(&header::CONNECTION) {
        for value in headers.get_all(header::CONNECTION) {
            let named = value.to_str().ok().into_iter().flat_map(|v| v.split(','));
            dropped.extend(named.filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()));
        }
    }
    for name in dropped {
        headers.remove(name);
    }
}

/// No response headers came: the service could not be reached, broke, or was too slow.
fn transport(route: &tollgate_snapshot::ObjectRef, error: UpstreamError) -> ApiError {
    match error {
        UpstreamError::Connect => ApiError::upstream(
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            format!("The REST service of the API {route} could not be reached."),
        ),
        UpstreamError::Timeout => ApiError::upstream(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("The REST service of the API {route} did not answer in time."),
        ),
        UpstreamError::Broken => ApiError::upstream(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!(
                "The connection to the REST service of the API {route} failed before it answered."
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn connection_headers_and_those_it_names_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        let mut answer = h.clone();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tg-secret"),
        );
        h.insert("x-api-key", HeaderValue::from_static("tg-secret"));
        h.insert(header::HOST, HeaderValue::from_static("gateway"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        // A second `Connection` line names one more.
        h.append(header::CONNECTION, HeaderValue::from_static("x-other-hop"));
        h.insert("x-other-hop", HeaderValue::from_static("2"));
        drop_headers(&mut h, Leg::Request);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"], "a request keeps neither key nor framing");

        answer.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        drop_headers(&mut answer, Leg::Answer);
        let mut left: Vec<&str> = answer.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            ["content-length", "x-kept"],
            "an answer keeps its length"
        );
    }
}
