//! A route's published APIs as MCP tools and prompts: each prompt API is a tool (and an MCP prompt)
//! whose arguments are its variables; each operation of the route's REST service is a tool named by
//! its `operationId`, whose arguments are its parameters and, as `body`, its JSON request body.

use std::collections::HashSet;
use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};
use tollgate_snapshot::{RestOperation, RestService, Route};

use tollgate_snapshot::openapi::variables_schema;

/// What a route's own tool calls: a prompt API or a REST operation.
pub use tollgate_snapshot::mcp_tools::ToolTarget as Target;
/// MCP's rules for a tool name.
pub use tollgate_snapshot::mcp_tools::tool_name;

/// The route's tools, in order: prompt APIs, then REST operations, named by
/// [`tollgate_snapshot::mcp_tools::route_tools`] so the portal lists the names served here.
pub fn list(route: &Route) -> Vec<(String, Target)> {
    tollgate_snapshot::mcp_tools::route_tools(route)
}

/// A route's tool (or prompt) name in the consumer scope: `<route>__<name>`, the route's name
/// qualified as `<namespace>.<route>` when two of the consumer's routes (`ids`) share a name, kept to
/// MCP's characters and 128 characters. `i` is the route's place in `ids`.
pub fn scoped_name(ids: &[&tollgate_snapshot::ObjectRef], i: usize, name: &str) -> String {
    tool_name(&format!("{}__{name}", route_label(ids, i)))
}

/// How the consumer scope names the route `ids[i]`: its name, or `<namespace>.<name>` when another
/// of `ids` has the same name.
pub fn route_label(ids: &[&tollgate_snapshot::ObjectRef], i: usize) -> String {
    let id = ids[i];
    let shared = ids.iter().filter(|other| other.name == id.name).count() > 1;
    if shared {
        format!("{}.{}", id.namespace, id.name)
    } else {
        id.name.to_string()
    }
}

/// `entries` with later repeats of a name suffixed `_2`, `_3`…, within 128 characters.
pub fn unique<T, U>(entries: Vec<(String, T, U)>) -> Vec<(String, T, U)> {
    let mut taken: HashSet<String> = HashSet::with_capacity(entries.len());
    let mut out: Vec<(String, T, U)> = Vec::with_capacity(entries.len());
    for (wanted, a, b) in entries {
        let mut name = wanted.clone();
        let mut n = 2;
        while taken.contains(&name) {
            name = tollgate_snapshot::mcp_tools::suffixed(&wanted, n);
            n += 1;
        }
        taken.insert(name.clone());
        out.push((name, a, b));
    }
    out
}

/// The tool's entry in `tools/list`.
pub fn describe(route: &Route, name: &str, target: Target) -> Value {
    match target {
        Target::Prompt(i) => {
            let p = &route.prompts[i as usize];
            let mut tool = json!({
                "name": name,
                "description": p.description.clone().unwrap_or_else(|| format!("The prompt API {} of {}.", p.name, route.id)),
                "inputSchema": variables_schema(p),
            });
            if let Some(v) = &p.version {
                tool["_meta"] = json!({"dev.tollgate/version": v});
            }
            tool
        }
        Target::Rest(i) => {
            let rest = route
                .rest
                .as_ref()
                .expect("REST targets come from the route's service");
            let op = &rest.operations[i as usize];
            let description = op.spec["description"]
                .as_str()
                .or(op.spec["summary"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| format!("{} {} of the API {}.", op.method, op.path, route.id));
            json!({
                "name": name,
                "description": description,
                "inputSchema": rest_schema(rest, op),
                "annotations": {"readOnlyHint": op.method == "GET" || op.method == "HEAD"},
            })
        }
    }
}

/// An operation's parameters (its own, `$ref`s into the components resolved), with where each goes.
fn parameters<'a>(rest: &'a RestService, op: &'a RestOperation) -> Vec<&'a Value> {
    let Some(list) = op.spec["parameters"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|p| match p.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.strip_prefix("#/components/parameters/")?;
                let found = &rest.components.as_ref()?["parameters"][name];
                found.is_object().then_some(found)
            }
            None => p.is_object().then_some(p),
        })
        .filter(|p| {
            p["name"].is_string() && matches!(p["in"].as_str(), Some("path" | "query" | "header"))
        })
        .collect()
}

/// The JSON request body's schema, and whether the operation requires it.
fn body_schema(op: &RestOperation) -> Option<(Value, bool)> {
    let body = op.spec.get("requestBody")?;
    let schema = body["content"]["application/json"]
        .get("schema")
        .cloned()
        .unwrap_or_else(|| json!({}));
    Some((schema, body["required"].as_bool().unwrap_or(false)))
}

/// The JSON Schema of an operation's arguments: one property per parameter, and `body`.
pub fn rest_schema(rest: &RestService, op: &RestOperation) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for p in parameters(rest, op) {
        let name = p["name"].as_str().expect("filtered to named parameters");
        let mut schema = p
            .get("schema")
            .cloned()
            .unwrap_or_else(|| json!({"type": "string"}));
        if let (Some(d), Some(s)) = (p.get("description"), schema.as_object_mut()) {
            s.insert("description".into(), d.clone());
        }
        if p["in"] == "path" || p["required"] == true {
            required.push(name.to_string());
        }
        properties.insert(name.to_string(), schema);
    }
    if let Some((schema, needed)) = body_schema(op) {
        properties.insert("body".into(), schema);
        if needed {
            required.push("body".into());
        }
    }
    let mut schema =
        json!({"type": "object", "properties": properties, "additionalProperties": false});
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    // MCP schemas stand alone: references into the document's components point at copies in $defs.
    if refers_to_components(&schema)
        && let Some(defs) = rest
            .components
            .as_ref()
            .and_then(|c| c["schemas"].as_object())
    {
        let mut defs = Value::Object(defs.clone());
        refs_to_defs(&mut defs);
        refs_to_defs(&mut schema);
        schema["$defs"] = defs;
    }
    schema
}

/// Whether any `$ref` in `v` points into the document's component schemas.
fn refers_to_components(v: &Value) -> bool {
    match v {
        Value::Object(map) => map.iter().any(|(key, value)| {
            (key == "$ref"
                && value
                    .as_str()
                    .is_some_and(|t| t.starts_with("#/components/schemas/")))
                || refers_to_components(value)
        }),
        Value::Array(items) => items.iter().any(refers_to_components),
        _ => false,
    }
}

fn refs_to_defs(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key == "$ref"
                    && let Value::String(target) = value
                    && let Some(name) = target.strip_prefix("#/components/schemas/")
                {
                    *target = format!("#/$defs/{name}");
                } else {
                    refs_to_defs(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(refs_to_defs),
        _ => {}
    }
}

/// A REST operation's call from a tool's arguments: the path (parameters filled in and
/// percent-encoded) and query, the headers, and the JSON body. A missing path parameter, an unknown
/// argument or a value that is not a scalar where one is needed is refused, naming it.
pub fn rest_request(
    rest: &RestService,
    op: &RestOperation,
    args: &Map<String, Value>,
) -> Result<(String, HeaderMap, Bytes), String> {
    let params = parameters(rest, op);
    let has_body = body_schema(op).is_some();
    if let Some(unknown) = args.keys().find(|k| {
        let is_body = has_body && *k == "body";
        let is_parameter = params.iter().any(|p| p["name"] == k.as_str());
        !(is_body || is_parameter)
    }) {
        return Err(format!("The tool has no argument {unknown:?}."));
    }
    let mut path = op.path.clone();
    let mut query = String::new();
    let mut headers = HeaderMap::new();
    for p in &params {
        let name = p["name"].as_str().expect("filtered to named parameters");
        let Some(value) = args.get(name).filter(|v| !v.is_null()) else {
            if p["in"] == "path" || p["required"] == true {
                return Err(format!("The argument {name:?} is required."));
            }
            continue;
        };
        match p["in"].as_str() {
            Some("path") => {
                let text = scalar(name, value)?;
                path = path.replace(&format!("{{{name}}}"), &percent_encode(&text));
            }
            Some("query") => {
                let values: Vec<&Value> = match value {
                    Value::Array(items) => items.iter().collect(),
                    v => vec![v],
                };
                for v in values {
                    let text = scalar(name, v)?;
                    query.push(if query.is_empty() { '?' } else { '&' });
                    let _ = write!(query, "{}={}", percent_encode(name), percent_encode(&text));
                }
            }
            _ => {
                let text = scalar(name, value)?;
                let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&text),
                ) else {
                    return Err(format!("The argument {name:?} cannot be sent as a header."));
                };
                headers.insert(n, v);
            }
        }
    }
    let body = match args.get("body") {
        Some(b) if has_body => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Bytes::from(serde_json::to_vec(b).expect("JSON values serialise"))
        }
        _ => Bytes::new(),
    };
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    Ok((path + &query, headers, body))
}

/// A scalar argument as text.
fn scalar(name: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(format!(
            "The argument {name:?} must be a string, a number or a boolean."
        )),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_snapshot::Timeouts;

    fn service(spec: Value) -> RestService {
        RestService {
            base_url: "http://x".into(),
            timeouts: Timeouts::default(),
            ca_pem: None,
            credential: None,
            max_request_bytes: 1024,
            operations: vec![RestOperation {
                method: "POST".into(),
                path: "/items/{id}/notes".into(),
                operation_id: Some("addNote".into()),
                spec,
            }],
            components: Some(
                json!({"schemas": {"Note": {"type": "object", "properties": {"text": {"type": "string"}}}}}),
            ),
        }
    }

    fn op_spec() -> Value {
        json!({
            "summary": "Adds a note",
            "parameters": [
                {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "tag", "in": "query", "schema": {"type": "string"}},
                {"name": "x-trace", "in": "header", "schema": {"type": "string"}},
            ],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Note"}}}},
        })
    }

    #[test]
    fn rest_schemas_have_parameters_body_and_standalone_refs() {
        let rest = service(op_spec());
        let s = rest_schema(&rest, &rest.operations[0]);
        assert_eq!(s["required"], json!(["id", "body"]));
        assert_eq!(s["properties"]["body"]["$ref"], "#/$defs/Note");
        assert_eq!(s["$defs"]["Note"]["type"], "object");
        assert_eq!(s["additionalProperties"], false);
    }

    #[test]
    fn rest_requests_fill_the_path_query_headers_and_body() {
        let rest = service(op_spec());
        let args = json!({"id": "a/b c", "tag": "ü", "x-trace": "t1", "body": {"text": "hi"}});
        let (path, headers, body) =
            rest_request(&rest, &rest.operations[0], args.as_object().unwrap()).unwrap();
        assert_eq!(path, "/items/a%2Fb%20c/notes?tag=%C3%BC");
        assert_eq!(headers["x-trace"], "t1");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(&body[..], br#"{"text":"hi"}"#);
        let missing = rest_request(&rest, &rest.operations[0], &Map::new()).unwrap_err();
        assert!(missing.contains("\"id\""), "{missing}");
        let unknown = json!({"id": "1", "nope": 1});
        let e = rest_request(&rest, &rest.operations[0], unknown.as_object().unwrap()).unwrap_err();
        assert!(e.contains("\"nope\""), "{e}");
        let nested = json!({"id": {"a": 1}});
        assert!(rest_request(&rest, &rest.operations[0], nested.as_object().unwrap()).is_err());
    }

    #[test]
    fn consumer_scope_names_say_the_route_and_stay_unique() {
        use tollgate_snapshot::ObjectRef;
        let (a, b, c) = (
            ObjectRef::new("team-a", "chat"),
            ObjectRef::new("team-b", "chat"),
            ObjectRef::new("team-a", "orders"),
        );
        let ids = [&a, &b, &c];
        assert_eq!(scoped_name(&ids, 0, "summarise"), "team-a.chat__summarise");
        assert_eq!(scoped_name(&ids, 1, "summarise"), "team-b.chat__summarise");
        assert_eq!(scoped_name(&ids, 2, "getItem"), "orders__getItem");
        assert_eq!(scoped_name(&ids, 2, &"x".repeat(200)).len(), 128);
        let named = unique(vec![
            ("t".to_string(), 0, 0),
            ("t".to_string(), 1, 0),
            ("t".to_string(), 2, 0),
        ]);
        let names: Vec<&str> = named.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["t", "t_2", "t_3"]);
    }

    #[test]
    fn names_follow_mcp_rules_and_stay_unique() {
        assert_eq!(tool_name("get /items/{id}"), "get__items__id");
        assert_eq!(tool_name("%%%"), "tool");
        assert_eq!(tool_name(&"a".repeat(300)).len(), 128);
    }
}
