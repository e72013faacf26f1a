//! The library's reports (check, info, backups, stats, history) as Python dicts.

use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde::Serialize;
use statesafe::{BackupInfo, CheckReport, Info, Latency, Stats};

use crate::convert::to_python;
use crate::errors::holder_dict;

/// A path for Python: `str`, as in the exceptions.
pub fn text(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Anything the library can serialize, through JSON.
pub fn serialized<T: Serialize>(py: Python<'_>, value: &T) -> PyResult<Py<PyAny>> {
    let value = serde_json::to_value(value)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    Ok(to_python(py, &value)?.unbind())
}

fn backup<'py>(py: Python<'py>, b: &BackupInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("generation", b.generation)?;
    d.set_item("path", text(&b.path))?;
    d.set_item("size", b.size)?;
    d.set_item("committed", seconds(b.committed))?;
    Ok(d)
}

pub fn backups(py: Python<'_>, list: &[BackupInfo]) -> PyResult<Py<PyAny>> {
    let out = PyList::empty(py);
    for b in list {
        out.append(backup(py, b)?)?;
    }
    Ok(out.into_any().unbind())
}

pub fn check(py: Python<'_>, r: &CheckReport) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    d.set_item("ok", r.is_ok())?;
    d.set_item("path", text(&r.path))?;
    d.set_item("exists", r.exists)?;
    d.set_item("generation", r.generation)?;
    d.set_item("format", r.format.map(|f| f.name()))?;
    d.set_item("external", r.external)?;
    d.set_item("problems", &r.problems)?;
    d.set_item("backups_valid", r.backups_valid)?;
    d.set_item(
        "backups_damaged",
        r.backups_damaged
            .iter()
            .map(|(p, why)| (text(p), why.clone()))
            .collect::<Vec<_>>(),
    )?;
    d.set_item(
        "foreign",
        r.foreign.iter().map(|p| text(p)).collect::<Vec<_>>(),
    )?;
    d.set_item(
        "quarantined",
        r.quarantined.iter().map(|p| text(p)).collect::<Vec<_>>(),
    )?;
    Ok(d.unbind())
}

pub fn info(py: Python<'_>, i: &Info) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    d.set_item("path", text(&i.path))?;
    d.set_item("real_path", text(&i.real_path))?;
    d.set_item("exists", i.exists)?;
    // The state file was deleted (its sidecar shows commits): as the CLI's `--json`.
    d.set_item("deleted", i.deleted.is_some())?;
    d.set_item("generation", i.generation)?;
    d.set_item("format", i.format.map(|f| f.name()))?;
    d.set_item("size", i.size)?;
    d.set_item("modified", i.modified.map(seconds))?;
    match &i.last_writer {
        Some((w, time)) => {
            let lw = PyDict::new(py);
            lw.set_item("pid", w.pid)?;
            lw.set_item("host", &w.host)?;
            lw.set_item("user", &w.user)?;
            lw.set_item("command", &w.command)?;
            lw.set_item("time", time)?;
            d.set_item("last_writer", lw)?;
        }
        None => d.set_item("last_writer", py.None())?,
    }
    let bs = PyList::empty(py);
    for b in &i.backups {
        bs.append(backup(py, b)?)?;
    }
    d.set_item("backups", bs)?;
    d.set_item(
        "lock_holder",
        i.lock_holder
            .as_ref()
            .map(|h| holder_dict(py, h))
            .transpose()?,
    )?;
    d.set_item("settings", serialized(py, &i.settings)?)?;
    Ok(d.unbind())
}

fn latency<'py>(py: Python<'py>, l: &Latency) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("count", l.count)?;
    d.set_item("total", l.total.as_secs_f64())?;
    d.set_item("mean", l.mean().as_secs_f64())?;
    d.set_item("max", l.max.as_secs_f64())?;
    d.set_item("p50", l.quantile(0.5).as_secs_f64())?;
    d.set_item("p99", l.quantile(0.99).as_secs_f64())?;
    Ok(d)
}

pub fn stats(py: Python<'_>, s: &Stats) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    d.set_item("commits", s.commits)?;
    let failures = PyDict::new(py);
    for (k, v) in &s.failures {
        failures.set_item(*k, *v)?;
    }
    d.set_item("failures", failures)?;
    d.set_item("recoveries", s.recoveries)?;
    d.set_item("external_changes", s.external_changes)?;
    d.set_item("lock_waits", latency(py, &s.lock_waits)?)?;
    d.set_item("fsync", latency(py, &s.fsync)?)?;
    d.set_item("commit", latency(py, &s.commit)?)?;
    Ok(d.unbind())
}
