//! Prompt APIs: a chat template on one of a route's models, published as `POST <prefix>/prompts/<name>`.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A prompt template published as a REST operation. Callers send values for its variables; the
/// gateway renders the template into a chat call on `model`, so the model's backends, fallbacks,
/// limits and prices apply unchanged.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromptApi {
    /// The operation's name: `POST <prefix>/prompts/<name>`. Unique in the route.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// What it does, shown in the route's OpenAPI document and the catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub description: Option<String>,
    /// Free text (e.g. `2026-11-01` or `v3`), shown in the document and written to the access log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub version: Option<String>,
    /// One of the route's model names (`spec.models[].name`).
    #[schemars(
        length(min = 1, max = 200),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
    )]
    pub model: String,
    /// The template: chat messages whose content may hold `{{variable}}` placeholders (and nothing
    /// else: no logic, no includes).
    #[schemars(length(min = 1, max = 64))]
    pub messages: Vec<PromptMessage>,
    /// The values callers send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub variables: Vec<PromptVariable>,
    /// Sampling parameters sent with every call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<PromptParameters>,
    /// What the answer's `output` holds. Default: text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<PromptOutput>,
    /// Whether callers may append chat turns of their own after the template. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_messages: bool,
}

/// One message of a template.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct PromptMessage {
    /// Who speaks.
    pub role: PromptRole,
    /// The text, with `{{name}}` where a variable's value goes.
    #[schemars(length(min = 1, max = 65536))]
    pub content: String,
}

/// Roles a template message may have.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PromptRole {
    /// Instructions.
    System,
    /// Instructions (OpenAI's newer name; sent as system to providers without it).
    Developer,
    /// The user's turn.
    User,
    /// A model turn, e.g. an example answer.
    Assistant,
}

impl PromptRole {
    /// The role as OpenAI's chat API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Developer => "developer",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// A value callers send.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(
    validation = Rule::new("self.type != 'enum' || (has(self.values) && size(self.values) > 0)")
        .message("a variable of type enum lists its values"),
    validation = Rule::new("self.type == 'enum' || !has(self.values)")
        .message("values are only for variables of type enum"),
    validation = Rule::new("self.type == 'string' || !has(self.maxLength)")
        .message("maxLength is only for variables of type string"),
    validation = Rule::new("!has(self.default) || self.type != 'boolean' || self.default in ['true', 'false']")
        .message("the default of a boolean variable is true or false"),
    validation = Rule::new("!has(self.default) || self.type != 'enum' || (has(self.values) && self.default in self.values)")
        .message("the default of an enum variable is one of its values"),
    validation = Rule::new("!has(self.default) || !has(self.maxLength) || size(self.default) <= self.maxLength")
        .message("the default is longer than maxLength"),
)]
#[serde(rename_all = "camelCase")]
pub struct PromptVariable {
    /// The name placeholders use: `{{name}}`.
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub name: String,
    /// What callers should put in it, shown in the OpenAPI document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// The value's JSON type.
    #[serde(rename = "type", default)]
    pub kind: VariableType,
    /// The allowed values of an `enum` variable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 128)))]
    pub values: Vec<String>,
    /// Whether callers must send it. Default true; a variable with a default is never missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// The value used when the caller sends none, written as text (`"3"`, `"true"`, `"fr"`). That an
    /// integer or number default is one is checked by the controller (reported in `PromptsValid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub default: Option<String>,
    /// Most characters a string value may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_048_576))]
    pub max_length: Option<u32>,
}

/// The JSON type of a variable's value.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VariableType {
    /// Any text.
    #[default]
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// One of `values`.
    Enum,
}

impl VariableType {
    /// The name as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Enum => "enum",
        }
    }
}

/// Sampling parameters of a prompt API.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromptParameters {
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub top_p: Option<f64>,
    /// Most tokens in the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_tokens: Option<u32>,
    /// Sequences that end the answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub stop: Vec<String>,
}

/// What a prompt API answers with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("self.type == 'JSONSchema' || !has(self.schema)")
        .message("schema is only for output type JSONSchema"),
    validation = Rule::new("self.type != 'JSONSchema' || has(self.schema)")
        .message("output type JSONSchema needs a schema"),
)]
pub struct PromptOutput {
    /// `Text` (the default), `JSON` (any JSON value), or `JSONSchema` (JSON matching `schema`).
    #[serde(rename = "type", default)]
    pub kind: OutputType,
    /// The JSON Schema the answer must match (type `JSONSchema` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json_object")]
    pub schema: Option<serde_json::Value>,
}

/// The kinds of prompt output.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum OutputType {
    /// The model's text.
    #[default]
    Text,
    /// A JSON value, parsed.
    #[serde(rename = "JSON")]
    Json,
    /// A JSON value matching the schema, parsed.
    #[serde(rename = "JSONSchema")]
    JsonSchema,
}

fn any_json_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
