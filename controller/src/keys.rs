//! Generated consumer keys: a `Consumer` key with `generate: true` gets a Secret holding a fresh random
//! key, owned by the Consumer and labelled for the controller's Secret watch. Deleting the Secret
//! rotates the key: the next pass finds it missing and generates a new one.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use base64::Engine as _;
use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{Api, Client, Resource, api::PostParams};
use tollgate_crds::{Consumer, DEFAULT_SECRET_KEY};
use tollgate_snapshot::ObjectRef;

use crate::{
    metrics::Metrics,
    store::Store,
    watch::{SECRET_LABEL, SECRET_SELECTOR},
};

/// What every generated key starts with, so scanners and people recognise a leaked one.
pub const KEY_PREFIX: &str = "tg_";
/// Random bytes in a generated key.
const KEY_BYTES: usize = 32;
/// After a create fails (e.g. a Secret of that name exists without our label), wait before retrying.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// A fresh key: [`KEY_PREFIX`] and 32 random bytes in URL-safe base64 (43 characters).
pub fn new_key() -> String {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The Secret holding a generated key for `consumer`.
pub fn key_secret(consumer: &Consumer, secret_name: &str) -> Secret {
    let owner = OwnerReference {
        api_version: Consumer::api_version(&()).into_owned(),
        kind: Consumer::kind(&()).into_owned(),
        name: consumer.metadata.name.clone().unwrap_or_default(),
        uid: consumer.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.to_owned()),
            namespace: consumer.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([
                (SECRET_LABEL.to_owned(), "true".to_owned()),
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "tollgate-controller".to_owned(),
                ),
            ])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            DEFAULT_SECRET_KEY.to_owned(),
            ByteString(new_key().into_bytes()),
        )])),
        ..Default::default()
    }
}

/// Creates the Secrets of generated keys that are missing.
pub struct KeyGenerator {
    client: Client,
    metrics: Arc<Metrics>,
    failed: HashMap<ObjectRef, Instant>,
}

impl KeyGenerator {
    /// A generator writing with `client`.
    pub fn new(client: Client, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            metrics,
            failed: HashMap::new(),
        }
    }

    /// One pass over every Consumer in the store.
    pub async fn ensure(&mut self, store: &Store) {
        let missing = missing_secrets(store);
        self.failed.retain(|_, at| at.elapsed() < RETRY_AFTER);
        for (id, secret) in missing {
            if self.failed.contains_key(&id) {
                continue;
            }
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &id.namespace);
            match api.create(&PostParams::default(), &secret).await {
                Ok(_) => {
                    self.metrics.keys_generated.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(secret = %id, "generated a consumer key");
                }
                // Usually our own earlier create that the watch has not shown yet.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    self.failed.insert(id.clone(), Instant::now());
                    tracing::debug!(secret = %id, "key Secret already exists; if it persists, it may lack the label {SECRET_SELECTOR}");
                }
                Err(error) => {
                    self.failed.insert(id.clone(), Instant::now());
                    tracing::warn!(secret = %id, %error, "could not create a key Secret");
                }
            }
        }
    }
}

/// Secrets that generated keys need and the store does not hold.
fn missing_secrets(store: &Store) -> Vec<(ObjectRef, Secret)> {
    let tables = store.lock();
    let mut missing = Vec::new();
    for (id, consumer) in &tables.consumers.objects {
        for key in consumer.spec.keys.iter().filter(|k| k.generate) {
            let name = key.generated_secret_name(&id.name);
            let secret_id = ObjectRef::new(id.namespace.clone(), name.clone());
            if !tables.secrets.objects.contains_key(&secret_id) {
                missing.push((secret_id, key_secret(consumer, &name)));
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_long_enough() {
        let a = new_key();
        let b = new_key();
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 43);
        assert_ne!(a, b);
    }

    #[test]
    fn the_secret_is_owned_labelled_and_holds_the_key() {
        let consumer: Consumer = serde_json::from_value(serde_json::json!({
            "apiVersion": "tollgate.dev/v1alpha1",
            "kind": "Consumer",
            "metadata": {"name": "app", "namespace": "team", "uid": "u-1"},
            "spec": {"keys": [{"name": "primary", "generate": true}]},
        }))
        .unwrap();
        let secret = key_secret(&consumer, "app-primary-apikey");
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Consumer", "u-1")
        );
        assert_eq!(
            secret.metadata.labels.as_ref().unwrap()[SECRET_LABEL],
            "true"
        );
        let key = &secret.data.as_ref().unwrap()["apiKey"].0;
        assert!(key.starts_with(KEY_PREFIX.as_bytes()));
    }
}
