//! `AIGuardrail` → [`Guardrail`]: rules checked and their patterns built once, then copied into every
//! route and consumer that attaches the guardrail and may use it.
//!
//! A guardrail has no row of its own in the snapshot. What is wrong with it (a pattern that does not
//! compile) is reported twice: in its own `Accepted` condition, where its authors look, and in every
//! referrer's `GuardrailsValid` condition, where the team that attached it looks (with references to
//! guardrails that do not exist or are not shared with the referrer's namespace).

use std::sync::Arc;

use tollgate_crds::{
    AIGuardrail, GuardrailAction, GuardrailRef, ModerationHook, ProviderType, condition_type,
};

use super::objects::{Item, sentences};
use super::provider::ProviderTable;
use super::rest::{header_credential, normalize_url};
use super::secrets::Secrets;
use super::sharing::Sharing;
use crate::duration::parse_duration_ms;
use crate::fx::{FxHashMap, map_with_capacity};
use crate::model::{
    Credential, GuardRule, Guardrail, Matcher, ModerationApi, ModerationRule, ObjectRef, Pattern,
    RestCredential, default_mask,
};

/// How long a moderation hook waits when its rule says nothing.
pub const DEFAULT_MODERATION_TIMEOUT_MS: u64 = 2_000;
/// The longest a moderation hook may wait: every call it checks waits that long at worst.
pub const MAX_MODERATION_TIMEOUT_MS: u64 = 10_000;
/// The model asked of a provider's moderation API when the rule names none.
pub const DEFAULT_MODERATION_MODEL: &str = "omni-moderation-latest";
use crate::verdict::{Detail, GuardrailDetail, Kind, Verdict, VerdictCondition};

struct Entry<'a> {
    /// The compiled guardrail, or every problem found in it.
    compiled: Result<Arc<Guardrail>, Vec<String>>,
    sharing: Sharing<'a>,
}

/// Every guardrail object by namespace/name.
#[derive(Default)]
pub(crate) struct GuardrailTable<'a> {
    by_id: FxHashMap<(&'a str, &'a str), Entry<'a>>,
}

/// What a referrer's `spec.guardrails` resolved to.
pub(crate) struct Attached {
    /// The guardrails, in the referrer's order; those that cannot be used are [`Guardrail::broken`].
    pub guardrails: Vec<Guardrail>,
    /// One clause per reference that could not be used.
    pub problems: Vec<String>,
}

/// Compiles guardrails, which arrive sorted by namespace/name, with a verdict for each (in that order).
pub(crate) fn compile_guardrails<'a>(
    items: &[Item<'a, AIGuardrail>],
    providers: &ProviderTable<'_>,
    secrets: &Secrets<'_>,
    verdicts: &mut Vec<Verdict>,
) -> GuardrailTable<'a> {
    let mut by_id = map_with_capacity(items.len());
    for item in items {
        let spec = &item.obj.spec;
        let compiled = compile_one(item, providers, secrets).map(Arc::new);
        verdicts.push(verdict(item, &compiled));
        let entry = Entry {
            compiled,
            sharing: Sharing::of(item.id.namespace, &spec.allowed_namespaces),
        };
        by_id.insert((item.id.namespace, item.id.name), entry);
    }
    GuardrailTable { by_id }
}

fn compile_one(
    item: &Item<'_, AIGuardrail>,
    providers: &ProviderTable<'_>,
    secrets: &Secrets<'_>,
) -> Result<Guardrail, Vec<String>> {
    let spec = &item.obj.spec;
    let mut problems = Vec::new();
    let mut rules = Vec::with_capacity(spec.rules.len());
    let mut moderations = Vec::new();
    let mut seen: Vec<&str> = Vec::with_capacity(spec.rules.len());
    for rule in &spec.rules {
        if seen.contains(&rule.name.as_str()) {
            problems.push(format!("rule {} is named twice", rule.name));
            continue;
        }
        seen.push(&rule.name);
        if let Some(hook) = &rule.moderation {
            if rule.detector.is_some() || rule.pattern.is_some() {
                problems.push(format!(
                    "rule {} needs exactly one of detector, pattern and moderation",
                    rule.name
                ));
                continue;
            }
            match moderation(item, &rule.name, rule.action, hook, providers, secrets) {
                Ok(m) => moderations.push(m),
                Err(why) => problems.push(format!("rule {}: {why}", rule.name)),
            }
            continue;
        }
        let matcher = match (rule.detector, &rule.pattern) {
            (Some(detector), None) => Matcher::Detector(detector),
            (None, Some(source)) => match Pattern::new(source) {
                Ok(pattern) => Matcher::Pattern(pattern),
                Err(why) => {
                    // The regex crate's message spans lines (the pattern, a caret, the reason).
                    let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
                    problems.push(format!(
                        "rule {}: the pattern does not compile: {why}",
                        rule.name
                    ));
                    continue;
                }
            },
            _ => {
                problems.push(format!(
                    "rule {} needs exactly one of detector and pattern",
                    rule.name
                ));
                continue;
            }
        };
        let mask_as = rule
            .mask_as
            .as_deref()
            .unwrap_or(default_mask(rule.detector));
        rules.push(GuardRule {
            name: Arc::from(rule.name.as_str()),
            matcher,
            action: rule.action,
            mask_as: Arc::from(mask_as),
        });
    }
    if spec.rules.is_empty() && spec.max_input_chars.is_none() && spec.max_input_tokens.is_none() {
        problems.push("it has no rule, maxInputChars or maxInputTokens".to_string());
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut endpoints = spec.endpoints.clone();
    endpoints.sort_unstable();
    endpoints.dedup();
    Ok(Guardrail {
        id: item.reference.clone(),
        applies_to: spec.applies_to,
        endpoints,
        rules,
        moderations,
        max_input_chars: spec.max_input_chars,
        max_input_tokens: spec.max_input_tokens,
        broken: false,
    })
}

/// A moderation rule: its service resolved (the provider's URL and first key, or the webhook's URL
/// and Secret), its timeout bounded, or why it cannot be used (never quoting a credential).
fn moderation(
    item: &Item<'_, AIGuardrail>,
    name: &str,
    action: GuardrailAction,
    hook: &ModerationHook,
    providers: &ProviderTable<'_>,
    secrets: &Secrets<'_>,
) -> Result<ModerationRule, String> {
    let namespace = item.id.namespace;
    if action == GuardrailAction::Mask {
        return Err("a moderation rule rejects or monitors: it has nothing to mask".into());
    }
    let timeout_ms = match &hook.timeout {
        None => DEFAULT_MODERATION_TIMEOUT_MS,
        Some(text) => match parse_duration_ms(text) {
            Ok(ms) if (1..=MAX_MODERATION_TIMEOUT_MS).contains(&ms) => ms,
            Ok(_) => {
                return Err(format!(
                    "the moderation timeout {text:?} must be above 0 and at most 10s"
                ));
            }
            Err(e) => return Err(format!("the moderation timeout: {e}")),
        },
    };
    let (api, url, credential) = match (&hook.provider, &hook.webhook) {
        (Some(p), None) => {
            let ns = p.namespace.as_deref().unwrap_or(namespace);
            let pname = p.name.as_str();
            let Some(state) = providers.by_id.get(&(ns, pname)) else {
                return Err(format!("ModelProvider {ns}/{pname} does not exist"));
            };
            if !state.shared_with(namespace) {
                return Err(format!(
                    "ModelProvider {ns}/{pname} is not shared with namespace {namespace} (its owners can add {namespace} to its spec.allowedNamespaces)"
                ));
            }
            let Some(idx) = state.usable else {
                return Err(format!(
                    "ModelProvider {ns}/{pname} is not usable (its status says why)"
                ));
            };
            let provider = &providers.providers[idx as usize];
            if !matches!(
                provider.provider_type,
                ProviderType::OpenAI | ProviderType::OpenAICompatible
            ) {
                return Err(format!(
                    "ModelProvider {ns}/{pname} is of type {}, which has no OpenAI moderation API: use an OpenAI or OpenAICompatible provider, or a webhook",
                    provider.provider_type.as_str()
                ));
            }
            // The first key of the pool: moderation calls are few beside model calls.
            let credential = provider.credentials.first().map(|key| RestCredential {
                header: provider.auth.header.clone(),
                value: Credential(format!("{}{}", provider.auth.prefix, key.0)),
            });
            let api = ModerationApi::OpenAi {
                provider: ObjectRef::new(ns, pname),
                model: hook
                    .model
                    .clone()
                    .unwrap_or_else(|| DEFAULT_MODERATION_MODEL.to_string()),
            };
            (
                api,
                format!("{}/moderations", provider.endpoint),
                credential,
            )
        }
        (None, Some(w)) => {
            let url = webhook_url(&w.url)?;
            let credential = match &w.credentials {
                None => None,
                Some(c) => Some(
                    header_credential(c, "the webhook's credentials", namespace, secrets)
                        .map_err(|(_, why)| why)?,
                ),
            };
            (ModerationApi::Webhook, url, credential)
        }
        _ => return Err("a moderation hook needs exactly one of provider and webhook".into()),
    };
    if hook.threshold.is_some() && api == ModerationApi::Webhook {
        return Err(
            "threshold compares a provider's category scores; a webhook answers flagged or not"
                .into(),
        );
    }
    let threshold_millis = match hook.threshold {
        None => None,
        Some(t) if (0.0..=1.0).contains(&t) => Some((t * 1000.0).round() as u32),
        Some(_) => return Err("the moderation threshold must be between 0 and 1".into()),
    };
    Ok(ModerationRule {
        name: Arc::from(name),
        action,
        api,
        url,
        credential,
        categories: hook.categories.iter().map(|c| c.0.clone()).collect(),
        threshold_millis,
        timeout_ms,
        failure_mode: hook.failure_mode,
    })
}

/// A webhook's URL, as given: checked as REST and MCP URLs are (`http(s)://host[:port][/path]`, no
/// user info, query or fragment), and without characters no URI may hold, so the proxy can send to it.
fn webhook_url(given: &str) -> Result<String, String> {
    let uri_safe = !given.bytes().any(|b| {
        matches!(
            b,
            b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
        )
    });
    match normalize_url(given) {
        Ok(_) if uri_safe => Ok(given.to_string()),
        _ => Err(format!(
            "the webhook URL {given:?} is not an http:// or https:// URL with a host and no query, fragment or user info"
        )),
    }
}

/// The guardrail's own status: `Accepted`, with every problem when it is not.
fn verdict(
    item: &Item<'_, AIGuardrail>,
    compiled: &Result<Arc<Guardrail>, Vec<String>>,
) -> Verdict {
    let (accepted, rules) = match compiled {
        Ok(g) => {
            let n = g.rules.len() + g.moderations.len();
            let message = format!(
                "Compiled {n} rule{}; routes and consumers attach it by name in spec.guardrails.",
                if n == 1 { "" } else { "s" }
            );
            let condition =
                VerdictCondition::new(condition_type::ACCEPTED, true, "Accepted", message);
            (condition, u32::try_from(n).unwrap_or(u32::MAX))
        }
        Err(problems) => {
            let mut parts = vec![problems.join("; ")];
            parts.push(
                "Model calls of the routes and consumers that attach it are refused (503 guardrail_unavailable) until this is fixed"
                    .to_string(),
            );
            let condition = VerdictCondition::new(
                condition_type::ACCEPTED,
                false,
                "InvalidRule",
                sentences(&parts),
            );
            (condition, 0)
        }
    };
    Verdict {
        kind: Kind::AIGuardrail,
        id: item.reference.clone(),
        generation: item.generation,
        conditions: vec![accepted],
        detail: Detail::Guardrail(GuardrailDetail { rules }),
    }
}

impl GuardrailTable<'_> {
    /// Resolves the guardrails an object in `namespace` attaches.
    pub fn attach(&self, refs: &[GuardrailRef], namespace: &str) -> Attached {
        let mut attached = Attached {
            guardrails: Vec::with_capacity(refs.len()),
            problems: Vec::new(),
        };
        for r in refs {
            let ns = r.namespace.as_deref().unwrap_or(namespace);
            let problem = match self.by_id.get(&(ns, r.name.as_str())) {
                None => format!("guardrail {ns}/{} does not exist", r.name),
                Some(entry) if !entry.sharing.admits(namespace) => {
                    format!(
                        "guardrail {ns}/{} does not list namespace {namespace} in spec.allowedNamespaces",
                        r.name
                    )
                }
                Some(entry) => match &entry.compiled {
                    Ok(g) => {
                        attached.guardrails.push(Guardrail::clone(g));
                        continue;
                    }
                    Err(found) => {
                        format!("guardrail {ns}/{} is invalid: {}", r.name, found.join("; "))
                    }
                },
            };
            attached.problems.push(problem);
            attached
                .guardrails
                .push(Guardrail::broken(ObjectRef::new(ns, r.name.as_str())));
        }
        attached
    }
}

/// `GuardrailsValid` for a referrer that attaches guardrails.
pub(crate) fn guardrails_condition(attached: &Attached) -> VerdictCondition {
    let names: Vec<String> = attached
        .guardrails
        .iter()
        .map(|g| g.id.to_string())
        .collect();
    if attached.problems.is_empty() {
        VerdictCondition::new(
            condition_type::GUARDRAILS_VALID,
            true,
            "Valid",
            format!("Checking calls with guardrails {}.", names.join(", ")),
        )
    } else {
        let mut parts = vec![attached.problems.join("; ")];
        parts.push(
            "Model calls these guardrails would check are refused (503 guardrail_unavailable) until this is fixed"
                .to_string(),
        );
        VerdictCondition::new(
            condition_type::GUARDRAILS_VALID,
            false,
            "InvalidGuardrail",
            sentences(&parts),
        )
    }
}
