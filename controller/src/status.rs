//! Pure status logic: the status an object should have, whether it differs from what it has, and
//! which transitions deserve an Event. No I/O here; [`crate::writer`] sends what this decides.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value, json};
use tollgate_snapshot::{Detail, Verdict};

use crate::watch::SECRET_SELECTOR;

/// Status fields the leader writes apart from the compile's verdicts; a status patch never touches them.
const NOT_OURS: [&str; 1] = ["usage"];

/// A notable transition, published as an Event on the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// CamelCase reason, e.g. `Approved`.
    pub reason: String,
    /// A sentence for people.
    pub message: String,
}

/// The status `verdict` asks for, keeping each condition's transition time from `current` when its
/// status did not change.
pub fn desired(verdict: &Verdict, current: &Value, now: &Time) -> Value {
    let mut status = verdict.status_json(now);
    if let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        for condition in conditions {
            hint_secret_label(condition);
            keep_transition_time(condition, current);
        }
    }
    status
}

/// The status of an object that could not be read as its kind.
pub fn malformed(error: &str, generation: Option<i64>, now: &Time) -> Value {
    json!({
        "observedGeneration": generation,
        "conditions": [{
            "type": "Accepted",
            "status": "False",
            "reason": "Malformed",
            "message": format!("the controller cannot read this object, so it is left out of the routing table: {error}"),
            "observedGeneration": generation,
            "lastTransitionTime": now,
        }],
    })
}

/// The merge patch (`{"status": …}`) that turns `current` into `desired`, or `None` when they already
/// agree (transition times ignored). Fields we own that `desired` lacks are removed with `null`.
pub fn patch(desired: &Value, current: &Value) -> Option<Value> {
    let desired = desired.as_object()?;
    let empty = Map::new();
    let current = current.as_object().unwrap_or(&empty);
    let mut patch = Map::new();
    let mut differs = false;
    for (key, want) in desired {
        if NOT_OURS.contains(&key.as_str()) {
            continue;
        }
        let have = current.get(key).unwrap_or(&Value::Null);
        differs |= without_times(want) != without_times(have);
        patch.insert(key.clone(), want.clone());
    }
    for key in current.keys() {
        if !desired.contains_key(key) && !NOT_OURS.contains(&key.as_str()) {
            differs = true;
            patch.insert(key.clone(), Value::Null);
        }
    }
    differs.then(|| json!({ "status": patch }))
}

/// Transitions worth an Event: a subscription decided, a route losing a path conflict.
pub fn notes(verdict: &Verdict, current: &Value) -> Vec<Note> {
    let mut notes = Vec::new();
    match &verdict.detail {
        Detail::Subscription(d) => {
            let was = current.get("phase").and_then(Value::as_str);
            let now = d.phase.as_str();
            if was != Some(now) && now != "Pending" {
                let message = verdict
                    .condition("Ready")
                    .map(|c| c.message.to_string())
                    .unwrap_or_else(|| format!("the subscription is now {now}"));
                notes.push(Note {
                    warning: now == "Invalid",
                    reason: now.to_owned(),
                    message,
                });
            }
        }
        Detail::Route(_) => {
            if let Some(accepted) = verdict.condition("Accepted")
                && !accepted.status
                && accepted.reason.contains("Conflict")
                && condition_reason(current, "Accepted") != Some(accepted.reason)
            {
                notes.push(Note {
                    warning: true,
                    reason: accepted.reason.to_owned(),
                    message: accepted.message.to_string(),
                });
            }
        }
        _ => {}
    }
    notes
}

fn condition_reason<'a>(status: &'a Value, type_: &str) -> Option<&'a str> {
    find_condition(status, type_)?.get("reason")?.as_str()
}

fn find_condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

fn keep_transition_time(condition: &mut Value, current: &Value) {
    let Some(type_) = condition.get("type").and_then(Value::as_str) else {
        return;
    };
    let Some(old) = find_condition(current, type_) else {
        return;
    };
    if old.get("status") == condition.get("status")
        && let Some(time) = old.get("lastTransitionTime")
    {
        condition["lastTransitionTime"] = time.clone();
    }
}

/// The compiler cannot know that a "missing" Secret may just lack the label the watch selects on.
fn hint_secret_label(condition: &mut Value) {
    if condition.get("reason").and_then(Value::as_str) != Some("SecretNotFound") {
        return;
    }
    if let Some(Value::String(message)) = condition.get_mut("message")
        && !message.contains(SECRET_SELECTOR)
    {
        message.push_str(&format!(
            " (if it does exist, label it {SECRET_SELECTOR}: the controller only sees Secrets with that label)"
        ));
    }
}

fn without_times(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(without_times).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), without_times(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use tollgate_snapshot::{
        Kind, ObjectRef, Phase, RouteDetail, SubscriptionDetail, VerdictCondition,
    };

    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse::<Timestamp>().unwrap())
    }

    fn subscription(phase: Phase, ready: bool, message: &str) -> Verdict {
        Verdict {
            kind: Kind::ApiSubscription,
            id: ObjectRef::new("team", "sub"),
            generation: Some(3),
            conditions: vec![
                VerdictCondition::new("Accepted", true, "Accepted", "ok"),
                VerdictCondition::new("Ready", ready, phase.as_str(), message.to_owned()),
            ],
            detail: Detail::Subscription(SubscriptionDetail {
                phase,
                effective_limits: None,
                effective_budget: None,
                route: "team/route".into(),
            }),
        }
    }

    #[test]
    fn an_unchanged_status_is_not_written_and_keeps_its_times() {
        let verdict = subscription(Phase::Approved, true, "approved");
        let first = desired(&verdict, &Value::Null, &time("2025-01-01T00:00:00Z"));
        assert!(patch(&first, &Value::Null).is_some());
        // Later, same verdict: the old transition time stays and nothing is written.
        let again = desired(&verdict, &first, &time("2025-06-01T00:00:00Z"));
        assert_eq!(again, first);
        assert_eq!(patch(&again, &first), None);
    }

    #[test]
    fn a_changed_condition_gets_a_new_time_and_a_patch() {
        let before = desired(
            &subscription(Phase::Pending, false, "waiting"),
            &Value::Null,
            &time("2025-01-01T00:00:00Z"),
        );
        let verdict = subscription(Phase::Approved, true, "approved");
        let after = desired(&verdict, &before, &time("2025-02-01T00:00:00Z"));
        let ready = find_condition(&after, "Ready").unwrap();
        assert_eq!(ready["lastTransitionTime"], "2025-02-01T00:00:00Z");
        let accepted = find_condition(&after, "Accepted").unwrap();
        assert_eq!(accepted["lastTransitionTime"], "2025-01-01T00:00:00Z");
        let patch = patch(&after, &before).unwrap();
        assert_eq!(patch["status"]["phase"], "Approved");
        assert_eq!(
            notes(&verdict, &before),
            vec![Note {
                warning: false,
                reason: "Approved".into(),
                message: "approved".into()
            }]
        );
        assert!(
            notes(&verdict, &after).is_empty(),
            "no event without a transition"
        );
    }

    #[test]
    fn fields_we_no_longer_report_are_removed_but_usage_is_left_alone() {
        let verdict = subscription(Phase::Approved, true, "approved");
        let mut current = desired(&verdict, &Value::Null, &time("2025-01-01T00:00:00Z"));
        current["effectiveLimits"] = json!({"requestsPerMinute": 5});
        current["usage"] = json!({"requests": 9});
        let want = desired(&verdict, &current, &time("2025-01-02T00:00:00Z"));
        let patch = patch(&want, &current).unwrap();
        assert_eq!(patch["status"]["effectiveLimits"], Value::Null);
        assert!(patch["status"].get("usage").is_none());
    }

    #[test]
    fn a_missing_secret_message_mentions_the_label() {
        let mut verdict = subscription(Phase::Approved, true, "approved");
        verdict.conditions[1] = VerdictCondition::new(
            "ResolvedRefs",
            false,
            "SecretNotFound",
            "Secret team/key does not exist",
        );
        let status = desired(&verdict, &Value::Null, &time("2025-01-01T00:00:00Z"));
        let message = find_condition(&status, "ResolvedRefs").unwrap()["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains("tollgate.dev/secret=true"), "{message}");
    }

    #[test]
    fn a_route_losing_a_conflict_gets_one_warning() {
        let verdict = Verdict {
            kind: Kind::AIRoute,
            id: ObjectRef::new("team", "r"),
            generation: Some(1),
            conditions: vec![VerdictCondition::new(
                "Accepted",
                false,
                "PathConflict",
                "prefix /x is served by team/older",
            )],
            detail: Detail::Route(RouteDetail {
                endpoint: "/x/v1".into(),
                served_models: vec![],
                approved_subscriptions: 0,
            }),
        };
        let notes_first = notes(&verdict, &Value::Null);
        assert_eq!(notes_first.len(), 1);
        assert!(notes_first[0].warning);
        let written = desired(&verdict, &Value::Null, &time("2025-01-01T00:00:00Z"));
        assert!(notes(&verdict, &written).is_empty());
    }
}
