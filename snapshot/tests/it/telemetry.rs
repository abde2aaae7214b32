//! `spec.telemetry.captureContent`: compiled into the route only when enabled, with the default cap
//! when none is given; routes without it encode (and hash) as before.

use serde_json::{Value, json};
use tollgate_snapshot::{ContentCapture, Inputs};

use crate::support::*;

/// Team A whose route has `telemetry` as its `spec.telemetry`.
fn with_telemetry(telemetry: Value) -> Inputs {
    let mut inputs = team_a();
    let mut spec = serde_json::to_value(&inputs.routes[0].spec).unwrap();
    spec["telemetry"] = telemetry;
    inputs.routes[0].spec = serde_json::from_value(spec).unwrap();
    inputs
}

#[test]
fn content_is_captured_only_when_enabled_with_the_default_or_given_cap() {
    let capture = |telemetry: Value| {
        run(&with_telemetry(telemetry)).snapshot.content.routes[0].capture_content
    };
    assert_eq!(capture(json!({})), None);
    assert_eq!(capture(json!({ "captureContent": {} })), None);
    assert_eq!(
        capture(json!({ "captureContent": { "enabled": false } })),
        None
    );
    assert_eq!(
        capture(json!({ "captureContent": { "enabled": true } })),
        Some(ContentCapture { max_bytes: 4096 })
    );
    assert_eq!(
        capture(json!({ "captureContent": { "enabled": true, "maxBytes": 300 } })),
        Some(ContentCapture { max_bytes: 300 })
    );
    // Beyond the schema's bounds (an object stored before them): clamped.
    assert_eq!(
        capture(json!({ "captureContent": { "enabled": true, "maxBytes": 10_000_000 } })),
        Some(ContentCapture { max_bytes: 65536 })
    );
}

#[test]
fn routes_without_capture_hash_as_before_and_capture_survives_encoding() {
    let plain = run(&team_a());
    let off = run(&with_telemetry(
        json!({ "captureContent": { "enabled": false } }),
    ));
    assert_eq!(plain.snapshot.encode(), off.snapshot.encode());
    let on = run(&with_telemetry(
        json!({ "captureContent": { "enabled": true } }),
    ));
    assert_ne!(plain.snapshot.encode(), on.snapshot.encode());
    let back = tollgate_snapshot::Snapshot::decode(&on.snapshot.encode()).unwrap();
    assert_eq!(
        back.content.routes[0].capture_content,
        Some(ContentCapture { max_bytes: 4096 })
    );
}
