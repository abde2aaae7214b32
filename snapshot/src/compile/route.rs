//! `AIRoute` → [`Route`]: prefix ownership, lifecycle, and model backends resolved against providers.

use std::borrow::Cow;
use std::sync::Arc;

use tollgate_crds::{AIRoute, AIRouteSpec, BackendRef, Stage, condition_type};

use super::conditions::unresolved_refs;
use super::guardrail::{GuardrailTable, guardrails_condition};
use super::objects::{
    Interner, Item, Texts, by_age, input_order, join_list, map_in_order, push_list, sentences,
    states_by_id,
};
use super::paths::{Claims, Collision, normalize_hostname, normalize_prefix};
use super::prompt::{CompiledPrompts, compile_prompts};
use super::provider::ProviderTable;
use super::rest::{ConfigMaps, compile_rest};
use super::secrets::Secrets;
use super::tenancy::{Grants, HOSTNAMES, PATH_PREFIXES, Tenancy};
use crate::fx::FxHashMap;
use crate::model::{Backend, CachePolicy, ContentCapture, ModelCache, Route, RouteIdx, RouteModel};
use crate::prices::price_list;
use crate::verdict::{Detail, Kind, RouteDetail, Verdict, VerdictCondition};

/// What subscriptions need to know about a route object; the rest they read from the table.
pub(crate) struct RouteState {
    /// Index in the table; `None` when the route was not accepted.
    pub idx: Option<RouteIdx>,
}

/// Routes in the table, and every route object by namespace/name.
pub(crate) struct RouteTable<'a> {
    pub routes: Vec<Route>,
    /// Position of each table route's verdict, by route index.
    pub verdict_at: Vec<usize>,
    pub by_id: FxHashMap<(&'a str, &'a str), RouteState>,
}

struct Valid {
    prefix: String,
    hostnames: Vec<String>,
    cache: Option<CachePolicy>,
    /// Each of `spec.models`' cache settings, in order.
    model_caches: Vec<ModelCache>,
}

/// What routes refer to: providers for their models; Secrets and ConfigMaps for their REST service.
pub(crate) struct Refs<'r> {
    pub providers: &'r ProviderTable<'r>,
    pub secrets: &'r Secrets<'r>,
    pub config_maps: &'r ConfigMaps<'r>,
    pub guardrails: &'r GuardrailTable<'r>,
    pub mcp_servers: &'r super::mcp::McpServerTable<'r>,
}

/// Compiles routes, which arrive sorted by namespace/name.
pub(crate) fn compile_routes<'a>(
    items: &[Item<'a, AIRoute>],
    refs: &Refs<'_>,
    tenancy: Option<&Tenancy>,
    now_unix: i64,
    verdicts: &mut Vec<Verdict>,
) -> RouteTable<'a> {
    // Reading each object's spec is the slow part: in input order (see `input_order`).
    let order = input_order(items);
    let checked: Vec<Result<Valid, Vec<String>>> = map_in_order(&order, |i| validate(&items[i]));
    // A path or hostname the namespace was not granted is refused before it can claim anything, so
    // another team cannot take a path away from the team it was granted to by being first.
    let refused: Vec<Option<(&'static str, String)>> = match tenancy {
        None => vec![None; items.len()],
        Some(tenancy) => {
            let grants = Grants::new(tenancy);
            items
                .iter()
                .zip(&checked)
                .map(|(item, valid)| not_granted(item.id.namespace, valid.as_ref().ok()?, &grants))
                .collect()
        }
    };

    // Older routes claim their paths first.
    let by_age = by_age(items, |i| checked[i].is_ok() && refused[i].is_none());
    let mut claims = Claims::default();
    let mut collisions: Vec<Option<(usize, Collision)>> = vec![None; items.len()];
    for &i in &by_age {
        let (Ok(valid), None) = (&checked[i], &refused[i]) else {
            continue;
        };
        match claims.collision(&valid.prefix, &valid.hostnames) {
            Some(hit) => {
                collisions[i] = Some(hit);
            }
            None => claims.insert(i, &valid.prefix, &valid.hostnames),
        }
    }
    let (mut names, mut texts) = (Interner::default(), Texts::default());
    let mut built = map_in_order(&order, |i| match (&checked[i], collisions[i]) {
        (Ok(valid), None) if refused[i].is_none() => Some(build(
            &items[i], valid, refs, now_unix, &mut names, &mut texts,
        )),
        _ => None,
    });

    let mut table = RouteTable {
        routes: Vec::new(),
        verdict_at: Vec::new(),
        by_id: FxHashMap::default(),
    };
    let mut indexes: Vec<Option<RouteIdx>> = vec![None; items.len()];
    for (i, item) in items.iter().enumerate() {
        let verdict = match (&checked[i], collisions[i]) {
            (Err(problems), _) => {
                let message = format!(
                    "This route is not served until its spec is fixed: {}.",
                    problems.join("; ")
                );
                let endpoint = format!("{}/v1", item.obj.spec.prefix.trim_end_matches('/'));
                rejected(item, endpoint, "InvalidSpec", message)
            }
            (Ok(valid), _) if refused[i].is_some() => {
                let (reason, message) = refused[i].clone().expect("checked");
                rejected(item, format!("{}/v1", valid.prefix), reason, message)
            }
            (Ok(valid), Some((winner, how))) => {
                let message = conflict_message(valid, &checked, items, winner, how);
                rejected(
                    item,
                    format!("{}/v1", valid.prefix),
                    "PathConflict",
                    message,
                )
            }
            (Ok(_), None) => {
                let (verdict, route) = built[i].take().expect("built when accepted");
                indexes[i] = Some(table.routes.len() as RouteIdx);
                table.routes.push(route);
                table.verdict_at.push(verdicts.len());
                verdict
            }
        };
        verdicts.push(verdict);
    }
    table.by_id = states_by_id(items, &order, |i| RouteState { idx: indexes[i] });
    table
}

fn validate(item: &Item<'_, AIRoute>) -> Result<Valid, Vec<String>> {
    let spec: &AIRouteSpec = &item.obj.spec;
    let mut problems = Vec::new();
    if item.id.name.is_empty() {
        problems.push("set metadata.name".to_string());
    }
    let prefix = normalize_prefix(&spec.prefix)
        .map_err(|e| problems.push(e))
        .unwrap_or_default()
        .to_string();
    let mut hostnames = Vec::with_capacity(spec.hostnames.len());
    for h in &spec.hostnames {
        match normalize_hostname(&h.0) {
            Ok(h) => hostnames.push(h),
            Err(e) => problems.push(e),
        }
    }
    if spec.models.is_empty() {
        problems.push("list at least one model under spec.models".into());
    }
    // Routes list a few models: a quadratic check allocates nothing, and only a repeat needs the list.
    let models = &spec.models;
    let may_repeat = models.len() > 32
        || (1..models.len()).any(|i| models[..i].iter().any(|m| m.name == models[i].name));
    if may_repeat {
        let mut names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
        names.sort_unstable();
        let mut dups: Vec<&str> = names
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        dups.dedup();
        if !dups.is_empty() {
            problems.push(format!(
                "list each model name once in spec.models ({} repeats)",
                join_list(&dups)
            ));
        }
    }
    for m in &spec.models {
        if !m.backends.iter().any(|b| b.weight > 0) {
            problems.push(format!(
                "give model {} at least one backend with a weight above 0",
                m.name
            ));
        }
    }
    if spec.stage == Stage::Deprecated && spec.sunset.is_none() {
        problems
            .push("set spec.sunset: a Deprecated route needs the date it will be retired".into());
    }
    // The API server's CEL rule says the same; standalone files have no API server.
    if let (Some(d), Some(s)) = (&spec.deprecation, &spec.sunset)
        && d.0 > s.0
    {
        problems.push("set spec.deprecation no later than spec.sunset (RFC 9745)".into());
    }
    let model_names: Vec<&str> = spec.models.iter().map(|m| m.name.as_str()).collect();
    let cache = super::cache::cache_policy_of(spec.cache.as_ref(), &model_names)
        .map_err(|e| problems.push(e))
        .unwrap_or_default();
    let model_caches = spec
        .models
        .iter()
        .map(|m| {
            super::cache::model_cache_of(m.cache.as_ref(), &m.name, &model_names)
                .map_err(|e| problems.push(e))
                .unwrap_or_default()
        })
        .collect();
    if problems.is_empty() {
        Ok(Valid {
            prefix,
            hostnames,
            cache,
            model_caches,
        })
    } else {
        Err(problems)
    }
}

/// Why a namespace may not claim this route's prefix or hostnames, if it may not.
fn not_granted(
    namespace: &str,
    valid: &Valid,
    grants: &Grants<'_>,
) -> Option<(&'static str, String)> {
    let grant = grants.of(namespace);
    let shown = if valid.prefix.is_empty() {
        "/"
    } else {
        valid.prefix.as_str()
    };
    if !grant.allows_prefix(&valid.prefix) {
        let source = if grant.prefixes_annotated {
            format!("as its annotation {PATH_PREFIXES} says")
        } else {
            format!("the default while it has no annotation {PATH_PREFIXES}")
        };
        return Some((
            "PrefixNotAllowed",
            sentences(&[
                format!(
                    "Namespace {namespace} may claim {} ({source}), not {shown}",
                    grant.describe_prefixes()
                ),
                format!(
                    "Choose a spec.prefix it may claim, or ask a cluster administrator to add {shown} to the Namespace's annotation {PATH_PREFIXES}"
                ),
            ]),
        ));
    }
    let refused: Vec<&str> = valid
        .hostnames
        .iter()
        .filter(|h| !grant.allows_hostname(h))
        .map(String::as_str)
        .collect();
    if !refused.is_empty() {
        let granted = if grant.hostnames.is_empty() {
            "no hostname".to_string()
        } else {
            join_list(&grant.hostnames)
        };
        return Some((
            "HostnameNotAllowed",
            sentences(&[
                format!(
                    "Namespace {namespace} may claim {granted} (its annotation {HOSTNAMES}), not {}",
                    join_list(&refused)
                ),
                format!(
                    "Remove them from spec.hostnames, or ask a cluster administrator to add them to the Namespace's annotation {HOSTNAMES}"
                ),
            ]),
        ));
    }
    None
}

fn describe_hosts(hostnames: &[String]) -> Cow<'static, str> {
    if hostnames.is_empty() {
        Cow::Borrowed("any host")
    } else {
        Cow::Owned(format!(
            "host{} {}",
            if hostnames.len() == 1 { "" } else { "s" },
            join_list(hostnames)
        ))
    }
}

fn conflict_message(
    valid: &Valid,
    checked: &[Result<Valid, Vec<String>>],
    items: &[Item<'_, AIRoute>],
    winner: usize,
    how: Collision,
) -> String {
    let other = &items[winner].id;
    let theirs = checked[winner]
        .as_ref()
        .map(|v| v.prefix.as_str())
        .unwrap_or_default();
    let shown = |p: &str| {
        if p.is_empty() {
            "/".to_string()
        } else {
            p.to_string()
        }
    };
    let what = match how {
        Collision::SamePath => format!(
            "Prefix {} on {} is already served by AIRoute {other}, which is older",
            shown(&valid.prefix),
            describe_hosts(&valid.hostnames)
        ),
        Collision::OlderInsideApi => format!(
            "AIRoute {other}, which is older, has prefix {theirs}, which would capture this route's API at {}/v1",
            valid.prefix
        ),
        Collision::InsideOlderApi => format!(
            "Prefix {} lies inside the API of AIRoute {other} at {theirs}/v1, which is older and answers there",
            valid.prefix
        ),
    };
    sentences(&[
        what,
        "Choose another spec.prefix or spec.hostnames for this route".into(),
    ])
}

fn rejected(
    item: &Item<'_, AIRoute>,
    endpoint: String,
    reason: &'static str,
    message: String,
) -> Verdict {
    Verdict {
        kind: Kind::AIRoute,
        id: item.reference.clone(),
        generation: item.generation,
        conditions: vec![
            VerdictCondition::new(condition_type::ACCEPTED, false, reason, message),
            VerdictCondition::new(
                condition_type::READY,
                false,
                reason,
                "The route is not served: fix the problem reported in Accepted.",
            ),
        ],
        detail: Detail::Route(RouteDetail {
            endpoint,
            served_models: Vec::new(),
            approved_subscriptions: 0,
        }),
    }
}

/// A problem with one backend: condition reason and a clause.
type Problem = (&'static str, String);

fn build<'a>(
    item: &Item<'a, AIRoute>,
    valid: &Valid,
    refs: &Refs<'_>,
    now_unix: i64,
    names: &mut Interner<'a>,
    texts: &mut Texts,
) -> (Verdict, Route) {
    let spec = &item.obj.spec;
    let limits = super::traffic::limits_of(spec.limits.as_ref());
    let namespace = item.id.namespace;
    let endpoint = [valid.prefix.as_str(), "/v1"].concat();
    let mut problems: Vec<Problem> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut models: Vec<RouteModel> = Vec::with_capacity(spec.models.len());
    let mut unserved: Vec<&str> = Vec::new();
    if spec.stage != Stage::Retired {
        for (at, m) in spec.models.iter().enumerate() {
            let resolve = |b: &BackendRef, problems: &mut Vec<Problem>| {
                resolve_backend(b, &m.name, namespace, refs.providers)
                    .map_err(|(reason, clause)| {
                        problems.push((reason, format!("model {}: {clause}", m.name)))
                    })
                    .ok()
            };
            let mut backends: Vec<Backend> = Vec::with_capacity(m.backends.len());
            for b in &m.backends {
                // Weight 0 keeps a backend configured (and checked) but idle.
                if let Some(backend) = resolve(b, &mut problems)
                    && backend.weight > 0
                {
                    backends.push(backend);
                }
            }
            let mut fallbacks: Vec<Backend> = m
                .fallbacks
                .iter()
                .filter_map(|b| resolve(b, &mut problems))
                .collect();
            if backends.is_empty() && !fallbacks.is_empty() {
                let mut first = fallbacks.remove(0);
                first.weight = 1;
                notes.push(format!(
                    "Model {} has no usable weighted backend, so its first usable fallback takes all its traffic",
                    m.name
                ));
                backends.push(first);
            }
            if backends.is_empty() {
                unserved.push(&m.name);
            } else {
                let context_window = m.context_window.or_else(|| {
                    let first = &backends[0];
                    let provider = &refs.providers.providers[first.provider as usize];
                    price_list()
                        .lookup(provider.provider_type, &first.upstream_model)
                        .map(|listed| listed.context)
                });
                models.push(RouteModel {
                    name: names.get(&m.name),
                    backends,
                    fallbacks,
                    context_window,
                    cache: valid.model_caches[at].clone(),
                });
            }
        }
    }
    // A Retired route sends nothing upstream: its REST service is not compiled either.
    let backend_problems = problems.len();
    let rest = match &spec.rest {
        Some(rest) if spec.stage != Stage::Retired => {
            match compile_rest(rest, namespace, refs.secrets, refs.config_maps) {
                Ok(service) => {
                    notes.push(format!(
                        "Its REST service publishes {} operation{} under {}/api",
                        service.operations.len(),
                        if service.operations.len() == 1 {
                            ""
                        } else {
                            "s"
                        },
                        valid.prefix
                    ));
                    Some(service)
                }
                Err(found) => {
                    notes.push(format!(
                        "Its REST service is not served until the problems in ResolvedRefs are fixed: requests under {}/api get 404",
                        valid.prefix
                    ));
                    problems.extend(
                        found
                            .into_iter()
                            .map(|(reason, clause)| (reason, format!("REST service: {clause}"))),
                    );
                    None
                }
            }
        }
        _ => None,
    };
    models.sort_by(|a, b| a.name.cmp(&b.name));
    let prompts = if spec.stage == Stage::Retired {
        CompiledPrompts::default()
    } else {
        let declared: Vec<&str> = spec.models.iter().map(|m| m.name.as_str()).collect();
        compile_prompts(&spec.prompts, &declared, |name| names.get(name))
    };
    let served: Vec<Arc<str>> = models.iter().map(|m| Arc::clone(&m.name)).collect();

    let mut conditions = Vec::with_capacity(4);
    conditions.push(VerdictCondition::new(
        condition_type::ACCEPTED,
        true,
        "Accepted",
        [
            "The route owns ",
            &endpoint,
            " on ",
            &describe_hosts(&valid.hostnames),
            ".",
        ]
        .concat(),
    ));
    conditions.push(match problems.first() {
        None if spec.stage == Stage::Retired => VerdictCondition::new(
            condition_type::RESOLVED_REFS,
            true,
            "ResolvedRefs",
            "Backends are not checked: a Retired route sends nothing upstream.",
        ),
        None => VerdictCondition::new(
            condition_type::RESOLVED_REFS,
            true,
            "ResolvedRefs",
            "Every backend refers to a usable provider that offers its model.",
        ),
        Some(&(reason, _)) => {
            let clauses: Vec<&str> = problems.iter().map(|(_, c)| c.as_str()).collect();
            let advice: &[&str] = if backend_problems == 0 {
                &[]
            } else {
                &["Requests use the remaining backends until this is fixed"]
            };
            unresolved_refs(reason, &clauses, advice)
        }
    });
    if !unserved.is_empty() {
        notes.insert(
            0,
            format!(
                "{} not served: no backend is usable (see ResolvedRefs); clients asking for {} get model_not_found",
                if unserved.len() == 1 {
                    format!("Model {} is", unserved[0])
                } else {
                    format!("Models {} are", join_list(&unserved))
                },
                if unserved.len() == 1 { "it" } else { "them" }
            ),
        );
    }
    let sunset_unix = spec.sunset.as_ref().map(|t| t.0.as_second());
    let announced = spec.deprecation.as_ref().map(|t| t.0.as_second());
    let deprecation_unix = match spec.stage {
        // Without a date a Deprecated route has been deprecated at least since it exists (0 when
        // standalone YAML gives no creation time either): the header says "deprecated", as before.
        Stage::Deprecated => Some(
            announced
                .or(item.created.map(|t| t.as_second()))
                .unwrap_or(0),
        ),
        Stage::Published => announced,
        Stage::Draft | Stage::Retired => None,
    };
    if spec.stage == Stage::Published
        && let Some(t) = &spec.deprecation
    {
        notes.push(format!(
            "Its deprecation on {} is announced in a Deprecation header on every answer",
            t.0
        ));
    }
    match spec.stage {
        Stage::Draft => notes.push(format!(
            "It is a Draft: only consumers in namespace {namespace} can call it; set spec.stage to Published to open it to subscribers"
        )),
        Stage::Deprecated => match (&spec.sunset, sunset_unix) {
            (Some(t), Some(s)) if s <= now_unix => notes.push(format!(
                "Its sunset {} has passed: set spec.stage to Retired once callers have moved",
                t.0
            )),
            (Some(t), _) => notes.push(format!(
                "It is Deprecated: every answer carries Deprecation and Sunset ({}) headers",
                t.0
            )),
            _ => {}
        },
        _ => {}
    }
    conditions.push(if spec.stage == Stage::Retired {
        VerdictCondition::new(
            condition_type::READY,
            false,
            "Retired",
            "The route is Retired: clients get 410 Gone and nothing is sent upstream; delete it once callers have moved on.",
        )
    } else if served.is_empty() {
        VerdictCondition::new(
            condition_type::READY,
            false,
            "NoServedModels",
            "No model has a usable backend, so every call fails: fix the backends listed in ResolvedRefs.",
        )
    } else {
        // Routes serving the same models without notes get the same text: shared.
        let message = texts.share(|message| {
            message.push_str("Serving ");
            push_list(message, &served);
            message.push('.');
            if !notes.is_empty() {
                message.push(' ');
                message.push_str(&sentences(&notes));
            }
        });
        VerdictCondition::new(condition_type::READY, true, "Ready", message)
    });

    if !spec.prompts.is_empty() && spec.stage != Stage::Retired {
        conditions.push(prompts_condition(&prompts));
    }
    let guardrails = if spec.guardrails.is_empty() {
        Vec::new()
    } else {
        let attached = refs.guardrails.attach(&spec.guardrails, namespace);
        conditions.push(guardrails_condition(&attached));
        attached.guardrails
    };
    let mcp_servers = match &spec.mcp {
        Some(mcp) if !mcp.servers.is_empty() => {
            let attached = refs.mcp_servers.attach(&mcp.servers, namespace);
            conditions.push(super::mcp::servers_condition(&attached));
            attached.servers
        }
        _ => Vec::new(),
    };
    let verdict = Verdict {
        kind: Kind::AIRoute,
        id: item.reference.clone(),
        generation: item.generation,
        conditions,
        detail: Detail::Route(RouteDetail {
            endpoint,
            served_models: served,
            approved_subscriptions: 0,
        }),
    };
    let route = Route {
        id: item.reference.clone(),
        uid: item.obj.metadata.uid.clone().unwrap_or_default(),
        prefix: valid.prefix.clone(),
        hostnames: valid.hostnames.clone(),
        stage: spec.stage,
        sunset_unix,
        deprecation_unix,
        models,
        limits,
        total_limits: super::traffic::limits_of(spec.total_limits.as_ref()),
        approval: spec.approval,
        budget: super::traffic::budget_of(spec.budget.as_ref()),
        retry_budget: super::traffic::retry_budget_of(spec.retry_budget.as_ref()),
        description: spec.description.clone(),
        prompts: prompts.prompts,
        cache: valid.cache.clone(),
        rest,
        guardrails,
        mcp_servers,
        capture_content: content_capture(spec.telemetry.as_ref()),
    };
    (verdict, route)
}

/// `spec.telemetry.captureContent` when enabled (the schema bounds `maxBytes`; it is clamped again
/// for objects stored before it did).
fn content_capture(telemetry: Option<&tollgate_crds::RouteTelemetry>) -> Option<ContentCapture> {
    let capture = telemetry?.capture_content.as_ref().filter(|c| c.enabled)?;
    Some(ContentCapture {
        max_bytes: capture
            .max_bytes
            .unwrap_or(ContentCapture::DEFAULT_MAX_BYTES)
            .clamp(64, 65536),
    })
}

/// `PromptsValid`: false while a prompt is left out (each problem listed), true otherwise, with
/// the warnings.
fn prompts_condition(prompts: &CompiledPrompts) -> VerdictCondition {
    let served: Vec<&str> = prompts.prompts.iter().map(|p| p.name.as_str()).collect();
    let serving = if served.is_empty() {
        "No prompt API is served".to_string()
    } else {
        format!("Serving prompt APIs {}", join_list(&served))
    };
    let mut parts = Vec::with_capacity(1 + prompts.errors.len() + prompts.warnings.len());
    parts.extend(prompts.errors.iter().cloned());
    parts.push(serving);
    parts.extend(prompts.warnings.iter().map(|w| format!("Warning: {w}")));
    if prompts.errors.is_empty() {
        VerdictCondition::new(
            condition_type::PROMPTS_VALID,
            true,
            "Valid",
            sentences(&parts),
        )
    } else {
        VerdictCondition::new(
            condition_type::PROMPTS_VALID,
            false,
            "InvalidPrompt",
            sentences(&parts),
        )
    }
}

fn resolve_backend(
    b: &BackendRef,
    model: &str,
    route_namespace: &str,
    providers: &ProviderTable<'_>,
) -> Result<Backend, Problem> {
    let namespace = b.namespace.as_deref().unwrap_or(route_namespace);
    let name = b.provider.as_str();
    let Some(state) = providers.by_id.get(&(namespace, name)) else {
        return Err((
            "ProviderNotFound",
            format!("ModelProvider {namespace}/{name} does not exist"),
        ));
    };
    if !state.shared_with(route_namespace) {
        return Err((
            "RefNotPermitted",
            format!(
                "ModelProvider {namespace}/{name} is not shared with namespace {route_namespace} (its owners can add {route_namespace} to its spec.allowedNamespaces)"
            ),
        ));
    }
    let Some(idx) = state.usable else {
        return Err((
            "ProviderNotReady",
            format!("ModelProvider {namespace}/{name} is not usable (its status says why)"),
        ));
    };
    let upstream = b.model.as_deref().unwrap_or(model);
    let Some((m, shared_name)) = state.models.get(upstream) else {
        return Err((
            "ModelNotOffered",
            format!(
                "ModelProvider {namespace}/{name} does not offer {upstream} (add it to the provider's spec.models, or set backends[].model)"
            ),
        ));
    };
    let provider = &providers.providers[idx as usize];
    Ok(Backend {
        provider: idx,
        upstream_model: Arc::clone(shared_name),
        weight: b.weight,
        price: provider.models[*m].price,
    })
}
