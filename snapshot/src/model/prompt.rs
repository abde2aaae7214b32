//! A prompt API row: a template parsed into text and placeholders, its variables and its output.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use tollgate_crds::{PromptRole, VariableType};

/// A prompt template published as `POST <prefix>/prompts/<name>`, checked and parsed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Prompt {
    /// The operation's name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// Free-text version, for docs and logs.
    pub version: Option<String>,
    /// The route model it calls (one the route serves).
    pub model: Arc<str>,
    /// The template's messages.
    pub messages: Vec<TemplateMessage>,
    /// Its variables, in the order the spec lists them.
    pub variables: Vec<Variable>,
    /// Sampling parameters.
    pub parameters: Parameters,
    /// What the answer's `output` holds.
    pub output: Output,
    /// Whether callers may append their own chat turns.
    pub allow_messages: bool,
}

/// One message of a template.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TemplateMessage {
    /// Who speaks.
    pub role: PromptRole,
    /// Its content: text and placeholders in order.
    pub parts: Vec<Segment>,
}

/// A piece of a template message.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Literal text.
    Text(String),
    /// A placeholder: the index of its variable in [`Prompt::variables`].
    Var(u16),
}

/// A value callers send.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Variable {
    /// Its name.
    pub name: String,
    /// What to put in it.
    pub description: Option<String>,
    /// Its type.
    pub kind: VariableType,
    /// Allowed values (enum only).
    pub values: Vec<String>,
    /// Whether callers must send it (false when it has a default).
    pub required: bool,
    /// The value used when none is sent, already of the variable's type.
    pub default: Option<serde_json::Value>,
    /// Most characters of a string value.
    pub max_length: Option<u32>,
}

/// Sampling parameters sent with every call of a prompt.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Parameters {
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Most tokens in the answer.
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
}

/// What a prompt answers with.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub enum Output {
    /// The model's text.
    #[default]
    Text,
    /// Any JSON value, parsed.
    Json,
    /// A JSON value matching this schema, parsed.
    JsonSchema(serde_json::Value),
}

impl Output {
    /// Whether the answer is JSON (and `output` holds it parsed).
    pub fn is_json(&self) -> bool {
        !matches!(self, Self::Text)
    }
}
