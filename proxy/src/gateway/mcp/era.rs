//! Which protocol era a request speaks, checked: the 2026-07-28 revision's version, method and name
//! headers against the body, legacy versions, and the `Origin` guard.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{self, HeaderMap, HeaderName};
use serde_json::{Value, json};

use super::jsonrpc::{
    HEADER_MISMATCH, INVALID_PARAMS, INVALID_REQUEST, Message, RpcError, UNSUPPORTED_VERSION,
    string_value,
};
use super::reply::shown;

/// The stateless revision.
pub(super) const MODERN: &str = "2026-07-28";

/// The revisions with `initialize` and sessions, newest first.
pub(super) const LEGACY: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

/// `_meta` key of the protocol version (2026-07-28).
pub(super) const VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";

/// Which era a request speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Era {
    /// 2026-07-28: every request stands alone.
    Modern,
    /// A legacy revision, the index in [`LEGACY`] (from the session, or offered to `initialize`).
    Legacy(u8),
}

/// Refuses an `Origin` other than the request's own host (MCP's guard against DNS rebinding).
pub(super) fn check_origin(headers: &HeaderMap) -> Option<RpcError> {
    let origin = headers.get(header::ORIGIN)?;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    if origin_host.is_some() && origin_host == host {
        return None;
    }
    Some(RpcError::new(
        None,
        INVALID_REQUEST,
        "Forbidden: the Origin header names another site than this gateway.",
    ))
}

/// The era of a request, after checking its version headers against its body.
/// The headers a request names its era, method and tool in: looked up by a name parsed once, not on
/// every call.
const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const METHOD: HeaderName = HeaderName::from_static("mcp-method");
const NAME: HeaderName = HeaderName::from_static("mcp-name");

pub(super) fn era(headers: &HeaderMap, message: &Message<'_>) -> Result<Era, RpcError> {
    let id = message.id.clone();
    let header_version = match headers.get(&PROTOCOL_VERSION) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            RpcError::new(
                id.clone(),
                HEADER_MISMATCH,
                "Header mismatch: MCP-Protocol-Version is not text.",
            )
        })?),
    };
    let meta_version = message.meta(VERSION_META);
    let modern = message.method != "initialize"
        && (meta_version.is_some() || header_version == Some(MODERN));
    if !modern {
        return match header_version {
            None => Ok(Era::Legacy(0)),
            Some(v) => match LEGACY.iter().position(|l| *l == v) {
                Some(i) => Ok(Era::Legacy(i as u8)),
                None => Err(unsupported(id, v)),
            },
        };
    }
    let Some(meta_version) = meta_version else {
        return Err(RpcError::new(
            id,
            INVALID_PARAMS,
            format!("Invalid params: params._meta must carry {VERSION_META:?}."),
        ));
    };
    if header_version.is_none() || string_value(meta_version).as_deref() != header_version {
        return Err(RpcError::new(
            id,
            HEADER_MISMATCH,
            "Header mismatch: MCP-Protocol-Version does not match params._meta's protocol version.",
        ));
    }
    let method_header = headers.get(&METHOD).and_then(|v| v.to_str().ok());
    if method_header != Some(message.method.as_str()) {
        return Err(RpcError::new(
            id,
            HEADER_MISMATCH,
            "Header mismatch: Mcp-Method does not match the request's method.",
        ));
    }
    if matches!(message.method.as_str(), "tools/call" | "prompts/get")
        && let Some(name) = message.params.get("name").and_then(Value::as_str)
    {
        let header = headers.get(&NAME).and_then(|v| v.to_str().ok());
        let agrees = match header {
            // The plain form, compared without a copy.
            Some(h) if !h.starts_with("=?base64?") => h == name,
            h => h.and_then(decode_header_value).as_deref() == Some(name),
        };
        if !agrees {
            return Err(RpcError::new(
                id,
                HEADER_MISMATCH,
                "Header mismatch: Mcp-Name does not match params.name.",
            ));
        }
    }
    let version = header_version.unwrap_or_default();
    if version != MODERN {
        return Err(unsupported(id, version));
    }
    Ok(Era::Modern)
}

/// A header value as MCP encodes it: plain, or `=?base64?…?=`.
pub(super) fn decode_header_value(v: &str) -> Option<String> {
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(encoded) => String::from_utf8(STANDARD.decode(encoded).ok()?).ok(),
        None => Some(v.to_string()),
    }
}

pub(super) fn unsupported(id: Option<Value>, requested: &str) -> RpcError {
    RpcError::new(id, UNSUPPORTED_VERSION, "Unsupported protocol version").with_data(json!({
        "supported": [MODERN, LEGACY[0], LEGACY[1], LEGACY[2]],
        "requested": shown(requested),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn message(method: &str, params: Value) -> Message<'static> {
        Message {
            id: Some(json!(1)),
            method: method.into(),
            params: params
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| k != "_meta")
                .collect(),
            arguments: None,
            meta: params.get("_meta").map(|m| m.to_string().into()),
        }
    }

    #[test]
    fn modern_requests_must_agree_with_their_headers() {
        let meta = json!({"_meta": {VERSION_META: MODERN}, "name": "summarise"});
        let good = headers(&[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", "summarise"),
        ]);
        assert!(matches!(
            era(&good, &message("tools/call", meta.clone())),
            Ok(Era::Modern)
        ));
        let encoded = headers(&[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?c3VtbWFyaXNl?="),
        ]);
        assert!(matches!(
            era(&encoded, &message("tools/call", meta.clone())),
            Ok(Era::Modern)
        ));
        for bad in [
            headers(&[("mcp-method", "tools/call"), ("mcp-name", "summarise")]),
            headers(&[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/list"),
                ("mcp-name", "summarise"),
            ]),
            headers(&[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/call"),
                ("mcp-name", "other"),
            ]),
            headers(&[
                ("mcp-protocol-version", "2025-11-25"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "summarise"),
            ]),
        ] {
            let e = era(&bad, &message("tools/call", meta.clone()))
                .err()
                .unwrap();
            assert_eq!(e.code, HEADER_MISMATCH, "{bad:?}");
        }
        let old = json!({"_meta": {VERSION_META: "2099-01-01"}});
        let h = headers(&[
            ("mcp-protocol-version", "2099-01-01"),
            ("mcp-method", "tools/list"),
        ]);
        let e = era(&h, &message("tools/list", old)).err().unwrap();
        assert_eq!(e.code, UNSUPPORTED_VERSION);
        assert_eq!(e.data.unwrap()["requested"], "2099-01-01");
        let h = headers(&[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/list"),
        ]);
        assert_eq!(
            era(&h, &message("tools/list", json!({})))
                .err()
                .unwrap()
                .code,
            INVALID_PARAMS
        );
    }

    #[test]
    fn legacy_requests_name_a_legacy_version_or_none() {
        assert!(matches!(
            era(&HeaderMap::new(), &message("initialize", json!({}))),
            Ok(Era::Legacy(0))
        ));
        let h = headers(&[("mcp-protocol-version", "2025-06-18")]);
        assert!(matches!(
            era(&h, &message("tools/list", json!({}))),
            Ok(Era::Legacy(1))
        ));
        let h = headers(&[("mcp-protocol-version", "2024-01-01")]);
        assert_eq!(
            era(&h, &message("tools/list", json!({})))
                .err()
                .unwrap()
                .code,
            UNSUPPORTED_VERSION
        );
    }

    #[test]
    fn origins_other_than_the_host_are_refused() {
        assert!(check_origin(&headers(&[("host", "gw:8080")])).is_none());
        assert!(
            check_origin(&headers(&[
                ("host", "gw:8080"),
                ("origin", "http://gw:8080")
            ]))
            .is_none()
        );
        assert!(
            check_origin(&headers(&[
                ("host", "gw:8080"),
                ("origin", "http://evil.example")
            ]))
            .is_some()
        );
        assert!(check_origin(&headers(&[("host", "gw:8080"), ("origin", "null")])).is_some());
    }
}
