//! The answer's GenAI attributes read from an OpenAI-format body (`chat.completion`) or stream
//! (`chat.completion.chunk` events): its `id`, `model` and the `finish_reason` of each choice. Read
//! only for sampled calls; nothing else of the body (no content) is kept.

use serde::Deserialize;

use super::span::GenAiResponse;

/// Most finish reasons kept (one per choice).
const MAX_REASONS: usize = 16;
/// Longest id or model name kept.
const MAX_NAME: usize = 256;

#[derive(Deserialize)]
struct Head {
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    finish_reason: Option<String>,
}

impl GenAiResponse {
    /// Reads a whole OpenAI-format answer; leaves `self` as it is when the body is not one.
    pub fn read_openai(&mut self, body: &[u8]) {
        let Ok(head) = serde_json::from_slice::<Head>(body) else {
            return;
        };
        self.id = head.id.filter(|s| s.len() <= MAX_NAME);
        self.model = head.model.filter(|s| s.len() <= MAX_NAME);
        self.finish_reasons = head
            .choices
            .into_iter()
            .filter_map(|c| c.finish_reason)
            .filter(|r| r.len() <= MAX_NAME)
            .take(MAX_REASONS)
            .collect();
    }
}

impl GenAiResponse {
    /// Reads the `data:` lines of the OpenAI stream events in one frame of a stream: the first id
    /// and model seen, and every finish reason. A line cut between two frames is not read (the id
    /// and model come again in the next chunk; a finish reason so cut is missed).
    pub fn read_openai_events(&mut self, frame: &[u8]) {
        for line in frame.split(|&b| b == b'\n') {
            let Some(payload) = line.strip_prefix(b"data:") else {
                continue;
            };
            let payload = payload.trim_ascii();
            if payload.first() != Some(&b'{') {
                continue;
            }
            let Ok(chunk) = serde_json::from_slice::<Head>(payload) else {
                continue;
            };
            if self.id.is_none() {
                self.id = chunk.id.filter(|s| s.len() <= MAX_NAME);
            }
            if self.model.is_none() {
                self.model = chunk.model.filter(|s| s.len() <= MAX_NAME);
            }
            for reason in chunk.choices.into_iter().filter_map(|c| c.finish_reason) {
                if self.finish_reasons.len() < MAX_REASONS && reason.len() <= MAX_NAME {
                    self.finish_reasons.push(reason);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_id_model_and_finish_reasons_but_no_content() {
        let mut r = GenAiResponse::default();
        r.read_openai(
            br#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-2024-08-06",
            "choices":[{"index":0,"message":{"role":"assistant","content":"secret"},"finish_reason":"stop"},
            {"index":1,"message":{"role":"assistant","content":"x"},"finish_reason":"length"}],
            "usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
        );
        assert_eq!(r.id.as_deref(), Some("chatcmpl-1"));
        assert_eq!(r.model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(r.finish_reasons, ["stop", "length"]);
    }

    #[test]
    fn a_body_that_is_not_an_answer_changes_nothing() {
        let mut r = GenAiResponse {
            id: Some("kept".into()),
            ..GenAiResponse::default()
        };
        r.read_openai(b"{\"choices\": 3}");
        r.read_openai(b"not json");
        assert_eq!(r.id.as_deref(), Some("kept"));
    }

    #[test]
    fn reads_stream_events_frame_by_frame() {
        let mut r = GenAiResponse::default();
        r.read_openai_events(
            b"data: {\"id\":\"c-1\",\"model\":\"m-1\",\"choices\":[{\"delta\":{\"content\":\"secret\"},\"finish_reason\":null}]}\n\n",
        );
        r.read_openai_events(
            b"data: {\"id\":\"c-1\",\"model\":\"m-1\",\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n",
        );
        assert_eq!(r.id.as_deref(), Some("c-1"));
        assert_eq!(r.model.as_deref(), Some("m-1"));
        assert_eq!(r.finish_reasons, ["length"]);
    }

    proptest! {
        #[test]
        fn any_bytes_are_read_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut r = GenAiResponse::default();
            r.read_openai(&bytes);
            r.read_openai_events(&bytes);
            prop_assert!(r.finish_reasons.len() <= MAX_REASONS);
        }
    }
}
