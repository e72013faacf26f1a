//! jq expressions, through the jaq crates: compile once (before taking the lock),
//! run on the document, and insist on exactly one JSON value.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data};
use jaq_json::{Num, Val};
use serde_json::Value;

use crate::error::CliError;

type Filter = jaq_core::Filter<data::JustLut<Val>>;

/// A compiled jq expression and the values of its `--arg`/`--argjson` variables.
pub struct Program {
    filter: Filter,
    values: Vec<Val>,
    code: String,
}

impl Program {
    /// Compiles `code`; `vars` are `(name, value)` pairs bound as `$name`.
    ///
    /// # Errors
    /// An `invalid_expression` error with the position of the problem.
    pub fn compile(code: &str, vars: Vec<(String, Value)>) -> Result<Program, CliError> {
        // `$ENV`, as in jq, then the caller's variables (a later binding of the same
        // name wins). Building `$ENV` costs more than compiling a simple expression,
        // so it is bound only when the expression could name it (`$ENV` or `env`).
        let env = (code.contains("ENV") || code.contains("env")).then(|| {
            let env: serde_json::Map<String, Value> = std::env::vars_os()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        Value::String(v.to_string_lossy().into_owned()),
                    )
                })
                .collect();
            ("ENV".to_string(), Value::Object(env))
        });
        let vars = env.into_iter().chain(vars);
        let (names, values): (Vec<String>, Vec<Val>) =
            vars.map(|(n, v)| (format!("${n}"), to_val(v))).unzip();
        // jaq's definitions written in jq are parsed and compiled on every run: the
        // standard library was two thirds of a whole `statesafe update`, the core
        // definitions alone still 0.3 ms. Most expressions (paths, arithmetic,
        // assignments) need neither, so try without, then with the core ones, and
        // only if the expression still names something undefined, with everything.
        let compile = |tier: u8| {
            let defs: Box<dyn Iterator<Item = _>> = match tier {
                0 => Box::new(std::iter::empty()),
                1 => Box::new(jaq_core::defs()),
                _ => Box::new(
                    jaq_core::defs()
                        .chain(jaq_std::defs())
                        .chain(jaq_json::defs()),
                ),
            };
            let funs = jaq_core::funs()
                .chain(jaq_std::funs())
                .chain(jaq_json::funs());
            let arena = Arena::default();
            let modules = Loader::new(defs)
                .load(&arena, File { code, path: () })
                .map_err(|errs| {
                    let mut found = None;
                    for (_, err) in errs {
                        use jaq_core::load::Error as L;
                        let first = match err {
                            L::Lex(es) => es
                                .into_iter()
                                .next()
                                .map(|(exp, at)| (format!("expected {}", exp.as_str()), at)),
                            L::Parse(es) => es.into_iter().next().map(|(exp, at)| {
                                let what = if at.is_empty() {
                                    "the end of the expression".to_string()
                                } else {
                                    format!("`{}`", at.chars().take(20).collect::<String>())
                                };
                                (format!("expected {}, found {what}", exp.as_str()), at)
                            }),
                            L::Io(es) => es.into_iter().next().map(|(path, msg)| {
                                (format!("cannot load module `{path}`: {msg}"), path)
                            }),
                        };
                        if found.is_none() {
                            found = first;
                        }
                    }
                    let (why, at) = found.unwrap_or_else(|| ("syntax error".into(), ""));
                    position_error(code, "cannot parse jq expression", &why, at)
                })?;
            Compiler::default()
                .with_funs(funs)
                .with_global_vars(names.iter().map(String::as_str))
                .compile(modules)
                .map_err(|errs| {
                    let first = errs.into_iter().flat_map(|(_, es)| es).next();
                    match first {
                        Some((name, undefined)) => {
                            let what = match undefined {
                                jaq_core::compile::Undefined::Filter(arity) => {
                                    format!("undefined filter `{name}/{arity}`")
                                }
                                other => format!("undefined {} `{name}`", other.as_str()),
                            };
                            position_error(code, "cannot compile jq expression", &what, name)
                        }
                        None => CliError::invalid(
                            "invalid_expression",
                            "cannot compile jq expression".to_string(),
                        ),
                    }
                })
        };
        let filter = match compile(0).or_else(|_| compile(1)) {
            Ok(filter) => filter,
            Err(_) => compile(2)?,
        };
        Ok(Program {
            filter,
            values,
            code: code.to_string(),
        })
    }

    /// Runs the expression on `input`; it must produce exactly one JSON value.
    ///
    /// # Errors
    /// `expression_failed` for a runtime error or a `halt`, `expression_output` for
    /// no value, several values, or a value JSON cannot hold.
    pub fn run_one(&self, input: Value) -> Result<Value, CliError> {
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new(self.values.clone()));
        let original = input.clone();
        let mut outputs = self.filter.id.run((ctx, to_val(input)));
        let mut first = None;
        let mut count = 0;
        for out in outputs.by_ref() {
            let val = match out {
                Ok(v) => v,
                Err(exn) => {
                    let mut hint = "the state file is unchanged; fix the expression and try again";
                    let message = match exn.get_err() {
                        Ok(err) => {
                            let text = err.to_string();
                            if text.starts_with("cannot use null as iterable") {
                                hint = "jaq does not create missing parent objects in assignments: write `.a.b = 1` as `.a |= (. // {}) | .a.b = 1`, or use `statesafe set FILE /a/b 1`; the state file is unchanged";
                            }
                            format!("jq expression `{}` failed: {text}", self.code)
                        }
                        Err(exn) => match exn.get_halt() {
                            Ok(code) => {
                                format!(
                                    "jq expression `{}` called halt (exit code {code})",
                                    self.code
                                )
                            }
                            Err(_) => format!("jq expression `{}` failed", self.code),
                        },
                    };
                    return Err(CliError::invalid("expression_failed", message).hint(hint));
                }
            };
            count += 1;
            if count == 1 {
                first = Some(val);
            } else {
                break;
            }
        }
        match (count, first) {
            (1, Some(v)) => {
                let mut value = from_val(&v)?;
                restore_order(&original, &mut value);
                Ok(value)
            }
            (0, _) => Err(CliError::invalid(
                "expression_output",
                format!("jq expression `{}` produced no value", self.code),
            )
            .hint("the new document must be exactly one value; `empty` or a failing `select` produce none")),
            _ => Err(CliError::invalid(
                "expression_output",
                format!("jq expression `{}` produced more than one value", self.code),
            )
            .hint("the new document must be exactly one value; collect a stream with `[...]`")),
        }
    }
}

/// Undoes the key reordering of jaq's deletions: jaq removes an object key by
/// moving the last key into its place (`del(.a)` on `{"a","b","c"}` gives `{"c","b"}`),
/// which would make every deletion a noisy diff. Where an object lost keys, its
/// surviving keys go back to their original order, new keys after them.
fn restore_order(before: &Value, after: &mut Value) {
    match (before, after) {
        (Value::Object(old), Value::Object(new)) => {
            let lost = old.keys().any(|k| !new.contains_key(k));
            if lost {
                let mut reordered = serde_json::Map::with_capacity(new.len());
                for key in old.keys() {
                    if let Some((k, v)) = new.shift_remove_entry(key) {
                        reordered.insert(k, v);
                    }
                }
                reordered.append(new);
                *new = reordered;
            }
            for (key, value) in new.iter_mut() {
                if let Some(old_value) = old.get(key) {
                    restore_order(old_value, value);
                }
            }
        }
        (Value::Array(old), Value::Array(new)) if old.len() == new.len() => {
            for (o, n) in old.iter().zip(new.iter_mut()) {
                restore_order(o, n);
            }
        }
        _ => {}
    }
}

/// An error pointing at `at` (a slice of `code`), with a caret under it.
fn position_error(code: &str, what: &str, why: &str, at: &str) -> CliError {
    let offset = (at.as_ptr() as usize)
        .checked_sub(code.as_ptr() as usize)
        .filter(|o| *o <= code.len())
        .unwrap_or(code.len());
    let before = &code[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    let column = before[line_start..].chars().count() + 1;
    let line_text = code[line_start..].lines().next().unwrap_or("");
    let snippet = format!("{line_text}\n{}^", " ".repeat(column - 1));
    CliError::invalid(
        "invalid_expression",
        format!("{what}: {why} at line {line}, column {column}"),
    )
    .snippet(snippet)
    .hint("the expression uses jq syntax (https://jqlang.org/manual/), for example '.n += 1'")
}

/// Converts a document into jaq's value type.
fn to_val(value: Value) -> Val {
    use serde::Deserialize;
    Val::deserialize(value).expect("invariant: every JSON value converts to a jaq value")
}

/// Converts jaq's value back into JSON, as jq prints it (NaN as null, infinities as
/// the largest finite numbers).
fn from_val(val: &Val) -> Result<Value, CliError> {
    Ok(match val {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => number(n),
        Val::TStr(s) => Value::String(String::from_utf8_lossy(s).into_owned()),
        Val::BStr(_) => {
            return Err(CliError::invalid(
                "expression_output",
                "the jq expression produced a byte string, which JSON cannot hold",
            )
            .hint("convert it to text first, for example with `tostring` or `@base64`"));
        }
        Val::Arr(items) => Value::Array(items.iter().map(from_val).collect::<Result<_, _>>()?),
        Val::Obj(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, v) in map.iter() {
                let Val::TStr(key) = k else {
                    return Err(CliError::invalid(
                        "expression_output",
                        format!(
                            "the jq expression produced an object key that is not a string: {k}"
                        ),
                    ));
                };
                out.insert(String::from_utf8_lossy(key).into_owned(), from_val(v)?);
            }
            Value::Object(out)
        }
    })
}

fn number(n: &Num) -> Value {
    match n {
        Num::Int(i) => Value::from(*i as i64),
        Num::Float(f) => float(*f),
        // Big integers and decimal literals: as serde_json reads their text (an
        // integer when it fits, else the nearest float).
        other => {
            let text = other.to_string();
            serde_json::from_str(&text)
                .ok()
                .or_else(|| text.parse::<f64>().ok().map(float))
                .unwrap_or(Value::Null)
        }
    }
}

fn float(f: f64) -> Value {
    if f.is_nan() {
        Value::Null
    } else if f.is_infinite() {
        Value::from(if f > 0.0 { f64::MAX } else { f64::MIN })
    } else {
        Value::from(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(code: &str, input: Value) -> Result<Value, CliError> {
        Program::compile(code, vec![])?.run_one(input)
    }

    #[test]
    fn updates_and_keeps_key_order() {
        let out = run(".n += 1", json!({"z": 0, "n": 1, "a": 2})).unwrap();
        assert_eq!(out, json!({"z": 0, "n": 2, "a": 2}));
        let keys: Vec<_> = out.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["z", "n", "a"]);
        assert_eq!(run(".n += 1", json!({})).unwrap(), json!({"n": 1}));
        let out = run(
            "del(.a) | .d = 4",
            json!({"a": 1, "b": 2, "c": {"x": 1, "y": 2, "z": 3}}),
        )
        .unwrap();
        assert_eq!(out.to_string(), r#"{"b":2,"c":{"x":1,"y":2,"z":3},"d":4}"#);
        let out = run("del(.c.x)", json!({"a": 1, "c": {"x": 1, "y": 2, "z": 3}})).unwrap();
        assert_eq!(out.to_string(), r#"{"a":1,"c":{"y":2,"z":3}}"#);
        let out = run(
            "to_entries | sort_by(.key) | from_entries",
            json!({"b": 1, "a": 2}),
        )
        .unwrap();
        assert_eq!(out.to_string(), r#"{"a":2,"b":1}"#);
        let e = run(".a.b = 1", json!({})).unwrap_err();
        assert!(
            e.hint.as_deref().unwrap().contains("statesafe set"),
            "{e:?}"
        );
        assert_eq!(run("map(. * 2)", json!([1, 2.5])).unwrap(), json!([2, 5.0]));
        assert_eq!(run("1e1000", Value::Null).unwrap(), json!(f64::MAX));
    }

    #[test]
    fn one_value_only() {
        assert_eq!(
            run("empty", json!(1)).unwrap_err().kind,
            "expression_output"
        );
        assert_eq!(
            run(".[]", json!([1, 2])).unwrap_err().kind,
            "expression_output"
        );
        assert_eq!(
            run("repeat(1)", json!(1)).unwrap_err().kind,
            "expression_output"
        );
        assert_eq!(
            run("error(\"x\")", json!(1)).unwrap_err().kind,
            "expression_failed"
        );
        assert_eq!(run("halt", json!(1)).unwrap_err().kind, "expression_failed");
    }

    #[test]
    fn errors_have_positions() {
        let e = Program::compile(".a | [1,", vec![]).err().unwrap();
        assert_eq!(e.kind, "invalid_expression");
        assert!(e.message.contains("column"), "{}", e.message);
        let e = Program::compile(".a | nosuch", vec![]).err().unwrap();
        assert!(e.message.contains("`nosuch/0`"), "{}", e.message);
        assert!(e.message.contains("column 6"), "{}", e.message);
        let p = Program::compile("$who", vec![("who".into(), json!("x"))]).unwrap();
        assert_eq!(p.run_one(Value::Null).unwrap(), json!("x"));
        let p = Program::compile("$ENV.PATH", vec![]).unwrap();
        assert_eq!(
            p.run_one(Value::Null).unwrap(),
            json!(std::env::var("PATH").unwrap())
        );
    }
}
