//! jq expressions, through the jaq crates: compile once (before taking the lock),
//! run on the document, and insist on exactly one JSON value.
//!
//! Evaluation is bounded, because it runs while the writers' lock is held: it runs
//! on a thread of its own while the calling thread watches the clock and the
//! process's memory, and gives up with `expression_limit` (exit 15) when either runs
//! out. The thread's stack is larger than the memory allowance, so a runaway
//! recursion (`def f: 1 + f; f`) hits the allowance, a clear error, before it could
//! overflow the stack and abort the process. The abandoned thread ends with the
//! process, which exits right after reporting the error (the lock is released first).
//!
//! The document goes in and comes out as jaq's values ([`Doc`], read from and
//! written to the file's bytes directly, see `val.rs`). Numbers keep their text: an
//! integer becomes a jaq integer (exact at any size), any other number jaq's
//! decimal, which prints back as it was read unless the expression computes with it.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data};
use jaq_json::{Rc, Val};
use serde_json::Value;

use crate::error::{CliError, Exit};
use crate::val::{self, Doc, Unfit};

type Filter = jaq_core::Filter<data::JustLut<Val>>;

/// The memory an evaluation may add to the process: this, or four times what the
/// process held when evaluation started (the document), whichever is larger.
const MIN_MEMORY_ALLOWANCE: u64 = 1 << 30;

/// How often the watcher looks at the clock and the memory.
const POLL: Duration = Duration::from_millis(5);

/// A jq expression compiled on its evaluation thread, ready to run.
pub struct Program {
    code: String,
    timeout: Duration,
    stack: u64,
    inputs: mpsc::Sender<Doc>,
    outputs: mpsc::Receiver<Result<Doc, CliError>>,
}

impl Program {
    /// Compiles `code`; `vars` are `(name, value)` pairs bound as `$name`.
    /// Evaluations (and the compilation) may take `timeout` each.
    ///
    /// # Errors
    /// An `invalid_expression` error with the position of the problem;
    /// `expression_limit` if compiling alone exceeds the limits.
    pub fn compile(
        code: &str,
        vars: Vec<(String, Value)>,
        timeout: Duration,
    ) -> Result<Program, CliError> {
        let (inputs, inputs_rx) = mpsc::channel::<Doc>();
        let (outputs_tx, outputs) = mpsc::channel();
        let source = code.to_string();
        let evaluator = move || {
            let compiled = match Compiled::compile(&source, vars) {
                Ok(c) => {
                    let _ = outputs_tx.send(Ok(Doc::default()));
                    c
                }
                Err(e) => {
                    let _ = outputs_tx.send(Err(e));
                    return;
                }
            };
            for input in inputs_rx {
                if outputs_tx.send(compiled.run_one(input)).is_err() {
                    return;
                }
            }
        };
        let stack = spawn_evaluator(evaluator)?;
        let program = Program {
            code: code.to_string(),
            timeout,
            stack,
            inputs,
            outputs,
        };
        program.wait()?;
        Ok(program)
    }

    /// Runs the expression on `input`; it must produce exactly one JSON value.
    ///
    /// # Errors
    /// `expression_failed` for a runtime error or a `halt`, `expression_output` for
    /// no value, several values, or a value JSON cannot hold, `expression_limit` when
    /// it runs out of time or memory.
    pub fn run_one(&self, input: Doc) -> Result<Doc, CliError> {
        self.inputs.send(input).map_err(|_| self.evaluator_lost())?;
        self.wait()
    }

    /// The evaluator's next answer, or a limit error.
    fn wait(&self) -> Result<Doc, CliError> {
        let started = Instant::now();
        let resident = resident_bytes();
        let allowance = resident
            .map_or(MIN_MEMORY_ALLOWANCE, |r| (4 * r).max(MIN_MEMORY_ALLOWANCE))
            .min(self.stack.saturating_sub(STACK_MARGIN));
        loop {
            match self.outputs.recv_timeout(POLL) {
                Ok(answer) => return answer,
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(self.evaluator_lost()),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if started.elapsed() >= self.timeout {
                return Err(self.limit(format!(
                    "did not finish within {}",
                    humantime::format_duration(self.timeout)
                ))
                .hint("an expression that never ends (`def f: f; f`, `repeat`, a huge `range`) holds the writers' lock; fix it, or give it more time with --eval-timeout if it is merely slow"));
            }
            if let (Some(before), Some(now)) = (resident, resident_bytes())
                && now.saturating_sub(before) > allowance
            {
                return Err(self.limit(format!(
                    "used more than {} MiB of memory",
                    allowance >> 20
                ))
                .hint("look for a runaway recursion (`def f: 1 + f; f`) or an ever-growing result"));
            }
        }
    }

    fn limit(&self, what: String) -> CliError {
        CliError::new(
            "expression_limit",
            Exit::EvalLimit,
            format!("jq expression `{}` {what}", self.code),
        )
    }

    fn evaluator_lost(&self) -> CliError {
        CliError::new(
            "expression_failed",
            Exit::InvalidInput,
            format!(
                "jq expression `{}` stopped its evaluator unexpectedly",
                self.code
            ),
        )
        .hint("this is a bug in statesafe or jaq; the state file is unchanged")
    }
}

/// Room left on the evaluator's stack beyond the memory allowance.
const STACK_MARGIN: u64 = 256 << 20;

/// Starts `f` on a thread whose stack is larger than any memory allowance it gets:
/// 8 GiB reserved (only the pages a recursion touches are backed), halved while the
/// system refuses the reservation. Returns the stack size.
fn spawn_evaluator(f: impl FnOnce() + Send + 'static) -> Result<u64, CliError> {
    let job = std::sync::Arc::new(std::sync::Mutex::new(Some(f)));
    let mut stack: u64 = 8 << 30;
    loop {
        let mine = std::sync::Arc::clone(&job);
        let spawned = std::thread::Builder::new()
            .name("jq".into())
            .stack_size(usize::try_from(stack).unwrap_or(usize::MAX))
            .spawn(move || {
                let f = mine.lock().ok().and_then(|mut job| job.take());
                if let Some(f) = f {
                    f();
                }
            });
        match spawned {
            Ok(_) => return Ok(stack),
            Err(_) if stack > 4 * STACK_MARGIN => stack /= 2,
            Err(e) => {
                return Err(CliError::new(
                    "cannot_run",
                    Exit::Failure,
                    "cannot start a thread to evaluate the jq expression",
                )
                .caused_by(&e)
                .hint("the system refused the thread's stack; free some memory and try again"));
            }
        }
    }
}

/// Resident memory of this process, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// A compiled jq expression and the values of its `--arg`/`--argjson` variables;
/// lives on the evaluation thread, where it was compiled.
struct Compiled {
    filter: Filter,
    values: Vec<Val>,
    code: String,
}

impl Compiled {
    fn compile(code: &str, vars: Vec<(String, Value)>) -> Result<Compiled, CliError> {
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
        Ok(Compiled {
            filter,
            values,
            code: code.to_string(),
        })
    }

    fn run_one(&self, Doc(input): Doc) -> Result<Doc, CliError> {
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new(self.values.clone()));
        // A copy of the root only: the tree is shared, and parts the expression
        // does not touch stay shared with the result.
        let original = input.clone();
        let mut outputs = self.filter.id.run((ctx, input));
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
            (1, Some(mut v)) => {
                // The input's other owner goes first, so that reordering changes
                // the result in place instead of copying what it shares.
                drop(outputs);
                restore_order(&original, &mut v);
                drop(original);
                fit(&v)?;
                Ok(Doc(v))
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
/// surviving keys go back to their original order, new keys after them. Parts the
/// expression left alone are still shared with the input and are not visited.
fn restore_order(before: &Val, after: &mut Val) {
    match (before, after) {
        (Val::Obj(old), Val::Obj(new)) if !Rc::ptr_eq(old, new) => {
            let lost = old.keys().any(|k| !new.contains_key(k));
            let new = Rc::make_mut(new);
            if lost {
                let mut reordered =
                    jaq_json::Map::with_capacity_and_hasher(new.len(), Default::default());
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
        (Val::Arr(old), Val::Arr(new)) if !Rc::ptr_eq(old, new) && old.len() == new.len() => {
            let new = Rc::make_mut(new);
            for (o, n) in old.iter().zip(new.iter_mut()) {
                restore_order(o, n);
            }
        }
        _ => {}
    }
}

/// Refuses a result no state file can hold (see [`val::check`]).
fn fit(v: &Val) -> Result<(), CliError> {
    match val::check(v) {
        Ok(()) => Ok(()),
        Err(Unfit::TooDeep) => Err(CliError::invalid(
            "expression_output",
            format!(
                "the jq expression produced a document nested deeper than {} levels",
                statesafe::json::MAX_DEPTH
            ),
        )
        .hint("statesafe holds documents up to that depth; the state file is unchanged")),
        Err(Unfit::ByteString) => Err(CliError::invalid(
            "expression_output",
            "the jq expression produced a byte string, which JSON cannot hold",
        )
        .hint("convert it to text first, for example with `tostring` or `@base64`")),
        Err(Unfit::Key(k)) => Err(CliError::invalid(
            "expression_output",
            format!("the jq expression produced an object key that is not a string: {k}"),
        )),
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

/// Converts a variable's value (`--argjson`, `$ENV`) into jaq's value type,
/// keeping every number's text.
fn to_val(value: Value) -> Val {
    match value {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(b),
        Value::Number(n) => Val::Num(val::number_of(n.as_str().to_string())),
        Value::String(s) => Val::utf8_str(s.into_bytes()),
        Value::Array(items) => Val::Arr(Rc::new(items.into_iter().map(to_val).collect())),
        Value::Object(map) => Val::obj(
            map.into_iter()
                .map(|(k, v)| (Val::utf8_str(k.into_bytes()), to_val(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Through the text, as the store reads a file (a `Value` hands `-0` over as 0).
    fn doc(v: Value) -> Doc {
        serde_json::from_str(&v.to_string()).unwrap()
    }

    fn value(d: Doc) -> Value {
        serde_json::to_value(&d).unwrap()
    }

    fn run(code: &str, input: Value) -> Result<Value, CliError> {
        Program::compile(code, vec![], DEFAULT_TIMEOUT)?
            .run_one(doc(input))
            .map(value)
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
        // A literal keeps its text; a computed infinity becomes the largest float.
        assert_eq!(run("1e1000", Value::Null).unwrap().to_string(), "1e1000");
        assert_eq!(run("1e1000 * 2", Value::Null).unwrap(), json!(f64::MAX));
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
        let e = Program::compile(".a | [1,", vec![], DEFAULT_TIMEOUT)
            .err()
            .unwrap();
        assert_eq!(e.kind, "invalid_expression");
        assert!(e.message.contains("column"), "{}", e.message);
        let e = Program::compile(".a | nosuch", vec![], DEFAULT_TIMEOUT)
            .err()
            .unwrap();
        assert!(e.message.contains("`nosuch/0`"), "{}", e.message);
        assert!(e.message.contains("column 6"), "{}", e.message);
        let p =
            Program::compile("$who", vec![("who".into(), json!("x"))], DEFAULT_TIMEOUT).unwrap();
        assert_eq!(value(p.run_one(Doc::default()).unwrap()), json!("x"));
        let p = Program::compile("$ENV.PATH", vec![], DEFAULT_TIMEOUT).unwrap();
        assert_eq!(
            value(p.run_one(Doc::default()).unwrap()),
            json!(std::env::var("PATH").unwrap())
        );
    }

    #[test]
    fn numbers_keep_their_text() {
        let doc = statesafe::json::parse(
            br#"{"id":18446744073709551616,"big":12345678901234567890123,"e":1e2,"E":1E+2,"z":-0,"f":1.0,"d":0.10,"n":-7,"x":0}"#,
        )
        .unwrap();
        for code in [
            ".",
            ".x = 1",
            ".x |= . + 1",
            "del(.nothing)",
            "to_entries | from_entries",
        ] {
            let out = run(code, doc.clone()).unwrap();
            for key in ["id", "big", "e", "E", "z", "f", "d", "n"] {
                assert_eq!(out[key].to_string(), doc[key].to_string(), "{code}: {key}");
            }
        }
        let out = run(".id + 1 | tostring", doc.clone()).unwrap();
        assert_eq!(out, json!("18446744073709551617"));
        assert_eq!(run(".e * 2", doc.clone()).unwrap().as_f64(), Some(200.0));
        assert_eq!(run(".z == 0", doc.clone()).unwrap(), json!(true));
    }

    #[test]
    fn runaway_expressions_stop_at_the_limits() {
        for code in [
            "def f: f; f",
            "last(range(1e12))",
            "[limit(100000000; repeat(\"x\"))]",
        ] {
            let e = Program::compile(code, vec![], Duration::from_millis(300))
                .unwrap()
                .run_one(doc(json!({})))
                .unwrap_err();
            assert_eq!(e.kind, "expression_limit", "{code}: {e:?}");
            assert_eq!(e.exit, Exit::EvalLimit);
        }
        // Runaway recursion is stopped by the memory allowance, not by the stack.
        let e = Program::compile("def f: 1 + f; f", vec![], Duration::from_secs(600))
            .unwrap()
            .run_one(doc(json!({})))
            .unwrap_err();
        assert_eq!(e.kind, "expression_limit", "{e:?}");
        assert!(e.message.contains("memory"), "{}", e.message);
    }
}
