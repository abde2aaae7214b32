//! The shipped model price list: list prices, context windows and modalities of current models,
//! used as default prices when a `ModelProvider` does not set its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::Deserialize;
use tollgate_crds::ProviderType;

use crate::model::Price;

/// The price list file, embedded at build time.
pub const PRICE_LIST_JSON: &str = include_str!("../prices/models.json");

/// Which kinds of content a model takes and gives.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Modality {
    /// Accepted input, e.g. `["text", "image"]`.
    #[serde(rename = "in")]
    pub input: Vec<String>,
    /// Produced output, e.g. `["text"]` or `["embedding"]`.
    #[serde(rename = "out")]
    pub output: Vec<String>,
}

/// One model at one provider, with its list price.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListedModel {
    /// Price family: `openai`, `azure-openai`, `anthropic`, `gemini`, `bedrock`, `mistral`, `groq`,
    /// `deepseek`, `cohere` or `xai`.
    pub provider: String,
    /// Model name as the provider's API takes it.
    pub name: String,
    /// Other names the provider accepts for the same model (dated snapshots, `-latest` aliases).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// USD per million input tokens.
    pub input: f64,
    /// USD per million output tokens.
    pub output: f64,
    /// USD per million cached input tokens, where the provider publishes one.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// USD per million input tokens written to the prompt cache, where the provider charges them apart
    /// (Anthropic: the five-minute cache write).
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// Context window in tokens.
    pub context: u64,
    /// Input and output modalities.
    pub modality: Modality,
}

impl ListedModel {
    /// The list price as a snapshot [`Price`].
    pub fn price(&self) -> Price {
        Price {
            input_per_million: self.input,
            output_per_million: self.output,
            cached_input_per_million: self.cached_input,
            cache_write_per_million: self.cache_write,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PriceListFile {
    about: String,
    retrieved: String,
    sources: BTreeMap<String, String>,
    #[serde(default)]
    notes: BTreeMap<String, String>,
    models: Vec<ListedModel>,
}

/// The parsed price list with a lookup by (family, model name).
#[derive(Debug)]
pub struct PriceList {
    /// What the figures are and are not.
    pub about: String,
    /// When the figures were taken, e.g. `2026-11`.
    pub retrieved: String,
    /// Where each family's figures were taken from.
    pub sources: BTreeMap<String, String>,
    /// Caveats per family (promotional rates, surcharges the price list does not model).
    pub notes: BTreeMap<String, String>,
    /// Every model, in file order.
    pub models: Vec<ListedModel>,
    by_family: HashMap<String, HashMap<String, usize>>,
}

/// Why the price list file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PriceListError {
    /// Not JSON of the expected shape.
    #[error("model price list is not valid: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A figure or name that cannot be right.
    #[error("model price list is inconsistent: {0}")]
    Inconsistent(String),
}

impl PriceList {
    /// Parses and checks a price list document.
    pub fn parse(json: &str) -> Result<Self, PriceListError> {
        let file: PriceListFile = serde_json::from_str(json)?;
        let mut by_family: HashMap<String, HashMap<String, usize>> = HashMap::new();
        for (i, model) in file.models.iter().enumerate() {
            let prices = [
                Some(model.input),
                Some(model.output),
                model.cached_input,
                model.cache_write,
            ];
            if prices.iter().flatten().any(|p| !p.is_finite() || *p < 0.0) {
                return Err(PriceListError::Inconsistent(format!(
                    "{}/{} has a negative or non-finite price",
                    model.provider, model.name
                )));
            }
            if !file.sources.contains_key(&model.provider) {
                return Err(PriceListError::Inconsistent(format!(
                    "{}/{} belongs to a family with no source",
                    model.provider, model.name
                )));
            }
            let names = by_family.entry(model.provider.clone()).or_default();
            for name in std::iter::once(&model.name).chain(&model.aliases) {
                if names.insert(name.clone(), i).is_some() {
                    return Err(PriceListError::Inconsistent(format!(
                        "{}/{name} is listed twice",
                        model.provider
                    )));
                }
            }
        }
        Ok(Self {
            about: file.about,
            retrieved: file.retrieved,
            sources: file.sources,
            notes: file.notes,
            models: file.models,
            by_family,
        })
    }

    /// The listed entry for a model at a provider of a given type, if the price list has it.
    pub fn lookup(&self, provider_type: ProviderType, model: &str) -> Option<&ListedModel> {
        let family = price_family(provider_type)?;
        let names = self.by_family.get(family)?;
        let found = names.get(model).or_else(|| {
            // Bedrock cross-region inference profiles put a geography before the model id.
            (provider_type == ProviderType::Bedrock)
                .then(|| strip_bedrock_geo(model))
                .flatten()
                .and_then(|m| names.get(m))
        })?;
        Some(&self.models[*found])
    }
}

/// The shipped price list, parsed on first use.
pub fn price_list() -> &'static PriceList {
    static PRICE_LIST: OnceLock<PriceList> = OnceLock::new();
    PRICE_LIST
        .get_or_init(|| PriceList::parse(PRICE_LIST_JSON).expect("the shipped price list is valid"))
}

/// The price family whose prices apply to a provider type; `None` for resellers, self-hosted and Fake.
pub fn price_family(provider_type: ProviderType) -> Option<&'static str> {
    Some(match provider_type {
        ProviderType::OpenAI => "openai",
        ProviderType::AzureOpenAI => "azure-openai",
        ProviderType::Anthropic => "anthropic",
        ProviderType::Gemini => "gemini",
        ProviderType::Bedrock => "bedrock",
        ProviderType::VertexAi => "vertex",
        ProviderType::Mistral => "mistral",
        ProviderType::Groq => "groq",
        ProviderType::DeepSeek => "deepseek",
        ProviderType::Cohere => "cohere",
        ProviderType::XAi => "xai",
        ProviderType::Together
        | ProviderType::Fireworks
        | ProviderType::OpenRouter
        | ProviderType::Ollama
        | ProviderType::Vllm
        | ProviderType::OpenAICompatible
        | ProviderType::Fake => return None,
    })
}

fn strip_bedrock_geo(model: &str) -> Option<&str> {
    let (geo, rest) = model.split_once('.')?;
    matches!(
        geo,
        "us" | "us-gov" | "eu" | "apac" | "jp" | "au" | "ca" | "global"
    )
    .then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_price_list_has_at_least_100_models_across_every_family() {
        let list = price_list();
        assert!(
            list.models.len() >= 100,
            "only {} models",
            list.models.len()
        );
        for family in [
            "openai",
            "azure-openai",
            "anthropic",
            "gemini",
            "bedrock",
            "mistral",
            "groq",
            "deepseek",
            "cohere",
            "xai",
            "vertex",
        ] {
            let n = list.models.iter().filter(|m| m.provider == family).count();
            assert!(n >= 2, "family {family} has only {n} models");
            assert!(list.sources.contains_key(family), "no source for {family}");
        }
        assert!(list.retrieved.starts_with("2026-11"));
    }

    #[test]
    fn every_listed_model_has_a_context_window_and_modalities() {
        for m in &price_list().models {
            assert!(m.context > 0, "{}/{}", m.provider, m.name);
            assert!(!m.modality.input.is_empty() && !m.modality.output.is_empty());
            if let Some(cached) = m.cached_input {
                assert!(
                    cached <= m.input,
                    "{}/{} caches dearer than input",
                    m.provider,
                    m.name
                );
            }
        }
    }

    #[test]
    fn bedrock_inference_profiles_find_the_base_model() {
        let list = price_list();
        let base = list
            .models
            .iter()
            .find(|m| m.provider == "bedrock")
            .expect("a bedrock model");
        let profiled = format!("us.{}", base.name);
        assert_eq!(
            list.lookup(ProviderType::Bedrock, &profiled),
            Some(base),
            "{profiled}"
        );
        assert_eq!(list.lookup(ProviderType::OpenAI, &profiled), None);
    }

    #[test]
    fn vertex_names_claude_with_an_at_date_and_prices_it_as_anthropic_does() {
        let list = price_list();
        let vertex = list
            .lookup(ProviderType::VertexAi, "claude-sonnet-4-5@20250929")
            .expect("listed");
        assert_eq!(vertex.name, "claude-sonnet-4-5");
        let anthropic = list
            .lookup(ProviderType::Anthropic, "claude-sonnet-4-5")
            .expect("listed");
        assert_eq!(vertex.price(), anthropic.price());
        let gemini = list
            .lookup(ProviderType::VertexAi, "gemini-2.5-flash")
            .expect("listed");
        assert_eq!(gemini.price().cached_input_per_million, Some(0.03));
        assert_eq!(
            list.lookup(ProviderType::VertexAi, "gemini-embedding-001"),
            None
        );
    }

    #[test]
    fn resellers_and_fake_have_no_listed_prices() {
        assert_eq!(price_list().lookup(ProviderType::Fake, "gpt-4o"), None);
        assert_eq!(
            price_list().lookup(ProviderType::OpenRouter, "gpt-4o"),
            None
        );
    }

    #[test]
    fn price_list_refuses_duplicates_and_negative_prices() {
        let dup = r#"{"about":"t","retrieved":"x","sources":{"a":"u"},"models":[
            {"provider":"a","name":"m","input":1,"output":1,"context":1,"modality":{"in":["text"],"out":["text"]}},
            {"provider":"a","name":"n","aliases":["m"],"input":1,"output":1,"context":1,"modality":{"in":["text"],"out":["text"]}}]}"#;
        assert!(matches!(
            PriceList::parse(dup),
            Err(PriceListError::Inconsistent(_))
        ));
        let neg = r#"{"about":"t","retrieved":"x","sources":{"a":"u"},"models":[
            {"provider":"a","name":"m","input":-1,"output":1,"context":1,"modality":{"in":["text"],"out":["text"]}}]}"#;
        assert!(matches!(
            PriceList::parse(neg),
            Err(PriceListError::Inconsistent(_))
        ));
    }
}
