//! The upstream MCP servers a route attaches: where each is, how the gateway authenticates to it,
//! which caller headers it may see, and which of its tools the route offers under which names.

use serde::{Deserialize, Serialize};

use super::guardrail::Pattern;
use super::provider::Timeouts;
use super::refs::ObjectRef;
use super::rest::RestCredential;

/// One `MCPServer` as a route attaches it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct McpServer {
    /// The `MCPServer` object.
    pub id: ObjectRef,
    /// Its Streamable HTTP endpoint.
    pub url: String,
    /// The header the gateway adds to every request, if any. The caller's key is never sent.
    pub credential: Option<RestCredential>,
    /// Caller headers passed on, lower-case.
    pub forward_headers: Vec<String>,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// Put before each of the server's tool names.
    pub tool_prefix: String,
    /// Which of its tools are offered.
    pub filter: ToolFilter,
}

/// Which of a server's tools a route offers, by their names on the server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ToolFilter {
    /// Every tool.
    All,
    /// Those named.
    Include(Vec<String>),
    /// Those whose whole name matches (the pattern is anchored at both ends when compiled).
    Matching(Pattern),
}

impl ToolFilter {
    /// Whether the tool named `name` on the server is offered.
    pub fn offers(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Include(names) => names.iter().any(|n| n == name),
            Self::Matching(p) => p.regex().is_match(name),
        }
    }
}

impl McpServer {
    /// The route's name for the server's tool `name`, if the route offers it.
    pub fn offered_name(&self, name: &str) -> Option<String> {
        self.filter
            .offers(name)
            .then(|| format!("{}{name}", self.tool_prefix))
    }
}
