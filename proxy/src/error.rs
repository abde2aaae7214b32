//! Errors as clients see them: status, OpenAI's error fields and body, so SDKs raise the right
//! exception. Which envelope a caller gets (OpenAI's or Anthropic's) is decided in `gateway`.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde::Serialize;

/// Errors a response body can end with (the connection is then reset).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error answer: HTTP status plus OpenAI's `{"error":{"message","type","param","code"}}` body.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI error `type`, e.g. `invalid_request_error`.
    pub kind: &'static str,
    /// Machine-readable `code`, also the access log's error class.
    pub code: &'static str,
    /// Human-readable explanation. Never contains credentials or request bodies.
    pub message: Cow<'static, str>,
    /// The request parameter at fault, if any.
    pub param: Option<Cow<'static, str>>,
    /// `Retry-After` to send (a provider's, passed on); boxed to keep errors small.
    pub retry_after: Option<Box<HeaderValue>>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a str,
}

impl ApiError {
    /// A new error.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// Names the request parameter at fault.
    pub fn with_param(mut self, param: impl Into<Cow<'static, str>>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Sends `Retry-After` with the error.
    pub fn with_retry_after(mut self, value: Option<HeaderValue>) -> Self {
        self.retry_after = value.map(Box::new);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let envelope = Envelope {
            error: Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        Bytes::from(serde_json::to_vec(&envelope).expect("error envelope serialises"))
    }

    /// 401: no key, an unknown key or an expired one.
    pub fn invalid_api_key(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            message,
        )
    }

    /// 403 with the subscription problem in `code`.
    pub fn forbidden(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", code, message)
    }

    /// 404 for a path no route or endpoint serves.
    pub fn unknown_url(method: &http::Method, path: &str) -> Self {
        let shown: String = path.chars().take(200).collect();
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_url",
            format!("Invalid URL ({method} {shown})"),
        )
    }

    /// 404 for a model the route does not serve, naming the ones it does.
    pub fn model_not_found<'a>(requested: &str, available: impl Iterator<Item = &'a str>) -> Self {
        let shown: String = requested.chars().take(200).collect();
        let list: Vec<&str> = available.collect();
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!(
                "The model `{shown}` does not exist on this API. Available models: {}.",
                if list.is_empty() {
                    "none".to_string()
                } else {
                    list.join(", ")
                }
            ),
        )
        .with_param("model")
    }

    /// 400 for a malformed request.
    pub fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        )
    }

    /// 413 for a body over the configured limit.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("The request body is larger than this gateway accepts ({limit} bytes)."),
        )
    }

    /// 502/503/504 and friends for upstream trouble.
    pub fn upstream(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::new(status, "server_error", code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let e = ApiError::model_not_found("gpt-x", ["a", "b"].into_iter());
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Available models: a, b")
        );
        let e = ApiError::invalid_api_key("no");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert!(v["error"]["param"].is_null());
    }
}
