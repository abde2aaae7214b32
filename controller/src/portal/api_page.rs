//! An API's page: its summary, the request-access form, code samples with the proxy's real base URL,
//! and its operations rendered as HTML from the route's OpenAPI document
//! ([`tollgate_snapshot::openapi::document`], the document the proxy serves at `<prefix>/openapi.json`).

use std::fmt::Write as _;

use hyper::StatusCode;
use serde_json::Value;
use tollgate_snapshot::Route;

use super::{
    Portal, access,
    catalog::{self, card},
    html::{self, csrf_field, esc, url_part},
    http::{Reply, Who, html_reply, not_found},
};

/// `GET /apis/<namespace>/<name>`.
pub async fn page(portal: &Portal, who: &mut Who, ns: &str, name: &str) -> Reply {
    let Some(published) = catalog::snapshot(portal) else {
        return not_found(who);
    };
    let Some(route) = published
        .snapshot
        .content
        .routes
        .iter()
        .find(|r| *r.id.namespace == *ns && *r.id.name == *name)
    else {
        return not_found(who);
    };
    // A Draft someone may not see answers exactly as a route that does not exist.
    if !catalog::visible(who, route).await {
        return not_found(who);
    }
    let doc = tollgate_snapshot::openapi::document(route);
    let base = format!("{}{}", portal.proxy_base_url, route.prefix);
    let mut body = format!("<h1>{}</h1>", esc(&route.id.name));
    body.push_str(&card(route));
    body.push_str(&request_form(portal, who, route).await);
    body.push_str(&samples(route, &base));
    body.push_str(&super::try_it::form(portal, who, route));
    body.push_str("<h2>Operations</h2>");
    let _ = write!(
        body,
        "<p>Base URL <code>{}</code>. Send your key as <code>Authorization: Bearer &lt;key&gt;</code> \
         or <code>x-api-key</code>.</p>",
        esc(&base)
    );
    body.push_str(&operations(&doc));
    html_reply(
        StatusCode::OK,
        html::page(&route.id.name, Some(who.viewer()), &body),
    )
}

async fn request_form(portal: &Portal, who: &mut Who, route: &Route) -> String {
    let consumers = access::my_consumers(portal, who).await;
    let mut out = String::from("<h2>Request access</h2>");
    if consumers.is_empty() {
        out.push_str(
            "<p class=\"muted\">You have no consumer in a namespace where you may create \
             ApiSubscriptions.</p>",
        );
        return out;
    }
    let options: String = consumers
        .iter()
        .map(|c| {
            let value = format!("{}/{}", c.namespace, c.name);
            format!("<option value=\"{}\">{}</option>", esc(&value), esc(&value))
        })
        .collect();
    let _ = write!(
        out,
        "<form class=\"card\" method=\"post\" action=\"/apis/{}/{}/subscribe\">{}\
         <label for=\"consumer\">Consumer</label><select id=\"consumer\" name=\"consumer\">{options}</select>\
         <label for=\"reason\">Reason</label><textarea id=\"reason\" name=\"reason\" maxlength=\"1024\"></textarea>\
         <p><button type=\"submit\">Request access</button></p></form>",
        url_part(&route.id.namespace),
        url_part(&route.id.name),
        csrf_field(&who.session.csrf),
    );
    out
}

fn samples(route: &Route, base: &str) -> String {
    let model = route
        .models
        .first()
        .map(|m| m.name.to_string())
        .unwrap_or_else(|| "MODEL".into());
    let curl = format!(
        "curl {base}/v1/chat/completions \\\n  -H \"Authorization: Bearer $TOLLGATE_KEY\" \\\n  \
         -H \"Content-Type: application/json\" \\\n  \
         -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'"
    );
    let python = format!(
        "import os\nfrom openai import OpenAI\n\nclient = OpenAI(base_url=\"{base}/v1\", \
         api_key=os.environ[\"TOLLGATE_KEY\"])\nreply = client.chat.completions.create(\n    \
         model=\"{model}\", messages=[{{\"role\": \"user\", \"content\": \"Hello!\"}}]\n)\n\
         print(reply.choices[0].message.content)"
    );
    // The Anthropic SDK appends `/v1/messages` to its base URL and sends the key as `x-api-key`,
    // both of which the proxy serves under the route's prefix.
    let anthropic = format!(
        "import os\nfrom anthropic import Anthropic\n\nclient = Anthropic(base_url=\"{base}\", \
         api_key=os.environ[\"TOLLGATE_KEY\"])\nreply = client.messages.create(\n    \
         model=\"{model}\", max_tokens=256, messages=[{{\"role\": \"user\", \"content\": \"Hello!\"}}]\n)\n\
         print(reply.content[0].text)"
    );
    format!(
        "<h2>Call it</h2><h3>curl</h3><pre><code>{}</code></pre>\
         <h3>OpenAI Python SDK</h3><pre><code>{}</code></pre>\
         <h3>Anthropic Python SDK</h3><pre><code>{}</code></pre>{}",
        esc(&curl),
        esc(&python),
        esc(&anthropic),
        mcp_sample(route, base)
    )
}

/// Every route is also an MCP server at `<prefix>/mcp` (Streamable HTTP): the configuration an MCP
/// client needs, for clients that speak Streamable HTTP themselves and through `mcp-remote` for those
/// that only start local servers (Claude Desktop).
fn mcp_sample(route: &Route, base: &str) -> String {
    let url = format!("{base}/mcp");
    let server = format!("tollgate-{}", route.id.name);
    let direct = serde_json::json!({"mcpServers": {server.clone(): {
        "type": "http",
        "url": url,
        "headers": {"Authorization": "Bearer ${TOLLGATE_KEY}"},
    }}});
    let remote = serde_json::json!({"mcpServers": {server: {
        "command": "npx",
        "args": ["mcp-remote", url, "--header", "Authorization: Bearer ${TOLLGATE_KEY}"],
        "env": {"TOLLGATE_KEY": "<your key>"},
    }}});
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    format!(
        "<h3>MCP client</h3><p>This API is also an MCP server at <code id=\"mcp-url\">{}</code> \
         (Streamable HTTP): its prompt APIs and REST operations are tools, called with the same key \
         and subscription.</p><pre><code>{}</code></pre>\
         <p>For a client that only starts local servers (Claude Desktop), through <code>mcp-remote</code>:</p>\
         <pre><code>{}</code></pre>",
        esc(&url),
        esc(&pretty(&direct)),
        esc(&pretty(&remote)),
    )
}

/// The document's operations as HTML: method and path, summary and description, parameters, the
/// request body's top-level fields and the answers.
pub fn operations(doc: &Value) -> String {
    let mut out = String::new();
    let Some(paths) = doc["paths"].as_object() else {
        return out;
    };
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, op) in item {
            if !matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "patch" | "head" | "options"
            ) {
                continue;
            }
            let _ = write!(
                out,
                "<section class=\"card op\"><h3><span class=\"method\">{}</span> <code>{}</code>",
                esc(&method.to_ascii_uppercase()),
                esc(path)
            );
            if op["deprecated"] == true {
                out.push_str(" <span class=\"stage stage-Deprecated\">deprecated</span>");
            }
            out.push_str("</h3>");
            if let Some(s) = op["summary"].as_str() {
                let _ = write!(out, "<p><strong>{}</strong></p>", esc(s));
            }
            if let Some(d) = op["description"].as_str() {
                let _ = write!(out, "<p>{}</p>", esc(d));
            }
            parameters(doc, op, &mut out);
            request_body(doc, op, &mut out);
            responses(doc, op, &mut out);
            out.push_str("</section>");
        }
    }
    out
}

/// Follows a local `$ref` (`#/components/...`) once.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str().and_then(|r| r.strip_prefix("#/")) {
        Some(pointer) => doc.pointer(&format!("/{pointer}")).unwrap_or(v),
        None => v,
    }
}

/// A schema's type in a few words.
fn type_of(schema: &Value) -> String {
    if let Some(r) = schema["$ref"].as_str() {
        return r.rsplit('/').next().unwrap_or(r).to_owned();
    }
    if let Some(values) = schema["enum"].as_array() {
        let names: Vec<String> = values
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect();
        return format!("one of {}", names.join(", "));
    }
    match &schema["type"] {
        Value::String(t) if t == "array" => format!("array of {}", type_of(&schema["items"])),
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ if schema.get("oneOf").is_some() || schema.get("anyOf").is_some() => {
            "one of several".into()
        }
        _ => "any".into(),
    }
}

fn parameters(doc: &Value, op: &Value, out: &mut String) {
    let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) else {
        return;
    };
    out.push_str("<h4>Parameters</h4><table><thead><tr><th>Name</th><th>In</th><th>Type</th><th>Required</th></tr></thead><tbody>");
    for p in params {
        let p = resolve(doc, p);
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(p["name"].as_str().unwrap_or("")),
            esc(p["in"].as_str().unwrap_or("")),
            esc(&type_of(&p["schema"])),
            if p["required"] == true { "yes" } else { "no" }
        );
    }
    out.push_str("</tbody></table>");
}

fn request_body(doc: &Value, op: &Value, out: &mut String) {
    let body = resolve(doc, &op["requestBody"]);
    let Some(content) = body["content"].as_object() else {
        return;
    };
    for (media, entry) in content {
        let schema = resolve(doc, &entry["schema"]);
        let _ = write!(out, "<h4>Request body <code>{}</code></h4>", esc(media));
        let Some(props) = schema["properties"].as_object() else {
            let _ = write!(out, "<p>{}</p>", esc(&type_of(&entry["schema"])));
            continue;
        };
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.push_str("<table><thead><tr><th>Field</th><th>Type</th><th>Required</th><th>Description</th></tr></thead><tbody>");
        for (name, prop) in props {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(name),
                esc(&type_of(prop)),
                if required.contains(&name.as_str()) {
                    "yes"
                } else {
                    "no"
                },
                esc(prop["description"].as_str().unwrap_or(""))
            );
        }
        out.push_str("</tbody></table>");
    }
}

fn responses(doc: &Value, op: &Value, out: &mut String) {
    let Some(responses) = op["responses"].as_object() else {
        return;
    };
    out.push_str("<h4>Answers</h4><ul>");
    for (status, r) in responses {
        let r = resolve(doc, r);
        let _ = write!(
            out,
            "<li><code>{}</code> {}</li>",
            esc(status),
            esc(r["description"].as_str().unwrap_or(""))
        );
    }
    out.push_str("</ul>");
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn operations_render_as_readable_html_with_refs_followed() {
        let doc = json!({
            "paths": {"/items/{id}": {"get": {
                "summary": "One <item>",
                "parameters": [{"$ref": "#/components/parameters/Id"}],
                "responses": {"200": {"description": "The item."}, "404": {"$ref": "#/components/responses/Error"}},
            }, "post": {
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Item"}}}},
                "responses": {},
            }}},
            "components": {
                "parameters": {"Id": {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}},
                "responses": {"Error": {"description": "An error."}},
                "schemas": {"Item": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string", "description": "Its name"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "kind": {"enum": ["a", "b"]},
                }}},
            },
        });
        let html = operations(&doc);
        assert!(html.contains("<span class=\"method\">GET</span> <code>/items/{id}</code>"));
        assert!(html.contains("One &lt;item&gt;"));
        assert!(html.contains("<td><code>id</code></td><td>path</td><td>string</td><td>yes</td>"));
        assert!(html.contains("<code>404</code> An error."));
        assert!(
            html.contains("<td><code>name</code></td><td>string</td><td>yes</td><td>Its name</td>")
        );
        assert!(html.contains("array of string"));
        assert!(html.contains("one of a, b"));
        assert!(!html.contains("\"$ref\""), "no raw JSON");
    }
}
