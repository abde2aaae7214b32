//! The connections to upstream MCP servers (`MCPServer`), one pool per server, kept across snapshot
//! swaps while the server's connect timeout stays the same. Servers are trusted with the public
//! roots, as providers are.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tollgate_snapshot::{FxHashMap, McpServer, ObjectRef};

use super::pool::{self, Checkin, ConnPool, UpstreamError};

/// The pools of every upstream MCP server.
pub struct McpPools {
    tls: rustls::ClientConfig,
    pools: RwLock<FxHashMap<ObjectRef, (u64, Arc<ConnPool>)>>,
}

impl Default for McpPools {
    fn default() -> Self {
        Self::new()
    }
}

impl McpPools {
    /// Pools that trust the Mozilla root set (webpki-roots) for https servers.
    pub fn new() -> Self {
        let tls = super::tls::public_roots();
        Self {
            tls,
            pools: RwLock::new(FxHashMap::default()),
        }
    }

    fn pool(&self, server: &McpServer) -> Arc<ConnPool> {
        let connect_ms = server.timeouts.connect_ms;
        if let Some((ms, pool)) = self.pools.read().expect("pool lock").get(&server.id)
            && *ms == connect_ms
        {
            return pool.clone();
        }
        let mut pools = self.pools.write().expect("pool lock");
        if let Some((ms, pool)) = pools.get(&server.id)
            && *ms == connect_ms
        {
            return pool.clone();
        }
        let pool = Arc::new(ConnPool::new(pool::connector(
            self.tls.clone(),
            Duration::from_millis(connect_ms),
        )));
        pools.insert(server.id.clone(), (connect_ms, pool.clone()));
        pool
    }

    /// Sends one request (with an absolute URL) to `server`, waiting at most `headers_due` for the
    /// response headers. Keep the [`Checkin`] until the answer's body is read.
    pub async fn send(
        &self,
        server: &McpServer,
        request: Request<Full<Bytes>>,
        headers_due: Duration,
    ) -> Result<(Response<Incoming>, Option<Checkin>), UpstreamError> {
        self.pool(server).send_within(request, headers_due).await
    }
}
