//! `statesafe.Store`: one state file, over `statesafe::Store<serde_json::Value>`.
//!
//! - Every disk access and every wait runs with the GIL released (`Python::detach`).
//! - Lock waits run in slices of [`SLICE`]: between two, pending signals are handled,
//!   so Ctrl-C raises `KeyboardInterrupt` promptly and no lock is left behind.
//! - Fork: the store remembers the process that opened it. In a child (after
//!   `os.fork()`), it reopens the file before its first use and never touches the
//!   parent's handle (its lock descriptor and its mutexes belong to the parent).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use serde_json::Value;
use serde_json::value::RawValue;
use statesafe::{
    BackupPolicy, DEFAULT_LOCK_TIMEOUT, Durability, Error, Event, Format, HistoryPolicy, Layout,
    RecoveryPolicy, StoreOptions,
};

use crate::convert::{JsonLayout, from_json, to_json, to_python, to_value, type_name};
use crate::errors::{
    closed_error, holder_dict, not_the_model, to_py, unservable, usage_error, usage_error_at,
};
use crate::report::{self, text};
use crate::transaction::{LockGuard, Transaction};

/// A document as the library stores it for Python: its JSON text, checked by
/// `serde_json` and written verbatim. The text is made from Python objects in one
/// pass ([`to_json`]) and parsed by CPython's own parser ([`from_json`]); a
/// `serde_json::Value` in between cost about as much again (issue 13).
pub type Doc = Box<RawValue>;

/// The library store behind a Python one.
pub type Core = statesafe::Store<Doc>;

/// What the last transaction of this store committed, kept for the next one.
///
/// `tree` is a private copy of the committed document (containers copied, immutable
/// leaves shared; see [`crate::convert::Json::copy`]), never handed to the caller
/// while it is here. The next transaction takes it out under the lock, and uses it
/// only when the file is still at `generation` and its document text is
/// byte-for-byte `text`; otherwise it is dropped and the file parsed. Taken out, it
/// is gone: a transaction whose body raises or whose commit fails leaves nothing
/// cached, and a document once handed out is never handed out again.
pub struct Cached {
    pub generation: u64,
    pub text: String,
    pub tree: Py<PyAny>,
}

/// Opens the library store at `path`: a state file, or a PostgreSQL state when the
/// path is a `postgres://` or `postgresql://` URL (docs/remote.md).
fn open_core(opts: StoreOptions<Doc>, path: &std::path::Path) -> statesafe::Result<Core> {
    match path.to_str().filter(|s| statesafe::postgres::is_url(s)) {
        Some(url) => opts.open_url(url),
        None => opts.open(path),
    }
}

/// The path a store is opened on: a relative path made absolute against the working
/// directory of now (a later `os.chdir()` moves nothing: not the store, not a forked
/// child's reopening, not `store.path`), a PostgreSQL URL as it is. A NUL byte, which
/// no file name can hold, is [`Error::BadPath`] (`BadPath`, a `ValueError`), before
/// anything is opened.
fn store_path(path: PathBuf) -> statesafe::Result<PathBuf> {
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(Error::BadPath {
            reason: "the path argument holds a NUL byte (\\0), which no file name can hold".into(),
            path: PathBuf::from(path.to_string_lossy().replace('\0', "\\0")),
        });
    }
    if path.as_os_str().is_empty()
        || path.is_absolute()
        || path.to_str().is_some_and(statesafe::postgres::is_url)
    {
        return Ok(path);
    }
    std::path::absolute(&path).map_err(|source| Error::Io {
        path,
        op: statesafe::Op::Resolve,
        source,
    })
}

/// The longest single lock wait between two checks for signals.
const SLICE: Duration = Duration::from_millis(100);

/// A document and the generation it was read at.
#[pyclass(module = "statesafe._statesafe", frozen, get_all)]
pub struct Snapshot {
    /// The document (a model instance when the store has a model).
    value: Py<PyAny>,
    /// Its generation: 0 when the file does not exist yet.
    generation: u64,
}

#[pymethods]
impl Snapshot {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Snapshot(value={}, generation={})",
            self.value.bind(py).repr()?,
            self.generation
        ))
    }
}

/// One JSON state file.
#[pyclass(module = "statesafe._statesafe", frozen, subclass)]
pub struct Store {
    /// The path or URL given, to open the store again (after a fork): a URL's password
    /// included. Never shown: see `shown`.
    path: PathBuf,
    /// The path as the library shows it (a URL's password as `***`): in `repr`, the
    /// `path` attribute and every error this package makes.
    shown: PathBuf,
    opts: StoreOptions<Doc>,
    inner: RwLock<Option<Arc<Core>>>,
    /// See [`Cached`].
    cache: Mutex<Option<Cached>>,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    /// The length of the last document written, a little more: [`to_json`]'s buffer.
    size_hint: AtomicUsize,
    /// One level of indentation, or `None` for compact files.
    indent: Option<&'static [u8]>,
    /// The format given to `open` (else the one recorded with the file applies).
    format: Option<Format>,
    /// The process `inner` belongs to.
    pid: AtomicU32,
    lock_timeout: Duration,
    default: Option<Doc>,
    to_model: Option<Py<PyAny>>,
    from_model: Option<Py<PyAny>>,
    validate: Option<Py<PyAny>>,
    /// The process and thread holding this store's lock through a transaction or a
    /// lock guard, if any: see [`Store::refuse_nested`].
    held_by: Arc<Mutex<Option<(u32, ThreadId)>>>,
}

/// Marks a store's lock as held by this thread (of this process) while it lives:
/// made once the lock is taken, dropped once it is given up.
pub struct HeldMark {
    held_by: Arc<Mutex<Option<(u32, ThreadId)>>>,
    me: (u32, ThreadId),
}

impl Drop for HeldMark {
    fn drop(&mut self) {
        let mut held = self.held_by.lock().unwrap_or_else(PoisonError::into_inner);
        if *held == Some(self.me) {
            *held = None;
        }
    }
}

impl Store {
    /// `UsageError` at once when this thread already holds this store's lock (an open
    /// transaction or lock guard of this store): the lock is not reentrant, and waiting
    /// for it would wait for ourselves until the lock timeout, then blame this very
    /// process as the holder.
    pub fn refuse_nested(&self) -> PyResult<()> {
        let me = (std::process::id(), std::thread::current().id());
        if *self.held_by.lock().unwrap_or_else(PoisonError::into_inner) == Some(me) {
            return Err(usage_error(
                &format!(
                    "a transaction of this store (`{}`) is already open in this thread (or its `lock()` is held, or an `async with store.transaction()` of it is open on this thread's event loop): it cannot wait for its own lock",
                    self.shown.display()
                ),
                "commit or roll it back first (or release the lock), or use one transaction",
            ));
        }
        Ok(())
    }

    /// The path as shown in errors (a URL's password redacted).
    pub fn shown(&self) -> &std::path::Path {
        &self.shown
    }

    /// Records that this thread now holds the store's lock, until the mark is dropped.
    pub fn mark_held(&self) -> HeldMark {
        let me = (std::process::id(), std::thread::current().id());
        *self.held_by.lock().unwrap_or_else(PoisonError::into_inner) = Some(me);
        HeldMark {
            held_by: Arc::clone(&self.held_by),
            me,
        }
    }

    /// The library store of this process: reopened after a fork, an error once closed.
    pub fn core(&self, py: Python<'_>) -> PyResult<Arc<Core>> {
        let pid = std::process::id();
        {
            let inner = self.inner.read();
            match &*inner {
                None => return Err(closed_error(&self.shown)),
                Some(core) if self.pid.load(Ordering::Acquire) == pid => {
                    return Ok(Arc::clone(core));
                }
                Some(_) => {}
            }
        }
        let mut inner = self.inner.write();
        if self.pid.load(Ordering::Acquire) != pid {
            // Forked: the parent's store shares the parent's lock description and may
            // hold a mutex locked by a thread that does not exist here. Leave it
            // untouched (never dropped) and open our own.
            if let Some(parent) = inner.take() {
                std::mem::forget(parent);
            }
            let _ = py;
            let fresh = open_core(self.opts.clone(), &self.path).map_err(to_py)?;
            *inner = Some(Arc::new(fresh));
            self.pid.store(pid, Ordering::Release);
        }
        inner.clone().ok_or_else(|| closed_error(&self.shown))
    }

    /// Runs `f` with the GIL released, retrying lock timeouts in slices until the
    /// store's lock timeout, with signals handled between slices.
    pub fn with_lock<R: Send>(
        &self,
        py: Python<'_>,
        f: impl Fn(&Core) -> Result<R, Error> + Sync,
    ) -> PyResult<R> {
        self.with_lock_gated(py, None, f)
    }

    /// [`Store::with_lock`] behind `statesafe.aio`'s gate: `gate.enter()` before each
    /// slice (it raises once the caller's task was cancelled, and then nothing is
    /// tried), `gate.leave()` after a slice that did not get the lock (it raises when
    /// a cancel came during the slice). A slice that gets the lock goes on to its end
    /// (the write, or its error) without asking the gate again: the canceller waits
    /// for that outcome. So a cancel either stops the call before it holds the lock,
    /// or learns what the call did, never neither.
    ///
    /// The five writes `statesafe.aio` runs in a thread (`update`, `replace`,
    /// `create`, `recover`, `restore`) take the gate as the keyword `_gate`: private
    /// (its protocol is `aio`'s `_Gate`), so absent from the stubs and the docs.
    pub fn with_lock_gated<R: Send>(
        &self,
        py: Python<'_>,
        gate: Option<&Bound<'_, PyAny>>,
        f: impl Fn(&Core) -> Result<R, Error> + Sync,
    ) -> PyResult<R> {
        let core = self.core(py)?;
        let start = Instant::now();
        loop {
            if let Some(gate) = gate {
                gate.call_method0("enter")?;
            }
            match py.detach(|| f(&core)) {
                Err(Error::LockTimeout { .. }) if start.elapsed() < self.lock_timeout => {
                    if let Some(gate) = gate {
                        gate.call_method0("leave")?;
                    }
                    py.check_signals()?;
                }
                Err(Error::LockTimeout { path, holder, .. }) => {
                    return Err(to_py(Error::LockTimeout {
                        path,
                        waited: start.elapsed(),
                        holder,
                    }));
                }
                other => return other.map_err(to_py),
            }
        }
    }

    pub fn default_value(&self) -> Option<Doc> {
        self.default.clone()
    }

    /// A document as the caller sees it: fresh Python objects, then the model.
    pub fn out<'py>(&self, py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
        self.model_out(py, self.parsed_value(py, value)?)
    }

    /// [`Store::out`] for a document's JSON text.
    pub fn out_json<'py>(&self, py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
        self.model_out(py, self.parsed(py, text)?)
    }

    /// Whether `obj` is a plain document (a dict or list), not a model instance.
    fn is_plain(&self, obj: &Bound<'_, PyAny>) -> bool {
        obj.is_instance_of::<PyDict>() || obj.is_instance_of::<pyo3::types::PyList>()
    }

    /// Plain Python objects as the caller sees them: through the model, if any. A
    /// document the model refuses is a `Mismatch` naming the file.
    pub fn model_out<'py>(
        &self,
        py: Python<'py>,
        obj: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match &self.to_model {
            Some(to_model) => to_model.bind(py).call1((obj,)).map_err(|e| {
                unservable(
                    py,
                    e,
                    &self.shown,
                    "the model refuses it",
                    "read it with the model it was written with (or without `model=`), or change the model, or migrate the file deliberately (for example with `store.replace(...)` from a store opened without `model=`)",
                )
            }),
            None => Ok(obj),
        }
    }

    /// The document of a verified JSON text as fresh Python objects. A number that
    /// Python cannot hold (an `int` over `sys.get_int_max_str_digits()` digits, an
    /// exponent beyond `decimal`'s range) is a `Mismatch` naming the file.
    pub fn parsed<'py>(&self, py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
        from_json(py, text).map_err(|e| self.unreadable_number(py, e))
    }

    /// [`Store::parsed`] for a parsed value.
    fn parsed_value<'py>(&self, py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, value).map_err(|e| self.unreadable_number(py, e))
    }

    /// Only `ValueError` (the int digit limit) and `ArithmeticError`
    /// (`decimal.InvalidOperation`): anything else (`MemoryError`) is passed on.
    fn unreadable_number(&self, py: Python<'_>, e: PyErr) -> PyErr {
        if !e.is_instance_of::<PyValueError>(py)
            && !e.is_instance_of::<pyo3::exceptions::PyArithmeticError>(py)
        {
            return e;
        }
        unservable(
            py,
            e,
            &self.shown,
            "it holds a number Python cannot hold",
            "for an int of more digits than sys.get_int_max_str_digits() allows, raise the limit with sys.set_int_max_str_digits(0) before reading; a number beyond decimal.Decimal's exponent range cannot be read in Python: read the file with another tool (`statesafe get FILE`) and migrate it deliberately",
        )
    }

    /// A document to write as the model's plain document; one the model cannot take
    /// (not an instance of it, nor a plain document it accepts) is a `UsageError`
    /// naming the file (see `statesafe._model.NotTheModel`).
    fn unwrap_model<'py>(
        &self,
        from_model: &Bound<'py, PyAny>,
        obj: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        from_model
            .call1((obj,))
            .map_err(|e| not_the_model(obj.py(), e, &self.shown))
    }

    /// `obj` (a state, through the model) as JSON text, without validation.
    pub fn plain_json(&self, obj: &Bound<'_, PyAny>) -> PyResult<String> {
        let py = obj.py();
        let layout = JsonLayout {
            indent: None,
            base: 0,
        };
        let json = match &self.from_model {
            Some(from_model) => to_json(
                &self.unwrap_model(from_model.bind(py), obj)?,
                layout,
                false,
                0,
            ),
            None => to_json(obj, layout, false, 0),
        }?;
        Ok(json.text)
    }

    /// `update(fn)`: refuses a returned document that is not what `fn` meant, with a
    /// `UsageError` (nothing is written): `fn` changed the state it was given in place
    /// AND returned another object (`lambda s: s["grades"].setdefault(k, v)` returns
    /// `v`: committing it would replace the whole document), or `fn` returned a
    /// document of another JSON kind than the state (an object for an object, an
    /// array for an array; a `null` state may become anything) — `lambda s:
    /// s.get("n")`. Changing the kind of the whole document is `replace`'s job.
    fn ambiguous_return(
        &self,
        state: &Bound<'_, PyAny>,
        before: Option<&str>,
        returned: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let what_to_do = "change the state in place and return None, or return a new document without changing the one given; to change the kind of the whole document, use `store.replace(...)`";
        let Some(before) = before else {
            return Ok(());
        };
        if self.plain_json(state).ok().as_deref() != Some(before) {
            return Err(usage_error_at(
                &format!(
                    "update of `{}`: the function changed the state in place and also returned another object ({}); committing either would be a guess, so nothing was written",
                    self.shown.display(),
                    type_name(returned)
                ),
                what_to_do,
                &self.shown,
            ));
        }
        let after = self.plain_json(returned)?;
        let kind = |text: &str| match text.as_bytes().first() {
            Some(b'{') => "an object",
            Some(b'[') => "an array",
            Some(b'n') => "null",
            _ => "a scalar",
        };
        let (was, is) = (kind(before), kind(&after));
        if was != is && was != "null" {
            return Err(usage_error_at(
                &format!(
                    "update of `{}`: the state is {was} but the function returned {is} ({}); nothing was written",
                    self.shown.display(),
                    type_name(returned)
                ),
                what_to_do,
                &self.shown,
            ));
        }
        Ok(())
    }

    /// A document from the caller: validated, unwrapped from the model, converted
    /// to its JSON text in the layout the library writes (and, with `copy`, a
    /// private copy of it for [`Cached`]).
    pub fn document_json<'py>(
        &self,
        py: Python<'py>,
        obj: &Bound<'py, PyAny>,
        copy: bool,
    ) -> PyResult<crate::convert::Json<'py>> {
        if let Some(validate) = &self.validate {
            self.run_validate(py, validate.bind(py), obj)?;
        }
        let layout = self.json_layout(py)?;
        let hint = self.size_hint.load(Ordering::Relaxed);
        let json = match &self.from_model {
            Some(from_model) => to_json(
                &self.unwrap_model(from_model.bind(py), obj)?,
                layout,
                copy,
                hint,
            ),
            None => to_json(obj, layout, copy, hint),
        }?;
        // Small documents grow their buffer from nothing, as the library's do.
        let len = json.text.len();
        let next = if len >= 128 << 10 {
            len + len / 64 + 256
        } else {
            0
        };
        self.size_hint.store(next, Ordering::Relaxed);
        Ok(json)
    }

    /// [`Store::document_json`] as the library takes it.
    pub fn document_doc(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Doc> {
        let text = self.document_json(py, obj, false)?.text;
        py.detach(|| RawValue::from_string(text))
            .map_err(written_not_json)
    }

    /// The layout the library writes a document in: this store's indentation, one
    /// level deeper inside a sealed file's envelope: the format given to `open`, else
    /// the one recorded with the file, as the library decides.
    fn json_layout(&self, py: Python<'_>) -> PyResult<JsonLayout> {
        let format = match self.format {
            Some(f) => f,
            None => self.core(py)?.settings().format,
        };
        let sealed = format == Format::Sealed;
        Ok(JsonLayout {
            indent: self.indent,
            base: usize::from(sealed && self.indent.is_some()),
        })
    }

    /// Takes the cached document out (see [`Cached`]); call with the lock held.
    pub fn take_cache(&self) -> Option<Cached> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Keeps what a transaction just committed for the next one.
    pub fn put_cache(&self, cached: Cached) {
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = Some(cached);
    }

    /// Counts a transaction that found the cached document usable, or not.
    pub fn count_cache(&self, hit: bool) {
        let counter = if hit {
            &self.cache_hits
        } else {
            &self.cache_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The `validate` callable: None or True passes; False, a message, or a
    /// `ValueError` (pydantic's `ValidationError` is one) refuses the document.
    fn run_validate(
        &self,
        py: Python<'_>,
        validate: &Bound<'_, PyAny>,
        obj: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let verdict = match validate.call1((obj,)) {
            Ok(v) => v,
            Err(e) if e.is_instance_of::<PyValueError>(py) => {
                return Err(self.invalid(e.value(py).str()?.to_cow()?.into_owned()));
            }
            Err(e) => return Err(e),
        };
        if verdict.is_none() {
            return Ok(());
        }
        if let Ok(message) = verdict.cast::<PyString>() {
            return Err(self.invalid(message.to_cow()?.into_owned()));
        }
        if verdict.is_truthy()? {
            Ok(())
        } else {
            Err(self.invalid("the validate callable returned False".into()))
        }
    }

    fn invalid(&self, message: String) -> PyErr {
        to_py(Error::Invalid {
            path: self.shown.clone(),
            message: format!("validation rule: {message}"),
        })
    }

    fn snapshot(&self, py: Python<'_>, doc: &Doc, generation: u64) -> PyResult<Snapshot> {
        Ok(Snapshot {
            value: self.out_json(py, doc.get())?.unbind(),
            generation,
        })
    }

    fn load_snapshot(&self, py: Python<'_>) -> PyResult<Snapshot> {
        let has_default = self.default.is_some();
        let loaded = self.with_lock(py, |c| match c.load() {
            Ok(s) => Ok(Some(s)),
            Err(Error::NotFound { .. }) if has_default => Ok(None),
            Err(e) => Err(e),
        })?;
        match (loaded, &self.default) {
            (Some(s), _) => self.snapshot(py, &s.state, s.generation),
            (None, Some(d)) => self.snapshot(py, d, 0),
            (None, None) => unreachable!("invariant: NotFound is an error without a default"),
        }
    }
}

#[pymethods]
impl Store {
    #[new]
    #[pyo3(signature = (
        path, *, default = None, has_default = false, lock_timeout = None,
        durability = "full", private = false, format = None, layout = "pretty",
        backups = None, history = None, schema = None, validate = None, max_bytes = None,
        min_free_bytes = None, recovery = None, on_event = None, to_model = None,
        from_model = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        default: Option<Bound<'_, PyAny>>,
        has_default: bool,
        lock_timeout: Option<f64>,
        durability: &str,
        private: bool,
        format: Option<&str>,
        layout: &str,
        backups: Option<Bound<'_, PyAny>>,
        history: Option<Bound<'_, PyAny>>,
        schema: Option<Bound<'_, PyAny>>,
        validate: Option<Py<PyAny>>,
        max_bytes: Option<u64>,
        min_free_bytes: Option<u64>,
        recovery: Option<&str>,
        on_event: Option<Py<PyAny>>,
        to_model: Option<Py<PyAny>>,
        from_model: Option<Py<PyAny>>,
    ) -> PyResult<Store> {
        let path = store_path(path).map_err(to_py)?;
        let mut opts = StoreOptions::<Doc>::default()
            .private(private)
            .durability(match durability {
                "full" => Durability::Full,
                "none" => Durability::None,
                other => return Err(bad_option("durability", other, "\"full\" or \"none\"")),
            })
            .layout(match layout {
                "pretty" => Layout::Pretty,
                "compact" => Layout::Compact,
                other => return Err(bad_option("layout", other, "\"pretty\" or \"compact\"")),
            });
        if let Some(t) = lock_timeout
            && !(t.is_finite() && t >= 0.0)
        {
            return Err(PyValueError::new_err(format!(
                "lock_timeout must be a number of seconds >= 0, not {t}"
            )));
        }
        let format = match format {
            None => None,
            Some("plain") => Some(Format::Plain),
            Some("sealed") => Some(Format::Sealed),
            Some(other) => return Err(bad_option("format", other, "\"plain\" or \"sealed\"")),
        };
        if let Some(f) = format {
            opts = opts.format(f);
        }
        if let Some(b) = backups {
            opts = opts.backups(backup_policy(&b)?);
        }
        if let Some(h) = history {
            opts = opts.history(history_policy(&h)?);
        }
        if let Some(s) = schema {
            opts = opts.schema(schema_value(&s)?);
        }
        if let Some(n) = max_bytes {
            opts = opts.max_bytes(n);
        }
        if let Some(n) = min_free_bytes {
            opts = opts.min_free_bytes(n);
        }
        if let Some(r) = recovery {
            opts = opts.recovery(match r {
                "restore-from-backup" | "backup" => RecoveryPolicy::RestoreFromBackup,
                "fail" => RecoveryPolicy::Fail,
                other => {
                    return Err(bad_option(
                        "recovery",
                        other,
                        "\"restore-from-backup\" or \"fail\"",
                    ));
                }
            });
        }
        if let Some(hook) = on_event {
            opts = opts.on_event(move |event| {
                // The thread that noticed the event may not hold the GIL (it is released
                // around every disk access); at interpreter shutdown there is none.
                let _ = Python::try_attach(|py| {
                    let result = event_dict(py, event).and_then(|d| hook.bind(py).call1((d,)));
                    if let Err(e) = result {
                        e.write_unraisable(py, Some(hook.bind(py)));
                    }
                });
            });
        }
        let default = match (has_default, default) {
            (true, Some(d)) => Some(to_value(&d).and_then(|v| raw_doc(&v))?),
            (true, None) => Some(raw_doc(&Value::Null)?),
            (false, _) => None,
        };
        // The library waits at most one slice; `with_lock` repeats slices up to the
        // real timeout (given here, or recorded with the file, or the default).
        let given = lock_timeout.map(Duration::from_secs_f64);
        let mut opts = opts.lock_timeout(given.unwrap_or(SLICE).min(SLICE));
        let mut core = py
            .detach(|| open_core(opts.clone(), &path))
            .map_err(to_py)?;
        let lock_timeout = given.unwrap_or_else(|| {
            core.settings()
                .lock_timeout_ms
                .map_or(DEFAULT_LOCK_TIMEOUT, Duration::from_millis)
        });
        if lock_timeout < SLICE && given.is_none() {
            opts = opts.lock_timeout(lock_timeout);
            core = py
                .detach(|| open_core(opts.clone(), &path))
                .map_err(to_py)?;
        }
        Ok(Store {
            shown: core.path().to_path_buf(),
            path,
            opts,
            inner: RwLock::new(Some(Arc::new(core))),
            cache: Mutex::new(None),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            size_hint: AtomicUsize::new(0),
            indent: match layout {
                "compact" => None,
                _ => Some(b"  "),
            },
            format,
            pid: AtomicU32::new(std::process::id()),
            lock_timeout,
            default,
            to_model,
            from_model,
            validate,
            held_by: Arc::new(Mutex::new(None)),
        })
    }

    /// The path the store was opened with.
    #[getter]
    fn path(&self) -> String {
        text(&self.shown)
    }

    /// The effective lock timeout in seconds.
    #[getter]
    fn lock_timeout(&self) -> f64 {
        self.lock_timeout.as_secs_f64()
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.read().is_none()
    }

    /// The current generation, without parsing the document (0 when missing).
    #[getter]
    fn generation(&self, py: Python<'_>) -> PyResult<u64> {
        self.with_lock(py, |c| c.generation())
    }

    /// The document (lock-free); the default when the file is missing and one was given.
    fn get(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.load_snapshot(py)?.value)
    }

    /// The document and its generation (lock-free).
    fn load(&self, py: Python<'_>) -> PyResult<Snapshot> {
        self.load_snapshot(py)
    }

    /// Starts a read-modify-write transaction: takes the lock now.
    fn transaction(slf: &Bound<'_, Self>) -> PyResult<Transaction> {
        Transaction::begin(slf.py(), slf)
    }

    /// `fn(state)` under the lock: changes made in place, or a returned document, are
    /// committed; an exception writes nothing. Returns the committed document.
    ///
    #[pyo3(signature = (f, *, _gate = None))]
    fn update(
        slf: &Bound<'_, Self>,
        f: Bound<'_, PyAny>,
        _gate: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let tx = Transaction::begin_gated(py, slf, _gate.as_ref())?;
        let state = tx.current_state(py)?;
        // The state as given, to tell afterwards whether `f` changed it in place (see
        // [`Store::ambiguous_return`]). A state that cannot be converted is refused by
        // the commit anyway.
        let before = slf.get().plain_json(state.bind(py)).ok();
        let outcome = f.call1((state.clone_ref(py),)).and_then(|returned| {
            if returned.is_none() || returned.is(state.bind(py)) {
                return Ok(state.clone_ref(py));
            }
            slf.get()
                .ambiguous_return(state.bind(py), before.as_deref(), &returned)?;
            Ok(returned.unbind())
        });
        match outcome {
            Ok(state) => {
                tx.set_state(state.clone_ref(py));
                tx.commit_now(py)?;
                // A model store's update returns the model: a plain document `f`
                // returned (a dict, which the commit read through the model) is given
                // back as the model instance it was written as, as a load would give it.
                if slf.get().to_model.is_some() && slf.get().is_plain(state.bind(py)) {
                    return Ok(slf.get().model_out(py, state.into_bound(py))?.unbind());
                }
                Ok(state)
            }
            Err(e) => {
                let _ = tx.rollback_now(py);
                Err(e)
            }
        }
    }

    /// Replaces the whole document under the lock; with `if_generation`, only if the
    /// file is still at that generation (0: only if it does not exist). Returns the new
    /// generation.
    #[pyo3(signature = (document, *, if_generation = None, _gate = None))]
    fn replace(
        &self,
        py: Python<'_>,
        document: Bound<'_, PyAny>,
        if_generation: Option<u64>,
        _gate: Option<Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        self.refuse_nested()?;
        let doc = self.document_doc(py, &document)?;
        self.with_lock_gated(py, _gate.as_ref(), |c| match if_generation {
            Some(g) => c.replace_if(g, doc.clone()),
            None => c.replace(doc.clone()),
        })
    }

    /// Creates the file with `document`; `AlreadyExists` when it exists.
    #[pyo3(signature = (document, *, _gate = None))]
    fn create(
        &self,
        py: Python<'_>,
        document: Bound<'_, PyAny>,
        _gate: Option<Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        self.refuse_nested()?;
        let doc = self.document_doc(py, &document)?;
        self.with_lock_gated(py, _gate.as_ref(), |c| c.create(doc.clone()))
    }

    /// Holds the writers' lock: `with store.lock(): ...`.
    #[pyo3(signature = (operation = "lock"))]
    fn lock(&self, py: Python<'_>, operation: &str) -> PyResult<LockGuard> {
        LockGuard::acquire(py, self, operation)
    }

    /// Who holds the lock right now (a dict), or None.
    fn lock_holder(&self, py: Python<'_>) -> PyResult<Option<Py<PyDict>>> {
        let core = self.core(py)?;
        match py.detach(|| core.lock_holder()) {
            Some(h) => Ok(Some(holder_dict(py, &h)?.unbind())),
            None => Ok(None),
        }
    }

    /// Checks the file and its backups without changing anything.
    fn check(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let r = self.with_lock(py, |c| c.check())?;
        report::check(py, &r)
    }

    /// Recovers a damaged file now; the recovery event (a dict), or None when sound.
    #[pyo3(signature = (*, _gate = None))]
    fn recover(
        &self,
        py: Python<'_>,
        _gate: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Option<Py<PyDict>>> {
        self.refuse_nested()?;
        match self.with_lock_gated(py, _gate.as_ref(), |c| c.recover())? {
            Some(e) => Ok(Some(event_dict(py, &e)?.unbind())),
            None => Ok(None),
        }
    }

    /// The backups, newest first.
    fn backups(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let list = self.with_lock(py, |c| c.backups())?;
        report::backups(py, &list.backups)
    }

    /// Brings back the backup of `generation` as a new generation; returns it.
    #[pyo3(signature = (generation, *, _gate = None))]
    fn restore(
        &self,
        py: Python<'_>,
        generation: u64,
        _gate: Option<Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        self.refuse_nested()?;
        self.with_lock_gated(py, _gate.as_ref(), |c| c.restore(generation))
    }

    /// The retained history, oldest first (a list of dicts).
    fn history(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let entries = self.with_lock(py, |c| c.history())?;
        report::serialized(py, &entries)
    }

    /// The document as it was at `generation` (from the file, a backup or the history).
    fn at(&self, py: Python<'_>, generation: u64) -> PyResult<Py<PyAny>> {
        let value = self.with_lock(py, |c| c.document_at(generation))?;
        Ok(self.out(py, &value)?.unbind())
    }

    /// An RFC 6902 JSON Patch (a list of operations) from generation `a` to `b`.
    fn diff(&self, py: Python<'_>, a: u64, b: u64) -> PyResult<Py<PyAny>> {
        let patch = self.with_lock(py, |c| c.diff(a, b))?;
        report::serialized(py, &patch)
    }

    /// A summary: generation, format, size, last writer, backups, lock holder, settings.
    fn info(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let info = self.with_lock(py, |c| c.info())?;
        report::info(py, &info)
    }

    /// Counters and latency summaries since the store was opened (in this process).
    fn stats(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let core = self.core(py)?;
        let stats = report::stats(py, &core.stats())?;
        let cache = PyDict::new(py);
        cache.set_item("hits", self.cache_hits.load(Ordering::Relaxed))?;
        cache.set_item("misses", self.cache_misses.load(Ordering::Relaxed))?;
        stats.bind(py).set_item("transaction_cache", cache)?;
        Ok(stats)
    }

    /// Waits for background bookkeeping and releases the file; later use raises
    /// `statesafe.Closed`. Idempotent.
    fn close(&self, py: Python<'_>) {
        let core = self.inner.write().take();
        drop(self.take_cache());
        if let Some(core) = core {
            if self.pid.load(Ordering::Acquire) == std::process::id() {
                py.detach(move || drop(core));
            } else {
                std::mem::forget(core);
            }
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "<statesafe.Store `{}`{}>",
            self.shown.display(),
            if self.inner.read().is_none() {
                " (closed)"
            } else {
                ""
            }
        )
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // A forked child never runs the parent's store down (see `core`).
        if self.pid.load(Ordering::Acquire) != std::process::id()
            && let Some(core) = self.inner.get_mut().take()
        {
            std::mem::forget(core);
        }
    }
}

/// A value as a document (compact: only ever parsed again, never written as it is).
fn raw_doc(value: &Value) -> PyResult<Doc> {
    serde_json::value::to_raw_value(value).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// The text [`to_json`] made is not JSON: a bug, said as such (nothing was written).
pub fn written_not_json(e: serde_json::Error) -> PyErr {
    PyValueError::new_err(format!(
        "statesafe made JSON text that serde_json refuses ({e}); nothing was written\nhint: this is a bug in statesafe's Python package: please report it with the document"
    ))
}

fn bad_option(name: &str, got: &str, want: &str) -> PyErr {
    PyValueError::new_err(format!("{name} must be {want}, not {got:?}"))
}

fn backup_policy(b: &Bound<'_, PyAny>) -> PyResult<BackupPolicy> {
    let mut policy = BackupPolicy::default();
    if let Ok(keep) = b.extract::<u32>() {
        policy.keep = keep;
        return Ok(policy);
    }
    let d = b.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(
            "backups must be an int (how many to keep) or a dict with keep, hourly, daily",
        )
    })?;
    for (k, v) in d.iter() {
        let k: String = k.extract()?;
        let v: u32 = v.extract()?;
        match k.as_str() {
            "keep" => policy.keep = v,
            "hourly" => policy.hourly = v,
            "daily" => policy.daily = v,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown backups key {other:?}; expected keep, hourly or daily"
                )));
            }
        }
    }
    Ok(policy)
}

fn history_policy(h: &Bound<'_, PyAny>) -> PyResult<HistoryPolicy> {
    let mut policy = HistoryPolicy::default();
    if let Ok(keep) = h.extract::<u32>() {
        policy.keep = keep;
        return Ok(policy);
    }
    let d = h.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err("history must be an int (how many generations to keep) or a dict with keep, max_patch_bytes")
    })?;
    for (k, v) in d.iter() {
        let k: String = k.extract()?;
        match k.as_str() {
            "keep" => policy.keep = v.extract()?,
            "max_patch_bytes" => policy.max_patch_bytes = v.extract()?,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown history key {other:?}; expected keep or max_patch_bytes"
                )));
            }
        }
    }
    Ok(policy)
}

/// A schema given as a document, or as the path of a JSON file.
fn schema_value(s: &Bound<'_, PyAny>) -> PyResult<Value> {
    if s.cast::<PyDict>().is_ok() || s.extract::<bool>().is_ok() {
        return to_value(s);
    }
    let path: PathBuf = s.extract().map_err(|_| {
        PyTypeError::new_err(
            "schema must be a JSON Schema (a dict) or the path of a JSON file holding one",
        )
    })?;
    let bytes = s.py().detach(|| std::fs::read(&path)).map_err(|e| {
        pyo3::exceptions::PyOSError::new_err(format!(
            "failed to read the schema file `{}`: {e}",
            path.display()
        ))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        PyValueError::new_err(format!(
            "the schema file `{}` is not valid JSON: {e}",
            path.display()
        ))
    })
}

/// An event as a dict: `kind`, `message`, and the event's own fields.
pub fn event_dict<'py>(py: Python<'py>, event: &Event) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("message", event.to_string())?;
    match event {
        Event::Recovered {
            path,
            damage,
            quarantined,
            restored_from,
            rebuilt_from,
            generation,
        } => {
            d.set_item("kind", "recovered")?;
            d.set_item("path", text(path))?;
            d.set_item("damage", damage)?;
            d.set_item("quarantined", text(quarantined))?;
            d.set_item("restored_from", *restored_from)?;
            d.set_item("rebuilt_from", *rebuilt_from)?;
            d.set_item("generation", *generation)?;
        }
        Event::Undeleted {
            path,
            known,
            restored_from,
            rebuilt_from,
            source,
            journal,
            quarantined,
            generation,
        } => {
            d.set_item("kind", "undeleted")?;
            d.set_item("path", text(path))?;
            d.set_item("known", *known)?;
            d.set_item("restored_from", *restored_from)?;
            d.set_item("rebuilt_from", *rebuilt_from)?;
            d.set_item("source", source.name())?;
            d.set_item("journal", *journal)?;
            d.set_item("quarantined", quarantined.as_deref().map(text))?;
            d.set_item("generation", *generation)?;
        }
        Event::Quarantined {
            path,
            damage,
            quarantined,
            generation,
        } => {
            d.set_item("kind", "quarantined")?;
            d.set_item("path", text(path))?;
            d.set_item("damage", damage)?;
            d.set_item("quarantined", text(quarantined))?;
            d.set_item("generation", *generation)?;
        }
        Event::DamageNotRepaired {
            path,
            damage,
            because,
            served,
            rebuilt_from,
        } => {
            d.set_item("kind", "damage_not_repaired")?;
            d.set_item("path", text(path))?;
            d.set_item("damage", damage)?;
            d.set_item("because", because)?;
            d.set_item("served", *served)?;
            d.set_item("rebuilt_from", *rebuilt_from)?;
        }
        Event::Adopted { path, generation } => {
            d.set_item("kind", "adopted")?;
            d.set_item("path", text(path))?;
            d.set_item("generation", *generation)?;
        }
        Event::SpecialFilesystem { path, kind } => {
            d.set_item("kind", "special_filesystem")?;
            d.set_item("path", text(path))?;
            d.set_item("filesystem", *kind)?;
        }
        Event::ExternalChange { path, generation } => {
            d.set_item("kind", "external_change")?;
            d.set_item("path", text(path))?;
            d.set_item("generation", *generation)?;
        }
        Event::BookkeepingFailed {
            path,
            generation,
            what,
            error,
        } => {
            d.set_item("kind", "bookkeeping_failed")?;
            d.set_item("path", text(path))?;
            d.set_item("generation", *generation)?;
            d.set_item("what", what)?;
            d.set_item("error", error)?;
        }
        _ => d.set_item("kind", "other")?,
    }
    Ok(d)
}
