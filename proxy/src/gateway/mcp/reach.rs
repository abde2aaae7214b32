//! What a caller reaches through an MCP endpoint — one route's tools and prompts, or those of every
//! route its consumer is approved for — and the answers that only list or render them.

use std::fmt::Write as _;
use std::sync::Arc;

use http::header;
use http::request::Parts;
use serde_json::{Map, Value, json};
use tollgate_snapshot::{ConsumerIdx, ObjectRef, Phase, RouteIdx, Snapshot, Stage};

use super::catalog::{Catalog, catalogs};
use super::era::Era;
use super::jsonrpc::Message;
use super::reply::{Outcome, invalid_params, shown};
use super::tools::{self, Target};
use crate::gateway::admission::Admitted;
use crate::gateway::prompt;

/// Where a route serves MCP, after its prefix (and the consumer scope, at the root).
pub const PATH: &str = "/mcp";

/// How long clients may keep list results (2026-07-28 cache hints): short, so that a changed route
/// shows within a second.
pub(super) const LIST_TTL_MS: u64 = 1000;

/// Whose tools an MCP endpoint offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `<prefix>/mcp`: the route's own, as the request's host and path matched it.
    Route(RouteIdx),
    /// `/mcp` at the gateway's root: those of every route the calling consumer is approved for.
    Consumer,
}

/// Which MCP endpoint the request is for, if any: a route's (its prefix and `/mcp`), else the
/// consumer scope at `/mcp`.
pub fn scope(snapshot: &Snapshot, parts: &Parts) -> Option<Scope> {
    let host = parts
        .uri
        .host()
        .or_else(|| parts.headers.get(header::HOST)?.to_str().ok());
    let path = parts.uri.path();
    match snapshot.route_for(host, path) {
        Some(m) if m.rest == PATH => Some(Scope::Route(m.idx)),
        _ if path == PATH => Some(Scope::Consumer),
        _ => None,
    }
}

/// What the caller may reach through this endpoint: tools and prompts, each with its route.
pub(super) struct Reach<'a> {
    /// The route, admitted, for the route scope; `None` for the consumer scope (each tool call is
    /// admitted to its own route).
    pub(super) admitted: Option<Admitted<'a>>,
    /// The calling consumer.
    pub(super) consumer: ConsumerIdx,
    /// The tools of the snapshot's routes.
    pub(super) catalog: Arc<Catalog>,
    /// Which of them are reached, and by what names.
    pub(super) tools: Tools,
    /// The consumer scope's routes and how their tools' names begin (`<label>__`); empty in the
    /// route scope. Upstream MCP servers' tools are named from it.
    pub(super) labels: Vec<(RouteIdx, String)>,
    /// Prompts by name: route and index among its prompts.
    pub(super) prompts: Vec<(String, RouteIdx, u16)>,
}

/// The tools a caller reaches.
pub(super) enum Tools {
    /// The route's, under their own names.
    Route(RouteIdx),
    /// Those of the consumer's routes, each by its scoped name, its route and its place among the
    /// route's tools.
    Consumer(Vec<(String, RouteIdx, u32)>),
}

impl Reach<'_> {
    /// Whether one of the routes' own tools is named `name`.
    pub(super) fn has_own_tool(&self, snapshot: &Snapshot, name: &str) -> bool {
        match &self.tools {
            Tools::Route(r) => self.catalog.route(snapshot, *r).find(name).is_some(),
            Tools::Consumer(named) => named.iter().any(|(n, _, _)| n == name),
        }
    }

    /// The route and target of the tool named `name`, if the caller reaches one.
    pub(super) fn find_tool(&self, snapshot: &Snapshot, name: &str) -> Option<(RouteIdx, Target)> {
        match &self.tools {
            Tools::Route(r) => Some((*r, self.catalog.route(snapshot, *r).find(name)?.target)),
            Tools::Consumer(named) => {
                let (_, r, at) = named.iter().find(|(n, _, _)| n == name)?;
                Some((
                    *r,
                    self.catalog.route(snapshot, *r).tools[*at as usize].target,
                ))
            }
        }
    }
}

/// What `initialize` and `server/discover` say about the server: its title and instructions.
pub(super) fn server_description((title, instructions): &(String, Option<String>)) -> Value {
    let mut d = json!({
        "capabilities": {"tools": {"listChanged": false}, "prompts": {"listChanged": false}},
        "serverInfo": {"name": "tollgate", "title": title, "version": env!("CARGO_PKG_VERSION")},
    });
    d["_meta"] = json!({"io.modelcontextprotocol/serverInfo": d["serverInfo"].clone()});
    if let Some(text) = instructions {
        d["instructions"] = json!(text);
    }
    d
}

/// The route scope: the admitted route's tools and prompts under their own names.
pub(super) fn route_reach<'a>(
    snapshot: &'a Arc<Snapshot>,
    admitted: Admitted<'a>,
    consumer: ConsumerIdx,
) -> Reach<'a> {
    let at = admitted.route;
    let route = &snapshot.content.routes[at as usize];
    Reach {
        catalog: catalogs().of(snapshot),
        tools: Tools::Route(at),
        labels: Vec::new(),
        prompts: (0..route.prompts.len())
            .map(|i| (route.prompts[i].name.clone(), at, i as u16))
            .collect(),
        admitted: Some(admitted),
        consumer,
    }
}

/// The consumer scope: the tools and prompts of every route the consumer is approved for and may
/// see, named `<route>__<name>` (see [`tools::scoped_name`]).
pub(super) fn consumer_reach(snapshot: &Arc<Snapshot>, consumer: ConsumerIdx) -> Reach<'_> {
    let namespace = &snapshot.content.consumers[consumer as usize].id.namespace;
    let routes: Vec<RouteIdx> = (0..snapshot.content.routes.len() as RouteIdx)
        .filter(|r| {
            let route = &snapshot.content.routes[*r as usize];
            let visible = match route.stage {
                Stage::Retired => false,
                Stage::Draft => route.id.namespace == *namespace,
                Stage::Published | Stage::Deprecated => true,
            };
            visible
                && snapshot
                    .subscription(consumer, *r)
                    .is_some_and(|s| s.phase == Phase::Approved)
        })
        .collect();
    let ids: Vec<&ObjectRef> = routes
        .iter()
        .map(|r| &snapshot.content.routes[*r as usize].id)
        .collect();
    let catalog = catalogs().of(snapshot);
    let mut tools = Vec::new();
    let mut prompts = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        let route = &snapshot.content.routes[*r as usize];
        for (at, tool) in catalog.route(snapshot, *r).tools.iter().enumerate() {
            tools.push((tools::scoped_name(&ids, i, &tool.name), *r, at as u32));
        }
        for (p, prompt) in route.prompts.iter().enumerate() {
            prompts.push((tools::scoped_name(&ids, i, &prompt.name), *r, p as u16));
        }
    }
    Reach {
        admitted: None,
        consumer,
        catalog,
        tools: Tools::Consumer(tools::unique(tools)),
        labels: routes
            .iter()
            .enumerate()
            .map(|(i, r)| (*r, tools::route_label(&ids, i)))
            .collect(),
        prompts: tools::unique(prompts),
    }
}

/// `tools/list`'s result, serialised: the catalog's prepared entries under the names the caller
/// reaches them by, with the cache hints and, in the 2026-07-28 era, `resultType`.
pub(super) fn list_tools(
    snapshot: &Snapshot,
    reach: &Reach<'_>,
    era: Era,
    upstream: &[String],
) -> String {
    let mut out = String::with_capacity(4096);
    out.push_str("{\"tools\":[");
    let mut first = true;
    let mut add = |out: &mut String, name: &str, tool: &super::catalog::Tool| {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
        tool.entry(name, out);
    };
    match &reach.tools {
        Tools::Route(r) => {
            for tool in &reach.catalog.route(snapshot, *r).tools {
                add(&mut out, &tool.name, tool);
            }
        }
        Tools::Consumer(named) => {
            for (name, r, at) in named {
                add(
                    &mut out,
                    name,
                    &reach.catalog.route(snapshot, *r).tools[*at as usize],
                );
            }
        }
    }
    for entry in upstream {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
        out.push_str(entry);
    }
    out.push(']');
    if era == Era::Modern {
        let _ = write!(
            out,
            ",\"ttlMs\":{LIST_TTL_MS},\"cacheScope\":\"private\",\"resultType\":\"complete\""
        );
    }
    out.push('}');
    out
}

pub(super) fn list_prompts(snapshot: &Snapshot, reach: &Reach<'_>, era: Era) -> Value {
    let prompts: Vec<Value> = reach
        .prompts
        .iter()
        .map(|(name, r, at)| {
            let p = &snapshot.content.routes[*r as usize].prompts[*at as usize];
            let arguments: Vec<Value> = p
                .variables
                .iter()
                .map(|v| {
                    let mut a =
                        json!({"name": v.name, "required": v.required && v.default.is_none()});
                    if let Some(d) = &v.description {
                        a["description"] = json!(d);
                    }
                    a
                })
                .collect();
            let mut entry = json!({"name": name, "arguments": arguments});
            if let Some(d) = &p.description {
                entry["description"] = json!(d);
            }
            entry
        })
        .collect();
    let mut r = json!({"prompts": prompts});
    cache_hints(&mut r, era);
    r
}

pub(super) fn cache_hints(result: &mut Value, era: Era) {
    if era == Era::Modern {
        result["ttlMs"] = json!(LIST_TTL_MS);
        // Lists are the route's, shown only to subscribed consumers.
        result["cacheScope"] = json!("private");
    }
}

/// `prompts/get`: the prompt's template with the caller's arguments put in (MCP prompt arguments
/// are strings; each is read as its variable's type), checked as a prompt API call checks them.
pub(super) fn get_prompt(snapshot: &Snapshot, reach: &Reach<'_>, message: &Message<'_>) -> Outcome {
    let name = message
        .params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_params("Invalid params: prompts/get needs a name.".into()))?;
    let p = reach
        .prompts
        .iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, r, at)| &snapshot.content.routes[*r as usize].prompts[*at as usize])
        .ok_or_else(|| {
            invalid_params(format!("Invalid params: unknown prompt {:?}.", shown(name)))
        })?;
    let args = message.arguments_object().map_err(|_| {
        invalid_params("Invalid params: arguments must be an object of name: value.".into())
    })?;
    let mut variables = Map::new();
    for (k, v) in args {
        let typed = match (p.variables.iter().find(|x| x.name == k), &v) {
            (Some(var), Value::String(s)) => typed_argument(var.kind, s),
            _ => v,
        };
        variables.insert(k, typed);
    }
    let body = serde_json::to_vec(&json!({"variables": variables})).expect("JSON values serialise");
    let rendered = prompt::render(p, &body)
        .map_err(|e| invalid_params(format!("Invalid params: {}", e.message)))?;
    let request: Value = serde_json::from_slice(&rendered).expect("render writes JSON");
    // MCP prompts have user and assistant turns: the template's system and developer turns are
    // given as user turns, in order.
    let messages: Vec<Value> = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let role = if m["role"] == "assistant" {
                "assistant"
            } else {
                "user"
            };
            json!({"role": role, "content": {"type": "text", "text": m["content"]}})
        })
        .collect();
    let mut r = json!({"messages": messages});
    if let Some(d) = &p.description {
        r["description"] = json!(d);
    }
    Ok(r)
}

/// A prompt argument's text as its variable's JSON type (left a string when it does not parse, so
/// that the prompt's own check names the problem).
pub(super) fn typed_argument(kind: tollgate_snapshot::VariableType, text: &str) -> Value {
    use tollgate_snapshot::VariableType as T;
    match kind {
        T::Integer => text
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| json!(text)),
        T::Number => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| json!(text)),
        T::Boolean => match text.trim() {
            "true" => json!(true),
            "false" => json!(false),
            _ => json!(text),
        },
        T::String | T::Enum => json!(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_arguments_take_their_variables_types() {
        use tollgate_snapshot::VariableType as T;
        assert_eq!(typed_argument(T::Integer, "42"), json!(42));
        assert_eq!(typed_argument(T::Integer, "4.2"), json!("4.2"));
        assert_eq!(typed_argument(T::Number, "0.5"), json!(0.5));
        assert_eq!(typed_argument(T::Boolean, "true"), json!(true));
        assert_eq!(typed_argument(T::String, "42"), json!("42"));
    }
}
