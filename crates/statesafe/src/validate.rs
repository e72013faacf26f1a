//! Validation: a rule in code, a JSON Schema, or both. Applied before every commit
//! (invalid state is never written) and on load, where a failure is the reader's
//! (`Error::Mismatch`), except for an external change that fails the recorded schema,
//! which is damage (see `Store::verify_bytes`).

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// A rule over the typed state: `Err(message)` refuses it.
pub(crate) type Rule<T> = Arc<dyn Fn(&T) -> std::result::Result<(), String> + Send + Sync>;

/// A compiled JSON Schema.
#[derive(Clone)]
pub(crate) struct Schema {
    validator: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Schema")
    }
}

impl Schema {
    pub fn compile(path: &Path, schema: &Value) -> Result<Schema> {
        let validator = jsonschema::validator_for(schema).map_err(|e| Error::BadSchema {
            path: path.to_path_buf(),
            message: format!(
                "{e} (at `{}` in the schema)",
                pointer_or_root(&e.instance_path().to_string())
            ),
        })?;
        Ok(Schema {
            validator: Arc::new(validator),
        })
    }

    /// Every violation, as `at /where: what (rule /schema/path)`.
    pub fn violations(&self, instance: &Value) -> Vec<String> {
        self.validator
            .iter_errors(instance)
            .map(|e| {
                format!(
                    "at `{}`: {e} (schema rule `{}`)",
                    pointer_or_root(&e.instance_path().to_string()),
                    pointer_or_root(&e.schema_path().to_string())
                )
            })
            .collect()
    }
}

fn pointer_or_root(p: &str) -> String {
    if p.is_empty() { "/".into() } else { p.into() }
}

/// Checks `state` against the rule and the schema; `Error::Invalid` names every
/// violation found.
pub(crate) fn check<T: Serialize>(
    path: &Path,
    state: &T,
    rule: Option<&Rule<T>>,
    schema: Option<&Schema>,
) -> Result<()> {
    let mut problems = Vec::new();
    if let Some(rule) = rule
        && let Err(message) = rule(state)
    {
        problems.push(format!("validation rule: {message}"));
    }
    if let Some(schema) = schema {
        let value = serde_json::to_value(state).map_err(|source| Error::Serialize {
            path: path.to_path_buf(),
            source,
        })?;
        problems.extend(schema.violations(&value));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid {
            path: path.to_path_buf(),
            message: problems.join("; "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_violations_name_the_rule_and_the_place() {
        let p = Path::new("s.json");
        let schema = Schema::compile(
            p,
            &json!({"type": "object", "properties": {"balance": {"type": "integer", "minimum": 0}}}),
        )
        .unwrap();
        assert!(check(p, &json!({"balance": 3}), None, Some(&schema)).is_ok());
        let err = check(p, &json!({"balance": -5}), None, Some(&schema)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/balance"), "{text}");
        assert!(text.contains("minimum"), "{text}");
    }

    #[test]
    fn invalid_schemas_are_refused() {
        let p = Path::new("s.json");
        assert!(matches!(
            Schema::compile(p, &json!({"type": "no-such-type"})),
            Err(Error::BadSchema { .. })
        ));
    }

    #[test]
    fn rules_in_code_apply() {
        let p = Path::new("s.json");
        let rule: Rule<i64> = Arc::new(|n| {
            if *n >= 0 {
                Ok(())
            } else {
                Err("must not be negative".into())
            }
        });
        assert!(check(p, &1i64, Some(&rule), None).is_ok());
        let err = check(p, &-1i64, Some(&rule), None).unwrap_err();
        assert!(err.to_string().contains("must not be negative"));
    }
}
