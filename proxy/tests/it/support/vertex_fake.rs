//! Fakes of Google Vertex AI and of Google's OAuth token endpoint, written from their public
//! references.
//!
//! The token endpoint takes RFC 7523's JWT bearer grant as a form, checks the JWT's RS256 signature
//! against the service account's public key (with ring, not with the proxy's code) and its claims
//! (issuer, audience, scope, an hour's lifetime), and answers `{"access_token", "expires_in",
//! "token_type"}`; told to refuse, it answers 400 `invalid_grant` with a description quoting the
//! assertion, as Google's does. Each token it issues is the only one Vertex then accepts.
//!
//! Vertex serves `/v1/projects/{project}/locations/{region}/publishers/google/models/{m}:
//! generateContent|streamGenerateContent?alt=sse` in Gemini's format and `publishers/anthropic/
//! models/{m}:rawPredict|streamRawPredict` in Anthropic's, with the model in the URL only and
//! `anthropic_version: vertex-2023-10-16` in the body; a wrong or missing bearer token is 401
//! `UNAUTHENTICATED`. Past those checks the requests are validated and answered by the Gemini and
//! Anthropic fakes.

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{KeyPair, RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, UnparsedPublicKey};
use serde_json::{Value, json};

use super::fake_server::{Answer, Control, FakeServer, Seen, json_response, serve};
use super::{anthropic_fake, gemini_fake};

pub const PROJECT: &str = "acme-ai";
pub const REGION: &str = "us-east5";
pub const EMAIL: &str = "gateway@acme-ai.iam.gserviceaccount.com";
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The test key (made for the tests, protecting nothing).
pub const PEM: &str = include_str!("google_sa_test_key.pem");

/// The service-account JSON key file of the test key.
pub fn key_json() -> String {
    json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0123456789abcdef",
        "private_key": PEM,
        "client_email": EMAIL,
        "client_id": "100000000000000000001",
        "token_uri": "https://oauth2.googleapis.com/token",
    })
    .to_string()
}

/// One grant the token endpoint made: the JWT's claims and the token it gave.
#[derive(Clone, Debug)]
pub struct Grant {
    pub claims: Value,
    pub token: String,
}

/// How the token endpoint answers.
#[derive(Clone, Debug)]
pub struct TokenControl {
    /// Answer 400 `invalid_grant`.
    pub refuse: bool,
    /// `expires_in` of the tokens it issues.
    pub expires_in: u64,
}

/// A running token endpoint and Vertex AI.
pub struct VertexFakes {
    pub vertex: FakeServer,
    pub token_url: String,
    pub grants: Arc<Mutex<Vec<Grant>>>,
    pub tokens: Arc<Mutex<TokenControl>>,
    /// Every assertion the token endpoint was sent, refused ones included.
    pub assertions: Arc<Mutex<Vec<String>>>,
}

impl VertexFakes {
    pub fn grants(&self) -> Vec<Grant> {
        self.grants.lock().unwrap().clone()
    }
}

pub async fn start() -> VertexFakes {
    let vertex = FakeServer::start(Control::new("no token issued yet", "vertex"), handle).await;
    let grants: Arc<Mutex<Vec<Grant>>> = Arc::default();
    let assertions: Arc<Mutex<Vec<String>>> = Arc::default();
    let tokens = Arc::new(Mutex::new(TokenControl {
        refuse: false,
        expires_in: 3599,
    }));
    let public = RsaKeyPair::from_pkcs8(&pkcs8_der(PEM))
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let audience: Arc<Mutex<String>> = Arc::default();
    let state = (
        vertex.control.clone(),
        grants.clone(),
        tokens.clone(),
        assertions.clone(),
        audience.clone(),
        Arc::new(public),
    );
    let addr = serve(move |req| {
        let (vertex, grants, tokens, assertions, audience, public) = state.clone();
        async move {
            let s = Seen::read(req).await;
            let control = tokens.lock().unwrap().clone();
            let aud = audience.lock().unwrap().clone();
            match grant(&s, &public, &aud, &control, &assertions) {
                Ok(claims) => {
                    let n = grants.lock().unwrap().len() + 1;
                    let token = format!("ya29.test-token-{n}");
                    vertex.lock().unwrap().key = token.clone();
                    grants.lock().unwrap().push(Grant {
                        claims,
                        token: token.clone(),
                    });
                    json_response(
                        200,
                        &json!({"access_token": token, "expires_in": control.expires_in,
                                "token_type": "Bearer"}),
                    )
                }
                Err((status, body)) => json_response(status, &body),
            }
        }
    })
    .await;
    let token_url = format!("http://{addr}/token");
    *audience.lock().unwrap() = token_url.clone();
    VertexFakes {
        vertex,
        token_url,
        grants,
        tokens,
        assertions,
    }
}

fn pkcs8_der(pem: &str) -> Vec<u8> {
    let body = pem
        .split("-----BEGIN PRIVATE KEY-----")
        .nth(1)
        .unwrap()
        .split("-----END PRIVATE KEY-----")
        .next()
        .unwrap();
    STANDARD
        .decode(body.split_ascii_whitespace().collect::<String>())
        .unwrap()
}

fn oauth_error(error: &str, description: &str) -> (u16, Value) {
    (
        400,
        json!({"error": error, "error_description": description}),
    )
}

/// Checks one JWT bearer grant; its claims, or the error answer.
fn grant(
    s: &Seen,
    public: &[u8],
    audience: &str,
    control: &TokenControl,
    assertions: &Mutex<Vec<String>>,
) -> Result<Value, (u16, Value)> {
    if s.method != "POST" || s.path != "/token" {
        return Err((404, json!({"error": "not_found"})));
    }
    if s.header("content-type") != Some("application/x-www-form-urlencoded") {
        return Err(oauth_error("invalid_request", "form body expected"));
    }
    let form = String::from_utf8_lossy(&s.raw).to_string();
    let field = |name: &str| {
        form.split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    if field("grant_type").as_deref()
        != Some("urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer")
    {
        return Err(oauth_error("unsupported_grant_type", "Invalid grant_type"));
    }
    let Some(jwt) = field("assertion") else {
        return Err(oauth_error(
            "invalid_request",
            "Missing required parameter: assertion",
        ));
    };
    assertions.lock().unwrap().push(jwt.clone());
    if control.refuse {
        return Err(oauth_error(
            "invalid_grant",
            &format!("Invalid JWT Signature. The assertion {jwt} was not accepted."),
        ));
    }
    let bad = || oauth_error("invalid_grant", "Invalid JWT");
    let pieces: Vec<&str> = jwt.split('.').collect();
    if pieces.len() != 3 {
        return Err(bad());
    }
    let decode = |p: &str| -> Option<Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()
    };
    let (Some(header), Some(claims), Ok(signature)) = (
        decode(pieces[0]),
        decode(pieces[1]),
        URL_SAFE_NO_PAD.decode(pieces[2]),
    ) else {
        return Err(bad());
    };
    if header["alg"] != "RS256" {
        return Err(bad());
    }
    let signed = format!("{}.{}", pieces[0], pieces[1]);
    if UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public)
        .verify(signed.as_bytes(), &signature)
        .is_err()
    {
        return Err(oauth_error("invalid_grant", "Invalid JWT Signature."));
    }
    let lifetime = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
    if claims["iss"] != EMAIL
        || claims["aud"] != audience
        || claims["scope"] != SCOPE
        || !(1..=3600).contains(&lifetime)
    {
        return Err(oauth_error(
            "invalid_grant",
            "Invalid JWT: claims do not match",
        ));
    }
    Ok(claims)
}

fn unauthenticated() -> Answer {
    Answer::json(
        401,
        &json!({"error": {"code": 401, "status": "UNAUTHENTICATED",
            "message": "Request had invalid authentication credentials. Expected OAuth 2 access token."}}),
    )
}

fn not_found(message: &str) -> Answer {
    Answer::json(
        404,
        &json!({"error": {"code": 404, "status": "NOT_FOUND", "message": message}}),
    )
}

fn invalid(message: &str) -> Answer {
    Answer::json(
        400,
        &json!({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": message}}),
    )
}

fn handle(s: &Seen, c: &Control) -> Answer {
    if s.header("authorization") != Some(format!("Bearer {}", c.key).as_str()) {
        return unauthenticated();
    }
    if s.header("x-api-key").is_some() || s.header("x-goog-api-key").is_some() {
        return invalid("API keys are not supported by this API");
    }
    let prefix = format!("/v1/projects/{PROJECT}/locations/{REGION}/publishers/");
    let Some(rest) = s.path.strip_prefix(&prefix) else {
        return not_found("no such project or location");
    };
    let Some((publisher, rest)) = rest.split_once("/models/") else {
        return not_found("no such publisher");
    };
    let Some((model, method)) = rest.split_once(':') else {
        return not_found("no such method");
    };
    let mut direct = s.clone();
    match publisher {
        "google" => {
            // Past the checks of its own, Vertex answers Gemini's requests as the Gemini API does.
            direct.path = format!("/v1beta/models/{model}:{method}");
            direct
                .headers
                .insert("x-goog-api-key", c.key.parse().unwrap());
            gemini_fake::handle(&direct, c)
        }
        "anthropic" => {
            let stream = match method {
                "rawPredict" => false,
                "streamRawPredict" => true,
                _ => return not_found("no such method"),
            };
            let b = &s.body;
            if b["anthropic_version"] != "vertex-2023-10-16" {
                return invalid("anthropic_version: must be vertex-2023-10-16");
            }
            if b.get("model").is_some() {
                return invalid("model: Extra inputs are not permitted");
            }
            if s.header("anthropic-version").is_some() {
                return invalid("anthropic-version goes in the body on Vertex AI");
            }
            if b["stream"].as_bool().unwrap_or(false) != stream {
                return invalid("stream must be true for streamRawPredict and only there");
            }
            let mut body = b.clone();
            body.as_object_mut().unwrap().remove("anthropic_version");
            body["model"] = model.into();
            direct.path = "/v1/messages".into();
            direct.raw = body.to_string().into();
            direct.body = body;
            direct.headers.insert("x-api-key", c.key.parse().unwrap());
            direct
                .headers
                .insert("anthropic-version", "2023-06-01".parse().unwrap());
            anthropic_fake::handle(&direct, c)
        }
        _ => not_found("no such publisher"),
    }
}
