//! The names under which a route's MCP endpoint (`<prefix>/mcp`) offers its own APIs as tools: each
//! prompt API, then each operation of its REST service (by `operationId`, else method and path).
//! Pure, so the proxy that serves the tools and the portal that lists them name them alike.

use crate::model::Route;

/// Longest tool name MCP allows.
pub const MAX_TOOL_NAME: usize = 128;

/// What a route's own tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolTarget {
    /// The route's prompt API at this index.
    Prompt(u16),
    /// The REST service's operation at this index.
    Rest(u32),
}

/// The route's own tools, in order: prompt APIs, then REST operations. Names are unique: a later
/// tool whose name is taken gets `_2`, `_3`…; characters MCP does not allow in names become `_`.
pub fn route_tools(route: &Route) -> Vec<(String, ToolTarget)> {
    let mut tools: Vec<(String, ToolTarget)> = Vec::new();
    let mut add = |wanted: String, target: ToolTarget| {
        let mut name = wanted.clone();
        let mut n = 2;
        while tools.iter().any(|(taken, _)| *taken == name) {
            name = suffixed(&wanted, n);
            n += 1;
        }
        tools.push((name, target));
    };
    for (i, p) in route.prompts.iter().enumerate() {
        add(tool_name(&p.name), ToolTarget::Prompt(i as u16));
    }
    if let Some(rest) = &route.rest {
        for (i, op) in rest.operations.iter().enumerate() {
            let wanted = match &op.operation_id {
                Some(id) => tool_name(id),
                None => tool_name(&format!("{}{}", op.method.to_ascii_lowercase(), op.path)),
            };
            add(wanted, ToolTarget::Rest(i as u32));
        }
    }
    tools
}

/// `text` with every character MCP does not allow in a tool name made `_`, within 128 characters.
pub fn tool_name(text: &str) -> String {
    let name: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = name.trim_matches('_');
    let name = if name.is_empty() { "tool" } else { name };
    truncate(name, MAX_TOOL_NAME).to_string()
}

/// The `n`th repeat of the tool name `wanted`: `<wanted>_<n>`, `wanted` cut so the whole stays
/// within 128 characters.
pub fn suffixed(wanted: &str, n: u32) -> String {
    let suffix = format!("_{n}");
    format!("{}{suffix}", truncate(wanted, MAX_TOOL_NAME - suffix.len()))
}

fn truncate(text: &str, max: usize) -> &str {
    // Tool names are ASCII (made so by `tool_name`), so any byte is a character boundary.
    &text[..text.len().min(max)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prompts: &[&str], ops: &[(&str, &str, Option<&str>)]) -> Route {
        let mut route: Route = serde_json::from_value(serde_json::json!({
            "id": {"namespace": "team-a", "name": "r"},
            "prefix": "/r",
            "hostnames": [],
            "stage": "Published",
            "sunset_unix": null,
            "models": [],
            "limits": {"requests_per_minute": null, "tokens_per_minute": null},
            "approval": "Manual",
        }))
        .expect("a route");
        route.prompts = prompts
            .iter()
            .map(|name| crate::Prompt {
                name: (*name).into(),
                description: None,
                version: None,
                model: "m".into(),
                messages: Vec::new(),
                variables: Vec::new(),
                parameters: crate::Parameters::default(),
                output: crate::Output::Text,
                allow_messages: false,
            })
            .collect();
        if !ops.is_empty() {
            route.rest = Some(
                serde_json::from_value(serde_json::json!({
                    "base_url": "http://x",
                    "timeouts": crate::Timeouts::default(),
                    "ca_pem": null,
                    "credential": null,
                    "max_request_bytes": 1,
                    "components": null,
                    "operations": ops.iter().map(|(m, p, id)| serde_json::json!({
                        "method": m, "path": p, "operation_id": id, "spec": {},
                    })).collect::<Vec<_>>(),
                }))
                .expect("a REST service"),
            );
        }
        route
    }

    #[test]
    fn names_follow_mcp_rules() {
        assert_eq!(tool_name("get /items/{id}"), "get__items__id");
        assert_eq!(tool_name("%%%"), "tool");
        assert_eq!(tool_name(&"a".repeat(300)).len(), 128);
        assert_eq!(suffixed(&"a".repeat(128), 12).len(), 128);
        assert!(suffixed(&"a".repeat(128), 12).ends_with("a_12"));
    }

    #[test]
    fn prompts_then_operations_with_repeats_suffixed() {
        let r = route(
            &["summarise", "get_items"],
            &[
                ("GET", "/items", None),
                ("POST", "/items/{id}", Some("addItem")),
                ("PUT", "/x", Some("summarise")),
            ],
        );
        assert_eq!(
            route_tools(&r),
            [
                ("summarise".to_string(), ToolTarget::Prompt(0)),
                ("get_items".to_string(), ToolTarget::Prompt(1)),
                ("get_items_2".to_string(), ToolTarget::Rest(0)),
                ("addItem".to_string(), ToolTarget::Rest(1)),
                ("summarise_2".to_string(), ToolTarget::Rest(2)),
            ]
        );
    }
}
