//! Standalone mode: the same custom-resource YAML as in a cluster, read from files, compiled here, and
//! re-read when the files change.
//!
//! The rule for a change: it is applied unless
//! - a file no longer parses (YAML syntax, or an object that does not fit its kind's schema), or
//! - an object that the snapshot being served had accepted (condition `Accepted=True`) is no longer
//!   accepted — the edit would silently take something that works out of service.
//!
//! Objects that were never accepted (new and broken ones) do not block a change: they are left out of the
//! snapshot, as the controller would, and their verdicts are logged. A refused change is logged with the
//! verdicts that caused it, and the previous snapshot keeps serving until the files change again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tollgate_crds::{
    AIGuardrail, AIRoute, ApiSubscription, Consumer, MCPServer, ModelProvider, condition_type,
};
use tollgate_snapshot::{
    Compiled, DEFAULT_NAMESPACE, Inputs, Kind, ObjectRef, Snapshot, Verdict, compile,
};

use crate::clock;
use crate::control::SnapshotStore;
use crate::control::generated_keys::{GeneratedKeys, KeyFileError};
use crate::telemetry::Recorder;

/// Why the files could not be read as resources.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A document is not valid YAML or does not fit its kind.
    #[error("{path}, document {index}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based document number within the file.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// No YAML files at all.
    #[error("no .yaml or .yml files under {0}")]
    Empty(PathBuf),
    /// Keys with `generate: true` could not be kept.
    #[error(transparent)]
    GeneratedKeys(#[from] KeyFileError),
}

/// Resources read from disk, with a fingerprint of the bytes they came from.
pub struct Loaded {
    /// The objects, ready to compile (`now_unix` filled at read time).
    pub inputs: Inputs,
    /// SHA-256 over every file's path and content.
    pub fingerprint: [u8; 32],
    /// Documents of kinds the proxy does not use (e.g. Namespaces), as `kind name`.
    pub ignored: Vec<String>,
}

/// The YAML files under `path` (itself if it is a file), sorted.
fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| LoadError::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| LoadError::Io {
                path: dir.clone(),
                source,
            })?;
            let p = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue; // editors' swap files, hidden dirs
            }
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(p);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(LoadError::Empty(path.to_path_buf()));
    }
    Ok(out)
}

/// The configuration files' text, read but not yet parsed.
pub struct Files {
    files: Vec<(PathBuf, String)>,
    /// SHA-256 over every file's path and content.
    pub fingerprint: [u8; 32],
}

/// Reads the YAML files under `path` (cheap: no parsing), to tell whether anything changed.
pub fn read_files(path: &Path) -> Result<Files, LoadError> {
    let mut hasher = Sha256::new();
    let mut files = Vec::new();
    for file in yaml_files(path)? {
        let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Io {
            path: file.clone(),
            source,
        })?;
        hasher.update(file.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
        files.push((file, text));
    }
    Ok(Files {
        files,
        fingerprint: hasher.finalize().into(),
    })
}

/// The fingerprint [`read_files`] would give, computed while streaming the files through a small buffer,
/// so polling a large configuration does not allocate its size every second.
pub fn fingerprint(path: &Path) -> Result<[u8; 32], LoadError> {
    use std::io::Read;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    for file in yaml_files(path)? {
        let io = |source| LoadError::Io {
            path: file.clone(),
            source,
        };
        let mut f = std::fs::File::open(&file).map_err(io)?;
        hasher.update(file.to_string_lossy().as_bytes());
        hasher.update([0]);
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        hasher.update([0]);
    }
    Ok(hasher.finalize().into())
}

/// Parses the files' documents into resources.
pub fn parse(files: &Files) -> Result<Loaded, LoadError> {
    let mut inputs = Inputs {
        now_unix: clock::now_unix(),
        ..Inputs::default()
    };
    let mut ignored = Vec::new();
    for (file, text) in &files.files {
        for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let invalid = |message: String| LoadError::Invalid {
                path: file.clone(),
                index: i + 1,
                message,
            };
            let value =
                serde_yaml::Value::deserialize(document).map_err(|e| invalid(e.to_string()))?;
            if value.is_null() {
                continue;
            }
            let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or_default();
            let (api_version, kind) = (field("apiVersion").to_owned(), field("kind").to_owned());
            let parse_err = |e: serde_yaml::Error| invalid(format!("{kind} {e}"));
            match (api_version.as_str(), kind.as_str()) {
                (tollgate_crds::API_VERSION, "ModelProvider") => inputs
                    .providers
                    .push(serde_yaml::from_value::<ModelProvider>(value).map_err(parse_err)?),
                (tollgate_crds::API_VERSION, "AIRoute") => inputs
                    .routes
                    .push(serde_yaml::from_value::<AIRoute>(value).map_err(parse_err)?),
                (tollgate_crds::API_VERSION, "Consumer") => inputs
                    .consumers
                    .push(serde_yaml::from_value::<Consumer>(value).map_err(parse_err)?),
                (tollgate_crds::API_VERSION, "AIGuardrail") => inputs
                    .guardrails
                    .push(serde_yaml::from_value::<AIGuardrail>(value).map_err(parse_err)?),
                (tollgate_crds::API_VERSION, "MCPServer") => inputs
                    .mcp_servers
                    .push(serde_yaml::from_value::<MCPServer>(value).map_err(parse_err)?),
                (tollgate_crds::API_VERSION, "ApiSubscription") => inputs
                    .subscriptions
                    .push(serde_yaml::from_value::<ApiSubscription>(value).map_err(parse_err)?),
                ("v1", "Secret") => inputs
                    .secrets
                    .push(serde_yaml::from_value::<Secret>(value).map_err(parse_err)?),
                ("v1", "ConfigMap") => inputs
                    .config_maps
                    .push(serde_yaml::from_value::<ConfigMap>(value).map_err(parse_err)?),
                ("", _) | (_, "") => {
                    return Err(invalid("a document without apiVersion or kind".into()));
                }
                (_, kind) => {
                    let name = value
                        .get("metadata")
                        .and_then(|m| m.get("name"))
                        .and_then(|n| n.as_str())
                        .unwrap_or("?");
                    ignored.push(format!("{kind} {name}"));
                }
            }
        }
    }
    Ok(Loaded {
        inputs,
        fingerprint: files.fingerprint,
        ignored,
    })
}

/// Reads and parses every resource under `path`.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    parse(&read_files(path)?)
}

/// The label, and its value, that a Secret needs for the controller to read it in a cluster.
const SECRET_LABEL: (&str, &str) = ("tollgate.dev/secret", "true");

/// `namespace/name` of every Secret without the label the controller selects Secrets by: they serve
/// here, but the same YAML applied to a cluster would leave them unseen.
fn unlabelled_secrets(inputs: &Inputs) -> Vec<String> {
    let (key, value) = SECRET_LABEL;
    inputs
        .secrets
        .iter()
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(key))
                .is_none_or(|v| v != value)
        })
        .map(|s| {
            let namespace = s.metadata.namespace.as_deref().unwrap_or_default();
            format!(
                "{}/{}",
                if namespace.is_empty() {
                    DEFAULT_NAMESPACE
                } else {
                    namespace
                },
                s.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect()
}

/// Warns of the Secrets a cluster would not serve (by name only: never their data).
fn warn_unlabelled_secrets(inputs: &Inputs) {
    let (key, value) = SECRET_LABEL;
    for name in unlabelled_secrets(inputs) {
        tracing::warn!(
            secret = %name,
            "Secret {name} has no label {key}={value}: it is used here, but in a cluster the \
             controller only reads Secrets labelled {key}={value}"
        );
    }
}

/// Whether every condition of a verdict holds.
fn all_ok(v: &Verdict) -> bool {
    v.conditions.iter().all(|c| c.status)
}

/// Logs the verdicts that are not all-OK.
pub fn log_problems(verdicts: &[Verdict]) {
    for v in verdicts.iter().filter(|v| !all_ok(v)) {
        for c in v.conditions.iter().filter(|c| !c.status) {
            tracing::warn!(
                kind = v.kind.as_str(),
                object = %v.id,
                condition = c.type_,
                reason = c.reason,
                "{}",
                c.message
            );
        }
    }
}

fn accepted_set(verdicts: &[Verdict]) -> AcceptedSet {
    let mut ids: Vec<u64> = verdicts
        .iter()
        .filter(|v| v.is_true(condition_type::ACCEPTED))
        .map(|v| AcceptedSet::id(v.kind, &v.id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    AcceptedSet(ids)
}

/// The objects a snapshot accepted, kept as sorted 64-bit hashes: with tens of thousands of objects,
/// their names would take megabytes of a proxy's memory for as long as it runs. A collision (odds
/// about n²/2⁶⁵, 10⁻¹¹ for 30,000 objects) could only let one regression through unrefused.
#[derive(Default)]
struct AcceptedSet(Vec<u64>);

impl AcceptedSet {
    fn id(kind: Kind, id: &ObjectRef) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        // Fixed keys: the same object hashes alike in the old and the new set.
        let mut h =
            std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().build_hasher();
        kind.as_str().hash(&mut h);
        id.namespace.hash(&mut h);
        id.name.hash(&mut h);
        h.finish()
    }

    fn contains(&self, kind: Kind, id: &ObjectRef) -> bool {
        self.0.binary_search(&Self::id(kind, id)).is_ok()
    }
}

/// The outcome of looking at the files once.
#[derive(Debug)]
pub enum Change {
    /// Files unchanged since the last look (applied or refused).
    Unchanged,
    /// Files changed but compile to the same table.
    SameTable,
    /// A new snapshot was swapped in.
    Applied(u64),
    /// The change was refused; the old snapshot stays.
    Refused(String),
}

/// Watches a path and keeps a [`SnapshotStore`] in step with it.
pub struct Watcher {
    path: PathBuf,
    store: Arc<SnapshotStore>,
    recorder: Option<Arc<Recorder>>,
    version: u64,
    seen: [u8; 32],
    hash: String,
    accepted: AcceptedSet,
    keys: GeneratedKeys,
}

impl Watcher {
    /// Reads and compiles the files and stores the first snapshot, generated keys kept in
    /// [`GeneratedKeys::default_location`]. Fails if they do not parse.
    pub fn start(
        path: &Path,
        store: Arc<SnapshotStore>,
        recorder: Option<Arc<Recorder>>,
    ) -> Result<Self, LoadError> {
        Self::start_with_keys(path, store, recorder, GeneratedKeys::default_location())
    }

    /// [`Watcher::start`] with `generate: true` keys kept where `keys` says. Fails if the files do not
    /// parse or a generated key cannot be kept.
    pub fn start_with_keys(
        path: &Path,
        store: Arc<SnapshotStore>,
        recorder: Option<Arc<Recorder>>,
        mut keys: GeneratedKeys,
    ) -> Result<Self, LoadError> {
        let mut loaded = load(path)?;
        warn_unlabelled_secrets(&loaded.inputs);
        keys.provide(&mut loaded.inputs)?;
        for what in &loaded.ignored {
            tracing::info!("ignoring {what}: not a kind the proxy uses");
        }
        let Compiled { snapshot, verdicts } = compile(&loaded.inputs, 1);
        log_problems(&verdicts);
        log_summary(&snapshot);
        let hash = snapshot.hash.clone();
        store.store(Arc::new(snapshot));
        let watcher = Self {
            path: path.to_path_buf(),
            store,
            recorder,
            version: 1,
            seen: loaded.fingerprint,
            hash,
            accepted: accepted_set(&verdicts),
            keys,
        };
        drop((loaded, verdicts));
        release_freed_memory();
        Ok(watcher)
    }

    /// Version of the snapshot last stored.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Looks at the files once and applies or refuses what changed.
    pub fn check(&mut self) -> Change {
        match fingerprint(&self.path) {
            Ok(seen) if seen == self.seen => return Change::Unchanged,
            _ => {}
        }
        let files = match read_files(&self.path) {
            Ok(files) => files,
            Err(e) => {
                // Log each distinct read error once; the files are read again until they are back.
                let message = e.to_string();
                let digest: [u8; 32] = Sha256::digest(message.as_bytes()).into();
                return self.refuse(digest, message);
            }
        };
        if files.fingerprint == self.seen {
            return Change::Unchanged;
        }
        let fingerprint = files.fingerprint;
        let parsed = parse(&files);
        drop(files);
        let change = match parsed {
            Ok(mut loaded) => {
                warn_unlabelled_secrets(&loaded.inputs);
                // Without its keys the change would lock consumers out: refused instead.
                match self.keys.provide(&mut loaded.inputs) {
                    Ok(_) => {
                        self.seen = loaded.fingerprint;
                        self.apply(loaded)
                    }
                    Err(e) => self.refuse(fingerprint, e.to_string()),
                }
            }
            Err(e) => self.refuse(fingerprint, format!("the files do not parse: {e}")),
        };
        release_freed_memory();
        change
    }

    fn refuse(&mut self, seen: [u8; 32], message: String) -> Change {
        if seen == self.seen {
            return Change::Unchanged;
        }
        self.seen = seen;
        tracing::error!(
            "configuration change refused: {message}; still serving version {}",
            self.version
        );
        self.count(false);
        Change::Refused(message)
    }

    fn apply(&mut self, loaded: Loaded) -> Change {
        let Compiled { snapshot, verdicts } = compile(&loaded.inputs, self.version + 1);
        drop(loaded);
        let now_accepted = accepted_set(&verdicts);
        let lost: Vec<&Verdict> = verdicts
            .iter()
            .filter(|v| {
                self.accepted.contains(v.kind, &v.id) && !now_accepted.contains(v.kind, &v.id)
            })
            .collect();
        if !lost.is_empty() {
            let owned: Vec<Verdict> = lost.iter().map(|v| (*v).clone()).collect();
            log_problems(&owned);
            let names: Vec<String> = lost
                .iter()
                .map(|v| format!("{} {}", v.kind.as_str(), v.id))
                .collect();
            let message = format!(
                "these objects were accepted before and would no longer be: {}",
                names.join(", ")
            );
            tracing::error!(
                "configuration change refused: {message}; still serving version {}",
                self.version
            );
            self.count(false);
            return Change::Refused(message);
        }
        log_problems(&verdicts);
        self.accepted = now_accepted;
        if snapshot.hash == self.hash {
            return Change::SameTable;
        }
        self.version += 1;
        self.hash = snapshot.hash.clone();
        log_summary(&snapshot);
        self.store.store(Arc::new(snapshot));
        self.count(true);
        Change::Applied(self.version)
    }

    fn count(&self, applied: bool) {
        if let Some(r) = &self.recorder {
            r.metrics.reload(applied);
        }
    }

    /// Checks the files every `interval`, forever.
    pub async fn run(mut self, interval: Duration) {
        // The files were just read by `start`: the first look is one interval away.
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // File reads and compiling are blocking work; keep them off the request threads.
            let (back, change) = tokio::task::spawn_blocking(move || {
                let change = self.check();
                (self, change)
            })
            .await
            .expect("configuration check does not panic");
            self = back;
            if let Change::Applied(v) = change {
                tracing::info!(version = v, "configuration change applied");
            }
        }
    }
}

/// Hands memory freed after parsing and compiling back to the OS. Reading a large configuration
/// allocates many times the size of the snapshot that stays; allocators keep freed pages otherwise, and
/// a proxy's resident memory is what a Pod is sized and limited by. The proxy binary allocates with
/// jemalloc, whose arenas are purged; glibc's heap is trimmed too, for what is allocated there (C code,
/// other programs using the library). Either call does nothing for an allocator that holds nothing.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused pages of malloc's own heap; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    // "arena.<MALLCTL_ARENAS_ALL>.purge": every arena's unused dirty pages back to the OS.
    const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
    // SAFETY: a void mallctl: no value is read or written, the name is NUL-terminated.
    let _ = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
}

fn log_summary(snapshot: &Snapshot) {
    let c = &snapshot.content;
    tracing::info!(
        version = snapshot.version,
        hash = &snapshot.hash[..12],
        providers = c.providers.len(),
        routes = c.routes.len(),
        consumers = c.consumers.len(),
        subscriptions = c.subscriptions.len(),
        "snapshot ready"
    );
    // Route by route only for small tables: a generated one with thousands would flood the log.
    if c.routes.len() > 20 {
        return;
    }
    for r in &c.routes {
        tracing::info!(
            route = %r.id,
            prefix = if r.prefix.is_empty() { "/" } else { r.prefix.as_str() },
            stage = ?r.stage,
            models = r.models.len(),
            "route"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_secrets_a_cluster_would_not_read() {
        let files = Files {
            files: vec![(
                PathBuf::from("secrets.yaml"),
                r#"
apiVersion: v1
kind: Secret
metadata: {name: labelled, namespace: team, labels: {"tollgate.dev/secret": "true"}}
stringData: {apiKey: k1}
---
apiVersion: v1
kind: Secret
metadata: {name: bare}
stringData: {apiKey: k2}
---
apiVersion: v1
kind: Secret
metadata: {name: wrong-value, namespace: team, labels: {"tollgate.dev/secret": "yes"}}
stringData: {apiKey: k3}
"#
                .to_string(),
            )],
            fingerprint: [0; 32],
        };
        let loaded = parse(&files).unwrap();
        assert_eq!(
            unlabelled_secrets(&loaded.inputs),
            ["default/bare", "team/wrong-value"]
        );
    }

    #[test]
    fn config_maps_are_read_for_rest_services() {
        let files = Files {
            files: vec![(
                PathBuf::from("orders.yaml"),
                r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: orders-openapi, labels: {"tollgate.dev/config": "true"}}
data:
  openapi.json: '{"openapi": "3.1.0", "paths": {"/items/{id}": {"get": {"operationId": "getItem"}}}}'
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: orders}
spec:
  prefix: /orders
  models: [{name: m, backends: [{provider: p}]}]
  rest:
    backend: {url: "http://127.0.0.1:9/v2"}
    openAPI: {configMapRef: {name: orders-openapi}}
"#
                .to_string(),
            )],
            fingerprint: [0; 32],
        };
        let loaded = parse(&files).unwrap();
        assert_eq!(loaded.inputs.config_maps.len(), 1);
        assert!(loaded.ignored.is_empty(), "{:?}", loaded.ignored);
        let compiled = tollgate_snapshot::compile(&loaded.inputs, 1);
        let rest = compiled.snapshot.content.routes[0].rest.as_ref().unwrap();
        assert_eq!(rest.operations[0].operation_id.as_deref(), Some("getItem"));
    }
}
