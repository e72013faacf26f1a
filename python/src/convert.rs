//! Python objects to and from `serde_json::Value`, exactly.
//!
//! Only the JSON types pass: `dict` (with `str` keys), `list`, `str`, `int`, `float`
//! (finite), `bool` and `None`, or their subclasses (an `IntEnum` is an `int`). A tuple,
//! set, `datetime`, `Decimal`, NaN or a non-`str` key is a `TypeError` naming the JSON
//! Pointer of the value, raised before anything is written: writing it would change
//! the value silently (a tuple comes back as a list, a `datetime` as a string).
//!
//! Integers outside 64 bits go through their decimal text: kept exactly when
//! serde_json's `arbitrary_precision` is enabled, refused with a clear error otherwise
//! (never rounded to a float).

use std::collections::HashMap;
use std::str::FromStr;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};
use serde_json::{Map, Number, Value};

/// One step of the path to a value that failed to convert.
enum Step {
    Key(String),
    Index(usize),
}

/// A conversion failure, with the path collected on the way out of the recursion (so
/// a successful conversion pays nothing for paths).
struct Failure {
    steps: Vec<Step>,
    what: String,
}

impl Failure {
    fn new(what: String) -> Failure {
        Failure {
            steps: Vec::new(),
            what,
        }
    }

    fn at(mut self, step: Step) -> Failure {
        self.steps.push(step);
        self
    }

    /// The JSON Pointer (RFC 6901) of the failing value.
    fn pointer(&self) -> String {
        if self.steps.is_empty() {
            return "/".into();
        }
        let mut p = String::new();
        for step in self.steps.iter().rev() {
            p.push('/');
            match step {
                Step::Key(k) => p.push_str(&k.replace('~', "~0").replace('/', "~1")),
                Step::Index(i) => p.push_str(&i.to_string()),
            }
        }
        p
    }
}

/// Whether big integers (beyond 64 bits) survive a trip through `serde_json::Number`
/// in this build.
pub fn big_ints_supported() -> bool {
    let text = "123456789012345678901234567890";
    Number::from_str(text).is_ok_and(|n| n.to_string() == text)
}

/// Converts a Python object into a JSON value; a `TypeError` naming the path of the
/// first value that is not JSON.
pub fn to_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    walk(obj, 0).map_err(|f| {
        let py = obj.py();
        let pointer = f.pointer();
        let err = PyTypeError::new_err(format!(
            "the value at `{pointer}` {}; nothing was written\nhint: store only dict (str keys), list, str, int, float, bool and None; convert other values first (for example a datetime to its isoformat() text)",
            f.what
        ));
        // `.pointer` lets a caller find the value without parsing the message.
        let _ = err.value(py).setattr("pointer", pointer);
        err
    })
}

/// Deeper than this is refused rather than overflowing the stack (serde_json's own
/// parser stops at 128).
const MAX_DEPTH: usize = 128;

fn walk(obj: &Bound<'_, PyAny>, depth: usize) -> Result<Value, Failure> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return match s.to_cow() {
            Ok(s) => Ok(Value::String(s.into_owned())),
            Err(_) => Err(Failure::new(
                "is a str that is not valid Unicode (it holds a lone surrogate)".into(),
            )),
        };
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(i) = obj.cast::<PyInt>() {
        return int_value(i).map(Value::Number);
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let v = f.value();
        return Number::from_f64(v).map(Value::Number).ok_or_else(|| {
            Failure::new(format!(
                "is the float {}, which JSON cannot hold",
                repr(obj)
            ))
        });
    }
    if depth >= MAX_DEPTH {
        return Err(Failure::new(format!(
            "is nested more than {MAX_DEPTH} levels deep"
        )));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = Map::with_capacity(d.len());
        for (k, v) in d.iter() {
            let Ok(key) = k.cast::<PyString>() else {
                return Err(Failure::new(format!(
                    "has the key {} of type {}, but JSON keys are strings",
                    repr(&k),
                    type_name(&k)
                )));
            };
            let Ok(key) = key.to_cow() else {
                return Err(Failure::new(
                    "has a key that is not valid Unicode (it holds a lone surrogate)".into(),
                ));
            };
            let value = walk(&v, depth + 1).map_err(|f| f.at(Step::Key(key.to_string())))?;
            map.insert(key.into_owned(), value);
        }
        return Ok(Value::Object(map));
    }
    if let Ok(l) = obj.cast::<PyList>() {
        let mut items = Vec::with_capacity(l.len());
        for (i, v) in l.iter().enumerate() {
            items.push(walk(&v, depth + 1).map_err(|f| f.at(Step::Index(i)))?);
        }
        return Ok(Value::Array(items));
    }
    Err(Failure::new(format!(
        "is a {} ({}), which is not a JSON type",
        type_name(obj),
        repr(obj)
    )))
}

fn int_value(i: &Bound<'_, PyInt>) -> Result<Number, Failure> {
    if let Ok(n) = i.extract::<i64>() {
        return Ok(n.into());
    }
    if let Ok(n) = i.extract::<u64>() {
        return Ok(n.into());
    }
    // Beyond 64 bits: through the decimal text, kept only if it survives exactly.
    let text = i
        .str()
        .and_then(|s| s.to_cow().map(|c| c.into_owned()))
        .map_err(|e| Failure::new(format!("is an int that could not be read: {e}")))?;
    match Number::from_str(&text) {
        Ok(n) if n.to_string() == text => Ok(n),
        _ => Err(Failure::new(format!(
            "is the int {text}, beyond 64 bits, which this build of statesafe cannot keep exactly"
        ))),
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    let ty = obj.get_type();
    let module = ty
        .module()
        .ok()
        .and_then(|m| m.to_cow().ok().map(|c| c.into_owned()));
    let name = ty
        .qualname()
        .ok()
        .and_then(|n| n.to_cow().ok().map(|c| c.into_owned()))
        .unwrap_or_else(|| "?".into());
    match module {
        Some(m) if m != "builtins" => format!("{m}.{name}"),
        _ => name,
    }
}

fn repr(obj: &Bound<'_, PyAny>) -> String {
    let mut r = obj
        .repr()
        .ok()
        .and_then(|r| r.to_cow().ok().map(|c| c.into_owned()))
        .unwrap_or_else(|| "?".into());
    if r.len() > 60 {
        let mut cut = 57;
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        r.truncate(cut);
        r.push_str("...");
    }
    r
}

/// Converts a JSON value into fresh Python objects (no sharing between calls).
pub fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    let mut keys = Keys::default();
    build(py, value, &mut keys)
}

/// Object keys made so far in one conversion: a document's records repeat the same few
/// keys, and a `str` is immutable, so each is made once (as `json.loads` does).
#[derive(Default)]
struct Keys<'v, 'py> {
    made: HashMap<&'v str, Bound<'py, PyString>>,
}

/// Beyond this many distinct keys (ids used as keys), stop remembering new ones.
const MAX_KEYS: usize = 4096;

impl<'v, 'py> Keys<'v, 'py> {
    fn get(&mut self, py: Python<'py>, key: &'v str) -> Bound<'py, PyString> {
        if let Some(k) = self.made.get(key) {
            return k.clone();
        }
        let k = PyString::new(py, key);
        if self.made.len() < MAX_KEYS {
            self.made.insert(key, k.clone());
        }
        k
    }
}

fn build<'v, 'py>(
    py: Python<'py>,
    value: &'v Value,
    keys: &mut Keys<'v, 'py>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => number(py, n)?,
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(build(py, item, keys)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(keys.get(py, k), build(py, v, keys)?)?;
            }
            dict.into_any()
        }
    })
}

fn number<'py>(py: Python<'py>, n: &Number) -> PyResult<Bound<'py, PyAny>> {
    if let Some(i) = n.as_i64() {
        return Ok(i.into_pyobject(py)?.into_any());
    }
    if let Some(u) = n.as_u64() {
        return Ok(u.into_pyobject(py)?.into_any());
    }
    let text = n.to_string();
    let integral = text
        .strip_prefix('-')
        .unwrap_or(&text)
        .bytes()
        .all(|b| b.is_ascii_digit());
    if integral {
        // A big integer (only with arbitrary_precision): exactly, through its text.
        return py.get_type::<PyInt>().call1((text,)).map(Bound::into_any);
    }
    match n.as_f64() {
        Some(f) => Ok(PyFloat::new(py, f).into_any()),
        None => py.get_type::<PyFloat>().call1((text,)),
    }
}
