//! The PostgreSQL backend: a state is a row, a transaction is a database transaction
//! holding that row's lock (`SELECT … FOR UPDATE`), backups and history are rows.
//! See `docs/remote.md` for the URL, the table layout and the locking argument.
//!
//! Behind the `postgres` cargo feature; without it, `Remote` and `Tx` are types
//! with no values (so [`crate::Store`] branches on them at no cost and with no `cfg`),
//! and opening a URL says the feature is off.

#[cfg(feature = "postgres")]
mod address;
#[cfg(feature = "postgres")]
mod client;
#[cfg(feature = "postgres")]
mod nested;
#[cfg(feature = "postgres")]
mod remote;
#[cfg(feature = "postgres")]
mod sql;
#[cfg(feature = "postgres")]
mod startup;
#[cfg(feature = "postgres")]
mod tls;

#[cfg(not(feature = "postgres"))]
mod off;

#[cfg(not(feature = "postgres"))]
pub(crate) use off::{Held, Remote, Tx};
#[cfg(feature = "postgres")]
pub(crate) use remote::{Held, Remote, Tx};

/// The URL with any password replaced by `***`.
#[cfg(not(feature = "postgres"))]
fn address_redacted(url: &str) -> String {
    url.split('@').next_back().unwrap_or(url).to_string()
}

#[cfg(feature = "postgres")]
pub use address::has_password;

/// The recovery of a state whose recorded settings are damaged (a hand edit of the
/// `settings` column of its row), which every open refuses with [`crate::Error::Corrupt`]
/// naming `URL#settings`: under the row's lock, moves them as they are into the
/// quarantine table, and records none in their place, so the state opens again with
/// the default settings (record yours again with [`crate::Store::save_settings`]).
/// Returns where the damaged settings went (`URL#quarantine=ID`), or `None` when
/// they are valid. `statesafe recover URL` runs it first.
///
/// # Errors
/// [`crate::Error::BadPath`] for a URL that is not a state's; [`crate::Error::Remote`]
/// when the server cannot be reached or refuses; [`crate::Error::LockTimeout`] when
/// a writer holds the row past `lock_timeout`; [`crate::Error::Unsupported`] in a
/// build without the `postgres` feature.
///
/// ```no_run
/// let moved = statesafe::postgres::quarantine_settings(
///     "postgres://bot@db.internal:5432/ops?state=grades",
///     std::time::Duration::from_secs(10),
/// )?;
/// if let Some(place) = moved {
///     eprintln!("the damaged settings are kept at `{}`", place.display());
/// }
/// # Ok::<(), statesafe::Error>(())
/// ```
pub fn quarantine_settings(
    url: &str,
    lock_timeout: std::time::Duration,
) -> crate::Result<Option<std::path::PathBuf>> {
    Remote::quarantine_settings(url, lock_timeout)
}

/// Test hook: lowers, for this process, the size of the statement a PostgreSQL write
/// may send (PostgreSQL's own limit is a query message of 1 GiB - 1 bytes); 0
/// restores it. A write over it is refused before anything is sent.
#[cfg(feature = "postgres")]
#[doc(hidden)]
pub fn set_statement_limit_for_tests(bytes: u64) {
    remote::set_statement_limit(bytes);
}

/// Test hook: a statement this process runs on every PostgreSQL connection as it goes
/// back to a store's pool, as a pooler runs its `server_reset_query` (`DISCARD ALL`,
/// `DEALLOCATE ALL`) on a server session it releases; `None` runs none.
#[cfg(feature = "postgres")]
#[doc(hidden)]
pub fn set_release_query_for_tests(query: Option<&str>) {
    remote::set_release_query(query);
}

/// Whether `s` names a PostgreSQL state (`postgres://` or `postgresql://`), to be
/// opened with [`crate::StoreOptions::open_url`].
///
/// ```
/// assert!(statesafe::postgres::is_url("postgres://bot@db:5432/ops?state=grades"));
/// assert!(!statesafe::postgres::is_url("./postgres:/grades.json"));
/// ```
pub fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}
