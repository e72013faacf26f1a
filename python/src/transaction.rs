//! `Transaction` and `LockGuard`: the library's borrowed guards, kept alive in a
//! Python object next to the store they borrow from.
//!
//! Every way out releases the lock from Rust: `__exit__` (commit or roll back), an
//! error while converting the new document, `KeyboardInterrupt` raised inside a model
//! or validation callable, and the object being dropped. No Python code runs between
//! taking the guard out and releasing it, so a signal cannot leave a stale lock.
//!
//! Fork: a guard copied into a child by `os.fork()` belongs to the parent. The child
//! never commits, releases or drops it (releasing would free the parent's `flock`,
//! which the child shares); it is forgotten instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;
use self_cell::self_cell;
use serde_json::value::RawValue;

use crate::errors::{to_py, usage_error};
use crate::store::{Cached, Core, Doc, HeldMark, Store};

type Tx<'a> = Option<statesafe::Transaction<'a, Doc>>;
type Held<'a> = Option<statesafe::LockGuard<'a>>;

self_cell!(
    /// A transaction and the store it borrows.
    pub struct TxCell {
        owner: Arc<Core>,
        #[not_covariant]
        dependent: Tx,
    }
);

self_cell!(
    /// A held lock and the store it borrows.
    pub struct LockCell {
        owner: Arc<Core>,
        #[not_covariant]
        dependent: Held,
    }
);

/// A read-modify-write transaction holding the lock; `with store.transaction() as
/// state:` commits on a clean exit and writes nothing when the block raises.
#[pyclass(module = "statesafe._statesafe", frozen)]
pub struct Transaction {
    store: Py<Store>,
    cell: Mutex<Option<TxCell>>,
    state: Mutex<Option<Py<PyAny>>>,
    generation: u64,
    committed: Mutex<Option<u64>>,
    pid: u32,
    /// This thread holds the store's lock (see [`Store::refuse_nested`]): given up
    /// with the cell.
    mark: Mutex<Option<HeldMark>>,
    /// Where `with ... as NAME` bound the document (`statesafe._rebind.Binding`), to
    /// refuse a block that rebinds NAME instead of changing the document.
    binding: Mutex<Option<Py<PyAny>>>,
}

impl Transaction {
    /// Takes the lock (in slices, so Ctrl-C lands) and reads the document afresh.
    ///
    /// The library reads the file and verifies its checksum as always. When it is a
    /// plain version statesafe committed and byte for byte the text of the store's
    /// [`Cached`] copy of what it last committed, the library does not parse it and
    /// the copy is the working state (`Store::begin_known`; compared under the lock,
    /// so another writer's commit is always seen). Otherwise the library parses and
    /// checks it, and its text is turned into Python objects, unless it is of the
    /// cached generation and text all the same (a sealed file, a store with a schema).
    pub fn begin(py: Python<'_>, store: &Bound<'_, Store>) -> PyResult<Transaction> {
        Self::begin_gated(py, store, None)
    }

    /// [`Transaction::begin`] behind `statesafe.aio`'s gate ([`Store::with_lock_gated`]).
    pub fn begin_gated(
        py: Python<'_>,
        store: &Bound<'_, Store>,
        gate: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Transaction> {
        let s = store.get();
        s.refuse_nested()?;
        let core = s.core(py)?;
        let default = s.default_value();
        // The library compares the file with the kept text under the lock, after
        // checking its checksum: equal, it does not parse it (its document is then a
        // placeholder, given up below like any other).
        let cached = s.take_cache();
        let known = cached.as_ref().map(|c| c.text.as_bytes());
        let hit = AtomicBool::new(false);
        let mut cell = s.with_lock_gated(py, gate, |_| {
            TxCell::try_new(Arc::clone(&core), |c| {
                let init = default.as_ref().map(|d| || d.clone());
                let (tx, reused) = match known {
                    Some(known) => c.begin_known(known, null_doc, init)?,
                    None => match init {
                        Some(init) => (c.begin_or_insert_with(init)?, false),
                        None => (c.begin()?, false),
                    },
                };
                hit.store(reused, Ordering::Relaxed);
                Ok(Some(tx))
            })
        })?;
        let mark = s.mark_held();
        // The Python copy is the working state; drop the Rust one at once (a large
        // document would otherwise be held twice until the commit).
        let taken = cell.with_dependent_mut(|_, tx| {
            let tx = tx.as_mut().expect("invariant: just begun");
            (
                std::mem::replace(tx.state_mut(), null_doc()),
                tx.generation(),
            )
        });
        let (doc, generation) = taken;
        // A file the library parsed (sealed, or a store with a schema) may still hold
        // exactly the kept document.
        let cached = cached.filter(|c| {
            hit.load(Ordering::Relaxed)
                || (generation != 0 && c.generation == generation && c.text == doc.get())
        });
        s.count_cache(cached.is_some());
        let plain = match cached {
            Some(c) => Ok(c.tree.into_bound(py)),
            None => s.parsed(py, doc.get()),
        };
        drop(doc);
        let state = match plain.and_then(|p| s.model_out(py, p)) {
            Ok(state) => state,
            Err(e) => {
                py.detach(move || drop(cell));
                return Err(e);
            }
        };
        Ok(Transaction {
            store: store.clone().unbind(),
            cell: Mutex::new(Some(cell)),
            state: Mutex::new(Some(state.unbind())),
            generation,
            committed: Mutex::new(None),
            pid: std::process::id(),
            mark: Mutex::new(Some(mark)),
            binding: Mutex::new(None),
        })
    }

    fn take_cell(&self) -> PyResult<TxCell> {
        let cell = self
            .cell
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // The lock is given up with the cell, by this call's caller: no other
        // transaction of this thread can begin before that.
        drop(
            self.mark
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let Some(cell) = cell else {
            return Err(usage_error(
                "this transaction is already finished (committed or rolled back)",
                "start a new one with `store.transaction()`",
            ));
        };
        if self.pid != std::process::id() {
            // The parent's lock: never release it from here.
            std::mem::forget(cell);
            return Err(usage_error(
                &format!(
                    "this transaction was begun in process {} before a fork; its lock belongs to that process",
                    self.pid
                ),
                "begin a new transaction in this process; the store reopens itself after a fork",
            ));
        }
        Ok(cell)
    }

    /// Replaces the working document (what `update`'s function returned).
    pub fn set_state(&self, state: Py<PyAny>) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = Some(state);
    }

    /// The working document.
    pub fn current_state(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|s| s.clone_ref(py))
            .ok_or_else(|| {
                usage_error(
                    "this transaction is already finished (committed or rolled back)",
                    "start a new one with `store.transaction()`",
                )
            })
    }

    /// Converts, validates and commits the working document; the lock is released
    /// on every path. Returns the new generation. On success the store keeps a
    /// private copy of what was committed for its next transaction ([`Cached`]).
    pub fn commit_now(&self, py: Python<'_>) -> PyResult<u64> {
        let mut cell = self.take_cell()?;
        let state = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let store = self.store.get();
        let json = match state {
            Some(state) => store.document_json(py, state.bind(py), true),
            None => Err(usage_error(
                "this transaction has no document",
                "start a new one with `store.transaction()`",
            )),
        };
        let json = match json {
            Ok(j) => j,
            Err(e) => {
                py.detach(move || drop(cell));
                return Err(e);
            }
        };
        let (text, depth) = (json.text, json.depth);
        let tree = json.copy.map(Bound::unbind);
        // The text is the package's own writer's (`to_json`), from objects it checked:
        // JSON by construction, so the library writes it without parsing it again.
        let result = py.detach(move || {
            let r = cell.with_dependent_mut(|_, tx| {
                tx.take()
                    .expect("invariant: a cell always holds its transaction")
                    .commit_serialized(&text, depth)
            });
            drop(cell);
            r.map(|g| (g, text))
        });
        let (generation, text) = result.map_err(to_py)?;
        if let Some(tree) = tree {
            store.put_cache(Cached {
                generation,
                text,
                tree,
            });
        }
        *self
            .committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(generation);
        Ok(generation)
    }

    /// Writes nothing and releases the lock.
    pub fn rollback_now(&self, py: Python<'_>) -> PyResult<()> {
        let cell = self.take_cell()?;
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        py.detach(move || drop(cell));
        Ok(())
    }
}

/// `UsageError`: the `with ... as NAME` block rebound NAME (see [`Transaction::__enter__`]);
/// made by `statesafe._rebind.error`, which `statesafe.aio` uses too.
fn rebound_error(py: Python<'_>, path: &std::path::Path, name: &str) -> PyErr {
    let shown = path.to_string_lossy().into_owned();
    match py
        .import("statesafe._rebind")
        .and_then(|m| m.getattr("error")?.call1((shown, name)))
    {
        Ok(e) => PyErr::from_value(e),
        Err(broken) => broken,
    }
}

/// A placeholder document (the transaction's own copy is given up for the Python one).
fn null_doc() -> Doc {
    RawValue::from_string("null".to_string()).expect("invariant: `null` is JSON")
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if self.pid != std::process::id()
            && let Some(cell) = self
                .cell
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        {
            std::mem::forget(cell);
        }
    }
}

#[pymethods]
impl Transaction {
    /// The working document.
    #[getter]
    fn state(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.current_state(py)
    }

    /// The generation the transaction started from (0 for a new file).
    #[getter]
    fn generation(&self) -> u64 {
        self.generation
    }

    /// The generation written by `commit()`, or None before it.
    #[getter]
    fn committed_generation(&self) -> Option<u64> {
        *self
            .committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Commits the working document (or `state`, when given); returns the new generation.
    #[pyo3(signature = (state = None))]
    fn commit(&self, py: Python<'_>, state: Option<Py<PyAny>>) -> PyResult<u64> {
        if let Some(state) = state {
            self.set_state(state);
        }
        self.commit_now(py)
    }

    /// Writes nothing and releases the lock.
    fn rollback(&self, py: Python<'_>) -> PyResult<()> {
        self.rollback_now(py)
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let state = self.current_state(py)?;
        // The frame running the `with` statement (this native call adds none): which
        // name it binds the document to. Best effort: None when not known.
        let binding = py
            .import("statesafe._rebind")
            .and_then(|m| m.getattr("capture")?.call1((0,)))
            .ok()
            .filter(|b| !b.is_none())
            .map(Bound::unbind);
        *self.binding.lock().unwrap_or_else(PoisonError::into_inner) = binding;
        Ok(state)
    }

    /// `UsageError` (after a rollback: nothing is written) when the block that ends in
    /// the calling frame bound the document to a name and that name now refers to
    /// another object: the new object would be lost and the old document committed.
    fn refuse_rebound(&self, py: Python<'_>) -> PyResult<()> {
        let Some(binding) = self
            .binding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Ok(());
        };
        let state = self.current_state(py)?;
        let name = py
            .import("statesafe._rebind")
            .and_then(|m| m.getattr("rebound")?.call1((binding, state, 0)))
            .ok()
            .and_then(|n| n.extract::<String>().ok());
        let Some(name) = name else {
            return Ok(());
        };
        let _ = self.rollback_now(py);
        let store = self.store.get();
        Err(rebound_error(py, store.shown(), &name))
    }

    #[pyo3(signature = (exc_type, _exc, _tb))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        match exc_type {
            None => {
                self.refuse_rebound(py)?;
                self.commit_now(py).map(|_| false)
            }
            Some(_) => {
                // The block raised: write nothing. Its exception wins over ours.
                let _ = self.rollback_now(py);
                Ok(false)
            }
        }
    }

    /// `statesafe.aio`: the transaction was begun in a worker thread, and its block
    /// runs on the event loop's thread: mark that thread as the lock's holder, so a
    /// blocking call of this store there (`store.sync.transaction()`, `update`, ...)
    /// is refused at once instead of waiting for a lock its own task holds.
    fn _hold_here(&self) -> PyResult<()> {
        let mut mark = self.mark.lock().unwrap_or_else(PoisonError::into_inner);
        if mark.is_none() {
            return Err(usage_error(
                "this transaction is already finished (committed or rolled back)",
                "start a new one with `store.transaction()`",
            ));
        }
        // The new mark first: dropping the old one clears the store's holder only
        // while it is still the old thread.
        let fresh = self.store.get().mark_held();
        drop(mark.replace(fresh));
        Ok(())
    }

    fn __repr__(&self) -> String {
        let open = self
            .cell
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        format!(
            "<statesafe.Transaction from generation {}{}>",
            self.generation,
            if open { "" } else { ", finished" }
        )
    }
}

/// The writers' lock held without a transaction: `with store.lock(): ...`.
#[pyclass(module = "statesafe._statesafe", frozen)]
pub struct LockGuard {
    cell: Mutex<Option<LockCell>>,
    pid: u32,
    /// This thread holds the store's lock (see [`Store::refuse_nested`]).
    mark: Mutex<Option<HeldMark>>,
}

impl LockGuard {
    pub fn acquire(py: Python<'_>, store: &Store, operation: &str) -> PyResult<LockGuard> {
        store.refuse_nested()?;
        let core = store.core(py)?;
        let cell = store.with_lock(py, |_| {
            LockCell::try_new(Arc::clone(&core), |c| c.lock(operation).map(Some))
        })?;
        Ok(LockGuard {
            cell: Mutex::new(Some(cell)),
            pid: std::process::id(),
            mark: Mutex::new(Some(store.mark_held())),
        })
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.pid != std::process::id()
            && let Some(cell) = self
                .cell
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        {
            std::mem::forget(cell);
        }
    }
}

#[pymethods]
impl LockGuard {
    /// Releases the lock (idempotent).
    fn release(&self, py: Python<'_>) {
        let cell = self
            .cell
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(
            self.mark
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        if let Some(cell) = cell {
            if self.pid == std::process::id() {
                py.detach(move || drop(cell));
            } else {
                std::mem::forget(cell);
            }
        }
    }

    /// Whether the lock is still held by this guard.
    #[getter]
    fn held(&self) -> bool {
        self.pid == std::process::id()
            && self
                .cell
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.release(py);
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "<statesafe.LockGuard {}>",
            if self.held() { "held" } else { "released" }
        )
    }
}
