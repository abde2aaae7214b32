//! OpenAI-format callers served by providers whose APIs differ: golden request and response
//! translations per provider against protocol-faithful fakes, and translated streams that keep pace
//! with the upstream.

mod anthropic;
mod azure;
mod bedrock;
mod gemini;
mod stream_pacing;
mod vertex;
