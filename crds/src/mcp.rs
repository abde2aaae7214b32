//! `MCPServer`: an upstream MCP server (Streamable HTTP) whose tools routes offer through their own
//! MCP endpoint, behind the route's keys and subscriptions (`AIRoute.spec.mcp.servers`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::conditions_schema;
use crate::provider::{NamespaceName, Timeouts};
use crate::rest::RestCredentials;

/// An MCP server Tollgate calls as a client: where it listens, how Tollgate authenticates to it, and
/// which of the caller's headers it may see. The caller's own key never reaches it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "MCPServer",
    plural = "mcpservers",
    namespaced,
    status = "MCPServerStatus",
    shortname = "mcps",
    category = "tollgate",
    doc = "An upstream MCP server (Streamable HTTP) whose tools routes offer behind their keys.",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerSpec {
    /// The server's Streamable HTTP endpoint, e.g. `http://search.tools.svc:8000/mcp`.
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    )]
    pub url: String,
    /// A credential from a Secret in this namespace, sent to the server as a header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<RestCredentials>,
    /// Headers of the caller's request passed on to the server (for example a trace or tenant
    /// header). The headers that carry the caller's key can never be passed on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new(
        "self.all(h, !(h.lowerAscii() in ['authorization', 'x-api-key', 'api-key', 'cookie', 'proxy-authorization', 'host', 'content-length', 'content-type', 'transfer-encoding', 'connection', 'te', 'upgrade', 'accept', 'mcp-session-id', 'mcp-protocol-version', 'mcp-method', 'mcp-name']))"
    ).message("forwardHeaders cannot name a header that carries the caller's key or belongs to the gateway's MCP session"))]
    pub forward_headers: Vec<ForwardedHeader>,
    /// Upstream timeouts: `connect` (default 5s), `firstByte` (the whole answer to one JSON-RPC
    /// request, default 60s); `idle` and `total` are not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Other namespaces whose routes may attach this server; `*` means all. Its own namespace always may.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub allowed_namespaces: Vec<NamespaceName>,
}

/// The name of a header passed on from the caller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct ForwardedHeader(
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub String,
);

/// What the controller reports about an MCP server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerStatus {
    /// The `metadata.generation` these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted, ResolvedRefs (its credential's Secret), Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// `AIRoute.spec.mcp`: what the route's MCP endpoint offers besides its own APIs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteMcp {
    /// Upstream MCP servers whose tools the route offers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub servers: Vec<McpServerRef>,
}

/// One `MCPServer` attached to a route: its tools offered under a prefix, filtered.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpServerRef {
    /// Name of the `MCPServer`.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Its namespace; defaults to the route's. The server must allow the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub namespace: Option<String>,
    /// Put before each of the server's tool names (`search_` makes `query` `search_query`), so that
    /// tools of several servers do not collide. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = r"^[A-Za-z0-9_.-]*$"))]
    pub tool_prefix: Option<String>,
    /// Which of the server's tools are offered (by their names on the server). Default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<ToolFilter>,
}

/// The tools offered: those named in `include`, or those whose name matches `includeRegex`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.include) != has(self.includeRegex)")
    .message("a tool filter has exactly one of include and includeRegex"))]
#[serde(rename_all = "camelCase")]
pub struct ToolFilter {
    /// The tools' names on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub include: Option<Vec<ToolName>>,
    /// A regular expression (Rust `regex` syntax) a tool's name on the server must match, anchored
    /// at both ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub include_regex: Option<String>,
}

/// An MCP tool name: 1 to 128 of `A-Z a-z 0-9 _ - .`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct ToolName(
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_.-]+$"))] pub String,
);
