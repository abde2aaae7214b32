//! The Responses API's stream: events written from neutral pieces for translated backends
//! ([`ResponsesEncoder`]), and an OpenAI Responses stream relayed as it comes with its usage read and
//! its error events scrubbed ([`ResponsesPassthrough`]).
//!
//! Every event names itself in `event:` and in its data's `type`, and carries a `sequence_number`.
//! An answer is `response.created`, `response.in_progress`, then per output item
//! `response.output_item.added`, its deltas (`response.content_part.added`,
//! `response.output_text.delta`… or `response.function_call_arguments.delta`…), its `….done` events
//! and `response.output_item.done`, and finally `response.completed` (or `response.incomplete`) with
//! the whole response and its usage. An error ends the stream with `error` and `response.failed`.

use std::sync::LazyLock;

use bytes::Bytes;
use serde_json::{Value, json};

use super::responses::{
    Echo, OutputItem, ResponseError, ResponseObject, counts, new_id, number, status_of, string,
};
use super::scrub::{self, LazySecrets};
use super::sse::{self, SseDecoder, SseEvent};
use super::stream::{Encode, Finish, Piece, TokenCounts, Transcode, openai_error_type, write_sse};
use crate::llm::Usage;

/// Which text an item holds.
#[derive(Clone, Copy, PartialEq)]
enum TextKind {
    /// The model's reasoning as it showed it (`reasoning_text` content).
    Reasoning,
    /// The answer's text (`output_text` content).
    Message,
}

/// One output item of the answer being written.
enum Item {
    Text {
        kind: TextKind,
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        /// The tool-call index of the pieces.
        tool: usize,
    },
}

impl Item {
    fn output(&self) -> OutputItem<'_> {
        match self {
            Self::Text {
                kind: TextKind::Reasoning,
                id,
                text,
            } => OutputItem::Reasoning { id, text },
            Self::Text {
                kind: TextKind::Message,
                id,
                text,
            } => OutputItem::Message { id, text },
            Self::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            } => OutputItem::Call {
                id,
                call_id,
                name,
                arguments,
            },
        }
    }
}

/// Writes one event: `kind` in `event:` and in its data's `type`, the next sequence number, then
/// the members `members` writes (each after a comma).
fn event(out: &mut Vec<u8>, sequence: &mut u64, kind: &str, members: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: {\"type\":");
    string(out, kind);
    out.extend_from_slice(b",\"sequence_number\":");
    number(out, *sequence);
    *sequence += 1;
    members(out);
    out.extend_from_slice(b"}\n\n");
}

/// `,"item_id":…,"output_index":…`, and for an item with content `,"content_index":0`.
fn place(out: &mut Vec<u8>, item: &OutputItem<'_>, index: usize) {
    out.extend_from_slice(b",\"item_id\":");
    string(out, item.id());
    out.extend_from_slice(b",\"output_index\":");
    number(out, index);
    if !matches!(item, OutputItem::Call { .. }) {
        out.extend_from_slice(b",\"content_index\":0");
    }
}

/// `,"output_index":…,"item":…`, the item whole or as it starts.
fn item_member(out: &mut Vec<u8>, item: &OutputItem<'_>, index: usize, done: bool) {
    out.extend_from_slice(b",\"output_index\":");
    number(out, index);
    out.extend_from_slice(b",\"item\":");
    item.write(out, done);
}

/// Responses API stream events written from pieces.
pub struct ResponsesEncoder {
    id: String,
    model: String,
    created_at: i64,
    echo: Echo,
    sequence: u64,
    started: bool,
    items: Vec<Item>,
    /// Index in `items` of the item still receiving deltas.
    open: Option<usize>,
    finish: Option<Finish>,
    counts: TokenCounts,
    ended: bool,
}

impl ResponsesEncoder {
    /// An encoder for `model`, repeating `echo` in the response objects it writes.
    pub fn new(model: &str, echo: Echo) -> Self {
        Self {
            id: new_id("resp"),
            model: model.to_string(),
            created_at: crate::clock::now_unix(),
            echo,
            sequence: 0,
            started: false,
            items: Vec::new(),
            open: None,
            finish: None,
            counts: TokenCounts::default(),
            ended: false,
        }
    }

    /// Writes an event holding the response as it stands, with its output items when `whole`.
    fn response_event(
        &mut self,
        kind: &str,
        status: &str,
        whole: bool,
        incomplete: Option<&str>,
        error: Option<ResponseError<'_>>,
        out: &mut Vec<u8>,
    ) {
        let output: Vec<OutputItem<'_>> = if whole {
            self.items.iter().map(Item::output).collect()
        } else {
            Vec::new()
        };
        let response = ResponseObject {
            id: &self.id,
            created_at: self.created_at,
            model: &self.model,
            status,
            incomplete,
            error,
            usage: whole.then_some(&self.counts),
            output: &output,
            echo: &self.echo,
        };
        event(out, &mut self.sequence, kind, |out| {
            out.extend_from_slice(b",\"response\":");
            response.write(out);
        });
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.response_event("response.created", "in_progress", false, None, None, out);
        self.response_event(
            "response.in_progress",
            "in_progress",
            false,
            None,
            None,
            out,
        );
    }

    /// Ends the open item with its `….done` events.
    fn close(&mut self, out: &mut Vec<u8>) {
        let Some(index) = self.open.take() else {
            return;
        };
        let item = self.items[index].output();
        let seq = &mut self.sequence;
        match item {
            OutputItem::Reasoning { text, .. } | OutputItem::Message { text, .. } => {
                let message = matches!(item, OutputItem::Message { .. });
                let kind = if message {
                    "response.output_text.done"
                } else {
                    "response.reasoning_text.done"
                };
                event(out, seq, kind, |out| {
                    place(out, &item, index);
                    out.extend_from_slice(b",\"text\":");
                    string(out, text);
                    if message {
                        out.extend_from_slice(b",\"logprobs\":[]");
                    }
                });
                event(out, seq, "response.content_part.done", |out| {
                    place(out, &item, index);
                    out.extend_from_slice(b",\"part\":");
                    item.write_part(out, text);
                });
            }
            OutputItem::Call {
                name, arguments, ..
            } => event(out, seq, "response.function_call_arguments.done", |out| {
                place(out, &item, index);
                out.extend_from_slice(b",\"name\":");
                string(out, name);
                out.extend_from_slice(b",\"arguments\":");
                string(out, arguments);
            }),
        }
        event(out, seq, "response.output_item.done", |out| {
            item_member(out, &item, index, true)
        });
    }

    /// Opens `item` as the next output item.
    fn open_item(&mut self, item: Item, out: &mut Vec<u8>) -> usize {
        self.close(out);
        let index = self.items.len();
        self.items.push(item);
        self.open = Some(index);
        let item = self.items[index].output();
        let seq = &mut self.sequence;
        event(out, seq, "response.output_item.added", |out| {
            item_member(out, &item, index, false)
        });
        if !matches!(item, OutputItem::Call { .. }) {
            event(out, seq, "response.content_part.added", |out| {
                place(out, &item, index);
                out.extend_from_slice(b",\"part\":");
                item.write_part(out, "");
            });
        }
        index
    }

    /// A delta of reasoning or of the answer's text, in an item of its kind.
    fn text(&mut self, kind: TextKind, t: &str, out: &mut Vec<u8>) {
        let index = match self.open {
            Some(i) if matches!(&self.items[i], Item::Text { kind: k, .. } if *k == kind) => i,
            _ => {
                let prefix = match kind {
                    TextKind::Reasoning => "rs",
                    TextKind::Message => "msg",
                };
                let item = Item::Text {
                    kind,
                    id: new_id(prefix),
                    text: String::new(),
                };
                self.open_item(item, out)
            }
        };
        if let Item::Text { text, .. } = &mut self.items[index] {
            text.push_str(t);
        }
        let item = self.items[index].output();
        let name = match kind {
            TextKind::Reasoning => "response.reasoning_text.delta",
            TextKind::Message => "response.output_text.delta",
        };
        event(out, &mut self.sequence, name, |out| {
            place(out, &item, index);
            out.extend_from_slice(b",\"delta\":");
            string(out, t);
            if kind == TextKind::Message {
                out.extend_from_slice(b",\"logprobs\":[]");
            }
        });
    }

    fn arguments(&mut self, tool: usize, fragment: &str, out: &mut Vec<u8>) {
        let found = self
            .items
            .iter()
            .position(|i| matches!(i, Item::Call { tool: t, .. } if *t == tool));
        let index = match found {
            Some(i) if self.open == Some(i) => i,
            // Arguments for a call whose item is done cannot be delivered in order.
            Some(_) => return,
            None => self.open_item(
                Item::Call {
                    id: new_id("fc"),
                    call_id: crate::llm::chat::new_call_id(),
                    name: String::new(),
                    arguments: String::new(),
                    tool,
                },
                out,
            ),
        };
        if fragment.is_empty() {
            return;
        }
        if let Item::Call { arguments, .. } = &mut self.items[index] {
            arguments.push_str(fragment);
        }
        let item = self.items[index].output();
        event(
            out,
            &mut self.sequence,
            "response.function_call_arguments.delta",
            |out| {
                place(out, &item, index);
                out.extend_from_slice(b",\"delta\":");
                string(out, fragment);
            },
        );
    }
}

impl Encode for ResponsesEncoder {
    fn piece(&mut self, piece: Piece, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match piece {
            Piece::Meta { model, .. } => {
                if !self.started
                    && let Some(m) = model.filter(|m| !m.is_empty())
                {
                    self.model = m;
                }
                self.start(out);
            }
            Piece::Text(t) => {
                if !t.is_empty() {
                    self.start(out);
                    self.text(TextKind::Message, &t, out);
                }
            }
            // Reasoning the model shows is its own output item, before the text it leads to.
            Piece::Reasoning(t) => {
                if !t.is_empty() {
                    self.start(out);
                    self.text(TextKind::Reasoning, &t, out);
                }
            }
            Piece::ToolStart { index, id, name } => {
                self.start(out);
                self.open_item(
                    Item::Call {
                        id: new_id("fc"),
                        call_id: id,
                        name,
                        arguments: String::new(),
                        tool: index,
                    },
                    out,
                );
            }
            Piece::ToolArgs { index, fragment } => {
                self.start(out);
                self.arguments(index, &fragment, out);
            }
            Piece::Finish(f) => {
                self.start(out);
                self.close(out);
                self.finish.get_or_insert(f);
            }
            Piece::Usage(c) => self.counts.merge(c),
            Piece::Error { status, message } => self.fail(status, &message, out),
            Piece::Done => self.finish(out),
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let Some(finish) = self.finish else {
            self.fail(502, super::stream::CUT_SHORT, out);
            return;
        };
        self.start(out);
        self.close(out);
        if self.items.is_empty() {
            // An answer always has an output item, if only an empty message.
            let item = Item::Text {
                kind: TextKind::Message,
                id: new_id("msg"),
                text: String::new(),
            };
            self.open_item(item, out);
            self.close(out);
        }
        self.ended = true;
        let (status, incomplete) = status_of(finish);
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.response_event(kind, status, true, incomplete, None, out);
    }

    fn fail(&mut self, status: u16, message: &str, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.start(out);
        self.ended = true;
        let code = if status == 429 {
            "upstream_rate_limited"
        } else {
            "upstream_stream_error"
        };
        event(out, &mut self.sequence, "error", |out| {
            out.extend_from_slice(b",\"code\":");
            string(out, code);
            out.extend_from_slice(b",\"message\":");
            string(out, message);
            out.extend_from_slice(b",\"param\":null");
        });
        let error = ResponseError {
            code: if status == 429 {
                "rate_limit_exceeded"
            } else {
                "server_error"
            },
            message,
            kind: openai_error_type(status),
        };
        self.response_event("response.failed", "failed", true, None, Some(error), out);
    }
}

/// Longest event a passthrough holds while waiting for its end; past it the bytes pass as they are.
const PASSTHROUGH_EVENT_CAP: usize = 1024 * 1024;

/// An OpenAI Responses stream relayed to a Responses caller as it comes, a whole event at a time (so
/// no part of an error event leaves before it is scrubbed), its usage read from the final response.
pub struct ResponsesPassthrough {
    sse: SseDecoder,
    events: Vec<SseEvent>,
    counts: Option<TokenCounts>,
    secrets: Box<dyn LazySecrets>,
    pending: Vec<u8>,
}

impl ResponsesPassthrough {
    /// A passthrough at the start of a stream; `secrets` are asked for only when an error event comes.
    pub fn new(secrets: Box<dyn LazySecrets>) -> Self {
        Self {
            sse: SseDecoder::new(),
            events: Vec::new(),
            counts: None,
            secrets,
            pending: Vec::new(),
        }
    }

    fn read_usage(&mut self) {
        for e in self.events.drain(..) {
            // Only the final events carry usage; the others are not parsed.
            if !e.data.contains("\"usage\"") {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(&e.data) else {
                continue;
            };
            if let Some(c) = v
                .get("response")
                .and_then(|r| r.get("usage"))
                .and_then(counts)
            {
                self.counts.get_or_insert_default().merge(c);
            }
        }
    }
}

/// Whether an event reports an error: named `error` or `response.failed`, or typed so in its data.
/// Every response object holds `"error": null`, so the general check would parse every event that
/// carries one (and scrub its ids and texts); these are the only events that carry a provider's words.
fn is_error_event(event: &[u8]) -> bool {
    let named = sse::lines(event).any(|line| {
        line.strip_prefix(b"event:").is_some_and(|name| {
            let name = name.trim_ascii();
            name == b"error" || name == b"response.failed"
        })
    });
    // Built once: building a searcher costs more than searching one event with it.
    static ERROR: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"\"type\":\"error\""));
    static FAILED: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"\"type\":\"response.failed\""));
    named || ERROR.find(event).is_some() || FAILED.find(event).is_some()
}

/// An error event scrubbed, or `None` when it is passed as it is.
fn scrub_event(event: &[u8], secrets: &mut dyn LazySecrets) -> Option<Vec<u8>> {
    if !is_error_event(event) {
        return None;
    }
    let unreadable = json!({"type": "error", "code": "upstream_stream_error",
        "message": "the provider sent an error this gateway cannot read", "param": null});
    let unreadable = serde_json::to_vec(&unreadable).expect("JSON values serialise");
    scrub::scrub_error_event(event, secrets.get(), &unreadable)
}

impl Transcode for ResponsesPassthrough {
    fn feed(&mut self, bytes: &[u8]) -> Bytes {
        self.sse.feed(bytes, &mut self.events);
        self.read_usage();
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(len) = scrub::event_end(&self.pending[start..]) {
            let event = &self.pending[start..start + len];
            match scrub_event(event, self.secrets.as_mut()) {
                Some(clean) => out.extend_from_slice(&clean),
                None => out.extend_from_slice(event),
            }
            start += len;
        }
        self.pending.drain(..start);
        if self.pending.len() > PASSTHROUGH_EVENT_CAP {
            out.append(&mut self.pending);
        }
        Bytes::from(out)
    }

    fn finish(&mut self) -> Bytes {
        self.sse.finish(&mut self.events);
        self.read_usage();
        let rest = std::mem::take(&mut self.pending);
        match scrub_event(&rest, self.secrets.as_mut()) {
            Some(clean) => Bytes::from(clean),
            None => Bytes::from(rest),
        }
    }

    fn fail(&mut self, code: &str, message: &str) -> Bytes {
        let mut out = Vec::new();
        write_sse(
            &mut out,
            Some("error"),
            &json!({"type": "error", "code": code, "message": message, "param": null}),
        );
        Bytes::from(out)
    }

    fn usage(&self) -> Option<Usage> {
        self.counts.map(|c| c.usage())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(bytes: &[u8]) -> Vec<(String, Value)> {
        let mut d = SseDecoder::new();
        let mut events = Vec::new();
        d.feed(bytes, &mut events);
        d.finish(&mut events);
        events
            .into_iter()
            .map(|e| {
                let v: Value = serde_json::from_str(&e.data).unwrap();
                (e.event.unwrap_or_default(), v)
            })
            .collect()
    }

    #[test]
    fn writes_the_event_sequence_of_text_then_a_call() {
        let mut e = ResponsesEncoder::new("m", Echo::default());
        let mut out = Vec::new();
        for p in [
            Piece::Meta {
                id: None,
                model: Some("up".into()),
            },
            Piece::Text("Let me ".into()),
            Piece::Text("check.".into()),
            Piece::ToolStart {
                index: 0,
                id: "toolu_1".into(),
                name: "weather".into(),
            },
            Piece::ToolArgs {
                index: 0,
                fragment: "{\"city\":".into(),
            },
            Piece::ToolArgs {
                index: 0,
                fragment: "\"Paris\"}".into(),
            },
            Piece::Finish(Finish::ToolCalls),
            Piece::Usage(TokenCounts {
                input: Some(10),
                output: Some(5),
                ..Default::default()
            }),
            Piece::Done,
        ] {
            e.piece(p, &mut out);
        }
        let ev = events(&out);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, (name, data)) in ev.iter().enumerate() {
            assert_eq!(data["type"], name.as_str());
            assert_eq!(data["sequence_number"], i);
        }
        assert_eq!(ev[0].1["response"]["model"], "up");
        assert_eq!(ev[6].1["text"], "Let me check.");
        assert_eq!(ev[12].1["arguments"], "{\"city\":\"Paris\"}");
        let done = &ev[14].1["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][1]["call_id"], "toolu_1");
        assert_eq!(done["usage"]["total_tokens"], 15);
    }

    #[test]
    fn shown_reasoning_streams_as_a_reasoning_item_before_the_message() {
        let mut e = ResponsesEncoder::new("m", Echo::default());
        let mut out = Vec::new();
        for p in [
            Piece::Reasoning("The user ".into()),
            Piece::Reasoning("says hi.".into()),
            Piece::Text("Hello.".into()),
            Piece::Finish(Finish::Stop),
            Piece::Done,
        ] {
            e.piece(p, &mut out);
        }
        let ev = events(&out);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.reasoning_text.delta",
                "response.reasoning_text.delta",
                "response.reasoning_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(ev[2].1["item"]["type"], "reasoning");
        assert_eq!(ev[3].1["part"]["type"], "reasoning_text");
        assert_eq!(ev[4].1["delta"], "The user ");
        assert_eq!(ev[6].1["text"], "The user says hi.");
        let done = &ev[15].1["response"];
        assert_eq!(
            done["output"][0]["content"],
            json!([{"type": "reasoning_text", "text": "The user says hi."}])
        );
        assert_eq!(done["output"][1]["content"][0]["text"], "Hello.");
        assert_eq!(ev[9].1["output_index"], 1);
    }

    #[test]
    fn an_unfinished_or_failed_stream_ends_in_error_and_failed() {
        let mut e = ResponsesEncoder::new("m", Echo::default());
        let mut out = Vec::new();
        e.piece(Piece::Text("part".into()), &mut out);
        e.finish(&mut out);
        e.piece(Piece::Text("more".into()), &mut out);
        let ev = events(&out);
        let n = ev.len();
        assert_eq!(ev[n - 2].0, "error");
        assert_eq!(ev[n - 2].1["code"], "upstream_stream_error");
        assert_eq!(ev[n - 1].0, "response.failed");
        assert_eq!(ev[n - 1].1["response"]["status"], "failed");
    }

    #[test]
    fn passthrough_reads_usage_and_scrubs_errors_wherever_split() {
        let ok = b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"error\":null,\"usage\":{\"input_tokens\":7,\"output_tokens\":3,\"input_tokens_details\":{\"cached_tokens\":2}}}}\n\n";
        let error = b"event: error\ndata: {\"type\":\"error\",\"message\":\"bad key sk-SECRETSECRET1\"}\n\n";
        let all = [&ok[..], &error[..]].concat();
        for cut in 0..=all.len() {
            let mut p = ResponsesPassthrough::new(Box::new(vec!["sk-SECRETSECRET1".to_string()]));
            let mut out = p.feed(&all[..cut]).to_vec();
            out.extend_from_slice(&p.feed(&all[cut..]));
            out.extend_from_slice(&p.finish());
            let text = String::from_utf8_lossy(&out);
            assert!(text.starts_with(std::str::from_utf8(ok).unwrap()), "{cut}");
            assert!(!text.contains("SECRETSECRET"), "{cut}: {text}");
            assert!(text.contains("[redacted]"));
            assert_eq!(
                p.usage(),
                Some(Usage {
                    input: 7,
                    output: 3,
                    cache_read: 2,
                    cache_write: 0
                })
            );
        }
    }
}
