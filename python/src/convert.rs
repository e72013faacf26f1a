//! Python objects to and from `serde_json::Value`, exactly.
//!
//! Only the JSON types pass: `dict` (with `str` keys), `list`, `str`, `int`, `float`
//! (finite), `decimal.Decimal` (finite), `bool` and `None`, or their subclasses (an
//! `IntEnum` is an `int`). A tuple, set, `datetime`, NaN or a non-`str` key is a
//! `TypeError` naming the JSON Pointer of the value, raised before anything is
//! written: writing it would change the value silently (a tuple comes back as a list,
//! a `datetime` as a string).
//!
//! Integers outside 64 bits go through their decimal text: kept exactly when
//! serde_json's `arbitrary_precision` is enabled, refused with a clear error otherwise
//! (never rounded to a float). A number with a fraction or exponent part is read as a
//! `float` when the float keeps its value, else as a `Decimal` (see [`statesafe::exact`]); a
//! `Decimal` is written as its exact text.

use std::collections::HashMap;
use std::str::FromStr;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};
use serde_json::{Map, Number, Value};

use statesafe::exact;

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
            "the value at `{pointer}` {}; nothing was written\nhint: store only dict (str keys), list, str, int, float, Decimal, bool and None; convert other values first (for example a datetime to its isoformat() text)",
            f.what
        ));
        // `.pointer` lets a caller find the value without parsing the message.
        let _ = err.value(py).setattr("pointer", pointer);
        err
    })
}

/// Deeper than this is refused rather than overflowing the stack: the library's own
/// limit (512 levels, on write and on read alike), which Python reads too. It was
/// 128 (serde_json's default parser limit, which the workspace lifts), so a document
/// another program wrote 129 to 512 levels deep was read here but could not be
/// committed again, even untouched.
const MAX_DEPTH: usize = statesafe::json::MAX_DEPTH;

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
        if let Some(text) = decimal_json(obj)? {
            let n = Number::from_str(&text).expect("invariant: decimal_json checked it");
            return Ok(Value::Number(n));
        }
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
            let text = key.into_owned();
            if map.contains_key(&text) {
                // Two keys of one text (`str` subclasses with their own `__eq__` or
                // `__hash__`): JSON would hold the key twice and every reader keep one.
                return Err(Failure::new(format!(
                    "has two keys with the text {}, which JSON cannot tell apart (str subclasses that compare unequal)",
                    serde_json::to_string(&text).expect("invariant: a str serializes")
                )));
            }
            map.insert(text, value);
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
    if let Some(text) = decimal_json(obj)? {
        let n = Number::from_str(&text).expect("invariant: decimal_json checked it");
        return Ok(Value::Number(n));
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
    // Beyond 64 bits: through the decimal text of the int's value (`int.__repr__`,
    // as `json.dumps` takes it: never a subclass's own `__str__` or `__repr__`, which
    // may print anything), kept only if it survives exactly.
    static INT_REPR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let text = INT_REPR
        .get_or_try_init(i.py(), || {
            i.py()
                .get_type::<PyInt>()
                .getattr("__repr__")
                .map(Bound::unbind)
        })
        .and_then(|f| f.bind(i.py()).call1((i,)))
        .and_then(|s| Ok(s.cast_into::<PyString>()?.to_cow()?.into_owned()))
        .map_err(|e| Failure::new(format!("is an int that could not be read: {e}")))?;
    match Number::from_str(&text) {
        Ok(n) if n.to_string() == text => Ok(n),
        _ => Err(Failure::new(format!(
            "is the int {text}, beyond 64 bits, which this build of statesafe cannot keep exactly"
        ))),
    }
}

pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
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
    float_or_decimal(py, &text)
}

/// A JSON number with a fraction or exponent part, as a `float` when the float keeps
/// its value (see [`exact::float_keeps`]), else as a `decimal.Decimal` of exactly the
/// text: what the program is served is the file's number, never a neighbour of it
/// (`9007199254740993.0`, `1e-400` and `1e400` are `Decimal`s; `0.1` is a `float`).
fn float_or_decimal<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    if exact::float_keeps(text.as_bytes()) == Some(true)
        && let Ok(f) = text.parse::<f64>()
    {
        return Ok(PyFloat::new(py, f).into_any());
    }
    decimal_type(py)?.call1((text,))
}

/// `decimal.Decimal`.
fn decimal_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static DECIMAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    DECIMAL.import(py, "decimal", "Decimal")
}

/// Whether `text` (a JSON document) may hold a number with a fraction or exponent
/// part that no float holds exactly ([`exact::float_keeps`]): every such number is
/// found ([`exact::runs`]); a run inside a string that happens to be one is a false
/// alarm, which costs only the slower exact parse.
fn may_hold_inexact_float(text: &[u8]) -> bool {
    // Without an exponent, 15 digits or fewer: 15 significant digits at most, of
    // magnitude 1e-15 to 1e15 (the common case, decided here).
    exact::runs(text).any(|run| {
        (run.exponent || (run.fraction && run.digits > 15))
            && (run.text[0] == b'-' || run.text[0].is_ascii_digit())
            && exact::float_keeps(run.text) == Some(false)
    })
}

/// `json.loads`'s `parse_float` for a document that holds a number no float holds.
#[pyfunction]
fn parse_float<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    float_or_decimal(py, text)
}

/// `Some(text)` when `obj` is a `decimal.Decimal` (or a subclass): its exact value as
/// a JSON number (`Decimal.__str__`'s digits, whatever a subclass overrides, with a
/// lower-case `e` and no `+`: `Decimal("1e400")` is written `1e400`). NaN and
/// infinities fail, as their floats do.
fn decimal_json(obj: &Bound<'_, PyAny>) -> Result<Option<String>, Failure> {
    let py = obj.py();
    let read = |e: PyErr| Failure::new(format!("is a Decimal that could not be read: {e}"));
    let decimal = decimal_type(py).map_err(read)?;
    if !obj.is_instance(decimal).map_err(read)? {
        return Ok(None);
    }
    let text = decimal
        .getattr("__str__")
        .and_then(|f| f.call1((obj,)))
        .and_then(|s| Ok(s.cast_into::<PyString>()?.to_cow()?.into_owned()))
        .map_err(read)?;
    if text.contains(['N', 'I', 'n', 'i']) {
        return Err(Failure::new(format!(
            "is the Decimal {text}, which JSON cannot hold"
        )));
    }
    let text = text.replace("E+", "e").replace('E', "e");
    match Number::from_str(&text) {
        Ok(n) if n.to_string() == text => Ok(Some(text)),
        _ => Err(Failure::new(format!(
            "is the Decimal {text}, which this build of statesafe cannot keep exactly"
        ))),
    }
}

/// How [`to_json`] lays the text out: as the library's `serde_json` formatters do,
/// byte for byte, so a file keeps the layout it has always had.
#[derive(Clone, Copy, Debug)]
pub struct JsonLayout {
    /// The indentation of one level, or `None` for one compact line.
    pub indent: Option<&'static [u8]>,
    /// The level the document starts at: 1 inside a sealed file's envelope (whose
    /// formatter writes the document's text where its `state` value goes, verbatim).
    pub base: usize,
}

/// A document as JSON text, and optionally a private copy of it.
pub struct Json<'py> {
    pub text: String,
    /// Containers copied, immutable leaves shared: equal, type for type, to what
    /// parsing `text` gives, and reachable from nowhere else. `None` when not asked
    /// for, or when the document holds a subclass (an `IntEnum`, an `OrderedDict`),
    /// which parsing would not give back.
    pub copy: Option<Bound<'py, PyAny>>,
    /// The nesting depth of `text` (lists and dicts inside each other; 0 for a
    /// scalar), as the library counts it: at most its limit, which the writer keeps.
    pub depth: usize,
}

/// Converts a Python object straight into JSON text (no `serde_json::Value` in
/// between), refusing exactly what [`to_value`] refuses, with the same `TypeError`
/// naming the path; the text is what `serde_json` would write for [`to_value`]'s
/// result in the same layout. With `copy`, also builds the private copy (see
/// [`Json::copy`]) in the same pass. `size_hint`: the expected length (the last
/// document's), so that a large text is not built by doubling its buffer.
pub fn to_json<'py>(
    obj: &Bound<'py, PyAny>,
    layout: JsonLayout,
    copy: bool,
    size_hint: usize,
) -> PyResult<Json<'py>> {
    let mut w = TextWriter {
        out: Vec::with_capacity(size_hint),
        layout,
        copy,
        deepest: 0,
    };
    match w.value(obj, 0) {
        Ok(copied) => {
            let copy = if w.copy {
                Some(copied.unwrap_or_else(|| obj.clone()))
            } else {
                None
            };
            // Only whole `str`s and ASCII punctuation were written.
            let text = String::from_utf8(w.out).expect("invariant: written from str values");
            Ok(Json {
                text,
                copy,
                depth: w.deepest,
            })
        }
        // The same walk, for the same message (a failure costs a second pass; a
        // success pays nothing for paths).
        Err(_) => match to_value(obj) {
            Err(e) => Err(e),
            Ok(_) => Err(PyTypeError::new_err(
                "the document could not be written as JSON; nothing was written",
            )),
        },
    }
}

struct TextWriter {
    out: Vec<u8>,
    layout: JsonLayout,
    /// Still building the copy (cleared at the first subclass).
    copy: bool,
    /// The deepest nesting written so far.
    deepest: usize,
}

impl TextWriter {
    fn newline(&mut self, level: usize) {
        if let Some(unit) = self.layout.indent {
            self.out.push(b'\n');
            for _ in 0..level {
                self.out.extend_from_slice(unit);
            }
        }
    }

    fn string(&mut self, s: &str) {
        serde_json::to_writer(&mut self.out, s).expect("invariant: writing to a Vec");
    }

    /// Writes `obj`; returns its copy when it is a container and the copy is still
    /// being built (a leaf is its own copy: `None`).
    fn value<'py>(
        &mut self,
        obj: &Bound<'py, PyAny>,
        depth: usize,
    ) -> Result<Option<Bound<'py, PyAny>>, Failure> {
        if obj.is_none() {
            self.out.extend_from_slice(b"null");
            return Ok(None);
        }
        if let Ok(s) = obj.cast::<PyString>() {
            if self.copy && !obj.is_exact_instance_of::<PyString>() {
                self.copy = false;
            }
            match s.to_cow() {
                Ok(s) => self.string(&s),
                Err(_) => return Err(Failure::new(String::new())),
            }
            return Ok(None);
        }
        if let Ok(b) = obj.cast::<PyBool>() {
            self.out
                .extend_from_slice(if b.is_true() { b"true" } else { b"false" });
            return Ok(None);
        }
        if let Ok(i) = obj.cast::<PyInt>() {
            if self.copy && !obj.is_exact_instance_of::<PyInt>() {
                self.copy = false;
            }
            // As serde_json writes a `Number` made from an i64 or u64 (itoa), without
            // making one; beyond 64 bits, through `int_value`'s checked text.
            if let Ok(n) = i.extract::<i64>() {
                self.out
                    .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            } else if let Ok(n) = i.extract::<u64>() {
                self.out
                    .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            } else {
                let n = int_value(i)?;
                serde_json::to_writer(&mut self.out, &n).expect("invariant: writing to a Vec");
            }
            return Ok(None);
        }
        if let Ok(f) = obj.cast::<PyFloat>() {
            if self.copy && !obj.is_exact_instance_of::<PyFloat>() {
                self.copy = false;
            }
            let v = f.value();
            if !v.is_finite() {
                return Err(Failure::new(String::new()));
            }
            // The digits `Number::from_f64` keeps (serde_json's own formatter, zmij:
            // the shortest text that reads back as the same float).
            self.out
                .extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
            return Ok(None);
        }
        if depth >= MAX_DEPTH {
            return if self.decimal(obj)? {
                Ok(None)
            } else {
                Err(Failure::new(String::new()))
            };
        }
        // Only lists and dicts get past here (or fail below, writing nothing).
        self.deepest = self.deepest.max(depth + 1);
        let level = self.layout.base + depth;
        if let Ok(d) = obj.cast::<PyDict>() {
            if self.copy && !obj.is_exact_instance_of::<PyDict>() {
                self.copy = false;
            }
            // With a copy, the copy is made first (`PyDict_Copy`: the table copied at
            // once) and it is the copy that is written: the text is then made of the
            // copy's own objects, whatever a finalizer run by an allocation does to
            // the caller's dict meanwhile. Its dicts and lists are then replaced by
            // their copies.
            let copy = if self.copy { d.copy().ok() } else { None };
            if copy.is_none() {
                self.copy = false;
            }
            let source = copy.as_ref().unwrap_or(d);
            self.out.push(b'{');
            let mut first = true;
            // Keys of exact `str` are distinct texts; a `str` subclass's may not be.
            let mut subclassed = false;
            for (k, v) in source.iter() {
                let Ok(key) = k.cast::<PyString>() else {
                    return Err(Failure::new(String::new()));
                };
                if !k.is_exact_instance_of::<PyString>() {
                    subclassed = true;
                    self.copy = false;
                }
                if !first {
                    self.out.push(b',');
                }
                first = false;
                self.newline(level + 1);
                match key.to_cow() {
                    Ok(key) => self.string(&key),
                    Err(_) => return Err(Failure::new(String::new())),
                }
                self.out.extend_from_slice(if self.layout.indent.is_some() {
                    b": "
                } else {
                    b":"
                });
                let child = self.value(&v, depth + 1)?;
                // Replacing the value of a key present: the table keeps its size, so
                // the iteration over it goes on undisturbed.
                if let (Some(copy), Some(child), true) = (&copy, child, self.copy)
                    && copy.set_item(&k, child).is_err()
                {
                    self.copy = false;
                }
            }
            if subclassed && !distinct_texts(source) {
                // [`walk`] says which key.
                return Err(Failure::new(String::new()));
            }
            if !first {
                self.newline(level);
            }
            self.out.push(b'}');
            return Ok(copy.filter(|_| self.copy).map(Bound::into_any));
        }
        if let Ok(l) = obj.cast::<PyList>() {
            if self.copy && !obj.is_exact_instance_of::<PyList>() {
                self.copy = false;
            }
            // As for a dict: a copy first, and the copy written.
            let copy = self.copy.then(|| l.get_slice(0, l.len()));
            let source = copy.as_ref().unwrap_or(l);
            self.out.push(b'[');
            let mut first = true;
            for (i, v) in source.iter().enumerate() {
                if !first {
                    self.out.push(b',');
                }
                first = false;
                self.newline(level + 1);
                let child = self.value(&v, depth + 1)?;
                if let (Some(copy), Some(child), true) = (&copy, child, self.copy)
                    && copy.set_item(i, child).is_err()
                {
                    self.copy = false;
                }
            }
            if !first {
                self.newline(level);
            }
            self.out.push(b']');
            return Ok(copy.filter(|_| self.copy).map(Bound::into_any));
        }
        if self.decimal(obj)? {
            return Ok(None);
        }
        Err(Failure::new(String::new()))
    }

    /// Writes `obj` if it is a `Decimal` (its exact text); whether it was one.
    fn decimal(&mut self, obj: &Bound<'_, PyAny>) -> Result<bool, Failure> {
        let Some(text) = decimal_json(obj)? else {
            return Ok(false);
        };
        // Parsing the text gives back an equal `Decimal` only for a number with a
        // fraction or exponent part that no float holds (else an `int` or a `float`):
        // otherwise the copy would differ, type for type, from what parsing gives.
        if self.copy {
            let exact_decimal = obj
                .get_type()
                .is(decimal_type(obj.py()).map_err(|_| Failure::new(String::new()))?);
            if !exact_decimal
                || !text.contains(['.', 'e'])
                || exact::float_keeps(text.as_bytes()) != Some(false)
            {
                self.copy = false;
            }
        }
        self.out.extend_from_slice(text.as_bytes());
        Ok(true)
    }
}

/// Whether the keys of `d` (all `str`) have distinct texts.
fn distinct_texts(d: &Bound<'_, PyDict>) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(d.len());
    d.keys().iter().all(|k| {
        k.cast::<PyString>()
            .ok()
            .and_then(|s| s.to_cow().ok().map(|t| t.into_owned()))
            .is_some_and(|t| seen.insert(t))
    })
}

/// Parses JSON text that statesafe has verified into fresh Python objects, with
/// CPython's C parser (`json.loads`): the same objects [`to_python`] makes from the
/// parsed value (an integer literal becomes an `int` of any size, any other number a
/// `float`), in about half the time. Anything `json.loads` cannot take (nesting
/// deeper than Python's recursion limit) goes through `serde_json` and
/// [`to_python`] instead.
pub fn from_json<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static PARSE_FLOAT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let loads = LOADS.import(py, "json", "loads")?;
    // A document whose every number with a fraction or exponent part is held exactly
    // by a float (almost all) takes `json.loads` as it is, at full speed; one that may
    // hold a number no float holds takes it with `parse_float`, which serves that
    // number as a `Decimal` (see [`float_or_decimal`]).
    let parsed = if may_hold_inexact_float(text.as_bytes()) {
        let hook = PARSE_FLOAT.get_or_try_init(py, || {
            wrap_pyfunction!(parse_float, py).map(|f| f.into_any().unbind())
        })?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("parse_float", hook)?;
        loads.call((text,), Some(&kwargs))
    } else {
        loads.call1((text,))
    };
    match parsed {
        Ok(obj) => Ok(obj),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyRecursionError>(py) => {
            let value = statesafe::json::parse(text.as_bytes())
                .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
            to_python(py, &value)
        }
        Err(e) => Err(e),
    }
}
