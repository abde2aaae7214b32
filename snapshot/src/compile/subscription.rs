//! `ApiSubscription` → [`Subscription`]: references, phase, and limits clamped to the route's.

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, PoisonError};

use tollgate_crds::{ApiSubscription, Approval, Decision, Phase, Stage, condition_type};

use super::consumer::{ConsumerState, ConsumerTable};
use super::objects::{Item, claim_for_older, sentences};
use super::route::{RouteState, RouteTable};
use super::threads::join;
use super::traffic::{budget_of, clamp_budget, limits_of};
use crate::fx::{FxHashMap, map_with_capacity};
use crate::message::Message;
use crate::model::{Budget, ConsumerIdx, Limits, ObjectRef, RouteIdx, Subscription};
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

/// What a subscription compiled to; its verdict is written apart ([`write_verdicts`]) so that it can be
/// built while the table is hashed.
pub(crate) enum Outcome<'a> {
    /// Left out of the table.
    Invalid {
        reason: &'static str,
        message: String,
    },
    /// In the table.
    Listed(Listed<'a>),
}

/// What the verdict of a subscription in the table is written from.
pub(crate) struct Listed<'a> {
    route: RouteIdx,
    phase: Phase,
    limits: Limits,
    budget: Budget,
    /// Limits or budget were lowered to the route's.
    clamped: bool,
    stage: Stage,
    serving: bool,
    same_team: bool,
    decision_reason: Option<&'a str>,
}

/// Subscriptions in the table, what became of each object, the texts their verdicts share, and
/// approved counts by route verdict position.
pub(crate) struct Planned<'a> {
    pub subscriptions: Vec<Subscription>,
    pub outcomes: Vec<Outcome<'a>>,
    pub texts: Vec<Option<RouteTexts>>,
    pub approved: FxHashMap<usize, u32>,
}

/// Texts that the verdicts of every subscription to one route share, written once per route.
pub(crate) struct RouteTexts {
    /// The route as `namespace/name`.
    name: Arc<str>,
    /// Accepted message of a subscription whose limits or budget were lowered.
    lowered: Option<Arc<str>>,
    /// Ready message of a pending subscription.
    pending: Option<Arc<str>>,
}

impl RouteTexts {
    /// The name alone; `scratch` is a buffer to write in.
    fn new(id: &ObjectRef, scratch: &mut String) -> Self {
        Self {
            name: shared(scratch, &[&id.namespace, "/", &id.name]),
            lowered: None,
            pending: None,
        }
    }

    /// Writes the messages that a subscription with these traits needs, if not written yet.
    fn add(&mut self, clamped: bool, phase: Phase, scratch: &mut String) {
        if clamped && self.lowered.is_none() {
            self.lowered = Some(shared(
                scratch,
                &[
                    "The subscription is valid; its limits or budget were lowered to AIRoute ",
                    &self.name,
                    "'s ceilings, which no subscription may exceed; status.effectiveLimits and status.effectiveBudget show what is in force.",
                ],
            ));
        }
        if phase == Phase::Pending && self.pending.is_none() {
            self.pending = Some(shared(
                scratch,
                &[
                    "Waiting for approval: someone allowed to approve AIRoute ",
                    &self.name,
                    " must set spec.decision to Approved; calls get 403 until then.",
                ],
            ));
        }
    }
}

/// `parts` joined into one shared string, written in `scratch` first so that it is allocated once.
fn shared(scratch: &mut String, parts: &[&str]) -> Arc<str> {
    scratch.clear();
    for part in parts {
        scratch.push_str(part);
    }
    Arc::from(scratch.as_str())
}

/// What planning needs from a subscription's spec, read in one pass: the objects lie scattered in
/// memory, and each further pass over them would wait for it again.
struct Read<'a> {
    refs: Result<(ConsumerIdx, RouteIdx), (&'static str, String)>,
    wanted: Limits,
    wanted_budget: Budget,
    decision: Option<Decision>,
    decision_reason: Option<&'a str>,
}

fn read<'a>(
    item: &Item<'a, ApiSubscription>,
    consumers: &ConsumerTable<'_>,
    routes: &RouteTable<'_>,
) -> Read<'a> {
    let spec = &item.obj.spec;
    Read {
        refs: refs(item, consumers, routes),
        wanted: limits_of(spec.limits.as_ref()),
        wanted_budget: budget_of(spec.budget.as_ref()),
        decision: spec.decision,
        decision_reason: spec.decision_reason.as_deref(),
    }
}

/// Resolves subscriptions (sorted by namespace/name) into table entries.
pub(crate) fn plan_subscriptions<'a>(
    items: &[Item<'a, ApiSubscription>],
    consumers: &ConsumerTable<'_>,
    routes: &RouteTable<'_>,
) -> Planned<'a> {
    // Two lookups per subscription, independent of each other: half of them on a second thread.
    let (front, back) = items.split_at(items.len() / 2);
    let reads: Vec<Read<'a>> = std::thread::scope(|scope| {
        let back = scope.spawn(|| {
            back.iter()
                .map(|item| read(item, consumers, routes))
                .collect::<Vec<_>>()
        });
        let mut reads: Vec<_> = front
            .iter()
            .map(|item| read(item, consumers, routes))
            .collect();
        reads.extend(join(back));
        reads
    });
    // Of two subscriptions of one consumer to one route, the older stands. Such pairs are rare: one
    // pass finds the oldest of each, and only if there was a pair does a second mark the others.
    let mut taken: FxHashMap<(ConsumerIdx, RouteIdx), usize> = map_with_capacity(items.len());
    let mut paired = false;
    for (i, read) in reads.iter().enumerate() {
        let Ok(pair) = &read.refs else { continue };
        paired |= claim_for_older(&mut taken, *pair, i, items);
    }
    let mut duplicate_of: Vec<Option<usize>> = vec![None; items.len()];
    if paired {
        for (i, read) in reads.iter().enumerate() {
            if let Ok(pair) = &read.refs
                && taken[pair] != i
            {
                duplicate_of[i] = Some(taken[pair]);
            }
        }
    }

    let mut planned = Planned {
        subscriptions: Vec::with_capacity(items.len()),
        outcomes: Vec::with_capacity(items.len()),
        texts: (0..routes.routes.len()).map(|_| None).collect(),
        approved: map_with_capacity(routes.routes.len()),
    };
    let mut scratch = String::new();
    for (i, (item, read)) in items.iter().zip(reads).enumerate() {
        let (consumer, route) = match (read.refs, duplicate_of[i]) {
            (Err((reason, message)), _) => {
                planned.outcomes.push(Outcome::Invalid { reason, message });
                continue;
            }
            (Ok(_), Some(first)) => {
                let message = format!(
                    "Consumer {} already subscribes to AIRoute {} through ApiSubscription {}; delete this one or that one",
                    item.obj.spec.consumer,
                    route_name(item),
                    items[first].id
                );
                planned.outcomes.push(Outcome::Invalid {
                    reason: "DuplicateSubscription",
                    message,
                });
                continue;
            }
            (Ok(found), None) => found,
        };
        let (wanted, wanted_budget) = (read.wanted, read.wanted_budget);
        let target = &routes.routes[route as usize];
        let phase = phase_for(read.decision, target.approval);
        let limits = clamp_limits(wanted, target.limits);
        let budget = clamp_budget(wanted_budget, target.budget);
        if phase == Phase::Approved {
            *planned
                .approved
                .entry(routes.verdict_at[route as usize])
                .or_default() += 1;
        }
        let clamped = (limits != wanted && !wanted.is_unlimited())
            || (budget != wanted_budget && !wanted_budget.is_unlimited());
        planned.texts[route as usize]
            .get_or_insert_with(|| RouteTexts::new(&target.id, &mut scratch))
            .add(clamped, phase, &mut scratch);
        planned.outcomes.push(Outcome::Listed(Listed {
            route,
            phase,
            limits,
            budget,
            clamped,
            stage: target.stage,
            serving: !target.models.is_empty(),
            same_team: *target.id.namespace == *item.id.namespace,
            decision_reason: read.decision_reason,
        }));
        planned.subscriptions.push(Subscription {
            id: item.reference.clone(),
            uid: item.obj.metadata.uid.clone().unwrap_or_default(),
            consumer,
            route,
            phase,
            limits,
            budget,
        });
    }
    planned
}

/// Counts approved subscriptions into the route verdicts.
pub(crate) fn count_approved(approved: &FxHashMap<usize, u32>, verdicts: &mut [Verdict]) {
    for (&at, &n) in approved {
        if let Detail::Route(RouteDetail {
            approved_subscriptions,
            ..
        }) = &mut verdicts[at].detail
        {
            *approved_subscriptions = n;
        }
    }
}

/// The route a subscription names, as `namespace/name`.
fn route_name(item: &Item<'_, ApiSubscription>) -> String {
    let route = &item.obj.spec.route;
    let namespace = route.namespace.as_deref().unwrap_or(item.id.namespace);
    let mut name = String::with_capacity(namespace.len() + 1 + route.name.len());
    name.push_str(namespace);
    name.push('/');
    name.push_str(&route.name);
    name
}

/// Subscriptions whose verdicts are to be written, in chunks that two threads take in turn. Each chunk's
/// verdicts come back with its position, so their order does not depend on which thread wrote them.
pub(crate) struct VerdictQueue<'i, 'a> {
    items: &'i [Item<'a, ApiSubscription>],
    texts: Vec<Option<RouteTexts>>,
    chunks: Vec<Mutex<Option<Vec<Outcome<'a>>>>>,
    next: AtomicUsize,
}

/// Small enough that the thread finishing first waits little for the other, large enough to cost
/// nothing in taking turns.
const CHUNK: usize = 512;

impl<'i, 'a> VerdictQueue<'i, 'a> {
    /// Queues the outcomes of `items` (one each, in the same order), with the texts they refer to.
    pub fn new(
        items: &'i [Item<'a, ApiSubscription>],
        outcomes: Vec<Outcome<'a>>,
        texts: Vec<Option<RouteTexts>>,
    ) -> Self {
        let mut chunks = Vec::with_capacity(outcomes.len().div_ceil(CHUNK));
        let mut outcomes = outcomes.into_iter();
        loop {
            let chunk: Vec<Outcome<'a>> = outcomes.by_ref().take(CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            chunks.push(Mutex::new(Some(chunk)));
        }
        Self {
            items,
            texts,
            chunks,
            next: AtomicUsize::new(0),
        }
    }

    /// Writes chunks until none is left; returns them with their positions.
    pub fn drain(&self) -> Vec<(usize, Vec<Verdict>)> {
        let mut written = Vec::new();
        loop {
            let i = self.next.fetch_add(1, AtomicOrdering::Relaxed);
            let Some(chunk) = self.chunks.get(i) else {
                return written;
            };
            let outcomes = chunk
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .expect("each chunk is taken once");
            let start = i * CHUNK;
            let mut verdicts = Vec::with_capacity(outcomes.len());
            write_verdicts(
                &self.items[start..start + outcomes.len()],
                outcomes,
                &self.texts,
                &mut verdicts,
            );
            written.push((i, verdicts));
        }
    }
}

/// One verdict per subscription, in item order.
fn write_verdicts(
    items: &[Item<'_, ApiSubscription>],
    outcomes: Vec<Outcome<'_>>,
    texts: &[Option<RouteTexts>],
    verdicts: &mut Vec<Verdict>,
) {
    for (item, outcome) in items.iter().zip(outcomes) {
        let listed = match outcome {
            Outcome::Invalid { reason, message } => {
                verdicts.push(invalid(item, Arc::from(route_name(item)), reason, message));
                continue;
            }
            Outcome::Listed(listed) => listed,
        };
        let texts = texts[listed.route as usize]
            .as_ref()
            .expect("texts are written for every listed route");
        let ready = ready_condition(
            listed.phase,
            listed.stage,
            listed.serving,
            listed.same_team,
            listed.decision_reason,
            texts,
        );
        let accepted = VerdictCondition::new(
            condition_type::ACCEPTED,
            true,
            "Accepted",
            match (listed.clamped, &texts.lowered) {
                (true, Some(lowered)) => Message::Shared(Arc::clone(lowered)),
                _ => Message::Static("The subscription is valid."),
            },
        );
        let resolved_refs = VerdictCondition::new(
            condition_type::RESOLVED_REFS,
            true,
            "ResolvedRefs",
            "The consumer and the route exist and are accepted.",
        );
        verdicts.push(Verdict {
            kind: Kind::ApiSubscription,
            id: item.reference.clone(),
            generation: item.generation,
            conditions: vec![accepted, resolved_refs, ready],
            detail: Detail::Subscription(SubscriptionDetail {
                phase: listed.phase,
                effective_limits: Some(listed.limits),
                effective_budget: Some(listed.budget),
                route: Arc::clone(&texts.name),
            }),
        });
    }
}

/// The consumer and route a subscription refers to, or why it cannot be used.
fn refs(
    item: &Item<'_, ApiSubscription>,
    consumers: &ConsumerTable<'_>,
    routes: &RouteTable<'_>,
) -> Result<(ConsumerIdx, RouteIdx), (&'static str, String)> {
    let spec = &item.obj.spec;
    let namespace = item.id.namespace;
    let c = match consumers.by_id.get(&(namespace, spec.consumer.as_str())) {
        Some(ConsumerState { idx: Some(c) }) => *c,
        Some(ConsumerState { idx: None }) => {
            return Err((
                "ConsumerNotAccepted",
                format!(
                    "Consumer {namespace}/{} is not accepted; fix the problem its status reports",
                    spec.consumer
                ),
            ));
        }
        None => {
            return Err((
                "ConsumerNotFound",
                format!(
                    "Consumer {namespace}/{} does not exist; create it or correct spec.consumer (a subscription lives in its consumer's namespace)",
                    spec.consumer
                ),
            ));
        }
    };
    let route_ns = spec.route.namespace.as_deref().unwrap_or(namespace);
    let route = &spec.route.name;
    match routes.by_id.get(&(route_ns, route.as_str())) {
        Some(RouteState { idx: Some(r) }) => Ok((c, *r)),
        Some(_) => Err((
            "RouteNotAccepted",
            format!(
                "AIRoute {route_ns}/{route} is not accepted, so it takes no subscriptions until its owners fix what its status reports"
            ),
        )),
        None => Err((
            "RouteNotFound",
            format!(
                "AIRoute {route_ns}/{route} does not exist; correct spec.route (name and namespace)"
            ),
        )),
    }
}

fn invalid(
    item: &Item<'_, ApiSubscription>,
    route: Arc<str>,
    reason: &'static str,
    message: String,
) -> Verdict {
    let refs = if reason == "DuplicateSubscription" {
        VerdictCondition::new(
            condition_type::RESOLVED_REFS,
            true,
            "ResolvedRefs",
            "The consumer and the route exist and are accepted.",
        )
    } else {
        VerdictCondition::new(
            condition_type::RESOLVED_REFS,
            false,
            reason,
            "See Accepted for the reference that could not be used.",
        )
    };
    let conditions = vec![
        VerdictCondition::new(
            condition_type::ACCEPTED,
            false,
            reason,
            sentences(&[message]),
        ),
        refs,
        VerdictCondition::new(
            condition_type::READY,
            false,
            "Invalid",
            "The subscription is Invalid and allows no calls: fix the problem reported in Accepted.",
        ),
    ];
    Verdict {
        kind: Kind::ApiSubscription,
        id: item.reference.clone(),
        generation: item.generation,
        conditions,
        detail: Detail::Subscription(SubscriptionDetail {
            phase: Phase::Invalid,
            effective_limits: None,
            effective_budget: None,
            route,
        }),
    }
}

/// Whether the subscription lets calls through now, and if not, what would.
fn ready_condition(
    phase: Phase,
    stage: Stage,
    serving: bool,
    same_team: bool,
    decision_reason: Option<&str>,
    texts: &RouteTexts,
) -> VerdictCondition {
    let route = &*texts.name;
    let because = decision_reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| format!(" (reason given: {})", r.trim_end_matches('.')))
        .unwrap_or_default();
    let (status, reason, message): (bool, &'static str, Message) = match phase {
        Phase::Pending => (
            false,
            "Pending",
            Message::Shared(Arc::clone(
                texts
                    .pending
                    .as_ref()
                    .expect("written for every route with a pending subscription"),
            )),
        ),
        Phase::Rejected => (
            false,
            "Rejected",
            format!(
                "The owners of AIRoute {route} rejected this subscription{because}; calls get 403. Talk to them, then ask for a new decision."
            )
            .into(),
        ),
        Phase::Revoked => (
            false,
            "Revoked",
            format!(
                "The owners of AIRoute {route} revoked this subscription{because}; calls get 403. Talk to them, then ask for a new decision."
            )
            .into(),
        ),
        Phase::Invalid => (
            false,
            "Invalid",
            "The subscription allows no calls: fix the problem reported in Accepted.".into(),
        ),
        Phase::Approved => match stage {
            Stage::Retired => (
                false,
                "RouteRetired",
                format!(
                    "AIRoute {route} is Retired and answers 410 Gone; move to the API that replaces it."
                )
                .into(),
            ),
            Stage::Draft if !same_team => (
                false,
                "RouteDraft",
                format!(
                    "AIRoute {route} is a Draft, open only to consumers in its own namespace; calls work once its owners publish it."
                )
                .into(),
            ),
            _ if !serving => (
                false,
                "RouteNotServing",
                format!(
                    "AIRoute {route} has no model with a usable backend right now; its owners must fix its backends."
                )
                .into(),
            ),
            _ => (true, "Ready", "Approved: the consumer may call the route.".into()),
        },
    };
    VerdictCondition::new(condition_type::READY, status, reason, message)
}
