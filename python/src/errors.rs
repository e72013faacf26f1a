//! `statesafe::Error` to the Python exception of the same kind.
//!
//! The exception classes live in `statesafe/_errors.py` (so that `NotFound` can also be a
//! `FileNotFoundError`); this file collects what each variant carries and hands it to
//! `_errors._from_rust`, which builds the instance.

use std::error::Error as _;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use statesafe::{Error, Holder};

/// The Python exception for `err`.
pub fn to_py(err: Error) -> PyErr {
    Python::attach(|py| match build(py, &err) {
        Ok(e) => e,
        // Only if the package itself is broken: still say what happened.
        Err(broken) => broken,
    })
}

fn build(py: Python<'_>, err: &Error) -> PyResult<PyErr> {
    let fields = PyDict::new(py);
    let path = match err {
        Error::NotFound { path }
        | Error::Deleted { path, .. }
        | Error::Corrupt { path, .. }
        | Error::LockTimeout { path, .. }
        | Error::GenerationConflict { path, .. }
        | Error::Invalid { path, .. }
        | Error::Serialize { path, .. }
        | Error::Aborted { path, .. }
        | Error::NoSpace { path, .. }
        | Error::PermissionDenied { path, .. }
        | Error::ReadOnly { path, .. }
        | Error::OutcomeUnknown { path, .. }
        | Error::Poisoned { path }
        | Error::BadPath { path, .. }
        | Error::TooLarge { path, .. }
        | Error::Unrecoverable { path, .. }
        | Error::BadSchema { path, .. }
        | Error::GenerationUnavailable { path, .. }
        | Error::AlreadyExists { path }
        | Error::Mismatch { path, .. }
        | Error::Unsafe { path, .. }
        | Error::LockLost { path, .. }
        | Error::Unsupported { path, .. }
        | Error::TooDeep { path, .. }
        | Error::Nested { path, .. }
        // A PostgreSQL state's URL, its password already redacted by the library.
        | Error::Remote { path, .. }
        | Error::Io { path, .. } => Some(path),
        _ => None,
    };
    fields.set_item("path", path.map(|p| p.to_string_lossy().into_owned()))?;
    match err {
        Error::Corrupt {
            line,
            column,
            reason,
            ..
        } => {
            fields.set_item("line", *line)?;
            fields.set_item("column", *column)?;
            fields.set_item("reason", reason)?;
        }
        Error::Deleted {
            generation,
            newest_backup,
            sidecar,
            ..
        } => {
            fields.set_item("generation", *generation)?;
            fields.set_item(
                "newest_backup",
                newest_backup
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
            )?;
            fields.set_item("sidecar", sidecar.to_string_lossy().into_owned())?;
        }
        Error::LockTimeout { waited, holder, .. } => {
            fields.set_item("waited", waited.as_secs_f64())?;
            fields.set_item(
                "holder",
                holder.as_deref().map(|h| holder_dict(py, h)).transpose()?,
            )?;
        }
        Error::GenerationConflict {
            expected, found, ..
        } => {
            fields.set_item("expected", *expected)?;
            fields.set_item("actual", *found)?;
        }
        Error::Invalid { message, .. } => fields.set_item("message", message)?,
        Error::NoSpace { op, source, .. }
        | Error::PermissionDenied { op, source, .. }
        | Error::ReadOnly { op, source, .. }
        | Error::Io { op, source, .. } => {
            fields.set_item("operation", op.to_string())?;
            fields.set_item("errno", source.raw_os_error())?;
        }
        Error::OutcomeUnknown { generation, .. } => fields.set_item("generation", *generation)?,
        Error::BadPath { reason, .. } => fields.set_item("reason", reason)?,
        Error::Unsafe { reason, what, .. } => {
            fields.set_item("reason", reason)?;
            // Which refusal: `planted`, `sidecar_without_file` (the core's names).
            fields.set_item("what", what.name())?;
        }
        Error::TooLarge { size, limit, .. } => {
            fields.set_item("size", *size)?;
            fields.set_item("limit", *limit)?;
        }
        Error::Unrecoverable {
            damage,
            quarantined,
            tried,
            ..
        } => {
            fields.set_item("damage", damage.to_string())?;
            fields.set_item(
                "quarantined",
                quarantined
                    .as_ref()
                    .map(|q| q.to_string_lossy().into_owned()),
            )?;
            let tried: Vec<(String, String)> = tried
                .iter()
                .map(|(p, why)| (p.to_string_lossy().into_owned(), why.clone()))
                .collect();
            fields.set_item("tried", tried)?;
        }
        Error::BadSchema { message, .. } => fields.set_item("message", message)?,
        Error::TooDeep { depth, limit, .. } => {
            fields.set_item("depth", *depth)?;
            fields.set_item("limit", *limit)?;
        }
        Error::LockLost { lock, .. } => {
            fields.set_item("lock", lock.to_string_lossy().into_owned())?;
        }
        Error::Unsupported { what, why, .. } => {
            fields.set_item("operation", what)?;
            fields.set_item("reason", why)?;
        }
        Error::Mismatch {
            generation,
            committed,
            reason,
            ..
        } => {
            fields.set_item("generation", *generation)?;
            fields.set_item("committed", *committed)?;
            fields.set_item("reason", reason)?;
        }
        Error::Remote { op, reason, .. } => {
            fields.set_item("operation", op)?;
            fields.set_item("reason", reason)?;
        }
        Error::GenerationUnavailable {
            generation, reason, ..
        } => {
            fields.set_item("generation", *generation)?;
            fields.set_item("reason", reason)?;
        }
        _ => {}
    }
    let mut causes = Vec::new();
    let mut source = err.source();
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    let exc = py
        .import("statesafe._errors")?
        .getattr("_from_rust")?
        .call1((err.kind(), err.to_string(), causes, err.hint(), fields))?;
    Ok(PyErr::from_value(exc))
}

/// A lock holder as a dict (the Python side makes it a `Holder`).
pub fn holder_dict<'py>(py: Python<'py>, h: &Holder) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("pid", h.pid)?;
    d.set_item("host", &h.host)?;
    d.set_item("user", &h.user)?;
    d.set_item("command", &h.command)?;
    d.set_item("operation", &h.operation)?;
    d.set_item("since", &h.since)?;
    Ok(d)
}

/// `statesafe.Closed`: the store was used after `close()`.
pub fn closed_error(path: &std::path::Path) -> PyErr {
    kind_error(
        "closed",
        &format!("store for `{}` is closed", path.display()),
        "open the file again with `statesafe.open(...)`",
        Some(path),
    )
}

/// `statesafe.UsageError`: an API used out of order (a finished transaction, say).
pub fn usage_error(message: &str, hint: &str) -> PyErr {
    kind_error("usage", message, hint, None)
}

/// [`usage_error`] about the state file at `path`.
pub fn usage_error_at(message: &str, hint: &str, path: &std::path::Path) -> PyErr {
    kind_error("usage", message, hint, Some(path))
}

/// `statesafe.Mismatch`: a sound document of `path` that this process cannot serve
/// (`why`: the model refuses it, a number Python cannot hold), `cause` being what
/// Python raised (also its `__cause__`). Nothing was changed. An exception that is not
/// an `Exception` (`KeyboardInterrupt`), or already a `statesafe.Error`, is returned
/// as it is.
pub fn unservable(
    py: Python<'_>,
    cause: PyErr,
    path: &std::path::Path,
    why: &str,
    hint: &str,
) -> PyErr {
    let made = (|| -> PyResult<Option<PyErr>> {
        let errors = py.import("statesafe._errors")?;
        let base = errors.getattr("Error")?;
        let value = cause.value(py);
        if !cause.is_instance_of::<pyo3::exceptions::PyException>(py) || value.is_instance(&base)? {
            return Ok(None);
        }
        let described = format!(
            "{}: {}",
            value.get_type().qualname()?,
            value.str()?.to_string_lossy()
        );
        // The cause's own hint, when it has one (`statesafe._model.FieldsDropped`).
        let own_hint = value
            .getattr("_statesafe_hint")
            .ok()
            .and_then(|h| h.extract::<String>().ok());
        let hint = own_hint.as_deref().unwrap_or(hint);
        let fields = PyDict::new(py);
        let shown = path.to_string_lossy().into_owned();
        fields.set_item("path", &shown)?;
        fields.set_item("reason", why)?;
        fields.set_item("committed", false)?;
        fields.set_item("generation", 0)?;
        let exc = errors.getattr("_from_rust")?.call1((
            "mismatch",
            format!("cannot serve the document in `{shown}`: {why}; nothing was changed"),
            vec![described],
            hint,
            fields,
        ))?;
        let exc = PyErr::from_value(exc);
        exc.set_cause(py, Some(cause.clone_ref(py)));
        Ok(Some(exc))
    })();
    match made {
        Ok(Some(e)) => e,
        Ok(None) => cause,
        Err(broken) => broken,
    }
}

/// A document to write that the store's model cannot take
/// (`statesafe._model.NotTheModel`, marked `_statesafe_usage`) as a `UsageError`
/// naming the file, its message and hint, the model's exception as its cause; any
/// other error is returned as it is.
pub fn not_the_model(py: Python<'_>, e: PyErr, path: &std::path::Path) -> PyErr {
    let value = e.value(py);
    let marked = value
        .getattr("_statesafe_usage")
        .ok()
        .is_some_and(|m| m.is_truthy().unwrap_or(false));
    if !marked {
        return e;
    }
    let text = |attr: &str| -> String {
        value
            .getattr(attr)
            .ok()
            .and_then(|h| h.extract::<String>().ok())
            .unwrap_or_default()
    };
    let message = value
        .str()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let made = usage_error_at(
        &format!("cannot write `{}`: {message}", path.display()),
        &text("_statesafe_hint"),
        path,
    );
    if let Ok(Some(cause)) = value
        .getattr("__cause__")
        .map(|c| (!c.is_none()).then(|| PyErr::from_value(c)))
    {
        made.set_cause(py, Some(cause));
    }
    made
}

fn kind_error(kind: &str, message: &str, hint: &str, path: Option<&std::path::Path>) -> PyErr {
    Python::attach(|py| {
        let made = (|| -> PyResult<PyErr> {
            let fields = PyDict::new(py);
            fields.set_item("path", path.map(|p| p.to_string_lossy().into_owned()))?;
            let exc = py
                .import("statesafe._errors")?
                .getattr("_from_rust")?
                .call1((kind, message, Vec::<String>::new(), hint, fields))?;
            Ok(PyErr::from_value(exc))
        })();
        made.unwrap_or_else(|broken| broken)
    })
}
