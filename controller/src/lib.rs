//! Tollgate's controller: watches the API server, compiles snapshots, streams them to proxies over
//! TLS, and (as leader) writes status, Events, generated keys and usage roll-ups.

pub mod admin;
pub mod args;
pub mod auth;
pub mod keys;
pub mod lease;
pub mod metrics;
pub mod portal;
pub mod publish;
pub mod server;
mod shutdown;
pub mod status;
pub mod store;
pub mod trace;
pub mod usage;
pub mod watch;
pub mod writer;

use std::sync::Arc;

use anyhow::Context as _;
use tokio::{net::TcpListener, sync::watch as channel, task::JoinSet};

use crate::{
    args::Args,
    metrics::Metrics,
    publish::{Debounce, Outputs},
    store::Store,
    trace::Traces,
    usage::Ledger,
};

/// Runs the controller until `stop` resolves, then shuts down gracefully.
pub async fn run(args: Args, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let identity = args.identity();
    let tls = server::tls_config(&args.tls_cert, &args.tls_key)?;
    let kube_config = kube::Config::infer()
        .await
        .context("reading the Kubernetes API config (in-cluster config or KUBECONFIG)")?;
    let client = kube::Client::try_from(kube_config.clone())
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let admin_listener = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("listening on {}", args.admin_listen))?;
    tracing::info!(
        %identity,
        listen = %args.listen,
        admin = %args.admin_listen,
        namespaces = ?args.namespaces,
        "tollgate-controller starting"
    );

    let (shutdown_tx, shutdown) = channel::channel(false);
    let metrics = Arc::new(Metrics::default());
    let traces = match args.otel.traces(|name| std::env::var(name).ok())? {
        Some(config) => Traces::start(config, &identity, metrics.clone())?,
        None => Traces::off(),
    };
    let scopes = args.namespaces.len().max(1);
    let store = Store::new(scopes);
    let mut watchers = JoinSet::new();
    watch::spawn_all(&client, &args.namespaces, &store, &mut watchers);

    // The leader counts the proxies that report usage; the Lease carries its count to every replica.
    let ledger = Arc::new(Ledger::default());
    let counted = ledger.clone();
    let elector = lease::Elector::new(
        client.clone(),
        &args.lease_namespace,
        &args.lease_name,
        identity.clone(),
        args.lease_duration,
    )
    .with_proxy_count(Box::new(move || {
        counted.live_proxies(usage::PROXY_LIVENESS)
    }));
    let proxy_replicas = elector.proxy_replicas();
    let leader = elector.subscribe();
    tokio::spawn(metrics::follow_leader(metrics.clone(), leader.clone()));
    let elector_task = tokio::spawn(elector.run(shutdown.clone()));

    let (snapshots_tx, snapshots) = channel::channel(None);
    let (verdicts_tx, verdicts) = channel::channel(Arc::new(Vec::new()));
    let compile_task = tokio::spawn(publish::run(
        store.clone(),
        Outputs {
            snapshots: snapshots_tx,
            verdicts: verdicts_tx,
        },
        Debounce {
            quiet: args.debounce,
            max: args.debounce_max,
        },
        metrics.clone(),
        traces.clone(),
        proxy_replicas,
        shutdown.clone(),
    ));
    let writer = writer::Writer::new(
        client.clone(),
        store.clone(),
        metrics.clone(),
        identity.clone(),
    )
    .with_traces(traces.clone());
    tokio::spawn(writer.run(verdicts, leader.clone()));

    let usage_task = tokio::spawn(usage::flush_loop(
        client.clone(),
        store.clone(),
        ledger.clone(),
        metrics.clone(),
        identity,
        leader.clone(),
        args.usage_flush,
        shutdown.clone(),
    ));

    let shared = Arc::new(server::Shared {
        auth: auth::Authenticator::new(
            client.clone(),
            args.audience.clone(),
            &args.allowed_proxy_sas,
            args.token_cache_ttl,
        ),
        snapshots: snapshots.clone(),
        leader,
        ledger,
        metrics: metrics.clone(),
        heartbeat: args.heartbeat,
        shutdown: shutdown.clone(),
    });
    tokio::spawn(server::serve(listener, tls, shared, shutdown.clone()));
    if let Some(address) = args.portal_listen {
        let portal = portal::Portal::new(
            &args,
            client.clone(),
            kube_config,
            snapshots.clone(),
            store.clone(),
        )?;
        let portal_listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("listening on {address} (the portal)"))?;
        tracing::info!(listen = %address, "portal enabled");
        tokio::spawn(portal::serve(
            portal_listener,
            Arc::new(portal),
            shutdown.clone(),
        ));
    }
    let admin = Arc::new(admin::Admin { metrics, snapshots });
    tokio::spawn(admin::serve(admin_listener, admin, shutdown.clone()));

    stop.await;
    tracing::info!("shutting down: ending streams, writing usage, releasing the Lease");
    shutdown_tx.send_replace(true);
    let _ = tokio::time::timeout(crate::shutdown::GRACE, async {
        let _ = compile_task.await;
        let _ = usage_task.await;
        let _ = elector_task.await;
        // The last spans, if the collector takes them in time.
        traces.flush(std::time::Duration::from_secs(2)).await;
    })
    .await;
    watchers.abort_all();
    Ok(())
}
