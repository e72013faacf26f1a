//! Running an operation: on a thread of the addon, settling a promise (async), or on the
//! calling thread (the synchronous twins).

use napi::bindgen_prelude::{Object, ToNapiValue};
use napi::{Env, JsDeferred};

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

/// Runs `job` on a new thread of the addon and returns a promise of its outcome.
///
/// A thread per call, not a pool: a call may wait for the lock for as long as the lock
/// timeout, and a fixed pool would let such waits starve the reads behind them.
pub(crate) fn spawn<T: ToNapiValue + Send + 'static>(
    env: &Env,
    job: impl FnOnce() -> Outcome<T> + Send + 'static,
) -> napi::Result<Object<'_>> {
    let (settle, promise) = Settle::new(env)?;
    std::thread::Builder::new()
        .name("statesafe".into())
        .spawn(move || settle.send(job()))
        .map_err(|e| napi::Error::from_reason(format!("statesafe: cannot start a thread: {e}")))?;
    Ok(promise)
}

/// Runs `job` on the calling thread (a synchronous twin).
pub(crate) fn block<T>(job: impl FnOnce() -> Outcome<T>) -> napi::Result<T> {
    job().map_err(Failure::into_napi)
}
