//! The official Python SDKs (`tests/python`) as clients of the proxy: what real applications see.

mod anthropic_messages;
mod openai_quickstart;
mod openai_rate_limits;
mod openai_responses;
