//! One request through the gateway: its id, admission, the endpoint it names, the limits for model
//! calls, and the headers every answer on the route carries (request id, deprecation, rate limits), in
//! the caller's format.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::admission::{self, Notes, OPENAPI_PATH};
use super::answer::CallerFormat;
use super::body::read_body;
use super::routed::{Asked, model_call};
use super::{mcp, models, openapi, prompt, rest};
use crate::call::{Call, Endpoint, REQUEST_ID, ResponseBody, Shared};
use crate::error::ApiError;

/// Serves one request. Never fails: every problem becomes an error answer in the caller's format.
pub async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let request_id = request_id(request.headers());
    let mut call = Box::new(Call::start(
        shared.recorder.clone(),
        request_id,
        request.method(),
        request.uri().path(),
    ));
    call.begin_trace(request.headers());
    let mut notes = Notes::default();
    let format = CallerFormat::of_path(request.uri().path());
    let mut response = match serve(&shared, request, &mut call, &mut notes).await {
        Ok(response) => response,
        Err(error) => {
            call.fail(error.code);
            format.error(&error)
        }
    };
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID, call.request_id.clone());
    if let Some(deprecated) = &notes.deprecated {
        admission::deprecation_headers(headers, deprecated);
    }
    if let Some(rate) = &notes.rate {
        rate.write(headers);
    }
    call.status = response.status().as_u16();
    response.body_mut().attach(call);
    Ok(response)
}

/// The client's request id if it sent a sane one, else a fresh random one (a header value either way,
/// so that it goes upstream and back to the client without being copied again).
fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&REQUEST_ID)
        && !v.is_empty()
        && v.len() <= 128
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return v.clone();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let random = fastrand::u128(..);
    let mut fresh = [0u8; 32];
    for (i, digit) in fresh.iter_mut().enumerate() {
        *digit = HEX[(random >> (124 - 4 * i) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&fresh).expect("hex digits are a valid header value")
}

async fn serve(
    shared: &Shared,
    request: Request<Incoming>,
    call: &mut Call,
    notes: &mut Notes,
) -> Result<Response<ResponseBody>, ApiError> {
    let snapshot = shared.store.load().ok_or_else(|| {
        ApiError::upstream(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "The gateway has not received its configuration yet; retry shortly.",
        )
    })?;
    call.snapshot = Some(snapshot.clone());
    let (parts, body) = request.into_parts();
    if parts.uri.path().ends_with(mcp::PATH)
        && let Some(scope) = mcp::scope(&snapshot, &parts)
    {
        // Boxed, like REST calls: MCP answers are JSON-RPC, admitted and shaped on their own path.
        return Box::pin(mcp::serve(
            shared, &snapshot, scope, parts, body, call, notes,
        ))
        .await;
    }
    let admitted = admission::admit(&snapshot, &parts, shared.key_clock.now_unix(), call, notes)?;
    if rest::is_rest_path(&parts.uri.path()[admitted.rest_at..]) {
        // Boxed: REST calls are rarer than model calls and would otherwise grow every call's future.
        return Box::pin(rest::serve(
            shared, &snapshot, parts, body, &admitted, call, notes,
        ))
        .await;
    }
    let route = admitted.route;
    let path = parts.uri.path();
    let rest = &path[admitted.rest_at..];
    let endpoint = match (&parts.method, rest) {
        (&Method::POST, "/v1/chat/completions") => Endpoint::Chat,
        (&Method::POST, "/v1/embeddings") => Endpoint::Embeddings,
        (&Method::POST, "/v1/messages") => Endpoint::Messages,
        (&Method::POST, "/v1/messages/count_tokens") => Endpoint::CountTokens,
        (&Method::POST, "/v1/responses") => Endpoint::Responses,
        (&Method::POST, _) if rest.starts_with(PROMPTS) => {
            let name = &rest[PROMPTS.len()..];
            let (at, prompt) = prompt::find(&snapshot, route, name)?;
            call.prompt = Some(at);
            let bytes = read_body(
                body,
                &parts.headers,
                shared.limits.max_body_bytes,
                shared.limits.body_pause,
            )
            .await?;
            let rendered = prompt::render(prompt, &bytes)?;
            let endpoint = Endpoint::Prompt {
                json_output: prompt.output.is_json(),
            };
            let asked = Asked {
                endpoint,
                body: rendered,
                headers: &parts.headers,
            };
            return model_call(shared, &snapshot, &admitted, asked, call, notes).await;
        }
        (&Method::GET, "/v1/models") => return Ok(models::list(&snapshot, route)),
        (&Method::GET, OPENAPI_PATH) => return Ok(openapi::serve(&snapshot, route)),
        (&Method::GET, _) if rest.starts_with("/v1/models/") => {
            return models::one(&snapshot, route, &rest["/v1/models/".len()..]);
        }
        _ => return Err(ApiError::unknown_url(&parts.method, path)),
    };
    let bytes = read_body(
        body,
        &parts.headers,
        shared.limits.max_body_bytes,
        shared.limits.body_pause,
    )
    .await?;
    let asked = Asked {
        endpoint,
        body: bytes,
        headers: &parts.headers,
    };
    model_call(shared, &snapshot, &admitted, asked, call, notes).await
}

/// Where prompt APIs are served, after the route's prefix.
const PROMPTS: &str = "/prompts/";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calls_future_stays_small() {
        // hyper keeps room for one call's future per connection for as long as the connection lives,
        // so its size is paid by every open connection and stream. Rare, large states (connecting,
        // translating for another provider's API) are boxed to keep it small; it was 10.7 KB before.
        fn size_of_future<A, B, F: std::future::Future>(_: fn(A, B) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = size_of_future(handle);
        assert!(size <= 6 * 1024, "a call's future takes {size} bytes");
    }

    #[test]
    fn keeps_sane_request_ids_only() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        let fresh = request_id(&h);
        assert_eq!(fresh.len(), 32);
        assert!(
            fresh.as_bytes().iter().all(u8::is_ascii_hexdigit),
            "{fresh:?}"
        );
        assert_ne!(fresh, request_id(&h), "each fresh id is random");
    }
}
