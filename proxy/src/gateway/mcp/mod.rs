//! The MCP endpoints — a route's (`POST <prefix>/mcp`) and a consumer's (`POST /mcp`): JSON-RPC
//! reading, sealed legacy sessions, published APIs as tools and prompts, and the endpoint serving both
//! protocol eras.

mod endpoint;
mod jsonrpc;
mod session;
mod tools;

pub use endpoint::{PATH, scope, serve};
pub use session::key_from_secret;
