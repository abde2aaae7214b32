//! Reading certificates the way an operator would: out of a Secret, through `base64 -d` and
//! `openssl x509 -text`, so assertions are about what users will see.

use std::process::Command;

use crate::{ControlPlane, command::run, command::run_with_stdin};

/// Decodes base64 text (such as a Secret's data value) with `base64 -d`.
pub fn decode_base64(text: &str) -> String {
    let mut cmd = Command::new("base64");
    cmd.arg("-d");
    run_with_stdin(cmd, text.trim()).expect("base64 -d")
}

/// `openssl x509 -noout -text` of a PEM certificate: its names, issuer and extensions as text.
pub fn certificate_text(pem: &str) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["x509", "-noout", "-text"]);
    run_with_stdin(cmd, pem).expect("openssl reads the certificate")
}

impl ControlPlane {
    /// One key of a Secret's data, decoded. Panics if the Secret or the key is missing.
    pub fn secret_data(&self, namespace: &str, secret: &str, key: &str) -> String {
        let mut get = self.kubectl();
        get.args(["get", "secret", secret, "-n", namespace, "-o", "json"]);
        let json = run(get).unwrap_or_else(|e| panic!("kubectl get secret {secret}: {e}"));
        let object: serde_json::Value = serde_json::from_str(&json).expect("kubectl prints JSON");
        let value = object["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("Secret {namespace}/{secret} has no {key}"));
        decode_base64(value)
    }
}
