//! `AIRoute.spec.rest`: a team's own REST service published behind the route's keys and subscriptions.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::provider::Timeouts;

/// The key read from a CA Secret when the reference names none.
pub const DEFAULT_CA_KEY: &str = "ca.crt";
/// The key read from an OpenAPI ConfigMap when the reference names none.
pub const DEFAULT_OPENAPI_KEY: &str = "openapi.json";
/// The label a ConfigMap needs for the controller to see it.
pub const CONFIG_MAP_LABEL: &str = "tollgate.dev/config";

fn default_ca_key() -> String {
    DEFAULT_CA_KEY.to_string()
}

fn default_openapi_key() -> String {
    DEFAULT_OPENAPI_KEY.to_string()
}

fn default_credential_header() -> String {
    "Authorization".to_string()
}

/// A REST service: where it runs and which of its operations are published, under `<prefix>/api/`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestService {
    /// Where requests are sent.
    pub backend: RestBackend,
    /// The service's OpenAPI 3.x document: only the operations it declares are forwarded.
    #[serde(rename = "openAPI")]
    pub open_api: OpenApiSource,
}

/// The service's address, timeouts, TLS trust, credentials and body limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestBackend {
    /// Base URL: `<prefix>/api/<path>` is sent to `<url>/<path>`, e.g. `http://orders.team-a.svc:8080/v2`.
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    )]
    pub url: String,
    /// Upstream timeouts; the defaults are the providers' (`connect` 5s, `firstByte` 60s, `idle` 60s,
    /// `total` 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// The certificate authority that signs the service's certificate (PEM), for `https` URLs.
    /// Without it the public roots are trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RestTls>,
    /// A credential the gateway adds to every request. The caller's own key is never sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<RestCredentials>,
    /// Largest request body accepted, in bytes; larger gets 413. Default 8 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 67_108_864))]
    pub max_request_bytes: Option<u64>,
}

/// TLS trust for the service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestTls {
    /// A Secret (labelled `tollgate.dev/secret: "true"`) holding the CA certificate(s) in PEM; only
    /// these are trusted for this service.
    pub ca_secret_ref: CaSecretRef,
}

/// One key of a Secret in the route's namespace, holding PEM certificates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaSecretRef {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Key inside the Secret; defaults to `ca.crt`.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A credential sent to the service as a header.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestCredentials {
    /// The Secret (labelled `tollgate.dev/secret: "true"`) and key holding the credential.
    pub secret_ref: crate::common::SecretKeyRef,
    /// Header the credential is sent in. Default `Authorization`.
    #[serde(default = "default_credential_header")]
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    #[x_kube(validation = Rule::new(
        "!(self.lowerAscii() in ['host', 'content-length', 'transfer-encoding', 'connection', 'te', 'upgrade', 'x-request-id'])"
    ).message("this header is managed by the gateway and cannot carry a credential"))]
    pub header: String,
    /// Text put before the credential, e.g. `Bearer ` (with its space). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = r"^[\x20-\x7e]*$"))]
    pub prefix: Option<String>,
}

/// Where the OpenAPI document is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenApiSource {
    /// A ConfigMap in the route's namespace, labelled `tollgate.dev/config: "true"`, holding the
    /// document as JSON or YAML.
    pub config_map_ref: ConfigMapKeyRef,
}

/// One key of a ConfigMap in the route's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Key inside the ConfigMap's data; defaults to `openapi.json`.
    #[serde(default = "default_openapi_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}
