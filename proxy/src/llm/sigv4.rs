//! AWS Signature Version 4 for request headers, written from AWS's public description and checked
//! against its published test suite.

use sha2::{Digest, Sha256};

use crate::clock;

/// An access key pair, with the session token of temporary credentials.
#[derive(Clone, Copy)]
pub struct AwsKeys<'a> {
    /// `AKIA…` / `ASIA…`.
    pub access_key_id: &'a str,
    /// The secret access key.
    pub secret_access_key: &'a str,
    /// `x-amz-security-token` for temporary credentials.
    pub session_token: Option<&'a str>,
}

/// What is signed.
pub struct Signable<'a> {
    /// `GET`, `POST`…
    pub method: &'a str,
    /// The `Host` header as sent (`host` or `host:port`).
    pub host: &'a str,
    /// The path exactly as sent (already percent-encoded where the URL needs it).
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    /// Further headers to sign, e.g. `content-type`.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

/// Where and when.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    /// e.g. `us-east-1`.
    pub region: &'a str,
    /// e.g. `bedrock`.
    pub service: &'a str,
    /// Unix seconds.
    pub unix: i64,
}

/// The headers to add to the request: `x-amz-date`, `x-amz-security-token` (if any), `authorization`.
pub fn sign(
    keys: &AwsKeys<'_>,
    scope: &Scope<'_>,
    req: &Signable<'_>,
) -> Vec<(&'static str, String)> {
    let amz_date = amz_date(scope.unix);
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_string()))
        .collect();
    headers.push(("host".into(), req.host.to_string()));
    headers.push(("x-amz-date".into(), amz_date.clone()));
    if let Some(token) = keys.session_token {
        headers.push(("x-amz-security-token".into(), token.to_string()));
    }
    let payload_hash = hex::encode(Sha256::digest(req.body));
    let (canonical, signed_headers) =
        canonical_request(req.method, req.path, req.query, &headers, &payload_hash);
    let date = &amz_date[..8];
    let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let to_sign = string_to_sign(&amz_date, &credential_scope, &canonical);
    let key = signing_key(keys.secret_access_key, date, scope.region, scope.service);
    let signature = hex::encode(hmac_sha256(&key, to_sign.as_bytes()));
    let mut out = vec![("x-amz-date", amz_date)];
    if let Some(token) = keys.session_token {
        out.push(("x-amz-security-token", token.to_string()));
    }
    out.push((
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}",
            keys.access_key_id
        ),
    ));
    out
}

/// `20150830T123600Z`.
pub fn amz_date(unix: i64) -> String {
    // From `2015-08-30T12:36:00.000Z`: drop the separators and the milliseconds.
    let text = clock::rfc3339_ms(unix * 1_000);
    let mut out: String = text[..19]
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    out.push('Z');
    out
}

/// The canonical request and the signed-headers list.
pub fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    payload_hash: &str,
) -> (String, String) {
    let mut sorted: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        match sorted.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push(',');
                v.push_str(&value);
            }
            None => sorted.push((name, value)),
        }
    }
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let signed: Vec<&str> = sorted.iter().map(|(n, _)| n.as_str()).collect();
    let signed = signed.join(";");
    let mut text = String::with_capacity(256);
    text.push_str(method);
    text.push('\n');
    text.push_str(&canonical_uri(path));
    text.push('\n');
    text.push_str(&canonical_query(query));
    text.push('\n');
    for (n, v) in &sorted {
        text.push_str(n);
        text.push(':');
        text.push_str(v);
        text.push('\n');
    }
    text.push('\n');
    text.push_str(&signed);
    text.push('\n');
    text.push_str(payload_hash);
    (text, signed)
}

/// The string to sign.
pub fn string_to_sign(amz_date: &str, credential_scope: &str, canonical_request: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{credential_scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// The derived signing key.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// Every path segment URI-encoded (for services other than S3 the path as sent is encoded again,
/// so a `%3A` in a Bedrock model id is signed as `%253A`).
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/')
        .map(|segment| uri_encode(segment.as_bytes()))
        .collect::<Vec<_>>()
        .join("/")
}

/// Parameters decoded, re-encoded, and sorted by name then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k)),
                uri_encode(&percent_decode(v)),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but the unreserved characters, with upper-case hex.
pub fn uri_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_digit(b[i + 1]), hex_digit(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    // AWS's Signature Version 4 test suite: credentials, region, service and instant shared by its cases.
    const KEYS: AwsKeys<'static> = AwsKeys {
        access_key_id: "AKIDEXAMPLE",
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token: None,
    };
    const SCOPE: Scope<'static> = Scope {
        region: "us-east-1",
        service: "service",
        unix: 1_440_938_160, // 2015-08-30T12:36:00Z
    };

    fn authorization(method: &str, path: &str, query: &str) -> String {
        let headers = sign(
            &KEYS,
            &SCOPE,
            &Signable {
                method,
                host: "example.amazonaws.com",
                path,
                query,
                headers: &[],
                body: b"",
            },
        );
        assert_eq!(headers[0], ("x-amz-date", "20150830T123600Z".to_string()));
        headers.last().unwrap().1.clone()
    }

    fn signature(auth: &str) -> &str {
        auth.rsplit("Signature=").next().unwrap()
    }

    #[test]
    fn get_vanilla() {
        let headers = vec![
            ("host".to_string(), "example.amazonaws.com".to_string()),
            ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
        ];
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let (canonical, signed) = canonical_request("GET", "/", "", &headers, empty);
        assert_eq!(
            canonical,
            format!(
                "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{empty}"
            )
        );
        assert_eq!(signed, "host;x-amz-date");
        let to_sign = string_to_sign(
            "20150830T123600Z",
            "20150830/us-east-1/service/aws4_request",
            &canonical,
        );
        assert!(
            to_sign.ends_with("bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63")
        );
        assert_eq!(
            authorization("GET", "/", ""),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn more_suite_cases() {
        // post-vanilla
        assert_eq!(
            signature(&authorization("POST", "/", "")),
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
        // get-vanilla-query-order-key-case: parameters are sorted before signing.
        assert_eq!(
            signature(&authorization("GET", "/", "Param2=value2&Param1=value1")),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
        // get-utf8: the path `/ሴ`, encoded once.
        assert_eq!(
            signature(&authorization("GET", "/\u{1234}", "")),
            "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"
        );
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn session_tokens_are_signed_and_sent() {
        let keys = AwsKeys {
            session_token: Some("token/with+chars="),
            ..KEYS
        };
        let headers = sign(
            &keys,
            &SCOPE,
            &Signable {
                method: "POST",
                host: "bedrock-runtime.us-east-1.amazonaws.com",
                path: "/model/anthropic.claude-v2%3A1/converse",
                query: "",
                headers: &[("content-type", "application/json")],
                body: b"{}",
            },
        );
        assert_eq!(
            headers[1],
            ("x-amz-security-token", "token/with+chars=".into())
        );
        assert!(
            headers[2]
                .1
                .contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,")
        );
        assert_eq!(
            canonical_uri("/model/anthropic.claude-v2%3A1/converse"),
            "/model/anthropic.claude-v2%253A1/converse"
        );
    }
}
