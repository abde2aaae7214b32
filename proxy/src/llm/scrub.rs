//! Error scrubbing: provider error messages pass through here before a caller sees them, so that no
//! piece of the gateway's credentials can leak through a provider that quotes them.

use std::sync::LazyLock;

use serde_json::Value;
use tollgate_snapshot::Provider;

use super::sse;

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

/// A provider's credentials, listed only when first asked for: a stream asks when an error event
/// comes, and most streams have none.
pub trait LazySecrets: Send {
    /// The credentials, listed on the first call.
    fn get(&mut self) -> &[String];
}

impl LazySecrets for Vec<String> {
    fn get(&mut self) -> &[String] {
        self
    }
}

/// Length of the first complete server-sent event (through its blank line), if there is one.
pub fn event_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[from..]) {
        let at = from + i;
        match buf.get(at + 1) {
            Some(b'\n') => return Some(at + 2),
            Some(b'\r') if buf.get(at + 2) == Some(&b'\n') => return Some(at + 3),
            _ => from = at + 1,
        }
    }
    None
}

/// Whether an event may be an error: a `"error"` key or value, or an `event: error` line. Content
/// cannot match by accident, since quotes inside a JSON string are escaped; only these events are
/// parsed, so the stream's other events cost one search.
pub fn is_error_event(event: &[u8]) -> bool {
    // Built once: building a searcher costs more than searching one event with it.
    static ERROR_KEY: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"\"error\""));
    ERROR_KEY.find(event).is_some()
        || sse::lines(event).any(|line| {
            line.starts_with(b"event:") && memchr::memmem::find(line, b"error").is_some()
        })
}

/// An error event with every string of its data scrubbed, its other lines kept; `None` when its data
/// is JSON without anything to scrub. Data that is not JSON is replaced by `unreadable`, the
/// caller's format's generic error.
pub fn scrub_error_event(event: &[u8], secrets: &[String], unreadable: &[u8]) -> Option<Vec<u8>> {
    let mut others = Vec::new();
    let mut data: Vec<u8> = Vec::new();
    let mut data_lines = 0;
    for line in sse::lines(event) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        match line.strip_prefix(b"data:") {
            Some(payload) => {
                if data_lines > 0 {
                    data.push(b'\n');
                }
                data.extend_from_slice(payload.strip_prefix(b" ").unwrap_or(payload));
                data_lines += 1;
            }
            None => {
                others.extend_from_slice(line);
                others.push(b'\n');
            }
        }
    }
    let payload = match serde_json::from_slice::<Value>(&data) {
        Ok(mut v) => {
            let before = v.clone();
            scrub_strings(&mut v, secrets);
            if v == before {
                return None;
            }
            serde_json::to_vec(&v).expect("JSON values serialise")
        }
        Err(_) if data_lines == 0 => return None,
        Err(_) => unreadable.to_vec(),
    };
    let mut out = others;
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&payload);
    out.extend_from_slice(b"\n\n");
    Some(out)
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
