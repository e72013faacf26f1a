//! `NativeStore`: one state file, as `index.js` sees it. Each operation has an async
//! form (a promise settled from a thread of the addon) and a synchronous twin.

use std::sync::Arc;
use std::time::SystemTime;

use napi::Env;
use napi::bindgen_prelude::Object;
use napi_derive::napi;
use parking_lot::Mutex;
use serde_json::{Value, json};
use statesafe::{
    BackupList, Change, CheckReport, Event, HistoryEntry, Info, Latency, Settings, Stats, Store,
};

use crate::convert::{self, Doc, TextLayout};
use crate::error::{Failure, holder_json};
use crate::options::{EventQueue, Options};
use crate::run::{self, Outcome};
use crate::tx::{self, Kind, NativeTx, Reply};

/// What every operation of one open store shares.
pub(crate) struct Inner {
    pub store: Store<Doc>,
    /// The document an update starts from when the file does not exist.
    pub default: Option<Doc>,
    /// How documents are laid out in the file.
    pub layout: TextLayout,
    /// The update cache's native half (see `tx.rs`).
    pub cache: tx::Cache,
}

/// One open state file.
#[napi]
pub struct NativeStore {
    inner: Mutex<Option<Arc<Inner>>>,
    events: EventQueue,
}

#[napi]
impl NativeStore {
    /// Opens the store (reads the recorded settings; creates nothing), on the calling
    /// thread: for a PostgreSQL URL, that is the connection (bounded by its
    /// `connect_timeout`); `open_async` does it on a thread of the addon.
    #[napi(constructor)]
    pub fn new(path: String, options: String) -> napi::Result<NativeStore> {
        run::block(|| NativeStore::open(path, options))
    }

    /// `new`, on a thread of the addon: the JavaScript thread never waits for the
    /// server (`openAsync` in `index.js`).
    #[napi(ts_return_type = "Promise<NativeStore>")]
    pub fn open_async(env: &Env, path: String, options: String) -> napi::Result<Object<'_>> {
        run::spawn(env, move || NativeStore::open(path, options))
    }
}

impl NativeStore {
    fn open(path: String, options: String) -> Outcome<NativeStore> {
        let events = EventQueue::default();
        let options = Options::parse(&options)?;
        let store_options = options.store_options(events.clone())?;
        // A `postgres://` URL is a PostgreSQL state (docs/remote.md).
        let store = if statesafe::postgres::is_url(&path) {
            store_options.open_url(&path)?
        } else {
            store_options.open(&path)?
        };
        let layout = options.text_layout(store.settings().format);
        Ok(NativeStore {
            inner: Mutex::new(Some(Arc::new(Inner {
                store,
                layout,
                default: options.default(layout)?,
                cache: tx::Cache::default(),
            }))),
            events,
        })
    }
}

#[napi]
impl NativeStore {
    /// Closes the store: later calls fail with `ECLOSED`. Operations already running
    /// finish.
    #[napi]
    pub fn close(&self) {
        self.inner.lock().take();
    }

    /// Whether `close()` was called.
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.inner.lock().is_none()
    }

    /// The events reported since the last call, as a JSON array.
    #[napi]
    pub fn take_events(&self) -> Option<String> {
        let events = std::mem::take(&mut *self.events.lock());
        if events.is_empty() {
            return None;
        }
        Some(Value::Array(events.iter().map(event_json).collect()).to_string())
    }

    /// Counters and latency summaries, as JSON.
    #[napi]
    pub fn stats(&self) -> napi::Result<String> {
        let inner = self.inner()?;
        let mut stats = stats_json(&inner.store.stats());
        let (hits, misses) = inner.cache.counts();
        stats["cacheHits"] = json!(hits);
        stats["cacheMisses"] = json!(misses);
        Ok(stats.to_string())
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn load<'e>(&self, env: &'e Env) -> napi::Result<Object<'e>> {
        let inner = self.inner()?;
        run::spawn(env, move || load(&inner))
    }

    #[napi]
    pub fn load_sync(&self) -> napi::Result<String> {
        let inner = self.inner()?;
        run::block(|| load(&inner))
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn generation<'e>(&self, env: &'e Env) -> napi::Result<Object<'e>> {
        let inner = self.inner()?;
        run::spawn(env, move || Ok(inner.store.generation()?.to_string()))
    }

    #[napi]
    pub fn generation_sync(&self) -> napi::Result<String> {
        let inner = self.inner()?;
        run::block(|| Ok(inner.store.generation()?.to_string()))
    }

    /// Replaces the document; `if_generation` (when not negative) makes it a
    /// compare-and-swap (0: only if the file does not exist).
    #[napi(ts_return_type = "Promise<string>")]
    pub fn replace<'e>(
        &self,
        env: &'e Env,
        json: String,
        big: String,
        large: bool,
        if_generation: i64,
    ) -> napi::Result<Object<'e>> {
        let inner = self.inner()?;
        run::spawn(env, move || {
            replace(&inner, json, &big, large, if_generation)
        })
    }

    #[napi]
    pub fn replace_sync(
        &self,
        json: String,
        big: String,
        large: bool,
        if_generation: i64,
    ) -> napi::Result<String> {
        let inner = self.inner()?;
        run::block(|| replace(&inner, json, &big, large, if_generation))
    }

    /// Starts an update (`kind` "update") or holds the lock alone (`kind` "lock").
    /// `cached` is the token of the document `index.js` holds from its last commit
    /// (0: none); when the file still holds exactly that document, the transaction
    /// has no snapshot and JavaScript uses its copy.
    #[napi(ts_return_type = "Promise<NativeTx>")]
    pub fn begin<'e>(&self, env: &'e Env, kind: String, cached: i64) -> napi::Result<Object<'e>> {
        let inner = self.inner()?;
        let kind = parse_kind(&kind)?;
        let (settle, promise) = run::Settle::new(env)?;
        tx::begin(inner, kind, cached, Reply::Promise(settle))?;
        Ok(promise)
    }

    #[napi]
    pub fn begin_sync(&self, kind: String, cached: i64) -> napi::Result<NativeTx> {
        let inner = self.inner()?;
        let kind = parse_kind(&kind)?;
        let (reply, receiver) = Reply::block();
        tx::begin(inner, kind, cached, reply)?;
        tx::wait(&receiver)
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn check<'e>(&self, env: &'e Env) -> napi::Result<Object<'e>> {
        let inner = self.inner()?;
        run::spawn(env, move || {
            Ok(check_json(&inner.store.check()?).to_string())
        })
    }

    #[napi]
    pub fn check_sync(&self) -> napi::Result<String> {
        let inner = self.inner()?;
        run::block(|| Ok(check_json(&inner.store.check()?).to_string()))
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn recover<'e>(&self, env: &'e Env) -> napi::Result<Object<'e>> {
        let inner = self.inner()?;
        run::spawn(env, move || recover(&inner))
    }

    #[napi]
    pub fn recover_sync(&self) -> napi::Result<String> {
        let inner = self.inner()?;
        run::block(|| recover(&inner))
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn backups<'e>(&self, env: &'e Env) -> napi::Result<Object<'e>> {
        let inner = self.inner()?;
        run::spawn(env, move || {
            Ok(backups_json(&inner.store.backups()?).to_string())
        })
    }

    #[napi]
    pub fn backups_sync(&self) -> napi::Result<String> {
        let inner = self.inner()?;
        run::block(|| Ok(backups_json(&inner.store.backups()?).to_string()))
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn restore<'e>(&self, env: &'e Env, generation: i64) -> napi::Result<Object<'e>> {
        let inner = self.inner()?;
        let generation = unsigned(generation, "generation")?;
        run::spawn(env, move || {
            Ok(inner.store.restore(generation)?.to_string())
        })
    }

    #[napi]
    pub fn restore_sync(&self, generation: i64) -> napi::Result<String> {
        let inner = self.inner()?;
        let generation = unsigned(generation, "generation")?;
        run::block(|| Ok(inner.store.restore(generation)?.to_string()))
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn history<'e>(&self, env: &'e Env) -> napi::Result<Object<'e>> {
        let inner = self.inner()?;
        run::spawn(env, move || history(&inner))
    }

    #[napi]
    pub fn history_sync(&self) -> napi::Result<String> {
        let inner = self.inner()?;
        run::block(|| history(&inner))
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn diff<'e>(&self, env: &'e Env, from: i64, to: i64) -> napi::Result<Object<'e>> {
        let inner = self.inner()?;
        let (from, to) = (unsigned(from, "from")?, unsigned(to, "to")?);
        run::spawn(env, move || diff(&inner, from, to))
    }

    #[napi]
    pub fn diff_sync(&self, from: i64, to: i64) -> napi::Result<String> {
        let inner = self.inner()?;
        let (from, to) = (unsigned(from, "from")?, unsigned(to, "to")?);
        run::block(|| diff(&inner, from, to))
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn document_at<'e>(&self, env: &'e Env, generation: i64) -> napi::Result<Object<'e>> {
        let inner = self.inner()?;
        let generation = unsigned(generation, "generation")?;
        run::spawn(env, move || document_at(&inner, generation))
    }

    #[napi]
    pub fn document_at_sync(&self, generation: i64) -> napi::Result<String> {
        let inner = self.inner()?;
        let generation = unsigned(generation, "generation")?;
        run::block(|| document_at(&inner, generation))
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn info<'e>(&self, env: &'e Env) -> napi::Result<Object<'e>> {
        let inner = self.inner()?;
        run::spawn(env, move || Ok(info_json(&inner.store.info()?).to_string()))
    }

    #[napi]
    pub fn info_sync(&self) -> napi::Result<String> {
        let inner = self.inner()?;
        run::block(|| Ok(info_json(&inner.store.info()?).to_string()))
    }
}

impl NativeStore {
    fn inner(&self) -> napi::Result<Arc<Inner>> {
        self.inner.lock().clone().ok_or_else(|| {
            Failure::binding(
                "ECLOSED",
                "this store is closed".into(),
                "open the state file again with open()",
            )
            .into_napi()
        })
    }
}

fn parse_kind(kind: &str) -> napi::Result<Kind> {
    match kind {
        "update" => Ok(Kind::Update),
        "lock" => Ok(Kind::Lock),
        other => {
            Err(Failure::type_error(format!("unknown transaction kind {other:?}")).into_napi())
        }
    }
}

fn unsigned(n: i64, what: &str) -> napi::Result<u64> {
    u64::try_from(n).map_err(|_| {
        Failure::range_error(format!("{what} must be a generation (0 or more), not {n}"))
            .into_napi()
    })
}

fn load(inner: &Inner) -> Outcome {
    let snap = inner.store.load()?;
    Ok(convert::snapshot(&snap.state, snap.generation))
}

fn replace(inner: &Inner, json: String, big: &str, large: bool, if_generation: i64) -> Outcome {
    let (doc, _) = convert::document(json, big, large, inner.layout)?;
    let generation = match u64::try_from(if_generation) {
        Ok(expected) => inner.store.replace_if(expected, doc)?,
        Err(_) => inner.store.replace(doc)?,
    };
    Ok(generation.to_string())
}

fn recover(inner: &Inner) -> Outcome {
    Ok(match inner.store.recover()? {
        Some(event) => event_json(&event),
        None => Value::Null,
    }
    .to_string())
}

fn history(inner: &Inner) -> Outcome {
    // As a snapshot (`{generation, big, value}`), so that `index.js` serves the
    // integers no double holds, in snapshots and patches, as the BigInts they are.
    let entries: Vec<Value> = inner.store.history()?.iter().map(history_json).collect();
    Ok(convert::snapshot_value(&Value::Array(entries), 0))
}

fn diff(inner: &Inner, from: u64, to: u64) -> Outcome {
    let patch = inner.store.diff(from, to)?;
    let patch = serde_json::to_value(&patch).expect("invariant: a patch always serializes");
    Ok(convert::snapshot_value(&patch, to))
}

fn document_at(inner: &Inner, generation: u64) -> Outcome {
    let doc = inner.store.document_at(generation)?;
    Ok(convert::snapshot_value(&doc, generation))
}

fn time(t: SystemTime) -> Value {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!(ms)
}

pub(crate) fn event_json(e: &Event) -> Value {
    match e {
        Event::Recovered {
            path,
            damage,
            quarantined,
            restored_from,
            rebuilt_from,
            generation,
        } => json!({
            "type": "recovered",
            "path": path.display().to_string(),
            "damage": damage,
            "quarantined": quarantined.display().to_string(),
            "restoredFrom": restored_from,
            "rebuiltFrom": rebuilt_from,
            "generation": generation,
            "message": e.to_string(),
        }),
        Event::Undeleted {
            path,
            known,
            restored_from,
            rebuilt_from,
            source,
            journal,
            quarantined,
            generation,
        } => json!({
            "type": "undeleted",
            "path": path.display().to_string(),
            "known": known,
            "restoredFrom": restored_from,
            "rebuiltFrom": rebuilt_from,
            "source": source.name(),
            "journal": journal.map(|(first, last)| [first, last]),
            "quarantined": quarantined.as_ref().map(|q| q.display().to_string()),
            "generation": generation,
            "message": e.to_string(),
        }),
        Event::Quarantined {
            path,
            damage,
            quarantined,
            generation,
        } => json!({
            "type": "quarantined",
            "path": path.display().to_string(),
            "damage": damage,
            "quarantined": quarantined.display().to_string(),
            "generation": generation,
            "message": e.to_string(),
        }),
        Event::DamageNotRepaired {
            path,
            damage,
            because,
            served,
            rebuilt_from,
        } => json!({
            "type": "damageNotRepaired",
            "path": path.display().to_string(),
            "damage": damage,
            "because": because,
            "served": served,
            "rebuiltFrom": rebuilt_from,
            "message": e.to_string(),
        }),
        Event::Adopted { path, generation } => json!({
            "type": "adopted",
            "path": path.display().to_string(),
            "generation": generation,
            "message": e.to_string(),
        }),
        Event::ExternalChange { path, generation } => json!({
            "type": "externalChange",
            "path": path.display().to_string(),
            "generation": generation,
            "message": e.to_string(),
        }),
        Event::SpecialFilesystem { path, kind } => json!({
            "type": "specialFilesystem",
            "path": path.display().to_string(),
            "kind": kind,
            "message": e.to_string(),
        }),
        Event::BookkeepingFailed {
            path,
            generation,
            what,
            error,
        } => json!({
            "type": "bookkeepingFailed",
            "path": path.display().to_string(),
            "generation": generation,
            "what": what,
            "error": error,
            "message": e.to_string(),
        }),
        other => json!({ "type": "other", "message": other.to_string() }),
    }
}

fn latency_json(l: &Latency) -> Value {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    json!({
        "count": l.count,
        "totalMs": ms(l.total),
        "meanMs": ms(l.mean()),
        "p50Ms": ms(l.quantile(0.5)),
        "p99Ms": ms(l.quantile(0.99)),
        "maxMs": ms(l.max),
    })
}

fn stats_json(s: &Stats) -> Value {
    json!({
        "commits": s.commits,
        "failures": s.failures,
        "recoveries": s.recoveries,
        "externalChanges": s.external_changes,
        "lockWaits": latency_json(&s.lock_waits),
        "fsync": latency_json(&s.fsync),
        "commit": latency_json(&s.commit),
    })
}

fn paths(list: &[std::path::PathBuf]) -> Value {
    list.iter().map(|p| p.display().to_string()).collect()
}

fn check_json(r: &CheckReport) -> Value {
    json!({
        "ok": r.is_ok(),
        "path": r.path.display().to_string(),
        "exists": r.exists,
        "generation": r.generation,
        "format": r.format.map(|f| f.name()),
        "external": r.external,
        "problems": r.problems,
        "backupsValid": r.backups_valid,
        "backupsDamaged": r.backups_damaged.iter()
            .map(|(p, why)| json!({ "path": p.display().to_string(), "reason": why }))
            .collect::<Vec<_>>(),
        "foreign": paths(&r.foreign),
        "quarantined": paths(&r.quarantined),
    })
}

fn backups_json(b: &BackupList) -> Value {
    json!({
        "backups": b.backups.iter().map(|b| json!({
            "generation": b.generation,
            "path": b.path.display().to_string(),
            "size": b.size,
            "committedMs": time(b.committed),
        })).collect::<Vec<_>>(),
        "foreign": paths(&b.foreign),
    })
}

fn settings_json(s: &Settings) -> Value {
    json!({
        "format": s.format.name(),
        "schema": s.schema,
        "backups": { "keep": s.backups.keep, "hourly": s.backups.hourly, "daily": s.backups.daily },
        "history": { "keep": s.history.keep, "maxPatchBytes": s.history.max_patch_bytes },
        "lockTimeoutMs": s.lock_timeout_ms,
        "maxBytes": s.max_bytes,
        "minFreeBytes": s.min_free_bytes,
        "recovery": s.recovery,
    })
}

fn info_json(i: &Info) -> Value {
    json!({
        "path": i.path.display().to_string(),
        "realPath": i.real_path.display().to_string(),
        "exists": i.exists,
        // The state file was deleted (its sidecar shows commits): as the CLI's `--json`.
        "deleted": i.deleted.is_some(),
        "generation": i.generation,
        "format": i.format.map(|f| f.name()),
        "size": i.size,
        "modifiedMs": i.modified.map(time),
        "lastWriter": i.last_writer.as_ref().map(|(w, t)| json!({
            "pid": w.pid, "host": w.host, "user": w.user, "command": w.command, "time": t,
        })),
        "backups": backups_json(&BackupList { backups: i.backups.clone(), ..Default::default() })["backups"],
        "lockHolder": i.lock_holder.as_ref().map(holder_json),
        "settings": settings_json(&i.settings),
    })
}

fn history_json(e: &HistoryEntry) -> Value {
    let change = match &e.change {
        Change::Commit => json!({ "type": "commit" }),
        Change::External => json!({ "type": "external" }),
        Change::Restore { from } => json!({ "type": "restore", "from": from }),
        Change::Recovery { quarantined, from } => json!({
            "type": "recovery",
            "from": from,
            "quarantined": quarantined.as_ref().map(|q| q.display().to_string()),
        }),
        Change::Damaged { reason } => json!({ "type": "damaged", "reason": reason }),
        other => json!({ "type": format!("{other:?}").to_lowercase() }),
    };
    json!({
        "generation": e.generation,
        "time": e.time,
        "writer": e.writer.as_ref().map(|w| json!({
            "pid": w.pid, "host": w.host, "user": w.user, "command": w.command,
        })),
        "change": change,
        "patch": e.patch,
        "snapshot": e.snapshot,
        "note": e.note,
        // 16 hex digits, as the CLI's `--json` and Python write it (a number would lose
        // bits past 2^53).
        "checksum": e.checksum.map(|c| format!("{c:016x}")),
    })
}
