//! Cost of calls with cached tokens, per provider family: the usage as the provider's API reports
//! it, read by that provider's reader and priced with the shipped list, equals the published formula
//! — uncached input at the input price, cache reads at the cached-input price, cache writes at the
//! cache-write price, output at the output price (USD per million tokens; figures as
//! `snapshot/prices/models.json` lists them).

use serde_json::json;
use tollgate_snapshot::{Price, ProviderType, price_list};

use super::Usage;
use crate::llm::{anthropic, bedrock, gemini, openai};

fn listed(provider_type: ProviderType, model: &str) -> Price {
    price_list()
        .lookup(provider_type, model)
        .unwrap_or_else(|| panic!("{model} is listed"))
        .price()
}

fn cost(price: &Price, u: Usage) -> f64 {
    price.cost_with_cache(u.input, u.cache_read, u.cache_write, u.output)
}

fn close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-12, "cost {got}, formula {want}");
}

#[test]
fn openai_and_azure_cached_tokens_cost_the_cached_input_price() {
    // gpt-4.1: input 2, cached input 0.5, output 8.
    let price = listed(ProviderType::OpenAI, "gpt-4.1");
    let chat = br#"{"usage":{"prompt_tokens":1000,"completion_tokens":200,"total_tokens":1200,"prompt_tokens_details":{"cached_tokens":600}}}"#;
    let u = openai::usage_of_body(chat, false).unwrap();
    assert_eq!((u.input, u.cache_read, u.output), (1000, 600, 200));
    close(
        cost(&price, u),
        (400.0 * 2.0 + 600.0 * 0.5 + 200.0 * 8.0) / 1e6,
    );
    // The Responses API reports the same under other names.
    let responses = br#"{"usage":{"input_tokens":1000,"input_tokens_details":{"cached_tokens":600},"output_tokens":200,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":1200}}"#;
    assert_eq!(openai::usage_of_body(responses, false), Some(u));
    // Azure (gpt-5 at Global Standard: 1.25, cached 0.125, output 10), from a stream's usage chunk.
    let price = listed(ProviderType::AzureOpenAI, "gpt-5");
    let chunk = br#"{"choices":[],"usage":{"prompt_tokens":2000,"completion_tokens":100,"prompt_tokens_details":{"cached_tokens":1500}}}"#;
    let u = openai::usage_of_chunk(chunk).unwrap().usage.unwrap();
    close(
        cost(&price, u),
        (500.0 * 1.25 + 1500.0 * 0.125 + 100.0 * 10.0) / 1e6,
    );
}

#[test]
fn anthropic_cache_reads_and_writes_cost_their_own_prices() {
    // claude-sonnet-5: input 2, cache read 0.2, five-minute cache write 2.5, output 10.
    let price = listed(ProviderType::Anthropic, "claude-sonnet-5");
    let u = anthropic::counts(&json!({"input_tokens": 100, "cache_read_input_tokens": 800,
                                      "cache_creation_input_tokens": 100, "output_tokens": 50}))
    .usage();
    assert_eq!((u.input, u.cache_read, u.cache_write), (1000, 800, 100));
    close(
        cost(&price, u),
        (100.0 * 2.0 + 800.0 * 0.2 + 100.0 * 2.5 + 50.0 * 10.0) / 1e6,
    );
}

#[test]
fn gemini_cached_content_costs_the_cached_input_price() {
    // gemini-2.5-pro: input 1.25, cached 0.125, output (thinking included) 10.
    let price = listed(ProviderType::Gemini, "gemini-2.5-pro");
    let u = gemini::counts(
        &json!({"promptTokenCount": 1000, "cachedContentTokenCount": 600,
                                   "candidatesTokenCount": 150, "thoughtsTokenCount": 50}),
    )
    .usage();
    close(
        cost(&price, u),
        (400.0 * 1.25 + 600.0 * 0.125 + 200.0 * 10.0) / 1e6,
    );
}

#[test]
fn bedrock_cache_reads_and_writes_cost_their_own_prices() {
    // Claude Sonnet 4.5 on Bedrock: input 3, cache read 0.3, cache write 3.75, output 15.
    let price = listed(
        ProviderType::Bedrock,
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
    );
    let u = bedrock::counts(&json!({"inputTokens": 100, "cacheReadInputTokens": 800,
                                    "cacheWriteInputTokens": 100, "outputTokens": 50}))
    .usage();
    close(
        cost(&price, u),
        (100.0 * 3.0 + 800.0 * 0.3 + 100.0 * 3.75 + 50.0 * 15.0) / 1e6,
    );
}

#[test]
fn vertex_prices_each_family_as_its_publisher_reports_usage() {
    // Gemini on Vertex reads Gemini's usage: gemini-2.5-flash, input 0.3, cached 0.03, output 2.5.
    let price = listed(ProviderType::VertexAi, "gemini-2.5-flash");
    let u = gemini::counts(
        &json!({"promptTokenCount": 1000, "cachedContentTokenCount": 600,
                                   "candidatesTokenCount": 200}),
    )
    .usage();
    close(
        cost(&price, u),
        (400.0 * 0.3 + 600.0 * 0.03 + 200.0 * 2.5) / 1e6,
    );
    // Claude on Vertex reads Anthropic's: claude-sonnet-4-5@20250929, input 3, cache read 0.3,
    // cache write 3.75, output 15.
    let price = listed(ProviderType::VertexAi, "claude-sonnet-4-5@20250929");
    let u = anthropic::counts(&json!({"input_tokens": 100, "cache_read_input_tokens": 800,
                                      "cache_creation_input_tokens": 100, "output_tokens": 50}))
    .usage();
    close(
        cost(&price, u),
        (100.0 * 3.0 + 800.0 * 0.3 + 100.0 * 3.75 + 50.0 * 15.0) / 1e6,
    );
}
