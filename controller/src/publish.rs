//! Compile on change: wait for a quiet moment after a burst, compile, publish when the hash changed.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use tokio::sync::watch;
use tollgate_snapshot::{Inputs, Snapshot, Verdict, wire};

use crate::{
    metrics::Metrics,
    store::Store,
    trace::{Traces, Work},
};

/// Recompile this often even without changes, so key expiry (judged at compile time) takes effect.
const RECOMPILE_EVERY: Duration = Duration::from_secs(30);

/// A published snapshot, with its wire frame encoded once for every proxy.
#[derive(Debug)]
pub struct Published {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// The snapshot as one stream frame ([`wire::encode_frame`]).
    pub frame: Bytes,
}

/// The compile loop's outputs: what proxies get, and what the leader writes to status.
pub struct Outputs {
    /// The current snapshot, `None` until the watches have synced.
    pub snapshots: watch::Sender<Option<Arc<Published>>>,
    /// The verdicts of the latest compile.
    pub verdicts: watch::Sender<Arc<Vec<Verdict>>>,
}

/// Debounce settings.
#[derive(Clone, Copy, Debug)]
pub struct Debounce {
    /// Quiet time that ends a burst.
    pub quiet: Duration,
    /// Longest a burst may postpone a compile.
    pub max: Duration,
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Builds the compiler's inputs from the store (objects are cloned so the lock is held briefly).
pub fn inputs(store: &Store) -> Inputs {
    fn owned<K: Clone>(
        objects: &std::collections::BTreeMap<tollgate_snapshot::ObjectRef, Arc<K>>,
    ) -> Vec<K> {
        objects.values().map(|o| K::clone(o)).collect()
    }
    let tables = store.lock();
    Inputs {
        providers: owned(&tables.providers.objects),
        routes: owned(&tables.routes.objects),
        consumers: owned(&tables.consumers.objects),
        subscriptions: owned(&tables.subscriptions.objects),
        secrets: owned(&tables.secrets.objects),
        config_maps: owned(&tables.config_maps.objects),
        guardrails: owned(&tables.guardrails.objects),
        mcp_servers: owned(&tables.mcp_servers.objects),
        now_unix: (unix_millis() / 1000) as i64,
        // Filled in by the compile loop from the Lease's count of live proxies.
        proxy_replicas: 0,
        // In a cluster, administrators say who may claim which paths (standalone stays open).
        tenancy: Some(tollgate_snapshot::Tenancy {
            namespaces: owned(&tables.namespaces.objects),
        }),
    }
}

/// Runs until `shutdown`: compiles after each burst of changes and publishes changed snapshots.
pub async fn run(
    store: Arc<Store>,
    outputs: Outputs,
    debounce: Debounce,
    metrics: Arc<Metrics>,
    traces: Traces,
    mut proxy_replicas: watch::Receiver<u32>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = store.subscribe();
    // The watchers may have synced before this loop subscribed.
    changes.mark_changed();
    let mut last_version = 0u64;
    let mut counting = true;
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            // A new proxy count changes every replica's share of the limits: recompile.
            changed = proxy_replicas.changed(), if counting => counting = changed.is_ok(),
            _ = tokio::time::sleep(RECOMPILE_EVERY) => {},
            _ = crate::shutdown::stopping(&mut shutdown) => return,
        }
        settle(&mut changes, debounce).await;
        if !store.synced() {
            continue;
        }
        let span = traces.root("tollgate.compile");
        let mut inputs = inputs(&store);
        inputs.proxy_replicas = *proxy_replicas.borrow_and_update();
        span.set("tollgate.compile.objects", object_count(&inputs) as i64);
        let version = unix_millis().max(last_version + 1);
        let started = Instant::now();
        // Compiling thousands of objects takes milliseconds of CPU: keep it off the async workers.
        let compiled =
            tokio::task::spawn_blocking(move || tollgate_snapshot::compile(&inputs, version))
                .await
                .expect("the compiler does not panic");
        metrics.compile_duration.observe(started.elapsed());
        describe_compile(&span, &compiled);
        let changed = outputs
            .snapshots
            .borrow()
            .as_ref()
            .is_none_or(|p| p.snapshot.hash != compiled.snapshot.hash);
        span.set(
            "tollgate.compile.result",
            if changed { "published" } else { "unchanged" },
        );
        if changed {
            last_version = version;
            let push = traces.child(&span, "tollgate.snapshot.push");
            let frame = Bytes::from(wire::encode_frame(&compiled.snapshot));
            metrics.snapshot_version.store(version, Ordering::Relaxed);
            metrics
                .snapshot_bytes
                .store(frame.len() as u64, Ordering::Relaxed);
            metrics.snapshots_published.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                version,
                hash = %&compiled.snapshot.hash[..12],
                bytes = frame.len(),
                routes = compiled.snapshot.content.routes.len(),
                compile_ms = started.elapsed().as_secs_f64() * 1e3,
                "publishing a new snapshot"
            );
            push.set("tollgate.snapshot.version", version as i64);
            push.set("tollgate.snapshot.hash", compiled.snapshot.hash.clone());
            push.set("tollgate.snapshot.bytes", frame.len() as i64);
            // Each open stream sends the new frame as soon as it sees it.
            push.set(
                "tollgate.proxies.connected",
                metrics.connected_proxies.load(Ordering::Relaxed),
            );
            outputs.snapshots.send_replace(Some(Arc::new(Published {
                snapshot: compiled.snapshot,
                frame,
            })));
        }
        outputs.verdicts.send_if_modified(|current| {
            if **current == compiled.verdicts {
                false
            } else {
                *current = Arc::new(compiled.verdicts);
                true
            }
        });
    }
}

/// How many objects went into a compile.
fn object_count(inputs: &Inputs) -> usize {
    inputs.providers.len()
        + inputs.routes.len()
        + inputs.consumers.len()
        + inputs.subscriptions.len()
        + inputs.secrets.len()
        + inputs.config_maps.len()
        + inputs.guardrails.len()
        + inputs.mcp_servers.len()
}

/// The compile span's attributes: the snapshot's version, hash and routes, and the objects the
/// compiler did not accept, as the span's error (named with their reasons, never their content).
fn describe_compile(span: &Work, compiled: &tollgate_snapshot::Compiled) {
    if !span.recorded() {
        return;
    }
    let snapshot = &compiled.snapshot;
    span.set("tollgate.snapshot.version", snapshot.version as i64);
    span.set("tollgate.snapshot.hash", snapshot.hash.clone());
    span.set(
        "tollgate.snapshot.routes",
        snapshot.content.routes.len() as i64,
    );
    let refused: Vec<String> = compiled
        .verdicts
        .iter()
        .filter_map(|v| {
            let accepted = v.conditions.iter().find(|c| c.type_ == "Accepted")?;
            (!accepted.status)
                .then(|| format!("{} {} ({})", v.kind.as_str(), v.id, accepted.reason))
        })
        .collect();
    span.set("tollgate.compile.rejected", refused.len() as i64);
    if !refused.is_empty() {
        const NAMED: usize = 5;
        let more = refused.len().saturating_sub(NAMED);
        let mut description = format!(
            "{} object(s) not accepted: {}",
            refused.len(),
            refused[..refused.len().min(NAMED)].join(", ")
        );
        if more > 0 {
            description.push_str(&format!(" and {more} more"));
        }
        span.fail("objects_not_accepted", description);
    }
}

/// Waits until no change has come for `quiet`, or `max` has passed since the first.
async fn settle(changes: &mut watch::Receiver<u64>, debounce: Debounce) {
    let deadline = tokio::time::Instant::now() + debounce.max;
    loop {
        let quiet_end = (tokio::time::Instant::now() + debounce.quiet).min(deadline);
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() || tokio::time::Instant::now() >= deadline {
                    return;
                }
            }
            _ = tokio::time::sleep_until(quiet_end) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn settle_waits_for_quiet_but_not_past_max() {
        let (tx, mut rx) = watch::channel(0u64);
        let debounce = Debounce {
            quiet: Duration::from_millis(25),
            max: Duration::from_millis(250),
        };
        // Changes every 10 ms forever: settle must give up at max.
        let noise = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                tx.send_modify(|n| *n += 1);
            }
        });
        let started = tokio::time::Instant::now();
        settle(&mut rx, debounce).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_millis(270),
            "{waited:?}"
        );
        noise.abort();

        // No changes: settle returns after the quiet time.
        let (_tx, mut rx) = watch::channel(0u64);
        let started = tokio::time::Instant::now();
        settle(&mut rx, debounce).await;
        assert_eq!(started.elapsed(), Duration::from_millis(25));
    }
}
