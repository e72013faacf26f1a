//! RFC 6901 JSON Pointers: parsing, reading, setting (creating missing parent
//! objects) and removing, with errors that say which prefix of the pointer failed.

use serde_json::Value;

use crate::error::CliError;

/// A parsed JSON Pointer. The empty pointer `''` names the whole document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

/// Why a pointer could not be followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// Nothing at `at` (a prefix of the pointer).
    Absent {
        /// The prefix that names nothing.
        at: String,
    },
    /// The value at `at` is a scalar, or an array indexed with something that is not an index.
    Through {
        /// The prefix naming the value that cannot be entered.
        at: String,
        /// What it is ("a number", "an array").
        what: &'static str,
        /// The token that could not be used on it.
        token: String,
    },
    /// An array index past the end.
    OutOfRange {
        /// The prefix naming the array.
        at: String,
        /// The index asked for.
        index: usize,
        /// The array's length.
        len: usize,
    },
}

impl Pointer {
    /// Parses `text`: empty, or `/`-separated tokens with `~0` for `~` and `~1` for `/`.
    ///
    /// # Errors
    /// An `invalid_pointer` error that says what is wrong and how to write it.
    pub fn parse(text: &str) -> Result<Pointer, CliError> {
        if text.is_empty() {
            return Ok(Pointer {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            let suggestion = format!("/{}", text.trim_start_matches('.').replace('.', "/"));
            return Err(CliError::invalid(
                "invalid_pointer",
                format!("`{text}` is not a JSON pointer: it must be empty or start with `/`"),
            )
            .hint(format!(
                "JSON pointers look like `{suggestion}` (RFC 6901); use '' for the whole document"
            )));
        };
        let tokens = rest
            .split('/')
            .map(|raw| unescape(raw).ok_or(raw))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|raw| {
                CliError::invalid(
                    "invalid_pointer",
                    format!(
                        "`{text}` is not a JSON pointer: `~` in `{raw}` must be followed by `0` or `1`"
                    ),
                )
                .hint("write `~0` for a literal `~` and `~1` for a literal `/` in a key")
            })?;
        Ok(Pointer {
            text: text.to_string(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this is the empty pointer (the whole document).
    pub fn is_root(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The unescaped tokens.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// Nothing at the first `n` tokens.
    pub fn absent(&self, n: usize) -> Miss {
        Miss::Absent { at: self.prefix(n) }
    }

    /// The pointer made of the first `n` tokens, for messages.
    fn prefix(&self, n: usize) -> String {
        self.tokens[..n].iter().fold(String::new(), |mut s, t| {
            s.push('/');
            s.push_str(&t.replace('~', "~0").replace('/', "~1"));
            s
        })
    }

    /// The value the pointer names.
    pub fn get<'v>(&self, doc: &'v Value) -> Result<&'v Value, Miss> {
        let mut cur = doc;
        for (i, token) in self.tokens.iter().enumerate() {
            cur = match cur {
                Value::Object(map) => map.get(token),
                Value::Array(items) => match index(token) {
                    Some(Index::At(n)) => items.get(n),
                    Some(Index::End) => None,
                    None => return Err(self.through(i, cur)),
                },
                _ => return Err(self.through(i, cur)),
            }
            .ok_or_else(|| Miss::Absent {
                at: self.prefix(i + 1),
            })?;
        }
        Ok(cur)
    }

    /// Sets the value the pointer names, creating missing parents as jq's
    /// `.a.b = v` and `.a[0] = v` do: an array when the next token is an index (`0`,
    /// `-`), else an object; a `null` parent is replaced the same way. In an array, an
    /// index equal to the length or `-` appends.
    pub fn set(&self, doc: &mut Value, value: Value) -> Result<(), Miss> {
        let Some((last, parents)) = self.tokens.split_last() else {
            *doc = value;
            return Ok(());
        };
        let mut cur = doc;
        for (i, token) in parents.iter().enumerate() {
            if cur.is_null() {
                *cur = container_for(token);
            }
            let what = kind(cur);
            cur = match cur {
                // A missing parent starts as `null`: the next step makes it a container.
                Value::Object(map) => map.entry(token.clone()).or_insert(Value::Null),
                Value::Array(items) => {
                    let len = items.len();
                    match index(token) {
                        Some(Index::At(n)) if n < len => &mut items[n],
                        Some(Index::At(n)) if n > len => {
                            return Err(Miss::OutOfRange {
                                at: self.prefix(i),
                                index: n,
                                len,
                            });
                        }
                        Some(_) => {
                            items.push(Value::Null);
                            items.last_mut().expect("invariant: just pushed")
                        }
                        None => return Err(self.through_kind(i, what)),
                    }
                }
                _ => return Err(self.through_kind(i, what)),
            };
        }
        let n = parents.len();
        if cur.is_null() {
            *cur = container_for(last);
        }
        let what = kind(cur);
        match cur {
            Value::Object(map) => {
                map.insert(last.clone(), value);
            }
            Value::Array(items) => match index(last) {
                Some(Index::At(i)) if i < items.len() => items[i] = value,
                Some(Index::At(i)) if i > items.len() => {
                    return Err(Miss::OutOfRange {
                        at: self.prefix(n),
                        index: i,
                        len: items.len(),
                    });
                }
                Some(_) => items.push(value),
                None => return Err(self.through_kind(n, what)),
            },
            _ => return Err(self.through_kind(n, what)),
        }
        Ok(())
    }

    /// Removes the value the pointer names and returns it. The empty pointer is
    /// refused by the caller, never here.
    pub fn remove(&self, doc: &mut Value) -> Result<Value, Miss> {
        let Some((last, parents)) = self.tokens.split_last() else {
            return Ok(std::mem::take(doc));
        };
        let parent_ptr = Pointer {
            text: self.prefix(parents.len()),
            tokens: parents.to_vec(),
        };
        // Find the parent immutably first, for precise errors, then mutate.
        parent_ptr.get(doc)?;
        let mut cur = doc;
        for token in parents {
            cur = match cur {
                Value::Object(map) => map.get_mut(token),
                Value::Array(items) => match index(token) {
                    Some(Index::At(n)) => items.get_mut(n),
                    _ => None,
                },
                _ => None,
            }
            .expect("invariant: the parent was found above");
        }
        let n = parents.len();
        let absent = || Miss::Absent {
            at: self.prefix(n + 1),
        };
        let what = kind(cur);
        match cur {
            Value::Object(map) => map.shift_remove(last).ok_or_else(absent),
            Value::Array(items) => match index(last) {
                Some(Index::At(i)) if i < items.len() => Ok(items.remove(i)),
                Some(_) => Err(absent()),
                None => Err(self.through_kind(n, what)),
            },
            _ => Err(self.through_kind(n, what)),
        }
    }

    fn through(&self, i: usize, value: &Value) -> Miss {
        self.through_kind(i, kind(value))
    }

    /// The value at the first `i` tokens is `what`, which token `i` cannot enter.
    pub fn through_kind(&self, i: usize, what: &'static str) -> Miss {
        Miss::Through {
            at: self.prefix(i),
            what,
            token: self.tokens[i].clone(),
        }
    }
}

impl Miss {
    /// The error for a failed `action` ("read", "set", "delete") of `pointer` in `file`.
    pub fn into_error(self, action: &str, pointer: &Pointer, file: &std::path::Path) -> CliError {
        let file = file.display();
        let ptr = pointer.as_str();
        match self {
            Miss::Absent { at } => {
                let mut e = CliError::new(
                    "no_value",
                    crate::error::Exit::NotFound,
                    format!("no value at `{at}` in `{file}`"),
                );
                if at != ptr {
                    e.message = format!("cannot {action} `{ptr}` in `{file}`: no value at `{at}`");
                }
                e
            }
            Miss::Through { at, what, token } => {
                let shown = if at.is_empty() {
                    "the document".to_string()
                } else {
                    format!("`{at}`")
                };
                let why = if what == "an array" {
                    format!("{shown} is an array, and `{token}` is not an index")
                } else {
                    format!("{shown} is {what}, not an object or array")
                };
                CliError::invalid(
                    "pointer_through_non_object",
                    format!("cannot {action} `{ptr}` in `{file}`: {why}"),
                )
                .hint(if what == "an array" {
                    "array elements are named by their index from 0 (`/items/0`), or `-` to append"
                        .to_string()
                } else {
                    format!("set {shown} to an object first, or use another pointer")
                })
            }
            Miss::OutOfRange { at, index, len } => CliError::invalid(
                "index_out_of_range",
                format!(
                    "cannot {action} `{ptr}` in `{file}`: index {index} is past the end of `{at}` (length {len})"
                ),
            )
            .hint(if len == 0 {
                // Often an array `set` just created for a missing parent, as jq would.
                format!(
                    "an empty array starts at index 0 (or `-`); for keys that are numbers, make `{at}` an object first: `statesafe set FILE {} '{{}}'`",
                    crate::error::shell_word(&at)
                )
            } else {
                format!("use an index up to {len}, or `-` to append")
            }),
        }
    }
}

/// The empty container a missing parent becomes, as in jq: an array when `token`
/// (the step into it) is an array index, else an object.
fn container_for(token: &str) -> Value {
    match index(token) {
        Some(_) => Value::Array(Vec::new()),
        None => Value::Object(serde_json::Map::new()),
    }
}

/// An array index token, read.
pub enum Index {
    /// A position.
    At(usize),
    /// `-`, past the last element.
    End,
}

/// An array index token: `0`, or digits without a leading zero, or `-`.
pub fn index(token: &str) -> Option<Index> {
    if token == "-" {
        return Some(Index::End);
    }
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok().map(Index::At)
}

fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// "a number", "an array", ... for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Pointer {
        Pointer::parse(s).unwrap()
    }

    #[test]
    fn rfc6901_examples() {
        let doc = json!({
            "foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3,
            "g|h": 4, "i\\j": 5, "k\"l": 6, " ": 7, "m~n": 8
        });
        assert_eq!(p("").get(&doc).unwrap(), &doc);
        assert_eq!(p("/foo").get(&doc).unwrap(), &json!(["bar", "baz"]));
        assert_eq!(p("/foo/0").get(&doc).unwrap(), &json!("bar"));
        assert_eq!(p("/").get(&doc).unwrap(), &json!(0));
        assert_eq!(p("/a~1b").get(&doc).unwrap(), &json!(1));
        assert_eq!(p("/m~0n").get(&doc).unwrap(), &json!(8));
        assert_eq!(p("/ ").get(&doc).unwrap(), &json!(7));
        assert!(Pointer::parse("foo").is_err());
        assert!(Pointer::parse("/a~2").is_err());
        assert!(matches!(p("/foo/01").get(&doc), Err(Miss::Through { .. })));
        assert!(matches!(p("/foo/-").get(&doc), Err(Miss::Absent { .. })));
    }

    #[test]
    fn set_creates_parents_and_refuses_scalars() {
        let mut doc = json!({"n": 1, "list": [1], "z": null});
        p("/a/b/c").set(&mut doc, json!(true)).unwrap();
        assert_eq!(doc["a"], json!({"b": {"c": true}}));
        p("/list/-").set(&mut doc, json!(2)).unwrap();
        p("/list/2").set(&mut doc, json!(3)).unwrap();
        p("/list/0").set(&mut doc, json!(0)).unwrap();
        assert_eq!(doc["list"], json!([0, 2, 3]));
        p("/z/k").set(&mut doc, json!(1)).unwrap();
        assert_eq!(doc["z"], json!({"k": 1}));
        // As jq's `.users[0].name = "ada"` and `.q[0] = 1` on `null`: arrays.
        p("/users/0/name").set(&mut doc, json!("ada")).unwrap();
        assert_eq!(doc["users"], json!([{"name": "ada"}]));
        p("/tags/-").set(&mut doc, json!("x")).unwrap();
        assert_eq!(doc["tags"], json!(["x"]));
        let mut nulls = json!({"q": null});
        p("/q/0").set(&mut nulls, json!(1)).unwrap();
        assert_eq!(nulls, json!({"q": [1]}));
        assert!(matches!(
            p("/fresh/2/x").set(&mut doc, json!(1)),
            Err(Miss::OutOfRange {
                index: 2,
                len: 0,
                ..
            })
        ));
        assert_eq!(
            p("/n/x").set(&mut doc, json!(1)),
            Err(Miss::Through {
                at: "/n".into(),
                what: "a number",
                token: "x".into()
            })
        );
        assert!(matches!(
            p("/list/9").set(&mut doc, json!(1)),
            Err(Miss::OutOfRange {
                index: 9,
                len: 3,
                ..
            })
        ));
        p("").set(&mut doc, json!([])).unwrap();
        assert_eq!(doc, json!([]));
    }

    #[test]
    fn remove_keeps_order_and_reports_absence() {
        let mut doc = json!({"a": 1, "b": {"c": [1, 2]}, "d": 4});
        assert_eq!(p("/a").remove(&mut doc).unwrap(), json!(1));
        assert_eq!(p("/b/c/0").remove(&mut doc).unwrap(), json!(1));
        assert_eq!(doc, json!({"b": {"c": [2]}, "d": 4}));
        let keys: Vec<_> = doc.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["b", "d"]);
        assert_eq!(
            p("/x/y").remove(&mut doc),
            Err(Miss::Absent { at: "/x".into() })
        );
        assert!(matches!(
            p("/d/y").remove(&mut doc),
            Err(Miss::Through { .. })
        ));
    }
}
