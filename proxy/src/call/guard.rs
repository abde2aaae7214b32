//! Guardrails on a model call: the caller's text checked before it goes upstream (masked, or the call
//! refused), and the answer's text checked on its way back (see `guard_answer`).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;
use tollgate_snapshot::{GuardrailEndpoint, RouteIdx, Snapshot};

use super::ask::Endpoint;
use super::record::Call;
use crate::error::ApiError;
use crate::guard::{AnswerStream, Decision, Policy, Refusal, StreamFormat, apply, json_text};
use crate::llm::json_scan;
use crate::llm::openai::Split;

/// The guardrail endpoint a model endpoint counts as.
pub(super) fn guardrail_endpoint(endpoint: Endpoint) -> GuardrailEndpoint {
    match endpoint {
        Endpoint::Chat | Endpoint::Responses => GuardrailEndpoint::Chat,
        Endpoint::Messages | Endpoint::CountTokens => GuardrailEndpoint::Messages,
        Endpoint::Prompt { .. } => GuardrailEndpoint::Prompts,
        Endpoint::Embeddings => GuardrailEndpoint::Embeddings,
    }
}

/// The rules of one side of a call on `route` (route's guardrails first, then its consumer's), or
/// `None` when nothing is checked: from the snapshot's tables (`policies`), made once.
pub(super) fn policy(
    snapshot: &Snapshot,
    route: RouteIdx,
    call: &Call,
    endpoint: Endpoint,
    request: bool,
) -> Option<Arc<Policy>> {
    policy_of(snapshot, route, call, guardrail_endpoint(endpoint), request)
}

/// [`policy`] for a guardrail endpoint.
fn policy_of(
    snapshot: &Snapshot,
    route: RouteIdx,
    call: &Call,
    endpoint: GuardrailEndpoint,
    request: bool,
) -> Option<Arc<Policy>> {
    super::policies::policy(
        snapshot,
        call.snapshot.as_ref(),
        route,
        call.consumer,
        endpoint,
        request,
    )
}

/// Notes decisions in the call's record.
pub(super) fn note(call: &mut Call, decisions: &[Decision]) {
    call.note_guardrails(decisions);
}

/// The 400 a Reject rule gives: names the rule, never the text it matched.
pub(super) fn rejected(rule: &str, side: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "content_policy_violation",
        format!("The {side} was refused by the guardrail rule {rule}."),
    )
}

fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::TooLong { unit, limit } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "content_policy_violation",
            format!(
                "The request's text is longer than a guardrail of this API allows ({limit} {unit})."
            ),
        ),
        Refusal::Broken(id) => ApiError::upstream(
            StatusCode::SERVICE_UNAVAILABLE,
            "guardrail_unavailable",
            format!(
                "The guardrail {id} of this API cannot be used (see GuardrailsValid in the route's or consumer's status), so calls it checks are refused."
            ),
        ),
    }
}

/// Whether a request's member holds text a model reads (the rest are roles, ids, types, URLs).
fn text_key(key: &str) -> bool {
    matches!(
        key,
        "content" | "text" | "input" | "system" | "instructions" | "prompt"
    )
}

/// Every text string of a request document, to `visit`.
pub(super) fn texts(doc: &mut Value, visit: &mut dyn FnMut(&mut String)) {
    fn walk(value: &mut Value, text: bool, visit: &mut dyn FnMut(&mut String)) {
        match value {
            Value::String(s) if text => visit(s),
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, text, visit)),
            Value::Object(members) => {
                for (key, v) in members.iter_mut() {
                    walk(v, text_key(key), visit);
                }
            }
            _ => {}
        }
    }
    if let Value::Object(members) = doc {
        for (key, v) in members.iter_mut() {
            if key == "messages" {
                walk(v, false, visit);
            } else if text_key(key) {
                walk(v, true, visit);
            }
        }
    }
}

/// A walker over the text strings of a document (`texts` for requests, `answer_texts` for answers).
type TextWalker = fn(&mut Value, &mut dyn FnMut(&mut String));

/// Decisions gathered over the texts of one document, and the first Reject rule that matched.
#[derive(Default)]
struct Verdicts {
    decisions: Vec<Decision>,
    refusal: Option<Arc<str>>,
}

impl Verdicts {
    /// Checks one text; its masked form when a Mask rule changed it (and nothing was refused).
    fn check(&mut self, policy: &Policy, text: &str) -> Option<String> {
        self.masks(policy, text)
            .map(|masks| apply(text, &masks, 0..text.len()))
    }

    /// Checks one text; the spans to mask and their tokens when a Mask rule matched (and nothing was
    /// refused).
    fn masks(&mut self, policy: &Policy, text: &str) -> Option<Vec<(Range<usize>, Arc<str>)>> {
        if self.refusal.is_some() {
            return None;
        }
        let checked = policy.check_whole(text);
        if self.decisions.is_empty() {
            // The first text's decisions, the usual ones, taken as they are (distinct already).
            self.decisions = checked.decisions;
        } else {
            for d in checked.decisions {
                if !self.decisions.contains(&d) {
                    self.decisions.push(d);
                }
            }
        }
        if let Some(rule) = checked.rejected {
            self.refusal = Some(rule);
            None
        } else if !checked.masks.is_empty() {
            Some(checked.masks)
        } else {
            None
        }
    }

    /// Notes the decisions in the call; the 400 of the first Reject rule (`side`: `request`,
    /// `answer`, …, for its message).
    fn settle(self, call: &mut Call, side: &str) -> Result<(), ApiError> {
        note(call, &self.decisions);
        if let Some(rule) = self.refusal {
            call.fail("content_policy_violation");
            return Err(rejected(&rule, side));
        }
        Ok(())
    }
}

/// Checks every text `walk` finds in `doc` against `policy`, masking in place, and notes the decisions
/// in the call: whether anything was masked, or the 400 of the first Reject rule (`side`: `request` or
/// `answer`, for its message).
fn check_document(
    policy: &Policy,
    doc: &mut Value,
    walk: TextWalker,
    call: &mut Call,
    side: &str,
) -> Result<bool, ApiError> {
    let (changed, verdicts) = mask_value(policy, doc, walk);
    verdicts.settle(call, side)?;
    Ok(changed)
}

/// Checks the texts `walk` finds in `doc`, masking in place: whether any was masked, and the verdicts.
fn mask_value(policy: &Policy, doc: &mut Value, walk: TextWalker) -> (bool, Verdicts) {
    let mut verdicts = Verdicts::default();
    let mut changed = false;
    walk(doc, &mut |s| {
        if let Some(masked) = verdicts.check(policy, s) {
            *s = masked;
            changed = true;
        }
    });
    (changed, verdicts)
}

/// Which members of a request hold text, as [`texts`] walks them: at the top, `messages` (looked
/// into) and those [`text_key`] names; below, those it names.
fn request_text(_: bool, level: usize, key: &str) -> Option<bool> {
    let text = text_key(key);
    match level {
        0 if key == "messages" => Some(false),
        0 if !text => None,
        _ => Some(text),
    }
}

/// The texts of a request body (`answer`: `None`) or of a whole answer of that shape, as [`texts`]
/// and [`AnswerShape::walk`] find them, found in the bytes; `None` when the body is not JSON.
pub(super) fn texts_of(body: &[u8], answer: Option<AnswerShape>) -> Option<Vec<String>> {
    let (found_as, walk) = match answer {
        Some(shape) => (Texts::Answer(shape), shape.walk()),
        None => (
            Texts::Walked {
                select: request_text,
                object_only: true,
            },
            texts as TextWalker,
        ),
    };
    if let Ok(json) = std::str::from_utf8(body)
        && let Some(found) = found_texts(json, found_as)
    {
        return Some(found.into_iter().map(|f| f.text.into_owned()).collect());
    }
    let mut doc = serde_json::from_slice::<Value>(body).ok()?;
    let mut collected = Vec::new();
    walk(&mut doc, &mut |s| collected.push(s.clone()));
    Some(collected)
}

/// Which members of an answer hold text: those [`answer_key`] names and everything under them (a
/// prompt API's answer, whose `output` may be any JSON).
fn answer_text(text: bool, _: usize, key: &str) -> Option<bool> {
    Some(text || answer_key(key.as_bytes()))
}

/// The keys of the members of an answer that hold text the model wrote (OpenAI's `content`,
/// Anthropic's and the Responses API's `text`, a prompt API's `output`).
fn answer_key(key: &[u8]) -> bool {
    matches!(key, b"content" | b"text" | b"output")
}

/// An OpenAI chat answer's text: those [`chat_answer_key`] names and everything under them.
fn chat_answer_text(text: bool, _: usize, key: &str) -> Option<bool> {
    Some(text || chat_answer_key(key.as_bytes()))
}

/// [`answer_key`], and the reasoning a model shows, `message.reasoning_content` (DeepSeek's and
/// vLLM's name, and Tollgate's for translated thinking) or `message.reasoning`.
fn chat_answer_key(key: &[u8]) -> bool {
    answer_key(key) || matches!(key, b"reasoning_content" | b"reasoning")
}

/// An Anthropic answer's text: its content blocks, thinking included, but not a thinking block's
/// `signature` nor a redacted thinking block's `data`: they are opaque and signed, and the provider
/// refuses a conversation that sends them back altered.
fn messages_answer_text(text: bool, level: usize, key: &str) -> Option<bool> {
    if text && level == 1 && (key == "signature" || key == "data") {
        return None;
    }
    answer_text(text, level, key)
}

/// A Responses API answer's text: its output items, shown reasoning included, but not a reasoning
/// item's `encrypted_content`, which is opaque.
fn responses_answer_text(text: bool, level: usize, key: &str) -> Option<bool> {
    if key == "encrypted_content" {
        return None;
    }
    answer_text(text, level, key)
}

/// How the whole answers of an endpoint hold their text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AnswerShape {
    /// OpenAI chat completions.
    Chat,
    /// Anthropic Messages.
    Messages,
    /// The Responses API.
    Responses,
    /// A prompt API's answer.
    Prompt,
}

impl AnswerShape {
    /// The shape of `endpoint`'s answers (embeddings and token counts hold no text: see
    /// [`guard_answer`]).
    pub(super) fn of(endpoint: Endpoint) -> Self {
        match endpoint {
            Endpoint::Chat | Endpoint::Embeddings => AnswerShape::Chat,
            Endpoint::Messages | Endpoint::CountTokens => AnswerShape::Messages,
            Endpoint::Responses => AnswerShape::Responses,
            Endpoint::Prompt { .. } => AnswerShape::Prompt,
        }
    }

    /// Which members hold text, for the walk in a document's bytes.
    fn select(self) -> json_text::Select {
        match self {
            AnswerShape::Chat => chat_answer_text,
            AnswerShape::Messages => messages_answer_text,
            AnswerShape::Responses => responses_answer_text,
            AnswerShape::Prompt => answer_text,
        }
    }

    /// The same walk over a document read into a value.
    fn walk(self) -> TextWalker {
        match self {
            AnswerShape::Chat => |doc, visit| select_texts(doc, chat_answer_text, visit),
            AnswerShape::Messages => |doc, visit| select_texts(doc, messages_answer_text, visit),
            AnswerShape::Responses => |doc, visit| select_texts(doc, responses_answer_text, visit),
            AnswerShape::Prompt => |doc, visit| select_texts(doc, answer_text, visit),
        }
    }
}

/// The strings of `doc` that `select` marks as text, to `visit`: the walk `json_text::find_texts`
/// makes in a document's bytes, made over its value.
fn select_texts(doc: &mut Value, select: json_text::Select, visit: &mut dyn FnMut(&mut String)) {
    fn walk(
        value: &mut Value,
        text: bool,
        level: usize,
        select: json_text::Select,
        visit: &mut dyn FnMut(&mut String),
    ) {
        match value {
            Value::String(s) if text => visit(s),
            Value::Array(items) => {
                for v in items {
                    walk(v, text, level, select, visit);
                }
            }
            Value::Object(members) => {
                for (key, v) in members.iter_mut() {
                    if let Some(inner) = select(text, level, key) {
                        walk(v, inner, level + 1, select, visit);
                    }
                }
            }
            _ => {}
        }
    }
    walk(doc, false, 0, select, visit);
}

/// What checking a document in its own bytes came to; with a request's members where they lie in
/// the bytes that go on (see [`Texts::Request`]).
enum Spliced {
    /// Nothing was masked: the bytes go on as they came.
    Unchanged(Option<Split>),
    /// The bytes with the masked texts in place of the originals.
    Masked(Vec<u8>, Option<Split>),
}

/// How the texts of a body are found in its bytes.
#[derive(Clone, Copy)]
enum Texts {
    /// A request's, picked by the validating scan that reads a request's top level
    /// (`json_scan::object_members_picking`): a body it accepts is known to be one valid JSON
    /// object, and reading it as a request needs no second validation.
    Request,
    /// The strings `select` marks, found by a walk that does not validate (`json_text::find_texts`);
    /// with `object_only`, only in a body that begins with `{`.
    Walked {
        select: json_text::Select,
        object_only: bool,
    },
    /// A whole answer's, of this shape: where only a member's key makes text (chat and prompt
    /// answers), found by hopping from string to string (`json_text::find_keyed_texts`), else
    /// by the walk.
    Answer(AnswerShape),
}

/// Checks the texts of `body` without reading it into a value: each text is found in the bytes,
/// checked, and only a masked one is written back, spliced over its literal. `None` when the texts
/// cannot be found that way (the caller finds them another way then). With `admit`, the texts'
/// length is held against the policy's limits first.
fn check_in_place(
    policy: &Policy,
    body: &[u8],
    texts: Texts,
    admit: bool,
    call: &mut Call,
    side: &str,
) -> Option<Result<Spliced, ApiError>> {
    let json = json_text::utf8(body)?;
    let mut split = None;
    let found = match texts {
        Texts::Request => {
            let (members, picked) = json_scan::object_members_picking(json, request_text)?;
            split = Split::of(json, members);
            let mut found = Vec::with_capacity(picked.len());
            for (at, escaped) in picked {
                found.push(json_text::found_at(json, at, escaped)?);
            }
            found
        }
        texts => found_texts(json, texts)?,
    };
    if admit {
        // Counting the characters costs a look at every byte: only a length limit needs it.
        let chars = if policy.max_chars.is_some() || policy.max_tokens.is_some() {
            found.iter().map(|f| f.text.chars().count()).sum()
        } else {
            0
        };
        if let Err(e) = admit_chars(policy, chars, call) {
            return Some(Err(e));
        }
    }
    if policy.rules.is_empty() {
        return Some(Ok(Spliced::Unchanged(split)));
    }
    // A request's texts were picked by the scan that validates it.
    let valid = matches!(texts, Texts::Request);
    let (masked, verdicts) = mask_found_moving(policy, json, &found, valid);
    if let Err(e) = verdicts.settle(call, side) {
        return Some(Err(e));
    }
    Some(Ok(match masked {
        None => Spliced::Unchanged(split),
        Some((json, shifts)) => Spliced::Masked(
            json.into_bytes(),
            split.map(|s| s.moved(|at| json_text::moved(&shifts, at))),
        ),
    }))
}

/// The texts of `json`, found as `texts` says (a request's by the walk, which finds what the
/// validating scan picks); `None` when they cannot be found that way.
fn found_texts(json: &str, texts: Texts) -> Option<Vec<json_text::Found<'_>>> {
    match texts {
        Texts::Request => json_text::find_texts(json, request_text),
        Texts::Walked {
            select,
            object_only,
        } => {
            if object_only && json.trim_start().as_bytes().first() != Some(&b'{') {
                return None;
            }
            json_text::find_texts(json, select)
        }
        Texts::Answer(AnswerShape::Chat) => json_text::find_keyed_texts(json, chat_answer_key),
        Texts::Answer(AnswerShape::Prompt) => json_text::find_keyed_texts(json, answer_key),
        Texts::Answer(shape @ (AnswerShape::Messages | AnswerShape::Responses)) => {
            json_text::find_texts(json, shape.select())
        }
    }
}

/// Checks the texts `found` in `json`: `json` with the masked ones spliced in, if any were masked,
/// and the verdicts.
#[cfg(test)]
fn mask_found(
    policy: &Policy,
    json: &str,
    found: &[json_text::Found<'_>],
) -> (Option<String>, Verdicts) {
    let (masked, verdicts) = mask_found_moving(policy, json, found, false);
    (masked.map(|(json, _)| json), verdicts)
}

/// [`mask_found`], and how the masked document's bytes moved; `valid`: `json` is known to be
/// valid JSON (see `json_text::splice_edited`).
fn mask_found_moving(
    policy: &Policy,
    json: &str,
    found: &[json_text::Found<'_>],
    valid: bool,
) -> (Option<(String, json_text::Shifts)>, Verdicts) {
    let mut verdicts = Verdicts::default();
    let mut edited = Vec::with_capacity(found.len());
    for f in found {
        if let Some(masks) = verdicts.masks(policy, &f.text) {
            edited.push((f, masks));
        }
    }
    let masked = (!edited.is_empty()).then(|| json_text::splice_edited(json, &edited, valid));
    (masked, verdicts)
}

/// A request body past the guardrails: the body to send on and, when the validating scan read it
/// (masking only edits inside its strings), its top-level members' places in it, so that reading it
/// as a request needs no second pass (see `route_call`).
pub struct GuardedRequest {
    /// The body to send on (masked where a Mask rule matched).
    pub body: Bytes,
    /// Its members, when already split.
    pub split: Option<Split>,
}

/// Checks the caller's text: the body to send on (masked where a Mask rule matched), or the refusal.
pub fn guard_request(
    snapshot: &Snapshot,
    route: RouteIdx,
    endpoint: Endpoint,
    body: Bytes,
    call: &mut Call,
) -> Result<GuardedRequest, ApiError> {
    let unchecked = |body| GuardedRequest { body, split: None };
    let Some(policy) = policy(snapshot, route, call, endpoint, true) else {
        return Ok(unchecked(body));
    };
    // The validating scan first; a body it refuses (or whose texts do not decode) is walked as
    // before, and read as a request later says what is wrong with it.
    let walked = Texts::Walked {
        select: request_text,
        object_only: true,
    };
    for texts in [Texts::Request, walked] {
        match check_in_place(&policy, &body, texts, true, call, "request") {
            Some(Ok(Spliced::Unchanged(split))) => return Ok(GuardedRequest { body, split }),
            Some(Ok(Spliced::Masked(bytes, split))) => {
                return Ok(GuardedRequest {
                    body: Bytes::from(bytes),
                    split,
                });
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    // A body that is not JSON is refused with its own 400 when it is read as a request.
    let Ok(mut doc) = serde_json::from_slice::<Value>(&body) else {
        if let Some(id) = &policy.broken {
            return Err(refused(Refusal::Broken(id.clone())));
        }
        return Ok(unchecked(body));
    };
    let mut chars = 0usize;
    texts(&mut doc, &mut |s| chars += s.chars().count());
    admit_chars(&policy, chars, call)?;
    if policy.rules.is_empty() {
        return Ok(unchecked(body));
    }
    if !check_document(&policy, &mut doc, texts, call, "request")? {
        return Ok(unchecked(body));
    }
    Ok(unchecked(Bytes::from(
        serde_json::to_vec(&doc).expect("a JSON value encodes"),
    )))
}

/// Refuses a request whose texts, `chars` characters in all, are longer than `policy` allows, or
/// that an unusable guardrail checks.
fn admit_chars(policy: &Policy, chars: usize, call: &mut Call) -> Result<(), ApiError> {
    policy.admit(chars).map_err(|r| {
        let error = refused(r);
        call.fail(error.code);
        error
    })
}

/// Checks the answer's text on its way to the caller: a whole answer is read, checked and masked here
/// (a Reject rule makes it a 400); a streamed one is checked as it flows (see `guard::AnswerStream`).
pub async fn guard_answer(
    snapshot: &Snapshot,
    route: RouteIdx,
    endpoint: Endpoint,
    mut response: http::Response<super::body::ResponseBody>,
    call: &mut Call,
) -> Result<http::Response<super::body::ResponseBody>, ApiError> {
    let Some(policy) = policy(snapshot, route, call, endpoint, false) else {
        return Ok(response);
    };
    // Embeddings and token counts answer with numbers, not text.
    if policy.rules.is_empty()
        || !response.status().is_success()
        || matches!(endpoint, Endpoint::Embeddings | Endpoint::CountTokens)
    {
        return Ok(response);
    }
    let streamed = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streamed {
        // Embeddings and token counts do not stream (and returned above).
        let Some(format) = stream_format(endpoint) else {
            return Ok(response);
        };
        response
            .body_mut()
            .guard_with(AnswerStream::new(format, policy));
        return Ok(response);
    }
    let body = read_whole_answer(&mut response, call).await?;
    let shape = AnswerShape::of(endpoint);
    match check_in_place(&policy, &body, Texts::Answer(shape), false, call, "answer") {
        Some(Ok(Spliced::Unchanged(_))) => return Ok(with_body(response, body)),
        Some(Ok(Spliced::Masked(bytes, _))) => return Ok(with_body(response, Bytes::from(bytes))),
        Some(Err(e)) => return Err(e),
        None => {}
    }
    let Ok(mut doc) = serde_json::from_slice::<Value>(&body) else {
        return Ok(with_body(response, body));
    };
    let changed = check_document(&policy, &mut doc, shape.walk(), call, "answer")?;
    // Unchanged answers keep their own bytes.
    let bytes = if changed {
        Bytes::from(serde_json::to_vec(&doc).expect("a JSON value encodes"))
    } else {
        body
    };
    Ok(with_body(response, bytes))
}

/// The stream format of an endpoint's streamed answers, if it streams.
pub(super) fn stream_format(endpoint: Endpoint) -> Option<StreamFormat> {
    match endpoint {
        Endpoint::Chat => Some(StreamFormat::OpenAiChat),
        Endpoint::Messages => Some(StreamFormat::AnthropicMessages),
        Endpoint::Prompt { .. } => Some(StreamFormat::Prompt),
        Endpoint::Responses => Some(StreamFormat::Responses),
        Endpoint::Embeddings | Endpoint::CountTokens => None,
    }
}

/// Reads a whole (non-stream) answer's body; the call record takes its usage on the way.
pub(super) async fn read_whole_answer(
    response: &mut http::Response<super::body::ResponseBody>,
    call: &mut Call,
) -> Result<Bytes, ApiError> {
    response.body_mut().read_answer(call).await.map_err(|_| {
        ApiError::upstream(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "The provider's answer broke off before it was complete.",
        )
    })
}

/// `response` with `bytes` for its body (read by [`read_whole_answer`]), the cache's copy handed to
/// the new body, and `Content-Length` dropped since masking may have changed the length.
pub(super) fn with_body(
    response: http::Response<super::body::ResponseBody>,
    bytes: Bytes,
) -> http::Response<super::body::ResponseBody> {
    let (mut parts, mut old) = response.into_parts();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let mut new = super::body::ResponseBody::full(bytes);
    old.hand_copy_to(&mut new);
    http::Response::from_parts(parts, new)
}

/// Every string value in a tool call's arguments (tools take free-form JSON: any string may be text).
pub(super) fn argument_texts(doc: &mut Value, visit: &mut dyn FnMut(&mut String)) {
    match doc {
        Value::String(s) => visit(s),
        Value::Array(items) => items.iter_mut().for_each(|v| argument_texts(v, visit)),
        Value::Object(members) => members.values_mut().for_each(|v| argument_texts(v, visit)),
        _ => {}
    }
}

/// The text of a tool result: `content[].text` and every string of `structuredContent`.
pub(super) fn tool_result_texts(doc: &mut Value, visit: &mut dyn FnMut(&mut String)) {
    if let Some(items) = doc.get_mut("content").and_then(Value::as_array_mut) {
        for item in items {
            if let Some(Value::String(s)) = item.get_mut("text") {
                visit(s);
            }
        }
    }
    if let Some(structured) = doc.get_mut("structuredContent") {
        argument_texts(structured, visit);
    }
}

/// Checks the arguments of an MCP `tools/call` on `route` (a REST operation's or an upstream MCP
/// server's tool) against the guardrails of the `Mcp` endpoint: masked in place, or the refusal
/// (which the MCP endpoint gives as a JSON-RPC error).
pub fn guard_tool_arguments(
    snapshot: &Snapshot,
    route: RouteIdx,
    arguments: &mut Value,
    call: &mut Call,
) -> Result<(), ApiError> {
    let Some(policy) = policy_of(snapshot, route, call, GuardrailEndpoint::Mcp, true) else {
        return Ok(());
    };
    let mut chars = 0usize;
    argument_texts(arguments, &mut |s| chars += s.chars().count());
    policy.admit(chars).map_err(|r| {
        let error = refused(r);
        call.fail(error.code);
        error
    })?;
    if !policy.rules.is_empty() {
        check_document(&policy, arguments, argument_texts, call, "tool call")?;
    }
    Ok(())
}

/// Checks a tool's result on its way back, like [`guard_tool_arguments`] (answer side).
pub fn guard_tool_result(
    snapshot: &Snapshot,
    route: RouteIdx,
    result: &mut Value,
    call: &mut Call,
) -> Result<(), ApiError> {
    match policy_of(snapshot, route, call, GuardrailEndpoint::Mcp, false) {
        Some(policy) if !policy.rules.is_empty() => {
            check_document(&policy, result, tool_result_texts, call, "tool result").map(|_| ())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    //! The texts found and masked in a document's own bytes against the same document read into a
    //! `serde_json::Value`, walked and written again (the way it was done before, and still the way
    //! for a body the walk cannot follow).

    use proptest::prelude::*;
    use tollgate_snapshot::{Detector, GuardRule, GuardrailAction, Matcher, Pattern, default_mask};

    use super::*;

    fn policy() -> Policy {
        let detector = |name: &str, d: Detector, action| GuardRule {
            name: name.into(),
            matcher: Matcher::Detector(d),
            action,
            mask_as: default_mask(Some(d)).into(),
        };
        Policy {
            rules: vec![
                detector("emails", Detector::Email, GuardrailAction::Mask),
                detector("phones", Detector::Phone, GuardrailAction::Mask),
                detector("cards", Detector::CreditCard, GuardrailAction::Mask),
                detector("ips", Detector::IpAddress, GuardrailAction::Monitor),
                GuardRule {
                    name: "forbidden".into(),
                    matcher: Matcher::Pattern(Pattern::new("forbidden").unwrap()),
                    action: GuardrailAction::Reject,
                    mask_as: "[X]".into(),
                },
            ],
            ..Policy::default()
        }
    }

    const SHAPES: [AnswerShape; 4] = [
        AnswerShape::Chat,
        AnswerShape::Messages,
        AnswerShape::Responses,
        AnswerShape::Prompt,
    ];

    fn text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("mail bob@example.com now".to_string()),
            Just("call +1 415 555 0100".to_string()),
            Just("card 4111 1111 1111 1111.".to_string()),
            Just("from 10.0.0.1".to_string()),
            Just("a forbidden word".to_string()),
            Just("\"quoted\"\n\\tab\t".to_string()),
            Just("é ünï 😀 \u{1}".to_string()),
            "\\PC{0,12}",
        ];
        prop::collection::vec(piece, 0..4).prop_map(|p| p.join(" "))
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("content"),
            Just("text"),
            Just("input"),
            Just("system"),
            Just("instructions"),
            Just("prompt"),
            Just("messages"),
            Just("output"),
            Just("role"),
            Just("model"),
            Just("tools"),
            Just("cont\"ent"),
            Just("reasoning_content"),
            Just("reasoning"),
            Just("thinking"),
            Just("signature"),
            Just("data"),
            Just("encrypted_content"),
        ]
        .prop_map(str::to_string)
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 48, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn document() -> impl Strategy<Value = (Value, bool)> {
        (
            prop::collection::btree_map(key(), value(), 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            any::<bool>(),
        )
    }

    /// Both ways agree on `doc` written compactly or with white space (`pretty`).
    fn agree(doc: &Value, pretty: bool, found_as: Texts, walk: TextWalker) {
        let policy = policy();
        let json = if pretty {
            serde_json::to_string_pretty(doc).unwrap()
        } else {
            serde_json::to_string(doc).unwrap()
        };
        // Read back from the text, as the slow way reads a body (floats need not come back exact).
        let mut by_value: Value = serde_json::from_str(&json).unwrap();
        let mut value_chars = 0;
        walk(&mut by_value, &mut |s| value_chars += s.chars().count());
        let (changed, value_verdicts) = mask_value(&policy, &mut by_value, walk);

        let found = found_texts(&json, found_as).expect("the walk follows valid JSON");
        let chars: usize = found.iter().map(|f| f.text.chars().count()).sum();
        assert_eq!(chars, value_chars, "{json}");
        let (masked, byte_verdicts) = mask_found(&policy, &json, &found);
        assert_eq!(value_verdicts.refusal, byte_verdicts.refusal, "{json}");
        let mut a = value_verdicts.decisions;
        let mut b = byte_verdicts.decisions;
        a.sort();
        b.sort();
        assert_eq!(a, b, "{json}");
        assert_eq!(changed, masked.is_some(), "{json}");
        let spliced: Value = serde_json::from_str(masked.as_deref().unwrap_or(&json))
            .unwrap_or_else(|e| panic!("{e}: {masked:?}"));
        assert_eq!(spliced, by_value, "{json}");
    }

    /// What a moderation service is sent: the texts found in the bytes are the value walk's.
    fn same_texts(doc: &Value, answer: Option<AnswerShape>, walk: TextWalker) {
        let json = serde_json::to_string(doc).unwrap();
        let mut by_value: Value = serde_json::from_str(&json).unwrap();
        let mut want = Vec::new();
        walk(&mut by_value, &mut |s| want.push(s.clone()));
        assert_eq!(texts_of(json.as_bytes(), answer), Some(want), "{json}");
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("TOLLGATE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn a_request_masked_in_its_bytes_is_the_request_masked_as_a_value((doc, pretty) in document()) {
            agree(&doc, pretty, Texts::Request, texts);
            same_texts(&doc, None, texts);
        }

        #[test]
        fn an_answer_masked_in_its_bytes_is_the_answer_masked_as_a_value((doc, pretty) in document()) {
            for shape in SHAPES {
                agree(&doc, pretty, Texts::Answer(shape), shape.walk());
                same_texts(&doc, Some(shape), shape.walk());
            }
        }

        /// The validating scan that picks a request's texts accepts what the scan that reads a
        /// request accepts, splits it the same way, and picks what the walk finds.
        #[test]
        fn a_request_s_texts_picked_by_the_validating_scan_are_the_walk_s((doc, pretty) in document(), cut in any::<prop::sample::Index>(), junk in "[\"\\\\{}\\[\\],: a0]{0,3}") {
            let json = if pretty {
                serde_json::to_string_pretty(&doc).unwrap()
            } else {
                serde_json::to_string(&doc).unwrap()
            };
            let (members, picked) = json_scan::object_members_picking(&json, request_text)
                .expect("a valid object is read");
            prop_assert_eq!(Some(members), json_scan::object_members(&json));
            let walked = json_text::find_texts(&json, request_text).unwrap();
            let picked: Vec<_> = picked
                .into_iter()
                .map(|(at, escaped)| json_text::found_at(&json, at, escaped).unwrap())
                .collect();
            prop_assert_eq!(picked.len(), walked.len());
            for (p, w) in picked.iter().zip(&walked) {
                prop_assert_eq!(&p.at, &w.at);
                prop_assert_eq!(&p.text, &w.text);
            }
            // The members' places, moved with the masks, are where a new split finds them.
            let (members, _) = json_scan::object_members_picking(&json, request_text).unwrap();
            let split = Split::of(&json, members).expect("the members are slices of the body");
            let (body, split) = match mask_found_moving(&policy(), &json, &picked, true).0 {
                Some((masked, shifts)) => (masked, split.moved(|at| json_text::moved(&shifts, at))),
                None => (json.clone(), split),
            };
            let handed = crate::llm::openai::RequestDoc::from_split(body.as_bytes(), &split)
                .expect("the places lie in the body");
            let again = crate::llm::openai::RequestDoc::parse(body.as_bytes()).unwrap();
            prop_assert_eq!(handed.members(), again.members(), "{}", body);
            // Broken: accepted exactly where the request's scan accepts it.
            let mut at = cut.index(json.len() + 1);
            while !json.is_char_boundary(at) {
                at -= 1;
            }
            let broken = format!("{}{junk}{}", &json[..at], &json[at..]);
            prop_assert_eq!(
                json_scan::object_members_picking(&broken, request_text).map(|(m, _)| m),
                json_scan::object_members(&broken),
                "{}",
                broken
            );
        }

        #[test]
        fn the_walk_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(json) = std::str::from_utf8(&bytes) {
                let _ = json_text::find_texts(json, request_text);
                for shape in SHAPES {
                    let _ = json_text::find_texts(json, shape.select());
                    let _ = found_texts(json, Texts::Answer(shape));
                }
            }
        }

        #[test]
        fn the_walk_never_panics_on_broken_json((doc, _) in document(), cut in any::<prop::sample::Index>(), junk in "[\"\\\\{}\\[\\],: a0]{0,3}") {
            let json = serde_json::to_string(&doc).unwrap();
            let mut at = cut.index(json.len() + 1);
            while !json.is_char_boundary(at) {
                at -= 1;
            }
            let broken = format!("{}{junk}{}", &json[..at], &json[at..]);
            let _ = json_text::find_texts(&broken, request_text);
            for shape in SHAPES {
                let _ = json_text::find_texts(&broken, shape.select());
                let _ = found_texts(&broken, Texts::Answer(shape));
            }
        }
    }

    /// A request's members handed on from the validating scan lie where a new split of the masked
    /// body finds them: a masked text as a member's whole value, inside one, escaped keys and texts
    /// before and after.
    #[test]
    fn a_masked_request_s_members_are_handed_on_where_they_now_lie() {
        let json = r#"{"model":"m","prompt":"mail bob@example.com","m\u0065ssages":[{"role":"user","content":"caf\u00e9 bob@example.com"}],
            "messages":[{"content":"bob@example.com"},{"content":"x"}], "input" : "bob@example.com" ,"n":1}"#;
        let (members, picked) = json_scan::object_members_picking(json, request_text).unwrap();
        let found: Vec<_> = picked
            .into_iter()
            .map(|(at, escaped)| json_text::found_at(json, at, escaped).unwrap())
            .collect();
        assert_eq!(found.len(), 5);
        let split = Split::of(json, members).unwrap();
        let (masked, shifts) = mask_found_moving(&policy(), json, &found, true).0.unwrap();
        let split = split.moved(|at| json_text::moved(&shifts, at));
        let handed = crate::llm::openai::RequestDoc::from_split(masked.as_bytes(), &split).unwrap();
        let again = crate::llm::openai::RequestDoc::parse(masked.as_bytes()).unwrap();
        assert_eq!(handed.members(), again.members());
        assert_eq!(handed.get("prompt").unwrap().get(), r#""mail [EMAIL]""#);
        assert_eq!(handed.get("input").unwrap().get(), r#""[EMAIL]""#);
    }

    #[test]
    fn a_text_behind_an_escaped_key_is_found() {
        let json = r#"{"model": "m", "messages": [{"role": "user", "con\u0074ent": "mail bob@example.com"}]}"#;
        let found = json_text::find_texts(json, request_text).unwrap();
        assert_eq!(found.len(), 1);
        let (masked, _) = mask_found(&policy(), json, &found);
        assert_eq!(
            masked.unwrap(),
            r#"{"model": "m", "messages": [{"role": "user", "con\u0074ent": "mail [EMAIL]"}]}"#
        );
    }

    #[test]
    fn a_top_level_array_or_deep_nesting_is_left_to_the_value_walk() {
        assert!(
            json_text::find_texts(
                &format!("{}1{}", "[".repeat(200), "]".repeat(200)),
                answer_text
            )
            .is_none()
        );
        assert!(json_text::find_texts(r#"{"content": "\ud800"}"#, request_text).is_none());
    }

    /// A whole answer of `shape` checked in its bytes as `guard_answer` checks it: the body to
    /// send (masked, or as it came) and the Reject rule that matched.
    fn checked_answer(
        shape: AnswerShape,
        answer: &Value,
        reject: bool,
    ) -> (Value, Option<Arc<str>>) {
        let mut policy = policy();
        if reject {
            policy.rules[0].action = GuardrailAction::Reject;
        }
        let json = answer.to_string();
        let found = json_text::find_texts(&json, shape.select()).unwrap();
        let (masked, verdicts) = mask_found(&policy, &json, &found);
        let body = serde_json::from_str(masked.as_deref().unwrap_or(&json)).unwrap();
        (body, verdicts.refusal)
    }

    #[test]
    fn a_whole_chat_answer_s_shown_reasoning_is_masked_or_refused() {
        for member in ["reasoning_content", "reasoning"] {
            let answer = serde_json::json!({"id": "c", "object": "chat.completion", "choices": [{"index": 0,
                "message": {"role": "assistant", "content": "Hi.", member: "The user is bob@example.com."},
                "finish_reason": "stop"}]});
            let (body, refused) = checked_answer(AnswerShape::Chat, &answer, false);
            assert_eq!(refused, None);
            assert_eq!(
                body["choices"][0]["message"][member],
                "The user is [EMAIL]."
            );
            assert_eq!(body["choices"][0]["message"]["content"], "Hi.");
            let (_, refused) = checked_answer(AnswerShape::Chat, &answer, true);
            assert_eq!(refused.as_deref(), Some("emails"));
            assert_eq!(
                texts_of(answer.to_string().as_bytes(), Some(AnswerShape::Chat)).unwrap(),
                ["Hi.", "The user is bob@example.com."]
            );
        }
    }

    #[test]
    fn a_whole_anthropic_answer_s_thinking_is_masked_but_signatures_and_redacted_thinking_pass_untouched()
     {
        let answer = serde_json::json!({"id": "m", "type": "message", "role": "assistant", "content": [
            {"type": "thinking", "thinking": "The user is bob@example.com.", "signature": "EqQBCgIY+dan@example.net=="},
            {"type": "redacted_thinking", "data": "EmwKAhgB+erin@example.net=="},
            {"type": "text", "text": "Write to carol@example.org."},
            {"type": "tool_use", "id": "t", "name": "mail", "input": {"to": "fay@example.com", "data": "gil@example.com"}}
        ]});
        let (body, refused) = checked_answer(AnswerShape::Messages, &answer, false);
        assert_eq!(refused, None);
        let content = &body["content"];
        assert_eq!(content[0]["thinking"], "The user is [EMAIL].");
        assert_eq!(content[0]["signature"], "EqQBCgIY+dan@example.net==");
        assert_eq!(content[1]["data"], "EmwKAhgB+erin@example.net==");
        assert_eq!(content[2]["text"], "Write to [EMAIL].");
        assert_eq!(
            content[3]["input"],
            serde_json::json!({"to": "[EMAIL]", "data": "[EMAIL]"})
        );
        let (_, refused) = checked_answer(AnswerShape::Messages, &answer, true);
        assert_eq!(refused.as_deref(), Some("emails"));
    }

    #[test]
    fn a_whole_responses_answer_s_reasoning_is_masked_but_its_encrypted_content_passes_untouched() {
        let answer = serde_json::json!({"id": "r", "object": "response", "reasoning": {"effort": "low"}, "output": [
            {"type": "reasoning", "id": "rs", "encrypted_content": "gAAAA+dan@example.net==",
             "summary": [{"type": "summary_text", "text": "Mail bob@example.com."}],
             "content": [{"type": "reasoning_text", "text": "The user is bob@example.com."}]},
            {"type": "message", "id": "m", "role": "assistant",
             "content": [{"type": "output_text", "text": "Hi.", "annotations": []}]}
        ]});
        let (body, refused) = checked_answer(AnswerShape::Responses, &answer, false);
        assert_eq!(refused, None);
        let reasoning = &body["output"][0];
        assert_eq!(reasoning["encrypted_content"], "gAAAA+dan@example.net==");
        assert_eq!(reasoning["summary"][0]["text"], "Mail [EMAIL].");
        assert_eq!(reasoning["content"][0]["text"], "The user is [EMAIL].");
    }
}
