//! An API's page: its summary, the request-access form, code samples with the proxy's real base URL,
//! and its operations rendered as HTML from the route's OpenAPI document
//! ([`tollgate_snapshot::openapi::document`], the document the proxy serves at `<prefix>/openapi.json`).

use std::fmt::Write as _;

use hyper::StatusCode;
use serde_json::Value;
use tollgate_snapshot::{Route, ToolFilter, mcp_tools::ToolTarget};

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
    body.push_str(&mcp_tools(route, &base));
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

/// The tools the route's MCP endpoint offers: its own (prompt APIs and REST operations, named as
/// the proxy names them, by [`tollgate_snapshot::mcp_tools::route_tools`]), then each upstream MCP
/// server's, whose tools are known only when the proxy lists them: the server, the prefix its tools'
/// names get and which of them the route offers.
pub fn mcp_tools(route: &Route, base: &str) -> String {
    let own = tollgate_snapshot::mcp_tools::route_tools(route);
    let mut out = format!(
        "<h2>MCP tools</h2><p>The tools an MCP client finds at <code>{}/mcp</code>.</p>",
        esc(base)
    );
    if own.is_empty() && route.mcp_servers.is_empty() {
        out.push_str("<p class=\"muted\">None: this API has no prompt APIs, REST operations or upstream MCP servers.</p>");
        return out;
    }
    if !own.is_empty() {
        out.push_str(
            "<table id=\"mcp-tools\"><thead><tr><th>Tool</th><th>Calls</th></tr></thead><tbody>",
        );
        for (name, target) in &own {
            let calls = match *target {
                ToolTarget::Prompt(i) => format!(
                    "the prompt API <code>{}</code>",
                    esc(&route.prompts[i as usize].name)
                ),
                ToolTarget::Rest(i) => match &route.rest {
                    Some(rest) => {
                        let op = &rest.operations[i as usize];
                        format!("<code>{} /api{}</code>", esc(&op.method), esc(&op.path))
                    }
                    None => String::new(),
                },
            };
            let _ = write!(
                out,
                "<tr><td><code class=\"mcp-tool\">{}</code></td><td>{calls}</td></tr>",
                esc(name)
            );
        }
        out.push_str("</tbody></table>");
    }
    if !route.mcp_servers.is_empty() {
        out.push_str(
            "<h3>From upstream MCP servers</h3><p>Their tools are listed when a client asks; each              name is the server's prefix and the tool's name there (one this API already uses is left              out).</p><table id=\"mcp-servers\"><thead><tr><th>Server</th><th>Prefix</th>\
             <th>Tools offered</th></tr></thead><tbody>",
        );
        for server in &route.mcp_servers {
            let offered = match &server.filter {
                ToolFilter::All => "all".to_string(),
                ToolFilter::Include(names) => names
                    .iter()
                    .map(|n| format!("<code>{}</code>", esc(n)))
                    .collect::<Vec<_>>()
                    .join(", "),
                ToolFilter::Matching(p) => {
                    format!("those whose name matches <code>{}</code>", esc(p.as_str()))
                }
            };
            let prefix = if server.tool_prefix.is_empty() {
                "<span class=\"muted\">none</span>".to_string()
            } else {
                format!("<code>{}</code>", esc(&server.tool_prefix))
            };
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{prefix}</td><td>{offered}</td></tr>",
                esc(&server.id.to_string())
            );
        }
        out.push_str("</tbody></table>");
    }
    out
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

    /// A route with prompt APIs `summarise` and `get_items`, REST operations (one without an
    /// `operationId`, whose name collides with the second prompt's) and two upstream MCP servers.
    fn route_with_tools() -> Route {
        let mut route: Route = serde_json::from_value(json!({
            "id": {"namespace": "team-a", "name": "shop"},
            "prefix": "/shop",
            "hostnames": [],
            "stage": "Published",
            "sunset_unix": null,
            "models": [],
            "limits": {"requests_per_minute": null, "tokens_per_minute": null},
            "approval": "Manual",
        }))
        .expect("a route row");
        route.prompts = ["summarise", "get_items"]
            .into_iter()
            .map(|name| tollgate_snapshot::Prompt {
                name: name.into(),
                description: None,
                version: None,
                model: "m".into(),
                messages: Vec::new(),
                variables: Vec::new(),
                parameters: Default::default(),
                output: tollgate_snapshot::Output::Text,
                allow_messages: false,
            })
            .collect();
        route.rest = Some(
            serde_json::from_value(json!({
                "base_url": "http://x", "timeouts": tollgate_snapshot::Timeouts::default(),
                "ca_pem": null, "credential": null, "max_request_bytes": 1, "components": null,
                "operations": [
                    {"method": "GET", "path": "/items", "operation_id": null, "spec": {}},
                    {"method": "POST", "path": "/items/{id}", "operation_id": "add item!", "spec": {}},
                ],
            }))
            .expect("a REST service"),
        );
        let server = |name: &str, prefix: &str, filter| tollgate_snapshot::McpServer {
            id: tollgate_snapshot::ObjectRef::new("tools", name),
            url: "http://mcp".into(),
            credential: None,
            forward_headers: Vec::new(),
            timeouts: tollgate_snapshot::Timeouts::default(),
            tool_prefix: prefix.into(),
            filter,
        };
        route.mcp_servers = vec![
            server(
                "search",
                "web_",
                ToolFilter::Include(vec!["find".into(), "<b>".into()]),
            ),
            server(
                "files",
                "",
                ToolFilter::Matching(
                    tollgate_snapshot::Pattern::new("read_.*").expect("a pattern"),
                ),
            ),
        ];
        route
    }

    #[test]
    fn mcp_tools_are_named_as_the_proxy_serves_them() {
        let route = route_with_tools();
        let html = mcp_tools(&route, "https://ai.example.test/shop");
        let shown: Vec<&str> = html
            .split("<code class=\"mcp-tool\">")
            .skip(1)
            .map(|rest| &rest[..rest.find("</code>").expect("closed")])
            .collect();
        let served: Vec<String> = tollgate_snapshot::mcp_tools::route_tools(&route)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(shown, served);
        assert_eq!(
            shown,
            ["summarise", "get_items", "get_items_2", "add_item"],
            "the second get_items is the operation without an operationId"
        );
        assert!(html.contains("<code>https://ai.example.test/shop/mcp</code>"));
        assert!(html.contains("the prompt API <code>summarise</code>"));
        assert!(html.contains("<code>POST /api/items/{id}</code>"));
        // Upstream servers: name, prefix and filter, markup escaped.
        assert!(html.contains(
            "<tr><td><code>tools/search</code></td><td><code>web_</code></td>\
             <td><code>find</code>, <code>&lt;b&gt;</code></td></tr>"
        ));
        assert!(html.contains("<tr><td><code>tools/files</code></td><td><span class=\"muted\">none</span></td><td>those whose name matches <code>read_.*</code></td></tr>"));
        // The catalog counts them.
        let card = card(&route);
        assert!(
            card.contains(
                "<tr><th>MCP tools</th><td>4 tools at <code>/shop/mcp</code>, and those of 2 upstream MCP servers</td></tr>"
            ),
            "{card}"
        );
    }

    #[test]
    fn a_route_without_tools_says_so() {
        let mut route = route_with_tools();
        route.prompts.clear();
        route.rest = None;
        route.mcp_servers.clear();
        assert!(mcp_tools(&route, "https://x/shop").contains("None: this API has no"));
        assert!(!card(&route).contains("MCP tools"));
    }

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
