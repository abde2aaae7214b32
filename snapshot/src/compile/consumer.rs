//! `Consumer` → [`Consumer`](crate::model::Consumer): keys read from Secrets, digested, expired ones left out,
//! and a key value shared by two consumers kept only by the older.

use std::fmt::Write;

use tollgate_crds::{Consumer as ConsumerObject, condition_type};

use super::conditions::unresolved_refs;
use super::guardrail::{GuardrailTable, guardrails_condition};
use super::objects::{
    Interner, Item, Texts, claim_for_older, input_order, join_list, map_in_order, sentences,
    states_by_id,
};
use super::secrets::{SecretProblem, Secrets};
use crate::fx::{FxHashMap, map_with_capacity};
use crate::model::{Consumer, ConsumerIdx, ConsumerKey, KeyDigest};
use crate::verdict::{ConsumerDetail, Detail, Kind, Verdict, VerdictCondition};

/// The fewest characters a consumer key read from a Secret may have. A key is all a caller shows, and
/// snapshots carry its unsalted SHA-256, so a short key can be guessed against the gateway or found
/// from a leaked snapshot by trying values. 20 random characters are beyond trying either way (over
/// 100 bits from a base64 alphabet) while still allowing keys made by hand; generated keys have 46
/// characters and OpenAI-style keys far more.
pub const MIN_CONSUMER_KEY_CHARS: usize = 20;

/// What subscriptions need to know about a consumer object.
pub(crate) struct ConsumerState {
    /// Index in the table; `None` when the consumer was not accepted.
    pub idx: Option<ConsumerIdx>,
}

/// Consumers in the table, and every consumer object by namespace/name.
pub(crate) struct ConsumerTable<'a> {
    pub consumers: Vec<Consumer>,
    pub by_id: FxHashMap<(&'a str, &'a str), ConsumerState>,
}

/// A consumer's keys after reading Secrets and before the table is built.
struct Resolved {
    /// Usable keys, in `spec.keys` order.
    keys: Vec<ConsumerKey>,
    /// Position in `spec.keys`, reason and clause of each key that cannot be used.
    problems: Vec<(usize, &'static str, String)>,
    /// Expired keys (name and instant, as reported).
    expired: Vec<String>,
    /// Previous values of rotated generated keys, valid until their grace ends (not counted as active).
    previous: Vec<ConsumerKey>,
}

/// Compiles consumers, which arrive sorted by namespace/name.
pub(crate) fn compile_consumers<'a>(
    items: &[Item<'a, ConsumerObject>],
    secrets: &Secrets<'_>,
    guardrails: &GuardrailTable<'_>,
    now_unix: i64,
    verdicts: &mut Vec<Verdict>,
) -> ConsumerTable<'a> {
    // Reading each object's spec and Secrets is the slow part: in input order (see `input_order`).
    let order = input_order(items);
    let invalid: Vec<Vec<String>> = map_in_order(&order, |i| validate(&items[i]));
    let mut names = Interner::default();
    let mut resolved: Vec<Option<Resolved>> = map_in_order(&order, |i| {
        invalid[i]
            .is_empty()
            .then(|| read_keys(&items[i], secrets, now_unix, &mut names))
    });
    // The oldest consumer holding a key value keeps it.
    let mut owners: FxHashMap<KeyDigest, usize> = map_with_capacity(items.len() * 2);
    for (i, read) in resolved.iter().enumerate() {
        for key in read.iter().flat_map(|r| r.keys.iter().chain(&r.previous)) {
            claim_for_older(&mut owners, key.digest, i, items);
        }
    }
    for (i, read) in resolved.iter_mut().enumerate() {
        if let Some(read) = read {
            resolve_keys(&items[i], i, read, items, &owners);
        }
    }
    let mut texts = Texts::default();
    let built = map_in_order(&order, |i| {
        let item = &items[i];
        match resolved[i].take() {
            None => (invalid_verdict(item, &invalid[i]), None),
            Some(resolved) => {
                let mut verdict = accepted_verdict(item, &resolved, &mut texts);
                let mut keys = resolved.keys;
                keys.extend(resolved.previous);
                let spec = &item.obj.spec;
                let attached = if spec.guardrails.is_empty() {
                    Vec::new()
                } else {
                    let attached = guardrails.attach(&spec.guardrails, item.id.namespace);
                    verdict.conditions.push(guardrails_condition(&attached));
                    attached.guardrails
                };
                let consumer = Consumer {
                    id: item.reference.clone(),
                    uid: item.obj.metadata.uid.clone().unwrap_or_default(),
                    keys,
                    limits: super::traffic::limits_of(spec.limits.as_ref()),
                    budget: super::traffic::budget_of(spec.budget.as_ref()),
                    guardrails: attached,
                };
                (verdict, Some(consumer))
            }
        }
    });

    let mut table = ConsumerTable {
        consumers: Vec::new(),
        by_id: FxHashMap::default(),
    };
    let mut indexes: Vec<Option<ConsumerIdx>> = vec![None; items.len()];
    for (i, (verdict, consumer)) in built.into_iter().enumerate() {
        if let Some(consumer) = consumer {
            indexes[i] = Some(table.consumers.len() as ConsumerIdx);
            table.consumers.push(consumer);
        }
        verdicts.push(verdict);
    }
    table.by_id = states_by_id(items, &order, |i| ConsumerState { idx: indexes[i] });
    table
}

fn invalid_verdict(item: &Item<'_, ConsumerObject>, problems: &[String]) -> Verdict {
    let message = format!(
        "This consumer cannot call any API until its spec is fixed: {}.",
        problems.join("; ")
    );
    Verdict {
        kind: Kind::Consumer,
        id: item.reference.clone(),
        generation: item.generation,
        conditions: vec![
            VerdictCondition::new(
                condition_type::ACCEPTED,
                false,
                "InvalidSpec",
                message.clone(),
            ),
            VerdictCondition::new(
                condition_type::READY,
                false,
                "InvalidSpec",
                "No key of this consumer is accepted: fix the problem reported in Accepted.",
            ),
        ],
        detail: Detail::Consumer(ConsumerDetail { active_keys: 0 }),
    }
}

fn validate(item: &Item<'_, ConsumerObject>) -> Vec<String> {
    let spec = &item.obj.spec;
    let mut problems = Vec::new();
    if item.id.name.is_empty() {
        problems.push("set metadata.name".to_string());
    }
    if spec.keys.is_empty() {
        problems.push("list at least one key under spec.keys".into());
    }
    // At most 16 keys: a quadratic check allocates nothing.
    let keys = &spec.keys;
    if (1..keys.len()).any(|i| keys[..i].iter().any(|k| k.name == keys[i].name)) {
        problems.push("give each entry of spec.keys its own name".into());
    }
    for key in &spec.keys {
        if key.secret_ref.is_some() == key.generate {
            problems.push(format!(
                "key {} must either name a Secret (secretRef) or ask for a generated one (generate: true), exactly one of the two",
                key.name
            ));
        }
    }
    problems
}

/// Reads each key of a consumer from its Secret, in `spec.keys` order.
fn read_keys<'a>(
    item: &Item<'a, ConsumerObject>,
    secrets: &Secrets<'_>,
    now_unix: i64,
    names: &mut Interner<'a>,
) -> Resolved {
    let namespace = item.id.namespace;
    let mut read = Resolved {
        keys: Vec::with_capacity(item.obj.spec.keys.len()),
        problems: Vec::new(),
        expired: Vec::new(),
        previous: Vec::new(),
    };
    for (at, key) in item.obj.spec.keys.iter().enumerate() {
        // Borrow the reference; only a generated key's Secret name has to be built.
        let generated;
        let (secret_name, secret_key) = match &key.secret_ref {
            Some(r) => (r.name.as_str(), r.key.as_str()),
            None => {
                generated = key.generated_secret_name(item.id.name);
                (generated.as_str(), tollgate_crds::DEFAULT_SECRET_KEY)
            }
        };
        let value = match secrets.value(namespace, secret_name, secret_key) {
            Ok(v) => v,
            Err(SecretProblem::SecretNotFound) if key.generate => {
                read.problems.push((
                    at,
                    "KeyNotGenerated",
                    format!(
                        "key {} waits for the controller to generate Secret {namespace}/{secret_name} (it does so while it leads)",
                        key.name
                    ),
                ));
                continue;
            }
            Err(p) => {
                read.problems.push((
                    at,
                    p.reason(),
                    format!(
                        "key {}: {}",
                        key.name,
                        p.describe(namespace, secret_name, secret_key)
                    ),
                ));
                continue;
            }
        };
        let chars = std::str::from_utf8(value).map_or(value.len(), |v| v.chars().count());
        if chars < MIN_CONSUMER_KEY_CHARS {
            read.problems.push((
                at,
                "KeyTooShort",
                format!(
                    "key {}: the value under {secret_key:?} of Secret {namespace}/{secret_name} has {chars} characters, fewer than the {MIN_CONSUMER_KEY_CHARS} a consumer key needs",
                    key.name
                ),
            ));
            continue;
        }
        let expires_unix = key.expires_at.as_ref().map(|t| t.0.as_second());
        if let (Some(at), Some(t)) = (expires_unix, &key.expires_at)
            && at <= now_unix
        {
            read.expired.push(format!("{} (at {})", key.name, t.0));
            continue;
        }
        read.keys.push(ConsumerKey {
            name: names.get(&key.name),
            digest: KeyDigest::of(value),
            expires_unix,
        });
        if key.generate
            && let Some(previous) = previous_key(secrets, namespace, secret_name, now_unix)
        {
            read.previous.push(ConsumerKey {
                name: names.get(&key.name),
                digest: previous.0,
                // Never past the key's own expiry.
                expires_unix: Some(expires_unix.map_or(previous.1, |at| at.min(previous.1))),
            });
        }
    }
    read
}

/// The previous value of a rotated generated key, as its digest and the end of its grace (Unix
/// seconds), when its Secret records one that has not ended at `now_unix`. A malformed record (the
/// Secret is edited by hand) is ignored: the rotated key alone is valid, as after a grace of zero.
fn previous_key(
    secrets: &Secrets<'_>,
    namespace: &str,
    secret_name: &str,
    now_unix: i64,
) -> Option<(KeyDigest, i64)> {
    let digest = secrets
        .value(namespace, secret_name, tollgate_crds::PREVIOUS_KEY_DIGEST)
        .ok()?;
    let until = secrets
        .value(
            namespace,
            secret_name,
            tollgate_crds::PREVIOUS_KEY_EXPIRES_AT,
        )
        .ok()?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(digest, &mut bytes).ok()?;
    let until = std::str::from_utf8(until)
        .ok()?
        .parse::<k8s_openapi::jiff::Timestamp>()
        .ok()?
        .as_second();
    (until > now_unix).then_some((KeyDigest(bytes), until))
}

/// Drops the keys an older consumer holds (`owners` says which consumer keeps each value) or this one
/// repeats, reporting them among the problems in `spec.keys` order.
fn resolve_keys(
    item: &Item<'_, ConsumerObject>,
    me: usize,
    read: &mut Resolved,
    items: &[Item<'_, ConsumerObject>],
    owners: &FxHashMap<KeyDigest, usize>,
) {
    let namespace = item.id.namespace;
    let spec_keys = &item.obj.spec.keys;
    // Key names are unique (checked before), so a name gives the key's position.
    let at = |name: &str| spec_keys.iter().position(|k| k.name == name).unwrap_or(0);
    let mut dropped = false;
    let mut kept = 0;
    for k in 0..read.keys.len() {
        let key = &read.keys[k];
        let owner = owners[&key.digest];
        if owner != me {
            let other = items[owner].id;
            let whose = if other.namespace == namespace {
                format!("consumer {other}")
            } else {
                "a consumer in another namespace".to_string()
            };
            read.problems.push((
                at(&key.name),
                "DuplicateKey",
                format!(
                    "key {} has the same value as a key of {whose}, which keeps it; give this key a new value",
                    key.name
                ),
            ));
            dropped = true;
            continue;
        }
        if read.keys[..kept].iter().any(|k| k.digest == key.digest) {
            read.problems.push((
                at(&key.name),
                "DuplicateKey",
                format!(
                    "key {} repeats the value of another key of this consumer; give it a new value",
                    key.name
                ),
            ));
            dropped = true;
            continue;
        }
        read.keys.swap(kept, k);
        kept += 1;
    }
    read.keys.truncate(kept);
    // A previous value that another consumer (or a current key) holds is dropped without a word: it is
    // on its way out anyway.
    let current: Vec<KeyDigest> = read.keys.iter().map(|k| k.digest).collect();
    read.previous
        .retain(|k| owners[&k.digest] == me && !current.contains(&k.digest));
    if dropped {
        read.problems.sort_by_key(|(at, _, _)| *at);
    }
}

fn accepted_verdict(
    item: &Item<'_, ConsumerObject>,
    resolved: &Resolved,
    texts: &mut Texts,
) -> Verdict {
    let active = resolved.keys.len();
    let accepted = VerdictCondition::new(
        condition_type::ACCEPTED,
        true,
        "Accepted",
        "The consumer is valid; its keys are checked in ResolvedRefs.",
    );
    let refs = match resolved.problems.first() {
        None => VerdictCondition::new(
            condition_type::RESOLVED_REFS,
            true,
            "ResolvedRefs",
            "Every key was read from its Secret.",
        ),
        Some(&(_, reason, _)) => {
            let clauses: Vec<&str> = resolved
                .problems
                .iter()
                .map(|(_, _, c)| c.as_str())
                .collect();
            unresolved_refs(
                reason,
                &clauses,
                &["Create or correct the Secret, or change spec.keys"],
            )
        }
    };
    let expired_note = if resolved.expired.is_empty() {
        String::new()
    } else {
        format!(
            "Expired and refused: {}; rotate to a new key or move spec.keys[].expiresAt",
            join_list(&resolved.expired)
        )
    };
    let ready = if active > 0 {
        // Every consumer gets this message, and most the same text as many others: shared.
        let message = texts.share(|message| {
            let _ = write!(
                message,
                "The consumer has {active} active key{}: ",
                if active == 1 { "" } else { "s" }
            );
            for (i, key) in resolved.keys.iter().enumerate() {
                if i > 0 {
                    message.push_str(if i + 1 == active { " and " } else { ", " });
                }
                message.push_str(&key.name);
            }
            message.push('.');
            for key in &resolved.previous {
                let until = key.expires_unix.unwrap_or_default();
                let until = k8s_openapi::jiff::Timestamp::from_second(until)
                    .map_or_else(|_| until.to_string(), |t| t.to_string());
                let _ = write!(
                    message,
                    " The previous value of key {} stays valid until {until} (rotation grace).",
                    key.name
                );
            }
            if !expired_note.is_empty() {
                message.push(' ');
                message.push_str(&sentences(&[expired_note]));
            }
        });
        VerdictCondition::new(condition_type::READY, true, "Ready", message)
    } else {
        VerdictCondition::new(
            condition_type::READY,
            false,
            "NoActiveKeys",
            sentences(&[
                "No key is usable, so every call from this consumer is refused with 401: fix what ResolvedRefs reports or add a key".into(),
                expired_note,
            ]),
        )
    };
    Verdict {
        kind: Kind::Consumer,
        id: item.reference.clone(),
        generation: item.generation,
        conditions: vec![accepted, refs, ready],
        detail: Detail::Consumer(ConsumerDetail {
            active_keys: active as u32,
        }),
    }
}
