//! Error scrubbing: provider error messages pass through here before a caller sees them, so that no
//! piece of the gateway's credentials can leak through a provider that quotes them.

use serde_json::Value;
use tollgate_snapshot::Provider;

/// Every credential of the provider and its `:`-separated parts: none may appear in an error.
pub fn secrets_of(provider: &Provider) -> Vec<String> {
    let mut out = Vec::new();
    for c in &provider.credentials {
        out.push(c.0.clone());
        out.extend(c.0.split(':').filter(|p| p.len() >= 4).map(str::to_string));
    }
    out
}

/// Removes anything that looks like a piece of a secret: a word sharing eight or more consecutive
/// characters with one is replaced whole. Messages are also cut to 1,000 characters.
pub fn scrub(message: &str, secrets: &[String]) -> String {
    let mut text: String = message.chars().take(1_000).collect();
    let is_word = |c: char| !c.is_whitespace() && !matches!(c, '"' | '\'' | ',' | '`');
    for secret in secrets {
        let window = secret.len().min(8);
        if window < 4 || !secret.is_ascii() {
            continue;
        }
        for start in 0..=secret.len() - window {
            let needle = &secret[start..start + window];
            while let Some(at) = text.find(needle) {
                let begin = text[..at]
                    .char_indices()
                    .rev()
                    .find(|(_, c)| !is_word(*c))
                    .map_or(0, |(i, c)| i + c.len_utf8());
                let end = text[at..]
                    .char_indices()
                    .find(|(_, c)| !is_word(*c))
                    .map_or(text.len(), |(i, _)| at + i);
                text.replace_range(begin..end, "[redacted]");
            }
        }
    }
    text
}

/// Scrubs every string in a JSON value (an error body or event), keys aside, keeping its shape:
/// a provider may quote a credential in any field, not only `message`.
pub fn scrub_strings(value: &mut Value, secrets: &[String]) {
    match value {
        Value::String(text) => *text = scrub(text, secrets),
        Value::Array(items) => items.iter_mut().for_each(|v| scrub_strings(v, secrets)),
        Value::Object(fields) => fields.values_mut().for_each(|v| scrub_strings(v, secrets)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_words_holding_secret_fragments() {
        let secrets = vec!["sk-ant-api03-SECRETSECRET".to_string()];
        assert_eq!(
            scrub("invalid x-api-key: sk-ant-api03-SECR***", &secrets),
            "invalid x-api-key: [redacted]"
        );
        assert_eq!(
            scrub("key 'SECRETSECRET' bad", &secrets),
            "key '[redacted]' bad"
        );
        assert_eq!(scrub("nothing here", &secrets), "nothing here");
    }

    #[test]
    fn scrub_strings_reaches_every_field_and_keeps_the_shape() {
        let secrets = vec!["sk-upstream-secret-a".to_string()];
        let mut v = serde_json::json!({"error": {"message": "bad key sk-upstream-secr",
            "type": "invalid_request_error", "param": ["upstream-secret"], "code": 400}});
        scrub_strings(&mut v, &secrets);
        assert_eq!(
            v,
            serde_json::json!({"error": {"message": "bad key [redacted]",
                "type": "invalid_request_error", "param": ["[redacted]"], "code": 400}})
        );
    }
}
