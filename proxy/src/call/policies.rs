//! Each route's guardrail policies, gathered once per snapshot rather than on every call: a call on
//! a guarded route takes the policy of its endpoint and side from a table (an `Arc` cloned), instead
//! of cloning every rule of the route's and consumer's guardrails into a policy of its own, and the
//! policy's detector set is worked out once for all the calls that share it.
//!
//! A route's table is made by the first call that needs it and kept for as long as the snapshot is
//! served, beside the snapshot (`control::PerSnapshot`, as the MCP tool catalog is kept): a
//! consumer without guardrails of its own shares its route's; a consumer with some has a table of its
//! own on each route it calls, up to [`CONSUMERS_KEPT`] in all (past that, gathered per call).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tollgate_snapshot::{ConsumerIdx, GuardrailEndpoint, RouteIdx, Snapshot};

use crate::control::PerSnapshot;
use crate::guard::Policy;

/// Most tables of consumers with guardrails of their own kept per snapshot.
const CONSUMERS_KEPT: usize = 4096;

/// The endpoints a guardrail names, in a table's order.
const ENDPOINTS: [GuardrailEndpoint; 5] = [
    GuardrailEndpoint::Chat,
    GuardrailEndpoint::Messages,
    GuardrailEndpoint::Prompts,
    GuardrailEndpoint::Embeddings,
    GuardrailEndpoint::Mcp,
];

/// The policy of every endpoint and side of one route (for one consumer): `None` where nothing is
/// checked.
type Table = [Option<Arc<Policy>>; 2 * ENDPOINTS.len()];

fn slot(endpoint: GuardrailEndpoint, request: bool) -> usize {
    let at = ENDPOINTS
        .iter()
        .position(|e| *e == endpoint)
        .expect("every endpoint has a slot");
    2 * at + usize::from(request)
}

/// The policy `route`'s and `consumer`'s guardrails (route's first) give `endpoint` on one side.
fn gather(
    snapshot: &Snapshot,
    route: RouteIdx,
    consumer: Option<ConsumerIdx>,
    endpoint: GuardrailEndpoint,
    request: bool,
) -> Option<Policy> {
    let route = &snapshot.content.routes[route as usize].guardrails;
    let consumer = consumer
        .map(|c| &snapshot.content.consumers[c as usize].guardrails[..])
        .unwrap_or_default();
    if route.is_empty() && consumer.is_empty() {
        return None;
    }
    let policy = Policy::gather(route.iter().chain(consumer), endpoint, request);
    (!policy.is_empty()).then_some(policy)
}

fn table(snapshot: &Snapshot, route: RouteIdx, consumer: Option<ConsumerIdx>) -> Table {
    std::array::from_fn(|i| {
        gather(snapshot, route, consumer, ENDPOINTS[i / 2], i % 2 == 1).map(Arc::new)
    })
}

/// One snapshot's tables.
struct Tables {
    /// Per route, for calls whose consumer has no guardrails of its own.
    routes: Box<[OnceLock<Table>]>,
    /// Per route and consumer with guardrails of its own.
    consumers: Mutex<HashMap<(RouteIdx, ConsumerIdx), Arc<Table>>>,
}

impl Tables {
    fn new(snapshot: &Snapshot) -> Self {
        Self {
            routes: (0..snapshot.content.routes.len())
                .map(|_| OnceLock::new())
                .collect(),
            consumers: Mutex::new(HashMap::new()),
        }
    }

    fn policy(
        &self,
        snapshot: &Snapshot,
        route: RouteIdx,
        consumer: Option<ConsumerIdx>,
        endpoint: GuardrailEndpoint,
        request: bool,
    ) -> Option<Arc<Policy>> {
        let own =
            consumer.filter(|&c| !snapshot.content.consumers[c as usize].guardrails.is_empty());
        let Some(c) = own else {
            let table = self.routes[route as usize].get_or_init(|| table(snapshot, route, None));
            return table[slot(endpoint, request)].clone();
        };
        let mut kept = self.consumers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(table) = kept.get(&(route, c)) {
            return table[slot(endpoint, request)].clone();
        }
        if kept.len() >= CONSUMERS_KEPT {
            drop(kept);
            return gather(snapshot, route, own, endpoint, request).map(Arc::new);
        }
        let made = Arc::new(table(snapshot, route, own));
        kept.insert((route, c), made.clone());
        made[slot(endpoint, request)].clone()
    }
}

/// The tables of the snapshots kept.
#[derive(Default)]
struct Policies {
    kept: PerSnapshot<Tables>,
}

fn policies() -> &'static Policies {
    static POLICIES: OnceLock<Policies> = OnceLock::new();
    POLICIES.get_or_init(Policies::default)
}

/// Whether the route or the consumer attaches any guardrail (so a caller may skip copying a
/// document that nothing would check).
pub fn any_guardrails(snapshot: &Snapshot, route: RouteIdx, consumer: Option<ConsumerIdx>) -> bool {
    !snapshot.content.routes[route as usize]
        .guardrails
        .is_empty()
        || consumer.is_some_and(|c| !snapshot.content.consumers[c as usize].guardrails.is_empty())
}

/// The rules of one side of a call on `route` by `consumer` for `endpoint` (the route's guardrails
/// first), or `None` when nothing is checked. `snapshot` is the snapshot the call is served from;
/// `shared`, when given, is it as the call holds it, whose tables are then used.
pub fn policy(
    snapshot: &Snapshot,
    shared: Option<&Arc<Snapshot>>,
    route: RouteIdx,
    consumer: Option<ConsumerIdx>,
    endpoint: GuardrailEndpoint,
    request: bool,
) -> Option<Arc<Policy>> {
    // Most calls meet no guardrail at all: told without looking the tables up.
    if !any_guardrails(snapshot, route, consumer) {
        return None;
    }
    match shared.filter(|s| std::ptr::eq(Arc::as_ptr(s), snapshot)) {
        Some(shared) => policies()
            .kept
            .of(shared, Tables::new)
            .policy(snapshot, route, consumer, endpoint, request),
        None => gather(snapshot, route, consumer, endpoint, request).map(Arc::new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_snapshot::{
        Approval, Budget, Consumer, Content, Detector, GuardRule, Guardrail, GuardrailAction,
        GuardrailDirection, Limits, Matcher, ObjectRef, RetryBudget, Route, Stage, default_mask,
    };

    fn guardrail(name: &str, applies_to: GuardrailDirection) -> Guardrail {
        Guardrail {
            id: ObjectRef::new("team", name),
            applies_to,
            endpoints: vec![GuardrailEndpoint::Chat],
            rules: vec![GuardRule {
                name: name.into(),
                matcher: Matcher::Detector(Detector::Email),
                action: GuardrailAction::Mask,
                mask_as: default_mask(Some(Detector::Email)).into(),
            }],
            moderations: Vec::new(),
            max_input_chars: None,
            max_input_tokens: None,
            broken: false,
        }
    }

    /// A route guarded on both sides of chat calls; consumer 0 without guardrails, consumer 1 with
    /// one on requests.
    fn snapshot() -> Arc<Snapshot> {
        let consumer = |i: usize, guardrails: Vec<Guardrail>| Consumer {
            id: ObjectRef::new("team", format!("app-{i}").as_str()),
            uid: String::new(),
            keys: vec![],
            limits: Default::default(),
            budget: Default::default(),
            guardrails,
        };
        let content = Content {
            routes: vec![Route {
                id: ObjectRef::new("team", "chat"),
                uid: String::new(),
                prefix: "/chat".into(),
                hostnames: vec![],
                stage: Stage::Published,
                sunset_unix: None,
                deprecation_unix: None,
                models: vec![],
                limits: Limits::default(),
                total_limits: Limits::default(),
                approval: Approval::Automatic,
                budget: Budget::default(),
                retry_budget: RetryBudget::default(),
                description: None,
                prompts: vec![],
                cache: None,
                rest: None,
                guardrails: vec![guardrail("route", GuardrailDirection::Both)],
                mcp_servers: Vec::new(),
                capture_content: None,
            }],
            consumers: vec![
                consumer(0, vec![]),
                consumer(1, vec![guardrail("own", GuardrailDirection::Request)]),
            ],
            ..Content::default()
        };
        Arc::new(Snapshot::from_content(1, content))
    }

    fn names(policy: &Policy) -> Vec<&str> {
        policy.rules.iter().map(|r| &*r.name).collect()
    }

    #[test]
    fn calls_on_a_route_share_its_policies_and_a_consumer_with_guardrails_has_its_own() {
        let s = snapshot();
        let get =
            |consumer, endpoint, request| policy(&s, Some(&s), 0, consumer, endpoint, request);
        let chat = GuardrailEndpoint::Chat;
        let request = get(Some(0), chat, true).unwrap();
        assert!(Arc::ptr_eq(&request, &get(Some(0), chat, true).unwrap()));
        // A consumer without guardrails shares the route's, as a call without a consumer does.
        assert!(Arc::ptr_eq(&request, &get(None, chat, true).unwrap()));
        let answer = get(Some(0), chat, false).unwrap();
        assert!(!Arc::ptr_eq(&request, &answer));
        assert_eq!(
            (names(&request), names(&answer)),
            (vec!["route"], vec!["route"])
        );
        assert!(get(Some(0), GuardrailEndpoint::Embeddings, true).is_none());
        // Its own: the route's rules first, kept for the next call.
        let own = get(Some(1), chat, true).unwrap();
        assert_eq!(names(&own), ["route", "own"]);
        assert!(Arc::ptr_eq(&own, &get(Some(1), chat, true).unwrap()));
        assert_eq!(names(&get(Some(1), chat, false).unwrap()), ["route"]);
    }

    #[test]
    fn a_new_snapshot_has_tables_of_its_own_and_a_call_without_its_snapshot_gathers_its_own() {
        let (first, second) = (snapshot(), snapshot());
        let chat = GuardrailEndpoint::Chat;
        let a = policy(&first, Some(&first), 0, None, chat, true).unwrap();
        let b = policy(&second, Some(&second), 0, None, chat, true).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(names(&a), names(&b));
        // Not the call's snapshot (or none): gathered for the call alone.
        let alone = policy(&first, Some(&second), 0, None, chat, true).unwrap();
        assert!(!Arc::ptr_eq(&alone, &a));
        let alone = policy(&first, None, 0, None, chat, true).unwrap();
        assert!(!Arc::ptr_eq(&alone, &a));
        assert_eq!(names(&alone), ["route"]);
    }
}
