//! The tables, by name: their layout, creation on first use, and the check that a
//! table found is the one statesafe made.

/// The tables of one `table=` name, as quoted identifiers qualified with their
/// schema: the URL's `schema=`, else the one the open resolved
/// ([`super::remote::Remote`]'s `default_schema`), so that no statement follows a
/// `search_path` another client of a pooled server session set, and no temporary
/// table of the same name shadows one (review19pg).
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// One row per state: the current version.
    pub main: String,
    /// Replaced versions kept as backups.
    pub backups: String,
    /// One entry per generation.
    pub history: String,
    /// Damaged versions moved aside by a recovery (created when first needed).
    pub quarantine: String,
    /// The tables' names as `to_regclass` takes them, in the same order (the
    /// quarantine last: tables made by earlier builds may lack it, and it is made
    /// when first needed).
    pub regclass: [String; 4],
}

/// What statesafe appends to the `table=` name for the backups, history and
/// quarantine tables. A `table=` name ending with one of them is refused
/// ([`super::address::Address::parse`]): it would be another URL's table too.
pub(crate) const SUFFIXES: [&str; 3] = ["_backups", "_history", "_quarantine"];

impl Names {
    pub(crate) fn new(schema: &str, table: &str) -> Names {
        // The table is a plain identifier (checked when the URL was parsed); the
        // schema may be any name the server gave.
        let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
        let qualify = |t: &str| format!("{}.{}", quote(schema), quote(t));
        let [backups, history, quarantine] = SUFFIXES.map(|suffix| format!("{table}{suffix}"));
        let quarantine = qualify(&quarantine);
        Names {
            main: qualify(table),
            backups: qualify(&backups),
            history: qualify(&history),
            quarantine: quarantine.clone(),
            regclass: [
                qualify(table),
                qualify(&backups),
                qualify(&history),
                quarantine,
            ],
        }
    }

    /// The tables, created if missing (one transaction; `IF NOT EXISTS`).
    pub(crate) fn create(&self) -> String {
        let Names {
            main,
            backups,
            history,
            ..
        } = self;
        let quarantine = self.create_quarantine();
        format!(
            "BEGIN;
CREATE TABLE IF NOT EXISTS {main} (
    state      text PRIMARY KEY,
    generation bigint NOT NULL CHECK (generation >= 0),
    document   text,
    checksum   bigint,
    settings   text NOT NULL DEFAULT '{{}}',
    written_at timestamptz NOT NULL DEFAULT now(),
    writer     text,
    CHECK ((document IS NULL) = (checksum IS NULL))
);
CREATE TABLE IF NOT EXISTS {backups} (
    state      text NOT NULL,
    generation bigint NOT NULL,
    document   text NOT NULL,
    checksum   bigint NOT NULL,
    written_at timestamptz NOT NULL,
    PRIMARY KEY (state, generation)
);
CREATE TABLE IF NOT EXISTS {history} (
    state      text NOT NULL,
    generation bigint NOT NULL,
    snapshot   boolean NOT NULL,
    entry      text NOT NULL,
    PRIMARY KEY (state, generation)
);
{quarantine};
COMMIT;"
        )
    }

    /// The quarantine table, created if missing.
    pub(crate) fn create_quarantine(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
    id             bigserial PRIMARY KEY,
    state          text NOT NULL,
    generation     bigint NOT NULL,
    document       text,
    checksum       bigint,
    written_at     timestamptz,
    writer         text,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    reason         text NOT NULL
)",
            self.quarantine
        )
    }
}

impl Names {
    /// Moves the state's current row, as it is, into the quarantine table (made
    /// here if missing, in the recovering transaction), with why; returns its id.
    pub(crate) fn quarantine(&self, state: &str, reason: &str) -> String {
        let Names {
            main, quarantine, ..
        } = self;
        let create = self.create_quarantine();
        format!(
            "{create};
INSERT INTO {quarantine} (state, generation, document, checksum, written_at, writer, reason)
    SELECT state, generation, document, checksum, written_at, writer, {reason} FROM {main} WHERE state = {state}
    RETURNING id::text"
        )
    }
}

impl Names {
    /// Keeps a state's damaged recorded settings in the quarantine table (made
    /// first: [`Names::create_quarantine`]): the text in `document`, with no
    /// checksum, and the reason saying they are settings; returns its id.
    pub(crate) fn quarantine_settings(
        &self,
        state: &str,
        generation: i64,
        settings: &str,
        reason: &str,
    ) -> String {
        format!(
            "INSERT INTO {} (state, generation, document, reason) VALUES ({state}, {generation}, {settings}, {reason}) RETURNING id::text",
            self.quarantine
        )
    }
}

/// The columns statesafe reads and writes, by table (0 main, 1 backups, 2 history,
/// 3 quarantine), with their types as `format_type` prints them.
pub(crate) const COLUMNS: [&[(&str, &str)]; 4] = [
    &[
        ("state", "text"),
        ("generation", "bigint"),
        ("document", "text"),
        ("checksum", "bigint"),
        ("settings", "text"),
        ("written_at", "timestamp with time zone"),
        ("writer", "text"),
    ],
    &[
        ("state", "text"),
        ("generation", "bigint"),
        ("document", "text"),
        ("checksum", "bigint"),
        ("written_at", "timestamp with time zone"),
    ],
    &[
        ("state", "text"),
        ("generation", "bigint"),
        ("snapshot", "boolean"),
        ("entry", "text"),
    ],
    &[
        ("id", "bigint"),
        ("state", "text"),
        ("generation", "bigint"),
        ("document", "text"),
        ("checksum", "bigint"),
        ("written_at", "timestamp with time zone"),
        ("writer", "text"),
        ("quarantined_at", "timestamp with time zone"),
        ("reason", "text"),
    ],
];

/// The index in [`COLUMNS`] of the quarantine table, which may be missing (tables
/// made by earlier builds lack it; it is made when first needed).
pub(crate) const QUARANTINE: usize = 3;

/// The kinds of table, in [`COLUMNS`] order, for messages.
pub(crate) const KINDS: [&str; 4] = [
    "main table",
    "backups table",
    "history table",
    "quarantine table",
];

/// The tables found ([`LAYOUT`]'s rows: (table index + 1, column, type)) that have
/// the whole layout of another kind of statesafe table, one their own kind's layout
/// does not include: (index, the kind it has the layout of). `table=T` where
/// `T_backups` is the main table of another URL (`table=T_backups`, made before such
/// names were refused) finds a backups table with a main table's columns (review19pg).
/// A backups table's columns are a main table's and a quarantine table's too, so
/// those two never count as having a backups table's layout.
pub(crate) fn other_kinds(found: &[(i64, String, String)]) -> Vec<(usize, usize)> {
    let has = |i: usize, columns: &[(&str, &str)]| {
        columns.iter().all(|(name, ty)| {
            found
                .iter()
                .any(|f| f.0 == i as i64 + 1 && f.1 == *name && f.2 == *ty)
        })
    };
    let includes = |i: usize, j: usize| COLUMNS[j].iter().all(|c| COLUMNS[i].contains(c));
    let mut other = Vec::new();
    for i in 0..COLUMNS.len() {
        if !found.iter().any(|f| f.0 == i as i64 + 1) {
            continue;
        }
        if let Some(j) =
            (0..COLUMNS.len()).find(|&j| j != i && !includes(i, j) && has(i, COLUMNS[j]))
        {
            other.push((i, j));
        }
    }
    other
}

/// The columns of the tables as they are: (table index, column, type), and on each
/// row its table's owner, whether the current user is that role or a member of it
/// (a superuser is a member of every role), its persistence (`p` permanent, `u`
/// unlogged, `t` temporary) and the current user: see [`Table`].
pub(crate) const LAYOUT: &str = "SELECT t.i, a.attname::text, format_type(a.atttypid, a.atttypmod),
    pg_get_userbyid(c.relowner)::text, pg_has_role(current_user, c.relowner, 'MEMBER'),
    c.relpersistence::text, current_user::text
FROM unnest($1::text[]) WITH ORDINALITY AS t(name, i)
JOIN pg_class c ON c.oid = to_regclass(t.name)
JOIN pg_attribute a ON a.attrelid = c.oid
WHERE a.attnum > 0 AND NOT a.attisdropped";

/// What [`LAYOUT`] says of a table found, besides its columns.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Table {
    /// Its index in [`COLUMNS`].
    pub index: usize,
    /// The role that owns it.
    pub owner: String,
    /// Whether the current user is that role or a member of it.
    pub member: bool,
    /// `pg_class.relpersistence`: `p` permanent, `u` unlogged, `t` temporary.
    pub persistence: String,
    /// The current user, for messages.
    pub user: String,
}

/// The holder of a row lock: the transaction in the row's `xmax`, its backend, and
/// the `application_name` statesafe sets in every transaction it runs. `$1` is the
/// state's row, `$2` its lock row (held by `statesafe lock`), whose holder comes first.
pub(crate) fn holder(main: &str) -> String {
    format!(
        "SELECT l.pid, a.application_name, a.usename::text, coalesce(host(a.client_addr), 'local socket'),
        to_char(a.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
FROM {main} s
JOIN pg_locks l ON l.locktype = 'transactionid' AND l.transactionid = s.xmax AND l.granted
    AND l.mode = 'ExclusiveLock'
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE s.state = $1 OR s.state = $2
ORDER BY s.state = $2 DESC
LIMIT 1"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`LAYOUT`]'s rows for tables laid out as `kinds[i]` says (`None`: missing).
    fn found(kinds: [Option<usize>; 4]) -> Vec<(i64, String, String)> {
        let mut rows = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            if let Some(k) = kind {
                for (name, ty) in COLUMNS[*k] {
                    rows.push((i as i64 + 1, name.to_string(), ty.to_string()));
                }
            }
        }
        rows
    }

    #[test]
    fn a_table_with_another_kinds_layout_is_found_and_statesafes_own_are_not() {
        assert_eq!(
            other_kinds(&found([Some(0), Some(1), Some(2), Some(3)])),
            []
        );
        assert_eq!(other_kinds(&found([Some(0), Some(1), Some(2), None])), []);
        // Another URL's main table where this one's backups table goes.
        assert_eq!(other_kinds(&found([None, Some(0), None, None])), [(1, 0)]);
        // A history or quarantine table there, or a backups table as the history.
        assert_eq!(
            other_kinds(&found([Some(0), Some(2), Some(1), None])),
            [(1, 2), (2, 1)]
        );
        assert_eq!(
            other_kinds(&found([Some(0), Some(3), Some(2), None])),
            [(1, 3)]
        );
        assert_eq!(
            other_kinds(&found([Some(0), Some(1), Some(2), Some(0)])),
            [(3, 0)]
        );
    }
}
