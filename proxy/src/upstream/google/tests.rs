//! The service-account key, the signed JWT (checked against the key's public half with ring), the
//! token endpoint's answers, and proptests that no key file or answer makes them panic.
//!
//! The proptests run a few thousand cases; for the long run set `TOLLGATE_FUZZ_CASES`, e.g.
//! `TOLLGATE_FUZZ_CASES=1000000 cargo test -p tollgate-proxy --release --lib upstream::google`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::{Value, json};

use super::*;

const PEM: &str = include_str!("../../../tests/it/support/google_sa_test_key.pem");

fn key_json() -> String {
    json!({
        "type": "service_account",
        "project_id": "acme-ai",
        "private_key_id": "kid-1",
        "private_key": PEM,
        "client_email": "gateway@acme-ai.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    })
    .to_string()
}

fn part(jwt: &str, i: usize) -> Value {
    let piece = jwt.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(piece).unwrap()).unwrap()
}

#[test]
fn the_assertion_is_an_rs256_jwt_the_public_key_verifies() {
    let account = ServiceAccount::from_json(key_json().as_bytes()).unwrap();
    let jwt = account.assertion(
        "http://127.0.0.1:9/token",
        CLOUD_PLATFORM_SCOPE,
        1_800_000_000,
    );
    assert_eq!(
        part(&jwt, 0),
        json!({"alg": "RS256", "typ": "JWT", "kid": "kid-1"})
    );
    assert_eq!(
        part(&jwt, 1),
        json!({"iss": "gateway@acme-ai.iam.gserviceaccount.com", "scope": CLOUD_PLATFORM_SCOPE,
               "aud": "http://127.0.0.1:9/token", "iat": 1_800_000_000, "exp": 1_800_003_600})
    );
    let (signed, signature) = jwt.rsplit_once('.').unwrap();
    let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, account.public_key_der());
    public
        .verify(
            signed.as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
        .expect("the signature verifies");
    // A changed claim no longer does.
    let forged = signed.replace('.', ".e");
    assert!(
        public
            .verify(
                forged.as_bytes(),
                &URL_SAFE_NO_PAD.decode(signature).unwrap()
            )
            .is_err()
    );
}

#[test]
fn a_service_account_never_prints_its_key() {
    let account = ServiceAccount::from_json(key_json().as_bytes()).unwrap();
    let printed = format!("{account:?}");
    assert!(printed.contains("gateway@acme-ai"));
    let body = PEM.lines().nth(3).unwrap();
    assert!(!printed.contains(body), "{printed}");
}

#[test]
fn keys_that_cannot_sign_are_refused_with_a_reason_that_quotes_nothing() {
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_str(&key_json()).unwrap();
        f(&mut v);
        ServiceAccount::from_json(v.to_string().as_bytes()).unwrap_err()
    };
    assert_eq!(
        ServiceAccount::from_json(b"not json").unwrap_err(),
        KeyError::NotJson
    );
    assert_eq!(
        with(&|v| {
            v.as_object_mut().unwrap().remove("client_email");
        }),
        KeyError::NoEmail
    );
    assert_eq!(
        with(&|v| v["private_key"] =
            "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----".into()),
        KeyError::NoKey
    );
    assert_eq!(
        with(&|v| v["private_key"] =
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----".into()),
        KeyError::NotRsa
    );
}

#[test]
fn the_grant_is_a_form_with_the_jwt_bearer_grant_type() {
    assert_eq!(
        grant_body("a.b.c"),
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=a.b.c"
    );
}

#[test]
fn token_answers_are_read_as_rfc_6749_says() {
    assert_eq!(
        read_token_answer(
            200,
            br#"{"access_token":"ya29.tok","expires_in":3599,"token_type":"Bearer"}"#
        ),
        Ok(Granted {
            token: "ya29.tok".into(),
            expires_in: 3599
        })
    );
    assert_eq!(
        read_token_answer(
            400,
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature: eyJhbGci"}"#
        ),
        Err(TokenError::Refused(Some("invalid_grant".into())))
    );
    // An error code that is not a plain word is not repeated (it might quote anything).
    assert_eq!(
        read_token_answer(401, br#"{"error":"eyJhbGciOiJSUzI1NiJ9.secret"}"#),
        Err(TokenError::Refused(None))
    );
    assert!(matches!(
        read_token_answer(503, b"busy"),
        Err(TokenError::Failed(_))
    ));
    for bad in [
        &br#"{"expires_in":3599}"#[..],
        br#"{"access_token":"","expires_in":1}"#,
        br#"{"access_token":"a b","expires_in":1}"#,
        br#"{"access_token":"t","token_type":"MAC"}"#,
        b"<html>",
    ] {
        assert!(
            matches!(read_token_answer(200, bad), Err(TokenError::Failed(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let shown = format!(
        "{:?}",
        read_token_answer(200, br#"{"access_token":"ya29.SECRET"}"#)
    );
    assert!(!shown.contains("SECRET"), "{shown}");
}

fn runner() -> TestRunner {
    let cases = std::env::var("TOLLGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// JSON values built from the members these parsers read, so random documents are often near-valid.
fn near_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[ -~]{0,24}".prop_map(Value::from),
        Just(Value::from(PEM)),
        Just(Value::from(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
        )),
    ];
    let keys = prop_oneof![
        Just("access_token"),
        Just("expires_in"),
        Just("token_type"),
        Just("error"),
        Just("client_email"),
        Just("private_key"),
        Just("private_key_id"),
        Just("type"),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

#[test]
fn token_answers_never_panic() {
    runner()
        .run(
            &(
                any::<u16>(),
                prop_oneof![
                    near_json().prop_map(|v| v.to_string().into_bytes()),
                    prop::collection::vec(any::<u8>(), 0..256),
                ],
            ),
            |(status, body)| {
                if let Ok(g) = read_token_answer(status, &body) {
                    prop_assert!(!g.token.is_empty());
                    let header = format!("Bearer {}", g.token);
                    prop_assert!(HeaderValue::from_str(&header).is_ok());
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn service_account_keys_never_panic() {
    // Fewer cases: a key that parses is an RSA key, and checking one costs a millisecond.
    runner()
        .run(
            &prop_oneof![
                near_json().prop_map(|v| v.to_string().into_bytes()),
                prop::collection::vec(any::<u8>(), 0..256),
            ],
            |bytes| {
                let _ = ServiceAccount::from_json(&bytes);
                Ok(())
            },
        )
        .unwrap();
}
