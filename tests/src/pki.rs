//! The throwaway certificate authority and keys one control plane runs on.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Names the API server and etcd answer to; everything listens on loopback only.
const LOOPBACK_NAMES: &[&str] = &["127.0.0.1", "localhost"];

/// A certificate and its private key, as PEM files on disk.
pub(crate) struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The names an extension API server behind the aggregator is reached by (the APIService's Service).
pub(crate) const METRICS_SERVER_NAMES: &[&str] = &["metrics-server.kube-system.svc"];

/// Every file the control plane's TLS and token signing need.
pub(crate) struct Pki {
    pub ca_pem: String,
    pub ca_cert: PathBuf,
    /// Serves etcd's client and peer ports (so it carries both server and client usages).
    pub etcd: CertFiles,
    pub apiserver_serving: CertFiles,
    /// How the API server authenticates to etcd.
    pub apiserver_etcd_client: CertFiles,
    /// `CN=tollgate-admin, O=system:masters`: cluster-admin through RBAC's built-in binding.
    pub admin: CertFiles,
    /// Signs service-account tokens (ECDSA P-256, so tokens are ES256).
    pub service_account_private: PathBuf,
    pub service_account_public: PathBuf,
    /// The aggregation layer's own CA: extension API servers trust the user headers only from a client
    /// certificate it signed (`--requestheader-client-ca-file`).
    pub front_proxy_ca: PathBuf,
    /// `CN=front-proxy-client`: how the API server proxies to extension API servers.
    pub front_proxy_client: CertFiles,
    /// Serves the node's kubelet and metrics-server (signed by the CA; names loopback, the extra names
    /// and [`METRICS_SERVER_NAMES`]).
    pub node_serving: CertFiles,
}

/// Which side of a TLS handshake a leaf certificate may play.
#[derive(Clone, Copy)]
enum Role {
    Server,
    Client,
    Both,
}

/// Generates a fresh CA and every certificate and key below it into `dir`; server certificates name
/// loopback and `extra_names` (IP addresses or DNS names).
pub(crate) fn generate(dir: &Path, extra_names: &[String]) -> Result<Pki> {
    let (ca_pem, ca) = authority("tollgate-e2e-ca")?;
    let ca_cert = write(dir, "ca.crt", &ca_pem)?;
    let (front_proxy_pem, front_proxy) = authority("tollgate-e2e-front-proxy-ca")?;
    let front_proxy_ca = write(dir, "front-proxy-ca.crt", &front_proxy_pem)?;

    let signed = |issuer: &Issuer<'static, KeyPair>,
                  file: &str,
                  cn: &str,
                  org: Option<&str>,
                  role: Role,
                  more_names: &[&str]|
     -> Result<CertFiles> {
        let key = KeyPair::generate()?;
        let sans = match role {
            Role::Server | Role::Both => LOOPBACK_NAMES
                .iter()
                .map(|s| s.to_string())
                .chain(extra_names.iter().cloned())
                .chain(more_names.iter().map(|s| s.to_string()))
                .collect(),
            Role::Client => Vec::new(),
        };
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = name(cn, org);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match role {
            Role::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Role::Both => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, issuer)
            .with_context(|| format!("signing the {file} certificate"))?;
        Ok(CertFiles {
            cert: write(dir, &format!("{file}.crt"), &cert.pem())?,
            key: write(dir, &format!("{file}.key"), &key.serialize_pem())?,
        })
    };

    let leaf =
        |file: &str, cn: &str, org: Option<&str>, role: Role| signed(&ca, file, cn, org, role, &[]);
    let etcd = leaf("etcd", "etcd", None, Role::Both)?;
    let apiserver_serving = leaf("apiserver", "kube-apiserver", None, Role::Server)?;
    let apiserver_etcd_client = leaf(
        "apiserver-etcd-client",
        "kube-apiserver",
        None,
        Role::Client,
    )?;
    let admin = leaf(
        "admin",
        "tollgate-admin",
        Some("system:masters"),
        Role::Client,
    )?;

    let front_proxy_client = signed(
        &front_proxy,
        "front-proxy-client",
        "front-proxy-client",
        None,
        Role::Client,
        &[],
    )?;
    let node_serving = signed(
        &ca,
        "node-serving",
        "tollgate-e2e-node",
        None,
        Role::Server,
        METRICS_SERVER_NAMES,
    )?;

    let sa_key = KeyPair::generate().context("generating the service-account key")?;
    let service_account_private = write(dir, "sa.key", &sa_key.serialize_pem())?;
    let service_account_public = write(dir, "sa.pub", &sa_key.public_key_pem())?;

    Ok(Pki {
        ca_pem,
        ca_cert,
        etcd,
        apiserver_serving,
        apiserver_etcd_client,
        admin,
        service_account_private,
        service_account_public,
        front_proxy_ca,
        front_proxy_client,
        node_serving,
    })
}

/// A fresh self-signed CA: its PEM and the issuer that signs with it.
fn authority(common_name: &str) -> Result<(String, Issuer<'static, KeyPair>)> {
    let key = KeyPair::generate().context("generating a CA key")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(common_name, None);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key)?.pem();
    Ok((pem, Issuer::new(params, key)))
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

fn write(dir: &Path, file: &str, pem: &str) -> Result<PathBuf> {
    let path = dir.join(file);
    std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
