//! Answers in the caller's format: JSON bodies, and errors in the envelope the caller's SDK reads
//! (OpenAI's, or Anthropic's on the Messages endpoint).

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use serde::Serialize;

use crate::call::{ResponseBody, json};
use crate::error::ApiError;
use crate::llm::messages;

/// The API format a caller speaks, as its request path tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallerFormat {
    /// OpenAI's (chat completions, embeddings, models).
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

impl CallerFormat {
    /// The format of a request to `path`: errors on the Messages endpoint use Anthropic's envelope,
    /// from the first check on.
    pub fn of_path(path: &str) -> Self {
        if path.ends_with("/v1/messages") || path.ends_with("/v1/messages/count_tokens") {
            Self::Anthropic
        } else {
            Self::OpenAi
        }
    }

    /// `error` as this caller's SDK expects it: its status, `Retry-After` when there is one, and the
    /// body in the caller's error envelope.
    pub fn error(self, error: &ApiError) -> Response<ResponseBody> {
        let body = match self {
            Self::OpenAi => error.body(),
            Self::Anthropic => messages::error_body(error),
        };
        let mut response = Response::new(ResponseBody::full(body));
        *response.status_mut() = error.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(v) = &error.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, (**v).clone());
        }
        response
    }
}

/// A 200 answer with `value` as its JSON body.
pub fn json_value<T: Serialize>(value: &T) -> Response<ResponseBody> {
    json(Bytes::from(
        serde_json::to_vec(value).expect("response serialises"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn errors_take_the_callers_envelope_with_status_and_retry_after() {
        let error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limited",
            "slow down",
        )
        .with_retry_after(Some(HeaderValue::from_static("7")));
        for path in ["/team/v1/chat/completions", "/team/v1/messages"] {
            let response = CallerFormat::of_path(path).error(&error);
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(response.headers()[header::RETRY_AFTER], "7");
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            if path.ends_with("/messages") {
                assert_eq!(v["type"], "error", "{v}");
                assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
                assert_eq!(v["error"]["message"], "slow down", "{v}");
            } else {
                assert_eq!(v["error"]["code"], "rate_limited", "{v}");
                assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
            }
        }
    }
}
