//! The MCP endpoints — a route's (`POST <prefix>/mcp`) and a consumer's (`POST /mcp`): JSON-RPC
//! reading, sealed legacy sessions, published APIs as tools and prompts, and the endpoint serving both
//! protocol eras.

mod calls;
mod catalog;
mod endpoint;
mod era;
mod federated;
mod jsonrpc;
mod reach;
mod reply;
mod session;
mod tools;

pub use endpoint::serve;
pub use reach::{PATH, scope};
pub use session::key_from_secret;
