//! `ModelProvider` → [`Provider`]: endpoint and auth defaults per type, credentials, prices, timeouts.

use std::sync::Arc;

use tollgate_crds::{ModelProvider, ModelProviderSpec, ProviderType, condition_type};

use super::sharing::Sharing;

use super::conditions::unresolved_refs;
use super::objects::{Item, join_list, namespace_of, sentences};
use super::secrets::Secrets;
use crate::duration::parse_duration_ms;
use crate::fx::{FxHashMap, map_with_capacity};
use crate::model::{
    AuthScheme, Credential, FakeBehaviour, GOOGLE_TOKEN_ENDPOINT, Price, Provider, ProviderIdx,
    ProviderModel, Timeouts, VertexTarget,
};
use crate::prices::price_list;
use crate::verdict::{Detail, Kind, ProviderDetail, Verdict, VerdictCondition};

/// Endpoint given to `Fake` providers, which never touch the network.
pub const FAKE_ENDPOINT: &str = "fake://tollgate";

/// The base URL a provider type uses when `spec.endpoint` is absent; `region` is Bedrock's or
/// Vertex AI's. `None`: the user must give one.
pub fn default_endpoint(provider_type: ProviderType, region: Option<&str>) -> Option<String> {
    let fixed = match provider_type {
        ProviderType::OpenAI => "https://api.openai.com/v1",
        ProviderType::Anthropic => "https://api.anthropic.com",
        ProviderType::Gemini => "https://generativelanguage.googleapis.com",
        ProviderType::Mistral => "https://api.mistral.ai/v1",
        ProviderType::Groq => "https://api.groq.com/openai/v1",
        ProviderType::DeepSeek => "https://api.deepseek.com/v1",
        ProviderType::Together => "https://api.together.xyz/v1",
        ProviderType::Fireworks => "https://api.fireworks.ai/inference/v1",
        ProviderType::OpenRouter => "https://openrouter.ai/api/v1",
        ProviderType::XAi => "https://api.x.ai/v1",
        ProviderType::Cohere => "https://api.cohere.ai/compatibility/v1",
        ProviderType::Ollama => "http://127.0.0.1:11434/v1",
        ProviderType::Fake => FAKE_ENDPOINT,
        ProviderType::Bedrock => {
            return region.map(|r| format!("https://bedrock-runtime.{r}.amazonaws.com"));
        }
        ProviderType::VertexAi => {
            return region.map(|r| match r {
                "global" => "https://aiplatform.googleapis.com".to_string(),
                r => format!("https://{r}-aiplatform.googleapis.com"),
            });
        }
        ProviderType::AzureOpenAI | ProviderType::Vllm | ProviderType::OpenAICompatible => {
            return None;
        }
    };
    Some(fixed.to_string())
}

/// How a provider type expects its API key.
pub fn auth_scheme(provider_type: ProviderType) -> AuthScheme {
    let (header, prefix) = match provider_type {
        ProviderType::AzureOpenAI => ("api-key", ""),
        ProviderType::Anthropic => ("x-api-key", ""),
        ProviderType::Gemini => ("x-goog-api-key", ""),
        // Vertex AI sends an access token got for the service-account key, never the key itself.
        ProviderType::Fake | ProviderType::VertexAi => ("", ""),
        // Bedrock API keys are bearer tokens; everything else speaks OpenAI's convention.
        _ => ("authorization", "Bearer "),
    };
    AuthScheme {
        header: header.to_string(),
        prefix: prefix.to_string(),
    }
}

/// Provider types the proxy cannot translate requests for yet. They are compiled into the table all the
/// same (the proxy answers 501 for them) and their Ready condition says so. Empty since the proxy
/// translates Anthropic, Gemini, Azure OpenAI and Bedrock natively; a new type starts here.
pub const UNTRANSLATED: &[ProviderType] = &[];

/// Whether this Tollgate's proxy can translate requests for a provider type.
pub fn translation_available(provider_type: ProviderType) -> bool {
    !UNTRANSLATED.contains(&provider_type)
}

/// The Ready condition of a provider whose type the proxy cannot translate yet.
fn untranslated(provider_type: ProviderType, pricing_note: String) -> VerdictCondition {
    VerdictCondition::new(
        condition_type::READY,
        false,
        "TranslationNotImplemented",
        sentences(&[
            format!(
                "This provider is in the routing table, but this Tollgate release cannot translate requests to the {} API yet, so calls routed here answer 501 Not Implemented; until that lands, route to an OpenAI-compatible provider instead",
                provider_type.as_str()
            ),
            pricing_note,
        ]),
    )
}

/// Whether a provider type cannot work without an API key.
fn needs_credentials(provider_type: ProviderType) -> bool {
    !matches!(
        provider_type,
        ProviderType::Fake
            | ProviderType::Ollama
            | ProviderType::Vllm
            | ProviderType::OpenAICompatible
    )
}

/// What routes need to know about a provider object, usable or not.
pub(crate) struct ProviderState<'a> {
    /// Index in the table; `None` when routes cannot use the provider (its verdict says why).
    pub usable: Option<ProviderIdx>,
    sharing: Sharing<'a>,
    /// Model name → index in the provider's (sorted) model list, and the name as backends share it.
    pub models: FxHashMap<&'a str, (usize, Arc<str>)>,
}

impl ProviderState<'_> {
    /// Whether routes in `namespace` may use this provider.
    pub fn shared_with(&self, namespace: &str) -> bool {
        self.sharing.admits(namespace)
    }
}

/// Providers in the table, and every provider object by namespace/name.
pub(crate) struct ProviderTable<'a> {
    pub providers: Vec<Provider>,
    pub by_id: FxHashMap<(&'a str, &'a str), ProviderState<'a>>,
}

/// Compiles providers, which arrive sorted by namespace/name, so table indexes follow that order.
pub(crate) fn compile_providers<'a>(
    items: &[Item<'a, ModelProvider>],
    secrets: &Secrets<'_>,
    verdicts: &mut Vec<Verdict>,
) -> ProviderTable<'a> {
    let mut table = ProviderTable {
        providers: Vec::new(),
        by_id: map_with_capacity(items.len()),
    };
    for item in items {
        let meta = &item.obj.metadata;
        let namespace = namespace_of(meta);
        let name = meta.name.as_deref().unwrap_or_default();
        let spec = &item.obj.spec;
        let mut state = ProviderState {
            usable: None,
            sharing: Sharing::of(namespace, &spec.allowed_namespaces),
            models: FxHashMap::default(),
        };
        let (verdict, provider) = compile_one(item, secrets);
        if let Some(provider) = provider {
            state.models = spec
                .models
                .iter()
                .filter_map(|m| {
                    let i = provider
                        .models
                        .binary_search_by(|p| p.name.as_str().cmp(&m.name));
                    i.ok()
                        .map(|i| (m.name.as_str(), (i, Arc::from(m.name.as_str()))))
                })
                .collect();
            state.usable = Some(table.providers.len() as ProviderIdx);
            table.providers.push(provider);
        }
        verdicts.push(verdict);
        table.by_id.insert((namespace, name), state);
    }
    table
}

fn compile_one(
    item: &Item<'_, ModelProvider>,
    secrets: &Secrets<'_>,
) -> (Verdict, Option<Provider>) {
    let spec = &item.obj.spec;
    let provider_type = spec.provider_type;
    let mut invalid: Vec<String> = Vec::new();
    if item.id.name.is_empty() {
        invalid.push("set metadata.name".into());
    }
    let endpoint = resolve_endpoint(spec, &mut invalid);
    if spec.credentials.is_none() && needs_credentials(provider_type) {
        invalid.push(format!(
            "set spec.credentials to the Secret holding the {} API key",
            provider_type.as_str()
        ));
    }
    let vertex = resolve_vertex(spec, &mut invalid);
    let timeouts = resolve_timeouts(spec, &mut invalid);
    let fake = resolve_fake(spec, &mut invalid);
    let health = super::traffic::health_of(spec, &mut invalid);
    let (models, unpriced) = resolve_models(spec, &mut invalid);

    let mut verdict = Verdict {
        kind: Kind::ModelProvider,
        id: item.reference.clone(),
        generation: item.generation,
        conditions: Vec::with_capacity(3),
        detail: Detail::Provider(ProviderDetail {
            endpoint: endpoint.clone(),
            models: models.iter().map(|m| m.name.clone()).collect(),
            credentials: 0,
        }),
    };
    if !invalid.is_empty() {
        let message = format!(
            "This provider is not used until its spec is fixed: {}.",
            invalid.join("; ")
        );
        verdict.conditions.push(VerdictCondition::new(
            condition_type::ACCEPTED,
            false,
            "InvalidSpec",
            message,
        ));
        verdict.conditions.push(VerdictCondition::new(
            condition_type::READY,
            false,
            "InvalidSpec",
            "Routes cannot use this provider: fix the problem reported in Accepted.",
        ));
        return (verdict, None);
    }
    let endpoint = endpoint.expect("a valid spec has an endpoint");
    verdict.conditions.push(VerdictCondition::new(
        condition_type::ACCEPTED,
        true,
        "Accepted",
        format!(
            "The {} provider is valid and sends requests to {endpoint}.",
            provider_type.as_str()
        ),
    ));

    let namespace = item.id.namespace;
    let mut credentials = Vec::new();
    let mut problems: Vec<(&'static str, String)> = Vec::new();
    let refs = spec.credentials.iter().flat_map(|c| &c.secret_refs);
    for r in refs.clone() {
        match secrets.value(namespace, &r.name, &r.key) {
            Ok(bytes) if provider_type == ProviderType::VertexAi => {
                match service_account_problem(bytes) {
                    None => credentials.push(Credential(
                        String::from_utf8(bytes.to_vec()).expect("checked to be UTF-8"),
                    )),
                    Some(why) => problems.push((
                        "InvalidCredential",
                        format!(
                            "key {:?} of Secret {namespace}/{} is not a service-account JSON key: {why}",
                            r.key, r.name
                        ),
                    )),
                }
            }
            Ok(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) if text.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)) => {
                    credentials.push(Credential(text.to_string()));
                }
                _ => problems.push((
                    "InvalidCredential",
                    format!(
                        "key {:?} of Secret {namespace}/{} holds characters an HTTP header cannot carry",
                        r.key, r.name
                    ),
                )),
            },
            Err(p) => problems.push((p.reason(), p.describe(namespace, &r.name, &r.key))),
        }
    }
    let referenced = refs.count();
    if let Detail::Provider(d) = &mut verdict.detail {
        d.credentials = credentials.len() as u32;
    }
    verdict.conditions.push(match problems.first() {
        None => VerdictCondition::new(
            condition_type::RESOLVED_REFS,
            true,
            "ResolvedRefs",
            if referenced == 0 {
                "This provider refers to no Secret; requests go upstream without an API key.".into()
            } else {
                format!("All {referenced} API keys were read from their Secrets.")
            },
        ),
        Some((reason, _)) => {
            let clauses: Vec<&str> = problems.iter().map(|(_, c)| c.as_str()).collect();
            unresolved_refs(
                reason,
                &clauses,
                &[
                    "Create the Secret key or correct spec.credentials.secretRefs",
                    &format!("{} of {referenced} API keys are in use", credentials.len()),
                ],
            )
        }
    });

    let pricing_note = if unpriced.is_empty() || provider_type == ProviderType::Fake {
        String::new()
    } else {
        format!(
            "Cost will read 0 for {} until you set spec.models[].pricing: Tollgate's model catalog has no price for {}",
            join_list(&unpriced),
            if unpriced.len() == 1 { "it" } else { "them" }
        )
    };
    if referenced > 0 && credentials.is_empty() {
        verdict.conditions.push(VerdictCondition::new(
            condition_type::READY,
            false,
            "NoUsableCredentials",
            sentences(&[
                "No API key could be read, so routes cannot send traffic here: fix the Secrets named in ResolvedRefs".into(),
                pricing_note,
            ]),
        ));
        return (verdict, None);
    }
    let ready = if translation_available(provider_type) {
        VerdictCondition::new(
            condition_type::READY,
            true,
            "Ready",
            sentences(&[
                format!(
                    "Serving {} model{} with {} API key{}",
                    models.len(),
                    plural(models.len()),
                    credentials.len(),
                    plural(credentials.len())
                ),
                pricing_note,
            ]),
        )
    } else {
        untranslated(provider_type, pricing_note)
    };
    verdict.conditions.push(ready);
    let provider = Provider {
        id: item.reference.clone(),
        provider_type,
        endpoint,
        auth: auth_scheme(provider_type),
        credentials,
        models,
        timeouts,
        azure_api_version: spec.azure.as_ref().map(|a| a.api_version.clone()),
        bedrock_region: spec.bedrock.as_ref().map(|b| b.region.clone()),
        vertex,
        fake,
        health,
    };
    (verdict, Some(provider))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn resolve_endpoint(spec: &ModelProviderSpec, invalid: &mut Vec<String>) -> Option<String> {
    let provider_type = spec.provider_type;
    if provider_type == ProviderType::Bedrock && spec.bedrock.is_none() {
        invalid.push("set spec.bedrock.region: Bedrock endpoints are regional".into());
    }
    match &spec.endpoint {
        Some(given) => match normalize_endpoint(given) {
            Ok(e) => Some(e),
            Err(why) => {
                invalid.push(why);
                None
            }
        },
        None => {
            let region = match provider_type {
                ProviderType::VertexAi => spec.vertex.as_ref().map(|v| v.region.as_str()),
                _ => spec.bedrock.as_ref().map(|b| b.region.as_str()),
            };
            let default = default_endpoint(provider_type, region);
            if default.is_none()
                && !matches!(
                    provider_type,
                    ProviderType::Bedrock | ProviderType::VertexAi
                )
            {
                invalid.push(format!(
                    "set spec.endpoint: a {} provider has no default address",
                    provider_type.as_str()
                ));
            }
            default
        }
    }
}

/// Checks an `http(s)://host[/path]` URL and drops trailing slashes.
fn normalize_endpoint(given: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "set spec.endpoint to an http:// or https:// URL without query or fragment (got {given:?})"
        )
    };
    let rest = given
        .strip_prefix("https://")
        .or_else(|| given.strip_prefix("http://"))
        .ok_or_else(bad)?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || given.contains(['?', '#']) || given.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    Ok(given.trim_end_matches('/').to_string())
}

/// The Vertex AI target of a `VertexAI` provider (`None` for other types, and for a spec that
/// lacks it, which `invalid` then says).
fn resolve_vertex(spec: &ModelProviderSpec, invalid: &mut Vec<String>) -> Option<VertexTarget> {
    if spec.provider_type != ProviderType::VertexAi {
        if spec.vertex.is_some() {
            invalid.push("remove spec.vertex: it applies only to VertexAI providers".into());
        }
        return None;
    }
    let Some(given) = &spec.vertex else {
        invalid.push(
            "set spec.vertex.project and spec.vertex.region: Vertex AI endpoints are per project and region"
                .into(),
        );
        return None;
    };
    let token_endpoint = match &given.token_endpoint {
        None => GOOGLE_TOKEN_ENDPOINT.to_string(),
        Some(url) => match normalize_endpoint(url) {
            Ok(url) => url,
            Err(why) => {
                invalid.push(why.replace("spec.endpoint", "spec.vertex.tokenEndpoint"));
                return None;
            }
        },
    };
    Some(VertexTarget {
        project: given.project.clone(),
        region: given.region.clone(),
        token_endpoint,
    })
}

/// What is wrong with a Secret value meant as a service-account JSON key, in words that quote
/// nothing of it; `None` when it has the members a signed JWT needs.
fn service_account_problem(bytes: &[u8]) -> Option<&'static str> {
    #[derive(serde::Deserialize)]
    struct Key<'a> {
        #[serde(default, borrow, rename = "type")]
        kind: Option<std::borrow::Cow<'a, str>>,
        #[serde(default, borrow)]
        client_email: Option<std::borrow::Cow<'a, str>>,
        #[serde(default, borrow)]
        private_key: Option<std::borrow::Cow<'a, str>>,
    }
    let Ok(key) = serde_json::from_slice::<Key<'_>>(bytes) else {
        return Some("it is not a JSON object (download the key as JSON from the service account)");
    };
    if key.kind.as_deref().is_some_and(|k| k != "service_account") {
        return Some("its \"type\" is not \"service_account\"");
    }
    if key.client_email.as_deref().is_none_or(str::is_empty) {
        return Some("it has no \"client_email\"");
    }
    match key.private_key.as_deref() {
        Some(k) if k.contains("-----BEGIN PRIVATE KEY-----") => None,
        _ => Some("it has no PKCS#8 \"private_key\" (-----BEGIN PRIVATE KEY-----)"),
    }
}

fn resolve_timeouts(spec: &ModelProviderSpec, invalid: &mut Vec<String>) -> Timeouts {
    timeouts_from(spec.timeouts.as_ref(), "spec.timeouts", invalid)
}

/// Timeouts as given under `field` (defaults for those left out); each that does not parse is a
/// clause in `invalid`.
pub(crate) fn timeouts_from(
    given: Option<&tollgate_crds::Timeouts>,
    field: &str,
    invalid: &mut Vec<String>,
) -> Timeouts {
    let mut timeouts = Timeouts::default();
    let Some(given) = given else {
        return timeouts;
    };
    let fields = [
        ("connect", &given.connect, &mut timeouts.connect_ms),
        ("firstByte", &given.first_byte, &mut timeouts.first_byte_ms),
        ("idle", &given.idle, &mut timeouts.idle_ms),
        ("total", &given.total, &mut timeouts.total_ms),
    ];
    for (name, text, slot) in fields {
        if let Some(text) = text {
            match parse_duration_ms(text) {
                Ok(ms) => *slot = ms,
                Err(e) => invalid.push(format!("{field}.{name}: {e}")),
            }
        }
    }
    timeouts
}

fn resolve_fake(spec: &ModelProviderSpec, invalid: &mut Vec<String>) -> Option<FakeBehaviour> {
    if spec.provider_type != ProviderType::Fake {
        if spec.fake.is_some() {
            invalid.push("remove spec.fake: it applies only to providers of type Fake".into());
        }
        return None;
    }
    let mut fake = FakeBehaviour::default();
    let Some(given) = &spec.fake else {
        return Some(fake);
    };
    for (field, text, slot) in [
        ("latency", &given.latency, &mut fake.latency_ms),
        (
            "chunkInterval",
            &given.chunk_interval,
            &mut fake.chunk_interval_ms,
        ),
    ] {
        if let Some(text) = text {
            match parse_duration_ms(text) {
                Ok(ms) => *slot = ms,
                Err(e) => invalid.push(format!("spec.fake.{field}: {e}")),
            }
        }
    }
    if let Some(n) = given.completion_tokens {
        fake.completion_tokens = n.max(1);
    }
    // One chunk per token unless told otherwise.
    fake.stream_chunks = given.stream_chunks.unwrap_or(fake.completion_tokens).max(1);
    if let Some(n) = given.embedding_dimensions {
        fake.embedding_dimensions = n.max(1);
    }
    Some(fake)
}

/// Models sorted by name with listed prices and overrides, and the names whose cost will read 0.
fn resolve_models(
    spec: &ModelProviderSpec,
    invalid: &mut Vec<String>,
) -> (Vec<ProviderModel>, Vec<String>) {
    if spec.models.is_empty() {
        invalid.push("list at least one model under spec.models".into());
    }
    let mut models = Vec::with_capacity(spec.models.len());
    let mut unpriced = Vec::new();
    for m in &spec.models {
        let listed = price_list().lookup(spec.provider_type, &m.name);
        let given = m.pricing.clone().unwrap_or_default();
        let overrides = [
            given.input_per_million,
            given.output_per_million,
            given.cached_input_per_million,
        ];
        if overrides
            .iter()
            .flatten()
            .any(|p| !p.is_finite() || *p < 0.0)
        {
            invalid.push(format!(
                "give model {} prices of zero or more in spec.models[].pricing",
                m.name
            ));
        }
        let base = listed.map(|c| c.price());
        if base.is_none()
            && (given.input_per_million.is_none() || given.output_per_million.is_none())
        {
            unpriced.push(m.name.clone());
        }
        let base = base.unwrap_or_default();
        let price = Price {
            input_per_million: given.input_per_million.unwrap_or(base.input_per_million),
            output_per_million: given.output_per_million.unwrap_or(base.output_per_million),
            cached_input_per_million: given
                .cached_input_per_million
                .or(base.cached_input_per_million),
            cache_write_per_million: base.cache_write_per_million,
        };
        models.push(ProviderModel {
            name: m.name.clone(),
            deployment: m.deployment.clone(),
            price,
        });
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    let mut dups: Vec<String> = models
        .windows(2)
        .filter(|w| w[0].name == w[1].name)
        .map(|w| w[0].name.clone())
        .collect();
    dups.dedup();
    if !dups.is_empty() {
        invalid.push(format!(
            "list each model once in spec.models ({} appear{} twice)",
            join_list(&dups),
            if dups.len() == 1 { "s" } else { "" }
        ));
    }
    (models, unpriced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untranslated_types_say_calls_answer_501_and_what_to_do() {
        let c = untranslated(ProviderType::Bedrock, String::new());
        assert!(!c.status);
        assert_eq!(c.reason, "TranslationNotImplemented");
        assert!(
            c.message.contains("501") && c.message.contains("Bedrock"),
            "{}",
            c.message
        );
        assert!(c.message.contains("route to an OpenAI-compatible provider"));
    }

    #[test]
    fn every_provider_type_is_translated_now() {
        for ty in [
            ProviderType::OpenAI,
            ProviderType::AzureOpenAI,
            ProviderType::Anthropic,
            ProviderType::Gemini,
            ProviderType::Bedrock,
            ProviderType::Fake,
        ] {
            assert!(translation_available(ty), "{ty:?}");
        }
    }
}
