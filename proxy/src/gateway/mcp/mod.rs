//! The MCP endpoint of a route (`POST <prefix>/mcp`): JSON-RPC reading, sealed legacy sessions, the
//! route's APIs as tools and prompts, and the endpoint serving both protocol eras.

mod endpoint;
mod jsonrpc;
mod session;
mod tools;

pub use endpoint::{PATH, is_endpoint, serve};
pub use session::key_from_secret;
