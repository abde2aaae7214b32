//! Reading one JSON-RPC 2.0 message as MCP's Streamable HTTP transport carries it (one request or
//! notification per POST) and writing the answers. Everything a client can send is classified —
//! a parse error, an invalid request, invalid params — never a panic; batches are refused, since
//! MCP dropped them in 2025-06-18 and every later revision.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::llm::json_scan::{Cursor, Members, object_members_and};

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
pub struct Message<'a> {
    /// The request's id, a string or an integer, as sent; `None` for a notification.
    pub id: Option<Value>,
    /// The method called.
    pub method: String,
    /// Its params but `arguments` and `_meta`; an absent `params` reads as an empty object.
    pub params: Map<String, Value>,
    /// `params._meta` as the client wrote it, read a member at a time ([`Message::meta`]).
    pub meta: Option<Cow<'a, str>>,
    /// `params.arguments` as the client wrote it (any JSON value, not yet checked to be an object),
    /// so that a prompt tool's variables reach the renderer without being read into a `Value` and
    /// written again; `None` when it is absent or `null`.
    pub arguments: Option<Cow<'a, str>>,
}

impl Message<'_> {
    /// The member `key` of `params._meta` as its JSON text, when `_meta` is an object that has it.
    pub fn meta(&self, key: &str) -> Option<&str> {
        let mut at = Cursor::new(self.meta.as_deref()?);
        at.enter_object()?;
        let mut found = None;
        while let Some(k) = at.next_key()? {
            // Repeated members: the last one counts, as serde_json reads them.
            if k == key {
                found = Some(at.value()?);
            } else {
                at.skip()?;
            }
        }
        found
    }

    /// `params.arguments` as an object (empty when absent or `null`), or the invalid-params message
    /// to answer when it is something else.
    pub fn arguments_object(&self) -> Result<Map<String, Value>, String> {
        let Some(raw) = self.arguments.as_deref() else {
            return Ok(Map::new());
        };
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(args)) => Ok(args),
            Ok(_) => Err(NOT_AN_OBJECT.into()),
            // Valid JSON that serde_json does not hold (a number beyond f64, a lone surrogate).
            Err(e) => Err(format!(
                "Invalid params: the arguments cannot be read ({e})."
            )),
        }
    }

    /// `params.arguments` as written when it is an object, `None` when it is absent or `null`, or
    /// the invalid-params message to answer when it is something else.
    pub fn raw_arguments_object(&self) -> Result<Option<&str>, String> {
        match self.arguments.as_deref() {
            None => Ok(None),
            Some(raw) if raw.starts_with('{') => Ok(Some(raw)),
            Some(_) => Err(NOT_AN_OBJECT.into()),
        }
    }
}

/// The invalid-params message for `arguments` that are not an object.
const NOT_AN_OBJECT: &str = "Invalid params: arguments must be an object.";

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
    let mut body = Vec::with_capacity(result.len() + 48);
    body.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    serde_json::to_writer(&mut body, id).expect("JSON values serialise");
    body.extend_from_slice(br#","result":"#);
    body.extend_from_slice(result.as_bytes());
    body.push(b'}');
    Bytes::from(body)
}

/// The body of a `tools/call` result holding one text, `text` being that text already written as a
/// JSON string (quotes included); a 2026-07-28 result (`modern`) says first that it is complete.
/// Written once, the text copied once.
pub fn text_result_body(id: &Value, modern: bool, text: &[u8]) -> Bytes {
    let mut body = Vec::with_capacity(text.len() + 128);
    body.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    serde_json::to_writer(&mut body, id).expect("JSON values serialise");
    body.extend_from_slice(br#","result":{"#);
    if modern {
        body.extend_from_slice(br#""resultType":"complete","#);
    }
    body.extend_from_slice(br#""content":[{"type":"text","text":"#);
    body.extend_from_slice(text);
    body.extend_from_slice(br#"}],"isError":false}}"#);
    Bytes::from(body)
}

/// Reads one message from a POST body.
///
/// The body is checked and split by a validating scan (`llm::json_scan`), and only the envelope's
/// small members are read into values: `params.arguments`, the bulk of a `tools/call`, stays the
/// text the client wrote. A body the scan does not accept (not JSON, not an object, nested deeper
/// than the scan goes) or an envelope member serde_json will not hold is read by [`read_parsed`],
/// which says precisely what is wrong, so every error is the one serde_json's reading gives. The
/// one difference: `arguments` and `_meta` are not read here, so a number beyond `f64` or a lone
/// surrogate inside them is found by whoever reads them (see `proxy/README.md`).
pub fn read(body: &[u8]) -> Result<Message<'_>, RpcError> {
    let scanned = std::str::from_utf8(body)
        .ok()
        .and_then(|text| object_members_and(text, "params"))
        .and_then(|(members, params)| from_members(&members, params));
    match scanned {
        Some(read) => read,
        None => read_parsed(body),
    }
}

/// The last member named `key`, as serde_json keeps repeated members.
fn last<'t>(members: &[(Cow<'_, str>, &'t str)], key: &str) -> Option<&'t str> {
    members
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
}

/// [`read`] over the top-level members of a valid object and those of `params` when it is an
/// object (split in the same pass); `None` when a member serde_json reads differently from the
/// scan (then the whole body is read by serde_json).
fn from_members<'a>(
    members: &[(Cow<'_, str>, &'a str)],
    params_members: Option<Members<'a>>,
) -> Option<Result<Message<'a>, RpcError>> {
    let id = match last(members, "id") {
        None => None,
        Some(raw) => match member_value(raw)? {
            id @ Value::String(_) => Some(id),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(Value::Number(n)),
            _ => return Some(Err(bad_id())),
        },
    };
    let version = match last(members, "jsonrpc") {
        None => None,
        Some(raw) => Some(member_value(raw)?),
    };
    let method = match last(members, "method") {
        None => None,
        Some(raw) => Some(member_value(raw)?),
    };
    let params = last(members, "params");
    let has_answer = last(members, "result").is_some() || last(members, "error").is_some();
    let checked = check(id, version.as_ref(), method, has_answer);
    let (id, method) = match checked {
        Ok(checked) => checked,
        Err(e) => return Some(Err(e)),
    };
    let mut read = Map::new();
    let (mut arguments, mut meta) = (None, None);
    match (params, params_members) {
        (None | Some("null"), _) => {}
        (Some(_), Some(split)) => {
            for (key, raw) in split {
                match key.as_ref() {
                    "arguments" => arguments = (raw != "null").then_some(Cow::Borrowed(raw)),
                    "_meta" => meta = Some(Cow::Borrowed(raw)),
                    _ => {
                        read.insert(key.into_owned(), member_value(raw)?);
                    }
                }
            }
        }
        (Some(_), None) => return Some(Err(not_an_object(id))),
    }
    Some(Ok(Message {
        id,
        method,
        params: read,
        arguments,
        meta,
    }))
}

/// The string a member's text (valid JSON) holds, borrowed when it has no escapes; `None` for
/// other values.
pub fn string_value(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if memchr::memchr(b'\\', inner.as_bytes()).is_none() {
        Some(Cow::Borrowed(inner))
    } else {
        serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
    }
}

/// A member's value from its text (valid JSON, as the scan found it); `None` when serde_json would
/// not hold it. The envelope's members are mostly plain strings and small integers, read here
/// without serde_json; anything else is serde_json's.
fn member_value(raw: &str) -> Option<Value> {
    let b = raw.as_bytes();
    match b.first()? {
        // A string the scan accepted: its text (unescaped only when it has escapes).
        b'"' => return string_value(raw).map(|s| Value::String(s.into_owned())),
        // A non-negative integer well inside u64 (`-0` is a float to serde_json).
        b'0'..=b'9' if b.len() <= 18 && b.iter().all(u8::is_ascii_digit) => {
            return raw.parse::<u64>().ok().map(Value::from);
        }
        _ => {}
    }
    serde_json::from_str(raw).ok()
}

/// Reads one message with serde_json, the body whole: the reference [`read`] agrees with, and its
/// reading of every body the scan does not take.
fn read_parsed(body: &[u8]) -> Result<Message<'static>, RpcError> {
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
        Some(_) => return Err(bad_id()),
    };
    let has_answer = doc.contains_key("result") || doc.contains_key("error");
    let method = doc.remove("method");
    let (id, method) = check(id, doc.get("jsonrpc"), method, has_answer)?;
    let mut params = match doc.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(not_an_object(id)),
    };
    let arguments = match params.remove("arguments") {
        None | Some(Value::Null) => None,
        Some(a) => Some(Cow::Owned(a.to_string())),
    };
    let meta = params.remove("_meta").map(|m| Cow::Owned(m.to_string()));
    Ok(Message {
        id,
        method,
        params,
        arguments,
        meta,
    })
}

fn bad_id() -> RpcError {
    RpcError::new(
        None,
        INVALID_REQUEST,
        "Invalid request: id must be a string or an integer.",
    )
}

fn not_an_object(id: Option<Value>) -> RpcError {
    RpcError::new(
        id,
        INVALID_PARAMS,
        "Invalid params: MCP params are a JSON object.",
    )
}

/// The envelope's rules, after the id: `jsonrpc` is "2.0", the method a short string, and a message
/// without one is no response.
fn check(
    id: Option<Value>,
    version: Option<&Value>,
    method: Option<Value>,
    has_answer: bool,
) -> Result<(Option<Value>, String), RpcError> {
    let invalid = |why: &'static str| RpcError::new(id.clone(), INVALID_REQUEST, why);
    if version.and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("Invalid request: jsonrpc must be \"2.0\"."));
    }
    let method = match method {
        Some(Value::String(m)) if !m.is_empty() && m.len() <= MAX_METHOD => m,
        Some(Value::String(_)) => {
            return Err(invalid(
                "Invalid request: method must be 1 to 128 characters.",
            ));
        }
        Some(_) => return Err(invalid("Invalid request: method must be a string.")),
        None if has_answer => {
            return Err(invalid(
                "Invalid request: this server sends no requests, so it takes no responses.",
            ));
        }
        None => return Err(invalid("Invalid request: method is missing.")),
    };
    Ok((id, method))
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

    #[test]
    fn arguments_stay_as_written() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments": {"a" : "x\"}", "b":[1,{"c":2}]} }}"#;
        let m = read(body).unwrap();
        assert!(matches!(m.arguments, Some(Cow::Borrowed(_))));
        assert_eq!(
            m.arguments.as_deref(),
            Some(r#"{"a" : "x\"}", "b":[1,{"c":2}]}"#)
        );
        assert_eq!(m.params, json!({"name": "t"}).as_object().cloned().unwrap());
        assert_eq!(
            m.arguments_object().unwrap(),
            json!({"a": "x\"}", "b": [1, {"c": 2}]})
                .as_object()
                .cloned()
                .unwrap()
        );
        // Repeated members: the last one counts, as serde_json reads them.
        let twice = br#"{"jsonrpc":"2.0","method":"m","params":{"arguments":{"a":1}},"params":{"arguments":{"a":2},"arguments":{"a":3}}}"#;
        assert_eq!(
            read(twice).unwrap().arguments.as_deref(),
            Some(r#"{"a":3}"#)
        );
        let none = read(br#"{"jsonrpc":"2.0","method":"m","params":{"arguments":null}}"#).unwrap();
        assert_eq!(none.arguments, None);
        assert_eq!(none.raw_arguments_object(), Ok(None));
        let list = read(br#"{"jsonrpc":"2.0","method":"m","params":{"arguments":[1]}}"#).unwrap();
        assert_eq!(list.raw_arguments_object(), Err(NOT_AN_OBJECT.to_string()));
        assert_eq!(list.arguments_object(), Err(NOT_AN_OBJECT.to_string()));
        // Valid JSON that serde_json does not hold: refused when the arguments are read.
        let huge =
            read(br#"{"jsonrpc":"2.0","id":2,"method":"m","params":{"arguments":{"n":1e400}}}"#)
                .unwrap();
        assert!(
            huge.arguments_object()
                .unwrap_err()
                .contains("cannot be read")
        );
        // Elsewhere in the envelope it is a parse error, as serde_json says.
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1e400,"method":"ping"}"#),
            PARSE_ERROR
        );
        // Too deep for the scan: serde_json reads it (and refuses it, past its own limit).
        let deep = format!(
            r#"{{"jsonrpc":"2.0","method":"m","params":{{"arguments":{}1{}}}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(code(&deep), PARSE_ERROR);
    }

    /// A reading of a message made comparable: the arguments as a value.
    type Read = Result<
        (
            Option<Value>,
            String,
            Map<String, Value>,
            Option<Value>,
            Option<Value>,
        ),
        RpcError,
    >;

    fn comparable(read: Result<Message<'_>, RpcError>) -> Read {
        read.map(|m| {
            let arguments = m
                .arguments
                .as_deref()
                .map(|a| serde_json::from_str(a).unwrap());
            let meta = m.meta.as_deref().map(|a| serde_json::from_str(a).unwrap());
            (m.id, m.method, m.params, arguments, meta)
        })
    }

    /// serde_json's reading of `body`, comparable: the arguments as serde_json read them in the
    /// body (not written out and read again, which may move a float by an ulp).
    fn by_serde(body: &[u8]) -> Read {
        read_parsed(body).map(|m| {
            let doc: Value = serde_json::from_slice(body).unwrap();
            let arguments = Some(doc["params"]["arguments"].clone()).filter(|a| !a.is_null());
            let meta = doc["params"].get("_meta").cloned();
            (m.id, m.method, m.params, arguments, meta)
        })
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
                            Just("arguments".to_string()),
                            Just("name".to_string()),
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

        /// On every JSON document serde_json reads, written compactly or spaced out, the scanning
        /// reader answers exactly as serde_json's reading does.
        #[test]
        fn the_scan_agrees_with_serde_json(doc in any_json(), pretty in any::<bool>()) {
            let body = if pretty {
                serde_json::to_vec_pretty(&doc).unwrap()
            } else {
                serde_json::to_vec(&doc).unwrap()
            };
            prop_assert_eq!(comparable(read(&body)), by_serde(&body), "{}", doc);
        }

        /// Requests with arguments, the shape the scan is for, read as serde_json reads them.
        #[test]
        fn tool_calls_agree_with_serde_json(
            id in any::<i64>(),
            name in "\\PC{0,12}",
            arguments in any_json(),
            meta in any_json(),
        ) {
            let doc = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": name, "arguments": arguments, "_meta": meta}});
            let body = serde_json::to_vec(&doc).unwrap();
            let read_back = comparable(read(&body));
            prop_assert_eq!(&read_back, &by_serde(&body));
            let (_, _, params, args, _) = read_back.unwrap();
            prop_assert_eq!(args.is_some(), !arguments.is_null());
            prop_assert!(!params.contains_key("arguments"));
        }

        /// A message edited a few bytes at a time: never a panic, and wherever serde_json still
        /// reads the body the two readers agree (random bytes alone are rarely JSON).
        #[test]
        fn edited_messages_agree_with_serde_json(
            arguments in any_json(),
            edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let doc = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "t", "arguments": arguments}});
            let mut body = serde_json::to_vec(&doc).unwrap();
            for (at, byte, op) in edits {
                let at = at % (body.len() + 1);
                match op {
                    0 => body.insert(at, byte),
                    1 if at < body.len() => body[at] = byte,
                    _ if at < body.len() => {
                        body.remove(at);
                    }
                    _ => {}
                }
            }
            // Never a panic, whatever the edits made of it.
            let scanned = read(&body);
            if serde_json::from_slice::<Value>(&body).is_ok() {
                prop_assert_eq!(comparable(scanned), by_serde(&body));
            }
        }

        /// Well-formed requests come back as sent.
        #[test]
        fn requests_round_trip(id in any::<i64>(), method in "[a-z/_]{1,40}", name in "\\PC{0,20}") {
            let doc = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {"name": name}});
            let body = serde_json::to_vec(&doc).unwrap();
            let m = read(&body).unwrap();
            prop_assert_eq!(m.id, Some(json!(id)));
            prop_assert_eq!(m.method, method);
            prop_assert_eq!(&m.params["name"], &json!(name));
        }
    }
}
