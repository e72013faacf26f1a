//! The contenders: statesafe, the hand-written floor, the peer crates, SQLite and
//! the naive write. Each one performs one logical update per [`Updater::op`]: the
//! counter in the document goes up by one and the whole document is written again.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use rusqlite::Connection;

use crate::Result;
use crate::doc::{self, COUNTER_START, Doc, Template};

/// Every contender of the update section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// statesafe `Store<serde_json::Value>::update`.
    StatesafeValue,
    /// statesafe `Store<Doc>::update` (typed).
    StatesafeTyped,
    /// statesafe typed, with backups and history turned off.
    StatesafeLean,
    /// Hand-written temp + fsync + rename + directory fsync, bytes ready.
    Floor,
    /// The `atomic-write-file` crate.
    AtomicWriteFile,
    /// The `atomicwrites` crate.
    Atomicwrites,
    /// `tempfile::NamedTempFile::persist` with explicit fsyncs.
    Tempfile,
    /// SQLite, one row, WAL, synchronous=FULL.
    SqliteWal,
    /// SQLite, one row, rollback journal (DELETE), synchronous=FULL.
    SqliteDelete,
    /// `File::create` + write, no fsync: not crash-safe, for reference.
    Naive,
    /// statesafe `Store<Doc>::update` on a file in journal mode (the journal section).
    StatesafeJournal,
}

impl Kind {
    /// All contenders of the update section, in report order.
    pub const UPDATE: [Kind; 10] = [
        Kind::Floor,
        Kind::StatesafeLean,
        Kind::StatesafeTyped,
        Kind::StatesafeValue,
        Kind::AtomicWriteFile,
        Kind::Atomicwrites,
        Kind::Tempfile,
        Kind::SqliteWal,
        Kind::SqliteDelete,
        Kind::Naive,
    ];

    /// Short label for tables and the chart.
    pub fn label(self) -> &'static str {
        match self {
            Kind::StatesafeValue => "statesafe (Value)",
            Kind::StatesafeTyped => "statesafe (typed)",
            Kind::StatesafeLean => "statesafe (typed, lean)",
            Kind::Floor => "floor",
            Kind::AtomicWriteFile => "atomic-write-file",
            Kind::Atomicwrites => "atomicwrites",
            Kind::Tempfile => "tempfile persist",
            Kind::SqliteWal => "SQLite WAL",
            Kind::SqliteDelete => "SQLite DELETE",
            Kind::Naive => "naive (unsafe)",
            Kind::StatesafeJournal => "statesafe (journal)",
        }
    }

    /// Exactly what one update includes, for the report.
    pub fn describes(self) -> &'static str {
        match self {
            Kind::StatesafeValue => {
                "`Store<serde_json::Value>::update(|v| v[\"n\"] += 1)` with default options: \
                 as statesafe (typed), parsing into and serializing from `serde_json::Value`"
            }
            Kind::StatesafeTyped => {
                "`Store<Doc>::update(|d| d.n += 1)` with default options: lock (flock + \
                 holder record), read file + xattr, verify xxh3, **parse** into a \
                 `#[derive(Deserialize)]` struct, increment, **serialize** pretty, hard-link \
                 the outgoing version as a backup (default: keep 5), create temp, fchmod, \
                 set xattr, write, fsync, rename, fsync dir, hand the unlink of the backup \
                 leaving the window to the janitor thread, append a history entry (default: \
                 keep 1000; with a JSON patch when the document is at most 64 KiB), rewrite \
                 holder record, unlock"
            }
            Kind::StatesafeLean => {
                "as statesafe (typed), opened with `.backups(keep 0)` and `.history(keep 0)`: \
                 the write protocol alone"
            }
            Kind::Floor => {
                "hand-written, bytes ready: patch the counter digits in place (**no parse, no \
                 serialize, no lock, no read**), `open(O_CREAT|O_EXCL)` temp, write, fsync, \
                 rename, fsync of the (already open) directory"
            }
            Kind::AtomicWriteFile => {
                "`atomic-write-file` 0.3: patch counter, `AtomicWriteFile::open`, write, \
                 `commit()` (fsync, rename, fsync dir); no parse, no serialize, no lock"
            }
            Kind::Atomicwrites => {
                "`atomicwrites` 0.4: patch counter, `AtomicFile::write` (temp *directory* + \
                 file, write, fsync, rename, fsync of both directories, remove temp dir); no \
                 parse, no serialize, no lock"
            }
            Kind::Tempfile => {
                "`tempfile` 3: patch counter, `NamedTempFile::new_in(dir)`, write, \
                 `sync_all`, `persist`, open + fsync dir; no parse, no serialize, no lock"
            }
            Kind::SqliteWal => {
                "`rusqlite` (bundled SQLite), document as one BLOB row: patch counter, \
                 `UPDATE doc SET body=? WHERE id=1` (prepared, autocommit), \
                 `journal_mode=WAL`, `synchronous=FULL`; no JSON parse or serialize"
            }
            Kind::SqliteDelete => {
                "as SQLite WAL, with `journal_mode=DELETE` (rollback journal), \
                 `synchronous=FULL`"
            }
            Kind::StatesafeJournal => {
                "`Store<Doc>::update(|d| d.n += 1)` on a file in journal mode: one record \
                 appended and one `fdatasync` per commit"
            }
            Kind::Naive => {
                "`File::create` (truncate) + write, **no fsync, not atomic**: what many \
                 programs do; for reference only"
            }
        }
    }

    /// The file name this contender uses in its directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Kind::SqliteWal | Kind::SqliteDelete => "state.sqlite",
            _ => "state.json",
        }
    }
}

/// One contender, set up on its own file: `op` performs one durable update.
pub trait Updater {
    /// One update: the counter goes up by one and the document is written.
    fn op(&mut self) -> Result<()>;
    /// The counter as it is on disk now (a check that the updates happened).
    fn on_disk(&self) -> Result<u64>;
}

/// Sets up `kind` in `dir` (created) with `doc` as its first content.
pub fn setup(kind: Kind, dir: &Path, doc: &Doc) -> Result<Box<dyn Updater>> {
    fs::create_dir_all(dir)?;
    let path = dir.join(kind.file_name());
    let template = Template::new(doc);
    Ok(match kind {
        Kind::StatesafeValue => {
            let store = statesafe::Store::<serde_json::Value>::open(&path)?;
            store.replace(serde_json::from_slice(&template.bytes)?)?;
            Box::new(StatesafeValue { store })
        }
        Kind::StatesafeTyped => {
            let store = statesafe::Store::<Doc>::open(&path)?;
            store.replace(doc.clone())?;
            Box::new(StatesafeTyped { store })
        }
        Kind::StatesafeLean => {
            let store = lean_store(&path)?;
            store.replace(doc.clone())?;
            Box::new(StatesafeTyped { store })
        }
        Kind::Floor => Box::new(Floor::new(path, template)?),
        Kind::AtomicWriteFile => Box::new(Peer::new(kind, path, template)?),
        Kind::Atomicwrites => Box::new(Peer::new(kind, path, template)?),
        Kind::Tempfile => Box::new(Peer::new(kind, path, template)?),
        Kind::Naive => Box::new(Peer::new(kind, path, template)?),
        // For `child profile` (the journal section measures its own stores).
        Kind::StatesafeJournal => {
            let _ = fs::remove_file(&path);
            let _ = fs::remove_dir_all(dir.join(".state.json.statesafe"));
            let store = statesafe::Store::<Doc>::open(&path)?;
            let settings = statesafe::Settings {
                format: statesafe::Format::Journal,
                ..statesafe::Settings::default()
            };
            store.create_with(&settings, doc.clone())?;
            Box::new(StatesafeTyped { store })
        }
        Kind::SqliteWal | Kind::SqliteDelete => Box::new(Sqlite::new(kind, &path, template)?),
    })
}

/// A typed store with backups and history turned off: the write protocol alone.
pub fn lean_store(path: &Path) -> Result<statesafe::Store<Doc>> {
    let backups = statesafe::BackupPolicy {
        keep: 0,
        hourly: 0,
        daily: 0,
    };
    let history = statesafe::HistoryPolicy {
        keep: 0,
        ..Default::default()
    };
    Ok(statesafe::Store::<Doc>::options()
        .backups(backups)
        .history(history)
        .open(path)?)
}

struct StatesafeValue {
    store: statesafe::Store<serde_json::Value>,
}

impl Updater for StatesafeValue {
    fn op(&mut self) -> Result<()> {
        self.store.update(|v| {
            let n = v["n"].as_u64().expect("invariant: the counter is a number");
            v["n"] = (n + 1).into();
        })?;
        Ok(())
    }

    fn on_disk(&self) -> Result<u64> {
        self.store.get()?["n"]
            .as_u64()
            .ok_or_else(|| "no counter".into())
    }
}

struct StatesafeTyped {
    store: statesafe::Store<Doc>,
}

impl Updater for StatesafeTyped {
    fn op(&mut self) -> Result<()> {
        self.store.update(|d| d.n += 1)?;
        Ok(())
    }

    fn on_disk(&self) -> Result<u64> {
        Ok(self.store.get()?.n)
    }
}

fn counter_in_file(path: &Path) -> Result<u64> {
    let bytes = fs::read(path)?;
    doc::read_counter(&bytes).ok_or_else(|| format!("no counter in `{}`", path.display()).into())
}

/// The floor: the fewest system calls that make a durable atomic replace.
pub struct Floor {
    dir: File,
    path: PathBuf,
    temp: PathBuf,
    template: Template,
    n: u64,
}

impl Floor {
    /// Writes the first version of `path`.
    pub fn new(path: PathBuf, template: Template) -> Result<Floor> {
        let parent = path.parent().expect("invariant: a file in a directory");
        let mut floor = Floor {
            dir: File::open(parent)?,
            temp: parent.join(".floor.tmp"),
            path,
            template,
            n: COUNTER_START,
        };
        floor.write()?;
        Ok(floor)
    }

    fn write(&mut self) -> Result<()> {
        durable_replace(&self.dir, &self.temp, &self.path, &self.template.bytes)
    }
}

/// Temp write + fsync + rename + directory fsync; `dir` is the open directory.
pub fn durable_replace(dir: &File, temp: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(temp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(temp, path)?;
    dir.sync_all()?;
    Ok(())
}

impl Updater for Floor {
    fn op(&mut self) -> Result<()> {
        self.n += 1;
        self.template.set_counter(self.n);
        self.write()
    }

    fn on_disk(&self) -> Result<u64> {
        counter_in_file(&self.path)
    }
}

/// The peer crates and the naive write: bytes ready, counter patched in place.
struct Peer {
    kind: Kind,
    path: PathBuf,
    template: Template,
    n: u64,
}

impl Peer {
    fn new(kind: Kind, path: PathBuf, template: Template) -> Result<Peer> {
        let mut peer = Peer {
            kind,
            path,
            template,
            n: COUNTER_START,
        };
        peer.write()?;
        Ok(peer)
    }

    fn write(&mut self) -> Result<()> {
        let bytes = &self.template.bytes;
        match self.kind {
            Kind::AtomicWriteFile => {
                let mut f = atomic_write_file::AtomicWriteFile::open(&self.path)?;
                f.write_all(bytes)?;
                f.commit()?;
            }
            Kind::Atomicwrites => {
                let f = atomicwrites::AtomicFile::new(&self.path, atomicwrites::AllowOverwrite);
                f.write(|f| f.write_all(bytes))?;
            }
            Kind::Tempfile => {
                let dir = self
                    .path
                    .parent()
                    .expect("invariant: a file in a directory");
                let mut f = tempfile::NamedTempFile::new_in(dir)?;
                f.write_all(bytes)?;
                f.as_file().sync_all()?;
                f.persist(&self.path)?;
                File::open(dir)?.sync_all()?;
            }
            Kind::Naive => {
                let mut f = File::create(&self.path)?;
                f.write_all(bytes)?;
            }
            _ => unreachable!("not a peer: {:?}", self.kind),
        }
        Ok(())
    }
}

impl Updater for Peer {
    fn op(&mut self) -> Result<()> {
        self.n += 1;
        self.template.set_counter(self.n);
        self.write()
    }

    fn on_disk(&self) -> Result<u64> {
        counter_in_file(&self.path)
    }
}

/// Opens (creating) the one-row SQLite database with the given journal mode and
/// `synchronous=FULL`, and a busy timeout for the contention section.
pub fn sqlite_open(kind: Kind, path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    let mode = match kind {
        Kind::SqliteWal => "WAL",
        Kind::SqliteDelete => "DELETE",
        _ => unreachable!("not SQLite: {kind:?}"),
    };
    let got: String = conn.query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))?;
    if !got.eq_ignore_ascii_case(mode) {
        return Err(format!("SQLite refused journal_mode={mode} (got {got})").into());
    }
    conn.execute_batch("PRAGMA synchronous=FULL;")?;
    conn.busy_timeout(std::time::Duration::from_secs(60))?;
    Ok(conn)
}

/// Creates (or resets) the one-row table holding `bytes`.
pub fn sqlite_reset(conn: &Connection, bytes: &[u8]) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS doc (id INTEGER PRIMARY KEY, body BLOB NOT NULL)",
    )?;
    conn.execute(
        "INSERT INTO doc (id, body) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET body = excluded.body",
        [bytes],
    )?;
    Ok(())
}

/// The counter in the SQLite row.
pub fn sqlite_counter(conn: &Connection) -> Result<u64> {
    let body: Vec<u8> = conn.query_row("SELECT body FROM doc WHERE id = 1", [], |r| r.get(0))?;
    doc::read_counter(&body).ok_or_else(|| "no counter in the SQLite row".into())
}

struct Sqlite {
    conn: Connection,
    template: Template,
    n: u64,
}

impl Sqlite {
    fn new(kind: Kind, path: &Path, template: Template) -> Result<Sqlite> {
        let conn = sqlite_open(kind, path)?;
        sqlite_reset(&conn, &template.bytes)?;
        Ok(Sqlite {
            conn,
            template,
            n: COUNTER_START,
        })
    }
}

impl Updater for Sqlite {
    fn op(&mut self) -> Result<()> {
        self.n += 1;
        self.template.set_counter(self.n);
        let mut stmt = self
            .conn
            .prepare_cached("UPDATE doc SET body = ?1 WHERE id = 1")?;
        stmt.execute([&self.template.bytes[..]])?;
        Ok(())
    }

    fn on_disk(&self) -> Result<u64> {
        sqlite_counter(&self.conn)
    }
}
