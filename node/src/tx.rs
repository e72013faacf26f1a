//! Transactions that span JavaScript: a thread of the addon takes the lock and reads,
//! JavaScript runs the user's function, then the same thread validates, commits and
//! unlocks (or, on an exception or a rejected promise, writes nothing and unlocks).
//!
//! The library's transaction borrows its store and holds a kernel lock, so it never
//! leaves the thread that began it: JavaScript holds a [`NativeTx`], which only sends
//! that thread its decision. If JavaScript drops the handle without deciding (a bug,
//! or a worker terminated mid-update), the thread sees the channel close and aborts.
//! If the process dies instead, the kernel releases the lock and the file holds the
//! old version.
//!
//! # The update cache
//!
//! A large update's biggest costs are JavaScript's: `JSON.parse` of the document read
//! under the lock, then `JSON.stringify` of the result. A long-lived store skips the
//! parse: while checking that the new document is JSON, `index.js` builds a private
//! copy of it and serializes that copy (so the copy is exactly the text committed;
//! building it costs about a third of the parse), and this side keeps the committed
//! text with a token naming the copy. The copy's text is JSON by construction (fresh
//! arrays and plain objects with data properties, stringified), so the library writes
//! it without parsing it again ([`statesafe::Transaction::commit_serialized`], with the
//! depth `index.js` counted). The next update, under the lock, has the library read the
//! file and verify its checksum, and compare it with the kept text byte for byte
//! ([`statesafe::Store::begin_known`]; a file the library parses anyway, sealed or with
//! a schema, is compared as document text): equal, and the transaction hands
//! JavaScript no snapshot, only "use your copy". Any difference (a
//! commit by another process, thread or store, a restore, a hand edit, the same
//! generation number reached again after the file and its sidecar were deleted)
//! is a miss, and the update reads the file as always. The comparison is of content,
//! not of a generation or a checksum, so a hit is the file's document by construction.
//!
//! The cache is taken (emptied) by every update that looks at it, and set again only
//! by a successful commit: an update whose function throws, whose commit fails, or
//! whose handle is dropped leaves nothing behind, so a copy that a function may have
//! half-changed is never offered again. JavaScript gives the copy to one update
//! only and never hands it to the caller (see `index.js`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use napi::Env;
use napi::bindgen_prelude::{Object, Uint8ArraySlice};
use napi_derive::napi;
use parking_lot::Mutex;

use crate::convert;
use crate::error::Failure;
use crate::run::{Outcome, Settle};
use crate::store::Inner;

/// The native half of the update cache: the text of the last document committed
/// through this store (when `index.js` keeps a copy of it) and the copy's token.
#[derive(Default)]
pub(crate) struct Cache {
    kept: Mutex<Option<Kept>>,
    tokens: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Kept {
    token: u64,
    text: String,
}

impl Cache {
    /// Takes the kept text when `token` names it (0: JavaScript holds no copy).
    fn take(&self, token: u64) -> Option<String> {
        let kept = self.kept.lock().take();
        kept.filter(|k| token != 0 && k.token == token)
            .map(|k| k.text)
    }

    /// Counts an update that offered a copy (`token` not 0): used or not.
    fn count(&self, token: u64, hit: bool) {
        if token != 0 {
            let counter = if hit { &self.hits } else { &self.misses };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Keeps `text` (just committed); returns the token for JavaScript's copy.
    fn keep(&self, text: String) -> u64 {
        let token = self.tokens.fetch_add(1, Ordering::Relaxed) + 1;
        *self.kept.lock() = Some(Kept { token, text });
        token
    }

    /// (hits, misses) of updates that offered a copy.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

/// Where an outcome goes: a promise, or a synchronous caller waiting on a channel.
pub(crate) enum Reply<T: napi::bindgen_prelude::ToNapiValue + Send + 'static> {
    Promise(Settle<T>),
    Block(mpsc::SyncSender<Outcome<T>>),
}

impl<T: napi::bindgen_prelude::ToNapiValue + Send + 'static> Reply<T> {
    pub fn send(self, outcome: Outcome<T>) {
        match self {
            Reply::Promise(settle) => settle.send(outcome),
            // The caller is blocked on the other end; it cannot have gone away.
            Reply::Block(sender) => drop(sender.send(outcome)),
        }
    }

    /// A reply for a synchronous caller, and the channel it waits on.
    pub fn block() -> (Reply<T>, mpsc::Receiver<Outcome<T>>) {
        let (sender, receiver) = mpsc::sync_channel(1);
        (Reply::Block(sender), receiver)
    }
}

/// Waits for a synchronous outcome.
pub(crate) fn wait<T>(receiver: &mpsc::Receiver<Outcome<T>>) -> napi::Result<T> {
    receiver
        .recv()
        .map_err(|_| worker_gone().into_napi())?
        .map_err(Failure::into_napi)
}

fn worker_gone() -> Failure {
    Failure::binding(
        "ECLOSED",
        "the statesafe worker thread of this transaction is gone".into(),
        "this is a bug in statesafe's Node binding; please report it",
    )
}

/// What the JavaScript side decided.
enum Decision {
    /// Commit this document (JSON text, its `BigInt` places, whether it holds a
    /// number of magnitude 2^53 or more), and keep its text for the update cache if
    /// `keep` (JavaScript is making its copy).
    Commit {
        json: String,
        big: String,
        large: bool,
        keep: bool,
        depth: i32,
        reply: Reply<String>,
    },
    /// Write nothing and release the lock.
    Release { reply: Reply<String> },
}

/// What a transaction holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The lock and the document: `update`.
    Update,
    /// The lock alone: `withLock`.
    Lock,
}

/// JavaScript's handle on a transaction held by a thread of the addon.
#[napi]
pub struct NativeTx {
    decide: Mutex<Option<mpsc::Sender<Decision>>>,
    begun: Mutex<Option<String>>,
    /// A buffer for the text of the commit (see `NativeTx::text_of`).
    spare: Mutex<Option<Vec<u8>>>,
}

#[napi]
impl NativeTx {
    /// The document read under the lock, as `{generation, big, value}` JSON text
    /// (once; `null` for a `withLock` transaction, and for an update whose cached
    /// copy is the file's document).
    #[napi]
    pub fn take_snapshot(&self) -> Option<String> {
        self.begun.lock().take()
    }

    /// Validates, writes and syncs `json` (the document's text as UTF-8, see
    /// `NativeTx::text_of`), then unlocks; resolves to
    /// `"GENERATION TOKEN"` (token 0: nothing kept for the cache). `depth`: the
    /// nesting depth `index.js` counted while checking the value it stringified
    /// (-1: not counted; then the text is parsed here).
    #[napi(ts_return_type = "Promise<string>")]
    pub fn commit<'e>(
        &self,
        env: &'e Env,
        json: Uint8ArraySlice,
        big: String,
        large: bool,
        keep: bool,
        depth: i32,
    ) -> napi::Result<Object<'e>> {
        let json = self.text_of(&json)?;
        let (settle, promise) = Settle::new(env)?;
        self.decide(Decision::Commit {
            json,
            big,
            large,
            keep,
            depth,
            reply: Reply::Promise(settle),
        })?;
        Ok(promise)
    }

    /// [`NativeTx::commit`], blocking.
    #[napi]
    pub fn commit_sync(
        &self,
        json: Uint8ArraySlice,
        big: String,
        large: bool,
        keep: bool,
        depth: i32,
    ) -> napi::Result<String> {
        let json = self.text_of(&json)?;
        let (reply, receiver) = Reply::block();
        self.decide(Decision::Commit {
            json,
            big,
            large,
            keep,
            depth,
            reply,
        })?;
        wait(&receiver)
    }

    /// Writes nothing and unlocks; resolves once the lock is released.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn release<'e>(&self, env: &'e Env) -> napi::Result<Object<'e>> {
        let (settle, promise) = Settle::new(env)?;
        self.decide(Decision::Release {
            reply: Reply::Promise(settle),
        })?;
        Ok(promise)
    }

    /// [`NativeTx::release`], blocking.
    #[napi]
    pub fn release_sync(&self) -> napi::Result<String> {
        let (reply, receiver) = Reply::block();
        self.decide(Decision::Release { reply })?;
        wait(&receiver)
    }
}

impl NativeTx {
    /// The document's text from `index.js`: UTF-8 bytes in a buffer `index.js` reuses
    /// (see `textBytes` there), copied during the call so that `index.js` may reuse it
    /// at once. Copied into the buffer of the text the update cache kept last
    /// (compared under the lock when this update began, and of no more use), whose
    /// memory is already mapped: a fresh buffer of a MiB costs its page faults.
    fn text_of(&self, bytes: &[u8]) -> napi::Result<String> {
        let mut buf = self.spare.lock().take().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(bytes);
        String::from_utf8(buf).map_err(|e| {
            Failure::type_error(format!("the document's text is not UTF-8: {e}")).into_napi()
        })
    }

    fn decide(&self, decision: Decision) -> napi::Result<()> {
        let sender = self.decide.lock().take().ok_or_else(|| {
            Failure::binding(
                "EFINISHED",
                "this transaction is already committed or released".into(),
                "start a new update",
            )
            .into_napi()
        })?;
        sender.send(decision).map_err(|_| worker_gone().into_napi())
    }
}

/// Starts a transaction on a thread of the addon (see `run::on_thread`), which it
/// keeps until the transaction ends; `reply` gets the handle once the lock is
/// held (and, for an update, the document read). `cached`: the token of JavaScript's
/// copy (0 or less: none).
pub(crate) fn begin(
    inner: Arc<Inner>,
    kind: Kind,
    cached: i64,
    reply: Reply<NativeTx>,
) -> napi::Result<()> {
    let cached = u64::try_from(cached).unwrap_or(0);
    crate::run::on_thread(Box::new(move || hold(&inner, kind, cached, reply)))
}

fn hold(inner: &Inner, kind: Kind, cached: u64, reply: Reply<NativeTx>) {
    let store = &inner.store;
    let (decide, decision) = mpsc::channel();
    match kind {
        Kind::Update => {
            let init = inner.default.as_ref().map(|d| || d.clone());
            // The library compares the file with the kept text under the lock, after
            // checking its checksum; equal, it does not parse it, and the transaction's
            // own document is a placeholder: JavaScript starts from its copy, and a
            // commit always sends the whole new document.
            let known = inner.cache.take(cached);
            let begun = match &known {
                Some(known) => store.begin_known(known.as_bytes(), convert::placeholder, init),
                None => match init {
                    Some(init) => store.begin_or_insert_with(init),
                    None => store.begin(),
                }
                .map(|tx| (tx, false)),
            };
            let (mut tx, reused) = match begun {
                Ok(begun) => begun,
                Err(e) => return reply.send(Err(e.into())),
            };
            // A file the library parsed (sealed, or a store with a schema) may still
            // hold exactly the kept document.
            let hit = reused || known.as_deref().is_some_and(|k| k == tx.state().get());
            inner.cache.count(cached, hit);
            let snapshot = (!hit).then(|| convert::snapshot(tx.state(), tx.generation()));
            let spare = known.map(String::into_bytes);
            reply.send(Ok(NativeTx::new(decide, snapshot, spare)));
            match decision.recv() {
                Ok(Decision::Commit {
                    json,
                    big,
                    large,
                    keep,
                    depth,
                    reply,
                }) => {
                    let depth = usize::try_from(depth).ok();
                    let outcome = match depth
                        .filter(|_| convert::as_sent(&json, &big, large, inner.layout))
                    {
                        // `JSON.stringify` of a value `index.js` checked to be plain JSON,
                        // in the file's layout: written as it is, not parsed again.
                        Some(depth) => tx
                            .commit_serialized(&json, depth)
                            .map_err(Failure::from)
                            .map(|generation| {
                                let token = if keep { inner.cache.keep(json) } else { 0 };
                                format!("{generation} {token}")
                            }),
                        None => convert::document(json, &big, large, inner.layout).and_then(
                            |(doc, as_sent)| {
                                // Only text JavaScript's `JSON.parse` reads as the document
                                // is worth keeping (not one rewritten for big integers).
                                let kept = (keep && as_sent).then(|| doc.get().to_owned());
                                tx.set(doc);
                                let generation = tx.commit()?;
                                let token = kept.map_or(0, |text| inner.cache.keep(text));
                                Ok(format!("{generation} {token}"))
                            },
                        ),
                    };
                    reply.send(outcome);
                }
                Ok(Decision::Release { reply }) => {
                    drop(tx);
                    reply.send(Ok("null".into()));
                }
                // The handle was dropped undecided: write nothing.
                Err(mpsc::RecvError) => drop(tx),
            }
        }
        Kind::Lock => {
            let guard = match store.lock("withLock") {
                Ok(guard) => guard,
                Err(e) => return reply.send(Err(e.into())),
            };
            reply.send(Ok(NativeTx::new(decide, None, None)));
            match decision.recv() {
                Ok(Decision::Commit { reply, .. }) => {
                    drop(guard);
                    reply.send(Err(Failure::binding(
                        "EFINISHED",
                        "a withLock transaction has no document to commit".into(),
                        "use update() to change the document",
                    )));
                }
                Ok(Decision::Release { reply }) => {
                    drop(guard);
                    reply.send(Ok("null".into()));
                }
                Err(mpsc::RecvError) => drop(guard),
            }
        }
    }
}

impl NativeTx {
    fn new(
        decide: mpsc::Sender<Decision>,
        snapshot: Option<String>,
        spare: Option<Vec<u8>>,
    ) -> NativeTx {
        NativeTx {
            decide: Mutex::new(Some(decide)),
            begun: Mutex::new(snapshot),
            spare: Mutex::new(spare),
        }
    }
}
