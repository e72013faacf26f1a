//! A state in a PostgreSQL table: reads, locked read-modify-write in one database
//! transaction, compare-and-swap on the generation, backups and history as rows.
//!
//! A write, in order (one transaction): `BEGIN; SET LOCAL lock_timeout; SET LOCAL
//! application_name` (who holds the lock, for a waiter's error), `SET LOCAL
//! synchronous_commit` (at least `on`: [`SYNCHRONOUS_COMMIT`]), `SELECT … FOR UPDATE`
//! of the state's row (inserted first, with no document and the highest generation
//! of its kept backups and history, else 0, if the state has no row) and a look at
//! the state's lock row (held by `statesafe lock`), all in the first round trip; then
//! `UPDATE … WHERE generation = <the one read>`, the outgoing version into the backups
//! table, a history entry, the prunes and `COMMIT` in the second.
//! The row lock is released by the server when the transaction ends in any way:
//! commit, rollback, or the connection closing (a holder that dies frees it at once).
//! No lock or setting outlives a transaction, so it works through PgBouncer in
//! transaction mode. The statements are prepared once per connection at the protocol
//! level and bound with their values, the requests of each round trip pipelined
//! ([`Remote::lock_protocol`]); where a pooler moves the connection between server
//! sessions (found out before anything is locked, or said by the URL's
//! `prepare=sql`), they are SQL-level prepared statements named by the hash of
//! their text, prepared on a server session the first time a transaction finds that
//! session without it (see [`Write`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{NoTls, Row, SimpleQueryMessage};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::address::Address;
use super::client::{Client, ConnectError, Request};
use super::sql::{self, Names};
use super::tls::Tls;
use crate::backup::{self, BackupInfo, BackupList};
use crate::error::{CommitLost, Error, Result};
use crate::events::Event;
use crate::format::{self, Writer};
use crate::history::{self, Change, HistoryEntry};
use crate::lock::Holder;
use crate::recover::{CheckReport, Info};
use crate::settings::{Format, RecoveryPolicy, Settings};
use crate::store::{Config, Snapshot, Store, is_damage};
use crate::transaction::now_rfc3339;
use crate::validate;

/// The backend of one remote state: its address and a pool of connections (one per
/// concurrent transaction of this store; idle ones are kept for the next).
pub(crate) struct Remote {
    address: Address,
    names: Names,
    pool: Mutex<Vec<Client>>,
    /// Transactions send SQL-level `EXECUTE`s ([`Write`]) rather than protocol-level
    /// prepared statements: the URL says `prepare=sql`, or a transaction found its
    /// connection's statements missing from its server session (a pooler).
    sql_prepare: AtomicBool,
    /// Writes over a damaged row whose `COMMIT` lost its answer while the server could
    /// not be asked: the transaction's id and the [`Event::Quarantined`] due if it
    /// committed, settled at the next read or transaction ([`Remote::settle_unsettled`]).
    unsettled: Mutex<Vec<(i64, Event)>>,
    /// `unsettled` is not empty (so that reads and transactions skip its lock).
    any_unsettled: AtomicBool,
    /// The settings text of the state's row as this store last applied it (at open,
    /// then under the row lock of each transaction: [`Remote::refresh_settings`]).
    settings_seen: Mutex<Option<String>>,
}

/// What the server says of a transaction whose `COMMIT` lost its answer
/// ([`Remote::resolve`]).
#[derive(Debug, Clone, Copy)]
enum Fate {
    Committed,
    Aborted,
    /// `txid_status` is NULL: the id is older than the server's commit log keeps.
    Forgotten,
}

/// The id in a quarantined row's name, `URL#quarantine=ID` ([`Remote::quarantine_row`]).
fn quarantine_id(name: &Path) -> Option<&str> {
    name.to_str()?.rsplit_once("#quarantine=").map(|(_, id)| id)
}

/// The current row, as read.
struct Current {
    generation: u64,
    /// `None`: the state has no document (its row only holds settings, or is new).
    document: Option<String>,
    checksum: Option<i64>,
    written_at: Option<SystemTime>,
    writer: Option<String>,
    /// The locking transaction's id (`txid_current()`), read with the row lock: after
    /// a connection lost during `COMMIT`, `txid_status` of it says what happened.
    xid: Option<i64>,
    /// Made by this transaction (or one before it that recorded only settings), with
    /// no version yet: its generation is where the state's first version goes on from.
    fresh: bool,
    /// A row that reads as never written (no document, no writer, generation 0: as a
    /// row that only holds settings) for a state whose history or backups hold
    /// versions: a committed row changed by hand, which is damage (red15). Asked only
    /// of such rows.
    kept_versions: bool,
    /// The newest generation the state's history holds (and, under the lock, the
    /// backups listed there), read with the row: a row with a document below it is
    /// an older version put back by hand, which is damage (review19). `None` for a
    /// backup row, and where a row is read as the version of its own generation.
    known: Option<u64>,
}

impl Current {
    /// Whether the state has a version: a document, a writer or a generation above 0
    /// (a row statesafe committed; its document NULL only by a hand edit, which is
    /// damage: see [`Remote::verified_text`]).
    fn exists(&self) -> bool {
        self.document.is_some()
            || self.writer.is_some()
            || (self.generation > 0 && !self.fresh)
            || self.kept_versions
    }

    /// Whether it reads as a row that only holds settings, or a new one (no version):
    /// then whether the state has versions kept elsewhere tells it from damage.
    fn reads_unwritten(&self) -> bool {
        self.document.is_none() && self.writer.is_none() && self.generation == 0
    }

    /// Whether it is marked as a row that only holds settings for a state whose
    /// earlier life (its row deleted by hand) left versions up to its generation kept
    /// ([`new_life_mark`]): then whether the state has versions kept above that tells
    /// it from damage.
    fn marks_new_life(&self) -> bool {
        self.document.is_none()
            && self
                .writer
                .as_deref()
                .is_some_and(|w| w == new_life_mark(self.generation))
    }
}

/// What `save_settings` writes in the `writer` column of the row it makes for a state
/// whose earlier life (its row deleted by hand) left versions kept, up to
/// `generation`: the row stays at that generation, where the new life's first version
/// goes on from, and this marks it as a row that only holds settings. A row at a
/// generation above 0 with no document is otherwise damage (hist14), and one at 0
/// while versions are kept too (red15): a row that only ever held settings has no
/// versions kept, but a state reset by hand has its earlier life's (review15).
///
/// Only statesafe writes it, and never on a row with a version: every commit writes
/// the writer's identity over it. Columns set to NULL by hand (a document, checksum
/// and writer) cannot make it, so they cannot make a committed row pass as one not
/// yet written; and versions kept above the mark (the row brought back from an
/// older copy of the table) make it damage.
fn new_life_mark(generation: u64) -> String {
    format!("{{\"new_life_above\":{generation}}}")
}

/// A row's checksum: the xxh3-64 of its document's UTF-8 bytes seeded with the
/// xxh3-64 of its state's name seeded with its generation, so that a generation
/// changed by hand fails it as a changed document does, and so does another state's
/// row copied over (review19). Rows written by earlier builds carry
/// [`row_checksum_unnamed`] or the unseeded xxh3-64, still accepted (see
/// [`Remote::verified_text`]) until their next write rewrites them.
fn row_checksum(state: &str, document: &str, generation: u64) -> i64 {
    let seed = xxhash_rust::xxh3::xxh3_64_with_seed(state.as_bytes(), generation);
    xxhash_rust::xxh3::xxh3_64_with_seed(document.as_bytes(), seed) as i64
}

/// A row's checksum as builds before review19 wrote it: seeded with the generation
/// alone (so another state's row at the same generation verified).
fn row_checksum_unnamed(document: &str, generation: u64) -> i64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(document.as_bytes(), generation) as i64
}

const SELECT_CURRENT: &str = "SELECT generation, document, checksum, \
    (extract(epoch FROM written_at) * 1000000)::bigint, writer";

impl Remote {
    /// Parses the URL, connects, and makes sure the tables are there and as
    /// statesafe made them: the remote and its first connection.
    fn connected(url: &str) -> Result<(Remote, Client)> {
        let address = Address::parse(url)?;
        // Without `schema=`, the names are qualified with the schema resolved below,
        // before any statement names a table; until then with the empty name, which
        // no statement would take (a zero-length identifier is an error).
        let names = Names::new(address.schema.as_deref().unwrap_or(""), &address.table);
        let sql_prepare = address.sql_prepare;
        let mut remote = Remote {
            address,
            names,
            pool: Mutex::new(Vec::new()),
            sql_prepare: AtomicBool::new(sql_prepare),
            unsettled: Mutex::new(Vec::new()),
            any_unsettled: AtomicBool::new(false),
            settings_seen: Mutex::new(None),
        };
        let mut client = remote.connect()?;
        if remote.address.schema.is_none() {
            let schema = remote.default_schema(&mut client)?;
            remote.names = Names::new(&schema, &remote.address.table);
        }
        remote.ensure_tables(&mut client)?;
        Ok((remote, client))
    }

    /// The schema of a URL without `schema=`, resolved once, at open, and named in
    /// every statement of the store: the first schema of the role's default
    /// `search_path` that holds a table of the main table's name (where an
    /// unqualified name found it before review19pg, so states made then stay where
    /// they are), else the first that exists (`current_schema()`, where `CREATE
    /// TABLE` makes it). Asked in a transaction of its own after `SET LOCAL
    /// search_path TO DEFAULT`: the value the server session started with (the
    /// server's, database's and role's settings, and the URL's `options`), not one
    /// another client of a pooled session set (PgBouncer in transaction mode resets
    /// nothing), and nothing is left set on the session. Implicitly searched schemas
    /// (the session's temporary schema, `pg_catalog`) are not looked in: a temporary
    /// table named like ours never stands in for it.
    fn default_schema(&self, client: &mut Client) -> Result<String> {
        let table = literal(&self.address.table);
        let asked = client.simple_query(&format!(
            "BEGIN; SET LOCAL search_path TO DEFAULT;
SELECT (SELECT s.name::text FROM unnest(current_schemas(false)) WITH ORDINALITY AS s(name, i)
        WHERE to_regclass(quote_ident(s.name) || '.' || quote_ident({table})) IS NOT NULL
        ORDER BY s.i LIMIT 1),
    current_schema()::text;
COMMIT"
        ));
        let messages = match asked {
            Ok(messages) => messages,
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK");
                return Err(self.error("find the default schema of", e));
            }
        };
        // BEGIN, SET, the SELECT's one row, COMMIT.
        let row = Locking::statements(&messages)
            .get(2)
            .and_then(|rows| rows.first().cloned())
            .unwrap_or_default();
        let schema = row.into_iter().flatten().next();
        let refused = |reason: String| {
            Error::Remote {
            path: self.display().to_path_buf(),
            op: "find the schema of the tables of".into(),
            reason,
            hint: "give the schema in the URL: `schema=NAME` (one every connection shares; `CREATE SCHEMA NAME` first if need be)".into(),
            source: None,
        }
        };
        match schema {
            None => Err(refused(
                "the URL names no schema, and the role's default `search_path` names none that exists".into(),
            )),
            Some(schema) if super::address::is_temporary_schema(&schema) => Err(refused(
                format!("the role's default `search_path` starts with its session's temporary schema: {}", super::address::temporary_schema_refused(&schema)),
            )),
            Some(schema) => Ok(schema),
        }
    }

    /// Parses the URL, connects, makes sure the tables are there and as statesafe
    /// made them, and reads the state's recorded settings.
    pub(crate) fn open(url: &str) -> Result<(Remote, Settings)> {
        let (remote, mut client) = Remote::connected(url)?;
        let row = client
            .query_typed_opt(
                &format!(
                    "SELECT settings FROM {} WHERE state = $1",
                    remote.names.main
                ),
                &[(&remote.address.state, Type::TEXT)],
            )
            .map_err(|e| remote.error("read the settings of", e))?;
        let settings = match row {
            Some(row) => {
                let text: String = row.get(0);
                let settings =
                    serde_json::from_str(&text).map_err(|e| remote.settings_damaged(&e))?;
                *remote.settings_seen.lock() = Some(text);
                settings
            }
            None => Settings::default(),
        };
        remote.give(client);
        Ok((remote, settings))
    }

    /// The URL without any password.
    pub(crate) fn display(&self) -> &Path {
        &self.address.display
    }

    /// A new connection, its whole start-up (TCP, TLS, authentication) bounded by
    /// `connect_timeout` per host of the URL, as libpq's (tokio-postgres's bounds
    /// only the TCP connect).
    fn connect(&self) -> Result<Client> {
        self.refuse_planted_sockets()?;
        let config = &self.address.config;
        let limit = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(10))
            .saturating_mul(config.get_hosts().len().max(1) as u32);
        let connected = match &self.address.tls {
            Tls::Off => Client::connect(config, NoTls, limit),
            Tls::On(tls) => Client::connect(config, tls.clone(), limit),
            Tls::Guarded(tls) => Client::connect(config, tls.clone(), limit),
        };
        let op = "connect to the server of";
        connected.map_err(|e| match e {
            ConnectError::Failed(ref e) if let Some(refusal) = super::startup::refused(e) => {
                Error::Unsafe {
                    path: self.display().to_path_buf(),
                    reason: format!(
                        "{refusal}: whatever listens at that address (another local user's program while the server is down, or a machine posing as the server) would collect it. Configure the server to ask for SCRAM (`password_encryption = scram-sha-256`, the role's password set again, `scram-sha-256` in pg_hba.conf), or connect with TLS and a verified certificate (`sslmode=verify-full` or `verify-ca` with `sslrootcert`)"
                    ),
                    what: crate::error::Unsafety::Planted,
                }
            }
            ConnectError::Failed(e) => self.error(op, e),
            ConnectError::TimedOut(limit) => Error::Remote {
                path: self.display().to_path_buf(),
                op: op.into(),
                reason: format!(
                    "the server did not finish the connection start-up (TLS, authentication) within {limit:?} (connect_timeout): something accepts connections at that address but does not answer"
                ),
                hint: "check that the URL's host and port are a PostgreSQL server's (or its pooler's) and that it is not hung; or raise `connect_timeout` in the URL".into(),
                source: None,
            },
            ConnectError::Runtime(e) => Error::Remote {
                path: self.display().to_path_buf(),
                op: op.into(),
                reason: format!("this process could not start the connection's I/O driver: {e}"),
                hint: "the process is out of file descriptors or threads; nothing was sent".into(),
                source: Some(Box::new(e)),
            },
        })
    }

    /// Over a Unix socket the client library answers the server's request for the
    /// password as it comes (clear text included; over TCP statesafe's connector
    /// refuses that without a verified certificate, `startup.rs`). A socket is only as
    /// trustworthy as the directory it is in: where other users can write (`/tmp`,
    /// where an upstream build puts its socket), one may plant a socket of their own
    /// while the server is down and collect the password (review19pg). So when a
    /// password would be sent, each Unix-socket host's directory must be writable by
    /// its owner alone, or sticky (others cannot rename or delete a socket there that
    /// is not theirs) with the server's socket belonging to root, the directory's
    /// owner, this user or the `postgres` account. Checked before every connection.
    fn refuse_planted_sockets(&self) -> Result<()> {
        let config = &self.address.config;
        if config.get_password().is_none() {
            return Ok(());
        }
        let unix =
            |h: &tokio_postgres::config::Host| matches!(h, tokio_postgres::config::Host::Unix(_));
        let hosts = config.get_hosts();
        if hosts.iter().any(unix) && (!hosts.iter().all(unix) || !config.get_hostaddrs().is_empty())
        {
            // TCP is guarded (no clear text or MD5 without a verified certificate)
            // only when every host is TCP (`address.rs`); a list that mixes the two, or
            // a Unix host with `hostaddr=` (the client library then connects over TCP),
            // would send it unguarded (review19c).
            return Err(Error::Unsafe {
                path: self.display().to_path_buf(),
                reason: "the URL mixes Unix-socket and TCP hosts (or gives a Unix-socket host a `hostaddr`), and a password would be sent: over TCP it is answered only to SCRAM or to a server whose certificate was verified, a guard that holds only when every host is TCP; give the Unix-socket hosts and the TCP hosts in separate URLs".into(),
                what: crate::error::Unsafety::Planted,
            });
        }
        let ports = config.get_ports();
        for (i, host) in config.get_hosts().iter().enumerate() {
            let tokio_postgres::config::Host::Unix(dir) = host else {
                continue;
            };
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432);
            if let Some(why) = planted_socket_risk(dir, port) {
                return Err(Error::Unsafe {
                    path: self.display().to_path_buf(),
                    reason: format!(
                        "the password is not sent over the Unix socket `{}`: {why}, so another local user may be listening there (a socket planted while the server is down collects the password); keep the server's socket in a directory only root, you or the `postgres` account can change (Debian's `/var/run/postgresql`), connect over TCP with a verified certificate, or use peer authentication (no password)",
                        dir.join(format!(".s.PGSQL.{port}")).display()
                    ),
                    what: crate::error::Unsafety::Planted,
                });
            }
        }
        Ok(())
    }

    /// A connection: an idle one of the pool, or a new one. The flag says it was
    /// idle (so a first failure may only mean the server closed it meanwhile).
    fn take(&self) -> Result<(Client, bool)> {
        loop {
            let pooled = self.pool.lock().pop();
            match pooled {
                Some(c) if c.is_closed() => continue,
                Some(c) => return Ok((c, true)),
                None => return Ok((self.connect()?, false)),
            }
        }
    }

    fn give(&self, mut client: Client) {
        let reset = RELEASE_QUERY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(reset) = reset
            && client.batch_execute(&reset).is_err()
        {
            return;
        }
        if !client.is_closed() {
            self.pool.lock().push(client);
        }
    }

    /// Runs `f` on a connection outside any transaction (a read). A pooled
    /// connection the server closed meanwhile is replaced once: nothing was done on it.
    fn read<R>(
        &self,
        op: &str,
        f: impl Fn(&mut Client) -> Result<R, postgres::Error>,
    ) -> Result<R> {
        let (mut client, pooled) = self.take()?;
        let mut result = f(&mut client);
        if pooled && result.as_ref().is_err_and(lost) {
            client = self.connect()?;
            result = f(&mut client);
        }
        match result {
            Ok(r) => {
                self.give(client);
                Ok(r)
            }
            Err(e) => Err(self.error(op, e)),
        }
    }

    fn ensure_tables(&self, client: &mut Client) -> Result<()> {
        type Found = (Vec<(i64, String, String)>, Vec<sql::Table>);
        let layout = |client: &mut Client| -> Result<Found> {
            let names: Vec<&str> = self.names.regclass.iter().map(String::as_str).collect();
            let rows = client
                .query_typed(sql::LAYOUT, &[(&names, Type::TEXT_ARRAY)])
                .map_err(|e| self.error("read the table layout of", e))?;
            let mut tables: Vec<sql::Table> = Vec::new();
            for r in &rows {
                let index = r.get::<_, i64>(0) as usize - 1;
                if !tables.iter().any(|t| t.index == index) {
                    tables.push(sql::Table {
                        index,
                        owner: r.get(3),
                        member: r.get(4),
                        persistence: r.get(5),
                        user: r.get(6),
                    });
                }
            }
            let columns = rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            Ok((columns, tables))
        };
        let (mut found, tables) = layout(client)?;
        // Tables of another role, unlogged or temporary ones, and another kind of
        // statesafe table under one of this URL's names are refused before anything
        // is made beside them.
        self.refuse_foreign(&tables)?;
        self.refuse_other_kinds(&found)?;
        // Made when any of the three is missing (`IF NOT EXISTS`: those there are
        // kept, and checked below); the quarantine alone may be there (made by a
        // recovery, or left when the others were dropped).
        let missing =
            |found: &[(i64, String, String)]| (1..=3).any(|i| !found.iter().any(|f| f.0 == i));
        if missing(&found) {
            if let Err(e) = client.batch_execute(&self.names.create()) {
                // Another client created them at the same moment: fine if they are there
                // now (checked below). The server answers a lost race with 23505 or
                // 42P07, or with 42710 when it lost on a table's row type (red12).
                let raced = matches!(
                    e.code(),
                    Some(c) if *c == SqlState::UNIQUE_VIOLATION
                        || *c == SqlState::DUPLICATE_TABLE
                        || *c == SqlState::DUPLICATE_OBJECT
                );
                let _ = client.batch_execute("ROLLBACK");
                if !raced {
                    return Err(self.error("create the tables of", e));
                }
            }
            let tables;
            (found, tables) = layout(client)?;
            self.refuse_foreign(&tables)?;
            self.refuse_other_kinds(&found)?;
        }
        let mut problems = Vec::new();
        for (i, columns) in sql::COLUMNS.iter().enumerate() {
            let table = &self.names.regclass[i];
            let here: Vec<&(i64, String, String)> =
                found.iter().filter(|f| f.0 == i as i64 + 1).collect();
            if here.is_empty() {
                if i != sql::QUARANTINE {
                    problems.push(format!("table {table} is missing"));
                }
                continue;
            }
            for (name, ty) in *columns {
                match here.iter().find(|f| f.1 == *name) {
                    None => problems.push(format!("{table} has no column `{name}`")),
                    Some(f) if f.2 != *ty => problems.push(format!(
                        "{table}.{name} is `{}`, statesafe made it `{ty}`",
                        f.2
                    )),
                    Some(_) => {}
                }
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::Remote {
            path: self.display().to_path_buf(),
            op: "use the tables of".into(),
            reason: format!(
                "they are not laid out as statesafe made them: {}",
                problems.join("; ")
            ),
            hint: "the tables were altered by hand, or the name is used by something else: restore the layout in docs/remote.md, or give another `table=` in the URL".into(),
            source: None,
        })
    }

    /// Refuses tables another role owns (one the current user is neither nor a member
    /// of: it reads every version written there, and may change or drop the rows, as
    /// the owner of a sidecar may; the file backend refuses that as [`Error::Unsafe`]),
    /// and tables that are not permanent (PostgreSQL empties an unlogged table in
    /// crash recovery, and drops a temporary one with its session: acknowledged
    /// writes gone either way).
    fn refuse_foreign(&self, tables: &[sql::Table]) -> Result<()> {
        if let Some(t) = tables.iter().find(|t| !t.member) {
            return Err(Error::Unsafe {
                path: self.display().to_path_buf(),
                reason: format!(
                    "table {} belongs to role `{}`, and `{}` is not that role or a member of it: its owner reads every version written there, and may change or drop the rows; if `{}` is your own owner role, make `{}` a member of it (`GRANT \"{}\" TO \"{}\"`)",
                    self.names.regclass[t.index], t.owner, t.user, t.owner, t.user, t.owner, t.user
                ),
                what: crate::error::Unsafety::Planted,
            });
        }
        if let Some(t) = tables.iter().find(|t| t.persistence != "p") {
            let table = &self.names.regclass[t.index];
            let (what, why, hint) = if t.persistence == "u" {
                (
                    "unlogged",
                    "PostgreSQL empties an unlogged table in crash recovery, and every acknowledged write with it",
                    format!(
                        "make the tables logged again: `ALTER TABLE {table} SET LOGGED` (and the same for each of the URL's other tables that is unlogged)"
                    ),
                )
            } else {
                (
                    "temporary",
                    "it is seen by one connection only and dropped when that connection closes",
                    "give a schema every connection shares (`schema=`)".to_string(),
                )
            };
            return Err(Error::Remote {
                path: self.display().to_path_buf(),
                op: "use the tables of".into(),
                reason: format!("table {table} is {what}: {why}"),
                hint,
                source: None,
            });
        }
        Ok(())
    }

    /// Refuses tables found under this URL's names with the layout of another kind of
    /// statesafe table ([`sql::other_kinds`]): another URL's tables.
    fn refuse_other_kinds(&self, found: &[(i64, String, String)]) -> Result<()> {
        let other = sql::other_kinds(found);
        if other.is_empty() {
            return Ok(());
        }
        let which: Vec<String> = other
            .iter()
            .map(|&(i, j)| {
                format!(
                    "{} (this URL's {}) has the layout of a statesafe {}",
                    self.names.regclass[i],
                    sql::KINDS[i],
                    sql::KINDS[j]
                )
            })
            .collect();
        Err(Error::Remote {
            path: self.display().to_path_buf(),
            op: "use the tables of".into(),
            reason: format!(
                "another URL's tables have this URL's table names: {}",
                which.join("; ")
            ),
            hint: format!(
                "a `table=` name ending with {} is another URL's table too (refused since review19pg; tables made under one before: rename that URL's three tables together, docs/remote.md); give this state another `table=` in the URL",
                sql::SUFFIXES.map(|s| format!("`{s}`")).join(", ")
            ),
            source: None,
        })
    }

    /// A client library error as the library's error, with a hint.
    fn error(&self, op: &str, e: postgres::Error) -> Error {
        let path = self.display().to_path_buf();
        let code = e.code().cloned();
        let (reason, hint) = match &code {
            Some(c) if *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => (
                "the server refused the credentials".to_string(),
                "give the password in PGPASSWORD or ~/.pgpass (mode 0600), never on the command line; check the user name in the URL".to_string(),
            ),
            Some(c) if *c == SqlState::INVALID_CATALOG_NAME => (
                "the database does not exist".to_string(),
                "create it (`createdb NAME`) or fix the database name in the URL".to_string(),
            ),
            Some(c) if *c == SqlState::QUERY_CANCELED
                && e.as_db_error().is_some_and(|d| d.message().contains("statement timeout")) => (
                "the server's statement_timeout cancelled the statement".to_string(),
                "nothing was committed by this call; the statement_timeout of the database or role (or `options=-c statement_timeout=…` in the URL) is shorter than this statement needs (statesafe adds the lock timeout to it for the wait for the lock): raise it, or keep the document smaller".to_string(),
            ),
            Some(c) if *c == SqlState::QUERY_CANCELED => (
                "the statement was cancelled (statement_timeout, or cancelled by an administrator)".to_string(),
                "nothing was committed by this call; run it again, or raise the server's statement_timeout".to_string(),
            ),
            Some(c) if *c == SqlState::PROGRAM_LIMIT_EXCEEDED || *c == SqlState::OUT_OF_MEMORY => (
                "the document is over the server's limits".to_string(),
                "nothing was committed; keep the document smaller (PostgreSQL holds at most 1 GB in one text value), or set `max_bytes` to refuse it earlier".to_string(),
            ),
            Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => (
                "the database user lacks a privilege".to_string(),
                "grant the user SELECT, INSERT, UPDATE, DELETE on the tables (and CREATE on the schema for the first use)".to_string(),
            ),
            Some(c) if c.code().starts_with("57P") || c.code().starts_with("08") => (
                "the server ended the connection (shut down, restarted, or the backend was terminated)".to_string(),
                "nothing was committed by this call; run it again once the server is up".to_string(),
            ),
            // The client's own errors have no public kind to match: only the text.
            None if chain_text(&e).contains("TLS") => (
                format!("the TLS connection could not be made: {}", chain_text(&e)),
                "the server does not offer TLS, or its certificate did not verify as `sslmode` asks; check `sslmode` and `sslrootcert` in the URL (docs/remote.md)".to_string(),
            ),
            None if format!("{e:#}").contains("password missing")
                || std::error::Error::source(&e).is_some_and(|c| c.to_string().contains("password missing")) => (
                "the server asks for a password, and none was given".to_string(),
                "give it in PGPASSWORD, in ~/.pgpass (mode 0600) or in a file named by `passfile=PATH` in the URL; never on the command line".to_string(),
            ),
            _ if lost(&e) => (
                "the connection to the server failed or was lost".to_string(),
                "check that the server runs and is reachable at the URL's host and port; nothing was committed by this call".to_string(),
            ),
            _ => (
                e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_string()),
                "nothing was committed by this call; see the server's message".to_string(),
            ),
        };
        let reason = match e.as_db_error() {
            Some(d) => format!("{reason} ({}: {})", d.code().code(), d.message()),
            None => reason,
        };
        Error::Remote {
            path,
            op: op.to_string(),
            reason,
            hint,
            source: Some(Box::new(e)),
        }
    }

    fn read_current(
        &self,
        client: &mut Client,
        lock: Option<bool>,
    ) -> Result<Option<Current>, postgres::Error> {
        let (xid, suffix) = match lock {
            None => ("", ""),
            Some(false) => (", txid_current()", " FOR UPDATE"),
            Some(true) => (", txid_current()", " FOR UPDATE NOWAIT"),
        };
        // The history's newest generation in the same statement (one index probe):
        // a row below it is an older version put back by hand (review19).
        let row = client.query_typed_opt(
            &format!(
                "{SELECT_CURRENT}, (SELECT max(generation) FROM {} WHERE state = $1){xid} \
                 FROM {} WHERE state = $1{suffix}",
                self.names.history, self.names.main
            ),
            &[(&self.address.state, Type::TEXT)],
        )?;
        row.map(|r| Current {
            generation: r.get::<_, i64>(0) as u64,
            document: r.get(1),
            checksum: r.get(2),
            written_at: r.get::<_, Option<i64>>(3).map(micros),
            writer: r.get(4),
            known: r.get::<_, Option<i64>>(5).map(|g| g as u64),
            xid: (r.len() > 6).then(|| r.get(6)),
            fresh: false,
            kept_versions: false,
        })
        .map(|mut cur| {
            if cur.reads_unwritten() {
                cur.kept_versions = self.has_kept_versions(client)?;
            }
            self.settle_new_life(client, &mut cur)?;
            Ok(cur)
        })
        .transpose()
    }

    /// A row marked as the start of a new life ([`new_life_mark`]): one not yet
    /// written (`fresh`, its mark no writer) when no backup or history row is above
    /// its generation, else damage (`kept_versions`: versions were committed above
    /// it, and the row was brought back over them). Other rows are left as they are.
    fn settle_new_life(
        &self,
        client: &mut Client,
        cur: &mut Current,
    ) -> Result<(), postgres::Error> {
        if !cur.marks_new_life() {
            return Ok(());
        }
        let row = client.query_typed_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE state = $1 AND generation > $2) \
                 OR EXISTS (SELECT 1 FROM {} WHERE state = $1 AND generation > $2)",
                self.names.history, self.names.backups
            ),
            &[
                (&self.address.state, Type::TEXT),
                (&(cur.generation as i64), Type::INT8),
            ],
        )?;
        if row.get(0) {
            cur.kept_versions = true;
        } else {
            cur.fresh = true;
            cur.writer = None;
        }
        Ok(())
    }

    /// Whether the state has history or backup rows (versions that a row reading as
    /// never written cannot have had: [`Current::kept_versions`]).
    fn has_kept_versions(&self, client: &mut Client) -> Result<bool, postgres::Error> {
        let row = client.query_typed_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE state = $1) \
                 OR EXISTS (SELECT 1 FROM {} WHERE state = $1)",
                self.names.history, self.names.backups
            ),
            &[(&self.address.state, Type::TEXT)],
        )?;
        Ok(row.get(0))
    }

    /// The document's text after its checksum verified: damage is a checksum that
    /// does not match (the row was changed by hand, or damaged).
    fn verified_text<'c>(&self, cur: &'c Current, what: &str) -> Result<Option<&'c str>> {
        let Some(doc) = cur.document.as_deref() else {
            if cur.kept_versions {
                return Err(Error::Corrupt {
                    path: self.display().to_path_buf(),
                    line: None,
                    column: None,
                    reason: format!(
                        "{what} reads as a state never written (no document, no writer, generation {}), but the state's history or backups hold versions above that generation: the row was changed outside statesafe, or damaged; `statesafe recover URL` quarantines it and restores the newest valid backup",
                        cur.generation
                    ),
                });
            }
            if cur.exists() {
                // Committed (it has a writer, or a generation: statesafe leaves a row
                // without a document only at generation 0, or within the transaction
                // that writes its first version), yet no document: never served as a
                // missing state (that would hand out the default, red13, hist14).
                return Err(Error::Corrupt {
                    path: self.display().to_path_buf(),
                    line: None,
                    column: None,
                    reason: format!(
                        "{what} (generation {}) has no document although it was committed: the row was changed outside statesafe, or damaged; `statesafe recover URL` quarantines it and restores the newest valid backup",
                        cur.generation
                    ),
                });
            }
            return Ok(None);
        };
        let sum = row_checksum(&self.address.state, doc, cur.generation);
        let sound = match cur.checksum {
            Some(recorded) if recorded == sum => true,
            // A row of an earlier build: seeded with the generation alone, or the
            // document's checksum alone.
            Some(recorded) => {
                recorded == row_checksum_unnamed(doc, cur.generation)
                    || recorded == format::checksum(doc.as_bytes()) as i64
            }
            None => false,
        };
        match cur.checksum {
            // Sound, but below a generation the history (or the backups) hold: an
            // older version put back by hand (a restore of the table from an older
            // dump), its newer acknowledged versions still kept there. Served as
            // current, it hid them, and the next write took generations they have.
            _ if sound && cur.known.is_some_and(|known| known > cur.generation) => {
                Err(Error::Corrupt {
                    path: self.display().to_path_buf(),
                    line: None,
                    column: None,
                    reason: format!(
                        "{what} holds generation {} but the state's history holds generation {}: an older version was put back by hand (a restore of the table from an older copy?), over the versions committed after it; `statesafe recover URL` quarantines it and restores the newest version (to go back to an older version, `statesafe restore URL --generation G` after that)",
                        cur.generation,
                        cur.known.unwrap_or_default()
                    ),
                })
            }
            _ if sound => Ok(Some(doc)),
            recorded => Err(Error::Corrupt {
                path: self.display().to_path_buf(),
                line: None,
                column: None,
                reason: format!(
                    "the checksum of {what} (generation {}) does not match its document and generation: recorded {recorded:?}, computed {sum}; the row was changed outside statesafe, or damaged; `statesafe recover URL` quarantines it and restores the newest valid backup",
                    cur.generation
                ),
            }),
        }
    }

    /// The row's state after its checksum and its document verified (`None`: the
    /// row holds no document); `Err` with damage ([`is_damage`]) when either fails.
    fn verified_state<T: Serialize + DeserializeOwned>(
        &self,
        store: &Store<T>,
        row: &Current,
        what: &str,
    ) -> Result<Option<T>> {
        match self.verified_text(row, what)? {
            Some(text) => Ok(Some(
                store
                    .verify_bytes(text.as_bytes(), row.generation, true, false)?
                    .state,
            )),
            None => Ok(None),
        }
    }

    /// A backup row's state after its checksum and document verified.
    fn verified_backup<T: Serialize + DeserializeOwned>(
        &self,
        store: &Store<T>,
        b: &Current,
    ) -> Result<T> {
        Ok(self
            .verified_state(store, b, &format!("backup {}", b.generation))?
            .expect("invariant: a backup row has a document"))
    }

    pub(crate) fn load<T: Serialize + DeserializeOwned>(
        &self,
        store: &Store<T>,
    ) -> Result<Snapshot<T>> {
        self.settle_unsettled(store);
        let cur = self.read("read", |c| self.read_current(c, None))?;
        let Some(cur) = cur else {
            return Err(self.not_found());
        };
        match self.verified_state(store, &cur, "the current row") {
            Ok(Some(state)) => Ok(Snapshot {
                state,
                generation: cur.generation,
            }),
            Ok(None) => Err(self.not_found()),
            // A damaged row: repaired as the recovery policy says (under the row
            // lock, as a local file's load does), or the damage reported.
            Err(damage) if is_damage(&damage) => {
                match self.repair(store, "load (recover)", Some(damage))? {
                    Repair::Recovered {
                        state, generation, ..
                    } => Ok(Snapshot { state, generation }),
                    Repair::Sound(state, generation) => Ok(Snapshot { state, generation }),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Recovers a damaged row now, whatever the recovery policy (`statesafe
    /// recover URL`): `None` when it is sound.
    pub(crate) fn recover<T: Serialize + DeserializeOwned>(
        &self,
        store: &Store<T>,
    ) -> Result<Option<Event>> {
        match self.repair(store, "recover", None)? {
            Repair::Recovered { event, .. } => Ok(Some(event)),
            Repair::Sound(..) => Ok(None),
        }
    }

    /// Under the row lock: if the current row is damaged (its checksum does not
    /// match, or its document fails verification), moves it as it is into the
    /// quarantine table, and writes the newest backup that verifies (or the store's
    /// default state, where it has one and the policy says so) as the next
    /// generation, all in one transaction. `seen`: the damage a lock-free read saw
    /// (then the store's recovery policy decides: `Fail` reports it, changing
    /// nothing); `None`: an explicit recovery, as `Store::recover` for a file.
    /// Nothing is ever repaired silently: the event is emitted and returned.
    fn repair<T: Serialize + DeserializeOwned>(
        &self,
        store: &Store<T>,
        operation: &str,
        seen: Option<Error>,
    ) -> Result<Repair<T>> {
        let policy = store.config().recovery;
        if let Some(damage) = seen
            && policy == RecoveryPolicy::Fail
        {
            return Err(damage);
        }
        let mut tx = self.lock_row(store, operation)?;
        if !tx.existed() {
            return Err(self.not_found());
        }
        let generation = tx.current.generation;
        let damage = match self.verified_state(store, &tx.current, "the current row") {
            // Sound (repaired meanwhile by another process, or never damaged).
            Ok(state) => {
                let state = state.expect("invariant: it exists");
                return Ok(Repair::Sound(state, generation));
            }
            Err(e) if is_damage(&e) => e,
            Err(e) => return Err(e),
        };
        let damage_text = damage.to_string();
        // The newest generation the backups and the history hold: above the row's
        // when its generation was lowered by hand (its checksum covers it). The
        // repair goes on above it, and carries the history forward up to it: writing
        // below would replace entries of committed versions.
        let kept = format!(
            "SELECT greatest((SELECT max(generation) FROM {} WHERE state = $1), \
             (SELECT max(generation) FROM {} WHERE state = $1))",
            self.names.backups, self.names.history
        );
        let kept: Option<i64> = tx
            .client()
            .query_typed_one(&kept, &[(&self.address.state, Type::TEXT)])
            .map_err(|e| self.error("read the generations kept of", e))?
            .get(0);
        let generation = generation.max(kept.map_or(0, |g| g as u64));
        // The newest backup that verifies (they are all older than the damaged row).
        let mut tried = Vec::new();
        let mut found = None;
        if !(policy == RecoveryPolicy::UseDefault && store.opts.default_state.is_some()) {
            for b in self.backup_rows()? {
                match self.verified_backup(store, &b) {
                    Ok(state) => {
                        found = Some((state, Some(b.generation)));
                        break;
                    }
                    Err(e) if is_damage(&e) => {
                        tried.push((self.backup_path(b.generation), e.to_string()))
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        // Carried forward by the history's patches while they form an unbroken
        // chain up to the damaged generation itself, as a file's recovery does: its
        // entry was written in the transaction that committed it, so the chain
        // rebuilds the acknowledged version (stopping below it rolled that back).
        let mut rebuilt_from = None;
        if let Some((state, Some(b))) = &found
            && store.config().history.keep > 0
        {
            let entries: Vec<HistoryEntry> = self
                .history_rows()?
                .into_iter()
                .filter(|e| e.generation <= generation)
                .collect();
            rebuilt_from = store
                .apply_chain(state, *b, &entries)
                .map(|(state, at)| (state, at, *b));
        }
        let rebuilt_from = match rebuilt_from {
            Some((state, at, b)) => {
                found = Some((state, Some(at)));
                Some(b)
            }
            None => None,
        };
        let (state, from) = match (found, &store.opts.default_state) {
            (Some(found), _) => found,
            (None, Some(default)) if policy == RecoveryPolicy::UseDefault => (default(), None),
            (None, _) => {
                // Nothing changed: the transaction rolls back, the damaged row stays.
                drop(tx);
                store.recorder.failure("unrecoverable");
                return Err(Error::Unrecoverable {
                    path: self.display().to_path_buf(),
                    damage: Box::new(damage),
                    quarantined: None,
                    tried,
                });
            }
        };
        let quarantined = self.quarantine_row(&mut tx, &damage_text)?;
        self.raise_generation(&mut tx, generation, "recover")?;
        let change = Change::Recovery {
            quarantined: Some(quarantined.clone()),
            from,
        };
        let written = tx.write(store, &state, change, None)?;
        let event = Event::Recovered {
            path: self.display().to_path_buf(),
            damage: damage_text,
            quarantined,
            restored_from: from,
            rebuilt_from,
            generation: written,
        };
        store.emit(event.clone());
        Ok(Repair::Recovered {
            state,
            generation: written,
            event,
        })
    }

    pub(crate) fn generation<T>(&self, _store: &Store<T>) -> Result<u64> {
        let cur = self.read("read", |c| self.read_current(c, None))?;
        Ok(cur.filter(Current::exists).map_or(0, |c| c.generation))
    }

    /// Under the row lock: applies the settings recorded in the row now (`recorded`),
    /// so that settings another client saved since this store read them (a schema, a
    /// retention, a size limit) bind this transaction's write, as a file's
    /// `Store::refresh_settings` does; they were read only at open (review19). Parsed
    /// only when the text differs from the one this store last applied. Whether the
    /// store's configuration changed.
    fn refresh_settings<T>(&self, store: &Store<T>, recorded: Option<&str>) -> Result<bool> {
        let Some(recorded) = recorded else {
            return Ok(false);
        };
        let mut seen = self.settings_seen.lock();
        if seen.as_deref() == Some(recorded) {
            return Ok(false);
        }
        let settings: Settings =
            serde_json::from_str(recorded).map_err(|e| self.settings_damaged(&e))?;
        let changed = settings != store.config().settings;
        if changed {
            let config = Config::new_at(self.display(), &store.opts, &settings)?;
            self.plain_only(config.format)?;
            store.set_config(config);
        }
        *seen = Some(recorded.to_string());
        Ok(changed)
    }

    /// The backups kept (generation, commit time), read in `tx`: for settings found
    /// under the lock to name an hourly or daily retention the lock's statements did
    /// not list them for.
    fn backups_listed(&self, tx: &mut Tx<'_>) -> Result<Vec<(u64, SystemTime)>> {
        let rows = tx
            .client()
            .query_typed(
                &format!(
                    "SELECT generation, (extract(epoch FROM written_at) * 1000000)::bigint \
                     FROM {} WHERE state = $1",
                    self.names.backups
                ),
                &[(&self.address.state, Type::TEXT)],
            )
            .map_err(|e| self.error("read the backups of", e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, micros(r.get(1))))
            .collect())
    }

    fn not_found(&self) -> Error {
        Error::NotFound {
            path: self.display().to_path_buf(),
        }
    }

    /// The key of the state's lock row: the row `statesafe lock URL -- CMD` holds
    /// locked while CMD runs. A state name is printable, so no state has this key.
    fn lock_key(&self) -> String {
        format!("\u{1}lock\u{1}{}", self.address.state)
    }

    /// The id of this state's lock on the server `client` is connected to: the hex
    /// xxh3-128 of the server's system identifier (`-` when this role may not call
    /// `pg_control_system()`), its start time in microseconds (which tells apart two
    /// servers cloned from one data directory, as the system identifier does not, and
    /// changes when the server restarts, which ends every lock), the database, the
    /// OID of the main table and the state's name. An entry of `STATESAFE_PG_LOCKS` is
    /// `XID@ID`, so that a transaction id lets writers through the lock row of this
    /// state on this server only: the same number is another transaction on another
    /// server (review19). Two statements: a function this role may not call fails
    /// the statement that names it, in any branch of a `CASE`.
    fn lock_id(&self, client: &mut Client) -> Result<String, postgres::Error> {
        let may = Locking::rows(&client.simple_query(
            "SELECT has_function_privilege('pg_control_system()', 'EXECUTE')::text",
        )?);
        let system = if may
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .as_deref()
            == Some("true")
        {
            "(SELECT system_identifier FROM pg_control_system())::text"
        } else {
            "'-'"
        };
        let rows = Locking::rows(&client.simple_query(&format!(
            "SELECT {system}, (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint::text, \
             current_database()::text, {}::regclass::oid::text",
            literal(&self.names.main)
        ))?);
        let mut key = String::new();
        for column in rows.first().map(Vec::as_slice).unwrap_or_default() {
            key.push_str(column.as_deref().unwrap_or("-"));
            key.push('\0');
        }
        key.push_str(&self.address.state);
        Ok(format!(
            "{:032x}",
            xxhash_rust::xxh3::xxh3_128(key.as_bytes())
        ))
    }

    /// The statements that list the server session's prepared statements (before
    /// the row lock: under it, everything adds to the time other writers wait), take
    /// the state's row lock and read the row, then look at its lock row: `SELECT … FOR UPDATE` of the row; the lock row `FOR UPDATE SKIP
    /// LOCKED` (a row when it is free, and then this transaction holds it until it
    /// ends); the lock row's `xmax` (who holds it, when it is not free). Each
    /// statement of a simple query takes its own snapshot, so these see a lock taken
    /// by `statesafe lock` while the first waited. Then what a write needs to know,
    /// read under the lock: the newest history entry and (`list_backups`, for an
    /// hourly or daily retention) the backups kept.
    fn lock_statements(&self, nowait: bool, list_backups: bool) -> String {
        let main = &self.names.main;
        let state = literal(&self.address.state);
        let key = literal(&self.lock_key());
        let wait = if nowait { " NOWAIT" } else { "" };
        let (backups, history) = (&self.names.backups, &self.names.history);
        let list = if list_backups {
            format!(
                "(SELECT string_agg(generation || ':' || (extract(epoch FROM written_at) * 1000000)::bigint, ',') FROM {backups} WHERE state = {state})"
            )
        } else {
            "NULL".to_string()
        };
        format!(
            "SELECT {PREPARED_LIST};
{SELECT_CURRENT}, txid_current(), settings FROM {main} WHERE state = {state} FOR UPDATE{wait};
SELECT (SELECT 1 FROM {main} WHERE state = {key} FOR UPDATE SKIP LOCKED),
    (SELECT xmax::text FROM {main} WHERE state = {key}),
    (SELECT max(generation) FROM {history} WHERE state = {state}),
    {list}"
        )
    }

    /// [`Remote::lock_statements`] and the `set_config`s before them as statements
    /// with parameters: `$1` the lock timeout and `$2` the `application_name`; `$1`
    /// the state; `$1` the state and `$2` its lock row's key. With `list`, the first
    /// also lists the session's SQL-level prepared statements ([`PREPARED_LIST`]).
    fn lock_texts(
        &self,
        nowait: bool,
        list_backups: bool,
        list: bool,
    ) -> [(&'static str, String); 3] {
        let (main, backups, history) = (&self.names.main, &self.names.backups, &self.names.history);
        let wait = if nowait { " NOWAIT" } else { "" };
        let backups_list = if list_backups {
            format!(
                "(SELECT string_agg(generation || ':' || (extract(epoch FROM written_at) * 1000000)::bigint, ',') FROM {backups} WHERE state = $1)"
            )
        } else {
            "NULL".to_string()
        };
        let prepared = if list {
            format!(", {PREPARED_LIST}")
        } else {
            String::new()
        };
        [
            (
                "text, text",
                format!(
                    "SELECT set_config('lock_timeout', $1, true), set_config('application_name', $2, true), {SYNCHRONOUS_COMMIT}, {PLAN_BY_INDEX}, {}{prepared}",
                    statement_timeout("$1")
                ),
            ),
            (
                "text",
                format!(
                    "{SELECT_CURRENT}, txid_current(), settings FROM {main} WHERE state = $1 FOR UPDATE{wait}"
                ),
            ),
            (
                "text, text",
                format!(
                    "SELECT (SELECT 1 FROM {main} WHERE state = $2 FOR UPDATE SKIP LOCKED),
    (SELECT xmax::text FROM {main} WHERE state = $2),
    (SELECT max(generation) FROM {history} WHERE state = $1),
    {backups_list}"
                ),
            ),
        ]
    }

    /// [`Remote::lock_texts`] as `EXECUTE`s of SQL-level prepared statements named by
    /// the hash of their text (see [`Write`]), with a `PREPARE` first of each that
    /// `have` (the names the server session holds, when known) lacks.
    fn lock_statements_prepared(
        &self,
        millis: u128,
        operation: &str,
        nowait: bool,
        list_backups: bool,
        have: Option<&[String]>,
    ) -> String {
        let args = [
            vec![
                literal(&format!("{}ms", millis.max(1))),
                literal(&application_name(operation)),
            ],
            vec![literal(&self.address.state)],
            vec![literal(&self.address.state), literal(&self.lock_key())],
        ];
        let mut sql = String::new();
        let mut executes = String::new();
        for ((types, text), args) in self
            .lock_texts(nowait, list_backups, true)
            .into_iter()
            .zip(args)
        {
            let prepared = format!("({types}) AS {text}");
            let name = format!(
                "{PREPARED_PREFIX}{:016x}",
                format::checksum(prepared.as_bytes())
            );
            if have.is_some_and(|have| !have.contains(&name)) {
                sql.push_str(&format!("PREPARE {name}{prepared};\n"));
            }
            executes.push_str(&format!("EXECUTE {name}({});\n", args.join(", ")));
        }
        sql.push_str(executes.trim_end_matches([';', '\n']));
        sql
    }

    /// The first round trip of a transaction with protocol-level prepared statements:
    /// `BEGIN` and the check of the server session's mark, then Bind and Execute of
    /// [`Remote::lock_texts`] (prepared once per connection), pipelined. The rows of
    /// each statement, as [`Locking::statements`] gives them.
    ///
    /// A named statement lives in the server session that parsed it. Behind a pooler
    /// that moves a client's transactions between server sessions (PgBouncer before
    /// 1.21, or without `max_prepared_statements`, in transaction mode) a later
    /// transaction may run where this connection's statements are unknown, or where
    /// another client's statement has the same name (the client library numbers
    /// them per process): binding that one would run another statement. So the
    /// statements are parsed in a transaction that also marks its server session (a
    /// cursor `WITH HOLD`, kept after the commit, named for this connection alone:
    /// its process id, a counter and the time), and every transaction checks the
    /// mark first, in the same transaction block as the statements it binds (`MOVE 0
    /// IN` the cursor: a utility statement, nothing to plan): no such cursor
    /// (another session, or one reset by `DISCARD ALL`) fails that check, a statement missing
    /// from the marked session (`DEALLOCATE ALL`) fails its Bind (`26000`), and
    /// either way the transaction block is aborted before the first statement
    /// runs: nothing is locked, read or written. `Ok(None)` then: the transaction is
    /// rolled back, and the caller uses the SQL-level statements, which work behind
    /// such a pooler, from then on.
    fn lock_protocol(
        &self,
        client: &mut Client,
        millis: u128,
        operation: &str,
        nowait: bool,
        list_backups: bool,
    ) -> Result<Option<Statements>, postgres::Error> {
        let texts = self.lock_texts(nowait, list_backups, false);
        let types = [
            &[Type::TEXT, Type::TEXT][..],
            &[Type::TEXT][..],
            &[Type::TEXT, Type::TEXT][..],
        ];
        let wanted: Vec<(&str, &[Type])> = texts
            .iter()
            .zip(types)
            .map(|((_, text), types)| (text.as_str(), types))
            .collect();
        let check = |mark: &str| format!("BEGIN ISOLATION LEVEL READ COMMITTED; MOVE 0 IN {mark}");
        let mismatch = |e: &postgres::Error, client: &Client| {
            refused(e) && !client.is_closed() && e.code() == Some(&SqlState::INVALID_CURSOR_NAME)
        };
        // Statements are parsed only in a transaction in the marked server session
        // (the first marks it): every one this connection holds is in that session.
        if wanted.iter().any(|(text, _)| !client.holds(text)) {
            match client.mark() {
                None => {
                    static MARKS: AtomicU64 = AtomicU64::new(0);
                    let since = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default();
                    let mark = format!(
                        "statesafe_mark_{}_{}_{}",
                        crate::sys::pid(),
                        MARKS.fetch_add(1, Ordering::Relaxed),
                        since.as_nanos()
                    );
                    client.batch_execute(&format!(
                        "BEGIN; DECLARE {mark} CURSOR WITH HOLD FOR SELECT 1"
                    ))?;
                    client.set_mark(mark);
                }
                Some(mark) => match client.batch_execute(&check(mark)) {
                    Err(e) if mismatch(&e, client) => {
                        client.batch_execute("ROLLBACK")?;
                        return Ok(None);
                    }
                    begun => begun?,
                },
            }
            client.prepared(&wanted)?;
            client.batch_execute("COMMIT")?;
        }
        let check = check(client.mark().unwrap_or_default());
        let statements = client.prepared(&wanted)?;
        let timeout = format!("{}ms", millis.max(1));
        let name = application_name(operation);
        let (state, key) = (&self.address.state, self.lock_key());
        let answers = client.pipeline(&[
            Request::Simple(&check),
            Request::Bound(&statements[0], &[&timeout, &name]),
            Request::Bound(&statements[1], &[state]),
            Request::Bound(&statements[2], &[state, &key]),
        ]);
        match answers {
            Ok(mut answers) => {
                let lock = answers.pop().unwrap_or_default();
                let main = answers.pop().unwrap_or_default();
                Ok(Some(vec![
                    Vec::new(),
                    main.iter().map(texts_of).collect(),
                    lock.iter().map(texts_of).collect(),
                ]))
            }
            Err((i, e))
                if (i == 0 && mismatch(&e, client))
                    || (refused(&e)
                        && !client.is_closed()
                        && e.code() == Some(&SqlState::INVALID_SQL_STATEMENT_NAME)) =>
            {
                client.batch_execute("ROLLBACK")?;
                Ok(None)
            }
            Err((_, e)) => Err(e),
        }
    }

    /// Starts a database transaction holding the state's row lock, waiting at most
    /// the store's lock timeout: one round trip (`BEGIN`, the `SET LOCAL`s and
    /// [`Remote::lock_statements`] in one simple query) when the row exists and
    /// `statesafe lock` does not hold the state.
    ///
    /// The lock row: a writer holds it (or sees it held by the `statesafe lock` whose
    /// CMD it runs under: the holder's transaction id is in `STATESAFE_PG_LOCKS`)
    /// while it holds the state's row. When another process holds it, the writer
    /// rolls back (letting go of the state's row, which CMD's own writers need) and
    /// waits for the lock row first, then the state's row.
    fn lock_row<T>(&self, store: &Store<T>, operation: &str) -> Result<Tx<'_>> {
        self.settle_unsettled(store);
        let config = store.config();
        self.plain_only(config.format)?;
        let millis = config.lock_timeout.as_millis().min(i32::MAX as u128);
        let nowait = millis == 0;
        if !nowait {
            super::nested::refuse(self, operation)?;
        }
        // Only an hourly or daily retention needs the backups' times.
        let list_backups = config.backups.hourly > 0 || config.backups.daily > 0;
        let start = Instant::now();
        // The statements that lock and read, prepared once per server session: sent
        // as `EXECUTE`s, and when this session lacks one (the server says so before
        // anything was locked or read, or at worst after locking the row, which the
        // rollback lets go of), again after a rollback, in a transaction that first
        // lists what its server session holds (it may hold some: other variants of
        // these statements share some texts), with a `PREPARE` of each it lacks.
        // (Built only when used: the text and its statements' names cost about 8% of
        // a write's client time, spent for nothing on the protocol-level path.)
        let first = || {
            format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED;
{}",
                self.lock_statements_prepared(millis, operation, nowait, list_backups, None)
            )
        };
        // Protocol-level prepared statements unless this store found (or was told)
        // that they do not stay in the server session: `(protocol, statements' rows)`.
        let start_tx = |client: &mut Client| {
            if !self.sql_prepare.load(Ordering::Relaxed) {
                if let Some(found) =
                    self.lock_protocol(client, millis, operation, nowait, list_backups)?
                {
                    return Ok((true, found));
                }
                tracing::info!(
                    target: "statesafe",
                    "{}: this connection's prepared statements were not in the server session of its next transaction (a pooler in transaction mode that does not track them, or one that resets sessions): SQL-level PREPARE and EXECUTE from now on (set `prepare=sql` in the URL to start so)",
                    self.display().display()
                );
                self.sql_prepare.store(true, Ordering::Relaxed);
            }
            client
                .simple_query(&first())
                .map(|m| (false, Locking::statements(&m)))
        };
        let (mut client, pooled) = self.take()?;
        let mut begun = start_tx(&mut client);
        if pooled && begun.as_ref().is_err_and(lost) {
            client = self.connect()?;
            begun = start_tx(&mut client);
        }
        if begun
            .as_ref()
            .is_err_and(|e| e.code() == Some(&SqlState::INVALID_SQL_STATEMENT_NAME))
            && !client.is_closed()
        {
            // The transaction keeps its server session (through PgBouncer too) from
            // the list to the `PREPARE`s.
            begun = client
                .simple_query(&format!(
                    "ROLLBACK; BEGIN ISOLATION LEVEL READ COMMITTED; SELECT {PREPARED_LIST}"
                ))
                .and_then(|messages| {
                    let have: Vec<String> = Locking::rows(&messages)
                        .first()
                        .and_then(|r| r.first().cloned().flatten())
                        .unwrap_or_default()
                        .split(',')
                        .filter(|n| !n.is_empty())
                        .map(str::to_string)
                        .collect();
                    client
                        .simple_query(&self.lock_statements_prepared(
                            millis,
                            operation,
                            nowait,
                            list_backups,
                            Some(&have),
                        ))
                        .map(|m| (false, Locking::statements(&m)))
                });
        }
        let mut tx = Tx {
            remote: self,
            _hold: super::nested::enter(self),
            lock_timeout: config.lock_timeout,
            client: Some(client),
            current: Current {
                generation: 0,
                document: None,
                checksum: None,
                written_at: None,
                writer: None,
                xid: None,
                fresh: false,
                kept_versions: false,
                known: None,
            },
            history_last: None,
            backups: Vec::new(),
            prepared: Vec::new(),
            protocol: false,
            quarantined: None,
        };
        let locked = (|| -> Result<Locking, postgres::Error> {
            let (protocol, statements) = begun?;
            tx.protocol = protocol;
            let mut found = Locking::from_statements(statements);
            let unwritten = |c: &Current| c.document.is_none() && c.writer.is_none();
            // Whether this writer made or raised the row (below), and whether a row was
            // there before: the transaction that waits for `statesafe lock` must do the
            // same after its re-read (this one rolls back), or it would take a damaged
            // settings-only row for one never written (review15).
            let mut made: Option<bool> = None;
            let state = literal(&self.address.state);
            let main = &self.names.main;
            let insert = format!(
                "INSERT INTO {main} (state, generation) VALUES ({state}, coalesce(greatest(\
                 (SELECT max(generation) FROM {} WHERE state = {state}), \
                 (SELECT max(generation) FROM {} WHERE state = {state})), 0)) \
                 ON CONFLICT (state) DO UPDATE SET generation = excluded.generation \
                 WHERE {main}.document IS NULL AND {main}.writer IS NULL AND {main}.generation = 0",
                self.names.backups, self.names.history,
            );
            let mark = |found: &mut Locking, had_row: bool| {
                if let Some(c) = found.current.as_mut().filter(|c| unwritten(c)) {
                    // A row that was there (settings only) goes on above kept versions
                    // only when it was damage: a state whose row only ever held
                    // settings has none (red15). (This transaction rolls back.)
                    if had_row && c.generation > 0 {
                        c.kept_versions = true;
                    } else {
                        c.fresh = true;
                    }
                }
            };
            if found
                .current
                .as_ref()
                .is_none_or(|c| unwritten(c) && c.generation == 0)
            {
                // No row yet (or one that only holds settings): insert one (no
                // document) and lock it. A concurrent first writer's insert makes this
                // wait for its commit, as the lock would. Its generation goes on above
                // the backups and history kept from an earlier life of the state (its
                // row deleted by hand), so that no generation of this life names a
                // version of that one. A row without a document at a generation above
                // 0 is made only here: committed so, it is damage (hist14).
                let had_row = found.current.is_some();
                made = Some(had_row);
                let query = format!("{insert};\n{}", self.lock_statements(nowait, list_backups));
                found = Locking::parse(tx.client().simple_query(&query)?);
                mark(&mut found, had_row);
            }
            if found.lock_free {
                return Ok(found);
            }
            // Held: by the `statesafe lock` this process runs under, if an entry of
            // `STATESAFE_PG_LOCKS` names its transaction on this server and this state
            // (asked only when the variable is set: one more statement, in this
            // transaction, on the server that holds the row).
            if let Some(xmax) = found.held_by.as_deref()
                && under_a_lock()
                && nested(xmax, &self.lock_id(tx.client())?)
            {
                return Ok(found);
            }
            // `statesafe lock` holds the state: wait for it without holding the
            // state's row (its CMD's writers need that row), then take both.
            // A new transaction: behind a pooler, maybe in another server session,
            // which its `PREPARED_LIST` is read from.
            tx.protocol = false;
            let left = config.lock_timeout.saturating_sub(start.elapsed());
            let ms = left.as_millis().clamp(1, i32::MAX as u128);
            let wait = format!(
                "ROLLBACK; BEGIN ISOLATION LEVEL READ COMMITTED; SELECT set_config('lock_timeout', '{ms}ms', true), set_config('application_name', '{}', true), {SYNCHRONOUS_COMMIT}, {PLAN_BY_INDEX}, {};
SELECT 1 FROM {} WHERE state = {} FOR UPDATE{};\n{}{}",
                application_name(operation),
                statement_timeout(&format!("'{ms}ms'")),
                self.names.main,
                literal(&self.lock_key()),
                if nowait { " NOWAIT" } else { "" },
                // The row made or raised in the transaction just rolled back, made or
                // raised again (a no-op on a row written meanwhile).
                if made.is_some() { format!("{insert};\n") } else { String::new() },
                self.lock_statements(nowait, list_backups)
            );
            let mut found = Locking::parse(tx.client().simple_query(&wait)?);
            if let Some(had_row) = made {
                mark(&mut found, had_row);
            }
            Ok(found)
        })();
        let waited = start.elapsed();
        match locked {
            Ok(Locking {
                current: Some(mut cur),
                history_last,
                mut backups,
                prepared,
                settings,
                ..
            }) => {
                store.recorder.lock_wait(waited);
                // The settings recorded now bind this transaction (review19).
                if self.refresh_settings(store, settings.as_deref())? {
                    let policy = store.config().backups;
                    if !list_backups && (policy.hourly > 0 || policy.daily > 0) {
                        backups = self.backups_listed(&mut tx)?;
                    }
                }
                self.settle_new_life(tx.client(), &mut cur)
                    .map_err(|e| self.error("lock", e))?;
                // What the history (and the backups, when listed) know: a row below
                // it was put back by hand (review19), damage for `verified_text`.
                cur.known = history_last.max(backups.iter().map(|&(g, _)| g).max());
                tx.current = cur;
                tx.history_last = history_last;
                tx.backups = backups;
                tx.prepared = prepared;
                Ok(tx)
            }
            Ok(Locking { current: None, .. }) => Err(Error::Remote {
                path: self.display().to_path_buf(),
                op: "lock".into(),
                reason: "the state's row vanished right after it was inserted".into(),
                hint: "something deletes rows from the table while statesafe uses it; stop it"
                    .into(),
                source: None,
            }),
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                drop(tx);
                let holder = self.lock_holder().map(Box::new);
                let err = Error::LockTimeout {
                    path: self.display().to_path_buf(),
                    waited,
                    holder,
                };
                store.recorder.failure(err.kind());
                Err(err)
            }
            Err(e) => Err(self.error("lock", e)),
        }
    }

    /// Holds the state for `statesafe lock URL -- CMD`: a transaction holding the
    /// state's lock row, open until the returned [`Held`] is dropped (or this process
    /// dies and its connection closes). Writers wait for it, except those run by CMD,
    /// which find the holder's transaction id in `STATESAFE_PG_LOCKS`
    /// ([`Held::nested_env`]). Taking it waits for writers in progress (they hold the
    /// lock row while they write).
    pub(crate) fn hold<T>(&self, store: &Store<T>, operation: &str) -> Result<Held<'_>> {
        if !store.config().lock_timeout.is_zero() {
            super::nested::refuse(self, operation)?;
        }
        let key = literal(&self.lock_key());
        let main = &self.names.main;
        // The lock row is made once, under the state's row lock, so that a writer
        // that took the state's row before it existed has committed before anyone
        // can hold it, and every later writer sees it.
        let exists = self.read("look for the lock row of", |c| {
            c.simple_query(&format!("SELECT 1 FROM {main} WHERE state = {key}"))
        })?;
        if Locking::rows(&exists).is_empty() {
            let mut tx = self.lock_row(store, operation)?;
            tx.client()
                .batch_execute(&format!(
                    "INSERT INTO {main} (state, generation) VALUES ({key}, 0) ON CONFLICT (state) DO NOTHING; COMMIT"
                ))
                .map_err(|e| self.error("create the lock row of", e))?;
            if let Some(client) = tx.client.take() {
                self.give(client);
            }
        }
        let config = store.config();
        let millis = config.lock_timeout.as_millis().min(i32::MAX as u128);
        let start = Instant::now();
        let mut client = self.connect()?;
        // The lock's id ([`Remote::lock_id`]), read on this connection's server.
        let id = self
            .lock_id(&mut client)
            .map_err(|e| self.error("lock", e))?;
        // First without waiting: free, it is taken now; held by a `statesafe lock`
        // this process runs under (its transaction id is in `STATESAFE_PG_LOCKS`),
        // this one passes through, as that lock's writers do (waiting would wait for
        // our own parent: a deadlock until the timeout). Else wait for it.
        let probe = client.simple_query(&format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT set_config('lock_timeout', '{}ms', true), set_config('application_name', '{}', true), {};
SELECT (SELECT txid_current()::text FROM {main} WHERE state = {key} FOR UPDATE SKIP LOCKED),
    (SELECT xmax::text FROM {main} WHERE state = {key})",
            millis.max(1),
            application_name(operation),
            statement_timeout(&format!("'{}ms'", millis.max(1))),
        ));
        // `None`: passing through; `Some(xid)`: taken (`xid` is `None` if the row
        // vanished meanwhile).
        let taken = probe.and_then(|messages| {
            let row = Locking::rows(&messages)
                .into_iter()
                .next()
                .unwrap_or_default();
            let column = |i: usize| row.get(i).cloned().flatten();
            match (column(0), column(1)) {
                (Some(xid), _) => Ok(Some(Some(xid))),
                (None, Some(xmax)) if nested(&xmax, &id) => Ok(None),
                _ => {
                    let messages = client.simple_query(&format!(
                        "SELECT txid_current()::text FROM {main} WHERE state = {key} FOR UPDATE{}",
                        if millis == 0 { " NOWAIT" } else { "" },
                    ))?;
                    Ok(Some(
                        Locking::rows(&messages)
                            .first()
                            .and_then(|r| r.first().cloned().flatten()),
                    ))
                }
            }
        });
        let waited = start.elapsed();
        match taken {
            Ok(None) => {
                // Nothing is held by this `lock`: the outer one holds the state.
                if client.batch_execute("ROLLBACK").is_ok() {
                    self.give(client);
                }
                store.recorder.lock_wait(waited);
                Ok(Held {
                    remote: self,
                    _hold: super::nested::enter(self),
                    client: Mutex::new(None),
                    xid: None,
                    id,
                })
            }
            Ok(Some(xid)) => {
                let xid = xid
                    .and_then(|t| t.parse::<u64>().ok())
                    .ok_or_else(|| Error::Remote {
                        path: self.display().to_path_buf(),
                        op: "lock".into(),
                        reason: "the state's lock row vanished right after it was made".into(),
                        hint:
                            "something deletes rows from the table while statesafe uses it; stop it"
                                .into(),
                        source: None,
                    })?;
                store.recorder.lock_wait(waited);
                Ok(Held {
                    remote: self,
                    _hold: super::nested::enter(self),
                    client: Mutex::new(Some(client)),
                    // The row's `xmax` is the 32-bit transaction id.
                    xid: Some(xid & 0xffff_ffff),
                    id,
                })
            }
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                drop(client);
                let err = Error::LockTimeout {
                    path: self.display().to_path_buf(),
                    waited,
                    holder: self.lock_holder().map(Box::new),
                };
                store.recorder.failure(err.kind());
                Err(err)
            }
            Err(e) => Err(self.error("lock", e)),
        }
    }

    /// What became of transaction `xid` whose `COMMIT` lost its answer, or `None`
    /// when the server cannot be asked (not reachable, or the transaction still
    /// running at `deadline`). Asked on a new connection: the old one is gone.
    fn resolve(&self, xid: i64, deadline: Instant) -> Option<Fate> {
        let mut client = self.connect().ok()?;
        loop {
            let status: Option<String> = client
                .query_typed_one("SELECT txid_status($1)", &[(&xid, Type::INT8)])
                .ok()?
                .get(0);
            match status.as_deref() {
                Some("committed") => break Some(Fate::Committed),
                Some("aborted") => break Some(Fate::Aborted),
                Some("in progress") if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Some("in progress") => break None,
                // NULL: the id is older than the server's commit log keeps.
                None => break Some(Fate::Forgotten),
                Some(_) => break None,
            }
        }
        .inspect(|_| self.give(client))
    }

    /// Whether the quarantine table holds row `id` (the text its insert returned)
    /// of this state: the write that copied the damaged row there committed. No
    /// table: nothing committed there (a first quarantine makes it in the write's
    /// own transaction). `None`: the server cannot be asked.
    fn quarantine_kept(&self, id: &str) -> Option<bool> {
        let mut client = self.connect().ok()?;
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE id::text = $1 AND state = $2)",
            self.names.quarantine
        );
        let kept = match client.query_typed_one(
            &sql,
            &[(&id, Type::TEXT), (&self.address.state, Type::TEXT)],
        ) {
            Ok(row) => row.get(0),
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => false,
            Err(_) => return None,
        };
        self.give(client);
        Some(kept)
    }

    /// Asks the server what became of the writes over a damaged row whose `COMMIT`
    /// lost its answer while it could not be asked (review15): reports
    /// [`Event::Quarantined`] for each that committed (never silently: the error said
    /// the row may have gone there), forgets each that did not (the damaged row is
    /// still in place, and the next read or write meets it), and keeps the others for
    /// the next time. Called before each read and transaction: a lock-free check
    /// when there are none.
    fn settle_unsettled<T>(&self, store: &Store<T>) {
        if !self.any_unsettled.load(Ordering::Acquire) {
            return;
        }
        let pending = std::mem::take(&mut *self.unsettled.lock());
        let mut committed = Vec::new();
        let mut left = Vec::new();
        for (xid, event) in pending {
            // Too old for `txid_status` (fix17: it stayed pending forever): the
            // quarantined copy is in the table exactly when the write committed
            // (statesafe never deletes a quarantined row).
            let landed = match self.resolve(xid, Instant::now()) {
                Some(Fate::Forgotten) => match &event {
                    Event::Quarantined { quarantined, .. } => quarantine_id(quarantined)
                        .map_or(Some(false), |id| self.quarantine_kept(id)),
                    _ => Some(false),
                },
                fate => fate.map(|f| matches!(f, Fate::Committed)),
            };
            match landed {
                Some(true) => committed.push(event),
                Some(false) => {}
                None => left.push((xid, event)),
            }
        }
        {
            let mut unsettled = self.unsettled.lock();
            unsettled.extend(left);
            self.any_unsettled
                .store(!unsettled.is_empty(), Ordering::Release);
        }
        // Emitted with no lock held: a listener may use the store.
        for event in committed {
            store.emit(event);
        }
    }

    /// Who holds the state's row lock, from the row's `xmax`, `pg_locks` and
    /// `pg_stat_activity` (statesafe's transactions name themselves there).
    pub(crate) fn lock_holder(&self) -> Option<Holder> {
        let query = sql::holder(&self.names.main);
        let row = self
            .read("find the lock holder of", |c| {
                c.query_typed_opt(
                    &query,
                    &[
                        (&self.address.state, Type::TEXT),
                        (&self.lock_key(), Type::TEXT),
                    ],
                )
            })
            .ok()??;
        Some(holder_of(&row))
    }

    pub(crate) fn begin<T: Serialize + DeserializeOwned>(
        &self,
        store: &Store<T>,
        operation: &str,
        init: Option<impl FnOnce() -> T>,
    ) -> Result<(Tx<'_>, T)> {
        let mut tx = self.lock_row(store, operation)?;
        let verified = match self.verified_state(store, &tx.current, "the current row") {
            // A damaged row: repaired first as the recovery policy says (nothing is
            // written over it otherwise), then locked again.
            Err(damage) if is_damage(&damage) => {
                drop(tx);
                self.repair(store, &format!("{operation} (recover)"), Some(damage))?;
                tx = self.lock_row(store, operation)?;
                self.verified_state(store, &tx.current, "the current row")
            }
            other => other,
        };
        let state = match verified? {
            Some(state) => state,
            None => match init {
                Some(init) => init(),
                None => return Err(self.not_found()),
            },
        };
        Ok((tx, state))
    }

    pub(crate) fn replace<T: Serialize + DeserializeOwned>(
        &self,
        store: &Store<T>,
        expected: Option<u64>,
        state: &T,
        operation: &str,
    ) -> Result<u64> {
        let mut tx = self.lock_row(store, operation)?;
        if let Some(expected) = expected {
            let found = tx.generation();
            if found != expected {
                return Err(Error::GenerationConflict {
                    path: self.display().to_path_buf(),
                    expected,
                    found,
                });
            }
        }
        let quarantined = self.quarantine_damaged(&mut tx)?;
        let written = tx.write(store, state, Change::Commit, None)?;
        self.report_quarantined(store, quarantined, written);
        Ok(written)
    }

    /// Before a write that replaces the whole document without reading the current
    /// one (`replace`, `restore`): a damaged current row (its checksum does not
    /// match, or it lost its document) is copied as it is into the quarantine table,
    /// in `tx`'s transaction, as a file's replace keeps the damaged file in its
    /// quarantine: never in the backups, never dropped. The write's `UPDATE` then
    /// overwrites the row in the same transaction, so a write that fails keeps
    /// nothing in the quarantine, and one that commits has kept it. Returns where it
    /// went and why, for [`Remote::report_quarantined`] once the write committed;
    /// `None` for a sound row or no row. (A document whose checksum matches is kept
    /// as a backup by the write like any other: not parsed again here.)
    fn quarantine_damaged(&self, tx: &mut Tx<'_>) -> Result<Option<(PathBuf, String)>> {
        let damage = match self.verified_text(&tx.current, "the current row") {
            Ok(_) => return Ok(None),
            Err(e) if is_damage(&e) => e.to_string(),
            Err(e) => return Err(e),
        };
        let quarantined = self.quarantine_row(tx, &damage)?;
        // A generation lowered by hand (the checksum covers it; a row reading as
        // never written is at 0): the write goes on above every generation the
        // history and the backups hold, as `repair` does, since written below it
        // would replace the history entries of committed versions.
        let kept = format!(
            "SELECT greatest((SELECT max(generation) FROM {} WHERE state = $1), \
             (SELECT max(generation) FROM {} WHERE state = $1))",
            self.names.backups, self.names.history
        );
        let kept: Option<i64> = tx
            .client()
            .query_typed_one(&kept, &[(&self.address.state, Type::TEXT)])
            .map_err(|e| self.error("read the generations kept of", e))?
            .get(0);
        if let Some(kept) = kept {
            self.raise_generation(tx, kept as u64, "replace")?;
        }
        Ok(Some((quarantined, damage)))
    }

    /// Copies the current row as it is into the quarantine table, in `tx`'s
    /// transaction, with `damage` as the reason: where it went (`URL#quarantine=ID`).
    fn quarantine_row(&self, tx: &mut Tx<'_>, damage: &str) -> Result<PathBuf> {
        let sql = self
            .names
            .quarantine(&literal(&self.address.state), &literal(damage));
        let messages = tx
            .client()
            .simple_query(&sql)
            .map_err(|e| self.error("quarantine the damaged row of", e))?;
        let id = Locking::rows(&messages)
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .unwrap_or_default();
        let path = PathBuf::from(format!("{}#quarantine={id}", self.display().display()));
        tx.quarantined = Some((path.clone(), damage.to_string()));
        Ok(path)
    }

    /// Sets the row's generation to `generation` in `tx`'s transaction when it is
    /// below it (a write then goes on above every version kept); `op` names the
    /// operation in an error.
    fn raise_generation(&self, tx: &mut Tx<'_>, generation: u64, op: &str) -> Result<()> {
        if generation <= tx.current.generation {
            return Ok(());
        }
        tx.client()
            .execute_typed(
                &format!(
                    "UPDATE {} SET generation = $2 WHERE state = $1",
                    self.names.main
                ),
                &[
                    (&self.address.state, Type::TEXT),
                    (&(generation as i64), Type::INT8),
                ],
            )
            .map_err(|e| self.error(op, e))?;
        tx.current.generation = generation;
        Ok(())
    }

    /// Says, once the write that replaced a damaged row committed as `generation`,
    /// where the damaged row went ([`Event::Quarantined`]): never silently.
    fn report_quarantined<T>(
        &self,
        store: &Store<T>,
        quarantined: Option<(PathBuf, String)>,
        generation: u64,
    ) {
        if let Some((quarantined, damage)) = quarantined {
            store.emit(Event::Quarantined {
                path: self.display().to_path_buf(),
                damage,
                quarantined,
                generation,
            });
        }
    }

    pub(crate) fn create_with<T: Serialize + DeserializeOwned>(
        &self,
        store: &Store<T>,
        settings: &Settings,
        state: &T,
    ) -> Result<u64> {
        let config = Config::new_at(self.display(), &store.opts, settings)?;
        self.plain_only(config.format)?;
        let tx = self.lock_row(store, "create")?;
        if tx.existed() {
            return Err(Error::AlreadyExists {
                path: self.display().to_path_buf(),
            });
        }
        let previous = store.config();
        store.set_config(config);
        let written = tx.write(store, state, Change::Commit, Some(settings));
        if written.is_err() {
            store.set_config((*previous).clone());
        }
        written
    }

    pub(crate) fn save_settings<T>(&self, store: &Store<T>, settings: &Settings) -> Result<()> {
        let config = Config::new_at(self.display(), &store.opts, settings)?;
        self.plain_only(config.format)?;
        let mut tx = self.lock_row(store, "save settings")?;
        let text = serde_json::to_string(settings).expect("invariant: settings serialize");
        let main = &self.names.main;
        let state = &self.address.state;
        // A row with no version yet stays at its generation: 0, or above an earlier
        // life's versions kept (its row deleted by hand), where the first version
        // goes on from; then it is marked so ([`new_life_mark`]), since a row without
        // a document is otherwise damage there (review15: it was left at 0, read as
        // a committed row damaged, and a load brought the deleted life back).
        let mark = (tx.current.fresh && tx.current.generation > 0)
            .then(|| new_life_mark(tx.current.generation));
        tx.client()
            .execute_typed(
                &format!(
                    "UPDATE {main} SET settings = $2, writer = coalesce($3, writer) WHERE state = $1"
                ),
                &[(state, Type::TEXT), (&text, Type::TEXT), (&mark, Type::TEXT)],
            )
            .map_err(|e| self.error("write the settings of", e))?;
        tx.finish()?;
        store.set_config(config);
        Ok(())
    }

    pub(crate) fn restore<T: Serialize + DeserializeOwned>(
        &self,
        store: &Store<T>,
        generation: u64,
    ) -> Result<u64> {
        let mut tx = self.lock_row(store, "restore")?;
        let query = format!(
            "SELECT generation, document, checksum, (extract(epoch FROM written_at) * 1000000)::bigint \
             FROM {} WHERE state = $1 AND generation = $2",
            self.names.backups
        );
        let g = generation as i64;
        let row = tx
            .client()
            .query_typed_opt(
                &query,
                &[(&self.address.state, Type::TEXT), (&g, Type::INT8)],
            )
            .map_err(|e| self.error("read the backups of", e))?;
        // A generation no backup row holds is rebuilt from the history rows, as
        // `document_at` rebuilds it (its checksums verified), as a file's restore
        // rebuilds it from its history; one nothing can rebuild, the current one and
        // generation 0 are `GenerationUnavailable`, never `NotFound`, which says the
        // state does not exist (review21node, finding 5). The history is read on this
        // transaction's connection, under the row lock: no writer adds or prunes
        // entries meanwhile.
        let state = match row {
            Some(row) => self.verified_backup(store, &backup_row(&row))?,
            None => {
                let current = tx.generation();
                if generation == 0 || generation >= current {
                    return Err(Error::GenerationUnavailable {
                        path: self.display().to_path_buf(),
                        generation,
                        reason: if generation == 0 {
                            "generation 0 is the state before its first commit".to_owned()
                        } else {
                            format!(
                                "it is not older than the current generation ({current}); restore brings back an earlier one"
                            )
                        },
                    });
                }
                let entries = self.history_entries(
                    tx.client()
                        .query_typed(&self.history_query(), &[(&self.address.state, Type::TEXT)])
                        .map_err(|e| self.error("read the history of", e))?,
                );
                let value = history::document_at(self.display(), &entries, generation)?;
                let bytes = serde_json::to_vec(&value).expect("invariant: a JSON value serializes");
                store.verify_bytes(&bytes, generation, true, false)?.state
            }
        };
        let quarantined = self.quarantine_damaged(&mut tx)?;
        let written = tx.write(store, &state, Change::Restore { from: generation }, None)?;
        self.report_quarantined(store, quarantined, written);
        Ok(written)
    }

    fn backup_path(&self, generation: u64) -> PathBuf {
        PathBuf::from(format!("{}#backup={generation}", self.display().display()))
    }

    fn backup_rows(&self) -> Result<Vec<Current>> {
        let query = format!(
            "SELECT generation, document, checksum, (extract(epoch FROM written_at) * 1000000)::bigint \
             FROM {} WHERE state = $1 ORDER BY generation DESC",
            self.names.backups
        );
        let rows = self.read("read the backups of", |c| {
            c.query_typed(&query, &[(&self.address.state, Type::TEXT)])
        })?;
        Ok(rows.iter().map(backup_row).collect())
    }

    pub(crate) fn backups<T>(&self, _store: &Store<T>) -> Result<BackupList> {
        let backups = self
            .backup_rows()?
            .into_iter()
            .map(|b| BackupInfo {
                generation: b.generation,
                path: self.backup_path(b.generation),
                size: b.document.as_ref().map_or(0, |d| d.len() as u64),
                committed: b.written_at.unwrap_or(UNIX_EPOCH),
            })
            .collect();
        Ok(BackupList {
            backups,
            foreign: Vec::new(),
        })
    }

    /// The history as listed: an entry whose document does not match the checksum it
    /// records is shown as damaged ([`history::mark_damaged`]).
    pub(crate) fn history<T>(&self, _store: &Store<T>) -> Result<Vec<HistoryEntry>> {
        let mut entries = self.history_rows()?;
        history::mark_damaged(&mut entries);
        Ok(entries)
    }

    /// The history's rows as entries (a row that is not one shown as damaged), for
    /// rebuilding versions, which verifies them itself.
    fn history_rows(&self) -> Result<Vec<HistoryEntry>> {
        let query = self.history_query();
        let rows = self.read("read the history of", |c| {
            c.query_typed(&query, &[(&self.address.state, Type::TEXT)])
        })?;
        Ok(self.history_entries(rows))
    }

    /// The statement that reads the state's history rows, oldest first (`$1` the state).
    fn history_query(&self) -> String {
        format!(
            "SELECT entry, generation FROM {} WHERE state = $1 ORDER BY generation",
            self.names.history
        )
    }

    /// The history rows read by [`Remote::history_query`] as entries.
    fn history_entries(&self, rows: Vec<Row>) -> Vec<HistoryEntry> {
        // A row that is not a valid entry of its generation (changed outside
        // statesafe, or damaged) is shown in its place as damaged, naming it, and
        // never fails the rest (red12: it made a damaged row unrecoverable).
        rows.iter()
            .map(|r| {
                let text: String = r.get(0);
                let generation = r.get::<_, i64>(1) as u64;
                match serde_json::from_str::<HistoryEntry>(&text) {
                    Ok(entry) if entry.generation == generation => entry,
                    read => {
                        let why = match read {
                            Ok(entry) => format!("it describes generation {}", entry.generation),
                            Err(e) => format!("it is not a valid entry: {e}"),
                        };
                        let reason = format!(
                            "the history entry of generation {generation} (a row of {}) was changed outside statesafe or damaged: {why}; rebuilding a version stops at it",
                            self.names.history
                        );
                        tracing::warn!(target: "statesafe", "`{}`: {reason}", self.display().display());
                        HistoryEntry::damaged(generation, reason)
                    }
                }
            })
            .collect()
    }

    pub(crate) fn document_at<T: Serialize + DeserializeOwned>(
        &self,
        store: &Store<T>,
        generation: u64,
    ) -> Result<Value> {
        let to_value = |state: T| {
            serde_json::to_value(&state).map_err(|source| Error::Serialize {
                path: self.display().to_path_buf(),
                source,
            })
        };
        let cur = self.read("read", |c| self.read_current(c, None))?;
        // The row holds its own generation's version even when newer ones are kept
        // (an older version put back by hand).
        if let Some(cur) = cur
            .filter(|c| c.generation == generation)
            .map(|c| Current { known: None, ..c })
            && let Some(state) = self.verified_state(store, &cur, "the current row")?
        {
            return to_value(state);
        }
        if let Some(b) = self
            .backup_rows()?
            .iter()
            .find(|b| b.generation == generation)
            && let Ok(Some(text)) = self.verified_text(b, "a backup")
        {
            // A backup whose checksum fails is passed over (the history may still
            // rebuild the version); one whose document fails verification is an error.
            return to_value(
                store
                    .verify_bytes(text.as_bytes(), generation, true, false)?
                    .state,
            );
        }
        history::document_at(self.display(), &self.history_rows()?, generation)
    }

    pub(crate) fn check<T: Serialize + DeserializeOwned>(
        &self,
        store: &Store<T>,
    ) -> Result<CheckReport> {
        let mut report = CheckReport {
            path: self.display().to_path_buf(),
            exists: false,
            generation: 0,
            format: None,
            external: false,
            adopted: false,
            problems: Vec::new(),
            backups_valid: 0,
            backups_damaged: Vec::new(),
            foreign: Vec::new(),
            quarantined: Vec::new(),
        };
        let cur = self.read("read", |c| self.read_current(c, None))?;
        if let Some(cur) = cur.filter(Current::exists) {
            report.exists = true;
            report.generation = cur.generation;
            report.format = Some(Format::Plain);
            match self.verified_state(store, &cur, "the current row") {
                Ok(_) => {}
                Err(e) if is_damage(&e) => report.problems.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        for b in self.backup_rows()? {
            match self.verified_backup(store, &b) {
                Ok(_) => report.backups_valid += 1,
                Err(e) => report
                    .backups_damaged
                    .push((self.backup_path(b.generation), e.to_string())),
            }
        }
        Ok(report)
    }

    pub(crate) fn info<T: Serialize + DeserializeOwned>(&self, store: &Store<T>) -> Result<Info> {
        let cur = self.read("read", |c| self.read_current(c, None))?;
        let cur = cur.filter(Current::exists);
        let last_writer = cur.as_ref().and_then(|c| {
            let writer: Writer = serde_json::from_str(c.writer.as_deref()?).ok()?;
            let at = humantime::format_rfc3339_millis(c.written_at?).to_string();
            Some((writer, at))
        });
        Ok(Info {
            path: self.display().to_path_buf(),
            real_path: self.display().to_path_buf(),
            exists: cur.is_some(),
            generation: cur.as_ref().map_or(0, |c| c.generation),
            // Not told for a PostgreSQL state (a row deleted by hand: docs/remote.md).
            deleted: None,
            format: cur.as_ref().map(|_| Format::Plain),
            size: cur
                .as_ref()
                .and_then(|c| c.document.as_ref())
                .map_or(0, |d| d.len() as u64),
            modified: cur.as_ref().and_then(|c| c.written_at),
            last_writer,
            backups: self.backups(store)?.backups,
            lock_holder: self.lock_holder(),
            settings: store.config().settings.clone(),
        })
    }
}

/// A database transaction holding a state's row lock. Dropping it rolls back.
pub(crate) struct Tx<'s> {
    remote: &'s Remote,
    /// This thread's hold of the state (a nested `begin` of this store is refused).
    _hold: super::nested::Hold,
    /// How long to wait for the server to settle a commit whose answer was lost.
    lock_timeout: Duration,
    client: Option<Client>,
    /// The row as read under the lock.
    current: Current,
    /// The newest generation in the history, read under the lock.
    history_last: Option<u64>,
    /// The backups kept (generation, commit time), read under the lock.
    backups: Vec<(u64, SystemTime)>,
    /// statesafe's prepared statements the transaction's server session holds, read
    /// in the transaction (so on the server connection that will run the write, also
    /// behind PgBouncer in transaction mode).
    prepared: Vec<String>,
    /// The write goes as a protocol-level prepared statement of this connection: the
    /// transaction checked that its server session holds them
    /// ([`Remote::lock_protocol`]). Else as an SQL-level `EXECUTE` ([`Write`]).
    protocol: bool,
    /// The damaged row this transaction copied into the quarantine table (where, and
    /// why), for a `COMMIT` that loses its answer: the error says where it went if it
    /// committed, and the store reports it once the server can say.
    quarantined: Option<(PathBuf, String)>,
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if let Some(mut client) = self.client.take() {
            // A failed rollback leaves the connection unusable: drop it (the server
            // ends the transaction when the connection closes).
            if client.batch_execute("ROLLBACK").is_ok() {
                self.remote.give(client);
            }
        }
    }
}

impl Tx<'_> {
    fn client(&mut self) -> &mut Client {
        conn(&mut self.client)
    }

    pub(crate) fn generation(&self) -> u64 {
        if self.current.exists() {
            // A row put back below a generation the history holds (damage, review19):
            // the newest committed one, so that a compare-and-swap based on a read
            // from before the put-back fails rather than writing over commits it
            // never saw.
            self.current.generation.max(self.current.known.unwrap_or(0))
        } else {
            0
        }
    }

    pub(crate) fn existed(&self) -> bool {
        self.current.exists()
    }

    pub(crate) fn commit<T: Serialize + DeserializeOwned>(
        self,
        store: &Store<T>,
        state: &T,
    ) -> Result<u64> {
        self.write(store, state, Change::Commit, None)
    }

    /// Commits the database transaction. A connection lost during `COMMIT` leaves
    /// the outcome unknown: [`Error::OutcomeUnknown`], never retried.
    fn finish_as(&mut self, generation: u64) -> Result<()> {
        self.finish_with(|c| c.batch_execute("COMMIT"), "commit", generation)
    }

    /// Sends, with `send`, statements that end with `COMMIT` in one round trip (one
    /// simple query, or a pipeline whose `COMMIT` is in the same transaction block):
    /// an `ERROR` from any of them aborts the transaction, and its `COMMIT` rolls back
    /// (or is skipped): nothing is committed. A lost connection or a `FATAL` answer,
    /// from any of them, may come after the commit: settled as for a lost `COMMIT`,
    /// never sent again.
    fn finish_with(
        &mut self,
        send: impl FnOnce(&mut Client) -> Result<(), postgres::Error>,
        op: &str,
        generation: u64,
    ) -> Result<()> {
        let remote = self.remote;
        // A lock timeout too long for an `Instant` (`Duration::MAX`) waits a year.
        let now = Instant::now();
        let deadline = now
            .checked_add(self.lock_timeout)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
        let mut client = self.client.take().expect("invariant: not finished yet");
        match send(&mut client) {
            Ok(()) => {
                remote.give(client);
                Ok(())
            }
            // The server answered with an ERROR and goes on: it did not commit
            // (a refused statement, a deferred constraint, a serialization failure).
            // The connection is still in the failed transaction: dropped, the server
            // rolls it back.
            Err(e) if refused(&e) && !client.is_closed() => {
                if e.code() == Some(&SqlState::DIVISION_BY_ZERO) {
                    // The check that the row was at the generation read under the lock.
                    return Err(Error::Remote {
                        path: remote.display().to_path_buf(),
                        op: op.into(),
                        reason: format!(
                            "the row was not at generation {} under the lock",
                            self.current.generation
                        ),
                        hint: "something changes the table outside statesafe (a trigger, a rule, a hand edit); nothing was committed".into(),
                        source: Some(Box::new(e)),
                    });
                }
                Err(remote.error(op, e))
            }
            // No answer, or a FATAL one (the backend was terminated or the server
            // shut down: that can come after the commit record was written). Ask the
            // server, on a new connection, what became of the transaction; never
            // send the change again.
            Err(e) => match self
                .current
                .xid
                .and_then(|xid| remote.resolve(xid, deadline))
            {
                Some(Fate::Committed) => Ok(()),
                Some(Fate::Aborted) => Err(Error::Remote {
                    path: remote.display().to_path_buf(),
                    op: "commit".into(),
                    reason: format!(
                        "the connection was lost during COMMIT ({e}), and the server says the transaction did not commit"
                    ),
                    hint: "nothing was committed by this call; run it again".into(),
                    source: Some(Box::new(e)),
                }),
                // Forgotten: not for an id read in this transaction; as unknown.
                None | Some(Fate::Forgotten) => {
                    let quarantined = self.quarantined.take();
                    if let (Some((quarantined, damage)), Some(xid)) =
                        (&quarantined, self.current.xid)
                    {
                        remote.unsettled.lock().push((
                            xid,
                            Event::Quarantined {
                                path: remote.display().to_path_buf(),
                                damage: damage.clone(),
                                quarantined: quarantined.clone(),
                                generation,
                            },
                        ));
                        remote.any_unsettled.store(true, Ordering::Release);
                    }
                    Err(Error::OutcomeUnknown {
                        path: remote.display().to_path_buf(),
                        generation,
                        source: std::io::Error::other(CommitLost(
                            e.to_string(),
                            quarantined.map(|(q, _)| q),
                        )),
                    })
                }
            },
        }
    }

    fn finish(&mut self) -> Result<()> {
        let generation = self.current.generation;
        self.finish_as(generation)
    }

    /// Validates and writes `state` as the next generation, keeps the outgoing
    /// version as a backup, records the history, prunes both, commits.
    fn write<T: Serialize + DeserializeOwned>(
        mut self,
        store: &Store<T>,
        state: &T,
        change: Change,
        settings: Option<&Settings>,
    ) -> Result<u64> {
        let started = Instant::now();
        let result = self.write_inner(store, state, change, settings);
        match &result {
            Ok(_) => store.recorder.commit(started.elapsed(), Duration::ZERO),
            Err(e) => store.recorder.failure(e.kind()),
        }
        result
    }

    fn write_inner<T: Serialize + DeserializeOwned>(
        &mut self,
        store: &Store<T>,
        state: &T,
        change: Change,
        settings: Option<&Settings>,
    ) -> Result<u64> {
        let remote = self.remote;
        let path = remote.display();
        let config = store.config();
        validate::check(
            path,
            state,
            store.opts.rule.as_ref(),
            config.schema.as_ref(),
        )?;
        let old_text = remote
            .verified_text(&self.current, "the current row")
            .ok()
            .flatten();
        let style = store
            .opts
            .layout
            .style(old_text.and_then(|t| format::Style::detect(t.as_bytes())));
        let bytes = format::encode(path, state, style, 0, 0)?;
        if let Some(limit) = config.max_bytes
            && bytes.len() as u64 > limit
        {
            return Err(Error::TooLarge {
                path: path.to_path_buf(),
                size: bytes.len() as u64,
                limit,
            });
        }
        let text = String::from_utf8(bytes).expect("invariant: serde_json writes UTF-8");
        let checksum = row_checksum(&remote.address.state, &text, self.current.generation + 1);
        let existed = self.current.exists();
        if existed
            && change == Change::Commit
            && settings.is_none()
            && old_text == Some(text.as_str())
        {
            // Nothing to write: the generation stays (as for a file).
            let generation = self.current.generation;
            self.finish_as(generation)?;
            return Ok(generation);
        }
        let generation = self.current.generation + 1;
        let writer = Writer::current(true);
        let writer_json = serde_json::to_string(&writer).expect("invariant: a writer serializes");
        let names = &remote.names;
        let old_g = self.current.generation as i64;
        let settings_text =
            settings.map(|s| serde_json::to_string(s).expect("invariant: settings serialize"));
        // The outgoing version, if sound, becomes a backup: copied row to row on the
        // server (we hold its lock), not sent back over the wire.
        let mut keep_backup = config.backups.enabled() && old_text.is_some();
        // One statement, its parts as data-modifying CTEs (they all see the rows as
        // they were before it, and each writes other rows), run as a prepared
        // statement ([`Write`]), then COMMIT, in one round trip.
        let mut write = Write::new(&remote.address.state, old_g, &text, checksum, &writer_json);
        write.settings = settings_text;
        let policy = &config.backups;
        let mut prune_backups = None;
        if keep_backup && (policy.hourly > 0 || policy.daily > 0) {
            let mut infos: Vec<BackupInfo> = self
                .backups
                .iter()
                .map(|&(generation, committed)| BackupInfo {
                    generation,
                    path: PathBuf::new(),
                    size: 0,
                    committed,
                })
                .collect();
            if !infos
                .iter()
                .any(|b| b.generation == self.current.generation)
            {
                infos.push(BackupInfo {
                    generation: self.current.generation,
                    path: PathBuf::new(),
                    size: 0,
                    committed: self.current.written_at.unwrap_or_else(SystemTime::now),
                });
            }
            infos.sort_by_key(|b| std::cmp::Reverse(b.generation));
            let keep = backup::keep_set(&infos, policy, SystemTime::now());
            // The outgoing version itself not kept: not inserted at all.
            keep_backup = keep.contains(&self.current.generation);
            let drop: Vec<i64> = infos
                .iter()
                .filter(|b| {
                    !keep.contains(&b.generation) && b.generation != self.current.generation
                })
                .map(|b| b.generation as i64)
                .collect();
            if !drop.is_empty() {
                write.drop_backups = Some(drop);
                prune_backups = Some("generation = ANY($7)");
            }
        } else if keep_backup {
            // Count only: the newest `keep`, the outgoing version (the newest) and
            // the `keep - 1` newest others, pruned on the server without listing
            // them here: every other older than the `keep - 1`th newest (found by
            // walking the primary key from the newest end, so the cost does not grow
            // with the deleted rows the index still holds until a vacuum; listing
            // them all with `OFFSET` did, and took most of a write's server time).
            //
            // The range is bounded below too, to the `PRUNE_WINDOW` generations under
            // the outgoing version's, so that the delete visits those index entries
            // only: unbounded, it visited every entry of the rows earlier writes had
            // deleted (still in the index until a vacuum), tens of thousands after a
            // minute of contended writes (a profile of the server showed its CPU in
            // those scans). Rows older than the window are there only after the
            // retention shrank: the write of every `PRUNE_WINDOW`th generation prunes
            // without the bound, so they go within that many commits.
            //
            // The sub-`SELECT` that finds the `keep - 1`th newest other backup is
            // bounded to the same window (the same rows deleted: one below the window
            // leaves nothing in it to delete either way), and each bounded scan has an
            // upper bound too (`<= i64::MAX`, true of every row): a key range with a
            // parameter at one end is what the planner estimates as a narrow range
            // (`state = $1` alone is every row of a table of one state, `<>` and one
            // inequality a third of it), so the generic plan reads the state's
            // newest keys instead of scanning the whole table, every state's rows and
            // the dead ones (pg16: with the statistics of a table of few live rows and
            // many pages, as between vacuums, it was a sequential scan in every write).
            let full = generation.is_multiple_of(PRUNE_WINDOW as u64);
            prune_backups = Some(match (policy.keep == 1, full) {
                (true, true) => "generation <> $2",
                (true, false) => {
                    "generation <> $2 AND generation >= $2 - 64 \
                     AND generation <= 9223372036854775807"
                }
                (false, full) => {
                    write.offset = Some(i64::from(policy.keep) - 2);
                    if full {
                        "generation < (SELECT generation FROM {backups} WHERE state = $1 \
                         AND generation <> $2 ORDER BY generation DESC LIMIT 1 OFFSET $8)"
                    } else {
                        "generation < (SELECT generation FROM {backups} WHERE state = $1 \
                         AND generation <> $2 AND generation >= $2 - $8 - 64 \
                         AND generation <= 9223372036854775807 \
                         ORDER BY generation DESC LIMIT 1 OFFSET $8) \
                         AND generation >= $2 - $8 - 64"
                    }
                }
            });
        }
        let mut parts: Vec<String> = Vec::new();
        if keep_backup {
            parts.push(
                "b AS (INSERT INTO {backups} (state, generation, document, checksum, written_at) \
                 SELECT state, generation, document, checksum, written_at FROM {main} \
                 WHERE state = $1 AND generation = $2 ON CONFLICT DO NOTHING)"
                    .to_string(),
            );
        }
        if let Some(which) = prune_backups {
            parts.push(format!(
                "pb AS (DELETE FROM {{backups}} WHERE state = $1 AND {which})"
            ));
        }
        if config.history.keep > 0 {
            parts.extend(
                self.history_statements(&mut write, &config, &text, generation, change, writer),
            );
        }
        parts.push(
            "u AS (UPDATE {main} SET generation = $2 + 1, document = $3, checksum = $4, \
             written_at = now(), writer = $5, settings = coalesce($6, settings) \
             WHERE state = $1 AND generation = $2 RETURNING 1)"
                .to_string(),
        );
        // The row must be at the generation read under the lock (the primary key
        // makes it one row at most): a division by zero otherwise, which skips the
        // rest, COMMIT included.
        let body = format!(
            "WITH {} SELECT 1 / (SELECT count(*)::int FROM u)",
            parts.join(",\n")
        )
        .replace("{main}", &names.main)
        .replace("{backups}", &names.backups)
        .replace("{history}", &names.history);
        // As a protocol-level prepared statement of this connection (made at its
        // first use, in this transaction: its server session is the marked one), its
        // Bind and Execute pipelined with `COMMIT`; else as an SQL-level `EXECUTE`.
        let (sql, statement) = if self.protocol {
            let statement = self
                .client()
                .prepared(&[(&body, &Write::TYPES)])
                .map_err(|e| remote.error("write", e))?
                .pop()
                .expect("invariant: one statement asked, one given");
            (String::new(), Some(statement))
        } else {
            (write.statements(&body, &self.prepared), None)
        };
        let size = statement
            .as_ref()
            .map_or(sql.len() as u64, |_| write.bound_size());
        // The server refuses a message over its limit only after reading it all;
        // checked here first, so nothing is sent (the server's own refusals, of a
        // value or a row too large, fail the whole statement: nothing is committed
        // either way).
        let limit = statement_limit();
        if size > limit {
            return Err(Error::Remote {
                path: path.to_path_buf(),
                op: "write".into(),
                reason: format!(
                    "the document is over PostgreSQL's limits: the message that writes it would be {size} bytes (the document {} bytes, with its history entry), over the {limit} bytes the server takes in one message",
                    text.len()
                ),
                hint: "nothing was committed; keep the document smaller (PostgreSQL holds at most 1 GB in one value and one message), or set `max_bytes` to refuse it before it is built".into(),
                source: None,
            });
        }
        match &statement {
            Some(statement) => {
                let params = write.params();
                self.finish_with(
                    |c| {
                        c.pipeline(&[
                            Request::Bound(statement, &params),
                            Request::Simple("COMMIT"),
                        ])
                        .map(drop)
                        .map_err(|(_, e)| e)
                    },
                    "write",
                    generation,
                )?;
            }
            None => self.finish_with(|c| c.batch_execute(&sql), "write", generation)?,
        }
        Ok(generation)
    }

    /// The history entry of `generation` and the prune of entries past the
    /// retention, as parts of the write's statement (their values in `write`).
    fn history_statements(
        &self,
        write: &mut Write,
        config: &Config,
        text: &str,
        generation: u64,
        change: Change,
        writer: Writer,
    ) -> Vec<String> {
        let remote = self.remote;
        let policy = &config.history;
        let mut parts = Vec::new();
        let small = |t: &str| t.len() as u64 <= policy.max_patch_bytes;
        let old_value = remote
            .verified_text(&self.current, "the current row")
            .ok()
            .flatten()
            .filter(|t| small(t))
            .and_then(|t| serde_json::from_str::<Value>(t).ok());
        let new_value = if small(text) {
            serde_json::from_str::<Value>(text).ok()
        } else {
            None
        };
        let snapshot_needed = history::needs_snapshot(policy, generation, self.history_last);
        let (patch, snapshot, note) = match (&new_value, &old_value) {
            (Some(new), Some(old)) => (
                Some(json_patch::diff(old, new)),
                snapshot_needed.then(|| new.clone()),
                None,
            ),
            (Some(new), None) => (None, Some(new.clone()), None),
            (None, _) => (
                None,
                None,
                Some(
                    "no snapshot or patch: the document is larger than history.max_patch_bytes"
                        .to_string(),
                ),
            ),
        };
        let entry = HistoryEntry {
            generation,
            time: now_rfc3339(),
            writer: Some(writer),
            change,
            patch,
            snapshot,
            note,
            checksum: new_value.as_ref().map(history::checksum_of),
        };
        write.snapshot = Some(entry.snapshot.is_some());
        write.entry = Some(serde_json::to_string(&entry).expect("invariant: an entry serializes"));
        parts.push(
            "h AS (INSERT INTO {history} (state, generation, snapshot, entry) VALUES ($1, $2 + 1, $9, $10) \
             ON CONFLICT (state, generation) DO UPDATE SET snapshot = excluded.snapshot, entry = excluded.entry)"
                .to_string(),
        );
        // Keep the last `keep` generations, and the snapshot they are rebuilt from
        // (the new entry is newer than both, so that it is not seen here is fine).
        // Pruned when a snapshot is due (every `keep / 4` generations), as
        // a file's history drops whole segments: up to that many more are kept.
        let oldest_kept = (generation + 1).saturating_sub(u64::from(policy.keep));
        if oldest_kept > 1 && snapshot_needed {
            write.oldest_kept = Some(oldest_kept as i64);
            parts.push(
                "ph AS (DELETE FROM {history} WHERE state = $1 AND generation < least($11, \
                 (SELECT max(generation) FROM {history} WHERE state = $1 AND snapshot AND generation <= $11)))"
                    .to_string(),
            );
        }
        parts
    }
}

/// Durability pinned per transaction: a commit is acknowledged only once its commit
/// record is flushed, whatever the database's, role's or session's default (`off`
/// answers `COMMIT` first, and a server crash loses the write; `local` does not wait
/// for a synchronous standby). A stronger setting (`remote_write`, `remote_apply`)
/// is kept. Local to the transaction (`set_config(…, true)`, as `SET LOCAL`), so it
/// holds through PgBouncer's transaction pooling and touches no other client.
const SYNCHRONOUS_COMMIT: &str = "set_config('synchronous_commit', \
    CASE WHEN current_setting('synchronous_commit') IN ('off', 'local') THEN 'on' \
    ELSE current_setting('synchronous_commit') END, true)";

/// The statements of a write transaction planned to read by index (`enable_seqscan`
/// off for the transaction, as `SET LOCAL`). Each has an index for what it reads (the
/// primary keys: a state's row, its newest backups and history entries), but a
/// prepared statement keeps its plan until a table's statistics change, and while a
/// table is a page of a few rows (after a vacuum) a sequential scan is cheaper: that
/// plan stayed while the table grew with the rows the writes deleted (until the next
/// vacuum), so every write scanned the whole backups table, every state's rows live
/// and dead (pg16: the backup prune's sub-`SELECT`; 65 shared buffers a write
/// against 18 without the prune, in a `pgbench` replay after an autovacuum). Only
/// the plans change: a statement with no index path is still planned, as a scan.
const PLAN_BY_INDEX: &str = "set_config('enable_seqscan', 'off', true)";

/// The server's `statement_timeout` (of the database, the role or the URL's
/// `options`), when it is set, lengthened by the lock timeout `lock` (an SQL text
/// expression such as `'3000ms'`) for the rest of the transaction (`set_config(…,
/// true)`, as `SET LOCAL`): the locking statement may wait for the lock up to the lock
/// timeout, and then a holder's wait ends in [`Error::LockTimeout`] naming the holder
/// rather than in a cancelled statement (red12); each statement still has the
/// server's budget for its own work. `0` (no timeout) stays `0`. The sum is capped at
/// PostgreSQL's largest timeout, `i32::MAX` ms (about 24.8 days), as the lock timeout
/// is: over it, the `set_config` was refused and no write could be made (review19).
fn statement_timeout(lock: &str) -> String {
    format!(
        "set_config('statement_timeout', CASE current_setting('statement_timeout') WHEN '0' THEN '0' \
         ELSE least(extract(epoch FROM current_setting('statement_timeout')::interval + {lock}::interval) * 1000, {})::bigint || 'ms' END, true)",
        i32::MAX
    )
}

/// Why a password must not be sent to the server's socket for `port` in `dir`
/// ([`Remote::refuse_planted_sockets`]); `None` when it may.
///
/// Trusted: root, this user and the local `postgres` account (and as groups, root's and
/// that account's primary group). Every directory on the way to the socket, symlinks
/// followed as the kernel follows them, must be one no one else can change: owned by a
/// trusted user, and writable by no untrusted user (group write only for a trusted
/// group: Debian's `/var/run/postgresql` is `postgres:postgres` 2775). A directory that
/// others can write is passed only when it is sticky (others cannot rename or delete an
/// entry there that is not theirs: `/tmp`) and the entry followed in it (a path
/// component, a symlink, the socket itself, which must then exist) belongs to a
/// trusted user. Checked by path with `lstat` (a directory one may search and not read
/// is checked too); what was checked cannot change before the connection, since only
/// trusted users can change it (review19c). One residue: the server's own socket in a
/// sticky directory, removed by the server (a restart) between this check and the
/// connection, leaves a moment in which another user can make one there.
fn planted_socket_risk(dir: &std::path::Path, port: u16) -> Option<String> {
    use crate::sys::Kind;
    use std::path::{Component, Path, PathBuf};
    let me = crate::sys::effective_uid();
    let postgres = crate::sys::account("postgres");
    let trusted_uid = |uid: u32| uid == 0 || uid == me || postgres.is_some_and(|(p, _)| p == uid);
    let trusted_gid = |gid: u32| gid == 0 || postgres.is_some_and(|(_, g)| g == gid);
    // How a directory may be written: `Ok(true)` by trusted users only; `Ok(false)` by
    // others too, but sticky (each entry then judged by its owner); `Err`: unsafe.
    let judge = |path: &Path, st: &crate::sys::Stat| -> Result<bool, String> {
        if !trusted_uid(st.uid) {
            return Err(format!(
                "`{}` belongs to uid {}, who could replace anything in it",
                path.display(),
                st.uid
            ));
        }
        let others = st.mode & 0o002 != 0 || (st.mode & 0o020 != 0 && !trusted_gid(st.gid));
        if !others {
            return Ok(true);
        }
        if st.mode & 0o1000 == 0 {
            return Err(format!(
                "`{}` (mode {:o}) lets other users replace anything in it",
                path.display(),
                st.mode
            ));
        }
        Ok(false)
    };
    let entry_ok = |path: &Path, st: &crate::sys::Stat, guarded: bool| -> Result<(), String> {
        if guarded || trusted_uid(st.uid) {
            Ok(())
        } else {
            Err(format!(
                "`{}` is {} of uid {} in a directory other users can write",
                path.display(),
                st.kind.describe(),
                st.uid
            ))
        }
    };
    let walk = || -> Result<(), String> {
        let start = if dir.is_absolute() {
            PathBuf::from("/")
        } else {
            std::env::current_dir().map_err(|e| format!("the current directory: {e}"))?
        };
        let mut pending: std::collections::VecDeque<std::ffi::OsString> = dir
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        // The directory reached so far (no symlink in it), and how it may be written.
        let mut current = start;
        let mut hops = 0;
        loop {
            let st = crate::sys::lstat_path(&current)
                .map_err(|e| format!("`{}`: {e}", current.display()))?;
            let guarded = judge(&current, &st)?;
            let Some(name) = pending.pop_front() else {
                // The socket's directory: the socket itself.
                let socket = current.join(format!(".s.PGSQL.{port}"));
                return match crate::sys::lstat_path(&socket) {
                    Ok(st) if st.kind == Kind::Symlink && !guarded => Err(format!(
                        "`{}` is a symbolic link in a directory other users can write",
                        socket.display()
                    )),
                    Ok(st) => entry_ok(&socket, &st, guarded),
                    Err(_) if guarded => Ok(()),
                    Err(_) => Err(format!(
                        "there is no server socket `{}` in a directory other users can write, where one of them may make one",
                        socket.display()
                    )),
                };
            };
            if name == ".." {
                current.pop();
                continue;
            }
            let next = current.join(&name);
            let st = match crate::sys::lstat_path(&next) {
                Ok(st) => st,
                // Nothing there, in a directory only trusted users write: nothing to
                // connect to, and nobody else can make it.
                Err(_) if guarded => return Ok(()),
                Err(e) => return Err(format!("`{}`: {e}", next.display())),
            };
            entry_ok(&next, &st, guarded)?;
            if st.kind == Kind::Symlink {
                hops += 1;
                if hops > 40 {
                    return Err(format!("`{}`: too many symbolic links", dir.display()));
                }
                let target =
                    std::fs::read_link(&next).map_err(|e| format!("`{}`: {e}", next.display()))?;
                if target.is_absolute() {
                    current = PathBuf::from("/");
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push_front(n.to_os_string()),
                        Component::ParentDir => pending.push_front("..".into()),
                        _ => {}
                    }
                }
            } else {
                current = next;
            }
        }
    };
    walk().err()
}

/// The name prefix of statesafe's prepared statements (a macro, for `concat!`).
macro_rules! prepared_prefix {
    () => {
        "statesafe_"
    };
}
const PREPARED_PREFIX: &str = prepared_prefix!();

/// The names of statesafe's prepared statements the server session holds, as one
/// comma-separated column (read in the transaction, before the row lock).
const PREPARED_LIST: &str = concat!(
    "(SELECT string_agg(name, ',') FROM pg_prepared_statements WHERE starts_with(name, '",
    prepared_prefix!(),
    "'))"
);

/// How far below the outgoing version a write's backup prune looks, except on every
/// `PRUNE_WINDOW`th generation (see `write_inner`). The `64` in its statements is this.
const PRUNE_WINDOW: i64 = 64;

/// The values of a write's statement, and how it is sent: as an SQL-level prepared
/// statement (`PREPARE`, once per server session, then `EXECUTE` with the values as
/// literals), so the server plans it once per session rather than once per write
/// (planning was about as much server time as running it). Its name is
/// `statesafe_` and the xxh3-64 of its text (tables included), so a server session
/// that holds that name holds that very statement: behind PgBouncer in transaction
/// mode a client's transactions run on different server sessions, and each
/// transaction learns, in its first round trip on the server session that will run
/// the write (`pg_prepared_statements`), whether that session has it already.
/// `PREPARE` is not undone by a rollback, and the server replans it by itself when a
/// table is altered or the `search_path` differs.
struct Write {
    /// $1 text: the state.
    state: String,
    /// $2 bigint: the generation read under the lock.
    old_generation: i64,
    /// $3 text: the document.
    document: String,
    /// $4 bigint: its checksum.
    checksum: i64,
    /// $5 text: the writer, as JSON.
    writer: String,
    /// $6 text: the settings to record (`NULL`: unchanged).
    settings: Option<String>,
    /// $7 bigint[]: backups to prune (hourly or daily retention).
    drop_backups: Option<Vec<i64>>,
    /// $8 bigint: the OFFSET of the `keep - 1`th newest other backup.
    offset: Option<i64>,
    /// $9 boolean: the history entry carries a snapshot.
    snapshot: Option<bool>,
    /// $10 text: the history entry, as JSON.
    entry: Option<String>,
    /// $11 bigint: the oldest history generation kept.
    oldest_kept: Option<i64>,
}

/// The parameters' types, in order.
const WRITE_TYPES: &str =
    "text, bigint, text, bigint, text, text, bigint[], bigint, boolean, text, bigint";

impl Write {
    fn new(state: &str, old_generation: i64, document: &str, checksum: i64, writer: &str) -> Write {
        Write {
            state: state.to_string(),
            old_generation,
            document: document.to_string(),
            checksum,
            writer: writer.to_string(),
            settings: None,
            drop_backups: None,
            offset: None,
            snapshot: None,
            entry: None,
            oldest_kept: None,
        }
    }

    /// The parameters' types, in order (as [`WRITE_TYPES`]).
    const TYPES: [Type; 11] = [
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::INT8_ARRAY,
        Type::INT8,
        Type::BOOL,
        Type::TEXT,
        Type::INT8,
    ];

    /// The values, in order, for a Bind of the statement.
    fn params(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.state,
            &self.old_generation,
            &self.document,
            &self.checksum,
            &self.writer,
            &self.settings,
            &self.drop_backups,
            &self.offset,
            &self.snapshot,
            &self.entry,
            &self.oldest_kept,
        ]
    }

    /// The size of the Bind message of the statement (the values in the binary
    /// format: text as it is, `bigint` 8 bytes, an array 20 bytes and 12 an element;
    /// each with a length word; the statement's name, made by the client library,
    /// taken as at most 20 bytes).
    fn bound_size(&self) -> u64 {
        let text = |t: &str| t.len() as u64;
        let opt = |t: &Option<String>| t.as_deref().map_or(0, text);
        let array = self
            .drop_backups
            .as_ref()
            .map_or(0, |d| 20 + 12 * d.len() as u64);
        // Type, length, the empty portal's and the statement's names, format
        // codes, the parameters' count and length words, the result format codes.
        let overhead = 1 + 4 + 1 + 21 + 2 + 2 * 11 + 2 + 4 * 11 + 2 + 2;
        overhead
            + text(&self.state)
            + text(&self.document)
            + text(&self.writer)
            + opt(&self.settings)
            + opt(&self.entry)
            + array
            + 8 * 4
            + 1
    }

    /// `PREPARE` (unless `prepared` has it), `EXECUTE` and `COMMIT`, as one simple
    /// query.
    fn statements(&self, body: &str, prepared: &[String]) -> String {
        let prepare = format!("({WRITE_TYPES}) AS {body}");
        let name = format!(
            "{PREPARED_PREFIX}{:016x}",
            format::checksum(prepare.as_bytes())
        );
        let text = |v: &Option<String>| v.as_deref().map_or("NULL".to_string(), literal);
        let int = |v: Option<i64>| v.map_or("NULL".to_string(), |v| v.to_string());
        let array = self.drop_backups.as_ref().map_or("NULL".to_string(), |d| {
            let list: Vec<String> = d.iter().map(i64::to_string).collect();
            format!("ARRAY[{}]::bigint[]", list.join(","))
        });
        let mut sql = String::with_capacity(
            self.document.len() + self.entry.as_ref().map_or(0, String::len) + 512,
        );
        if !prepared.contains(&name) {
            sql.push_str(&format!("PREPARE {name}{prepare};\n"));
        }
        sql.push_str(&format!(
            "EXECUTE {name}({}, {}, {}, {}, {}, {}, {array}, {}, {}, {}, {});\nCOMMIT",
            literal(&self.state),
            self.old_generation,
            literal(&self.document),
            self.checksum,
            literal(&self.writer),
            text(&self.settings),
            int(self.offset),
            self.snapshot
                .map_or("NULL", |s| if s { "true" } else { "false" }),
            text(&self.entry),
            int(self.oldest_kept),
        ));
        sql
    }
}

/// What [`Remote::repair`] did.
enum Repair<T> {
    /// The row was sound: its state and generation.
    Sound(T, u64),
    /// The damaged row was quarantined and this state written as `generation`.
    Recovered {
        state: T,
        generation: u64,
        event: Event,
    },
}

/// The rows of each statement of a round trip, each row's columns as text (as a
/// simple query gives them).
type Statements = Vec<Vec<Vec<Option<String>>>>;

/// What [`Remote::lock_statements`] found.
struct Locking {
    /// The state's row, locked; `None`: the state has no row.
    current: Option<Current>,
    /// The lock row is free (this transaction holds it now) or does not exist.
    lock_free: bool,
    /// The lock row's `xmax` when it is held by another transaction.
    held_by: Option<String>,
    /// The newest generation in the history.
    history_last: Option<u64>,
    /// The backups kept: generation, commit time.
    backups: Vec<(u64, SystemTime)>,
    /// The names of statesafe's prepared statements this server session holds.
    prepared: Vec<String>,
    /// The settings recorded in the state's row, read with its lock.
    settings: Option<String>,
}

impl Locking {
    /// The rows of each statement of a simple query, in order.
    fn statements(messages: &[SimpleQueryMessage]) -> Statements {
        let mut out = Vec::new();
        let mut rows = Vec::new();
        for m in messages {
            match m {
                SimpleQueryMessage::Row(r) => {
                    rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                SimpleQueryMessage::CommandComplete(_) => out.push(std::mem::take(&mut rows)),
                _ => {}
            }
        }
        out
    }

    /// The rows of the last statement.
    fn rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
        Self::statements(messages).pop().unwrap_or_default()
    }

    fn parse(messages: Vec<SimpleQueryMessage>) -> Locking {
        Self::from_statements(Self::statements(&messages))
    }

    /// From the rows of each statement: the last is the look at the lock row, the one
    /// before it the locking `SELECT`, the one before that ends with the list of
    /// prepared statements (none: an empty statement).
    fn from_statements(mut statements: Statements) -> Locking {
        let lock = statements.pop().unwrap_or_default();
        let main = statements.pop().unwrap_or_default();
        // The statement before the locking `SELECT` ends with the list of prepared
        // statements (read before the row lock: nothing under it needs to wait for it).
        let prepared = statements
            .pop()
            .unwrap_or_default()
            .into_iter()
            .next()
            .and_then(|r| r.last().cloned().flatten());
        let int = |v: &Option<String>| v.as_deref().and_then(|t| t.parse::<i64>().ok());
        let settings = main.first().and_then(|r| r.get(6).cloned().flatten());
        let current = main.first().map(|r| Current {
            generation: r.first().and_then(int).unwrap_or(0) as u64,
            document: r.get(1).cloned().flatten(),
            checksum: r.get(2).and_then(int),
            written_at: r.get(3).and_then(int).map(micros),
            writer: r.get(4).cloned().flatten(),
            xid: r.get(5).and_then(int),
            fresh: false,
            kept_versions: false,
            known: None,
        });
        let lock = lock.into_iter().next().unwrap_or_default();
        let column = |i: usize| lock.get(i).cloned().flatten();
        // Free: this transaction locked it now (a row), or it was never made (no xmax).
        let held_by = column(1);
        Locking {
            current,
            lock_free: column(0).is_some() || held_by.is_none(),
            held_by,
            history_last: int(&column(2)).map(|g| g as u64),
            backups: column(3)
                .unwrap_or_default()
                .split(',')
                .filter_map(|b| {
                    let (generation, us) = b.split_once(':')?;
                    Some((generation.parse().ok()?, micros(us.parse().ok()?)))
                })
                .collect(),
            prepared: prepared
                .unwrap_or_default()
                .split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect(),
            settings,
        }
    }
}

/// A row's columns as text, as a simple query gives them (the locking statements'
/// columns are `bigint`, `integer` and `text`).
fn texts_of(row: &Row) -> Vec<Option<String>> {
    (0..row.len())
        .map(|i| match *row.columns()[i].type_() {
            Type::INT8 => row
                .try_get::<_, Option<i64>>(i)
                .ok()
                .flatten()
                .map(|v| v.to_string()),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .ok()
                .flatten()
                .map(|v| v.to_string()),
            _ => row.try_get::<_, Option<String>>(i).ok().flatten(),
        })
        .collect()
}

/// The longest query message PostgreSQL takes: `PQ_LARGE_MESSAGE_LIMIT`, its
/// `MaxAllocSize` (1 GiB - 1) less one, less the message's length word and final NUL.
pub(crate) const STATEMENT_LIMIT: u64 = 0x3fff_ffff - 1 - 5;

static STATEMENT_LIMIT_OVERRIDE: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

fn statement_limit() -> u64 {
    match STATEMENT_LIMIT_OVERRIDE.load(std::sync::atomic::Ordering::Relaxed) {
        0 => STATEMENT_LIMIT,
        n => n,
    }
}

/// What [`Remote::give`] runs on every connection it takes back (tests: a pooler's
/// `server_reset_query`, `DISCARD ALL` or `DEALLOCATE ALL`, run on the server
/// session as it is released).
static RELEASE_QUERY: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

pub(crate) fn set_release_query(query: Option<&str>) {
    *RELEASE_QUERY.lock().unwrap_or_else(|e| e.into_inner()) = query.map(str::to_string);
}

/// Lowers the statement size limit of this process (tests: a 1 GB document is more
/// than a test can afford to build); 0 restores PostgreSQL's.
pub(crate) fn set_statement_limit(bytes: u64) {
    STATEMENT_LIMIT_OVERRIDE.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// The environment variable through which `statesafe lock URL -- CMD` lets CMD's own
/// writers through its lock: the locks held, comma-separated, each `XID@ID`, its
/// transaction id and the id of the state and server it holds ([`Remote::lock_id`]).
pub(crate) const NESTED_ENV: &str = "STATESAFE_PG_LOCKS";

/// Whether this process runs under a `statesafe lock` of a PostgreSQL state.
fn under_a_lock() -> bool {
    std::env::var_os(NESTED_ENV).is_some_and(|held| !held.is_empty())
}

/// Whether the transaction `xmax` that holds the lock row of the state whose lock id
/// is `id` is a `statesafe lock` this process runs under. An entry of another form (a
/// bare transaction id, as earlier builds wrote) matches nothing.
fn nested(xmax: &str, id: &str) -> bool {
    if id.is_empty() {
        return false;
    }
    let wanted = format!("{xmax}@{id}");
    std::env::var(NESTED_ENV).is_ok_and(|held| held.split(',').any(|x| x.trim() == wanted))
}

/// `s` as an SQL string literal, whatever `standard_conforming_strings` says.
fn literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// A state held by `statesafe lock URL -- CMD`: a transaction holding its lock row.
/// Dropping it ends the transaction; so does this process dying (its connection
/// closes).
pub(crate) struct Held<'r> {
    remote: &'r Remote,
    /// This thread's hold of the state (a nested `begin` of this store is refused).
    _hold: super::nested::Hold,
    /// `None` when this `lock` passes through an outer one (see `xid`).
    client: Mutex<Option<Client>>,
    /// The holding transaction; `None`: a `lock` nested in a `lock` of the same
    /// state, which holds nothing itself (the outer one holds the state while this
    /// one's CMD runs, and lets CMD's writers through already).
    xid: Option<u64>,
    /// The id of the state and server it holds ([`Remote::lock_id`]).
    id: String,
}

impl Held<'_> {
    /// The environment variable, and its value, that lets CMD's own writers through.
    pub(crate) fn nested_env(&self) -> (&'static str, String) {
        let mut held = std::env::var(NESTED_ENV).unwrap_or_default();
        if let Some(xid) = self.xid {
            if !held.is_empty() {
                held.push(',');
            }
            held.push_str(&format!("{xid}@{}", self.id));
        }
        (NESTED_ENV, held)
    }

    /// Checks that the holding transaction is still there: a lost connection (the
    /// server restarted, `idle_in_transaction_session_timeout`, a terminated
    /// backend) released the lock, and other writers may have got in.
    pub(crate) fn check(&self) -> Result<()> {
        let mut client = self.client.lock();
        if self.xid.is_none() {
            // Passing through: the outer `lock` checks its own.
            return Ok(());
        }
        match conn(&mut client).simple_query("SELECT 1") {
            Ok(_) => Ok(()),
            Err(e) => Err(Error::Remote {
                path: self.remote.display().to_path_buf(),
                op: "hold the lock of".into(),
                reason: format!(
                    "the transaction holding the lock ended while it was held, so other writers may have got in: {}",
                    chain_text(&e)
                ),
                hint: "check the state (`statesafe log URL`); on the server, an idle_in_transaction_session_timeout shorter than the command ends such a lock".into(),
                source: Some(Box::new(e)),
            }),
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(mut client) = self.client.get_mut().take()
            && client.batch_execute("ROLLBACK").is_ok()
        {
            self.remote.give(client);
        }
    }
}

/// A transaction's connection (a function, not a method, so that it borrows the
/// field alone).
fn conn(client: &mut Option<Client>) -> &mut Client {
    client
        .as_mut()
        .expect("invariant: a transaction has its connection until it ends")
}

fn backup_row(r: &Row) -> Current {
    Current {
        generation: r.get::<_, i64>(0) as u64,
        document: r.get(1),
        checksum: r.get(2),
        written_at: r.get::<_, Option<i64>>(3).map(micros),
        writer: None,
        xid: None,
        fresh: false,
        kept_versions: false,
        known: None,
    }
}

/// The error and its causes, as one line.
fn chain_text(e: &postgres::Error) -> String {
    crate::error::chain_text(e)
}

/// Whether the server refused a statement with an ordinary `ERROR` (the session goes
/// on), as opposed to a lost connection or a `FATAL` or `PANIC` that ends it.
fn refused(e: &postgres::Error) -> bool {
    use postgres::error::Severity;
    e.as_db_error().is_some_and(|d| match d.parsed_severity() {
        Some(s) => s == Severity::Error,
        None => d.severity() == "ERROR",
    })
}

/// Whether the connection failed or the server ended the session (as opposed to the
/// server refusing a statement). An idle pooled connection that the server ended
/// meanwhile (`pg_terminate_backend`, a restart, `idle_session_timeout`) answers its
/// next statement with the `FATAL` the server sent on leaving (`57P01`, `57P05`, ...):
/// nothing ran there, so the callers, which retry only the first statements of a
/// pooled connection (reads, or `BEGIN` and the locking read), connect again.
fn lost(e: &postgres::Error) -> bool {
    !refused(e)
}

fn micros(us: i64) -> SystemTime {
    if us >= 0 {
        UNIX_EPOCH + Duration::from_micros(us as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
    }
}

/// `statesafe PID@HOST OPERATION: COMMAND`, cut to PostgreSQL's 63 bytes, with
/// nothing that needs quoting in an SQL literal.
fn application_name(operation: &str) -> String {
    // Remembered per thread for the last operation and process id (a fork's child
    // names itself afresh): built on every transaction, it was about 2% of a
    // write's client time.
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u32, String, String)>> =
            const { std::cell::RefCell::new(None) };
    }
    let pid = crate::sys::pid();
    if let Some(name) = LAST.with_borrow(|last| {
        last.as_ref()
            .filter(|(p, op, _)| *p == pid && op == operation)
            .map(|(_, _, name)| name.clone())
    }) {
        return name;
    }
    let name = application_name_of(operation);
    LAST.with_borrow_mut(|last| *last = Some((pid, operation.to_string(), name.clone())));
    name
}

fn application_name_of(operation: &str) -> String {
    let (host, _, command) = crate::lock::identity();
    let raw = format!(
        "statesafe {}@{host} {operation}: {command}",
        crate::sys::pid()
    );
    let mut out = String::new();
    for c in raw.chars() {
        let c = if c.is_ascii_graphic() && c != '\'' && c != '\\' || c == ' ' {
            c
        } else {
            '?'
        };
        if out.len() + c.len_utf8() > 63 {
            break;
        }
        out.push(c);
    }
    out
}

/// The holder from a row of [`sql::holder`]: statesafe's own name, or what the
/// server knows of another client.
fn holder_of(row: &Row) -> Holder {
    let backend: i32 = row.get(0);
    let app: Option<String> = row.get(1);
    let user: Option<String> = row.get(2);
    let addr: Option<String> = row.get(3);
    let since: Option<String> = row.get(4);
    let app = app.unwrap_or_default();
    let user = user.unwrap_or_default();
    let addr = addr.unwrap_or_default();
    let since = since.unwrap_or_default();
    let parsed = app.strip_prefix("statesafe ").and_then(|rest| {
        let (who, rest) = rest.split_once(' ')?;
        let (pid, host) = who.split_once('@')?;
        let (operation, command) = rest.split_once(": ").unwrap_or((rest, ""));
        Some((pid.parse::<u32>().ok()?, host, operation, command))
    });
    match parsed {
        Some((pid, host, operation, command)) => Holder {
            pid,
            host: host.to_string(),
            user: format!("{user} (database role)"),
            command: format!("{command} (server backend {backend}, from {addr})"),
            operation: operation.to_string(),
            since,
        },
        None => Holder {
            pid: u32::try_from(backend).unwrap_or(0),
            host: addr,
            user: format!("{user} (database role)"),
            command: if app.is_empty() {
                "a client that gave no application_name".into()
            } else {
                app
            },
            operation: format!("a transaction outside statesafe (server backend {backend})"),
            since,
        },
    }
}

impl Remote {
    /// A PostgreSQL state is stored plain (its row's checksum covers the document):
    /// another format asked for (an option, settings to record) is refused, never
    /// silently written plain (red13).
    fn plain_only(&self, format: Format) -> Result<()> {
        let name = match format {
            Format::Plain => return Ok(()),
            Format::Sealed => "sealed",
            Format::Journal => "journal",
        };
        Err(Error::Unsupported {
            path: self.display().to_path_buf(),
            what: format!("the {name} format"),
            why: "for a PostgreSQL state, which is stored plain (the row's checksum covers its document); leave the format at plain".into(),
        })
    }
}

/// Damaged recorded settings (the `settings` column of the state's row), which every
/// open refuses: `statesafe recover URL` moves them aside first.
impl Remote {
    /// The error of an open that found the settings damaged: its path is
    /// `URL#settings`, so that its hint names the step that works.
    fn settings_damaged(&self, e: &serde_json::Error) -> Error {
        Error::Corrupt {
            path: PathBuf::from(format!("{}#settings", self.display().display())),
            line: None,
            column: None,
            reason: format!("the recorded settings are not valid: {e}"),
        }
    }

    /// Moves the state's recorded settings, if they are not valid, into the
    /// quarantine table as they are (with the row's generation and why), and records
    /// none in their place (the defaults, as for a state never given settings), under
    /// the row's lock, in one transaction; the quarantined copy's location, or `None`
    /// when they are valid (or the state has no row). Never done by an open: only by
    /// an explicit recovery.
    pub(crate) fn quarantine_settings(
        url: &str,
        lock_timeout: Duration,
    ) -> Result<Option<PathBuf>> {
        let (remote, mut client) = Remote::connected(url)?;
        let (main, state) = (&remote.names.main, literal(&remote.address.state));
        let millis = lock_timeout.as_millis().clamp(1, i32::MAX as u128);
        let locked = client
            .simple_query(&format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT set_config('lock_timeout', '{millis}ms', true), set_config('application_name', {}, true), {SYNCHRONOUS_COMMIT}, {};
SELECT generation::text, settings FROM {main} WHERE state = {state} FOR UPDATE",
                literal(&application_name("recover settings")),
                statement_timeout(&format!("'{millis}ms'"))
            ))
            .map_err(|e| match e.code() {
                Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE => Error::LockTimeout {
                    path: remote.display().to_path_buf(),
                    waited: lock_timeout,
                    holder: remote.lock_holder().map(Box::new),
                },
                _ => remote.error("lock", e),
            })?;
        let row = Locking::rows(&locked)
            .into_iter()
            .next()
            .unwrap_or_default();
        let column = |i: usize| row.get(i).cloned().flatten();
        let (Some(generation), Some(settings)) = (column(0), column(1)) else {
            return Ok(None);
        };
        let Err(damage) = serde_json::from_str::<Settings>(&settings) else {
            return Ok(None);
        };
        let reason = format!("the recorded settings are not valid: {damage}");
        let moved = client
            .simple_query(&format!(
                "{};\n{};\nUPDATE {main} SET settings = '{{}}' WHERE state = {state};\nCOMMIT",
                remote.names.create_quarantine(),
                remote.names.quarantine_settings(
                    &state,
                    generation.parse::<i64>().unwrap_or(0),
                    &literal(&settings),
                    &literal(&reason)
                ),
            ))
            .map_err(|e| remote.error("quarantine the damaged settings of", e))?;
        let id = Locking::statements(&moved)
            .get(1)
            .and_then(|rows| rows.first())
            .and_then(|r| r.first().cloned().flatten())
            .unwrap_or_default();
        remote.give(client);
        Ok(Some(PathBuf::from(format!(
            "{}#quarantine={id}",
            remote.display().display()
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A remote for `state`, never connected.
    fn remote(state: &str) -> Remote {
        let address = Address::parse(&format!("postgres://u@127.0.0.1:5999/db?state={state}"))
            .expect("a valid URL");
        let names = Names::new(
            address.schema.as_deref().unwrap_or("public"),
            &address.table,
        );
        Remote {
            address,
            names,
            pool: Mutex::new(Vec::new()),
            sql_prepare: AtomicBool::new(false),
            unsettled: Mutex::new(Vec::new()),
            any_unsettled: AtomicBool::new(false),
            settings_seen: Mutex::new(None),
        }
    }

    fn row(document: &str, generation: u64, checksum: i64) -> Current {
        Current {
            generation,
            document: Some(document.to_string()),
            checksum: Some(checksum),
            written_at: None,
            writer: None,
            xid: None,
            fresh: false,
            kept_versions: false,
            known: None,
        }
    }

    /// A row's checksum names its state (review19): another state's row does not
    /// verify, nor one at another generation; rows of the earlier forms (seeded with
    /// the generation alone, or not seeded) still do, for any state, until rewritten.
    #[test]
    fn row_checksums_name_their_state_and_the_earlier_forms_still_verify() {
        let doc = r#"{"n":1}"#;
        let (a, b) = (remote("a"), remote("b"));
        let sum = row_checksum("a", doc, 3);
        assert_eq!(
            a.verified_text(&row(doc, 3, sum), "row").unwrap(),
            Some(doc)
        );
        let copied = row(doc, 3, sum);
        assert!(is_damage(&b.verified_text(&copied, "row").unwrap_err()));
        assert!(is_damage(
            &a.verified_text(&row(doc, 4, sum), "row").unwrap_err()
        ));
        assert_ne!(sum, row_checksum("b", doc, 3));
        for earlier in [
            row_checksum_unnamed(doc, 3),
            format::checksum(doc.as_bytes()) as i64,
        ] {
            assert_eq!(
                b.verified_text(&row(doc, 3, earlier), "row").unwrap(),
                Some(doc)
            );
        }
    }
}
