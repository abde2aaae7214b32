//! A moderation service's request and answer, pure: the body posted (OpenAI's `/moderations` or the
//! webhook contract in `proxy/README.md`) and the verdict read from what came back.

use serde_json::{Value, json};
use tollgate_snapshot::{ModerationApi, ModerationRule};

/// What the call being moderated is, for the webhook's body.
pub struct Subject<'a> {
    /// `request` or `response`.
    pub direction: &'static str,
    /// The route, `namespace/name`.
    pub route: &'a str,
    /// `chat`, `messages`, `prompts` or `embeddings`.
    pub endpoint: &'static str,
    /// The guardrail the rule belongs to, `namespace/name`.
    pub guardrail: &'a str,
}

/// What the service said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing that counts was flagged.
    Clean,
    /// Flagged, with the categories that counted (possibly none named).
    Flagged(Vec<String>),
}

/// The JSON body posted to the service for `texts`.
pub fn request_body(rule: &ModerationRule, texts: &[String], subject: &Subject<'_>) -> Vec<u8> {
    let body = match &rule.api {
        ModerationApi::OpenAi { model, .. } => json!({ "model": model, "input": texts }),
        ModerationApi::Webhook => json!({
            "texts": texts,
            "direction": subject.direction,
            "route": subject.route,
            "endpoint": subject.endpoint,
            "guardrail": subject.guardrail,
            "rule": &*rule.name,
        }),
    };
    serde_json::to_vec(&body).expect("JSON values serialise")
}

/// Reads the service's answer (a 2xx body): the verdict, or why it cannot be read (which the rule's
/// failure mode decides). Never panics, whatever the bytes.
pub fn read_answer(rule: &ModerationRule, body: &[u8]) -> Result<Verdict, &'static str> {
    let answer: Value =
        serde_json::from_slice(body).map_err(|_| "the moderation answer is not JSON")?;
    match rule.api {
        ModerationApi::OpenAi { .. } => read_openai(rule, &answer),
        ModerationApi::Webhook => read_webhook(rule, &answer),
    }
}

fn counts(rule: &ModerationRule, category: &str) -> bool {
    rule.categories.is_empty() || rule.categories.iter().any(|c| c == category)
}

/// `{"results": [{"flagged", "categories": {name: bool}, "category_scores": {name: number}}]}`.
fn read_openai(rule: &ModerationRule, answer: &Value) -> Result<Verdict, &'static str> {
    let results = answer["results"]
        .as_array()
        .ok_or("the moderation answer has no results array")?;
    let mut found: Vec<String> = Vec::new();
    let mut flagged = false;
    for result in results {
        let categories = result["categories"].as_object();
        let scores = result["category_scores"].as_object();
        let hits: Vec<&String> = match rule.threshold_millis {
            Some(millis) => {
                let scores = scores.ok_or("a moderation result has no category_scores")?;
                let threshold = f64::from(millis) / 1000.0;
                scores
                    .iter()
                    .filter(|(_, s)| s.as_f64().is_some_and(|s| s >= threshold))
                    .map(|(c, _)| c)
                    .collect()
            }
            None => {
                let this = result["flagged"]
                    .as_bool()
                    .ok_or("a moderation result has no flagged member")?;
                match categories {
                    Some(cats) => cats
                        .iter()
                        .filter(|(_, v)| v.as_bool() == Some(true))
                        .map(|(c, _)| c)
                        .collect(),
                    // Flagged with no categories given: counts only when no category is asked for.
                    None => {
                        flagged |= this && rule.categories.is_empty();
                        Vec::new()
                    }
                }
            }
        };
        for c in hits {
            if counts(rule, c) {
                flagged = true;
                if !found.contains(c) {
                    found.push(c.clone());
                }
            }
        }
    }
    Ok(if flagged {
        found.sort();
        Verdict::Flagged(found)
    } else {
        Verdict::Clean
    })
}

/// `{"flagged": bool, "categories": [name, …]}` (categories optional).
fn read_webhook(rule: &ModerationRule, answer: &Value) -> Result<Verdict, &'static str> {
    let flagged = answer["flagged"]
        .as_bool()
        .ok_or("the moderation answer has no boolean flagged")?;
    let categories: Vec<String> = match &answer["categories"] {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .map(|c| c.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or("the moderation answer's categories are not all strings")?,
        _ => return Err("the moderation answer's categories are not an array"),
    };
    if !flagged {
        return Ok(Verdict::Clean);
    }
    if rule.categories.is_empty() {
        return Ok(Verdict::Flagged(categories));
    }
    let counted: Vec<String> = categories.into_iter().filter(|c| counts(rule, c)).collect();
    Ok(if counted.is_empty() {
        Verdict::Clean
    } else {
        Verdict::Flagged(counted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;
    use tollgate_snapshot::{FailureMode, GuardrailAction, ObjectRef};

    fn rule(
        api: ModerationApi,
        categories: &[&str],
        threshold_millis: Option<u32>,
    ) -> ModerationRule {
        ModerationRule {
            name: Arc::from("moderated"),
            action: GuardrailAction::Reject,
            api,
            url: "http://127.0.0.1:1/moderations".into(),
            credential: None,
            categories: categories.iter().map(|c| c.to_string()).collect(),
            threshold_millis,
            timeout_ms: 2000,
            failure_mode: FailureMode::Closed,
        }
    }

    fn openai() -> ModerationApi {
        ModerationApi::OpenAi {
            provider: ObjectRef::new("ns", "openai"),
            model: "omni-moderation-latest".into(),
        }
    }

    const OPENAI_FLAGGED: &str = r#"{"id":"modr-1","model":"omni-moderation-latest","results":[
        {"flagged":false,"categories":{"hate":false,"violence":false},"category_scores":{"hate":0.01,"violence":0.02}},
        {"flagged":true,"categories":{"hate":false,"violence":true},"category_scores":{"hate":0.3,"violence":0.91}}]}"#;

    #[test]
    fn an_openai_answer_is_flagged_by_any_category_unless_categories_are_named() {
        let any = rule(openai(), &[], None);
        assert_eq!(
            read_answer(&any, OPENAI_FLAGGED.as_bytes()),
            Ok(Verdict::Flagged(vec!["violence".into()]))
        );
        let hate_only = rule(openai(), &["hate"], None);
        assert_eq!(
            read_answer(&hate_only, OPENAI_FLAGGED.as_bytes()),
            Ok(Verdict::Clean)
        );
    }

    #[test]
    fn a_threshold_reads_the_scores_not_the_flags() {
        let low = rule(openai(), &["hate"], Some(250));
        assert_eq!(
            read_answer(&low, OPENAI_FLAGGED.as_bytes()),
            Ok(Verdict::Flagged(vec!["hate".into()]))
        );
        let high = rule(openai(), &[], Some(950));
        assert_eq!(
            read_answer(&high, OPENAI_FLAGGED.as_bytes()),
            Ok(Verdict::Clean)
        );
    }

    #[test]
    fn a_webhook_answer_is_flagged_and_filtered_by_category() {
        let any = rule(ModerationApi::Webhook, &[], None);
        let body = br#"{"flagged":true,"categories":["self-harm"]}"#;
        assert_eq!(
            read_answer(&any, body),
            Ok(Verdict::Flagged(vec!["self-harm".into()]))
        );
        assert_eq!(
            read_answer(&any, br#"{"flagged":false}"#),
            Ok(Verdict::Clean)
        );
        let hate = rule(ModerationApi::Webhook, &["hate"], None);
        assert_eq!(read_answer(&hate, body), Ok(Verdict::Clean));
    }

    #[test]
    fn unreadable_answers_are_failures_not_verdicts() {
        let web = rule(ModerationApi::Webhook, &[], None);
        assert!(read_answer(&web, b"<html>").is_err());
        assert!(read_answer(&web, br#"{"flagged":"yes"}"#).is_err());
        assert!(read_answer(&web, br#"{"flagged":true,"categories":"hate"}"#).is_err());
        let oai = rule(openai(), &[], None);
        assert!(read_answer(&oai, br#"{"results":{}}"#).is_err());
        assert!(read_answer(&oai, br#"{"results":[{"categories":{}}]}"#).is_err());
    }

    #[test]
    fn the_webhook_body_follows_the_contract_and_openai_gets_model_and_input() {
        let subject = Subject {
            direction: "request",
            route: "team-a/chat",
            endpoint: "chat",
            guardrail: "team-a/moderation",
        };
        let texts = vec!["hello".to_string()];
        let web: Value = serde_json::from_slice(&request_body(
            &rule(ModerationApi::Webhook, &[], None),
            &texts,
            &subject,
        ))
        .unwrap();
        assert_eq!(
            web,
            json!({"texts":["hello"],"direction":"request","route":"team-a/chat",
                   "endpoint":"chat","guardrail":"team-a/moderation","rule":"moderated"})
        );
        let oai: Value =
            serde_json::from_slice(&request_body(&rule(openai(), &[], None), &texts, &subject))
                .unwrap();
        assert_eq!(
            oai,
            json!({"model":"omni-moderation-latest","input":["hello"]})
        );
    }

    proptest! {
        #[test]
        fn reading_any_answer_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256),
                                           threshold in proptest::option::of(0u32..=1000)) {
            for api in [openai(), ModerationApi::Webhook] {
                let _ = read_answer(&rule(api, &["hate"], threshold), &bytes);
            }
        }

        #[test]
        fn reading_any_json_shaped_answer_never_panics(flagged in any::<bool>(),
                                                      names in proptest::collection::vec("[a-z/-]{0,8}", 0..4),
                                                      score in any::<f64>()) {
            let cats: serde_json::Map<String, Value> =
                names.iter().map(|n| (n.clone(), json!(flagged))).collect();
            let scores: serde_json::Map<String, Value> =
                names.iter().map(|n| (n.clone(), json!(score))).collect();
            let oai = json!({"results":[{"flagged":flagged,"categories":cats,"category_scores":scores}]});
            let web = json!({"flagged":flagged,"categories":names});
            for threshold in [None, Some(500)] {
                let _ = read_answer(&rule(openai(), &[], threshold), oai.to_string().as_bytes());
                let verdict = read_answer(&rule(ModerationApi::Webhook, &[], None), web.to_string().as_bytes());
                prop_assert_eq!(verdict.is_ok_and(|v| v != Verdict::Clean), flagged);
            }
        }
    }
}
