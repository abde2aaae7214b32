//! A route's OpenAPI 3.1 document, built from its compiled row — the OpenAI- and
//! Anthropic-compatible operations (the `model` enum lists the route's models), each prompt API
//! (request schema from its variables, response schema from its output), each operation of the
//! route's REST service (from its own document, rewritten under `/api`), bearer or `x-api-key`
//! security, and the route's description, stage and sunset.
//!
//! Pure, so that the proxy serves it at `<prefix>/openapi.json` and the controller's portal renders
//! and exports the same document (API pages, the Backstage export).

use serde_json::{Map, Value, json};

use crate::{Output, Prompt, RestService, Route, Stage, VariableType};

/// RFC 3339 UTC with milliseconds, as the proxy writes instants (`2024-02-29T12:34:56.000Z`).
fn rfc3339_ms(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}
/// The document of `route`.
pub fn document(route: &Route) -> Value {
    let models: Vec<&str> = route.models.iter().map(|m| &*m.name).collect();
    let deprecated = route.stage == Stage::Deprecated;
    let mut paths = Map::new();
    paths.insert(
        "/v1/chat/completions".into(),
        json!({"post": operation(
            "createChatCompletion",
            "Chat completions (OpenAI-compatible)",
            "chat",
            json!({"$ref": "#/components/schemas/ChatCompletionRequest"}),
            json!({"$ref": "#/components/schemas/ChatCompletion"}),
            true,
            deprecated,
        )}),
    );
    paths.insert(
        "/v1/embeddings".into(),
        json!({"post": operation(
            "createEmbedding",
            "Embeddings (OpenAI-compatible)",
            "embeddings",
            json!({"$ref": "#/components/schemas/EmbeddingRequest"}),
            json!({"$ref": "#/components/schemas/EmbeddingList"}),
            false,
            deprecated,
        )}),
    );
    paths.insert(
        "/v1/messages".into(),
        json!({"post": operation(
            "createMessage",
            "Messages (Anthropic-compatible; errors in Anthropic's shape)",
            "messages",
            json!({"$ref": "#/components/schemas/MessageRequest"}),
            json!({"$ref": "#/components/schemas/Message"}),
            true,
            deprecated,
        )}),
    );
    paths.insert(
        "/v1/models".into(),
        json!({"get": {
            "operationId": "listModels",
            "summary": "The models this API serves",
            "tags": ["models"],
            "deprecated": deprecated,
            "responses": {
                "200": {"description": "The models.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ModelList"}}}},
                "401": {"$ref": "#/components/responses/Error"},
            },
        }}),
    );
    paths.insert(
        "/v1/models/{model}".into(),
        json!({"get": {
            "operationId": "retrieveModel",
            "summary": "One model this API serves",
            "tags": ["models"],
            "deprecated": deprecated,
            "parameters": [{"name": "model", "in": "path", "required": true, "schema": {"$ref": "#/components/schemas/ModelName"}}],
            "responses": {
                "200": {"description": "The model.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Model"}}}},
                "401": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"},
            },
        }}),
    );
    let mut schemas = base_schemas(&models);
    let windows: Vec<String> = route
        .models
        .iter()
        .filter_map(|m| m.context_window.map(|w| format!("{} {w}", m.name)))
        .collect();
    if !windows.is_empty() {
        schemas["ModelName"]["description"] = Value::String(format!(
            "Context windows, in tokens (prompt and completion together): {}.",
            windows.join(", ")
        ));
    }
    for p in &route.prompts {
        let request = format!("Prompt.{}.Request", p.name);
        let result = format!("Prompt.{}.Result", p.name);
        schemas.insert(request.clone(), prompt_request(p));
        schemas.insert(result.clone(), prompt_result(p));
        let mut op = operation(
            &format!("prompt_{}", p.name.replace('-', "_")),
            p.description.as_deref().unwrap_or("A prompt API"),
            "prompts",
            json!({"$ref": format!("#/components/schemas/{request}")}),
            json!({"$ref": format!("#/components/schemas/{result}")}),
            true,
            deprecated,
        );
        op["description"] = Value::String(format!(
            "Prompt {}{} on model {}. With `stream: true` the answer is server-sent events: \
             `delta` events `{{\"text\"}}`, then one `done` event `{{\"id\", \"model\", \
             \"finish_reason\", \"usage\"{}}}`, or an `error` event `{{\"error\": {{…}}}}`.",
            p.name,
            p.version
                .as_deref()
                .map(|v| format!(" (version {v})"))
                .unwrap_or_default(),
            p.model,
            if p.output.is_json() {
                ", \"output\""
            } else {
                ""
            },
        ));
        if let Some(v) = &p.version {
            op["x-tollgate-prompt-version"] = Value::String(v.clone());
        }
        paths.insert(format!("/prompts/{}", p.name), json!({ "post": op }));
    }

    // Components of the REST service's document other than schemas, by section.
    let mut rest_components = Map::new();
    if let Some(rest) = &route.rest {
        add_rest(
            rest,
            deprecated,
            &mut paths,
            &mut schemas,
            &mut rest_components,
        );
    }

    let mut info = json!({
        "title": format!("{} ({})", route.id.name, route.id.namespace),
        "version": "v1",
        "description": description(route),
        "x-tollgate-stage": stage_name(route.stage),
    });
    if let Some(s) = route.sunset_unix {
        info["x-tollgate-sunset"] = Value::String(rfc3339_ms(s));
    }
    if let Some(d) = route.deprecation_unix.filter(|&d| d > 0) {
        info["x-tollgate-deprecation"] = Value::String(rfc3339_ms(d));
    }
    let server = if route.prefix.is_empty() {
        "/".to_string()
    } else {
        route.prefix.clone()
    };
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": info,
        "servers": [{"url": server}],
        "security": [{"bearer": []}, {"apiKey": []}],
        "tags": [
            {"name": "chat"}, {"name": "embeddings"}, {"name": "messages"},
            {"name": "models"}, {"name": "prompts"}, {"name": "api"},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Your team's Tollgate key."},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "Your team's Tollgate key."},
            },
            "responses": {
                "Error": {
                    "description": "An error, in OpenAI's shape (Anthropic's on /v1/messages).",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            },
            "schemas": schemas,
        },
    });
    for (section, entries) in rest_components {
        let into = &mut doc["components"][&section];
        if into.is_null() {
            *into = json!({});
        }
        if let (Some(into), Value::Object(entries)) = (into.as_object_mut(), entries) {
            into.extend(entries);
        }
    }
    doc
}

/// Sections of a source document's `components` copied into the route's document.
const REST_SECTIONS: [&str; 8] = [
    "schemas",
    "responses",
    "parameters",
    "examples",
    "requestBodies",
    "headers",
    "links",
    "callbacks",
];

/// Adds the REST service's operations under `/api`, their components renamed `rest.<name>` so that
/// they cannot collide with the route's own, and every `$ref` to them rewritten to match.
fn add_rest(
    rest: &RestService,
    deprecated: bool,
    paths: &mut Map<String, Value>,
    schemas: &mut Map<String, Value>,
    others: &mut Map<String, Value>,
) {
    let mut ids: Vec<String> = paths
        .values()
        .flat_map(|item| item.as_object().into_iter().flat_map(|m| m.values()))
        .filter_map(|op| op["operationId"].as_str().map(str::to_string))
        .collect();
    for op in &rest.operations {
        let mut spec = op.spec.clone();
        rename_refs(&mut spec);
        let Some(obj) = spec.as_object_mut() else {
            continue;
        };
        // Our security applies (the service's own is the gateway's business, not the caller's).
        obj.remove("security");
        obj.remove("servers");
        obj.insert("tags".into(), json!(["api"]));
        if deprecated {
            obj.insert("deprecated".into(), Value::Bool(true));
        }
        let wanted = op.operation_id.clone().unwrap_or_else(|| {
            format!("rest_{}{}", op.method.to_ascii_lowercase(), op.path)
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect()
        });
        let mut id = wanted.clone();
        let mut n = 2;
        while ids.contains(&id) {
            id = format!("{wanted}_{n}");
            n += 1;
        }
        ids.push(id.clone());
        obj.insert("operationId".into(), Value::String(id));
        declare_path_parameters(obj, &op.path);
        if !obj.contains_key("responses") {
            obj.insert(
                "responses".into(),
                json!({"default": {"description": "The service's answer."}}),
            );
        }
        let item = paths
            .entry(format!("/api{}", op.path))
            .or_insert_with(|| json!({}));
        item[op.method.to_ascii_lowercase()] = spec;
    }
    let Some(components) = rest.components.as_ref().and_then(Value::as_object) else {
        return;
    };
    for section in REST_SECTIONS {
        let Some(entries) = components.get(section).and_then(Value::as_object) else {
            continue;
        };
        for (name, value) in entries {
            let mut value = value.clone();
            rename_refs(&mut value);
            if section == "schemas" {
                schemas.insert(format!("rest.{name}"), value);
            } else {
                let all = others
                    .entry(section.to_string())
                    .or_insert_with(|| json!({}));
                all[format!("rest.{name}")] = value;
            }
        }
    }
}

/// Points `$ref`s into the source document's components at their renamed copies.
fn rename_refs(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key == "$ref"
                    && let Value::String(target) = value
                    && let Some(rest) = target.strip_prefix("#/components/")
                    && let Some((section, name)) = rest.split_once('/')
                {
                    *target = format!("#/components/{section}/rest.{name}");
                } else {
                    rename_refs(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rename_refs),
        _ => {}
    }
}

/// Declares each `{name}` of `path` as a path parameter where the operation does not.
fn declare_path_parameters(op: &mut Map<String, Value>, path: &str) {
    let names: Vec<&str> = path
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .collect();
    if names.is_empty() {
        return;
    }
    let params = op
        .entry("parameters")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(list) = params else {
        return;
    };
    for name in names {
        let declared = list
            .iter()
            .any(|p| p["in"] == "path" && p["name"] == name || p.get("$ref").is_some());
        if !declared {
            list.push(
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}),
            );
        }
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Draft => "Draft",
        Stage::Published => "Published",
        Stage::Deprecated => "Deprecated",
        Stage::Retired => "Retired",
    }
}

fn description(route: &Route) -> String {
    let mut text = route.description.clone().unwrap_or_default();
    let stage = match (route.stage, route.sunset_unix) {
        (Stage::Deprecated, Some(s)) => format!(
            "This API is Deprecated and will be retired after {}.",
            rfc3339_ms(s)
        ),
        (Stage::Draft, _) => "This API is a Draft: only its own team can call it.".into(),
        _ => String::new(),
    };
    if !stage.is_empty() {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&stage);
    }
    text
}

/// A POST operation with a JSON request, a JSON answer (and an SSE stream if `streams`), and the
/// error answers every operation may give.
fn operation(
    id: &str,
    summary: &str,
    tag: &str,
    request: Value,
    answer: Value,
    streams: bool,
    deprecated: bool,
) -> Value {
    let mut content = json!({"application/json": {"schema": answer}});
    if streams {
        content["text/event-stream"] = json!({
            "schema": {"type": "string", "description": "Server-sent events, with `\"stream\": true`."},
        });
    }
    let mut responses = json!({"200": {"description": "The answer.", "content": content}});
    for status in [
        "400", "401", "403", "404", "413", "429", "502", "503", "504",
    ] {
        responses[status] = json!({"$ref": "#/components/responses/Error"});
    }
    json!({
        "operationId": id,
        "summary": summary,
        "tags": [tag],
        "deprecated": deprecated,
        "requestBody": {"required": true, "content": {"application/json": {"schema": request}}},
        "responses": responses,
    })
}

/// The JSON Schema of a prompt's variables (also an MCP prompt tool's input schema).
pub fn variables_schema(p: &Prompt) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for v in &p.variables {
        let mut schema = match v.kind {
            VariableType::String => json!({"type": "string"}),
            VariableType::Integer => json!({"type": "integer"}),
            VariableType::Number => json!({"type": "number"}),
            VariableType::Boolean => json!({"type": "boolean"}),
            VariableType::Enum => json!({"type": "string", "enum": v.values}),
        };
        if let Some(max) = v.max_length {
            schema["maxLength"] = max.into();
        }
        if let Some(d) = &v.description {
            schema["description"] = Value::String(d.clone());
        }
        if let Some(d) = &v.default {
            schema["default"] = d.clone();
        }
        if v.required {
            required.push(v.name.clone());
        }
        properties.insert(v.name.clone(), schema);
    }
    let mut variables = json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    });
    if !required.is_empty() {
        variables["required"] = json!(required);
    }
    variables
}

fn prompt_request(p: &Prompt) -> Value {
    let variables = variables_schema(p);
    let required = variables.get("required").is_some();
    let mut members = json!({
        "variables": variables,
        "stream": {"type": "boolean", "default": false},
    });
    if p.allow_messages {
        members["messages"] = json!({
            "type": "array",
            "description": "Chat turns appended after the template.",
            "items": {
                "type": "object",
                "properties": {
                    "role": {"type": "string", "enum": ["user", "assistant"]},
                    "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
                },
                "required": ["role", "content"],
            },
        });
    }
    let mut schema = json!({
        "type": "object",
        "properties": members,
        "additionalProperties": false,
    });
    if required {
        schema["required"] = json!(["variables"]);
    }
    schema
}

fn prompt_result(p: &Prompt) -> Value {
    let output = match &p.output {
        Output::Text => json!({"type": "string"}),
        Output::Json => json!({"description": "The answer, parsed as JSON."}),
        Output::JsonSchema(schema) => schema.clone(),
    };
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "prompt.result"},
            "model": {"type": "string", "description": "The model that answered."},
            "output": output,
            "finish_reason": {"type": "string", "enum": ["stop", "length", "tool_calls", "content_filter"]},
            "usage": {"$ref": "#/components/schemas/PromptUsage"},
        },
        "required": ["id", "object", "model", "output", "finish_reason", "usage"],
    })
}

fn base_schemas(models: &[&str]) -> Map<String, Value> {
    let schemas = json!({
        "ModelName": {"type": "string", "enum": models},
        "ChatCompletionRequest": {
            "type": "object",
            "properties": {
                "model": {"$ref": "#/components/schemas/ModelName"},
                "messages": {"type": "array", "items": {"type": "object", "properties": {
                    "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
                    "content": {},
                }, "required": ["role"]}},
                "stream": {"type": "boolean"},
                "max_tokens": {"type": "integer"},
                "max_completion_tokens": {"type": "integer"},
                "temperature": {"type": "number"},
                "top_p": {"type": "number"},
                "tools": {"type": "array", "items": {"type": "object"}},
                "response_format": {"type": "object"},
            },
            "required": ["model", "messages"],
        },
        "ChatCompletion": {"type": "object", "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": "object"},
        }},
        "EmbeddingRequest": {
            "type": "object",
            "properties": {
                "model": {"$ref": "#/components/schemas/ModelName"},
                "input": {"oneOf": [{"type": "string"}, {"type": "array"}]},
                "dimensions": {"type": "integer"},
                "encoding_format": {"type": "string", "enum": ["float", "base64"]},
            },
            "required": ["model", "input"],
        },
        "EmbeddingList": {"type": "object", "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"type": "object"}},
            "model": {"type": "string"},
            "usage": {"type": "object"},
        }},
        "MessageRequest": {
            "type": "object",
            "properties": {
                "model": {"$ref": "#/components/schemas/ModelName"},
                "max_tokens": {"type": "integer"},
                "system": {},
                "messages": {"type": "array", "items": {"type": "object"}},
                "stream": {"type": "boolean"},
            },
            "required": ["model", "max_tokens", "messages"],
        },
        "Message": {"type": "object", "properties": {
            "id": {"type": "string"},
            "type": {"const": "message"},
            "role": {"const": "assistant"},
            "content": {"type": "array", "items": {"type": "object"}},
            "model": {"type": "string"},
            "stop_reason": {"type": ["string", "null"]},
            "usage": {"type": "object"},
        }},
        "Model": {"type": "object", "properties": {
            "id": {"$ref": "#/components/schemas/ModelName"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        }, "required": ["id", "object"]},
        "ModelList": {"type": "object", "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
        }},
        "PromptUsage": {"type": "object", "properties": {
            "input_tokens": {"type": "integer"},
            "output_tokens": {"type": "integer"},
            "total_tokens": {"type": "integer"},
        }},
        "Error": {"type": "object", "properties": {
            "error": {"type": "object", "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            }, "required": ["message", "type"]},
        }, "required": ["error"]},
    });
    match schemas {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_written_as_the_proxy_writes_them() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_709_210_096), "2024-02-29T12:34:56.000Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.000Z");
        assert_eq!(rfc3339_ms(1_798_761_599), "2026-12-31T23:59:59.000Z");
    }
}
