//! Same resources in any order give a byte-identical snapshot; the wire form round-trips.

use crate::support::world::{shuffled, world};
use crate::support::*;
use proptest::prelude::*;
use tollgate_snapshot::{DecodeError, KeyDigest, Snapshot, compile};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn shuffled_inputs_encode_byte_identically(seed in any::<u64>(), order in any::<u64>()) {
        let inputs = world(seed);
        let a = compile(&inputs, 7);
        let b = compile(&shuffled(&inputs, order), 7);
        prop_assert_eq!(&a.snapshot.hash, &b.snapshot.hash);
        prop_assert!(a.snapshot.encode() == b.snapshot.encode(), "encodings differ for seed {}", seed);
        prop_assert_eq!(a.verdicts, b.verdicts);
    }
}

#[test]
fn the_random_worlds_exercise_conflicts_duplicates_and_failures() {
    // Guards the generator: a property over trivial worlds would prove nothing.
    let mut reasons = std::collections::BTreeSet::new();
    for seed in 0..300 {
        for v in compile(&world(seed), 1).verdicts {
            for c in v.conditions {
                reasons.insert(c.reason);
            }
        }
    }
    for wanted in [
        "PathConflict",
        "Duplicate",
        "RefNotPermitted",
        "ProviderNotFound",
        "SecretNotFound",
        "DuplicateKey",
        "KeyTooShort",
        "RouteNotFound",
        "Pending",
        "Rejected",
        "Retired",
    ] {
        assert!(
            reasons.contains(wanted),
            "no world produced {wanted}: {reasons:?}"
        );
    }
}

#[test]
fn encoded_snapshot_round_trips_through_decode() {
    for seed in 0..50 {
        let compiled = compile(&world(seed), 42 + seed);
        let bytes = compiled.snapshot.encode();
        let back = Snapshot::decode(&bytes).expect("decodes");
        assert_eq!(back.version, 42 + seed);
        assert_eq!(back.hash, compiled.snapshot.hash);
        assert_eq!(back.content, compiled.snapshot.content);
        assert_eq!(back.encode(), bytes);
    }
    // Lookups are rebuilt after decoding.
    let compiled = run(&team_a());
    let back = Snapshot::decode(&compiled.snapshot.encode()).unwrap();
    let (c, _, _) = back
        .consumer_by_key(&KeyDigest::of(b"sk-app-0123456789abcdef"))
        .unwrap();
    let m = back.route_for(None, "/team-a/chat/v1/models").unwrap();
    assert!(back.subscription(c, m.idx).is_some());
    assert!(back.model(m.idx, "gpt-4o-mini").is_some());
}

#[test]
fn decode_refuses_tampered_or_inconsistent_snapshots() {
    let compiled = run(&team_a());
    let text = String::from_utf8(compiled.snapshot.encode()).unwrap();
    let tampered = text.replace("sk-upstream", "sk-attacker");
    assert!(matches!(
        Snapshot::decode(tampered.as_bytes()),
        Err(DecodeError::Inconsistent(_))
    ));
    assert!(matches!(
        Snapshot::decode(b"{}"),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn key_digests_decode_from_owned_strings_too() {
    let digest = KeyDigest::of(b"sk-app-0123456789abcdef");
    let value = serde_json::to_value(digest).unwrap();
    let back: KeyDigest = serde_json::from_value(value).expect("from a Value");
    assert_eq!(back, digest);
    let back: KeyDigest =
        serde_json::from_reader(serde_json::to_vec(&digest).unwrap().as_slice()).unwrap();
    assert_eq!(back, digest);
}

#[test]
fn version_is_not_part_of_the_hash() {
    let a = compile(&team_a(), 1);
    let b = compile(&team_a(), 2);
    assert_eq!(a.snapshot.hash, b.snapshot.hash);
    assert_ne!(a.snapshot.encode(), b.snapshot.encode());
}
