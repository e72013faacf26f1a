//! Bookkeeping deletions off the commit path: one worker thread per process removes
//! the backups that left the retention window, while the caller goes on.
//!
//! Deleting the oldest backup is the one step of a commit that frees a file's blocks.
//! On some filesystems that is slow and synchronous (ext4 without a journal, mounted
//! with `discard`, trims the blocks inside `unlink`: about 0.1 ms, a sixth of a
//! commit). Nothing depends on it being done before `update` returns: it is garbage
//! collection, the same reason databases delete obsolete files in the background.
//!
//! - Safe without the lock: pruning only ever removes the *oldest* backups beyond the
//!   policy, and new backups only ever arrive as newer generations, so a prune that
//!   races a commit (of this or another process) never removes one that should stay.
//!   Readers of backups that find one gone treat it as pruned.
//! - Bounded: every [`Store`](crate::Store) counts its own jobs, waits for them before
//!   it lists backups (`backups`, `check`, `info`, `recover`, `restore`) and when it is
//!   dropped, so a one-shot program (the CLI) leaves exactly what the policy keeps.
//!   A process that exits without dropping its store can leave one backup too many;
//!   the next prune (each one lists the folder) removes it.
//! - Fork-safe: the worker belongs to the process that started it; a forked child
//!   starts its own (or runs the job inline if no thread can be started), and never
//!   waits for jobs its parent handed over before the fork.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use crate::sys;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A job and the counter of the store that handed it over.
type Queue = Sender<(Job, Arc<Pending>)>;

/// One store's outstanding jobs.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    count: Mutex<Count>,
    done: Condvar,
    /// Whether the store has handed over a job before: its first runs inline.
    used: AtomicBool,
}

#[derive(Debug, Default)]
struct Count {
    jobs: usize,
    /// The process the jobs belong to. A child forked while jobs were pending has a
    /// copy of this count but not the worker that would run them down: it must not
    /// wait for them.
    owner: u32,
}

impl Count {
    fn adopt(&mut self) {
        let pid = sys::pid();
        if self.owner != pid {
            self.owner = pid;
            self.jobs = 0;
        }
    }
}

impl Pending {
    fn add(&self) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        count.adopt();
        count.jobs += 1;
    }

    fn finish(&self) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        count.jobs = count.jobs.saturating_sub(1);
        if count.jobs == 0 {
            self.done.notify_all();
        }
    }

    /// Waits until every job this process handed over so far has run.
    pub fn drain(&self) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        count.adopt();
        while count.jobs > 0 {
            count = self
                .done
                .wait(count)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The process's worker: the pid that started it, and its queue.
static WORKER: Mutex<Option<(u32, Queue)>> = Mutex::new(None);

/// Runs `job` on the worker thread, counted in `pending`; inline when no worker can
/// be had (no threads left, or a worker that died), and for a store's first job: a
/// one-shot writer (one commit, then exit, as every `statesafe` command is) would
/// only pay for starting a thread it must then wait for.
pub(crate) fn defer(pending: &Arc<Pending>, job: impl FnOnce() + Send + 'static) {
    pending.add();
    let job: Job = Box::new(job);
    if !pending.used.swap(true, Ordering::AcqRel) {
        run(job, pending);
        return;
    }
    let Some(queue) = worker() else {
        run(job, pending);
        return;
    };
    if let Err(mpsc::SendError((job, pending))) = queue.send((job, Arc::clone(pending))) {
        run(job, &pending);
    }
}

fn run(job: Job, pending: &Pending) {
    // A panicking job must neither kill the worker nor leave a drain waiting.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    pending.finish();
}

fn worker() -> Option<Queue> {
    let pid = sys::pid();
    let mut slot = WORKER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((owner, queue)) = slot.as_ref()
        && *owner == pid
    {
        return Some(queue.clone());
    }
    let (queue, jobs) = mpsc::channel::<(Job, Arc<Pending>)>();
    std::thread::Builder::new()
        .name("statesafe-janitor".into())
        // It only unlinks and lists directories.
        .stack_size(256 * 1024)
        .spawn(move || {
            for (job, pending) in jobs {
                run(job, &pending);
            }
        })
        .ok()?;
    *slot = Some((pid, queue.clone()));
    Some(queue)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn drain_waits_for_every_job_even_a_panicking_one() {
        let pending = Arc::new(Pending::default());
        let ran = Arc::new(AtomicUsize::new(0));
        let caller = std::thread::current().id();
        let first_on = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&first_on);
        defer(&pending, move || {
            *seen.lock().unwrap() = Some(std::thread::current().id());
        });
        assert_eq!(
            *first_on.lock().unwrap(),
            Some(caller),
            "a store's first job runs inline"
        );
        for i in 0..20 {
            let ran = Arc::clone(&ran);
            defer(&pending, move || {
                std::thread::sleep(Duration::from_millis(1));
                assert!(i != 7, "a job that panics");
                ran.fetch_add(1, Ordering::SeqCst);
            });
        }
        pending.drain();
        assert_eq!(ran.load(Ordering::SeqCst), 19);
        // The worker survived the panic.
        let after = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&after);
        defer(&pending, move || {
            seen.fetch_add(1, Ordering::SeqCst);
        });
        pending.drain();
        assert_eq!(after.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_forked_child_does_not_wait_for_its_parents_jobs() {
        // What a child forked with two jobs pending sees: a count owned by another pid.
        let pending = Pending::default();
        *pending.count.lock().unwrap() = Count {
            jobs: 2,
            owner: sys::pid().wrapping_add(1),
        };
        pending.drain();
        let count = pending.count.lock().unwrap();
        assert_eq!((count.jobs, count.owner), (0, sys::pid()));
    }
}
