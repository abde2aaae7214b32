//! `AIRoute.spec.prompts` → [`Prompt`]s: templates parsed into text and placeholders, every rule
//! checked. A prompt with a problem is left out (its calls get 404) and the problem is reported in
//! the route's `PromptsValid` condition; the route's other traffic is not affected. The API server
//! checks most field rules with CEL already, but standalone mode has no API server: every rule is
//! checked here too.

use std::sync::Arc;

use serde_json::Value;
use tollgate_crds::{OutputType, PromptApi, PromptVariable, VariableType};

use super::json_schema::check_schema;
use crate::model::{Output, Parameters, Prompt, Segment, TemplateMessage, Variable};

/// The prompts that compiled, sorted by name, with errors (prompt left out) and warnings (prompt
/// served) for the route's condition.
#[derive(Default)]
pub(crate) struct CompiledPrompts {
    pub prompts: Vec<Prompt>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Compiles `specs` for a route whose `spec.models` names are `models`; `model_name` gives the
/// snapshot's shared string for a model name.
pub(crate) fn compile_prompts<'a>(
    specs: &'a [PromptApi],
    models: &[&str],
    mut model_name: impl FnMut(&'a str) -> Arc<str>,
) -> CompiledPrompts {
    let mut out = CompiledPrompts::default();
    for (i, spec) in specs.iter().enumerate() {
        if specs[..i].iter().any(|p| p.name == spec.name) {
            out.errors.push(format!(
                "prompt {} is listed more than once in spec.prompts (only the first is served)",
                spec.name
            ));
            continue;
        }
        match compile_prompt(spec, models, &mut out.warnings) {
            Ok(mut prompt) => {
                prompt.model = model_name(&spec.model);
                out.prompts.push(prompt);
            }
            Err(problems) => out.errors.push(format!(
                "prompt {} is not served: {}",
                spec.name,
                problems.join("; ")
            )),
        }
    }
    out.prompts.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Compiles one prompt API as the route compiler does, for a route whose `spec.models` names are
/// `models`: the prompt, or every problem found (warnings are not reported here).
pub fn compile_prompt_spec(spec: &PromptApi, models: &[&str]) -> Result<Prompt, Vec<String>> {
    let mut prompt = compile_prompt(spec, models, &mut Vec::new())?;
    prompt.model = Arc::from(spec.model.as_str());
    Ok(prompt)
}

fn compile_prompt(
    spec: &PromptApi,
    models: &[&str],
    warnings: &mut Vec<String>,
) -> Result<Prompt, Vec<String>> {
    let mut problems = Vec::new();
    if !is_dns_label(&spec.name) {
        problems.push("its name must be a DNS label (lower-case letters, digits and '-')".into());
    }
    if !models.contains(&spec.model.as_str()) {
        problems.push(format!(
            "its model {} is not one of the route's spec.models",
            spec.model
        ));
    }
    if spec.messages.is_empty() {
        problems.push("its template has no messages".into());
    }
    let mut variables = Vec::with_capacity(spec.variables.len());
    for (i, v) in spec.variables.iter().enumerate() {
        if spec.variables[..i].iter().any(|w| w.name == v.name) {
            problems.push(format!("variable {} is declared more than once", v.name));
            continue;
        }
        match variable(v) {
            Ok(v) => variables.push(v),
            Err(p) => problems.push(format!("variable {}: {p}", v.name)),
        }
    }
    let mut used = vec![false; variables.len()];
    let mut messages = Vec::with_capacity(spec.messages.len());
    for (i, m) in spec.messages.iter().enumerate() {
        let mut parts = Vec::new();
        for piece in split_template(&m.content) {
            match piece {
                Piece::Text(t) => parts.push(Segment::Text(t.to_string())),
                Piece::Placeholder(name) => match variables.iter().position(|v| v.name == name) {
                    Some(at) => {
                        used[at] = true;
                        parts.push(Segment::Var(at as u16));
                    }
                    // A variable declared with a problem of its own: reported already.
                    None if spec.variables.iter().any(|v| v.name == name) => {}
                    None => problems.push(format!(
                        "messages[{i}] uses {{{{{name}}}}}, which names no variable"
                    )),
                },
            }
        }
        messages.push(TemplateMessage {
            role: m.role,
            parts,
        });
    }
    let mut unused = Vec::new();
    for (v, used) in variables.iter().zip(&used) {
        if !used {
            unused.push(format!(
                "prompt {}: variable {} is used by no placeholder",
                spec.name, v.name
            ));
        }
    }
    let output = match &spec.output {
        None => Output::Text,
        Some(o) => match (o.kind, &o.schema) {
            (OutputType::Text, None) => Output::Text,
            (OutputType::Json, None) => Output::Json,
            (OutputType::JsonSchema, Some(schema)) => match check_schema(schema) {
                Ok(()) => Output::JsonSchema(schema.clone()),
                Err(e) => {
                    problems.push(format!("output.schema is not a valid JSON Schema: {e}"));
                    Output::Text
                }
            },
            (OutputType::JsonSchema, None) => {
                problems.push("output type JSONSchema needs output.schema".into());
                Output::Text
            }
            (_, Some(_)) => {
                problems.push("output.schema is only for output type JSONSchema".into());
                Output::Text
            }
        },
    };
    let parameters = spec
        .parameters
        .as_ref()
        .map(|p| Parameters {
            temperature: p.temperature,
            top_p: p.top_p,
            max_tokens: p.max_tokens,
            stop: p.stop.clone(),
        })
        .unwrap_or_default();
    if parameters
        .temperature
        .is_some_and(|t| !(0.0..=2.0).contains(&t))
    {
        problems.push("parameters.temperature must be between 0 and 2".into());
    }
    if parameters.top_p.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
        problems.push("parameters.topP must be between 0 and 1".into());
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    // Warnings only for prompts that are served.
    warnings.extend(unused);
    Ok(Prompt {
        name: spec.name.clone(),
        description: spec.description.clone(),
        version: spec.version.clone(),
        model: Arc::from(""),
        messages,
        variables,
        parameters,
        output,
        allow_messages: spec.allow_messages,
    })
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a variable name: a letter or `_`, then letters, digits and `_`.
pub(crate) fn is_variable_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && s.len() <= 64
}

fn variable(v: &PromptVariable) -> Result<Variable, String> {
    if !is_variable_name(&v.name) {
        return Err(
            "a name is a letter or '_' followed by letters, digits and '_' (64 at most)".into(),
        );
    }
    if v.kind == VariableType::Enum && v.values.is_empty() {
        return Err("a variable of type enum lists its values".into());
    }
    if v.kind != VariableType::Enum && !v.values.is_empty() {
        return Err("values are only for variables of type enum".into());
    }
    if v.kind != VariableType::String && v.max_length.is_some() {
        return Err("maxLength is only for variables of type string".into());
    }
    let default = match &v.default {
        None => None,
        Some(text) => Some(typed_default(v, text)?),
    };
    Ok(Variable {
        name: v.name.clone(),
        description: v.description.clone(),
        kind: v.kind,
        values: v.values.clone(),
        required: v.required.unwrap_or(true) && default.is_none(),
        default,
        max_length: v.max_length,
    })
}

/// A default written as text, read as the variable's type.
fn typed_default(v: &PromptVariable, text: &str) -> Result<Value, String> {
    let wrong = || {
        format!(
            "its default {text:?} is not a value of type {}",
            v.kind.as_str()
        )
    };
    Ok(match v.kind {
        VariableType::String => {
            if v.max_length
                .is_some_and(|max| text.chars().count() > max as usize)
            {
                return Err("its default is longer than maxLength".into());
            }
            Value::String(text.to_string())
        }
        VariableType::Enum => {
            if !v.values.iter().any(|x| x == text) {
                return Err(format!("its default {text:?} is not one of its values"));
            }
            Value::String(text.to_string())
        }
        VariableType::Boolean => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(wrong()),
        },
        VariableType::Integer => Value::from(text.parse::<i64>().map_err(|_| wrong())?),
        VariableType::Number => {
            let n: f64 = text.parse().map_err(|_| wrong())?;
            serde_json::Number::from_f64(n)
                .map(Value::Number)
                .ok_or_else(wrong)?
        }
    })
}

/// A piece of template text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    /// `{{name}}` (spaces inside the braces allowed): the name.
    Placeholder(&'a str),
}

/// Splits template text into literal text and placeholders. A placeholder is `{{`, optional
/// spaces, a variable name, optional spaces, `}}`; anything else, `{{` included, is literal text.
pub(crate) fn split_template(text: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut literal_from = 0;
    let mut at = 0;
    while let Some(found) = text[at..].find("{{") {
        let open = at + found;
        let inside_from = open + 2;
        let Some(close) = text[inside_from..].find("}}") else {
            break;
        };
        let name = text[inside_from..inside_from + close].trim_matches(' ');
        if is_variable_name(name) {
            if literal_from < open {
                pieces.push(Piece::Text(&text[literal_from..open]));
            }
            pieces.push(Piece::Placeholder(name));
            at = inside_from + close + 2;
            literal_from = at;
        } else {
            at = open + 1;
        }
    }
    if literal_from < text.len() {
        pieces.push(Piece::Text(&text[literal_from..]));
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_crds::{PromptMessage, PromptOutput, PromptParameters, PromptRole};

    fn var(name: &str, kind: VariableType) -> PromptVariable {
        PromptVariable {
            name: name.into(),
            description: None,
            kind,
            values: Vec::new(),
            required: None,
            default: None,
            max_length: None,
        }
    }

    fn prompt(content: &str, variables: Vec<PromptVariable>) -> PromptApi {
        PromptApi {
            name: "summarise".into(),
            description: None,
            version: Some("v1".into()),
            model: "chat".into(),
            messages: vec![PromptMessage {
                role: PromptRole::User,
                content: content.into(),
            }],
            variables,
            parameters: None,
            output: None,
            allow_messages: false,
        }
    }

    fn compile(specs: &[PromptApi]) -> CompiledPrompts {
        compile_prompts(specs, &["chat"], Arc::from)
    }

    #[test]
    fn splits_placeholders_and_keeps_everything_else_literal() {
        use Piece::*;
        assert_eq!(
            split_template("Hi {{name}}, {{ lang }}!"),
            vec![
                Text("Hi "),
                Placeholder("name"),
                Text(", "),
                Placeholder("lang"),
                Text("!")
            ]
        );
        assert_eq!(
            split_template("{{a}}{{b}}"),
            vec![Placeholder("a"), Placeholder("b")]
        );
        assert_eq!(
            split_template("{{not a name}} {{"),
            vec![Text("{{not a name}} {{")]
        );
        assert_eq!(
            split_template("{{{x}}}"),
            vec![Text("{"), Placeholder("x"), Text("}")]
        );
        assert_eq!(
            split_template("json: {\"a\": {}}"),
            vec![Text("json: {\"a\": {}}")]
        );
        assert_eq!(split_template(""), vec![]);
    }

    #[test]
    fn a_valid_prompt_compiles_into_segments() {
        let c = compile(&[prompt(
            "Summarise: {{text}}",
            vec![var("text", VariableType::String)],
        )]);
        assert!(
            c.errors.is_empty() && c.warnings.is_empty(),
            "{:?} {:?}",
            c.errors,
            c.warnings
        );
        let p = &c.prompts[0];
        assert_eq!(&*p.model, "chat");
        assert_eq!(
            p.messages[0].parts,
            vec![Segment::Text("Summarise: ".into()), Segment::Var(0)]
        );
        assert!(p.variables[0].required);
    }

    #[test]
    fn a_placeholder_naming_no_variable_leaves_the_prompt_out() {
        let c = compile(&[prompt("{{txt}}", vec![var("text", VariableType::String)])]);
        assert!(c.prompts.is_empty());
        assert!(
            c.errors[0].contains("{{txt}}, which names no variable"),
            "{:?}",
            c.errors
        );
    }

    #[test]
    fn an_unused_variable_is_a_warning_only() {
        let c = compile(&[prompt(
            "{{text}}",
            vec![
                var("text", VariableType::String),
                var("tone", VariableType::String),
            ],
        )]);
        assert_eq!(c.prompts.len(), 1);
        assert!(c.errors.is_empty());
        assert_eq!(
            c.warnings,
            vec!["prompt summarise: variable tone is used by no placeholder"]
        );
    }

    #[test]
    fn a_model_the_route_does_not_serve_is_refused() {
        let mut p = prompt("x", vec![]);
        p.model = "gpt-9".into();
        let c = compile(&[p]);
        assert!(c.prompts.is_empty());
        assert!(c.errors[0].contains("model gpt-9 is not one of the route's spec.models"));
    }

    #[test]
    fn duplicate_prompt_and_variable_names_are_refused() {
        let c = compile(&[prompt("x", vec![]), prompt("y", vec![])]);
        assert_eq!(c.prompts.len(), 1);
        assert!(
            c.errors[0].contains("listed more than once"),
            "{:?}",
            c.errors
        );
        let c = compile(&[prompt(
            "{{a}}",
            vec![
                var("a", VariableType::String),
                var("a", VariableType::Integer),
            ],
        )]);
        assert!(c.prompts.is_empty());
        assert!(c.errors[0].contains("variable a is declared more than once"));
    }

    #[test]
    fn variable_rules_are_checked_without_the_api_server() {
        let cases: Vec<(PromptVariable, &str)> = vec![
            (var("e", VariableType::Enum), "lists its values"),
            (
                PromptVariable {
                    values: vec!["a".into()],
                    ..var("s", VariableType::String)
                },
                "only for variables of type enum",
            ),
            (
                PromptVariable {
                    max_length: Some(3),
                    ..var("n", VariableType::Number)
                },
                "maxLength is only for variables of type string",
            ),
            (
                PromptVariable {
                    default: Some("x".into()),
                    ..var("i", VariableType::Integer)
                },
                "is not a value of type integer",
            ),
            (
                PromptVariable {
                    default: Some("yes".into()),
                    ..var("b", VariableType::Boolean)
                },
                "is not a value of type boolean",
            ),
            (
                PromptVariable {
                    default: Some("de".into()),
                    values: vec!["en".into(), "fr".into()],
                    ..var("l", VariableType::Enum)
                },
                "is not one of its values",
            ),
            (
                PromptVariable {
                    default: Some("long".into()),
                    max_length: Some(2),
                    ..var("s", VariableType::String)
                },
                "longer than maxLength",
            ),
            (var("9lives", VariableType::String), "a name is a letter"),
        ];
        for (v, expected) in cases {
            let name = v.name.clone();
            let c = compile(&[prompt(&format!("{{{{{name}}}}}"), vec![v])]);
            assert!(c.prompts.is_empty(), "{name} compiled");
            assert!(c.errors[0].contains(expected), "{name}: {:?}", c.errors);
        }
    }

    #[test]
    fn defaults_take_their_type_and_make_a_variable_optional() {
        let vars = vec![
            PromptVariable {
                default: Some("3".into()),
                ..var("i", VariableType::Integer)
            },
            PromptVariable {
                default: Some("0.5".into()),
                ..var("n", VariableType::Number)
            },
            PromptVariable {
                default: Some("true".into()),
                ..var("b", VariableType::Boolean)
            },
            PromptVariable {
                default: Some("fr".into()),
                values: vec!["en".into(), "fr".into()],
                ..var("e", VariableType::Enum)
            },
            PromptVariable {
                required: Some(false),
                ..var("s", VariableType::String)
            },
        ];
        let c = compile(&[prompt("{{i}}{{n}}{{b}}{{e}}{{s}}", vars)]);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let v = &c.prompts[0].variables;
        let defaults: Vec<_> = v.iter().map(|v| v.default.clone()).collect();
        assert_eq!(
            defaults,
            vec![
                Some(Value::from(3)),
                Some(Value::from(0.5)),
                Some(Value::Bool(true)),
                Some(Value::from("fr")),
                None
            ]
        );
        assert!(v.iter().all(|v| !v.required));
    }

    #[test]
    fn output_schemas_are_checked() {
        let with_output = |output: PromptOutput| PromptApi {
            output: Some(output),
            ..prompt("x", vec![])
        };
        let good = with_output(PromptOutput {
            kind: OutputType::JsonSchema,
            schema: Some(serde_json::json!({
                "type": "object",
                "properties": {"sentiment": {"type": "string", "enum": ["positive", "negative"]}},
                "required": ["sentiment"],
            })),
        });
        let c = compile(&[good]);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert!(matches!(c.prompts[0].output, Output::JsonSchema(_)));

        let bad = with_output(PromptOutput {
            kind: OutputType::JsonSchema,
            schema: Some(serde_json::json!({"type": "objekt"})),
        });
        let c = compile(&[bad]);
        assert!(
            c.errors[0].contains("not a valid JSON Schema"),
            "{:?}",
            c.errors
        );

        let missing = with_output(PromptOutput {
            kind: OutputType::JsonSchema,
            schema: None,
        });
        assert!(compile(&[missing]).errors[0].contains("needs output.schema"));
        let stray = with_output(PromptOutput {
            kind: OutputType::Json,
            schema: Some(serde_json::json!({})),
        });
        assert!(compile(&[stray]).errors[0].contains("only for output type JSONSchema"));
    }

    #[test]
    fn parameters_out_of_range_are_refused() {
        let p = PromptApi {
            parameters: Some(PromptParameters {
                temperature: Some(3.0),
                ..Default::default()
            }),
            ..prompt("x", vec![])
        };
        assert!(compile(&[p]).errors[0].contains("temperature"));
    }
}
