//! One module per subcommand, and what they share: parsing the command line,
//! opening the store with the write options, reading JSON, and reporting errors.

mod backups;
mod check;
mod completions;
mod copy;
mod del;
mod diff;
mod edit;
mod exec;
mod get;
mod info;
mod init;
mod lock;
mod log;
mod man;
mod recover;
mod restore;
mod set;
mod settings;
mod update;
mod write;

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;
use statesafe::{Durability, Store, StoreOptions};

use crate::cli::{self, Command, DurabilityArg, WriteOptions};
use crate::error::{CliError, Exit, Result};
use crate::output::Output;

/// Runs the command line `args` and returns the exit status.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let json = wants_json(&args);
    let cli = match cli::parse(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e, &args, json),
    };
    let out = Output::new(cli.json);
    let command = match cli.command {
        Command::Torture(args) => {
            let json = cli.json;
            return statesafe_torture::run(&statesafe_torture::TortureArgs { json, ..args });
        }
        Command::TortureChild { args } => return statesafe_torture::child_main(args),
        command => command,
    };
    match run(command, &out) {
        Ok(exit) => {
            // Said once, after the write that adopted the file, never before a failure.
            for note in take_adoptions() {
                out.note(&format!("note: {note}"));
            }
            ExitCode::from(exit)
        }
        Err(err) => {
            out.error(&err);
            ExitCode::from(err.exit.code())
        }
    }
}

/// Dispatches to the subcommand; returns the exit status on success (0, or the
/// status of the command that `lock` ran).
fn run(command: Command, out: &Output) -> Result<u8> {
    let ok = |r: Result<()>| r.map(|()| Exit::Ok.code());
    match command {
        Command::Get(args) => ok(get::run(args, out)),
        Command::Set(args) => ok(set::run(args, out)),
        Command::Del(args) => ok(del::run(args, out)),
        Command::Update(args) => ok(update::run(args, out)),
        Command::Write(args) => ok(write::run(args, out)),
        Command::Init(args) => ok(init::run(args, out)),
        Command::Exec(args) => ok(exec::run(args, out)),
        Command::Lock(args) => lock::run(args, out),
        Command::Copy(args) => ok(copy::run(args, out)),
        Command::Edit(args) => ok(edit::run(args, out)),
        Command::Check(args) => ok(check::run(args, out)),
        Command::Recover(args) => ok(recover::run(args, out)),
        Command::Backups(args) => ok(backups::run(args, out)),
        Command::Restore(args) => ok(restore::run(args, out)),
        Command::Log(args) => ok(log::run(args, out)),
        Command::Diff(args) => ok(diff::run(args, out)),
        Command::Info(args) => ok(info::run(args, out)),
        Command::Settings(args) => ok(settings::run(args, out)),
        Command::Completions(args) => ok(completions::run(args, out)),
        Command::Man(args) => ok(man::run(args, out)),
        // Dispatched by `main` before `run`: they exit with their own status.
        Command::Torture(_) | Command::TortureChild { .. } => Ok(Exit::Ok.code()),
    }
}

/// Whether `--json` is among the options (before any `--`), for reporting errors in
/// the arguments themselves.
fn wants_json(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

fn usage_error(err: clap::Error, args: &[OsString], json: bool) -> ExitCode {
    use clap::error::ErrorKind;
    let code = err.exit_code();
    let informational = matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    );
    // `statesafe exec FILE CMD` without `--`: clap only says the argument is unexpected.
    let missing_dashes = matches!(err.kind(), ErrorKind::UnknownArgument)
        && args.get(1).is_some_and(|a| a == "exec" || a == "lock")
        && !args.iter().any(|a| a == "--");
    let sub = args.get(1).map(|a| a.to_string_lossy()).unwrap_or_default();
    let dashes_hint = format!("put `--` before the command: `statesafe {sub} FILE -- CMD ARGS...`");
    if !json || informational {
        // clap prints help and version on stdout, errors on stderr.
        let _ = err.print();
        if missing_dashes {
            Output::new(false).hint(&dashes_hint);
        }
        return ExitCode::from(u8::try_from(code).unwrap_or(Exit::Usage.code()));
    }
    let rendered = err.render().to_string();
    let mut lines = rendered.lines().filter(|l| !l.trim().is_empty());
    let message = lines
        .next()
        .map(|l| l.trim_start_matches("error: ").to_string())
        .unwrap_or_else(|| "invalid arguments".into());
    let hint = rendered
        .lines()
        .find_map(|l| l.trim().strip_prefix("tip: "))
        .map(str::to_string)
        .unwrap_or_else(|| {
            if missing_dashes {
                dashes_hint
            } else {
                "run `statesafe --help` for usage".into()
            }
        });
    let err = CliError::new("usage", Exit::Usage, message).hint(hint);
    Output::new(true).error(&err);
    ExitCode::from(Exit::Usage.code())
}

/// Opens the store at `file`, with the write options when the command writes.
/// Recoveries and external changes the library notices are printed as warnings.
fn open(file: &Path, opts: Option<&WriteOptions>, out: &Output) -> Result<Store> {
    open_as(file, opts, out)
}

/// [`open`] with another document type (jq's values for `update`).
fn open_as<T: serde::Serialize + serde::de::DeserializeOwned>(
    file: &Path,
    opts: Option<&WriteOptions>,
    out: &Output,
) -> Result<Store<T>> {
    let hook = warn_on_event(out, opts.is_some());
    open_at(options(opts)?.on_event(hook), file)
}

/// Opens the store with the write options but without the warning hook (for
/// commands whose result is the event itself).
fn open_quiet(file: &Path, opts: &WriteOptions) -> Result<Store> {
    open_at(options(Some(opts))?, file)
}

/// Opens `file` with `options`: a state file, or a state in PostgreSQL when `file`
/// is a `postgres://` or `postgresql://` URL (a local file of such a name is
/// `./postgres:/…`). A password in the URL is refused: a command line is visible to
/// every local user (`ps`), so it comes from PGPASSWORD or a password file.
fn open_at<T: serde::Serialize + serde::de::DeserializeOwned>(
    options: StoreOptions<T>,
    file: &Path,
) -> Result<Store<T>> {
    let Some(url) = file.to_str().filter(|s| statesafe::postgres::is_url(s)) else {
        return Ok(options.open(file)?);
    };
    refuse_password(url)?;
    Ok(options.open_url(url)?)
}

/// Refuses a URL that carries a password: a command line is visible to every local
/// user (`ps`).
fn refuse_password(url: &str) -> Result<()> {
    if statesafe::postgres::has_password(url) {
        return Err(CliError::invalid(
            "password_in_url",
            "the URL carries a password, which every local user can read on a command line",
        )
        .hint("remove it from the URL and give it in PGPASSWORD, in ~/.pgpass (mode 0600), or in a file named by `passfile=PATH` in the URL"));
    }
    Ok(())
}

fn options<T>(opts: Option<&WriteOptions>) -> Result<StoreOptions<T>> {
    let mut options = Store::<T>::options();
    if let Some(opts) = opts {
        options = options
            .durability(match opts.durability {
                DurabilityArg::Full => Durability::Full,
                DurabilityArg::None => Durability::None,
            })
            .private(opts.private);
        if let Some(timeout) = opts.lock_timeout {
            options = options.lock_timeout(timeout);
        }
        if let Some(schema) = &opts.schema {
            options = options.schema(read_schema(schema)?);
        }
    }
    Ok(options)
}

/// First contacts seen by writers in this run: the file and the event's text.
static ADOPTIONS: std::sync::Mutex<Vec<(std::path::PathBuf, String)>> =
    std::sync::Mutex::new(Vec::new());

/// The adoptions to report once the command succeeded: those the command really
/// recorded. A writer that ended without writing (`init --exist-ok`, `del
/// --missing-ok` of a missing value, an edit without changes) adopted nothing, and
/// its first write will say so. Asked of the library (`check`, which changes nothing),
/// and only on a first contact, so the common run pays nothing.
fn take_adoptions() -> Vec<String> {
    let pending = std::mem::take(&mut *ADOPTIONS.lock().unwrap_or_else(|e| e.into_inner()));
    pending
        .into_iter()
        .filter(|(path, _)| {
            Store::<Value>::open(path)
                .and_then(|store| store.check())
                .is_ok_and(|report| report.exists && !report.adopted)
        })
        .map(|(_, note)| note)
        .collect()
}

/// A hook printing the library's events as warnings on stderr. Reads leave out
/// external changes: a file written by another program would warn on every read
/// until statesafe next writes it; writers report it once, as they record it.
///
/// The first contact with a file statesafe never wrote is no warning: a writer says
/// it once, as a `note:` after it succeeded (nothing in `--json` mode); reads say
/// nothing, since they adopt nothing.
fn warn_on_event(
    out: &Output,
    external: bool,
) -> impl Fn(&statesafe::Event) + Send + Sync + 'static {
    let out = *out;
    move |event| {
        let kind = match event {
            statesafe::Event::Recovered { .. } | statesafe::Event::Undeleted { .. } => "recovered",
            statesafe::Event::Quarantined { .. } => "quarantined",
            statesafe::Event::DamageNotRepaired { .. } => "damaged",
            statesafe::Event::BookkeepingFailed { .. } => "bookkeeping",
            statesafe::Event::ExternalChange { .. } | statesafe::Event::Adopted { .. }
                if !external =>
            {
                return;
            }
            statesafe::Event::ExternalChange { .. } => "external_change",
            statesafe::Event::Adopted { path, .. } => {
                ADOPTIONS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((path.clone(), event.to_string()));
                return;
            }
            _ => "event",
        };
        out.warning(kind, &event.to_string());
    }
}

/// Reads a JSON Schema file.
fn read_schema(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::io(format_args!("read the schema `{}`", path.display()), e))?;
    parse_json(&bytes, &format!("the schema `{}`", path.display()))
}

/// Parses `text` as one JSON document; `source` says where it came from ("stdin").
/// Numbers keep their text; a key twice in one object and nesting deeper than
/// statesafe's limit are refused (see `statesafe::json`).
fn parse_json(text: &[u8], source: &str) -> Result<Value> {
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(
            CliError::invalid("empty_input", format!("{source} is empty"))
                .hint("give one JSON document, for example `{}`"),
        );
    }
    statesafe::json::parse(text).map_err(|e| {
        CliError::invalid(
            "invalid_json",
            format!(
                "{source} is not valid JSON: {} at line {}, column {}",
                statesafe::json::reason(&e),
                e.line(),
                e.column()
            ),
        )
        .hint("the state file is unchanged; give exactly one JSON document")
    })
}

/// Reads all of stdin.
fn read_stdin() -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| CliError::io("read stdin", e))?;
    Ok(buf)
}

/// A document as the file would hold it (indented, ending in a newline).
fn pretty(value: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("invariant: a Value always serializes");
    bytes.push(b'\n');
    bytes
}

/// Runs a read-modify-write transaction: `f` changes the document under the lock;
/// an error from `f` writes nothing. `create` starts a missing file from `{}`.
/// Returns the new generation and whether anything was written.
fn transact(
    store: &Store,
    create: bool,
    f: impl FnOnce(&mut Value) -> Result<()>,
) -> Result<(u64, bool)> {
    transact_as(store, create, || Value::Object(serde_json::Map::new()), f)
}

/// [`transact`] for another document type; `empty` makes the `{}` a missing file
/// starts from.
fn transact_as<T: serde::Serialize + serde::de::DeserializeOwned>(
    store: &Store<T>,
    create: bool,
    empty: impl FnOnce() -> T,
    f: impl FnOnce(&mut T) -> Result<()>,
) -> Result<(u64, bool)> {
    // Streaming: a large document is parsed from the file and written into the new
    // one without its text in memory too (the peak is about the tree alone).
    let mut tx = store.begin_streaming(create.then_some(empty))?;
    let before = tx.generation();
    let existed = tx.existed();
    f(tx.state_mut())?;
    let generation = tx.commit_streaming()?;
    Ok((generation, generation != before || !existed))
}
