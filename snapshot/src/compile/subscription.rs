//! `ApiSubscription` → [`Subscription`]: references, phase, and limits clamped to the route's.

use std::collections::HashMap;

use tollgate_crds::{ApiSubscription, Approval, Decision, Phase, Stage, condition_type};

use super::consumer::ConsumerTable;
use super::objects::{Item, sentences};
use super::route::RouteTable;
use crate::model::{ConsumerIdx, Limits, ObjectRef, RouteIdx, Subscription};
use crate::verdict::{Detail, Kind, RouteDetail, SubscriptionDetail, Verdict, VerdictCondition};

/// The phase a decision gives: no decision is Pending, or Approved when the route approves automatically.
pub fn phase_for(decision: Option<Decision>, approval: Approval) -> Phase {
    match (decision, approval) {
        (Some(Decision::Approved), _) => Phase::Approved,
        (Some(Decision::Rejected), _) => Phase::Rejected,
        (Some(Decision::Revoked), _) => Phase::Revoked,
        (None, Approval::Automatic) => Phase::Approved,
        (None, Approval::Manual) => Phase::Pending,
    }
}

/// The subscription's limits within the route's: each ceiling is the lower of the two, and a ceiling
/// the subscription leaves out is the route's.
pub fn clamp_limits(wanted: Limits, route: Limits) -> Limits {
    fn lower<T: Ord + Copy>(wanted: Option<T>, route: Option<T>) -> Option<T> {
        match (wanted, route) {
            (Some(w), Some(r)) => Some(w.min(r)),
            (w, r) => w.or(r),
        }
    }
    Limits {
        requests_per_minute: lower(wanted.requests_per_minute, route.requests_per_minute),
        tokens_per_minute: lower(wanted.tokens_per_minute, route.tokens_per_minute),
    }
}

/// Compiles subscriptions (sorted by namespace/name) and counts approved ones into route verdicts.
pub(crate) fn compile_subscriptions(
    items: &[Item<'_, ApiSubscription>],
    consumers: &ConsumerTable<'_>,
    routes: &RouteTable<'_>,
    verdicts: &mut Vec<Verdict>,
) -> Vec<Subscription> {
    // Of two subscriptions of one consumer to one route, the older stands.
    let found: Vec<_> = items
        .iter()
        .map(|item| refs(item, consumers, routes))
        .collect();
    let mut by_age: Vec<usize> = (0..items.len()).collect();
    by_age.sort_by(|&a, &b| items[a].age_cmp(&items[b]));
    let mut taken: HashMap<(ConsumerIdx, RouteIdx), usize> = HashMap::with_capacity(items.len());
    let mut duplicate_of: HashMap<usize, usize> = HashMap::new();
    for &i in &by_age {
        if let Ok(pair) = found[i] {
            let first = *taken.entry(pair).or_insert(i);
            if first != i {
                duplicate_of.insert(i, first);
            }
        }
    }

    let mut subscriptions = Vec::with_capacity(items.len());
    let mut approved: HashMap<usize, u32> = HashMap::new();
    for (i, (item, found)) in items.iter().zip(found).enumerate() {
        let spec = &item.obj.spec;
        let namespace = item.id.namespace.as_str();
        let route_ns = spec.route.namespace.as_deref().unwrap_or(namespace);
        let route_name = format!("{route_ns}/{}", spec.route.name);
        let wanted = spec
            .limits
            .as_ref()
            .map(|l| Limits {
                requests_per_minute: l.requests_per_minute,
                tokens_per_minute: l.tokens_per_minute,
            })
            .unwrap_or_default();

        let resolved = found.and_then(|pair| match duplicate_of.get(&i) {
            Some(&first) => Err((
                "DuplicateSubscription",
                format!(
                    "Consumer {} already subscribes to AIRoute {route_name} through ApiSubscription {}; delete this one or that one",
                    spec.consumer, items[first].id
                ),
            )),
            None => Ok(pair),
        });
        let pair = match resolved {
            Err((reason, message)) => {
                verdicts.push(invalid(item, route_name, reason, message));
                continue;
            }
            Ok(pair) => pair,
        };
        let route_state = routes
            .by_id
            .get(&(route_ns, spec.route.name.as_str()))
            .expect("refs found the route");
        let phase = phase_for(spec.decision, route_state.approval);
        let limits = clamp_limits(wanted, route_state.limits);
        if phase == Phase::Approved {
            *approved.entry(route_state.verdict).or_default() += 1;
        }
        let same_team = route_state.namespace == namespace;
        let ready = ready_condition(
            phase,
            route_state.stage,
            route_state.serving,
            same_team,
            spec.decision_reason.as_deref(),
            &route_name,
        );
        let clamped = limits != wanted
            && (wanted.requests_per_minute.is_some() || wanted.tokens_per_minute.is_some());
        let accepted = VerdictCondition::new(
            condition_type::ACCEPTED,
            true,
            "Accepted",
            if clamped {
                format!(
                    "The subscription is valid; its limits were lowered to AIRoute {route_name}'s ceilings, which no subscription may exceed."
                )
            } else {
                "The subscription is valid.".into()
            },
        );
        let resolved_refs = VerdictCondition::new(
            condition_type::RESOLVED_REFS,
            true,
            "ResolvedRefs",
            format!(
                "Consumer {} and AIRoute {route_name} exist and are accepted.",
                spec.consumer
            ),
        );
        verdicts.push(Verdict {
            kind: Kind::ApiSubscription,
            id: item.id.clone(),
            generation: item.generation,
            conditions: vec![accepted, resolved_refs, ready],
            detail: Detail::Subscription(SubscriptionDetail {
                phase,
                effective_limits: Some(limits),
                route: route_name,
            }),
        });
        subscriptions.push(Subscription {
            id: item.id.clone(),
            consumer: pair.0,
            route: pair.1,
            phase,
            limits,
        });
    }
    for (at, n) in approved {
        if let Detail::Route(RouteDetail {
            approved_subscriptions,
            ..
        }) = &mut verdicts[at].detail
        {
            *approved_subscriptions = n;
        }
    }
    subscriptions
}

/// The consumer and route a subscription refers to, or why it cannot be used.
fn refs(
    item: &Item<'_, ApiSubscription>,
    consumers: &ConsumerTable<'_>,
    routes: &RouteTable<'_>,
) -> Result<(ConsumerIdx, RouteIdx), (&'static str, String)> {
    let spec = &item.obj.spec;
    let namespace = item.id.namespace.as_str();
    let consumer = ObjectRef::new(namespace, spec.consumer.as_str());
    let c = match consumers.by_id.get(&(namespace, spec.consumer.as_str())) {
        None => {
            return Err((
                "ConsumerNotFound",
                format!(
                    "Consumer {consumer} does not exist; create it or correct spec.consumer (a subscription lives in its consumer's namespace)"
                ),
            ));
        }
        Some(state) => match &state.idx {
            Ok(c) => *c,
            Err(_) => {
                return Err((
                    "ConsumerNotAccepted",
                    format!(
                        "Consumer {consumer} is not accepted; fix the problem its status reports"
                    ),
                ));
            }
        },
    };
    let route_ns = spec.route.namespace.as_deref().unwrap_or(namespace);
    let route = ObjectRef::new(route_ns, spec.route.name.as_str());
    match routes.by_id.get(&(route_ns, spec.route.name.as_str())) {
        None => Err((
            "RouteNotFound",
            format!("AIRoute {route} does not exist; correct spec.route (name and namespace)"),
        )),
        Some(state) => match &state.idx {
            Ok(r) => Ok((c, *r)),
            Err(_) => Err((
                "RouteNotAccepted",
                format!(
                    "AIRoute {route} is not accepted, so it takes no subscriptions until its owners fix what its status reports"
                ),
            )),
        },
    }
}

fn invalid(
    item: &Item<'_, ApiSubscription>,
    route: String,
    reason: &'static str,
    message: String,
) -> Verdict {
    let refs_ok = reason == "DuplicateSubscription";
    let mut conditions = vec![VerdictCondition::new(
        condition_type::ACCEPTED,
        false,
        reason,
        sentences(&[message]),
    )];
    conditions.push(if refs_ok {
        VerdictCondition::new(
            condition_type::RESOLVED_REFS,
            true,
            "ResolvedRefs",
            "The consumer and the route exist and are accepted.".into(),
        )
    } else {
        VerdictCondition::new(
            condition_type::RESOLVED_REFS,
            false,
            reason,
            "See Accepted for the reference that could not be used.".into(),
        )
    });
    conditions.push(VerdictCondition::new(
        condition_type::READY,
        false,
        "Invalid",
        "The subscription is Invalid and allows no calls: fix the problem reported in Accepted."
            .into(),
    ));
    Verdict {
        kind: Kind::ApiSubscription,
        id: item.id.clone(),
        generation: item.generation,
        conditions,
        detail: Detail::Subscription(SubscriptionDetail {
            phase: Phase::Invalid,
            effective_limits: None,
            route,
        }),
    }
}

fn ready_condition(
    phase: Phase,
    stage: Stage,
    serving: bool,
    same_team: bool,
    decision_reason: Option<&str>,
    route: &str,
) -> VerdictCondition {
    let because = decision_reason
        .filter(|r| !r.trim().is_empty())
        .map(|r| format!(" (reason given: {})", r.trim()))
        .unwrap_or_default();
    let (status, reason, message) = match phase {
        Phase::Pending => (
            false,
            "Pending",
            format!(
                "Waiting for approval: someone allowed to approve AIRoute {route} must set spec.decision to Approved; calls get 403 until then."
            ),
        ),
        Phase::Rejected => (
            false,
            "Rejected",
            format!(
                "The owners of AIRoute {route} rejected this subscription{because}; calls get 403. Talk to them, then ask for a new decision."
            ),
        ),
        Phase::Revoked => (
            false,
            "Revoked",
            format!(
                "The owners of AIRoute {route} revoked this subscription{because}; calls get 403. Talk to them, then ask for a new decision."
            ),
        ),
        Phase::Invalid => (
            false,
            "Invalid",
            "The subscription allows no calls.".to_string(),
        ),
        Phase::Approved => match stage {
            Stage::Retired => (
                false,
                "RouteRetired",
                format!(
                    "AIRoute {route} is Retired and answers 410 Gone; move to the API that replaces it."
                ),
            ),
            Stage::Draft if !same_team => (
                false,
                "RouteDraft",
                format!(
                    "AIRoute {route} is a Draft, open only to consumers in its own namespace; calls work once its owners publish it."
                ),
            ),
            _ if !serving => (
                false,
                "RouteNotServing",
                format!(
                    "AIRoute {route} has no model with a usable backend right now; its owners must fix its backends."
                ),
            ),
            _ => (
                true,
                "Ready",
                format!("Approved: the consumer may call AIRoute {route}."),
            ),
        },
    };
    VerdictCondition::new(condition_type::READY, status, reason, sentences(&[message]))
}
