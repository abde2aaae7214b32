//! Reading one JSON-RPC 2.0 message as MCP's Streamable HTTP transport carries it (one request or
//! notification per POST) and writing the answers. Everything a client can send is classified —
//! a parse error, an invalid request, invalid params — never a panic; batches are refused, since
//! MCP dropped them in 2025-06-18 and every later revision.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::{Map, Value, json};

/// JSON-RPC's code for a body that is not JSON.
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC's code for JSON that is not a valid request.
pub const INVALID_REQUEST: i32 = -32600;
/// JSON-RPC's code for a method the server does not have.
pub const METHOD_NOT_FOUND: i32 = -32601;
/// JSON-RPC's code for params that do not fit the method.
pub const INVALID_PARAMS: i32 = -32602;
/// MCP 2026-07-28: the `MCP-Protocol-Version`, `Mcp-Method` or `Mcp-Name` header disagrees with the body.
pub const HEADER_MISMATCH: i32 = -32020;
/// MCP 2026-07-28: the requested protocol version is not served.
pub const UNSUPPORTED_VERSION: i32 = -32022;
/// Tollgate's code for a call the gateway refused (key, subscription, limits); `data` says why.
pub const REFUSED: i32 = -32001;

/// Longest method name kept; longer ones are invalid requests (no MCP method comes near).
const MAX_METHOD: usize = 128;

/// One JSON-RPC request (with an id) or notification (without).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The request's id, a string or an integer, as sent; `None` for a notification.
    pub id: Option<Value>,
    /// The method called.
    pub method: String,
    /// Its params; an absent `params` reads as an empty object.
    pub params: Map<String, Value>,
}

/// A JSON-RPC error to answer with, and the id it answers (`None` when the id could not be read).
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The request's id, when known.
    pub id: Option<Value>,
    /// JSON-RPC error code.
    pub code: i32,
    /// What went wrong, for people.
    pub message: Cow<'static, str>,
    /// Structured detail, for programs.
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with no data, answering `id`.
    pub fn new(id: Option<Value>, code: i32, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            id,
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The same error carrying `data`.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The error response's body.
    pub fn body(&self) -> Bytes {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(data) = &self.data {
            error["data"] = data.clone();
        }
        let doc = json!({
            "jsonrpc": "2.0",
            "id": self.id.clone().unwrap_or(Value::Null),
            "error": error,
        });
        Bytes::from(serde_json::to_vec(&doc).expect("JSON values serialise"))
    }
}

/// A result response's body.
pub fn result_body(id: &Value, result: Value) -> Bytes {
    let doc = json!({"jsonrpc": "2.0", "id": id, "result": result});
    Bytes::from(serde_json::to_vec(&doc).expect("JSON values serialise"))
}

/// A result response's body around a result already serialised.
pub fn raw_result_body(id: &Value, result: &str) -> Bytes {
    let id = serde_json::to_string(id).expect("JSON values serialise");
    let mut body = String::with_capacity(result.len() + id.len() + 32);
    body.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
    body.push_str(&id);
    body.push_str(",\"result\":");
    body.push_str(result);
    body.push('}');
    Bytes::from(body)
}

/// Reads one message from a POST body.
pub fn read(body: &[u8]) -> Result<Message, RpcError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        RpcError::new(
            None,
            PARSE_ERROR,
            format!("Parse error: the body is not JSON ({e})."),
        )
    })?;
    let mut doc = match doc {
        Value::Object(doc) => doc,
        Value::Array(_) => {
            return Err(RpcError::new(
                None,
                INVALID_REQUEST,
                "Invalid request: batches are not supported; send one JSON-RPC message per POST.",
            ));
        }
        _ => {
            return Err(RpcError::new(
                None,
                INVALID_REQUEST,
                "Invalid request: a JSON-RPC message is a JSON object.",
            ));
        }
    };
    // The id first, so that every later error can answer it.
    let id = match doc.remove("id") {
        None => None,
        Some(id @ Value::String(_)) => Some(id),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(Value::Number(n)),
        Some(_) => {
            return Err(RpcError::new(
                None,
                INVALID_REQUEST,
                "Invalid request: id must be a string or an integer.",
            ));
        }
    };
    let invalid = |why: &'static str| RpcError::new(id.clone(), INVALID_REQUEST, why);
    if doc.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("Invalid request: jsonrpc must be \"2.0\"."));
    }
    let method = match doc.remove("method") {
        Some(Value::String(m)) if !m.is_empty() && m.len() <= MAX_METHOD => m,
        Some(Value::String(_)) => {
            return Err(invalid(
                "Invalid request: method must be 1 to 128 characters.",
            ));
        }
        Some(_) => return Err(invalid("Invalid request: method must be a string.")),
        None if doc.contains_key("result") || doc.contains_key("error") => {
            return Err(invalid(
                "Invalid request: this server sends no requests, so it takes no responses.",
            ));
        }
        None => return Err(invalid("Invalid request: method is missing.")),
    };
    let params = match doc.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => {
            return Err(RpcError::new(
                id,
                INVALID_PARAMS,
                "Invalid params: MCP params are a JSON object.",
            ));
        }
    };
    Ok(Message { id, method, params })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn code(body: &str) -> i32 {
        read(body.as_bytes()).unwrap_err().code
    }

    #[test]
    fn reads_requests_and_notifications() {
        let m = read(br#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"cursor":"x"}}"#)
            .unwrap();
        assert_eq!(m.id, Some(json!(7)));
        assert_eq!(m.method, "tools/list");
        assert_eq!(m.params["cursor"], "x");
        let n = read(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(n.id, None);
        assert!(n.params.is_empty());
        let s = read(br#"{"jsonrpc":"2.0","id":"a-1","method":"ping","params":null}"#).unwrap();
        assert_eq!(s.id, Some(json!("a-1")));
    }

    #[test]
    fn every_kind_of_bad_message_has_its_code() {
        assert_eq!(code("{"), PARSE_ERROR);
        assert_eq!(code(""), PARSE_ERROR);
        assert_eq!(code("\u{feff}{}"), PARSE_ERROR);
        assert_eq!(
            code(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#),
            INVALID_REQUEST
        );
        assert_eq!(code("42"), INVALID_REQUEST);
        assert_eq!(code(r#"{"id":1,"method":"ping"}"#), INVALID_REQUEST);
        assert_eq!(
            code(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":3}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":""}"#),
            INVALID_REQUEST
        );
        assert_eq!(code(r#"{"jsonrpc":"2.0","id":1}"#), INVALID_REQUEST);
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#),
            INVALID_PARAMS
        );
        let long = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"{}"}}"#,
            "m".repeat(129)
        );
        assert_eq!(code(&long), INVALID_REQUEST);
    }

    #[test]
    fn errors_answer_the_id_when_it_could_be_read() {
        let e = read(br#"{"jsonrpc":"2.0","id":"x","method":"m","params":true}"#).unwrap_err();
        assert_eq!(e.id, Some(json!("x")));
        let v: Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","id":"x","error":{"code":-32602,"message":e.message}})
        );
        let e = read(b"nope").unwrap_err();
        let v: Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["id"], Value::Null);
        let r: Value = serde_json::from_slice(&result_body(&json!(3), json!({}))).unwrap();
        assert_eq!(r, json!({"jsonrpc":"2.0","id":3,"result":{}}));
    }

    /// Cases per property: a few thousand in the suite; `TOLLGATE_FUZZ_CASES=1000000` for the long run.
    fn cases() -> u32 {
        std::env::var("TOLLGATE_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4096)
    }

    /// Any JSON value, a few levels deep, leaning towards the members a message has.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "\\PC{0,12}".prop_map(Value::String),
            prop_oneof![Just("2.0"), Just("jsonrpc"), Just("tools/call")].prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("jsonrpc".to_string()),
                            Just("id".to_string()),
                            Just("method".to_string()),
                            Just("params".to_string()),
                            Just("result".to_string()),
                            "\\PC{0,6}",
                        ],
                        inner
                    ),
                    0..5
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        /// Any bytes: an answer or a classified error, never a panic; the error body is JSON-RPC.
        #[test]
        fn any_bytes_are_read_or_refused(body in prop::collection::vec(any::<u8>(), 0..256)) {
            match read(&body) {
                Ok(m) => prop_assert!(!m.method.is_empty()),
                Err(e) => {
                    prop_assert!([PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS].contains(&e.code));
                    let v: Value = serde_json::from_slice(&e.body()).unwrap();
                    prop_assert_eq!(&v["jsonrpc"], "2.0");
                }
            }
        }

        /// Any JSON document: read exactly when it is one well-formed request or notification.
        #[test]
        fn any_json_is_classified(doc in any_json()) {
            let body = serde_json::to_vec(&doc).unwrap();
            let result = read(&body);
            let well_formed = doc.as_object().is_some_and(|o| {
                o.get("jsonrpc") == Some(&json!("2.0"))
                    && o.get("method").and_then(Value::as_str).is_some_and(|m| !m.is_empty() && m.len() <= MAX_METHOD)
                    && o.get("id").is_none_or(|id| id.is_string() || id.is_i64() || id.is_u64())
                    && o.get("params").is_none_or(|p| p.is_object() || p.is_null())
            });
            prop_assert_eq!(result.is_ok(), well_formed, "{}", doc);
            match result {
                Ok(m) => prop_assert_eq!(m.id.as_ref(), doc.get("id")),
                Err(e) => prop_assert!(e.code != PARSE_ERROR),
            }
        }

        /// Well-formed requests come back as sent.
        #[test]
        fn requests_round_trip(id in any::<i64>(), method in "[a-z/_]{1,40}", name in "\\PC{0,20}") {
            let doc = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {"name": name}});
            let m = read(&serde_json::to_vec(&doc).unwrap()).unwrap();
            prop_assert_eq!(m.id, Some(json!(id)));
            prop_assert_eq!(m.method, method);
            prop_assert_eq!(&m.params["name"], &json!(name));
        }
    }
}
