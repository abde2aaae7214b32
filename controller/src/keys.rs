//! Generated consumer keys: a `Consumer` key with `generate: true` gets a Secret holding a fresh random
//! key, owned by the Consumer and labelled for the controller's Secret watch.
//!
//! Two ways to replace a key. A rotation (the Secret annotated `tollgate.dev/rotate`, or the portal's
//! button) writes a fresh key and keeps the previous one valid for the key's `rotationGraceSeconds`
//! (default one day), so callers can switch over: the Secret then holds the old key only as its SHA-256
//! and the instant its grace ends, which the compiler turns into a key with that expiry. Rotating again
//! within the grace replaces that record: only the latest previous value stays valid. Deleting the
//! Secret revokes the key at once (for a leaked one): the next pass finds it missing and generates a
//! new one, with no previous value.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use base64::Engine as _;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use tollgate_crds::{
    Consumer, DEFAULT_SECRET_KEY, PREVIOUS_KEY_DIGEST, PREVIOUS_KEY_EXPIRES_AT, ROTATE_ANNOTATION,
};
use tollgate_snapshot::{KeyDigest, ObjectRef};

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

/// A merge patch that rotates the generated key kept in `secret` to `fresh` at `now`: the previous
/// value, if the Secret holds one and `grace_seconds` is positive, is recorded as its SHA-256 and the
/// end of its grace (never as itself); the rotation request and any older record are cleared. The
/// patch carries the Secret's `resourceVersion`, so a concurrent rotation makes it fail with 409
/// instead of losing a key.
pub fn rotation_patch(
    secret: &Secret,
    fresh: &str,
    now: Timestamp,
    grace_seconds: i64,
) -> serde_json::Value {
    let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let previous = secret
        .data
        .as_ref()
        .and_then(|data| data.get(DEFAULT_SECRET_KEY))
        .map(|value| value.0.trim_ascii())
        .filter(|value| !value.is_empty());
    let until = now.as_second().saturating_add(grace_seconds.max(0));
    let (digest, expires) = match (previous, Timestamp::from_second(until)) {
        (Some(value), Ok(until)) if grace_seconds > 0 => (
            json!(encode(hex::encode(KeyDigest::of(value).0).as_bytes())),
            json!(encode(until.to_string().as_bytes())),
        ),
        _ => (serde_json::Value::Null, serde_json::Value::Null),
    };
    // Without a resourceVersion (a Secret not read first) the patch has no precondition.
    let mut metadata = json!({
        "labels": {SECRET_LABEL: "true"},
        "annotations": {ROTATE_ANNOTATION: null},
    });
    if let Some(version) = &secret.metadata.resource_version {
        metadata["resourceVersion"] = json!(version);
    }
    json!({
        "metadata": metadata,
        "data": {
            DEFAULT_SECRET_KEY: encode(fresh.as_bytes()),
            PREVIOUS_KEY_DIGEST: digest,
            PREVIOUS_KEY_EXPIRES_AT: expires,
        },
    })
}

/// Creates the Secrets of generated keys that are missing, and rotates those asked to.
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
        let (missing, rotations) = missing_secrets(store);
        self.failed.retain(|_, at| at.elapsed() < RETRY_AFTER);
        for (id, secret, grace) in rotations {
            if self.failed.contains_key(&id) {
                continue;
            }
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &id.namespace);
            let patch = rotation_patch(&secret, &new_key(), Timestamp::now(), grace);
            match api
                .patch(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.metrics.keys_generated.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(secret = %id, grace_seconds = grace, "rotated a consumer key");
                }
                Err(error) => {
                    self.failed.insert(id.clone(), Instant::now());
                    tracing::warn!(secret = %id, %error, "could not rotate a consumer key");
                }
            }
        }
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

/// A key Secret to rotate, as the store holds it, with the key's grace in seconds.
type Rotation = (ObjectRef, Secret, i64);

/// Secrets that generated keys need and the store does not hold, and those asked to rotate.
fn missing_secrets(store: &Store) -> (Vec<(ObjectRef, Secret)>, Vec<Rotation>) {
    let tables = store.lock();
    let mut missing = Vec::new();
    let mut rotations = Vec::new();
    for (id, consumer) in &tables.consumers.objects {
        for key in consumer.spec.keys.iter().filter(|k| k.generate) {
            let name = key.generated_secret_name(&id.name);
            let secret_id = ObjectRef::new(id.namespace.clone(), name.clone());
            match tables.secrets.objects.get(&secret_id) {
                None => missing.push((secret_id, key_secret(consumer, &name))),
                Some(secret) if asks_rotation(secret) => {
                    rotations.push((secret_id, Secret::clone(secret), key.rotation_grace()));
                }
                Some(_) => {}
            }
        }
    }
    (missing, rotations)
}

/// Whether a key Secret carries the rotation request.
fn asks_rotation(secret: &Secret) -> bool {
    secret
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ROTATE_ANNOTATION))
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

    fn decoded(patch: &serde_json::Value, key: &str) -> Option<String> {
        let text = patch["data"][key].as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        Some(String::from_utf8(bytes).unwrap())
    }

    fn held(value: &str) -> Secret {
        let mut secret = Secret {
            data: Some(BTreeMap::from([(
                DEFAULT_SECRET_KEY.to_owned(),
                ByteString(format!("{value}\n").into_bytes()),
            )])),
            ..Default::default()
        };
        secret.metadata.resource_version = Some("42".into());
        secret
    }

    #[test]
    fn a_rotation_keeps_only_the_previous_keys_digest_and_when_its_grace_ends() {
        let now: Timestamp = "2026-12-06T20:00:00Z".parse().unwrap();
        let patch = rotation_patch(&held("tg_old"), "tg_new", now, 86_400);
        assert_eq!(decoded(&patch, DEFAULT_SECRET_KEY).unwrap(), "tg_new");
        assert_eq!(
            decoded(&patch, PREVIOUS_KEY_DIGEST).unwrap(),
            hex::encode(KeyDigest::of(b"tg_old").0),
            "the digest of the value without its trailing newline"
        );
        assert_eq!(
            decoded(&patch, PREVIOUS_KEY_EXPIRES_AT).unwrap(),
            "2026-12-07T20:00:00Z"
        );
        assert!(!patch.to_string().contains("tg_old"), "{patch}");
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert!(patch["metadata"]["annotations"][ROTATE_ANNOTATION].is_null());
        assert_eq!(patch["metadata"]["labels"][SECRET_LABEL], "true");
    }

    #[test]
    fn a_rotation_without_grace_or_previous_value_clears_the_record() {
        let now: Timestamp = "2026-12-06T20:00:00Z".parse().unwrap();
        for (secret, grace) in [(held("tg_old"), 0), (Secret::default(), 86_400)] {
            let patch = rotation_patch(&secret, "tg_new", now, grace);
            assert_eq!(
                patch["metadata"].get("resourceVersion").is_some(),
                secret.metadata.resource_version.is_some()
            );
            assert_eq!(decoded(&patch, DEFAULT_SECRET_KEY).unwrap(), "tg_new");
            // `null` in a merge patch removes the field.
            let data = patch["data"].as_object().unwrap();
            assert!(data[PREVIOUS_KEY_DIGEST].is_null(), "{patch}");
            assert!(data[PREVIOUS_KEY_EXPIRES_AT].is_null(), "{patch}");
        }
    }

    #[test]
    fn only_annotated_secrets_ask_for_a_rotation() {
        let mut secret = held("tg_old");
        assert!(!asks_rotation(&secret));
        secret.metadata.annotations = Some(BTreeMap::from([(
            ROTATE_ANNOTATION.to_owned(),
            String::new(),
        )]));
        assert!(asks_rotation(&secret));
    }
}
