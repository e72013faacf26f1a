//! Running an operation: on a thread of the addon, settling a promise (async), or on the
//! calling thread (the synchronous twins).

use std::sync::mpsc;
use std::time::Duration;

use napi::bindgen_prelude::{Object, ToNapiValue};
use napi::{Env, JsDeferred};
use parking_lot::Mutex;

use crate::error::Failure;

/// What an operation produces: JSON text for JavaScript, or a failure.
pub(crate) type Outcome<T = String> = Result<T, Failure>;

type Resolver<T> = Box<dyn FnOnce(Env) -> napi::Result<T> + Send>;

/// A promise's settling half, usable from any thread.
pub(crate) struct Settle<T: ToNapiValue + 'static>(JsDeferred<T, Resolver<T>>);

impl<T: ToNapiValue + Send + 'static> Settle<T> {
    pub fn new(env: &Env) -> napi::Result<(Settle<T>, Object<'_>)> {
        let (deferred, promise) = env.create_deferred::<T, Resolver<T>>()?;
        Ok((Settle(deferred), promise))
    }

    pub fn send(self, outcome: Outcome<T>) {
        match outcome {
            Ok(value) => self.0.resolve(Box::new(move |_| Ok(value))),
            Err(failure) => self.0.reject(failure.into_napi()),
        }
    }
}

/// Runs `job` on a thread of the addon and returns a promise of its outcome.
pub(crate) fn spawn<T: ToNapiValue + Send + 'static>(
    env: &Env,
    job: impl FnOnce() -> Outcome<T> + Send + 'static,
) -> napi::Result<Object<'_>> {
    let (settle, promise) = Settle::new(env)?;
    on_thread(Box::new(move || settle.send(job())))?;
    Ok(promise)
}

/// Work for a thread of the addon.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Threads that finished their job and wait for another, most recent last, each
/// with its number and the sending half of its channel.
static IDLE: Mutex<Vec<(u64, mpsc::Sender<Job>)>> = Mutex::new(Vec::new());
static NEXT_WORKER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long a thread waits for another job before it ends.
const IDLE_FOR: Duration = Duration::from_secs(10);

/// Runs `job` on a thread of the addon: an idle one, or a new one when none is idle.
///
/// Never a fixed pool: a job may wait for the lock for as long as the lock timeout
/// (or hold it while JavaScript runs an update), and a fixed pool would let such
/// waits starve the jobs behind them. Reusing a thread that is done costs a channel
/// send instead of a thread's start and end (about 0.1 ms of CPU, measured in
/// docs/benchmarks.md), on every call.
pub(crate) fn on_thread(mut job: Job) -> napi::Result<()> {
    loop {
        let Some((_, idle)) = IDLE.lock().pop() else {
            break;
        };
        // A thread that has just given up waiting is gone: the job comes back.
        match idle.send(job) {
            Ok(()) => return Ok(()),
            Err(mpsc::SendError(back)) => job = back,
        }
    }
    let id = NEXT_WORKER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::thread::Builder::new()
        .name("statesafe".into())
        .spawn(move || work(id, job))
        .map(drop)
        .map_err(|e| napi::Error::from_reason(format!("statesafe: cannot start a thread: {e}")))
}

fn work(id: u64, first: Job) {
    first();
    loop {
        let (sender, receiver) = mpsc::channel();
        IDLE.lock().push((id, sender));
        let job = match receiver.recv_timeout(IDLE_FOR) {
            Ok(job) => job,
            Err(_) => {
                // Still listed: nobody will send; end. Taken meanwhile: the job is on
                // its way, so wait for it rather than drop it with the channel.
                let mut idle = IDLE.lock();
                match idle.iter().position(|(i, _)| *i == id) {
                    Some(at) => {
                        idle.remove(at);
                        return;
                    }
                    None => {
                        drop(idle);
                        match receiver.recv() {
                            Ok(job) => job,
                            Err(mpsc::RecvError) => return,
                        }
                    }
                }
            }
        };
        job();
    }
}

/// Runs `job` on the calling thread (a synchronous twin).
pub(crate) fn block<T>(job: impl FnOnce() -> Outcome<T>) -> napi::Result<T> {
    job().map_err(Failure::into_napi)
}
