//! The connections to moderation services (guardrails' moderation hooks): one pool for all of them,
//! keyed inside by origin, kept for the life of the process. Services are trusted with the public
//! roots, as providers are.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

use super::pool::{self, Checkin, ConnPool, UpstreamError};

/// The longest a connection to a moderation service may take; the hook's own timeout, which covers
/// the whole exchange, is shorter.
const CONNECT: Duration = Duration::from_secs(10);

/// The pool of every moderation service.
pub struct ModerationPool {
    pool: Arc<ConnPool>,
}

impl Default for ModerationPool {
    fn default() -> Self {
        Self::new()
    }
}

impl ModerationPool {
    /// A pool that trusts the Mozilla root set (webpki-roots) for https services.
    pub fn new() -> Self {
        let connector = pool::connector(super::tls::public_roots(), CONNECT);
        Self {
            pool: Arc::new(ConnPool::new(connector)),
        }
    }

    /// Sends one request (with an absolute URL), waiting at most `due` for the response headers.
    /// Keep the [`Checkin`] until the answer's body is read.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
        due: Duration,
    ) -> Result<(Response<Incoming>, Option<Checkin>), UpstreamError> {
        self.pool.send_within(request, due).await
    }
}
