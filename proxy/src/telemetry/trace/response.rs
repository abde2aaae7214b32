//! The answer's GenAI attributes as the trace keeps them: its `id`, `model` and the `finish_reason`
//! of each choice, noted by the relay from what `llm` read of the answer (`llm::openai::answer_head`).
//! Only for sampled calls; nothing else of the body (no content) is kept.

use std::borrow::Cow;
use std::sync::Arc;

use super::span::{CallTrace, GenAiResponse};

/// Most finish reasons kept (one per choice, across a stream's chunks).
const MAX_REASONS: usize = 16;

/// The finish reasons OpenAI's chat answers name, kept without a copy.
const KNOWN_REASONS: [&str; 5] = [
    "stop",
    "length",
    "tool_calls",
    "content_filter",
    "function_call",
];

impl GenAiResponse {
    /// Notes what one answer body or stream chunk said, each name as its bytes: the first id and
    /// model seen are kept, and every finish reason up to [`MAX_REASONS`]. A model named as `sent`
    /// (the model asked of the upstream) is kept as that one, and a usual finish reason as the
    /// constant; other names are kept if they are UTF-8.
    pub fn note(
        &mut self,
        id: Option<&[u8]>,
        model: Option<&[u8]>,
        sent: Option<&Arc<str>>,
        finish_reasons: impl IntoIterator<Item = impl AsRef<[u8]>>,
    ) {
        if self.id.is_none() {
            self.id = id
                .and_then(|id| std::str::from_utf8(id).ok())
                .map(str::to_owned);
        }
        if self.model.is_none() {
            self.model = model.and_then(|m| match sent {
                Some(sent) if sent.as_bytes() == m => Some(Arc::clone(sent)),
                _ => std::str::from_utf8(m).ok().map(Into::into),
            });
        }
        for reason in finish_reasons {
            if self.finish_reasons.len() == MAX_REASONS {
                break;
            }
            let reason = reason.as_ref();
            let kept = match KNOWN_REASONS
                .iter()
                .find(|known| known.as_bytes() == reason)
            {
                Some(&known) => Cow::Borrowed(known),
                None => match std::str::from_utf8(reason) {
                    Ok(reason) => Cow::Owned(reason.to_owned()),
                    Err(_) => continue,
                },
            };
            self.finish_reasons.push(kept);
        }
    }
}

impl CallTrace {
    /// [`GenAiResponse::note`] for the attempt under way.
    pub fn note_response(
        &mut self,
        id: Option<&[u8]>,
        model: Option<&[u8]>,
        finish_reasons: impl IntoIterator<Item = impl AsRef<[u8]>>,
    ) {
        let sent = self.attempts.last().map(|a| &a.model);
        self.response.note(id, model, sent, finish_reasons);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_id_and_model_stay_and_reasons_gather_up_to_the_cap() {
        let mut r = GenAiResponse::default();
        r.note(Some(b"c-1"), None, None, [&b"stop"[..]]);
        r.note(
            Some(b"c-2"),
            Some(b"m-1"),
            None,
            std::iter::repeat_n(&b"length"[..], 40),
        );
        assert_eq!(r.id.as_deref(), Some("c-1"));
        assert_eq!(r.model.as_deref(), Some("m-1"));
        assert_eq!(r.finish_reasons.len(), MAX_REASONS);
        assert_eq!(r.finish_reasons[..2], ["stop", "length"]);
        assert!(matches!(r.finish_reasons[0], Cow::Borrowed("stop")));
    }

    #[test]
    fn the_model_sent_is_shared_when_the_answer_names_it_and_other_reasons_are_copied() {
        let sent: Arc<str> = "gpt-4o".into();
        let mut r = GenAiResponse::default();
        r.note(
            None,
            Some(b"gpt-4o"),
            Some(&sent),
            [&b"end_of_text"[..], b"\xff"],
        );
        assert!(Arc::ptr_eq(r.model.as_ref().unwrap(), &sent));
        assert!(
            matches!(&r.finish_reasons[..], [Cow::Owned(s)] if s == "end_of_text"),
            "not UTF-8: left out"
        );
        let mut r = GenAiResponse::default();
        r.note(
            Some(b"\xff"),
            Some(b"gpt-4o-2024-08-06"),
            Some(&sent),
            [&[0u8; 0][..]; 0],
        );
        assert_eq!(r.model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(r.id, None, "not UTF-8");
        assert!(!Arc::ptr_eq(r.model.as_ref().unwrap(), &sent));
    }
}
