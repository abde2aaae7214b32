//! The tools of upstream MCP servers that routes attach (`spec.mcp.servers`), offered beside the
//! route's own: listed under the route's prefix for each server, filtered, and called on the server
//! that owns them (`call::McpUpstreams` speaks to it).
//!
//! A tool's name is the server's prefix and its name on the server; in the consumer scope the
//! route's label and `__` come first. A route's own tools keep their names: an upstream tool whose
//! name is taken is left out. A server that cannot be listed leaves the others listed; a call of one
//! of its tools is answered with a JSON-RPC error that names it.

use std::collections::HashSet;
use std::sync::Arc;

use http::StatusCode;
use http::header::HeaderMap;
use serde_json::{Value, json};
use tollgate_snapshot::{McpServer, RouteIdx, Snapshot};

use super::jsonrpc::RpcError;
use super::reach::{Reach, Tools};
use super::tools::tool_name;
use crate::call::{McpFailure, Shared, TraceHeaders, client_span_to};
use crate::telemetry::trace::{ClientSpan, McpClient};

/// JSON-RPC's code for an internal error: here, an upstream server that could not answer.
const UPSTREAM_FAILED: i32 = -32603;

/// A tool of an upstream server, as a caller names it.
pub(super) struct Owner {
    /// The route that attaches the server.
    pub route: RouteIdx,
    /// The server's place in the route's `mcp_servers`.
    pub server: usize,
    /// The tool's name on the server.
    pub name: String,
}

/// The routes whose servers the caller reaches, each with how its tools' names begin.
fn routes<'r>(snapshot: &Snapshot, reach: &'r Reach<'_>) -> Vec<(RouteIdx, Option<&'r str>)> {
    match (&reach.tools, &reach.admitted) {
        (Tools::Route(r), _) => vec![(*r, None)],
        (Tools::Consumer(_), _) => reach
            .labels
            .iter()
            .filter(|(r, _)| !snapshot.content.routes[*r as usize].mcp_servers.is_empty())
            .map(|(r, label)| (*r, Some(label.as_str())))
            .collect(),
    }
}

fn offered(label: Option<&str>, server: &McpServer, name: &str) -> Option<String> {
    let own = server.offered_name(name)?;
    Some(match label {
        None => own,
        Some(label) => tool_name(&format!("{label}__{own}")),
    })
}

/// The `tools/list` entries of the upstream tools the caller reaches, serialised, leaving out names
/// `taken` (by the routes' own tools, or an earlier server's).
pub(super) async fn list(
    shared: &Shared,
    snapshot: &Snapshot,
    reach: &Reach<'_>,
    taken: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut entries = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for (r, label) in routes(snapshot, reach) {
        for server in &snapshot.content.routes[r as usize].mcp_servers {
            // A server that cannot be listed (and never was) is left out; the others are listed.
            let Ok(tools) = shared.mcp_upstreams.tools(server).await else {
                continue;
            };
            for tool in tools.iter() {
                let Some(own) = tool["name"].as_str() else {
                    continue;
                };
                let Some(name) = offered(label, server, own) else {
                    continue;
                };
                if taken(&name) || !seen.insert(name.clone()) {
                    continue;
                }
                let mut entry = tool.clone();
                entry["name"] = json!(name);
                entries.push(serde_json::to_string(&entry).expect("JSON values serialise"));
            }
        }
    }
    entries
}

/// The upstream tool the caller names `name`: the server whose list has it; else, when a server
/// that could own it cannot be listed, that server (its call then fails with a clear error).
pub(super) async fn owner(
    shared: &Shared,
    snapshot: &Snapshot,
    reach: &Reach<'_>,
    name: &str,
) -> Option<Owner> {
    let mut unlisted = None;
    for (r, label) in routes(snapshot, reach) {
        for (at, server) in snapshot.content.routes[r as usize]
            .mcp_servers
            .iter()
            .enumerate()
        {
            // Candidates by name alone first: no server is asked for a name it cannot own.
            let rest = match label {
                None => name.strip_prefix(server.tool_prefix.as_str()),
                Some(label) => name
                    .strip_prefix(label)
                    .and_then(|n| n.strip_prefix("__"))
                    .and_then(|n| n.strip_prefix(server.tool_prefix.as_str())),
            };
            let Some(rest) = rest.filter(|n| !n.is_empty() && server.filter.offers(n)) else {
                continue;
            };
            match shared.mcp_upstreams.tools(server).await {
                Ok(tools) => {
                    let on_server = tools
                        .iter()
                        .filter_map(|t| t["name"].as_str())
                        .find(|own| offered(label, server, own).as_deref() == Some(name));
                    if let Some(own) = on_server {
                        return Some(Owner {
                            route: r,
                            server: at,
                            name: own.to_string(),
                        });
                    }
                }
                Err(_) if unlisted.is_none() => {
                    unlisted = Some(Owner {
                        route: r,
                        server: at,
                        name: rest.to_string(),
                    });
                }
                Err(_) => {}
            }
        }
    }
    unlisted
}

/// The client span of a `tools/call` of `owner`'s tool on its server.
pub(super) fn client_span(snapshot: &Snapshot, owner: &Owner) -> ClientSpan {
    let server = &snapshot.content.routes[owner.route as usize].mcp_servers[owner.server];
    let mut span = match http::Uri::try_from(server.url.as_str()) {
        Ok(uri) => client_span_to(&http::Method::POST, &uri),
        Err(_) => ClientSpan::new("POST", None, String::new()),
    };
    span.mcp = Some(McpClient {
        method: "tools/call",
        tool: Some(owner.name.clone()),
        code: None,
    });
    span
}

/// Calls the tool on its server: the server's result, or its JSON-RPC error passed on, or an error
/// saying that the server could not answer.
pub(super) async fn call(
    shared: &Shared,
    snapshot: &Arc<Snapshot>,
    owner: &Owner,
    arguments: &Value,
    headers: &HeaderMap,
    trace: Option<TraceHeaders>,
) -> Result<Value, (StatusCode, RpcError)> {
    let server = &snapshot.content.routes[owner.route as usize].mcp_servers[owner.server];
    match shared
        .mcp_upstreams
        .call_tool(server, &owner.name, arguments, headers, trace)
        .await
    {
        Ok(result) => Ok(result),
        Err(McpFailure::Rpc {
            code,
            message,
            data,
        }) => {
            let code = i32::try_from(code).unwrap_or(UPSTREAM_FAILED);
            let mut e = RpcError::new(None, code, message);
            e.data = data;
            Err((StatusCode::OK, e))
        }
        Err(McpFailure::Unreachable(why)) => Err((
            StatusCode::OK,
            RpcError::new(
                None,
                UPSTREAM_FAILED,
                format!(
                    "The MCP server {} that offers this tool cannot be used now: {why}.",
                    server.id
                ),
            )
            .with_data(json!({"code": "mcp_server_unavailable", "server": server.id.to_string()})),
        )),
    }
}
