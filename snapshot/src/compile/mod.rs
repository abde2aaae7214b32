//! The compiler: resources in, one [`Snapshot`] and a [`Verdict`] per object out.
//!
//! Pure and deterministic: the same resources, in any order, give a byte-identical snapshot and the
//! same verdicts. Providers compile first, then routes (which refer to providers), consumers, and
//! subscriptions (which refer to consumers and routes).

mod cache;
mod conditions;
mod consumer;
mod guardrail;
mod json_schema;
mod mcp;
mod objects;
mod paths;
mod prompt;
mod provider;
mod rest;
mod route;
mod secrets;
mod sharing;
mod subscription;
mod tenancy;
mod threads;
mod traffic;

pub use prompt::compile_prompt_spec;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use subscription::VerdictQueue;
use threads::join;
use tollgate_crds::{
    AIGuardrail, AIRoute, ApiSubscription, Consumer, MCPServer, ModelProvider, Phase,
    condition_type,
};

use std::sync::{Arc, OnceLock, mpsc};

use crate::model::{Assembly, Content, Snapshot, Subscription};
use crate::verdict::{
    ConsumerDetail, Detail, GuardrailDetail, Kind, ProviderDetail, RouteDetail, SubscriptionDetail,
    Verdict, VerdictCondition,
};

pub use consumer::MIN_CONSUMER_KEY_CHARS;
pub use objects::DEFAULT_NAMESPACE;
pub use provider::{
    FAKE_ENDPOINT, UNTRANSLATED, auth_scheme, default_endpoint, translation_available,
};
pub use rest::DEFAULT_MAX_REQUEST_BYTES;
pub use subscription::{clamp_limits, phase_for};
pub use tenancy::{HOSTNAMES, PATH_PREFIXES, Tenancy};
pub use traffic::clamp_budget;

/// Everything a snapshot is compiled from.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// Every `ModelProvider`.
    pub providers: Vec<ModelProvider>,
    /// Every `AIRoute`.
    pub routes: Vec<AIRoute>,
    /// Every `Consumer`.
    pub consumers: Vec<Consumer>,
    /// Every `ApiSubscription`.
    pub subscriptions: Vec<ApiSubscription>,
    /// Every `AIGuardrail` (copied into the routes and consumers that attach it).
    pub guardrails: Vec<AIGuardrail>,
    /// Every `MCPServer` (copied into the routes that attach it).
    pub mcp_servers: Vec<MCPServer>,
    /// The Secrets that providers and consumers refer to (others are ignored).
    pub secrets: Vec<Secret>,
    /// The ConfigMaps that routes' REST services read their OpenAPI documents from (others are ignored).
    pub config_maps: Vec<ConfigMap>,
    /// The present instant in Unix seconds: keys expired by then are left out.
    pub now_unix: i64,
    /// Proxy replicas sharing the traffic, copied into the snapshot (0: unknown). An input rather than
    /// something the compiler looks up, so compiling stays pure.
    pub proxy_replicas: u32,
    /// Who may claim which paths and hostnames; `None` lets every namespace claim any (standalone).
    pub tenancy: Option<Tenancy>,
}

/// The result of compiling.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The routing table.
    pub snapshot: Snapshot,
    /// One verdict per input object, sorted by kind, namespace and name.
    pub verdicts: Vec<Verdict>,
}

/// Compiles resources into a routing table with the given version, and says what it made of each object.
///
/// Work that does not depend on each other runs on two threads (consumers beside providers and routes;
/// planning subscriptions beside hashing the other tables; subscription verdicts, in chunks, on both);
/// results are joined in a fixed order, so the output does not depend on scheduling.
pub fn compile(inputs: &Inputs, version: u64) -> Compiled {
    // Indexed by whichever thread needs the Secrets first, while the other still sorts its objects.
    let secrets = OnceLock::new();
    let secrets = || secrets.get_or_init(|| secrets::Secrets::new(&inputs.secrets));
    let now = inputs.now_unix;
    // Providers first: guardrails' moderation hooks refer to them.
    let providers = objects::collect(&inputs.providers);
    let mut provider_verdicts = Vec::with_capacity(inputs.providers.len());
    let provider_table =
        provider::compile_providers(&providers.items, secrets(), &mut provider_verdicts);
    // Few and small: compiled before the threads start, so both can attach them.
    let guardrail_objects = objects::collect(&inputs.guardrails);
    let mut guardrail_verdicts = Vec::with_capacity(inputs.guardrails.len());
    let guardrails = guardrail::compile_guardrails(
        &guardrail_objects.items,
        &provider_table,
        secrets(),
        &mut guardrail_verdicts,
    );
    let guardrails = &guardrails;
    // Few too; their verdicts come last, as their kind sorts last.
    let server_objects = objects::collect(&inputs.mcp_servers);
    let mut server_verdicts = Vec::with_capacity(inputs.mcp_servers.len());
    let servers = mcp::compile_servers(&server_objects.items, secrets(), &mut server_verdicts);
    let servers = &servers;

    let (left, right) = std::thread::scope(|scope| {
        let right = scope.spawn(|| {
            let consumers = objects::collect(&inputs.consumers);
            let mut verdicts = Vec::with_capacity(inputs.consumers.len());
            let table = consumer::compile_consumers(
                &consumers.items,
                secrets(),
                guardrails,
                now,
                &mut verdicts,
            );
            (consumers, table, verdicts)
        });
        let routes = objects::collect(&inputs.routes);
        // Consumers take longer to compile than providers and routes: sorting subscriptions goes here.
        let subscriptions = objects::collect(&inputs.subscriptions);
        let mut verdicts = Vec::with_capacity(
            inputs.providers.len()
                + inputs.routes.len()
                + inputs.consumers.len()
                + inputs.subscriptions.len(),
        );
        verdicts.append(&mut provider_verdicts);
        let config_maps = rest::ConfigMaps::new(&inputs.config_maps);
        let refs = route::Refs {
            providers: &provider_table,
            secrets: secrets(),
            config_maps: &config_maps,
            guardrails,
            mcp_servers: servers,
        };
        let route_table = route::compile_routes(
            &routes.items,
            &refs,
            inputs.tenancy.as_ref(),
            now,
            &mut verdicts,
        );
        let left = (
            providers,
            routes,
            subscriptions,
            provider_table,
            route_table,
            verdicts,
        );
        (left, join(right))
    });
    let (providers, routes, subscriptions, provider_table, route_table, mut verdicts) = left;
    let (consumers, consumer_table, mut consumer_verdicts) = right;
    verdicts.append(&mut consumer_verdicts);

    // The first three tables are final: a second thread hashes and indexes them while subscriptions are
    // planned, then hashes the subscriptions and joins in writing their verdicts.
    let proxy_replicas = inputs.proxy_replicas;
    let (subscription_list, assembled, mut written) = std::thread::scope(|scope| {
        let (hand_over, handed) = mpsc::channel::<(Vec<Subscription>, Arc<VerdictQueue>)>();
        let tables = (
            &provider_table.providers,
            &route_table.routes,
            &consumer_table.consumers,
        );
        let hashing = scope.spawn(move || {
            let assembly = Assembly::new(tables.0, tables.1, tables.2);
            // No hand-over means the planning thread panicked; the scope passes its panic on.
            let (list, queue) = handed.recv().ok()?;
            let assembled = assembly.finish(&list, proxy_replicas);
            let written = queue.drain();
            Some((list, assembled, written))
        });
        let planned =
            subscription::plan_subscriptions(&subscriptions.items, &consumer_table, &route_table);
        subscription::count_approved(&planned.approved, &mut verdicts);
        let queue = Arc::new(VerdictQueue::new(
            &subscriptions.items,
            planned.outcomes,
            planned.texts,
        ));
        // Fails only if the hashing thread panicked, which joining it passes on.
        let _ = hand_over.send((planned.subscriptions, Arc::clone(&queue)));
        let mut written = queue.drain();
        let (list, assembled, theirs) = join(hashing).expect("subscriptions were handed over");
        written.extend(theirs);
        (list, assembled, written)
    });
    written.sort_unstable_by_key(|(position, _)| *position);
    for (_, mut chunk) in written {
        verdicts.append(&mut chunk);
    }
    verdicts.append(&mut server_verdicts);
    let content = Content {
        providers: provider_table.providers,
        routes: route_table.routes,
        consumers: consumer_table.consumers,
        subscriptions: subscription_list,
        proxy_replicas,
    };
    let snapshot = Snapshot::assembled(version, content, assembled);

    for d in &providers.duplicates {
        verdicts.push(duplicate(
            Kind::ModelProvider,
            d,
            Detail::Provider(ProviderDetail {
                endpoint: None,
                models: Vec::new(),
                credentials: 0,
            }),
        ));
    }
    for d in &routes.duplicates {
        let endpoint = format!("{}/v1", d.obj.spec.prefix.trim_end_matches('/'));
        verdicts.push(duplicate(
            Kind::AIRoute,
            d,
            Detail::Route(RouteDetail {
                endpoint,
                served_models: Vec::new(),
                approved_subscriptions: 0,
            }),
        ));
    }
    for d in &consumers.duplicates {
        verdicts.push(duplicate(
            Kind::Consumer,
            d,
            Detail::Consumer(ConsumerDetail { active_keys: 0 }),
        ));
    }
    for d in &subscriptions.duplicates {
        let spec = &d.obj.spec;
        let route_ns = spec.route.namespace.as_deref().unwrap_or(d.id.namespace);
        verdicts.push(duplicate(
            Kind::ApiSubscription,
            d,
            Detail::Subscription(SubscriptionDetail {
                phase: Phase::Invalid,
                effective_limits: None,
                effective_budget: None,
                route: Arc::from(format!("{route_ns}/{}", spec.route.name)),
            }),
        ));
    }
    for d in &server_objects.duplicates {
        verdicts.push(duplicate(
            Kind::MCPServer,
            d,
            Detail::McpServer(crate::verdict::McpServerDetail { url: String::new() }),
        ));
    }
    // Guardrails are the last kind in verdict order.
    verdicts.append(&mut guardrail_verdicts);
    for d in &guardrail_objects.duplicates {
        verdicts.push(duplicate(
            Kind::AIGuardrail,
            d,
            Detail::Guardrail(GuardrailDetail { rules: 0 }),
        ));
    }
    let duplicates = server_objects.duplicates.len()
        + providers.duplicates.len()
        + routes.duplicates.len()
        + consumers.duplicates.len()
        + subscriptions.duplicates.len()
        + guardrail_objects.duplicates.len();
    if duplicates > 0 {
        // Everything else arrived in kind and name order; stable, so a kept object's verdict
        // stays ahead of its duplicates'.
        verdicts.sort_by(|a, b| a.kind.cmp(&b.kind).then_with(|| a.id.cmp(&b.id)));
    }
    Compiled { snapshot, verdicts }
}

fn duplicate<T>(kind: Kind, item: &objects::Item<'_, T>, detail: Detail) -> Verdict {
    let message = format!(
        "Another {} named {} was given too and is the one used; remove one of the two.",
        kind.as_str(),
        item.id
    );
    Verdict {
        kind,
        id: item.reference.clone(),
        generation: item.generation,
        conditions: vec![
            VerdictCondition::new(condition_type::ACCEPTED, false, "Duplicate", message),
            VerdictCondition::new(
                condition_type::READY,
                false,
                "Duplicate",
                "This copy is ignored: fix the problem reported in Accepted.",
            ),
        ],
        detail,
    }
}
