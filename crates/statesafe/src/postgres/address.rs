//! The URL of a remote state, and where its password comes from.
//!
//! `postgres://USER@HOST:PORT/DATABASE?state=NAME[&table=T][&schema=S][&sslmode=M]
//! [&passfile=PATH][&connect_timeout=SECS][&prepare=protocol|sql][&application_name=…]`. The password is
//! taken, in this order, from the URL (library callers only: the CLI refuses it, since
//! a command line is visible to every local user), `PGPASSWORD`, then the first
//! matching line of the password file (`passfile=`, `PGPASSFILE`, or `~/.pgpass`,
//! ignored unless readable by its owner only), as libpq does.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A parsed state URL.
pub(crate) struct Address {
    /// The URL without any password, for messages.
    pub display: PathBuf,
    /// The connection settings for the client library.
    pub config: tokio_postgres::Config,
    /// The state's name (the row's key).
    pub state: String,
    /// The schema of the tables (`None`: the connection's search path).
    pub schema: Option<String>,
    /// The main table's name; backups and history are `TABLE_backups`, `TABLE_history`.
    pub table: String,
    /// How to connect: plain, or TLS with the certificate checks `sslmode` asks for.
    pub tls: super::tls::Tls,
    /// `prepare=sql`: send the statements of a write as SQL-level `EXECUTE`s of
    /// statements `PREPARE`d in the transaction, never as protocol-level prepared
    /// statements (for a pooler that moves a client between server sessions and
    /// does not track them: PgBouncer before 1.21 in transaction mode).
    pub sql_prepare: bool,
}

/// The parameters whose value an error may quote: statesafe's own, none a secret.
const SHOWN: [&str; 7] = [
    "state",
    "table",
    "schema",
    "passfile",
    "sslmode",
    "sslrootcert",
    "prepare",
];

/// The longest table name accepted (PostgreSQL's identifiers are at most 63 bytes,
/// and `_history` is appended).
const MAX_TABLE: usize = 50;

impl Address {
    pub(crate) fn parse(url: &str) -> Result<Address> {
        let bad = |reason: String| Error::BadPath {
            path: PathBuf::from(redact(url)),
            reason,
        };
        // Before anything is read from it: the client library would take the text
        // after the first `@` for the host, look it up (the password's tail sent to
        // the name resolver) and name it in its errors (review19pg).
        if crate::secret::unencoded_at_in_userinfo(url) {
            return Err(bad(
                "it holds an `@` that is not percent-encoded where the client library would misread it (it takes the user name and password up to the first `@` of the whole URL, so an `@` in the password, the database name or a query value before it would end them there, and the rest be taken for the host); write each `@` of the user name, password, database name or query as `%40` (and the password is better kept out of the URL: PGPASSWORD, ~/.pgpass or `passfile=PATH`)"
                    .into(),
            ));
        }
        // The query starts after the userinfo, whose password may hold a `?`.
        let (base, query) = crate::secret::split_url_query(url);
        let query = query.unwrap_or("");
        // A fragment (after the userinfo, which the client library takes up to the
        // first `@`) names nothing statesafe opens: `URL#backup=N` is how messages
        // name a backup. Taken as part of the state's name, it made a new state (red13).
        let host_on = base.split_once('@').map_or(base, |(_, rest)| rest);
        let fragment = match (host_on.find('#'), query.find('#')) {
            (Some(i), _) => Some(&host_on[i..]),
            (None, Some(i)) => Some(&query[i..]),
            (None, None) => None,
        };
        if let Some(fragment) = fragment {
            return Err(bad(format!(
                "`{}` is not part of a state's URL: `URL#backup=N`, `URL#quarantine=ID` and `URL#settings` are how statesafe names a backup, a quarantined row and the recorded settings in its messages; list the backups with `statesafe backups URL` and read one with `statesafe restore URL --generation N` (or `Store::document_at`); a `#` in a state's name is written `%23`",
                fragment
            )));
        }
        let mut state = None;
        let mut table = "statesafe".to_string();
        let mut schema = None;
        let mut passfile = None;
        let mut sslmode = "prefer".to_string();
        let mut sslrootcert = None;
        let mut sql_prepare = false;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            // The value is quoted only for statesafe's own parameters, none of which
            // holds a secret: another one may be the password (`password=`, also
            // spelled `pass%77ord=`), which no message shows (review19).
            let value = decode(value).ok_or_else(|| {
                bad(if SHOWN.contains(&key) {
                    format!("`{pair}` is not percent-encoded correctly")
                } else {
                    format!(
                        "the value of `{}` is not percent-encoded correctly (a `%` is written `%25`)",
                        decode(key).filter(|k| !k.is_empty()).unwrap_or_else(|| key.to_string())
                    )
                })
            })?;
            match key {
                "state" => state = Some(value),
                "table" => table = value,
                "schema" => schema = Some(value),
                "passfile" => passfile = Some(PathBuf::from(value)),
                "sslmode" => sslmode = value,
                "sslrootcert" => sslrootcert = Some(value),
                "prepare" => {
                    sql_prepare = match value.as_str() {
                        "protocol" => false,
                        "sql" => true,
                        _ => {
                            return Err(bad(format!(
                                "`prepare={value}` must be `protocol` (the default: statements prepared once per connection, then bound) or `sql` (SQL-level `PREPARE` and `EXECUTE`, for a pooler that does not keep a client on one server session and does not track prepared statements, as PgBouncer before 1.21 in transaction mode)"
                            )));
                        }
                    }
                }
                _ => rest.push(pair.to_string()),
            }
        }
        let state = state.ok_or_else(|| {
            bad(
                "it names no state: add `?state=NAME` (the row of the table that holds this state)"
                    .into(),
            )
        })?;
        if state.is_empty() || state.len() > 200 || state.chars().any(char::is_control) {
            return Err(bad(format!(
                "`state={state}` must be 1 to 200 printable characters"
            )));
        }
        for (what, name) in [("table", Some(&table)), ("schema", schema.as_ref())] {
            if let Some(name) = name
                && !is_identifier(name)
            {
                return Err(bad(format!(
                    "`{what}={name}` must be a plain identifier: a letter or `_`, then letters, digits or `_`, at most {MAX_TABLE} bytes"
                )));
            }
        }
        if let Some(suffix) = super::sql::SUFFIXES
            .iter()
            .find(|s| table.len() > s.len() && table.ends_with(*s))
        {
            let other = &table[..table.len() - suffix.len()];
            return Err(bad(format!(
                "`table={table}` ends with `{suffix}`, which statesafe appends to `table={other}` for one of its other tables: the two URLs would share a table (a state's versions read as another's backups or history); give a name that ends with none of {} (tables an earlier build made under such a name: rename the three together, docs/remote.md)",
                super::sql::SUFFIXES.map(|s| format!("`{s}`")).join(", ")
            )));
        }
        if let Some(schema) = schema.as_deref()
            && is_temporary_schema(schema)
        {
            return Err(bad(temporary_schema_refused(schema)));
        }
        let tls = super::tls::for_mode(&sslmode, sslrootcert.as_deref()).map_err(bad)?;
        // The client library knows disable, prefer and require; the checks of the
        // verify modes are the connector's.
        rest.push(format!(
            "sslmode={}",
            match sslmode.as_str() {
                "disable" => "disable",
                "allow" | "prefer" => "prefer",
                _ => "require",
            }
        ));
        let plain = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config: tokio_postgres::Config =
            plain.parse().map_err(|e: tokio_postgres::Error| {
                // The cause names the parameter (`unknown option \`format\``).
                let cause =
                    std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
                bad(format!("it is not a PostgreSQL connection URL: {e}{cause}"))
            })?;
        if config.get_hosts().is_empty() {
            return Err(bad(
                "it names no host: `postgres://USER@HOST:PORT/DATABASE?state=NAME`".into(),
            ));
        }
        // Over TCP (every host of the URL), statesafe's connector makes the TLS
        // request, so that it sees the server's requests for the password and refuses
        // one in clear text or MD5 unless the certificate was verified: the client
        // library hands it the socket at once (`require` with direct negotiation).
        // A Unix socket is reached through the file system, where its directory's
        // permissions say who may listen; the client library negotiates there as before.
        let tcp_only = config
            .get_hosts()
            .iter()
            .all(|h| matches!(h, tokio_postgres::config::Host::Tcp(_)));
        let tls = if tcp_only {
            let direct =
                config.get_ssl_negotiation() == tokio_postgres::config::SslNegotiation::Direct;
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            config.ssl_negotiation(tokio_postgres::config::SslNegotiation::Direct);
            tls.guarded(&sslmode, sslrootcert.as_deref(), direct)
        } else {
            tls
        };
        if config.get_user().is_none() {
            let user = std::env::var("PGUSER")
                .ok()
                .unwrap_or_else(|| crate::lock::identity().1.clone());
            config.user(&user);
        }
        if config.get_dbname().is_none() {
            let db = config.get_user().unwrap_or_default().to_string();
            config.dbname(&db);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        // A server that stops answering once connected (its machine gone, a network
        // partition) is noticed by TCP, unless the URL says otherwise: data sent and
        // not acknowledged for 60 s (`tcp_user_timeout`), or 30 s of silence and then
        // 3 keepalive probes 10 s apart left unanswered, end the connection (the call
        // fails as a lost connection; a COMMIT's outcome is settled as for any lost
        // COMMIT). The client library's own defaults wait 2 hours before a first probe.
        let given = |key: &str| rest.iter().any(|pair| pair.split('=').next() == Some(key));
        let seconds = std::time::Duration::from_secs;
        if !given("tcp_user_timeout") {
            config.tcp_user_timeout(seconds(60));
        }
        if !given("keepalives_idle") {
            config.keepalives_idle(seconds(30));
        }
        if !given("keepalives_interval") {
            config.keepalives_interval(seconds(10));
        }
        if !given("keepalives_retries") {
            config.keepalives_retries(3);
        }
        if config.get_password().is_none()
            && let Some(password) = password_for(&config, passfile.as_deref())
        {
            config.password(password);
        }
        Ok(Address {
            display: PathBuf::from(redact(url)),
            config,
            state,
            schema,
            table,
            tls,
            sql_prepare,
        })
    }
}

/// Whether the URL carries a password (`postgres://user:PASSWORD@…` or `password=`,
/// also percent-encoded: any the client library would take), which a command line
/// must not (every local user can read it).
///
/// ```
/// assert!(statesafe::postgres::has_password("postgres://bot:s3cret@db/ops?state=a"));
/// assert!(statesafe::postgres::has_password("postgres://bot@db/ops?state=a&pass%77ord=x"));
/// assert!(!statesafe::postgres::has_password("postgres://bot@db/ops?state=a"));
/// ```
pub fn has_password(url: &str) -> bool {
    crate::secret::redact_url(url).1
}

/// The URL with any password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    crate::secret::redact_url(url).0
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= MAX_TABLE
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether a schema is a session's temporary schema: `pg_temp` (the alias of the
/// session's own) or `pg_temp_N` (one session's), in any case. Tables made there
/// are seen by that one connection only and dropped when it closes (review19pg).
pub(crate) fn is_temporary_schema(schema: &str) -> bool {
    let lower = schema.to_ascii_lowercase();
    lower == "pg_temp" || lower.starts_with("pg_temp_")
}

/// Why a temporary schema is refused, and what to give instead.
pub(crate) fn temporary_schema_refused(schema: &str) -> String {
    format!(
        "`schema={schema}` is a session's temporary schema: tables made there are seen by that one connection only and dropped when it closes, so each connection would have a state of its own and an acknowledged write would go with it; give a schema every connection shares (`schema=public`, or one made with `CREATE SCHEMA`)"
    )
}

/// Percent-decoding of a query value (`+` stays `+`).
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The password from `PGPASSWORD` or the password file, as libpq looks it up.
fn password_for(config: &tokio_postgres::Config, passfile: Option<&Path>) -> Option<Vec<u8>> {
    if let Some(p) = std::env::var_os("PGPASSWORD") {
        return Some(p.into_encoded_bytes());
    }
    let file = passfile
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("PGPASSFILE").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
    let text = read_private(&file)?;
    let host = match config.get_hosts().first()? {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(_) => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let db = config.get_dbname().unwrap_or_default();
    let user = config.get_user().unwrap_or_default();
    pgpass_lookup(&text, [&host, &port, db, user])
}

/// The password file's text, if it is a regular file readable by its owner only
/// (libpq ignores a file others may read, and so does this).
fn read_private(file: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(target: "statesafe", "password file `{}` has group or world access; ignored (chmod 0600 it)", file.display());
        return None;
    }
    std::fs::read_to_string(file).ok()
}

/// The first line of a pgpass file matching `host:port:database:user` (`*` matches
/// anything; `\:` and `\\` are a literal colon and backslash).
pub(crate) fn pgpass_lookup(text: &str, wanted: [&str; 4]) -> Option<Vec<u8>> {
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = wanted
            .iter()
            .zip(&fields)
            .all(|(want, field)| field == "*" || field == want);
        if matches {
            return Some(fields[4].clone().into_bytes());
        }
    }
    None
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields
                        .last_mut()
                        .expect("invariant: never empty")
                        .push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("invariant: never empty").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_first_matching_line_wins_with_wildcards_and_escapes() {
        let text = "# comment\nother:5432:db:u:no\n*:5433:*:u:p\\:w\\\\d\n*:*:*:*:fallback\n";
        assert_eq!(
            pgpass_lookup(text, ["h", "5433", "db", "u"]),
            Some(b"p:w\\d".to_vec())
        );
        assert_eq!(
            pgpass_lookup(text, ["h", "5432", "db", "u"]),
            Some(b"fallback".to_vec())
        );
        assert_eq!(pgpass_lookup("h:1:d:u:x", ["h", "2", "d", "u"]), None);
    }

    /// review19pg: a password with an unencoded `@` was cut there by the client
    /// library, which took the rest as the host: it looked that up (the password's
    /// tail sent to the name resolver) and every message showed it. Refused before
    /// any connection, and the refusal shows none of it.
    #[test]
    fn a_url_whose_userinfo_holds_an_unencoded_at_is_refused_without_showing_it() {
        let url = "postgres://bot:pa@zq9xk@127.0.0.1:1/db?state=a";
        let err = match Address::parse(url) {
            Ok(a) => panic!(
                "accepted, as host {:?} and display {}",
                a.config.get_hosts(),
                a.display.display()
            ),
            Err(e) => e,
        };
        let shown = format!("{err} {:?}", err.hint());
        assert!(matches!(err, Error::BadPath { .. }), "{shown}");
        assert!(!shown.contains("zq9xk"), "{shown}");
        assert!(shown.contains("%40"), "{shown}");
        // A `@` in the query (a passfile's path) is no such thing.
        assert!(
            Address::parse("postgres://bot@127.0.0.1:1/db?state=a&passfile=/home/a@b/pgpass")
                .is_ok()
        );
    }

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            redact("postgres://u:secret@h:5/db?state=s&password=x"),
            "postgres://u:***@h:5/db?state=s&password=***"
        );
        assert_eq!(
            redact("postgres://u@h/db?state=s"),
            "postgres://u@h/db?state=s"
        );
        assert!(has_password("postgresql://u:p@h/db"));
        assert!(!has_password("postgresql://u@h/db?state=a"));
    }

    #[test]
    fn parse_takes_statesafe_options_and_checks_tls_modes() {
        let a = Address::parse(
            "postgres://u@127.0.0.1:5999/db?state=bot&table=t1&schema=s&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(
            (a.state.as_str(), a.table.as_str(), a.schema.as_deref()),
            ("bot", "t1", Some("s"))
        );
        assert_eq!(a.config.get_ports(), &[5999]);
        assert_eq!(
            a.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
        // A silent server is noticed by TCP: statesafe's defaults, or the URL's.
        assert_eq!(
            a.config.get_tcp_user_timeout(),
            Some(&std::time::Duration::from_secs(60))
        );
        assert_eq!(
            a.config.get_keepalives_idle(),
            std::time::Duration::from_secs(30)
        );
        let b = Address::parse("postgres://u@h/db?state=a&keepalives_idle=5&tcp_user_timeout=7")
            .unwrap();
        assert_eq!(
            b.config.get_keepalives_idle(),
            std::time::Duration::from_secs(5)
        );
        assert_eq!(
            b.config.get_tcp_user_timeout(),
            Some(&std::time::Duration::from_secs(7))
        );
        assert!(matches!(
            Address::parse("postgres://u@h/db"),
            Err(Error::BadPath { .. })
        ));
        assert!(matches!(
            Address::parse("postgres://u@h/db?state=a&table=x;drop"),
            Err(Error::BadPath { .. })
        ));
        assert!(matches!(
            Address::parse("postgres://u@h/db?state=a&sslmode=verify-full&sslrootcert=/nonexistent"),
            Err(Error::BadPath { reason, .. }) if reason.contains("/nonexistent")
        ));
        assert!(matches!(
            Address::parse("postgres://u@h/db?state=a&sslmode=sometimes"),
            Err(Error::BadPath { .. })
        ));
        assert!(Address::parse("postgres://u@h/db?state=a&sslmode=disable").is_ok());
        // A session's temporary schema (review19pg), in any case; a name that only
        // starts like one is a schema like any other.
        for temp in ["pg_temp", "PG_Temp", "pg_temp_3"] {
            assert!(matches!(
                Address::parse(&format!("postgres://u@h/db?state=a&schema={temp}")),
                Err(Error::BadPath { reason, .. }) if reason.contains(temp) && reason.contains("temporary")
            ));
        }
        assert!(Address::parse("postgres://u@h/db?state=a&schema=pg_temporary").is_ok());
        // A name statesafe derives for another URL's table (review19pg).
        for table in ["t_backups", "t_history", "t_quarantine"] {
            assert!(matches!(
                Address::parse(&format!("postgres://u@h/db?state=a&table={table}")),
                Err(Error::BadPath { reason, .. }) if reason.contains(table)
            ));
        }
        assert!(Address::parse("postgres://u@h/db?state=a&table=_backups").is_ok());
        assert!(Address::parse("postgres://u@h/db?state=a&table=t_backups2").is_ok());
        assert!(Address::parse("postgres://u@h/db?state=a&sslmode=require").is_ok());
    }
}
