//! The portal: a catalog of the published APIs, each API's page, access requests and approvals, and
//! usage charts, and a Backstage export — plain server-rendered HTML on its own port, enabled by `--portal-listen`.
//!
//! A person signs in with a Kubernetes bearer token (TokenReview); the session is a sealed cookie
//! ([`session`]) holding that token, and every read and write on their behalf is made with it, so
//! RBAC and the approval admission policy decide. The catalog of Published and Deprecated routes comes
//! from the controller's own snapshot and is shown to everyone signed in.

mod access;
mod api_page;
mod backstage;
mod catalog;
mod chart;
mod consumers;
mod html;
mod http;
pub mod people;
pub mod seal;
pub mod session;
pub mod try_it;
mod usage;

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use kube::{Client, Config};
use tokio::sync::watch;

use crate::{args::Args, publish::Published, store::Store};

pub use http::serve;
use seal::Sealer;

/// What the portal's handlers share.
pub struct Portal {
    /// The controller's own client: TokenReview only.
    pub client: Client,
    /// The API server's address and CA, for clients holding a person's token.
    pub config: Config,
    /// Seals session cookies.
    pub sealer: Sealer,
    /// The controller's current snapshot (the catalog).
    pub snapshots: watch::Receiver<Option<Arc<Published>>>,
    /// The controller's view of every object (consumers and subscriptions by namespace).
    pub store: Arc<Store>,
    /// The proxy's public base URL, for code samples.
    pub proxy_base_url: String,
    /// The proxy inside the cluster (`http://host:port`), for the try-it form; off when `None`.
    pub try_it: Option<try_it::Target>,
    /// How long a session lasts.
    pub session_ttl: Duration,
    /// Whether cookies are always `Secure`.
    pub secure_cookie: bool,
}

impl Portal {
    /// The portal configured by `args`.
    pub fn new(
        args: &Args,
        client: Client,
        config: Config,
        snapshots: watch::Receiver<Option<Arc<Published>>>,
        store: Arc<Store>,
    ) -> anyhow::Result<Self> {
        let sealer = match &args.portal_session_key_file {
            Some(path) => {
                let secret = std::fs::read(path).with_context(|| {
                    format!("reading the portal session key {}", path.display())
                })?;
                anyhow::ensure!(
                    secret.len() >= 32,
                    "the portal session key {} holds {} bytes; it needs 32 or more",
                    path.display(),
                    secret.len()
                );
                Sealer::from_secret(&secret)
            }
            None => Sealer::random(),
        };
        Ok(Self {
            client,
            config,
            sealer,
            snapshots,
            store,
            proxy_base_url: args.portal_proxy_base_url.trim_end_matches('/').to_owned(),
            try_it: args
                .portal_try_it_url
                .as_deref()
                .map(try_it::Target::parse)
                .transpose()
                .context("--portal-try-it-url")?,
            session_ttl: args.portal_session_ttl,
            secure_cookie: args.portal_secure_cookie,
        })
    }
}

/// Unix seconds now.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
