//! Leader election with a `coordination.k8s.io/v1` Lease.
//!
//! Expiry is judged by this replica's own clock: a Lease whose holder or renew time has not changed for
//! `leaseDurationSeconds` since we first saw it is free. No replica compares its clock with another's.
//! Every write carries the `resourceVersion` read, so two replicas can never both win the same round.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{PostParams, ResourceExt},
};
use tokio::sync::watch;

/// Annotation on the Lease carrying the number of live proxies, counted by the leader from usage
/// reports, so that every replica compiles the same count into its snapshots.
pub const PROXY_REPLICAS_ANNOTATION: &str = "tollgate.dev/proxy-replicas";

/// How long a new leader listens to usage reports before it trusts its own count of proxies.
const COUNT_SETTLE: Duration = Duration::from_secs(20);

/// Counts the live proxies (only the leader's count is written).
pub type ProxyCount = Box<dyn Fn() -> u32 + Send + Sync>;

/// Holds or waits for the Lease, and publishes whether this replica leads.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    leader: watch::Sender<bool>,
    observed: Option<(String, Instant)>,
    last_renewed: Option<Instant>,
    leading_since: Option<Instant>,
    count: Option<ProxyCount>,
    proxy_replicas: watch::Sender<u32>,
}

impl Elector {
    /// An elector for Lease `namespace/name`, this replica called `identity`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: String,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity,
            duration,
            leader: watch::channel(false).0,
            observed: None,
            last_renewed: None,
            leading_since: None,
            count: None,
            proxy_replicas: watch::channel(0).0,
        }
    }

    /// Lets the leader write `count()` into the Lease for every replica to read.
    pub fn with_proxy_count(mut self, count: ProxyCount) -> Self {
        self.count = Some(count);
        self
    }

    /// The number of live proxies as the Lease says (0 until known), the same on every replica.
    pub fn proxy_replicas(&self) -> watch::Receiver<u32> {
        self.proxy_replicas.subscribe()
    }

    /// Reads the count from the Lease; when leading long enough to trust its own, writes that instead.
    fn exchange_count(&mut self, lease: &mut Lease, leading: bool) {
        let settled = self
            .leading_since
            .is_some_and(|since| since.elapsed() >= COUNT_SETTLE);
        let write = match &self.count {
            Some(count) if leading && settled => Some(count()),
            _ => None,
        };
        let read = exchange(&mut lease.metadata.annotations, write);
        self.proxy_replicas.send_if_modified(|current| {
            let changed = *current != read;
            *current = read;
            changed
        });
    }

    /// `true` while this replica leads.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// Campaigns and renews until `shutdown` turns true, then releases the Lease if held.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        // Renew several times per duration, so one slow round does not lose the Lease.
        let period = (self.duration / 4).max(Duration::from_millis(200));
        loop {
            let leads = match self.round().await {
                Ok(leads) => leads,
                Err(error) => {
                    tracing::warn!(%error, lease = %self.name, "leader election round failed");
                    // Keep leading only while the last renewal is surely still valid for the others.
                    self.last_renewed
                        .is_some_and(|t| t.elapsed() + period < self.duration)
                }
            };
            if !leads {
                self.last_renewed = None;
                self.leading_since = None;
            } else if self.leading_since.is_none() {
                self.leading_since = Some(Instant::now());
            }
            self.leader.send_if_modified(|was| {
                if *was != leads {
                    tracing::info!(identity = %self.identity, leader = leads, "leadership changed");
                    *was = leads;
                    true
                } else {
                    false
                }
            });
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = crate::shutdown::stopping(&mut shutdown) => break,
            }
        }
        if *self.leader.borrow() {
            self.leader.send_replace(false);
            match self.release().await {
                Ok(()) => tracing::info!(lease = %self.name, "released the Lease"),
                Err(error) => tracing::warn!(%error, "could not release the Lease"),
            }
        }
    }

    /// One attempt to acquire or renew. Returns whether this replica now leads.
    async fn round(&mut self) -> kube::Result<bool> {
        let now = MicroTime(Timestamp::now());
        let seconds = self.duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return Ok(
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => {
                        self.last_renewed = Some(Instant::now());
                        true
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => false,
                    Err(e) => return Err(e),
                },
            );
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if holder.as_deref() == Some(self.identity.as_str()) {
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(seconds);
            self.exchange_count(&mut lease, true);
        } else {
            let held_for =
                Duration::from_secs(spec.lease_duration_seconds.unwrap_or(seconds).max(1) as u64);
            // Anything the holder changes (renew time, holder) restarts our expiry clock.
            let fingerprint = format!("{:?}/{:?}", holder, spec.renew_time.as_ref().map(|t| t.0));
            let since = match &self.observed {
                Some((seen, at)) if *seen == fingerprint => *at,
                _ => {
                    let at = Instant::now();
                    self.observed = Some((fingerprint, at));
                    at
                }
            };
            if holder.is_some() && since.elapsed() < held_for {
                self.exchange_count(&mut lease, false);
                return Ok(false);
            }
            tracing::info!(previous = ?holder, identity = %self.identity, "taking over the Lease");
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(seconds);
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        // `replace` sends the resourceVersion we read: a concurrent writer makes this fail with 409.
        match self
            .api
            .replace(&lease.name_any(), &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.last_renewed = Some(Instant::now());
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up so another replica can take it at once.
    async fn release(&self) -> kube::Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

/// Writes `count` into the annotations when given, and returns the count they hold (0 when none).
fn exchange(
    annotations: &mut Option<std::collections::BTreeMap<String, String>>,
    count: Option<u32>,
) -> u32 {
    if let Some(count) = count {
        annotations
            .get_or_insert_with(Default::default)
            .insert(PROXY_REPLICAS_ANNOTATION.to_owned(), count.to_string());
    }
    annotations
        .as_ref()
        .and_then(|a| a.get(PROXY_REPLICAS_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_count_travels_in_an_annotation() {
        let mut annotations = None;
        assert_eq!(exchange(&mut annotations, None), 0, "nothing written yet");
        assert!(annotations.is_none(), "a reader does not add annotations");
        assert_eq!(exchange(&mut annotations, Some(3)), 3);
        assert_eq!(
            exchange(&mut annotations, None),
            3,
            "replicas read the leader's count"
        );
        annotations
            .as_mut()
            .unwrap()
            .insert(PROXY_REPLICAS_ANNOTATION.into(), "many".into());
        assert_eq!(
            exchange(&mut annotations, None),
            0,
            "garbage reads as unknown"
        );
    }
}
