//! Whether a value is a JSON Schema: the structural rules of the draft 2020-12 meta-schema (also
//! met by draft-07 schemas) for the keywords that shape a document — every subschema a schema,
//! `type` one of the seven type names, `required` distinct strings, counts whole numbers, and so on.
//! Unknown keywords are allowed, as the specification allows them.

use serde_json::Value;

const TYPES: [&str; 7] = [
    "null", "boolean", "object", "array", "number", "string", "integer",
];
/// Deeper schemas are refused: nobody writes them, and a check must not recurse without end.
const MAX_DEPTH: usize = 64;

/// `Ok` when `v` is a JSON Schema; else what is wrong, with the JSON pointer to it.
pub(crate) fn check_schema(v: &Value) -> Result<(), String> {
    check(v, "", 0)
}

fn check(v: &Value, at: &str, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("{} is nested more than {MAX_DEPTH} deep", here(at)));
    }
    let map = match v {
        Value::Bool(_) => return Ok(()),
        Value::Object(map) => map,
        _ => return Err(format!("{} is neither an object nor a boolean", here(at))),
    };
    let sub = |key: &str, v: &Value| check(v, &format!("{at}/{key}"), depth + 1);
    for (key, value) in map {
        let path = format!("{at}/{key}");
        match key.as_str() {
            "type" => match value {
                Value::String(t) if TYPES.contains(&t.as_str()) => {}
                Value::Array(list)
                    if !list.is_empty()
                        && list
                            .iter()
                            .all(|t| t.as_str().is_some_and(|t| TYPES.contains(&t)))
                        && distinct(list) => {}
                _ => {
                    return Err(format!(
                        "{} must be one of {} or a list of them",
                        here(&path),
                        TYPES.join(", ")
                    ));
                }
            },
            "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas" => {
                let Value::Object(members) = value else {
                    return Err(format!("{} must be an object of schemas", here(&path)));
                };
                for (name, schema) in members {
                    check(schema, &format!("{path}/{}", escape(name)), depth + 1)?;
                }
            }
            "items" if value.is_array() => each_schema(value, &path, depth)?,
            "additionalProperties"
            | "items"
            | "not"
            | "if"
            | "then"
            | "else"
            | "contains"
            | "propertyNames"
            | "additionalItems"
            | "unevaluatedProperties"
            | "unevaluatedItems"
            | "contentSchema" => sub(key, value)?,
            "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                if value.as_array().is_none_or(Vec::is_empty) {
                    return Err(format!(
                        "{} must be a non-empty list of schemas",
                        here(&path)
                    ));
                }
                each_schema(value, &path, depth)?;
            }
            "required" => {
                let ok = value
                    .as_array()
                    .is_some_and(|list| list.iter().all(Value::is_string) && distinct(list));
                if !ok {
                    return Err(format!(
                        "{} must be a list of distinct strings",
                        here(&path)
                    ));
                }
            }
            "enum" if !value.is_array() => {
                return Err(format!("{} must be a list", here(&path)));
            }
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum"
                if !value.is_number() =>
            {
                return Err(format!("{} must be a number", here(&path)));
            }
            "multipleOf" if !value.as_f64().is_some_and(|n| n > 0.0) => {
                return Err(format!("{} must be a number above 0", here(&path)));
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" | "minProperties"
            | "maxProperties" | "minContains" | "maxContains"
                if value.as_u64().is_none() =>
            {
                return Err(format!(
                    "{} must be a whole number of 0 or more",
                    here(&path)
                ));
            }
            "uniqueItems" if !value.is_boolean() => {
                return Err(format!("{} must be true or false", here(&path)));
            }
            "pattern" | "$ref" | "$id" | "$schema" | "$anchor" | "format" | "title"
            | "description"
                if !value.is_string() =>
            {
                return Err(format!("{} must be a string", here(&path)));
            }
            _ => {}
        }
    }
    Ok(())
}

fn each_schema(list: &Value, at: &str, depth: usize) -> Result<(), String> {
    for (i, schema) in list.as_array().into_iter().flatten().enumerate() {
        check(schema, &format!("{at}/{i}"), depth + 1)?;
    }
    Ok(())
}

fn distinct(list: &[Value]) -> bool {
    (1..list.len()).all(|i| !list[..i].contains(&list[i]))
}

/// A member name as a JSON pointer token.
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn here(pointer: &str) -> String {
    if pointer.is_empty() {
        "the schema".to_string()
    } else {
        format!("{pointer:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_ordinary_schemas() {
        for ok in [
            json!(true),
            json!({}),
            json!({"type": "object", "properties": {"a": {"type": ["string", "null"]}},
                   "required": ["a"], "additionalProperties": false}),
            json!({"type": "array", "items": {"$ref": "#/$defs/x"}, "minItems": 1,
                   "$defs": {"x": {"enum": [1, "two", null]}}}),
            json!({"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^a"}]}),
            json!({"items": [{"type": "string"}], "x-extension": 1}),
        ] {
            assert_eq!(check_schema(&ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_what_the_meta_schema_refuses_and_says_where() {
        for (bad, says) in [
            (json!("object"), "the schema is neither"),
            (json!({"type": "objekt"}), "\"/type\" must be one of"),
            (json!({"type": []}), "\"/type\" must be one of"),
            (
                json!({"properties": {"a": {"type": 1}}}),
                "\"/properties/a/type\"",
            ),
            (json!({"properties": []}), "must be an object of schemas"),
            (json!({"required": ["a", "a"]}), "distinct strings"),
            (json!({"anyOf": []}), "non-empty list"),
            (json!({"items": 3}), "\"/items\" is neither"),
            (json!({"minLength": -1}), "whole number"),
            (json!({"multipleOf": 0}), "above 0"),
            (json!({"enum": "a"}), "must be a list"),
            (json!({"pattern": 1}), "must be a string"),
        ] {
            let e = check_schema(&bad).expect_err(&bad.to_string());
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn refuses_schemas_nested_without_end() {
        let mut v = json!({});
        for _ in 0..100 {
            v = json!({"items": v});
        }
        assert!(check_schema(&v).unwrap_err().contains("nested more than"));
    }
}
