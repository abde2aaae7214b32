//! The answer's GenAI attributes as the trace keeps them: its `id`, `model` and the `finish_reason`
//! of each choice, noted by the relay from what `llm` read of the answer (`llm::openai::answer_head`).
//! Only for sampled calls; nothing else of the body (no content) is kept.

use super::span::GenAiResponse;

/// Most finish reasons kept (one per choice, across a stream's chunks).
const MAX_REASONS: usize = 16;

impl GenAiResponse {
    /// Notes what one answer body or stream chunk said: the first id and model seen are kept, and
    /// every finish reason up to [`MAX_REASONS`].
    pub fn note<'a>(
        &mut self,
        id: Option<&str>,
        model: Option<&str>,
        finish_reasons: impl IntoIterator<Item = &'a str>,
    ) {
        if self.id.is_none() {
            self.id = id.map(str::to_owned);
        }
        if self.model.is_none() {
            self.model = model.map(str::to_owned);
        }
        for reason in finish_reasons {
            if self.finish_reasons.len() == MAX_REASONS {
                break;
            }
            self.finish_reasons.push(reason.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_id_and_model_stay_and_reasons_gather_up_to_the_cap() {
        let mut r = GenAiResponse::default();
        r.note(Some("c-1"), None, ["stop"]);
        r.note(Some("c-2"), Some("m-1"), std::iter::repeat_n("length", 40));
        assert_eq!(r.id.as_deref(), Some("c-1"));
        assert_eq!(r.model.as_deref(), Some("m-1"));
        assert_eq!(r.finish_reasons.len(), MAX_REASONS);
        assert_eq!(r.finish_reasons[..2], ["stop", "length"]);
    }
}
