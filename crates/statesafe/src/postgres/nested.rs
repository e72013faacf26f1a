//! A thread's own holds of PostgreSQL states, so that a transaction or lock asked for
//! while the same thread holds one of the same store is refused at once
//! ([`Error::Nested`]), as the file backend does (`lock.rs`, `refuse_nested`): the
//! state's row lock is not reentrant, and a second connection's `SELECT … FOR UPDATE`
//! would wait for this thread's own transaction until the lock timeout, then name this
//! process as the holder. Another store of the same state (another [`Remote`]) waits,
//! as another store of a file does.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::remote::Remote;
use crate::error::{Error, Result};

thread_local! {
    /// The stores (their `Remote`'s address) this thread holds a state of, each with
    /// a flag its hold clears when released, from whichever thread drops it.
    static HELD_HERE: RefCell<Vec<(usize, Arc<AtomicBool>)>> = const { RefCell::new(Vec::new()) };
}

/// One hold of a state by a store, registered in the thread that took it; dropping it
/// (with the transaction or guard that holds the row lock) clears it, on any thread.
#[derive(Debug)]
pub(crate) struct Hold(Arc<AtomicBool>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

fn key(remote: &Remote) -> usize {
    std::ptr::from_ref(remote) as usize
}

/// [`Error::Nested`] when this thread already holds `remote`'s state through it.
pub(crate) fn refuse(remote: &Remote, operation: &str) -> Result<()> {
    let here = key(remote);
    let nested = HELD_HERE
        .try_with(|held| {
            held.borrow()
                .iter()
                .any(|(k, live)| *k == here && live.load(Ordering::Relaxed))
        })
        .unwrap_or(false);
    if nested {
        return Err(Error::Nested {
            path: remote.display().to_path_buf(),
            operation: operation.to_string(),
        });
    }
    Ok(())
}

/// Registers a hold of `remote`'s state by this thread.
pub(crate) fn enter(remote: &Remote) -> Hold {
    let live = Arc::new(AtomicBool::new(true));
    let _ = HELD_HERE.try_with(|held| {
        let mut held = held.borrow_mut();
        held.retain(|(_, l)| l.load(Ordering::Relaxed));
        held.push((key(remote), Arc::clone(&live)));
    });
    Hold(live)
}
