//! How an attempt at a backend fails, as a typed cause that planning and passive health read, and
//! the error the caller sees if no later attempt answers.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::Value;
use tollgate_snapshot::Provider;

use crate::error::ApiError;
use crate::llm::scrub;
use crate::upstream::UpstreamError;
use crate::upstream::google::TokenError;
use crate::upstream::health::Outcome;

/// Why an attempt gave the client no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cause {
    /// The request cannot be served as asked, or the provider rejected it: the answer is final,
    /// and the provider is healthy.
    Rejected,
    /// The provider refused or rate-limited the gateway's key: another key or backend is tried,
    /// and the key rests.
    KeyRefused,
    /// The gateway's own setup of the provider is wrong (a URL, a credential that is no header):
    /// another backend is tried, and the provider's health is not blamed.
    Misconfigured,
    /// The provider failed (unreachable, too slow, a 5xx, an answer that cannot be read): another
    /// backend is tried, and the failure counts towards ejecting the provider.
    ProviderFault,
}

/// An attempt that ended without an answer for the client.
pub(super) struct Failed {
    /// Why, for planning and health.
    pub(super) cause: Cause,
    /// What the client is told if nothing else answers.
    pub(super) error: ApiError,
}

impl Failed {
    /// A final answer: nothing reached the provider's fault, and no other backend is tried.
    pub(super) fn rejected(error: ApiError) -> Self {
        Self {
            cause: Cause::Rejected,
            error,
        }
    }

    /// The provider failed; another backend may answer.
    pub(super) fn provider(error: ApiError) -> Self {
        Self {
            cause: Cause::ProviderFault,
            error,
        }
    }

    /// The provider refused the key; another key or backend may answer.
    fn key_refused(error: ApiError) -> Self {
        Self {
            cause: Cause::KeyRefused,
            error,
        }
    }

    /// The gateway's setup of `provider` is wrong in the way `why` says.
    pub(super) fn misconfigured(provider: &Provider, why: &str) -> Self {
        Self::misconfigured_as(format!("Provider {} is misconfigured: {why}.", provider.id))
    }

    /// The gateway's setup of a provider is wrong, told in `message`.
    pub(super) fn misconfigured_as(message: String) -> Self {
        Self {
            cause: Cause::Misconfigured,
            error: ApiError::upstream(StatusCode::BAD_GATEWAY, "upstream_misconfigured", message),
        }
    }

    /// Whether the answer is final (no other backend is tried).
    pub(super) fn is_final(&self) -> bool {
        self.cause == Cause::Rejected
    }

    /// What the attempt says about its provider's health.
    pub(super) fn health(&self) -> Outcome {
        match self.cause {
            Cause::Rejected => Outcome::Success,
            Cause::KeyRefused => Outcome::KeyRejected,
            Cause::Misconfigured => Outcome::Neutral,
            Cause::ProviderFault => Outcome::Failure,
        }
    }
}

/// No response headers came: the connection could not be made, broke, or the provider was too slow.
pub(super) fn transport(provider: &Provider, error: UpstreamError) -> Failed {
    let who = &provider.id;
    let (status, code, message) = match error {
        UpstreamError::Connect => (
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            format!("Provider {who} could not be reached."),
        ),
        UpstreamError::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("Provider {who} did not answer in time."),
        ),
        UpstreamError::Broken => (
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("The connection to provider {who} failed before it answered."),
        ),
    };
    Failed::provider(ApiError::upstream(status, code, message))
}

/// The answer broke off or ran past the deadline after its headers came.
pub(super) fn cut_short(provider: &Provider, timed_out: bool) -> Failed {
    let who = &provider.id;
    Failed::provider(if timed_out {
        ApiError::upstream(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("Provider {who} did not finish its answer in time."),
        )
    } else {
        ApiError::upstream(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("The connection to provider {who} failed in the middle of its answer."),
        )
    })
}

/// The provider answered with something this gateway cannot read.
pub(super) fn unreadable(provider: &Provider) -> Failed {
    Failed::provider(ApiError::upstream(
        StatusCode::BAD_GATEWAY,
        "upstream_bad_response",
        format!(
            "Provider {} sent an answer this gateway cannot read.",
            provider.id
        ),
    ))
}

fn rate_limited(provider: &Provider, retry_after: Option<HeaderValue>) -> Failed {
    Failed::key_refused(
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "upstream_rate_limited",
            format!(
                "Provider {} is rate limiting this gateway; retry later.",
                provider.id
            ),
        )
        .with_retry_after(retry_after),
    )
}

fn credential_refused(provider: &Provider) -> Failed {
    // The provider refused our credential: the client's request is not at fault, and the provider's
    // error text may quote part of the key, so it is not relayed.
    Failed::key_refused(ApiError::upstream(
        StatusCode::BAD_GATEWAY,
        "upstream_auth_failed",
        format!("Provider {} refused the gateway's credential.", provider.id),
    ))
}

/// No access token could be had for the provider's service account (Vertex AI). A refusal rests the
/// key like a refused API key; an endpoint that failed counts against the provider's health. The
/// words name what failed and quote nothing that was sent or answered.
pub(super) fn no_access_token(provider: &Provider, error: &TokenError) -> Failed {
    let message = format!(
        "Provider {} could not get an access token: {error}.",
        provider.id
    );
    match error {
        TokenError::Refused(_) => Failed::key_refused(ApiError::upstream(
            StatusCode::BAD_GATEWAY,
            "upstream_auth_failed",
            message,
        )),
        TokenError::Failed(_) => Failed::provider(ApiError::upstream(
            StatusCode::BAD_GATEWAY,
            "upstream_auth_failed",
            message,
        )),
        TokenError::Unusable(_) => Failed::misconfigured_as(message),
    }
}

fn server_error(provider: &Provider, status: u16) -> Failed {
    Failed::provider(ApiError::upstream(
        StatusCode::BAD_GATEWAY,
        "upstream_error",
        format!("Provider {} answered with status {status}.", provider.id),
    ))
}

/// An unsuccessful status from an OpenAI-compatible provider whose caller speaks OpenAI too: the
/// statuses that say nothing about the request fail the attempt; any other (a 4xx about the request)
/// is `None`, and its body goes to the caller through [`same_format_rejection`].
pub(super) fn same_format(
    provider: &Provider,
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<Failed> {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Some(rate_limited(
            provider,
            headers.get(header::RETRY_AFTER).cloned(),
        ));
    }
    if status.is_server_error() {
        return Some(server_error(provider, status.as_u16()));
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Some(credential_refused(provider));
    }
    None
}

/// The answer to an OpenAI caller for a status [`same_format`] let through, from the provider's error
/// `body`. An error in OpenAI's shape keeps its status, shape and fields, so the caller's SDK raises
/// the same exception with the same code, but every string in it is scrubbed: the provider may quote
/// the gateway's key. Anything else becomes the gateway's own error, with only a scrubbed top-level
/// `message` (as some compatible servers write it) kept.
pub(super) fn same_format_rejection(
    provider: &Provider,
    status: StatusCode,
    body: &[u8],
) -> (StatusCode, Bytes) {
    let secrets = scrub::secrets_of(provider);
    let mut parsed = serde_json::from_slice::<Value>(body).ok();
    if let Some(v) = parsed.as_mut()
        && status.is_client_error()
        && v.get("error")
            .and_then(|e| e.get("message"))
            .is_some_and(Value::is_string)
    {
        scrub::scrub_strings(v, &secrets);
        return (status, Bytes::from(v.to_string()));
    }
    let detail = parsed
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(Value::as_str)
        .map(|m| format!(": {}", scrub::scrub(m, &secrets)))
        .unwrap_or_default();
    let message = format!(
        "Provider {} rejected the request with status {}{detail}",
        provider.id,
        status.as_u16()
    );
    let error = if status.is_client_error() {
        ApiError::new(
            status,
            "invalid_request_error",
            "upstream_rejected",
            message,
        )
    } else {
        ApiError::upstream(StatusCode::BAD_GATEWAY, "upstream_rejected", message)
    };
    (error.status, error.body())
}

/// What a translated provider's error body says: its message, and whether it says the key is bad
/// whatever the status.
pub(super) struct ErrorBody<'a> {
    /// The whole body as JSON (`Null` when it is not JSON).
    pub(super) json: &'a Value,
    /// The message, as the provider's format places it.
    pub(super) message: Option<String>,
    /// Whether the provider says the key is invalid (Gemini answers 400 for that).
    pub(super) bad_key: bool,
}

/// An unsuccessful answer from a provider whose format is translated, with anything resembling a
/// credential scrubbed from the message passed on.
pub(super) fn translated(
    provider: &Provider,
    status: StatusCode,
    headers: &HeaderMap,
    body: ErrorBody<'_>,
) -> Failed {
    let who = &provider.id;
    let ErrorBody {
        json: v,
        message,
        bad_key,
    } = body;
    let code = status.as_u16();
    if code == 429 {
        let retry_after = headers
            .get(header::RETRY_AFTER)
            .cloned()
            .or_else(|| google_retry_delay(v));
        return rate_limited(provider, retry_after);
    }
    if code == 529 {
        return Failed::provider(
            ApiError::upstream(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_overloaded",
                format!("Provider {who} is overloaded; retry later."),
            )
            .with_retry_after(headers.get(header::RETRY_AFTER).cloned()),
        );
    }
    if code == 401 || code == 403 || bad_key {
        return credential_refused(provider);
    }
    if code == 408 {
        return Failed::provider(ApiError::upstream(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("Provider {who} did not answer in time."),
        ));
    }
    if status.is_server_error() || code == 424 {
        return server_error(provider, code);
    }
    let detail = message
        .map(|m| scrub::scrub(&m, &scrub::secrets_of(provider)))
        .unwrap_or_else(|| format!("status {code}"));
    let status = if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_GATEWAY
    };
    Failed::rejected(ApiError::new(
        status,
        if status.is_client_error() {
            "invalid_request_error"
        } else {
            "server_error"
        },
        "upstream_rejected",
        format!("Provider {who} rejected the request: {detail}"),
    ))
}

/// Google's `RetryInfo.retryDelay` (`"30s"`) as a `Retry-After` value in whole seconds.
fn google_retry_delay(v: &Value) -> Option<HeaderValue> {
    let delay = v
        .get("error")?
        .get("details")?
        .as_array()?
        .iter()
        .find_map(|d| d.get("retryDelay").and_then(Value::as_str))?;
    let seconds: f64 = delay.strip_suffix('s')?.parse().ok()?;
    HeaderValue::from_str(&(seconds.max(0.0).ceil() as u64).to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_retry_delay_becomes_retry_after() {
        let v = serde_json::json!({"error": {"code": 429, "details": [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12.5s"}]}});
        assert_eq!(google_retry_delay(&v).unwrap(), "13");
    }

    fn provider_with_key(key: &str) -> Provider {
        use tollgate_snapshot::{AuthScheme, Credential, ObjectRef, ProviderType, Timeouts};
        Provider {
            id: ObjectRef::new("ns", "compatible"),
            provider_type: ProviderType::OpenAI,
            endpoint: "http://127.0.0.1:1/v1".into(),
            auth: AuthScheme {
                header: "authorization".into(),
                prefix: "Bearer ".into(),
            },
            credentials: vec![Credential(key.into())],
            models: Vec::new(),
            timeouts: Timeouts::default(),
            azure_api_version: None,
            bedrock_region: None,
            vertex: None,
            fake: None,
            health: Default::default(),
        }
    }

    #[test]
    fn same_format_rejections_are_scrubbed_whatever_their_shape() {
        let p = provider_with_key("sk-compatible-secret-b");
        let message = |body: &[u8]| {
            let v: Value = serde_json::from_slice(body).unwrap();
            v["error"]["message"].as_str().unwrap().to_string()
        };
        let (status, body) = same_format_rejection(
            &p,
            StatusCode::NOT_FOUND,
            br#"{"error":{"message":"no model for sk-compatible-sec","type":"invalid_request_error","param":"model","code":"model_not_found"}}"#,
        );
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(message(&body), "no model for [redacted]");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (&v["error"]["param"], &v["error"]["code"]),
            (&Value::from("model"), &Value::from("model_not_found"))
        );

        // A compatible server's own shape: its scrubbed message in OpenAI's.
        let (status, body) = same_format_rejection(
            &p,
            StatusCode::BAD_REQUEST,
            br#"{"object":"error","message":"bad key compatible-secret-b","code":400}"#,
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            message(&body).ends_with("status 400: bad key [redacted]"),
            "{}",
            message(&body)
        );

        // Not JSON: a generic message, nothing of the body.
        let (status, body) = same_format_rejection(
            &p,
            StatusCode::UNPROCESSABLE_ENTITY,
            b"key sk-compatible-secret-b is bad",
        );
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            message(&body),
            "Provider ns/compatible rejected the request with status 422"
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "upstream_rejected");
    }

    #[test]
    fn causes_map_to_health_and_finality() {
        let e = || ApiError::bad_request("x", "y");
        let cases = [
            (Failed::rejected(e()), Outcome::Success, true),
            (Failed::key_refused(e()), Outcome::KeyRejected, false),
            (Failed::provider(e()), Outcome::Failure, false),
            (
                Failed {
                    cause: Cause::Misconfigured,
                    error: e(),
                },
                Outcome::Neutral,
                false,
            ),
        ];
        for (failed, health, is_final) in cases {
            assert_eq!(failed.health(), health, "{:?}", failed.cause);
            assert_eq!(failed.is_final(), is_final, "{:?}", failed.cause);
        }
    }
}
