//! Google Vertex AI's two model families: Gemini through `generateContent` (Gemini's own request
//! and answer format) and Anthropic's Claude through `rawPredict` (Anthropic's Messages format,
//! with the model in the URL and `anthropic_version` in the body instead of a header).

use serde_json::Value;

/// The `anthropic_version` Vertex AI takes in the body of Claude requests.
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// Which publisher's API serves a model on Vertex AI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Google's Gemini models.
    Gemini,
    /// Anthropic's Claude models.
    Claude,
}

/// The family of a Vertex AI model name (`claude-sonnet-4-5@20250929` is Claude, the rest Gemini).
pub fn family(model: &str) -> Family {
    if model.starts_with("claude") {
        Family::Claude
    } else {
        Family::Gemini
    }
}

/// The URL of one call: `{endpoint}/v1/projects/{project}/locations/{region}/publishers/…/models/
/// {model}:{method}`, streamed as server-sent events when `stream`.
pub fn url(endpoint: &str, project: &str, region: &str, model: &str, stream: bool) -> String {
    let (publisher, method) = match (family(model), stream) {
        (Family::Gemini, false) => ("google", "generateContent"),
        (Family::Gemini, true) => ("google", "streamGenerateContent?alt=sse"),
        (Family::Claude, false) => ("anthropic", "rawPredict"),
        (Family::Claude, true) => ("anthropic", "streamRawPredict"),
    };
    format!(
        "{endpoint}/v1/projects/{project}/locations/{region}/publishers/{publisher}/models/{model}:{method}"
    )
}

/// An Anthropic Messages request made into Vertex AI's: without `model`, with `anthropic_version`.
pub fn claude_body(mut messages_request: Value) -> Value {
    if let Some(o) = messages_request.as_object_mut() {
        o.remove("model");
        o.insert("anthropic_version".into(), ANTHROPIC_VERSION.into());
    }
    messages_request
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_follow_the_family_and_the_stream() {
        let base = "https://us-east5-aiplatform.googleapis.com";
        assert_eq!(
            url(base, "acme-ai", "us-east5", "gemini-2.5-flash", false),
            "https://us-east5-aiplatform.googleapis.com/v1/projects/acme-ai/locations/us-east5/publishers/google/models/gemini-2.5-flash:generateContent"
        );
        assert!(
            url(base, "p", "r", "gemini-2.5-pro", true).ends_with(
                "/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
            )
        );
        assert!(
            url(base, "p", "r", "claude-sonnet-4-5@20250929", false)
                .ends_with("/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict")
        );
        assert!(
            url(base, "p", "r", "claude-haiku-4-5@20251001", true).ends_with(
                "/publishers/anthropic/models/claude-haiku-4-5@20251001:streamRawPredict"
            )
        );
    }

    #[test]
    fn claude_bodies_lose_the_model_and_gain_the_vertex_version() {
        assert_eq!(
            claude_body(json!({"model": "m", "max_tokens": 5, "messages": []})),
            json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 5, "messages": []})
        );
    }
}
