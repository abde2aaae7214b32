//! A streamed answer in the caller's format, its text deltas passed through a [`StreamGuard`] per
//! choice (OpenAI) or content block (Anthropic) and per part (shown reasoning and the answer each have
//! a window of their own): deltas carry the released text, the text still held is sent just before
//! the choice finishes, the answer begins or the block stops, and a Reject rule ends the stream with
//! an error event in the caller's format. Signatures and redacted thinking are opaque and signed: they
//! pass untouched.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use smallvec::SmallVec;

use serde_json::{Value, json};

use super::check::{Decision, Policy};
use super::json_text;
use super::stream::StreamGuard;

/// The stream formats whose text can be checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFormat {
    /// OpenAI chat completion chunks (`data: {...}`, `data: [DONE]`).
    OpenAiChat,
    /// Anthropic Messages events (`event: …` / `data: {...}`).
    AnthropicMessages,
    /// A prompt API's events (`event: delta` / `data: {"text"}`, then `event: done`, whose
    /// `output` a JSON prompt's answer carries whole: its strings are checked there).
    Prompt,
    /// Responses API events: `response.output_text.delta`s through the window per output and
    /// content index, the `text` of every other event (the `….done` events and
    /// `response.completed` repeat the whole text) checked whole, and `sequence_number`s counted
    /// again since held text may need an event of its own.
    Responses,
}

/// The longest event held while its separator has not come (bytes): an upstream that never sends one
/// cannot make the proxy hold more. Generous, since a Responses stream's `response.completed` repeats
/// the whole answer.
pub const MAX_EVENT_BYTES: usize = 4 << 20;

/// One streamed answer being checked.
pub struct AnswerStream {
    format: StreamFormat,
    policy: Arc<Policy>,
    guards: Guards,
    buffer: Vec<u8>,
    /// The rule that ended the stream.
    rejected: Option<Arc<str>>,
    /// Whether the stream was ended because an event grew past [`MAX_EVENT_BYTES`].
    overlong: bool,
    /// Decisions of guards already finished.
    decisions: Vec<Decision>,
    /// The next `sequence_number` (Responses).
    sequence: u64,
    /// Whether OpenAI chunks are checked in their own bytes (tests turn it off to compare).
    in_place: bool,
    /// The members around `choices` of the last chat chunk, which a provider repeats in every one.
    chunk_ends: ChunkEnds,
    /// The texts a chat chunk's windows released, kept for the next chunk.
    released: String,
}

impl AnswerStream {
    /// Checks an answer in `format` with `policy`.
    pub fn new(format: StreamFormat, policy: Arc<Policy>) -> Self {
        Self {
            format,
            policy,
            guards: Guards::default(),
            buffer: Vec::new(),
            rejected: None,
            overlong: false,
            decisions: Vec::new(),
            sequence: 0,
            in_place: true,
            chunk_ends: ChunkEnds::default(),
            released: String::new(),
        }
    }

    /// The Reject rule that ended the stream, if one did.
    #[cfg(test)]
    pub fn rejected(&self) -> Option<&Arc<str>> {
        self.rejected.as_ref()
    }

    /// Why the stream was ended early, as the call record's error class: a Reject rule matched, or
    /// the upstream sent an event longer than [`MAX_EVENT_BYTES`].
    pub fn failure(&self) -> Option<&'static str> {
        if self.rejected.is_some() {
            Some("content_policy_violation")
        } else if self.overlong {
            Some(OVERLONG)
        } else {
            None
        }
    }

    /// Whether nothing more will be sent (the stream's error event has been).
    fn ended(&self) -> bool {
        self.rejected.is_some() || self.overlong
    }

    /// What the rules did, once per rule and action.
    pub fn decisions(&self) -> Vec<Decision> {
        let mut all = self.decisions.clone();
        for g in self.guards.values() {
            all.extend(g.decisions().cloned());
        }
        all.sort();
        all.dedup();
        all
    }

    /// Takes the next bytes of the stream; returns what to send now.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        // About what comes in goes out: one allocation instead of a few growths per event.
        let mut out = Vec::with_capacity(bytes.len() + 64);
        if self.ended() {
            return out;
        }
        // Every complete event read in place, and what is left kept once: a frame of many events
        // costs one pass, not one per event, and a frame of whole events is not copied.
        if self.buffer.is_empty() {
            let at = self.events(bytes, &mut out);
            if self.rejected.is_some() {
                return out;
            }
            self.buffer.extend_from_slice(&bytes[at..]);
        } else {
            self.buffer.extend_from_slice(bytes);
            let buffer = std::mem::take(&mut self.buffer);
            let at = self.events(&buffer, &mut out);
            if self.rejected.is_some() {
                return out;
            }
            self.buffer = buffer;
            self.buffer.drain(..at);
        }
        if self.buffer.len() > MAX_EVENT_BYTES {
            self.buffer = Vec::new();
            self.guards.clear();
            self.overlong = true;
            let message = format!(
                "The provider sent a stream event longer than {} MiB; the answer was stopped.",
                MAX_EVENT_BYTES >> 20
            );
            self.error_event("server_error", "api_error", OVERLONG, &message, &mut out);
        }
        out
    }

    /// Checks the complete events at the start of `buffer` until one is rejected; returns where the
    /// first incomplete one starts.
    fn events(&mut self, buffer: &[u8], out: &mut Vec<u8>) -> usize {
        let mut at = 0;
        // A read most often ends with an event: no search is set up for the nothing after it.
        while at < buffer.len()
            && let Some((end, sep, lines)) = event_end(&buffer[at..])
        {
            self.event(&buffer[at..at + end], lines, out);
            at += end + sep;
            if self.rejected.is_some() {
                break;
            }
        }
        at
    }

    /// The stream ended: a last event that lacks its separator, checked like the others, then what
    /// is still held.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.ended() {
            return out;
        }
        let last = std::mem::take(&mut self.buffer);
        if !last.trim_ascii().is_empty() {
            let last = last.trim_ascii_end();
            self.event(last, memchr::memchr(b'\n', last).is_some(), &mut out);
            if self.ended() {
                return out;
            }
        }
        let keys: Vec<(u64, Part)> = self.guards.keys().collect();
        for key in keys {
            self.flush(key, &mut out);
            if self.rejected.is_some() {
                return out;
            }
        }
        out
    }

    /// One event; `lines` says whether it holds a `\n` (more than one line).
    fn event(&mut self, event: &[u8], lines: bool, out: &mut Vec<u8>) {
        if self.format == StreamFormat::OpenAiChat
            && self.in_place
            && !lines
            && self.openai_in_place(event, out)
        {
            return;
        }
        let Ok(text) = std::str::from_utf8(event) else {
            out.extend_from_slice(event);
            out.extend_from_slice(b"\n\n");
            return;
        };
        let mut name = None;
        let mut data = String::new();
        for line in text.lines() {
            if let Some(n) = line.strip_prefix("event:") {
                name = Some(n.trim().to_string());
            } else if let Some(d) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
        }
        match self.format {
            StreamFormat::OpenAiChat => self.openai(text, &data, out),
            StreamFormat::AnthropicMessages => self.anthropic(text, name.as_deref(), &data, out),
            StreamFormat::Prompt => self.prompt(text, name.as_deref(), &data, out),
            StreamFormat::Responses => self.responses(text, name.as_deref(), &data, out),
        }
    }

    fn guard(&mut self, key: (u64, Part)) -> &mut StreamGuard {
        self.guards.get_or_insert(key, &self.policy)
    }

    fn reject(&mut self, rule: Arc<str>, out: &mut Vec<u8>) {
        let message = format!("The answer was stopped by the guardrail rule {rule}.");
        self.error_event(
            "invalid_request_error",
            "invalid_request_error",
            "content_policy_violation",
            &message,
            out,
        );
        for g in self.guards.values() {
            self.decisions.extend(g.decisions().cloned());
        }
        self.rejected = Some(rule);
    }

    /// The error event that ends the stream, in the caller's format: OpenAI's error `kind` and
    /// `code`, or Anthropic's error type.
    fn error_event(
        &mut self,
        kind: &str,
        anthropic: &str,
        code: &str,
        message: &str,
        out: &mut Vec<u8>,
    ) {
        let openai =
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
        match self.format {
            StreamFormat::OpenAiChat => write(out, None, &openai),
            StreamFormat::AnthropicMessages => write(
                out,
                Some("error"),
                &json!({"type": "error", "error": {"type": anthropic, "message": message}}),
            ),
            StreamFormat::Prompt => write(out, Some("error"), &openai),
            StreamFormat::Responses => {
                let data = json!({"type": "error", "code": code, "message": message, "param": null, "sequence_number": self.sequence});
                self.sequence += 1;
                write(out, Some("error"), &data);
            }
        }
    }

    /// Sends the text still held for `key` (a part of an OpenAI choice, an Anthropic block, …).
    fn flush(&mut self, key: (u64, Part), out: &mut Vec<u8>) {
        if self.rejected.is_some() {
            return;
        }
        let Some(mut guard) = self.guards.remove(&key) else {
            return;
        };
        let (index, part) = key;
        let rest = guard.finish();
        self.decisions.extend(guard.decisions().cloned());
        match rest {
            Err(rule) => self.reject(rule, out),
            Ok(rest) if rest.is_empty() => {}
            Ok(rest) => match self.format {
                StreamFormat::OpenAiChat => {
                    let mut delta = serde_json::Map::new();
                    delta.insert(part.chat_member().to_string(), rest.into());
                    write(
                        out,
                        None,
                        &json!({"object": "chat.completion.chunk", "choices": [{"index": index, "delta": delta, "finish_reason": null}]}),
                    )
                }
                StreamFormat::AnthropicMessages => {
                    let delta = if part == Part::Answer {
                        json!({"type": "text_delta", "text": rest})
                    } else {
                        json!({"type": "thinking_delta", "thinking": rest})
                    };
                    write(
                        out,
                        Some("content_block_delta"),
                        &json!({"type": "content_block_delta", "index": index, "delta": delta}),
                    )
                }
                StreamFormat::Prompt => write(out, Some("delta"), &json!({ "text": rest })),
                // Held text of a Responses stream is sent by `responses`, which knows the item.
                StreamFormat::Responses => {
                    let delta = responses_delta_kind(part == Part::Reasoning);
                    let (output, content) = (index >> 32, index & 0xffff_ffff);
                    let data = json!({"type": delta, "output_index": output,
                                      "content_index": content, "delta": rest, "logprobs": [],
                                      "sequence_number": self.sequence});
                    self.sequence += 1;
                    write(out, Some(delta), &data);
                }
            },
        }
    }

    /// An OpenAI chunk of one line checked in its own bytes: its deltas' texts found with a cursor
    /// and only the text the windows changed written back over its literals. `false` leaves the event
    /// to [`Self::openai`]: not a `data:` line, `[DONE]`, a choice that finishes while a part it
    /// has no member for may hold text, or whose answer begins while reasoning is held (held text may
    /// need a member the chunk lacks), a finishing chunk that names an index twice, or a chunk the
    /// cursor cannot read. A choice that finishes gets its parts' held text in their members.
    fn openai_in_place(&mut self, event: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(data) = event.strip_prefix(b"data:") else {
            return false;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        // The usual chunk: shaped as the last one, with one text that holds no escape and does not
        // finish. Read and written without gathering its choices; what the checks below ask of it
        // is asked here: it is one choice that does not finish, so only an answer that begins while
        // reasoning is held is left to `openai` (the chunk that set an answer's shape sent held
        // reasoning first, so this is asked for safety's sake).
        if let Some((index, k, false, (at, Cow::Borrowed(text)))) =
            self.chunk_ends.shaped_text(data)
            && let part = Part::ALL[k]
            && !(part == Part::Answer
                && (self.guards.contains(&(index, Part::Reasoning))
                    || self.guards.contains(&(index, Part::ReasoningContent))))
        {
            self.write_one_text((index, part), at, text, data, out);
            return true;
        }
        let mut choices = Choices::new();
        if chunk_choices(data, &mut self.chunk_ends, &mut choices).is_none() {
            return false;
        }
        if choices
            .iter()
            .any(|c| self.ends_reasoning(c) || self.finish_needs_value(c))
            || (choices.iter().any(|c| c.finished)
                && choices
                    .iter()
                    .enumerate()
                    .any(|(k, c)| choices[..k].iter().any(|d| d.index == c.index)))
        {
            return false;
        }
        if self.one_text_in_place(&choices, data, out) {
            return true;
        }
        // The released texts are written one after another into one buffer kept for the next chunk,
        // each edit naming its literal's place in the chunk and its text's place in the buffer.
        let mut released_texts = std::mem::take(&mut self.released);
        released_texts.clear();
        let mut edits: SmallVec<[(Range<usize>, Range<usize>); 2]> = SmallVec::new();
        let rejected = self.release_choices(&choices, &mut released_texts, &mut edits);
        if let Some(rule) = rejected {
            self.released = released_texts;
            self.reject(rule, out);
            return true;
        }
        out.extend_from_slice(b"data: ");
        // The members may come in any order in the chunk. Written straight into `out`: most chunks
        // have one edit, the text a window held back or released.
        edits.sort_by_key(|(at, _)| at.start);
        let mut from = 0;
        for (at, text) in &edits {
            out.extend_from_slice(&data[from..at.start]);
            json_text::write_literal(out, &released_texts[text.clone()]);
            from = at.end;
        }
        out.extend_from_slice(&data[from..]);
        out.extend_from_slice(b"\n\n");
        self.released = released_texts;
        true
    }

    /// The usual chat chunk, one choice with one text that holds no escape and does not finish: the
    /// chunk written with the literal replaced by what the window releases, written from the window
    /// (the literal of an unescaped text is the text's own JSON literal, so a text released whole is
    /// written back as it came). `false` leaves any other chunk alone.
    fn one_text_in_place(
        &mut self,
        choices: &[ChunkChoice<'_>],
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let [choice] = choices else {
            return false;
        };
        if choice.finished {
            return false;
        }
        let mut texts = Part::ALL
            .into_iter()
            .zip(&choice.texts)
            .filter_map(|(part, found)| Some((part, found.as_ref()?)));
        let (Some((part, (at, Cow::Borrowed(text)))), None) = (texts.next(), texts.next()) else {
            return false;
        };
        self.write_one_text((choice.index, part), at.clone(), text, data, out);
        true
    }

    /// The chunk `data` written with the literal at `at`, of the text `text` of window `key`,
    /// replaced by what the window releases; or the error event, if a Reject rule matched.
    fn write_one_text(
        &mut self,
        key: (u64, Part),
        at: Range<usize>,
        text: &str,
        data: &[u8],
        out: &mut Vec<u8>,
    ) {
        let mark = out.len();
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&data[..at.start]);
        let guard = self.guards.get_or_insert(key, &self.policy);
        if let Err(rule) = guard.push_literal(text, out) {
            out.truncate(mark);
            self.reject(rule, out);
            return;
        }
        out.extend_from_slice(&data[at.end..]);
        out.extend_from_slice(b"\n\n");
    }

    /// The texts of `choices` pushed through their windows: what each releases is written onto
    /// `texts`, and where it differs from the chunk's text, an edit (the literal's place in the
    /// chunk, the text's in `texts`) is added to `edits`. A choice that finishes gets its parts'
    /// held text too. `Some` is the Reject rule that matched.
    fn release_choices(
        &mut self,
        choices: &[ChunkChoice<'_>],
        texts: &mut String,
        edits: &mut SmallVec<[(Range<usize>, Range<usize>); 2]>,
    ) -> Option<Arc<str>> {
        for choice in choices {
            let mut released: [Option<(Range<usize>, Range<usize>)>; 3] = Default::default();
            for (i, (part, found)) in Part::ALL.into_iter().zip(&choice.texts).enumerate() {
                let Some((at, text)) = found else {
                    continue;
                };
                let start = texts.len();
                if let Err(rule) = self.guard((choice.index, part)).push_onto(text, texts) {
                    return Some(rule);
                }
                released[i] = Some((at.clone(), start..texts.len()));
            }
            if choice.finished {
                // What is still held goes out in this chunk, in the member it was held for: the
                // part's released text and its rest written again at the end (once a stream).
                for (i, part) in Part::ALL.into_iter().enumerate() {
                    let mut rest = String::new();
                    if let Err(rule) = self.close((choice.index, part), &mut rest) {
                        return Some(rule);
                    }
                    if let Some((_, r)) = &mut released[i]
                        && !rest.is_empty()
                    {
                        let whole = texts[r.clone()].to_string() + &rest;
                        *r = texts.len()..texts.len() + whole.len();
                        texts.push_str(&whole);
                    }
                }
            }
            for (found, released) in choice.texts.iter().zip(released) {
                if let (Some((_, text)), Some((at, r))) = (found, released)
                    && texts[r.clone()] != **text
                {
                    edits.push((at, r));
                }
            }
        }
        None
    }

    fn openai(&mut self, raw: &str, data: &str, out: &mut Vec<u8>) {
        if data.trim() == "[DONE]" {
            self.finish_all(out);
            if self.rejected.is_none() {
                out.extend_from_slice(raw.as_bytes());
                out.extend_from_slice(b"\n\n");
            }
            return;
        }
        let Ok(mut chunk) = serde_json::from_str::<Value>(data) else {
            out.extend_from_slice(raw.as_bytes());
            out.extend_from_slice(b"\n\n");
            return;
        };
        let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else {
            out.extend_from_slice(raw.as_bytes());
            out.extend_from_slice(b"\n\n");
            return;
        };
        type Texts = [Option<String>; 3];
        let mut edits: Vec<(usize, u64, Texts, bool)> = Vec::new();
        for (at, choice) in choices.iter().enumerate() {
            let index = choice["index"].as_u64().unwrap_or(0);
            let texts = Part::ALL.map(|p| {
                choice["delta"][p.chat_member()]
                    .as_str()
                    .map(str::to_string)
            });
            let finished = !choice["finish_reason"].is_null();
            edits.push((at, index, texts, finished));
        }
        for (at, index, texts, finished) in edits {
            let mut released: [String; 3] = Default::default();
            for (i, part) in Part::ALL.into_iter().enumerate() {
                if part == Part::Answer && texts[i].is_some() {
                    // The answer begins: the reasoning still held goes first, in this chunk.
                    for (j, reasoning) in Part::ALL.into_iter().enumerate().take(i) {
                        if let Err(rule) = self.close((index, reasoning), &mut released[j]) {
                            return self.reject(rule, out);
                        }
                    }
                }
                if let Some(text) = &texts[i] {
                    match self.guard((index, part)).push(text) {
                        Ok(r) => released[i].push_str(&r),
                        Err(rule) => return self.reject(rule, out),
                    }
                }
            }
            if finished {
                for (i, part) in Part::ALL.into_iter().enumerate() {
                    if let Err(rule) = self.close((index, part), &mut released[i]) {
                        return self.reject(rule, out);
                    }
                }
            }
            let Some(choice) = choices[at].as_object_mut() else {
                continue;
            };
            for (i, part) in Part::ALL.into_iter().enumerate() {
                if texts[i].is_none() && released[i].is_empty() {
                    continue;
                }
                let delta = choice.entry("delta").or_insert_with(|| json!({}));
                if !delta.is_object() {
                    *delta = json!({});
                }
                delta[part.chat_member()] = Value::String(std::mem::take(&mut released[i]));
            }
        }
        write(out, None, &chunk);
    }

    /// Whether the chunk's `choice` finishes while a part of it without a member in this chunk may hold
    /// text: that text needs a member written into the chunk ([`Self::openai`] does that).
    fn finish_needs_value(&self, choice: &ChunkChoice<'_>) -> bool {
        choice.finished
            && Part::ALL
                .into_iter()
                .zip(&choice.texts)
                .any(|(part, text)| text.is_none() && self.guards.contains(&(choice.index, part)))
    }

    /// Whether the chunk's `choice` begins its answer while shown reasoning of it is held, or comes
    /// with it (the held reasoning is sent first: [`Self::openai`] does that).
    fn ends_reasoning(&self, choice: &ChunkChoice<'_>) -> bool {
        let [reasoning, reasoning_content, answer] = &choice.texts;
        answer.is_some()
            && (reasoning.is_some()
                || reasoning_content.is_some()
                || self.guards.contains(&(choice.index, Part::Reasoning))
                || self
                    .guards
                    .contains(&(choice.index, Part::ReasoningContent)))
    }

    /// Ends the window of `key`, if there is one: its held text onto `into`, or the Reject rule.
    fn close(&mut self, key: (u64, Part), into: &mut String) -> Result<(), Arc<str>> {
        let Some(mut guard) = self.guards.remove(&key) else {
            return Ok(());
        };
        let rest = guard.finish();
        self.decisions.extend(guard.decisions().cloned());
        into.push_str(&rest?);
        Ok(())
    }

    fn anthropic(&mut self, raw: &str, name: Option<&str>, data: &str, out: &mut Vec<u8>) {
        let parsed = serde_json::from_str::<Value>(data).ok();
        let kind = parsed
            .as_ref()
            .and_then(|v| v["type"].as_str())
            .or(name)
            .unwrap_or_default()
            .to_string();
        let index = parsed
            .as_ref()
            .and_then(|v| v["index"].as_u64())
            .unwrap_or(0);
        let delta = parsed.as_ref().and_then(|v| v["delta"]["type"].as_str());
        // Shown thinking streams like the text, through a window of its own.
        let text = match delta {
            Some("text_delta") => Some((Part::Answer, "text")),
            Some("thinking_delta") => Some((Part::Reasoning, "thinking")),
            _ => None,
        };
        let signature = delta == Some("signature_delta");
        match (kind.as_str(), parsed, text) {
            ("content_block_delta", Some(mut v), Some((part, member))) => {
                let text = v["delta"][member].as_str().unwrap_or_default().to_string();
                match self.guard((index, part)).push(&text) {
                    Ok(released) if released.is_empty() => {}
                    Ok(released) => {
                        v["delta"][member] = Value::String(released);
                        write(out, Some("content_block_delta"), &v);
                    }
                    Err(rule) => self.reject(rule, out),
                }
                return;
            }
            // The thinking's signature (passed on untouched) ends its text: the held text goes first.
            ("content_block_delta", _, _) if signature => self.flush((index, Part::Reasoning), out),
            ("content_block_stop", _, _) => {
                self.flush((index, Part::Reasoning), out);
                self.flush((index, Part::Answer), out);
            }
            ("message_stop", _, _) => self.finish_all(out),
            _ => {}
        }
        if self.rejected.is_none() {
            out.extend_from_slice(raw.as_bytes());
            out.extend_from_slice(b"\n\n");
        }
    }

    fn prompt(&mut self, raw: &str, name: Option<&str>, data: &str, out: &mut Vec<u8>) {
        let parsed = serde_json::from_str::<Value>(data).ok();
        match (name, parsed) {
            (Some("delta"), Some(mut v)) if v["text"].is_string() => {
                let text = v["text"].as_str().unwrap_or_default().to_string();
                match self.guard((0, Part::Answer)).push(&text) {
                    Ok(released) if released.is_empty() => {}
                    Ok(released) => {
                        v["text"] = Value::String(released);
                        write(out, Some("delta"), &v);
                    }
                    Err(rule) => self.reject(rule, out),
                }
            }
            (Some("done"), Some(mut v)) => {
                self.finish_all(out);
                if self.rejected.is_some() {
                    return;
                }
                // A JSON prompt's parsed answer repeats the whole text: its strings are checked
                // whole, as a non-stream answer's are.
                if let Some(output) = v.get_mut("output") {
                    let mut rejected = None;
                    strings(output, &mut |s| {
                        if rejected.is_some() {
                            return;
                        }
                        let checked = self.policy.check_whole(s);
                        for d in checked.decisions.iter() {
                            if !self.decisions.contains(d) {
                                self.decisions.push(d.clone());
                            }
                        }
                        match checked.rejected {
                            Some(rule) => rejected = Some(rule),
                            None if !checked.masks.is_empty() => *s = checked.masked(s),
                            None => {}
                        }
                    });
                    if let Some(rule) = rejected {
                        return self.reject(rule, out);
                    }
                }
                write(out, Some("done"), &v);
            }
            _ => {
                if self.rejected.is_none() {
                    out.extend_from_slice(raw.as_bytes());
                    out.extend_from_slice(b"\n\n");
                }
            }
        }
    }

    fn responses(&mut self, raw: &str, name: Option<&str>, data: &str, out: &mut Vec<u8>) {
        let Ok(mut v) = serde_json::from_str::<Value>(data) else {
            if self.rejected.is_none() {
                out.extend_from_slice(raw.as_bytes());
                out.extend_from_slice(b"\n\n");
            }
            return;
        };
        let kind = v["type"].as_str().or(name).unwrap_or_default().to_string();
        // Shown reasoning streams like the output text, through a window of its own.
        let reasoning = kind.starts_with("response.reasoning_text.");
        let key = (responses_index(&v), Part::responses(reasoning));
        if kind == "response.output_text.delta" || kind == "response.reasoning_text.delta" {
            let text = v["delta"].as_str().unwrap_or_default().to_string();
            match self.guard(key).push(&text) {
                Ok(released) if released.is_empty() => return,
                Ok(released) => v["delta"] = Value::String(released),
                Err(rule) => return self.reject(rule, out),
            }
        } else {
            if (kind == "response.output_text.done" || kind == "response.reasoning_text.done")
                && let Some(mut guard) = self.guards.remove(&key)
            {
                let rest = guard.finish();
                self.decisions.extend(guard.decisions().cloned());
                match rest {
                    Err(rule) => return self.reject(rule, out),
                    Ok(rest) if rest.is_empty() => {}
                    // The held text, under the item's id like the deltas before it.
                    Ok(rest) => {
                        let delta = responses_delta_kind(reasoning);
                        let held = json!({"type": delta,
                                          "item_id": v["item_id"], "output_index": v["output_index"],
                                          "content_index": v["content_index"], "delta": rest,
                                          "logprobs": [], "sequence_number": self.sequence});
                        self.sequence += 1;
                        write(out, Some(delta), &held);
                    }
                }
            } else if kind == "response.completed" || kind == "response.incomplete" {
                self.finish_all(out);
            }
            if self.rejected.is_some() {
                return;
            }
            // The whole text again: checked whole, as a non-stream answer's is.
            if let Some(rule) = self.check_texts(&mut v) {
                return self.reject(rule, out);
            }
        }
        if v.get("sequence_number").is_some() {
            v["sequence_number"] = self.sequence.into();
            self.sequence += 1;
        }
        write(out, Some(&kind), &v);
    }

    /// Checks every string under a `text` member of `value` whole, masking in place; the first
    /// Reject rule, if one matched.
    fn check_texts(&mut self, value: &mut Value) -> Option<Arc<str>> {
        let mut rejected = None;
        let policy = Arc::clone(&self.policy);
        let decisions = &mut self.decisions;
        texts_under(value, false, &mut |s| {
            if rejected.is_some() {
                return;
            }
            let checked = policy.check_whole(s);
            for d in &checked.decisions {
                if !decisions.contains(d) {
                    decisions.push(d.clone());
                }
            }
            match checked.rejected {
                Some(rule) => rejected = Some(rule),
                None if !checked.masks.is_empty() => *s = checked.masked(s),
                None => {}
            }
        });
        rejected
    }

    fn finish_all(&mut self, out: &mut Vec<u8>) {
        let keys: Vec<(u64, Part)> = self.guards.keys().collect();
        for key in keys {
            self.flush(key, out);
            if self.rejected.is_some() {
                return;
            }
        }
    }
}

/// The error class and code of a stream ended for an overlong event.
const OVERLONG: &str = "upstream_event_too_large";

/// Which text of a choice, content block or output item a window holds. Shown reasoning sorts
/// before the answer, so that held reasoning is sent first when a stream ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    /// Shown reasoning: an OpenAI chunk's `reasoning`, Anthropic's `thinking_delta`, the Responses
    /// API's `reasoning_text`.
    Reasoning,
    /// An OpenAI chunk's `reasoning_content` (the name DeepSeek and vLLM use, and Tollgate when it
    /// translates Anthropic's thinking).
    ReasoningContent,
    /// The answer's text.
    Answer,
}

impl Part {
    /// Every part, in the order a chat chunk's members are checked.
    const ALL: [Part; 3] = [Part::Reasoning, Part::ReasoningContent, Part::Answer];

    /// The member of an OpenAI chunk's `delta` that carries this part.
    fn chat_member(self) -> &'static str {
        match self {
            Part::Reasoning => "reasoning",
            Part::ReasoningContent => "reasoning_content",
            Part::Answer => "content",
        }
    }

    /// The part of a Responses text.
    fn responses(reasoning: bool) -> Part {
        if reasoning {
            Part::Reasoning
        } else {
            Part::Answer
        }
    }
}

/// The window index of a Responses text: its output and content index.
fn responses_index(v: &Value) -> u64 {
    ((v["output_index"].as_u64().unwrap_or(0) & 0xffff_ffff) << 32)
        | (v["content_index"].as_u64().unwrap_or(0) & 0xffff_ffff)
}

/// The delta event of a Responses text of either kind.
fn responses_delta_kind(reasoning: bool) -> &'static str {
    if reasoning {
        "response.reasoning_text.delta"
    } else {
        "response.output_text.delta"
    }
}

fn write(out: &mut Vec<u8>, event: Option<&str>, data: &Value) {
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *out, data).expect("a JSON value encodes into memory");
    out.extend_from_slice(b"\n\n");
}

/// Every string under a `text` member of a JSON value, to `visit`.
fn texts_under(value: &mut Value, text: bool, visit: &mut dyn FnMut(&mut String)) {
    match value {
        Value::String(s) if text => visit(s),
        Value::Array(items) => items.iter_mut().for_each(|v| texts_under(v, text, visit)),
        Value::Object(members) => {
            for (key, v) in members.iter_mut() {
                texts_under(v, text || key == "text", visit);
            }
        }
        _ => {}
    }
}

/// Every string in a JSON value, to `visit`.
fn strings(value: &mut Value, visit: &mut dyn FnMut(&mut String)) {
    match value {
        Value::String(s) => visit(s),
        Value::Array(items) => items.iter_mut().for_each(|v| strings(v, visit)),
        Value::Object(members) => members.values_mut().for_each(|v| strings(v, visit)),
        _ => {}
    }
}

/// The text a whole streamed answer in `format` wrote, one string per choice, content block or
/// output (in their order): what a moderation service is asked about once the stream has ended.
/// Events that are not JSON, and an error event's message, are not text the model wrote.
pub fn stream_texts(format: StreamFormat, stream: &[u8]) -> Vec<String> {
    let mut texts: BTreeMap<(u64, Part), String> = BTreeMap::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (event, next) = match event_end(rest) {
            Some((end, sep, _)) => (&rest[..end], &rest[end + sep..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        let Ok(event) = std::str::from_utf8(event) else {
            continue;
        };
        let mut name = None;
        let mut data = String::new();
        for line in event.lines() {
            if let Some(n) = line.strip_prefix("event:") {
                name = Some(n.trim());
            } else if let Some(d) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
        }
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            continue;
        };
        let mut add = |key: (u64, Part), text: Option<&str>| {
            if let Some(text) = text {
                texts.entry(key).or_default().push_str(text);
            }
        };
        // Shown reasoning is text the model wrote too, each part a text of its own.
        match format {
            StreamFormat::OpenAiChat => {
                for choice in v["choices"].as_array().into_iter().flatten() {
                    let index = choice["index"].as_u64().unwrap_or(0);
                    for part in Part::ALL {
                        add((index, part), choice["delta"][part.chat_member()].as_str());
                    }
                }
            }
            StreamFormat::AnthropicMessages => {
                if v["type"] == "content_block_delta" {
                    let index = v["index"].as_u64().unwrap_or(0);
                    match v["delta"]["type"].as_str() {
                        Some("text_delta") => {
                            add((index, Part::Answer), v["delta"]["text"].as_str())
                        }
                        Some("thinking_delta") => {
                            add((index, Part::Reasoning), v["delta"]["thinking"].as_str())
                        }
                        _ => {}
                    }
                }
            }
            StreamFormat::Prompt => {
                if name == Some("delta") {
                    add((0, Part::Answer), v["text"].as_str());
                }
            }
            StreamFormat::Responses => {
                let kind = v["type"].as_str().unwrap_or_default();
                if kind == "response.output_text.delta" || kind == "response.reasoning_text.delta" {
                    let part = Part::responses(kind == "response.reasoning_text.delta");
                    add((responses_index(&v), part), v["delta"].as_str());
                }
            }
        }
    }
    texts.into_values().collect()
}

/// A text member of a chunk's delta: its literal's place in the chunk and its text.
type ChunkText<'a> = (std::ops::Range<usize>, std::borrow::Cow<'a, str>);

/// The windows of a stream by choice (or block, or output) and part, in key order: a vector searched
/// by halves, since a stream has one window, or a few (a map costs more to search at that size).
#[derive(Default)]
struct Guards(Vec<((u64, Part), StreamGuard)>);

impl Guards {
    fn find(&self, key: &(u64, Part)) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(key))
    }

    fn get_or_insert(&mut self, key: (u64, Part), policy: &Arc<Policy>) -> &mut StreamGuard {
        // A stream's one window, most often.
        if let [(only, _)] = &self.0[..]
            && *only == key
        {
            return &mut self.0[0].1;
        }
        let at = match self.find(&key) {
            Ok(at) => at,
            Err(at) => {
                self.0
                    .insert(at, (key, StreamGuard::new(Arc::clone(policy))));
                at
            }
        };
        &mut self.0[at].1
    }

    fn contains(&self, key: &(u64, Part)) -> bool {
        self.find(key).is_ok()
    }

    fn remove(&mut self, key: &(u64, Part)) -> Option<StreamGuard> {
        let at = self.find(key).ok()?;
        Some(self.0.remove(at).1)
    }

    fn keys(&self) -> impl Iterator<Item = (u64, Part)> + '_ {
        self.0.iter().map(|(k, _)| *k)
    }

    fn values(&self) -> impl Iterator<Item = &StreamGuard> {
        self.0.iter().map(|(_, g)| g)
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// A chat chunk's choices: one, nearly always.
type Choices<'a> = SmallVec<[ChunkChoice<'a>; 1]>;

/// What the check of a chat chunk needs of one choice.
#[derive(Debug, Default, PartialEq)]
struct ChunkChoice<'a> {
    index: u64,
    /// `delta.reasoning`, `delta.reasoning_content` and `delta.content` (as [`Part::ALL`]), each
    /// when a string.
    texts: [Option<ChunkText<'a>>; 3],
    /// Whether `finish_reason` is set.
    finished: bool,
}

/// The choices of a chat chunk, read as `serde_json::Value` would give them to [`AnswerStream::openai`]
/// (a missing or odd `index` is 0, a text member counts only as a string); `None` when the chunk is
/// not an object with a `choices` array, or names a member the check reads twice.
///
/// `known` holds the bytes of the last chunk read around its `choices` (see [`ChunkEnds`]): members a
/// provider repeats in every chunk (`id`, `object`, `created`, `model`, …) are read again only when
/// their bytes changed, since the same bytes read the same way. `None` too when `data` is not UTF-8.
///
/// The choices are read into `into` (cleared first), where they stay: a choice is not small, and is
/// not moved about.
fn chunk_choices<'a>(data: &'a [u8], known: &mut ChunkEnds, into: &mut Choices<'a>) -> Option<()> {
    into.clear();
    if known.same_shape(data, into) {
        return Some(());
    }
    let data = json_text::utf8(data)?;
    let read = read_chunk_choices(data, known, into);
    if read.is_none() {
        into.clear();
    }
    let shape = known.shape.get_or_insert_with(ChunkShape::default);
    shape.set(data, into);
    read
}

/// [`chunk_choices`] read member by member (the members around `choices` compared with `known`'s).
fn read_chunk_choices<'a>(
    data: &'a str,
    known: &mut ChunkEnds,
    into: &mut Choices<'a>,
) -> Option<()> {
    let bytes = data.as_bytes();
    let resumed = !known.head.is_empty() && bytes.starts_with(&known.head);
    let mut at = if resumed {
        json_text::Cursor::resume(data, known.head.len())
    } else {
        let mut at = json_text::Cursor::new(data);
        at.enter(b'{')?;
        at
    };
    // Where the members before `choices` end, through the comma after the last one.
    let mut head_end = None;
    // Where the members after it begin.
    let mut tail_start = None;
    let mut choices = false;
    while let Some(key) = at.next_key()? {
        if key != "choices" {
            at.raw()?;
            if !choices && at.peek()? == b',' {
                head_end = Some(at.offset() + 1);
            }
            continue;
        }
        if std::mem::replace(&mut choices, true) {
            return None;
        }
        at.enter(b'[')?;
        while at.next_element()? {
            into.push(ChunkChoice::default());
            let last = into.len() - 1;
            chunk_choice(&mut at, &mut into[last])?;
        }
        let after = at.offset();
        if !known.tail.is_empty() && bytes[after..] == known.tail[..] {
            // Read before: the members after `choices` and the end of the object.
            if !resumed {
                known.set_head(bytes, head_end);
            }
            return Some(());
        }
        tail_start = Some(after);
    }
    at.at_end().then_some(())?;
    if !resumed {
        known.set_head(bytes, head_end);
    }
    if let Some(start) = tail_start {
        known.tail.clear();
        known.tail.extend_from_slice(&bytes[start..]);
    }
    choices.then_some(())
}

/// The bytes of the last chat chunk read before its `choices` member (through the comma after the
/// member before it) and after it (from the end of its array to the end of the chunk), and its
/// shape when it had one text.
#[derive(Default)]
struct ChunkEnds {
    head: Vec<u8>,
    tail: Vec<u8>,
    shape: Option<ChunkShape>,
}

/// A chat chunk of one choice with one text, as bytes around that text's literal: a provider sends
/// many that differ only there. A chunk whose bytes around a string literal are the same is read the
/// same way (the bytes before bring a reader to the literal in the same state, a literal is one
/// token whatever it holds, and the bytes after are read the same), so it is read as this one was.
#[derive(Default)]
struct ChunkShape {
    /// Whether the last chunk read had this shape (the buffers are kept for the next one).
    valid: bool,
    /// The chunk's bytes before the literal.
    before: Vec<u8>,
    /// Its bytes after the literal, to the end.
    after: Vec<u8>,
    index: u64,
    /// Which of [`Part::ALL`] the text is.
    part: usize,
    finished: bool,
}

impl ChunkShape {
    /// The shape of the chunk `data` that was read as `choices`, if it had one choice with one text.
    fn set(&mut self, data: &str, choices: &[ChunkChoice<'_>]) {
        self.valid = false;
        let [choice] = choices else {
            return;
        };
        let mut texts = choice
            .texts
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((i, t.as_ref()?)));
        let Some((part, (at, _))) = texts.next() else {
            return;
        };
        if texts.next().is_some() {
            return;
        }
        self.before.clear();
        self.before.extend_from_slice(&data.as_bytes()[..at.start]);
        self.after.clear();
        self.after.extend_from_slice(&data.as_bytes()[at.end..]);
        self.index = choice.index;
        self.part = part;
        self.finished = choice.finished;
        self.valid = true;
    }
}

impl ChunkEnds {
    /// The choices of `data` when it has the shape of the last chunk read, its text aside.
    fn same_shape<'a>(&self, data: &'a [u8], into: &mut Choices<'a>) -> bool {
        let Some((index, part, finished, text)) = self.shaped_text(data) else {
            return false;
        };
        into.push(ChunkChoice {
            index,
            texts: Default::default(),
            finished,
        });
        into[0].texts[part] = Some(text);
        true
    }

    /// When `data` has the shape of the last chunk read, its text aside: the choice's index, the
    /// text's part (its place in [`Part::ALL`]), whether the choice finishes, and where the text's
    /// literal lies and its text. Only the literal's bytes are checked to be UTF-8: those around it
    /// are the last chunk's, which were.
    fn shaped_text<'a>(&self, data: &'a [u8]) -> Option<(u64, usize, bool, ChunkText<'a>)> {
        let shape = self.shape.as_ref().filter(|s| s.valid)?;
        let rest = data.strip_prefix(&shape.before[..])?;
        if rest.first() != Some(&b'"') {
            return None;
        }
        // The bytes after the literal are compared with the last chunk's, which were UTF-8: only
        // the literal's are checked.
        let (end, escaped) = json_text::literal_end(rest, 0)?;
        if rest[end..] != shape.after[..] {
            return None;
        }
        let literal = json_text::utf8(&rest[..end])?;
        let json_text::Found { at, text } = json_text::found_at(literal, 0..end, escaped)?;
        let at = at.start + shape.before.len()..at.end + shape.before.len();
        Some((shape.index, shape.part, shape.finished, (at, text)))
    }

    fn set_head(&mut self, bytes: &[u8], end: Option<usize>) {
        self.head.clear();
        if let Some(end) = end {
            self.head.extend_from_slice(&bytes[..end]);
        }
    }
}

/// Reads one choice of a chat chunk into `choice` (a default one).
fn chunk_choice<'a>(at: &mut json_text::Cursor<'a>, choice: &mut ChunkChoice<'a>) -> Option<()> {
    if at.peek()? != b'{' {
        at.raw()?;
        return Some(());
    }
    at.enter(b'{')?;
    let (mut index, mut delta, mut finish) = (false, false, false);
    while let Some(key) = at.next_key()? {
        match &*key {
            "index" => {
                if std::mem::replace(&mut index, true) {
                    return None;
                }
                choice.index = at.raw()?.parse().unwrap_or(0);
            }
            "finish_reason" => {
                if std::mem::replace(&mut finish, true) {
                    return None;
                }
                choice.finished = at.raw()? != "null";
            }
            "delta" if at.peek()? == b'{' => {
                if std::mem::replace(&mut delta, true) {
                    return None;
                }
                at.enter(b'{')?;
                let mut seen = [false; 3];
                while let Some(key) = at.next_key()? {
                    let Some(i) = Part::ALL.iter().position(|p| p.chat_member() == key) else {
                        at.raw()?;
                        continue;
                    };
                    if std::mem::replace(&mut seen[i], true) {
                        return None;
                    } else if at.peek()? == b'"' {
                        choice.texts[i] = Some(at.string()?);
                    } else {
                        at.raw()?;
                    }
                }
            }
            "delta" => {
                if std::mem::replace(&mut delta, true) {
                    return None;
                }
                at.raw()?;
            }
            _ => {
                at.raw()?;
            }
        }
    }
    Some(())
}

/// Where the first complete event ends, the length of its separator, and whether the event holds a
/// `\n` of its own (more than one line): the first `\n\n` or `\r\n\r\n`, found in one pass from
/// each `\n` or `\r` (an event holds one line or a few, so this beats a `memmem` searcher built for
/// every event, and one pass beats one per kind; the line breaks it passes are the event's own).
fn event_end(buffer: &[u8]) -> Option<(usize, usize, bool)> {
    let mut from = 0;
    let mut lines = false;
    while let Some(n) = memchr::memchr2(b'\n', b'\r', &buffer[from..]) {
        let at = from + n;
        let rest = &buffer[at + 1..];
        if buffer[at] == b'\n' {
            if rest.first() == Some(&b'\n') {
                return Some((at, 2, lines));
            }
            lines = true;
        } else if rest.starts_with(b"\n\r\n") {
            return Some((at, 4, lines));
        }
        from = at + 1;
    }
    None
}

/// [`event_end`] as it was: each kind searched for on its own, the CRLF one only before the first
/// LF one. The oracle of its tests.
#[cfg(test)]
fn event_end_by_kind(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = find_pair(buffer, b'\n', b"\n");
    let scope = lf.map_or(buffer.len(), |a| (a + 3).min(buffer.len()));
    let crlf = find_pair(&buffer[..scope], b'\r', b"\n\r\n");
    match (lf, crlf) {
        (Some(a), Some(b)) if b < a => Some((b, 4)),
        (Some(a), _) => Some((a, 2)),
        (None, Some(b)) => Some((b, 4)),
        (None, None) => None,
    }
}

/// Where `first` followed by `then` first occurs in `b`: found from each `first` with `memchr`.
#[cfg(test)]
fn find_pair(b: &[u8], first: u8, then: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(n) = memchr::memchr(first, &b[from..]) {
        let at = from + n;
        if b[at + 1..].starts_with(then) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_snapshot::{Detector, GuardRule, GuardrailAction, Matcher, default_mask};

    fn policy(action: GuardrailAction) -> Arc<Policy> {
        Arc::new(Policy {
            rules: vec![GuardRule {
                name: "emails".into(),
                matcher: Matcher::Detector(Detector::Email),
                action,
                mask_as: default_mask(Some(Detector::Email)).into(),
            }],
            ..Policy::default()
        })
    }

    fn openai_stream(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for c in text.chars() {
            write(
                &mut out,
                None,
                &json!({"choices": [{"index": 0, "delta": {"content": c.to_string()}, "finish_reason": null}]}),
            );
        }
        write(
            &mut out,
            None,
            &json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        );
        out.extend_from_slice(b"data: [DONE]\n\n");
        out
    }

    fn text_of(out: &[u8]) -> String {
        String::from_utf8_lossy(out)
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(String::from)
            })
            .collect()
    }

    /// An OpenAI stream's events, each read back (`[DONE]` as a string).
    fn events_of(out: &[u8]) -> Vec<Value> {
        String::from_utf8_lossy(out)
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let data = e.strip_prefix("data: ").unwrap_or(e);
                serde_json::from_str(data).unwrap_or_else(|_| Value::String(e.to_string()))
            })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: std::env::var("TOLLGATE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(500),
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// A chat stream checked in its events' own bytes gives the events that reading each into a
        /// value, checking and writing it again gives: any text, any chunking, two choices, extra
        /// members, escapes, finish reasons.
        #[test]
        fn openai_chunks_checked_in_their_bytes_are_the_chunks_checked_as_values(
            pieces in proptest::collection::vec(
                (0u64..2, proptest::prop_oneof![
                    proptest::strategy::Just("mail bob@exa".to_string()),
                    proptest::strategy::Just("mple.com or ".to_string()),
                    proptest::strategy::Just("alice@example.org\n".to_string()),
                    proptest::strategy::Just("\"q\" \\ é😀 ".to_string()),
                    "[a-z @.]{0,40}",
                    "\\PC{0,8}",
                ], 0u8..14),
                0..40,
            ),
            reject in proptest::prelude::any::<bool>(),
            split in 1usize..64,
        ) {
            let mut input = Vec::new();
            for (index, text, shape) in &pieces {
                let chunk = match shape {
                    0 => json!({"id": "c", "choices": [{"index": index, "delta": {"content": text}, "finish_reason": null}]}),
                    1 => json!({"choices": [{"delta": {"role": "assistant", "content": text}, "index": index}], "model": "m"}),
                    2 => json!({"choices": [{"index": 0, "delta": {"content": text}}, {"index": 1, "delta": {"content": text}, "logprobs": null}]}),
                    3 => json!({"choices": [{"index": index, "delta": {}, "finish_reason": "stop"}]}),
                    // Shown reasoning, alone, under either name, and with the answer's text.
                    4 => json!({"choices": [{"index": index, "delta": {"reasoning_content": text}, "finish_reason": null}]}),
                    5 => json!({"choices": [{"delta": {"reasoning": text, "role": "assistant"}, "index": index}]}),
                    6 => json!({"choices": [{"index": index, "delta": {"content": text, "reasoning_content": text}}]}),
                    // The last text with the finish, as most providers send it.
                    7 => json!({"choices": [{"index": index, "delta": {"content": text}, "finish_reason": "stop"}]}),
                    8 => json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": "stop"}, {"index": 1, "delta": {"content": text}}]}),
                    // Members before `choices` that repeat, or nearly: a number that grows by a digit.
                    9 => json!({"id": "c", "created": if *index == 0 { 1 } else { 12 }, "choices": [{"index": 0, "delta": {"content": text}}]}),
                    _ => json!({"choices": [{"index": index, "delta": {"reasoning": text, "reasoning_content": null}, "finish_reason": "length"}]}),
                };
                let data = match shape {
                    1 => serde_json::to_string_pretty(&chunk).unwrap().replace('\n', " "),
                    // A provider's order: the repeated members first (a number that grows by a
                    // digit among them), `choices`, then more.
                    10 => format!(
                        r#"{{"id":"c","created":{},"choices":[{{"index":0,"delta":{{"content":{}}}}}],"model":"m"}}"#,
                        if *index == 0 { 1 } else { 12 },
                        serde_json::to_string(text).unwrap()
                    ),
                    // Damaged chunks (passed on as they came) whose bytes around `choices` are as long
                    // as a good chunk's: only their bytes tell them apart.
                    11 => format!(r#"{{"choices":[{{"index":0,"delta":{{"content":{}}}}}],"id":"c"]"#, serde_json::to_string(text).unwrap()),
                    12 => format!(r#"{{"id":"c","model":"m","choices":[{{"index":0,"delta":{{"content":{}}}}}]}}"#, serde_json::to_string(text).unwrap()),
                    13 => format!(r#"{{"id":"c","model":"m"]"choices":[{{"index":0,"delta":{{"content":{}}}}}]}}"#, serde_json::to_string(text).unwrap()),
                    _ => chunk.to_string(),
                };
                input.extend_from_slice(format!("data: {data}\n\n").as_bytes());
            }
            input.extend_from_slice(b"data: [DONE]\n\n");
            let action = if reject { GuardrailAction::Reject } else { GuardrailAction::Mask };
            let run = |in_place: bool| {
                let mut answer = AnswerStream::new(StreamFormat::OpenAiChat, policy(action));
                answer.in_place = in_place;
                let mut out = Vec::new();
                for piece in input.chunks(split) {
                    out.extend(answer.feed(piece));
                }
                out.extend(answer.finish());
                (events_of(&out), answer.rejected().cloned(), answer.decisions())
            };
            proptest::prop_assert_eq!(run(true), run(false));
        }

        /// A chunk read through the last chunk's shape (and the members around `choices` known
        /// before) gives the choices a fresh reading of it gives: chunks of a few shapes in any order,
        /// texts that are well-formed literals or raw bytes spliced in (quotes, escapes, members),
        /// some with a byte that is not UTF-8 in their literal (no reading reads those).
        #[test]
        fn chunks_read_by_the_last_ones_shape_are_read_as_a_fresh_reading_reads_them(
            chunks in proptest::collection::vec(
                (0u8..6, 0u8..3, proptest::bool::ANY, proptest::bool::weighted(0.2), proptest::prop_oneof![
                    "[a-z @.]{0,12}",
                    proptest::strategy::Just(r#"x"},"finish_reason":"stop","index":1}]}"#.to_string()),
                    proptest::strategy::Just(r#"x", "role":"assistant"#.to_string()),
                    proptest::strategy::Just(r#"\ud800"#.to_string()),
                    proptest::strategy::Just(r#"a\"b"#.to_string()),
                    "\\PC{0,6}",
                ]),
                1..12,
            ),
        ) {
            let mut known = ChunkEnds::default();
            for (shape, index, raw, broken, text) in &chunks {
                let literal = if *raw { format!("\"{text}\"") } else { serde_json::to_string(text).unwrap() };
                let data = match shape {
                    0 => format!(r#"{{"choices":[{{"delta":{{"content":{literal}}},"finish_reason":null,"index":{index}}}],"id":"c"}}"#),
                    1 => format!(r#"{{"choices":[{{"delta":{{"content":{literal}}},"finish_reason":"stop","index":{index}}}],"id":"c"}}"#),
                    2 => format!(r#"{{"choices":[{{"delta":{{"reasoning":{literal}}},"index":{index}}}]}}"#),
                    3 => format!(r#"{{"id":"c","choices":[{{"index":{index},"delta":{{"content":{literal},"role":"assistant"}}}}]}}"#),
                    4 => format!(r#"{{"choices":[{{"delta":{{"content":{literal}}},"index":0}},{{"delta":{{"content":"y"}},"index":{index}}}]}}"#),
                    _ => format!(r#"{{"choices":[{{"delta":{{"content":{literal}}},"finish_reason":null,"index":{index}}}],"id":"c""#),
                };
                let mut bytes = data.clone().into_bytes();
                if *broken {
                    let at = data.find(&literal).unwrap();
                    bytes.insert(at + 1, 0xff);
                }
                let mut cached = Choices::new();
                let cached = chunk_choices(&bytes, &mut known, &mut cached).map(|()| cached);
                let mut fresh = Choices::new();
                let fresh = std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|data| read_chunk_choices(data, &mut ChunkEnds::default(), &mut fresh))
                    .map(|()| fresh);
                proptest::prop_assert_eq!(cached, fresh, "{:?}", bytes);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: std::env::var("TOLLGATE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(500),
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// The separators found from each `\n` or `\r` are the ones `memmem` finds, and the first of
        /// either kind found in one pass is the one found by searching for each kind alone.
        #[test]
        fn separators_are_found_as_memmem_finds_them(
            bytes in proptest::collection::vec(proptest::sample::select(&b"\r\na"[..]), 0..40),
        ) {
            proptest::prop_assert_eq!(
                find_pair(&bytes, b'\n', b"\n"),
                memchr::memmem::find(&bytes, b"\n\n")
            );
            proptest::prop_assert_eq!(
                find_pair(&bytes, b'\r', b"\n\r\n"),
                memchr::memmem::find(&bytes, b"\r\n\r\n")
            );
            let end = event_end(&bytes);
            proptest::prop_assert_eq!(end.map(|(at, sep, _)| (at, sep)), event_end_by_kind(&bytes));
            if let Some((at, _, lines)) = end {
                proptest::prop_assert_eq!(lines, bytes[..at].contains(&b'\n'));
            }
        }
    }

    #[test]
    fn an_event_ends_at_the_first_separator_of_either_kind() {
        assert_eq!(
            event_end(b"data: a\n\ndata: b\r\n\r\n"),
            Some((7, 2, false))
        );
        assert_eq!(
            event_end(b"data: a\r\n\r\ndata: b\n\n"),
            Some((7, 4, false))
        );
        assert_eq!(event_end(b"data: a\r\n\r\n"), Some((7, 4, false)));
        assert_eq!(event_end(b"data: a\r\n\n"), Some((8, 2, false)));
        assert_eq!(event_end(b"data: a\ndata: b\n\n"), Some((15, 2, true)));
        assert_eq!(event_end(b"data: a\r\n"), None);
        assert_eq!(event_end(b""), None);
    }

    #[test]
    fn an_openai_stream_split_at_every_byte_comes_out_masked_and_whole() {
        let text = "Write to bob@example.com today, or alice@example.org.";
        let stream = openai_stream(text);
        let mut answer = AnswerStream::new(StreamFormat::OpenAiChat, policy(GuardrailAction::Mask));
        let mut out = Vec::new();
        for b in &stream {
            out.extend(answer.feed(std::slice::from_ref(b)));
        }
        out.extend(answer.finish());
        assert_eq!(text_of(&out), "Write to [EMAIL] today, or [EMAIL].");
        let shown = String::from_utf8_lossy(&out);
        assert!(shown.ends_with("data: [DONE]\n\n"), "{shown}");
        assert!(!shown.contains("example"), "{shown}");
    }

    #[test]
    fn a_prompt_stream_split_at_every_byte_comes_out_masked_and_a_json_output_is_masked_whole() {
        let mut input = Vec::new();
        for piece in ["{\"to\": \"bob@", "example.com\"", "}"] {
            write(&mut input, Some("delta"), &json!({ "text": piece }));
        }
        write(
            &mut input,
            Some("done"),
            &json!({"id": "p", "model": "m", "finish_reason": "stop",
                    "output": {"to": "bob@example.com"}}),
        );
        let mut answer = AnswerStream::new(StreamFormat::Prompt, policy(GuardrailAction::Mask));
        let mut out = Vec::new();
        for b in &input {
            out.extend(answer.feed(std::slice::from_ref(b)));
        }
        out.extend(answer.finish());
        let shown = String::from_utf8_lossy(&out);
        let text: String = shown
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("event: delta\ndata: "))
            .map(|d| {
                serde_json::from_str::<Value>(d).unwrap()["text"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(text, "{\"to\": \"[EMAIL]\"}");
        assert!(shown.contains(r#""output":{"to":"[EMAIL]"}"#), "{shown}");
        assert!(!shown.contains("example"), "{shown}");

        let mut answer = AnswerStream::new(StreamFormat::Prompt, policy(GuardrailAction::Reject));
        let mut out = answer.feed(&input);
        out.extend(answer.finish());
        let shown = String::from_utf8_lossy(&out);
        assert!(shown.contains("event: error\n"), "{shown}");
        assert!(shown.contains("content_policy_violation"), "{shown}");
        assert!(
            !shown.contains("event: done") && !shown.contains("bob@"),
            "{shown}"
        );
    }

    #[test]
    fn shown_reasoning_in_a_responses_stream_is_masked_like_the_output_text() {
        let mut answer = AnswerStream::new(StreamFormat::Responses, policy(GuardrailAction::Mask));
        let mut input = Vec::new();
        for (kind, pieces) in [
            ("reasoning_text", ["the user is bob@", "example.com, so"]),
            ("output_text", ["write to carol@", "example.org"]),
        ] {
            let output = u64::from(kind == "output_text");
            for piece in pieces {
                let event = format!("response.{kind}.delta");
                write(
                    &mut input,
                    Some(&event),
                    &json!({"type": event, "item_id": "i", "output_index": output, "content_index": 0, "delta": piece}),
                );
            }
            let done = format!("response.{kind}.done");
            write(
                &mut input,
                Some(&done),
                &json!({"type": done, "item_id": "i", "output_index": output, "content_index": 0, "text": pieces.concat()}),
            );
        }
        let mut out = answer.feed(&input);
        out.extend(answer.finish());
        let shown = String::from_utf8_lossy(&out);
        assert!(!shown.contains("bob@"), "{shown}");
        assert!(!shown.contains("carol@"), "{shown}");
        let reasoning: String = String::from_utf8_lossy(&out)
            .split("\n\n")
            .filter_map(|e| e.split_once("data: ").map(|(_, d)| d.to_string()))
            .filter_map(|d| serde_json::from_str::<Value>(&d).ok())
            .filter(|v| v["type"] == "response.reasoning_text.delta")
            .filter_map(|v| v["delta"].as_str().map(String::from))
            .collect();
        assert!(reasoning.starts_with("the user is "), "{reasoning}");
        assert!(reasoning.ends_with(", so"), "{reasoning}");
    }

    #[test]
    fn a_reject_ends_an_anthropic_stream_with_an_error_event() {
        let mut answer = AnswerStream::new(
            StreamFormat::AnthropicMessages,
            policy(GuardrailAction::Reject),
        );
        let mut input = Vec::new();
        write(
            &mut input,
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        );
        for piece in ["mail bob@", "example.com", " now"] {
            write(
                &mut input,
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
            );
        }
        write(
            &mut input,
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": 0}),
        );
        let mut out = answer.feed(&input);
        out.extend(answer.finish());
        let shown = String::from_utf8_lossy(&out);
        assert!(shown.contains("event: error\n"), "{shown}");
        assert!(shown.contains("guardrail rule emails"), "{shown}");
        assert!(!shown.contains("bob@"), "{shown}");
        assert!(!shown.contains("content_block_stop"), "{shown}");
        assert_eq!(answer.rejected().map(|r| &**r), Some("emails"));
    }

    /// A chat stream that shows its reasoning under `member` before answering.
    fn openai_reasoning_stream(member: &str, reasoning: &[&str], answer: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in reasoning {
            write(
                &mut out,
                None,
                &json!({"choices": [{"index": 0, "delta": {member: piece}, "finish_reason": null}]}),
            );
        }
        for piece in answer {
            write(
                &mut out,
                None,
                &json!({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]}),
            );
        }
        write(
            &mut out,
            None,
            &json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        );
        out.extend_from_slice(b"data: [DONE]\n\n");
        out
    }

    /// Every string a chat stream's deltas carry in `member`, in order.
    fn member_of(out: &[u8], member: &str) -> String {
        events_of(out)
            .iter()
            .filter_map(|v| v["choices"][0]["delta"][member].as_str().map(String::from))
            .collect()
    }

    #[test]
    fn shown_reasoning_in_a_chat_stream_is_masked_under_either_name_and_sent_before_the_answer() {
        for member in ["reasoning_content", "reasoning"] {
            let stream = openai_reasoning_stream(
                member,
                &["The user is bob@", "example.com, so I will ", "answer."],
                &["Write to ", "carol@example.org."],
            );
            for split in [1, 7, stream.len()] {
                let mut answer =
                    AnswerStream::new(StreamFormat::OpenAiChat, policy(GuardrailAction::Mask));
                let mut out = Vec::new();
                for piece in stream.chunks(split) {
                    out.extend(answer.feed(piece));
                }
                out.extend(answer.finish());
                let shown = String::from_utf8_lossy(&out);
                assert!(!shown.contains("bob@"), "{member} {split}: {shown}");
                assert!(!shown.contains("carol@"), "{member} {split}: {shown}");
                assert_eq!(
                    member_of(&out, member),
                    "The user is [EMAIL], so I will answer."
                );
                assert_eq!(member_of(&out, "content"), "Write to [EMAIL].");
                // All of the reasoning is out before the answer's first text.
                let events = events_of(&out);
                let last_reasoning = events
                    .iter()
                    .rposition(|v| v["choices"][0]["delta"][member].is_string())
                    .unwrap();
                let first_answer = events
                    .iter()
                    .position(|v| {
                        v["choices"][0]["delta"]["content"]
                            .as_str()
                            .is_some_and(|t| !t.is_empty())
                    })
                    .unwrap();
                assert!(last_reasoning <= first_answer, "{shown}");
                assert!(shown.ends_with("data: [DONE]\n\n"), "{shown}");
                assert!(answer.decisions().iter().any(|d| &*d.rule == "emails"));
            }
        }
    }

    #[test]
    fn a_reject_in_shown_reasoning_ends_a_chat_stream() {
        for member in ["reasoning_content", "reasoning"] {
            let stream = openai_reasoning_stream(member, &["ask bob@", "example.com"], &["Hi."]);
            let mut answer =
                AnswerStream::new(StreamFormat::OpenAiChat, policy(GuardrailAction::Reject));
            let mut out = Vec::new();
            for b in &stream {
                out.extend(answer.feed(std::slice::from_ref(b)));
            }
            out.extend(answer.finish());
            let shown = String::from_utf8_lossy(&out);
            assert!(shown.contains("content_policy_violation"), "{shown}");
            assert!(!shown.contains("bob@") && !shown.contains("Hi."), "{shown}");
            assert!(!shown.contains("[DONE]"), "{shown}");
            assert_eq!(answer.rejected().map(|r| &**r), Some("emails"));
        }
    }

    /// An Anthropic answer that thinks (signed), has a redacted block, then answers.
    fn anthropic_thinking_stream(thinking: &[&str], text: &[&str]) -> Vec<u8> {
        let mut input = Vec::new();
        let mut event = |name: &str, data: Value| write(&mut input, Some(name), &data);
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        );
        for piece in thinking {
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": piece}}),
            );
        }
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM+dan@example.net/sig=="}}),
        );
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        );
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "EmwKAhgBEgy3+erin@example.net=="}}),
        );
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        );
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": ""}}),
        );
        for piece in text {
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": piece}}),
            );
        }
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 2}),
        );
        event("message_stop", json!({"type": "message_stop"}));
        input
    }

    /// An Anthropic stream's events as (name, data).
    fn anthropic_events(out: &[u8]) -> Vec<(String, Value)> {
        String::from_utf8_lossy(out)
            .split("\n\n")
            .filter_map(|e| {
                let (name, data) = e.split_once("\ndata: ")?;
                Some((
                    name.strip_prefix("event: ")?.to_string(),
                    serde_json::from_str(data).ok()?,
                ))
            })
            .collect()
    }

    #[test]
    fn anthropic_thinking_is_masked_before_its_signature_which_passes_untouched() {
        let stream = anthropic_thinking_stream(
            &["The user is bob@", "example.com, so I will ", "answer."],
            &["Write to carol@", "example.org."],
        );
        for split in [1, 5, stream.len()] {
            let mut answer = AnswerStream::new(
                StreamFormat::AnthropicMessages,
                policy(GuardrailAction::Mask),
            );
            let mut out = Vec::new();
            for piece in stream.chunks(split) {
                out.extend(answer.feed(piece));
            }
            out.extend(answer.finish());
            let events = anthropic_events(&out);
            let thinking: String = events
                .iter()
                .filter_map(|(_, v)| v["delta"]["thinking"].as_str())
                .collect();
            assert_eq!(thinking, "The user is [EMAIL], so I will answer.");
            let text: String = events
                .iter()
                .filter_map(|(_, v)| v["delta"]["text"].as_str())
                .collect();
            assert_eq!(text, "Write to [EMAIL].");
            // Opaque and signed: as they came, and the thinking is whole before the signature.
            let shown = String::from_utf8_lossy(&out);
            assert!(
                shown.contains("EqQBCgIYAhIM+dan@example.net/sig=="),
                "{shown}"
            );
            assert!(shown.contains("EmwKAhgBEgy3+erin@example.net=="), "{shown}");
            let signature = events
                .iter()
                .position(|(_, v)| v["delta"]["type"] == "signature_delta")
                .unwrap();
            let last_thinking = events
                .iter()
                .rposition(|(_, v)| v["delta"]["type"] == "thinking_delta")
                .unwrap();
            assert!(last_thinking < signature, "{shown}");
            assert!(
                !shown.contains("bob@") && !shown.contains("carol@"),
                "{shown}"
            );
            assert_eq!(events.last().unwrap().0, "message_stop");
        }
    }

    #[test]
    fn a_reject_in_anthropic_thinking_ends_the_stream() {
        let stream = anthropic_thinking_stream(&["ask bob@", "example.com"], &["Hi."]);
        let mut answer = AnswerStream::new(
            StreamFormat::AnthropicMessages,
            policy(GuardrailAction::Reject),
        );
        let mut out = answer.feed(&stream);
        out.extend(answer.finish());
        let shown = String::from_utf8_lossy(&out);
        assert!(shown.contains("event: error\n"), "{shown}");
        assert!(
            !shown.contains("bob@") && !shown.contains("Hi.") && !shown.contains("signature_delta"),
            "{shown}"
        );
        assert_eq!(answer.rejected().map(|r| &**r), Some("emails"));
    }

    #[test]
    fn the_texts_a_moderation_service_gets_include_shown_reasoning() {
        let chat = openai_reasoning_stream("reasoning_content", &["thinking ", "hard"], &["Hi."]);
        assert_eq!(
            stream_texts(StreamFormat::OpenAiChat, &chat),
            ["thinking hard", "Hi."]
        );
        let messages = anthropic_thinking_stream(&["thinking ", "hard"], &["Hi."]);
        assert_eq!(
            stream_texts(StreamFormat::AnthropicMessages, &messages),
            ["thinking hard", "Hi."]
        );
        let mut responses = Vec::new();
        for (kind, output, piece) in [
            ("reasoning_text", 0, "thinking hard"),
            ("output_text", 1, "Hi."),
        ] {
            let event = format!("response.{kind}.delta");
            write(
                &mut responses,
                Some(&event),
                &json!({"type": event, "output_index": output, "content_index": 0, "delta": piece}),
            );
        }
        assert_eq!(
            stream_texts(StreamFormat::Responses, &responses),
            ["thinking hard", "Hi."]
        );
    }

    #[test]
    fn an_event_that_never_ends_is_cut_off_with_an_error_event_in_the_callers_format() {
        for format in [
            StreamFormat::OpenAiChat,
            StreamFormat::AnthropicMessages,
            StreamFormat::Prompt,
            StreamFormat::Responses,
        ] {
            let mut answer = AnswerStream::new(format, policy(GuardrailAction::Mask));
            let mut out =
                answer.feed(b"data: {\"choices\": [{\"index\": 0, \"delta\": {\"content\": \"");
            let piece = vec![b'a'; 64 << 10];
            let mut fed = 0;
            while fed <= MAX_EVENT_BYTES + piece.len() {
                out.extend(answer.feed(&piece));
                fed += piece.len();
                assert!(answer.buffer.len() <= MAX_EVENT_BYTES, "{format:?}");
            }
            assert_eq!(
                answer.failure(),
                Some("upstream_event_too_large"),
                "{format:?}"
            );
            assert!(answer.feed(b"\n\ndata: [DONE]\n\n").is_empty());
            assert!(answer.finish().is_empty());
            let shown = String::from_utf8_lossy(&out);
            assert!(!shown.contains("aaaa"), "{format:?}: {shown}");
            let (name, data) = shown
                .trim_end()
                .rsplit_once("data: ")
                .map(|(head, data)| (head.trim(), data))
                .unwrap();
            let data: Value = serde_json::from_str(data).unwrap();
            let message =
                "The provider sent a stream event longer than 4 MiB; the answer was stopped.";
            match format {
                StreamFormat::OpenAiChat | StreamFormat::Prompt => {
                    assert_eq!(data["error"]["code"], "upstream_event_too_large");
                    assert_eq!(data["error"]["type"], "server_error");
                    assert_eq!(data["error"]["message"], message);
                    let named = format == StreamFormat::Prompt;
                    assert_eq!(name == "event: error", named, "{shown}");
                }
                StreamFormat::AnthropicMessages => {
                    assert_eq!(name, "event: error");
                    assert_eq!(
                        data,
                        json!({"type": "error", "error": {"type": "api_error", "message": message}})
                    );
                }
                StreamFormat::Responses => {
                    assert_eq!(name, "event: error");
                    assert_eq!(data["type"], "error");
                    assert_eq!(data["code"], "upstream_event_too_large");
                }
            }
        }
    }

    #[test]
    fn a_last_event_without_its_separator_is_checked_too() {
        let mut stream = openai_stream("Write to bob@example.com.");
        // The upstream's last chunk carries text and lacks its blank line.
        stream.truncate(stream.len() - b"data: [DONE]\n\n".len());
        stream.extend_from_slice(
            br#"data: {"choices": [{"index": 0, "delta": {"content": " Or carol@example.org"}, "finish_reason": null}]}"#,
        );
        for reject in [false, true] {
            let action = if reject {
                GuardrailAction::Reject
            } else {
                GuardrailAction::Mask
            };
            let mut answer = AnswerStream::new(StreamFormat::OpenAiChat, policy(action));
            let mut out = answer.feed(&stream);
            out.extend(answer.finish());
            let shown = String::from_utf8_lossy(&out);
            assert!(!shown.contains("carol@"), "{shown}");
            if reject {
                assert_eq!(answer.failure(), Some("content_policy_violation"));
            } else {
                assert_eq!(text_of(&out), "Write to [EMAIL]. Or [EMAIL]");
                assert_eq!(answer.failure(), None);
            }
        }
    }

    #[test]
    fn a_finishing_choice_whose_delta_is_not_an_object_still_gets_its_held_text() {
        let mut input = Vec::new();
        write(
            &mut input,
            None,
            &json!({"choices": [{"index": 0, "delta": {"content": "Mail Bob at bob@example.com"}, "finish_reason": null}]}),
        );
        // Once `choices[0].delta.content = …` on a number: a panic in the body's poll.
        write(
            &mut input,
            None,
            &json!({"choices": [{"index": 0, "delta": 5, "finish_reason": "stop"}]}),
        );
        let mut answer = AnswerStream::new(StreamFormat::OpenAiChat, policy(GuardrailAction::Mask));
        let mut out = answer.feed(&input);
        out.extend(answer.finish());
        assert_eq!(text_of(&out), "Mail Bob at [EMAIL]");
    }
}
