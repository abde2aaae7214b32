//! Generated consumer keys in standalone mode. In a cluster the controller writes a `generate: true`
//! key into a Secret; here there is no API server, so the proxy keeps such keys in a state file of its
//! own (mode 0600, in a directory of mode 0700) and reads them back on every start, so a key stays the
//! same across restarts. The compiler then finds each key in a Secret made in memory, named as the
//! controller would name it (`<consumer>-<key>-apikey`, data `apiKey`). A Secret of that name in the
//! files wins over the state file. The file's path is logged; a key's value never is: read it from the
//! file. Remove a key's line from the file (or the file) to have a new one generated at the next start
//! or change of the files.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use tollgate_crds::DEFAULT_SECRET_KEY;
use tollgate_snapshot::{DEFAULT_NAMESPACE, Inputs};

/// What every generated key starts with (as the controller's do), so scanners and people recognise one.
const KEY_PREFIX: &str = "tg_";
/// The state file's name under the state directory when no path is given.
const DEFAULT_FILE: &str = "tollgate/generated-keys.json";

/// Why generated keys could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// No path was given and neither `XDG_STATE_HOME` nor `HOME` says where one could be.
    #[error(
        "consumer keys with `generate: true` need a file to be kept in: give --generated-keys-file (neither XDG_STATE_HOME nor HOME is set)"
    )]
    NoLocation,
    /// The file could not be read or written.
    #[error(
        "cannot keep generated consumer keys in {path}: {source}; give --generated-keys-file a writable path"
    )]
    Io {
        /// The state file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not what this module writes.
    #[error("{path} is not a generated-keys file ({message}); move it away to start a new one")]
    Invalid {
        /// The state file.
        path: PathBuf,
        /// What is wrong (never its content).
        message: String,
    },
}

/// The state file's content: keys by `namespace/consumer/key`.
#[derive(Serialize, Deserialize, Default)]
struct State {
    keys: BTreeMap<String, String>,
}

/// Where generated keys are kept, and whether that has been logged yet.
#[derive(Debug, Clone)]
pub struct GeneratedKeys {
    path: Option<PathBuf>,
    announced: bool,
}

impl GeneratedKeys {
    /// Keys kept in `path`.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Some(path.into()),
            announced: false,
        }
    }

    /// Keys kept in `$XDG_STATE_HOME/tollgate/generated-keys.json`, else
    /// `$HOME/.local/state/tollgate/generated-keys.json`: outside the configuration, so the files can be
    /// shared or committed without the keys.
    pub fn default_location() -> Self {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        let base = var("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|home| Path::new(&home).join(".local/state")));
        Self {
            path: base.map(|b| b.join(DEFAULT_FILE)),
            announced: false,
        }
    }

    /// The state file, if a location is known.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Adds to `inputs` a Secret for every `generate: true` key whose Secret the files do not hold,
    /// with the key from the state file, or a new one saved there first. Returns how many keys were
    /// new. Touches no file when no key is generated.
    pub fn provide(&mut self, inputs: &mut Inputs) -> Result<usize, KeyFileError> {
        let held: BTreeSet<(String, String)> = inputs
            .secrets
            .iter()
            .map(|s| {
                (
                    namespace_of(&s.metadata),
                    s.metadata.name.clone().unwrap_or_default(),
                )
            })
            .collect();
        let mut wanted = Vec::new();
        for consumer in &inputs.consumers {
            let namespace = namespace_of(&consumer.metadata);
            let name = consumer.metadata.name.as_deref().unwrap_or_default();
            for key in consumer.spec.keys.iter().filter(|k| k.generate) {
                let secret_name = key.generated_secret_name(name);
                if !held.contains(&(namespace.clone(), secret_name.clone())) {
                    let id = format!("{namespace}/{name}/{}", key.name);
                    wanted.push((id, consumer.metadata.namespace.clone(), secret_name));
                }
            }
        }
        if wanted.is_empty() {
            return Ok(0);
        }
        let path = self.path.clone().ok_or(KeyFileError::NoLocation)?;
        let mut state = read_state(&path)?;
        let mut fresh = Vec::new();
        for (id, _, _) in &wanted {
            if !state.keys.contains_key(id) {
                state.keys.insert(id.clone(), new_key());
                fresh.push(id.as_str());
            }
        }
        if !fresh.is_empty() {
            write_state(&path, &state)?;
            for id in &fresh {
                tracing::info!(
                    key = %id,
                    file = %path.display(),
                    "generated a consumer key; its value is kept in the file (mode 0600), never logged"
                );
            }
        }
        if !self.announced {
            self.announced = true;
            tracing::info!(
                file = %path.display(),
                keys = wanted.len(),
                "consumer keys with generate: true are read from this file"
            );
        }
        let count = fresh.len();
        for (id, namespace, secret_name) in wanted {
            let value = state.keys.remove(&id).unwrap_or_default();
            inputs
                .secrets
                .push(key_secret(namespace, secret_name, value));
        }
        Ok(count)
    }
}

/// A Secret's namespace, `default` when it has none.
fn namespace_of(meta: &ObjectMeta) -> String {
    match meta.namespace.as_deref() {
        None | Some("") => DEFAULT_NAMESPACE.to_owned(),
        Some(ns) => ns.to_owned(),
    }
}

/// The in-memory Secret a generated key is read from, labelled as a cluster would need it.
fn key_secret(namespace: Option<String>, name: String, value: String) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace,
            labels: Some(BTreeMap::from([(
                "tollgate.dev/secret".to_owned(),
                "true".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            DEFAULT_SECRET_KEY.to_owned(),
            ByteString(value.into_bytes()),
        )])),
        ..Secret::default()
    }
}

/// A fresh key: `tg_` and 32 random bytes in URL-safe base64, as the controller makes them.
fn new_key() -> String {
    let mut bytes = [0u8; 32];
    // The TLS library's provider: the kernel's `getrandom`, which works without `/dev`.
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("the kernel gives random bytes");
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn read_state(path: &Path) -> Result<State, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => return Err(io(e)),
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "the generated-keys file may be read by others; it is written with mode 0600"
        );
    }
    // Only where the problem is: serde_json's messages may quote a value, which may be a key.
    serde_json::from_slice(&text).map_err(|e| KeyFileError::Invalid {
        path: path.to_path_buf(),
        message: format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ),
    })
}

/// Writes the state to a new file of mode 0600 beside `path` and renames it over `path`, so a crash
/// leaves the old file or the new one, never half of one.
fn write_state(path: &Path, state: &State) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut text = serde_json::to_vec_pretty(state).expect("a map of strings encodes");
    text.push(b'\n');
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // `mode` applies only to a new file: a leftover temporary file is narrowed too.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_crds::Consumer;

    fn consumer(yaml: &str) -> Consumer {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn inputs() -> Inputs {
        Inputs {
            consumers: vec![
                consumer(
                    "apiVersion: tollgate.dev/v1alpha1\nkind: Consumer\nmetadata: {name: app, namespace: team}\nspec: {keys: [{name: main, generate: true}, {name: own, secretRef: {name: own}}]}",
                ),
                consumer(
                    "apiVersion: tollgate.dev/v1alpha1\nkind: Consumer\nmetadata: {name: bot}\nspec: {keys: [{name: k, generate: true}]}",
                ),
            ],
            ..Inputs::default()
        }
    }

    fn value_of(inputs: &Inputs, name: &str) -> String {
        let secret = inputs
            .secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .unwrap();
        String::from_utf8(secret.data.as_ref().unwrap()["apiKey"].0.clone()).unwrap()
    }

    #[test]
    fn keys_are_generated_once_kept_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/keys.json");
        let mut first = inputs();
        assert_eq!(GeneratedKeys::at(&path).provide(&mut first).unwrap(), 2);
        let main = value_of(&first, "app-main-apikey");
        assert!(main.starts_with(KEY_PREFIX) && main.len() == 46, "{main}");
        assert_ne!(main, value_of(&first, "bot-k-apikey"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"team/app/main\"") && text.contains("\"default/bot/k\""),
            "{text}"
        );

        // Another start: the same keys, nothing new, the file unchanged.
        let mut again = inputs();
        assert_eq!(GeneratedKeys::at(&path).provide(&mut again).unwrap(), 0);
        assert_eq!(value_of(&again, "app-main-apikey"), main);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        let compiled = tollgate_snapshot::compile(&again, 1);
        assert!(
            compiled
                .snapshot
                .consumer_by_key(&tollgate_snapshot::KeyDigest::of(main.as_bytes()))
                .is_some()
        );
    }

    #[test]
    fn a_secret_in_the_files_wins_and_no_generated_key_touches_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let mut given = inputs();
        given.consumers.truncate(1);
        given.secrets.push(key_secret(
            Some("team".into()),
            "app-main-apikey".into(),
            "from-files".into(),
        ));
        assert_eq!(GeneratedKeys::at(&path).provide(&mut given).unwrap(), 0);
        assert_eq!(given.secrets.len(), 1);
        assert!(!path.exists());
        assert_eq!(
            GeneratedKeys::at(&path)
                .provide(&mut Inputs::default())
                .unwrap(),
            0
        );
        assert!(!path.exists());
    }

    #[test]
    fn problems_name_the_file_and_never_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        for content in [
            "{\"keys\": {\"a/b/c\": tg_secretvalue}}",
            "{\"keys\": \"tg_secretvalue\"}",
        ] {
            std::fs::write(&path, content).unwrap();
            let err = GeneratedKeys::at(&path).provide(&mut inputs()).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(!text.contains("secretvalue"), "{text}");
        }
        let err = GeneratedKeys {
            path: None,
            announced: false,
        }
        .provide(&mut inputs())
        .unwrap_err();
        assert!(err.to_string().contains("--generated-keys-file"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Whatever the state file holds (it is a file anyone with the account may edit), reading it
        /// gives keys or an error naming no part of it.
        #[test]
        fn any_state_file_reads_or_fails_without_quoting_it(
            secret in "[A-Za-z0-9]{12}",
            shape in 0usize..6,
            noise in proptest::prelude::any::<Vec<u8>>(),
        ) {
            let marked = format!("tg_{secret}");
            let text = match shape {
                0 => format!("{{\"keys\": {{\"a/b/c\": \"{marked}\"}}}}").into_bytes(),
                1 => format!("{{\"keys\": \"{marked}\"}}").into_bytes(),
                2 => format!("{{\"keys\": [\"{marked}\"]}}").into_bytes(),
                3 => format!("{{\"{marked}\": 1}}").into_bytes(),
                4 => format!("{{\"keys\": {{\"a/b/c\": {marked}}}}}").into_bytes(),
                _ => [marked.as_bytes(), &noise].concat(),
            };
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("keys.json");
            std::fs::write(&path, &text).unwrap();
            match read_state(&path) {
                Ok(state) => proptest::prop_assert!(state.keys.values().all(|v| v == &marked)),
                Err(e) => proptest::prop_assert!(!e.to_string().contains(&secret), "{}", e),
            }
        }
    }
}
