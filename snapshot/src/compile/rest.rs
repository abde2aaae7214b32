//! `AIRoute.spec.rest` → [`RestService`]: the backend URL, timeouts, CA and credential resolved from
//! Secrets, and the operations read from the OpenAPI document in a ConfigMap.
//!
//! Nothing here fails the route: every problem is a clause for its `ResolvedRefs` condition, and the
//! route keeps serving its models without the REST service until the problem is fixed.

use std::collections::hash_map::Entry;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Map, Value};
use tollgate_crds::RestService as RestSpec;

use super::objects::{join_list, namespace_of, same_name_order};
use super::provider::timeouts_from;
use super::secrets::Secrets;
use crate::fx::{FxHashMap, map_with_capacity};
use crate::model::{Credential, RestCredential, RestOperation, RestService};

/// Request bodies accepted when `maxRequestBytes` is not given.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 8 * 1024 * 1024;
/// Largest OpenAPI document read (the ConfigMap limit is 1 MiB anyway).
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Methods an OpenAPI Path Item may declare, as its keys spell them.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];
/// Headers the gateway sets itself, which a credential must not replace.
const MANAGED_HEADERS: [&str; 7] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "x-request-id",
];

/// ConfigMaps by namespace and name.
pub(crate) struct ConfigMaps<'a> {
    by_id: FxHashMap<(&'a str, &'a str), &'a ConfigMap>,
}

impl<'a> ConfigMaps<'a> {
    /// Indexes ConfigMaps; of duplicates (standalone files only) the canonical first is used.
    pub fn new(maps: &'a [ConfigMap]) -> Self {
        let mut by_id: FxHashMap<(&'a str, &'a str), &'a ConfigMap> = map_with_capacity(maps.len());
        for map in maps {
            let meta = &map.metadata;
            let key = (namespace_of(meta), meta.name.as_deref().unwrap_or_default());
            match by_id.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(map);
                }
                Entry::Occupied(mut slot) => {
                    if same_name_order(map, *slot.get()).is_lt() {
                        slot.insert(map);
                    }
                }
            }
        }
        Self { by_id }
    }

    fn value(&self, namespace: &str, name: &str, key: &str) -> Result<&'a str, Problem> {
        let map = self.by_id.get(&(namespace, name)).ok_or_else(|| {
            (
                "ConfigMapNotFound",
                format!("ConfigMap {namespace}/{name} does not exist (or lacks the label tollgate.dev/config: \"true\")"),
            )
        })?;
        map.data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(String::as_str)
            .ok_or_else(|| {
                let keys: Vec<&str> = map
                    .data
                    .iter()
                    .flat_map(|d| d.keys())
                    .map(String::as_str)
                    .collect();
                (
                    "ConfigMapKeyNotFound",
                    if keys.is_empty() {
                        format!("ConfigMap {namespace}/{name} has no key {key:?} (it is empty)")
                    } else {
                        format!(
                            "ConfigMap {namespace}/{name} has no key {key:?} (its keys are {})",
                            join_list(&keys)
                        )
                    },
                )
            })
    }
}

/// A condition reason and a clause saying what is wrong.
pub(crate) type Problem = (&'static str, String);

/// Compiles a route's REST service, or says everything that keeps it from being served.
pub(crate) fn compile_rest(
    spec: &RestSpec,
    namespace: &str,
    secrets: &Secrets<'_>,
    config_maps: &ConfigMaps<'_>,
) -> Result<RestService, Vec<Problem>> {
    let mut problems: Vec<Problem> = Vec::new();
    let backend = &spec.backend;
    let base_url = normalize_url(&backend.url)
        .map_err(|clause| problems.push(("InvalidBackendURL", clause)))
        .unwrap_or_default();
    let mut invalid = Vec::new();
    let timeouts = timeouts_from(
        backend.timeouts.as_ref(),
        "spec.rest.backend.timeouts",
        &mut invalid,
    );
    problems.extend(invalid.into_iter().map(|clause| ("InvalidTimeout", clause)));
    let ca_pem = backend.tls.as_ref().and_then(|tls| {
        let r = &tls.ca_secret_ref;
        match secrets.value(namespace, &r.name, &r.key) {
            Ok(pem) => match std::str::from_utf8(pem) {
                Ok(text) if text.contains("-----BEGIN CERTIFICATE-----") => Some(text.to_string()),
                _ => {
                    problems.push((
                        "InvalidCACertificate",
                        format!(
                            "key {:?} of Secret {namespace}/{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                            r.key, r.name
                        ),
                    ));
                    None
                }
            },
            Err(e) => {
                problems.push((e.reason(), e.describe(namespace, &r.name, &r.key)));
                None
            }
        }
    });
    let credential = backend.credentials.as_ref().and_then(|c| {
        header_credential(c, "spec.rest.backend.credentials", namespace, secrets)
            .map_err(|p| problems.push(p))
            .ok()
    });
    let source = &spec.open_api.config_map_ref;
    let document = config_maps
        .value(namespace, &source.name, &source.key)
        .map_err(|p| problems.push(p))
        .ok()
        .and_then(|text| {
            read_document(text)
                .map_err(|clause| {
                    problems.push((
                        "InvalidOpenAPI",
                        format!(
                            "the OpenAPI document in key {:?} of ConfigMap {namespace}/{}: {clause}",
                            source.key, source.name
                        ),
                    ))
                })
                .ok()
        });
    if !problems.is_empty() {
        return Err(problems);
    }
    let (operations, components) = document.expect("no problem means a document");
    Ok(RestService {
        base_url,
        timeouts,
        ca_pem,
        credential,
        max_request_bytes: backend
            .max_request_bytes
            .unwrap_or(DEFAULT_MAX_REQUEST_BYTES),
        operations,
        components,
    })
}

/// A credential from a Secret sent as a header (`field` names it in messages): the header checked
/// (a token the gateway does not manage), the value read and its prefix put before it.
pub(crate) fn header_credential(
    c: &tollgate_crds::RestCredentials,
    field: &str,
    namespace: &str,
    secrets: &Secrets<'_>,
) -> Result<RestCredential, Problem> {
    let header = c.header.to_ascii_lowercase();
    if header.is_empty()
        || !header.bytes().all(is_token_byte)
        || MANAGED_HEADERS.contains(&header.as_str())
    {
        return Err((
            "InvalidCredentialHeader",
            format!(
                "{field}.header {:?} cannot carry a credential: name another header",
                c.header
            ),
        ));
    }
    let r = &c.secret_ref;
    let secret = secrets
        .value(namespace, &r.name, &r.key)
        .map_err(|e| (e.reason(), e.describe(namespace, &r.name, &r.key)))?;
    let value = [c.prefix.as_deref().unwrap_or_default().as_bytes(), secret].concat();
    match String::from_utf8(value) {
        Ok(value)
            if value
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) =>
        {
            Ok(RestCredential {
                header,
                value: Credential(value),
            })
        }
        // Never quote the value: it is a credential.
        _ => Err((
            "InvalidCredential",
            format!(
                "key {:?} of Secret {namespace}/{} (with the prefix) is not a valid header value: use printable ASCII",
                r.key, r.name
            ),
        )),
    }
}

/// An RFC 9110 token byte (header names).
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks an `http(s)://host[:port][/path]` URL and drops trailing slashes.
pub(crate) fn normalize_url(given: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "set spec.rest.backend.url to an http:// or https:// URL without query or fragment (got {given:?})"
        )
    };
    let rest = given
        .strip_prefix("https://")
        .or_else(|| given.strip_prefix("http://"))
        .ok_or_else(bad)?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty()
        || host.contains('@')
        || given.contains(['?', '#'])
        || given.bytes().any(|b| !(b'!'..=b'~').contains(&b))
    {
        return Err(bad());
    }
    Ok(given.trim_end_matches('/').to_string())
}

/// The operations of an OpenAPI 3.x document (JSON or YAML), sorted by path then method, and its
/// `components`.
pub(crate) fn read_document(text: &str) -> Result<(Vec<RestOperation>, Option<Value>), String> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(format!("it is larger than {MAX_DOCUMENT_BYTES} bytes"));
    }
    // YAML is a superset of JSON; JSON is tried first for its clearer errors.
    let document: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(json) => match serde_yaml::from_str::<Value>(text) {
            Ok(value) => value,
            Err(yaml) if text.trim_start().starts_with('{') => {
                return Err(format!("it is not valid JSON ({json}; as YAML: {yaml})"));
            }
            Err(yaml) => return Err(format!("it is neither JSON nor YAML ({yaml})")),
        },
    };
    let Some(document) = document.as_object() else {
        return Err("it is not an object".into());
    };
    match document.get("openapi").and_then(Value::as_str) {
        Some(v) if v.starts_with("3.") => {}
        Some(v) => {
            return Err(format!(
                "its openapi version is {v:?}; only OpenAPI 3.x documents are read"
            ));
        }
        None => {
            return Err(
                "it has no `openapi` version field (Swagger 2.0 documents are not read)".into(),
            );
        }
    }
    let paths = match document.get("paths") {
        Some(Value::Object(paths)) => paths,
        Some(_) => return Err("its `paths` is not an object".into()),
        None => return Err("it has no `paths`".into()),
    };
    let mut problems = Vec::new();
    let mut operations = Vec::new();
    for (path, item) in paths {
        if let Err(clause) = check_template(path) {
            problems.push(format!("path {path:?}: {clause}"));
            continue;
        }
        let Some(item) = item.as_object() else {
            problems.push(format!("path {path:?} is not a Path Item object"));
            continue;
        };
        if item.contains_key("$ref") {
            problems.push(format!(
                "path {path:?} is a $ref; write its operations out in place"
            ));
            continue;
        }
        let shared = item.get("parameters").and_then(Value::as_array);
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let Some(op) = op.as_object() else {
                problems.push(format!(
                    "{} {path} is not an Operation object",
                    method.to_ascii_uppercase()
                ));
                continue;
            };
            let operation_id = match op.get("operationId") {
                None => None,
                Some(Value::String(id)) => Some(id.clone()),
                Some(_) => {
                    problems.push(format!(
                        "the operationId of {} {path} is not a string",
                        method.to_ascii_uppercase()
                    ));
                    continue;
                }
            };
            operations.push(RestOperation {
                method: method.to_ascii_uppercase(),
                path: path.clone(),
                operation_id,
                spec: Value::Object(with_shared_parameters(op, shared)),
            });
        }
    }
    let mut ids: Vec<&str> = operations
        .iter()
        .filter_map(|o| o.operation_id.as_deref())
        .collect();
    ids.sort_unstable();
    let mut repeated: Vec<&str> = ids
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    repeated.dedup();
    if !repeated.is_empty() {
        problems.push(format!(
            "operationId {} is used more than once",
            join_list(&repeated)
        ));
    }
    if problems.is_empty() && operations.is_empty() {
        problems.push("it declares no operations".into());
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let method_rank = |m: &str| METHODS.iter().position(|x| x.eq_ignore_ascii_case(m));
    operations.sort_by(|a, b| {
        a.path
            .cmp(&b.path)
            .then_with(|| method_rank(&a.method).cmp(&method_rank(&b.method)))
    });
    Ok((operations, document.get("components").cloned()))
}

/// A path template: starts with `/`, braces balanced and not nested, parameters named, no `.`/`..`
/// segments, no query or fragment.
fn check_template(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("it must start with '/'".into());
    }
    if path.contains(['?', '#']) || path.bytes().any(|b| !(b'!'..=b'~').contains(&b)) {
        return Err("it must be a plain path, without query, fragment or spaces".into());
    }
    for segment in path.split('/').skip(1) {
        if segment == "." || segment == ".." {
            return Err("it must not have '.' or '..' segments".into());
        }
        let mut open = false;
        let mut name_len = 0;
        let mut last_close = None;
        for (i, b) in segment.bytes().enumerate() {
            match (b, open) {
                (b'{', false) => {
                    if last_close == Some(i) {
                        return Err(
                            "two parameters follow each other without text between them".into()
                        );
                    }
                    open = true;
                    name_len = 0;
                }
                (b'}', true) => {
                    if name_len == 0 {
                        return Err("a parameter has no name ('{}')".into());
                    }
                    open = false;
                    last_close = Some(i + 1);
                }
                (b'{' | b'}', _) => return Err("its braces are not balanced".into()),
                (_, true) => name_len += 1,
                _ => {}
            }
        }
        if open {
            return Err("its braces are not balanced".into());
        }
    }
    Ok(())
}

/// The operation with the Path Item's shared `parameters` it does not override (same `name` and
/// `in`) added, so that the operation describes itself.
fn with_shared_parameters(
    op: &Map<String, Value>,
    shared: Option<&Vec<Value>>,
) -> Map<String, Value> {
    let mut op = op.clone();
    let Some(shared) = shared.filter(|s| !s.is_empty()) else {
        return op;
    };
    let key = |p: &Value| {
        (
            p.get("name").cloned(),
            p.get("in").cloned(),
            p.get("$ref").cloned(),
        )
    };
    let mut parameters: Vec<Value> = op
        .get("parameters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for p in shared {
        if !parameters.iter().any(|q| key(q) == key(p)) {
            parameters.push(p.clone());
        }
    }
    op.insert("parameters".into(), Value::Array(parameters));
    op
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text, and any document shaped roughly like OpenAPI, gives operations or a reason: no panic.
        #[test]
        fn reading_any_document_never_panics(text in "\\PC{0,200}") {
            let _ = read_document(&text);
        }

        #[test]
        fn any_path_keys_are_checked_without_panicking(
            paths in proptest::collection::vec("[/{}a-z.?]{0,12}", 0..6),
            methods in proptest::collection::vec("(get|put|post|x)", 1..3),
        ) {
            let mut doc = serde_json::json!({"openapi": "3.1.0", "paths": {}});
            for p in &paths {
                let item: serde_json::Map<String, Value> = methods
                    .iter()
                    .map(|m| (m.clone(), serde_json::json!({})))
                    .collect();
                doc["paths"][p] = Value::Object(item);
            }
            if let Ok((ops, _)) = read_document(&doc.to_string()) {
                for op in ops {
                    prop_assert!(check_template(&op.path).is_ok());
                }
            }
        }
    }
}
