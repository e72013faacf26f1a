//! The native half of the `statesafe` Python package (`statesafe._statesafe`).
//!
//! A thin layer over `statesafe::Store<Box<RawValue>>` (documents as JSON text): conversion
//! between Python objects and JSON text or values (`convert.rs`), the store (`store.rs`), transactions and
//! lock guards (`transaction.rs`), errors (`errors.rs`), reports (`report.rs`) and the
//! `logging` bridge (`logging.rs`). The Pythonic surface (`open`, exceptions, models,
//! `statesafe.aio`) is in `statesafe/*.py`.

mod convert;
mod errors;
mod logging;
mod report;
mod store;
mod transaction;

use std::time::Instant;

use pyo3::prelude::*;

/// Seconds to turn `obj` into the JSON text a transaction commits (pretty-printed,
/// with the private copy a transaction keeps), and that text back into Python objects
/// (for `python/bench.py`: the conversion cost, apart from the I/O).
#[pyfunction]
#[pyo3(signature = (obj, copy = true))]
fn _convert_timings(obj: &Bound<'_, PyAny>, copy: bool) -> PyResult<(f64, f64)> {
    let layout = convert::JsonLayout {
        indent: Some(b"  "),
        base: 0,
    };
    let start = Instant::now();
    let json = convert::to_json(obj, layout, copy, 0)?;
    let to_rust = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let back = convert::from_json(obj.py(), &json.text)?;
    let to_python = start.elapsed().as_secs_f64();
    drop(back);
    Ok((to_rust, to_python))
}

#[pymodule]
fn _statesafe(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::install();
    m.add_class::<store::Store>()?;
    m.add_class::<store::Snapshot>()?;
    m.add_class::<transaction::Transaction>()?;
    m.add_class::<transaction::LockGuard>()?;
    m.add_function(wrap_pyfunction!(_convert_timings, m)?)?;
    m.add("BIG_INTS", convert::big_ints_supported())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
