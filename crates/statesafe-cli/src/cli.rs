//! The command line's shape: every clap type lives here.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::error::exit_codes_help;

/// Crash-safe, locked edits of JSON state files.
///
/// Every write takes the file's writers' lock, writes a temporary file beside it,
/// syncs it and renames it over the file: after a crash the file holds the old or the
/// new document, never a mix, and concurrent writers never lose an update. Reads take
/// no lock and never block.
#[derive(Debug, Parser)]
#[command(
    name = "statesafe",
    version,
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Print results and errors as JSON (results on stdout, errors on stderr)
    #[arg(long, global = true)]
    pub json: bool,

    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands. (`torture` and `torture-child` are reserved for the torture harness.)
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the document, or the value at a JSON pointer (never blocks)
    Get(GetArgs),
    /// Set the value at a JSON pointer, creating the file and missing parents
    Set(SetArgs),
    /// Delete the value at a JSON pointer
    Del(DelArgs),
    /// Replace the document with the result of a jq expression, under the lock
    Update(UpdateArgs),
    /// Replace the whole document with JSON read from stdin
    Write(WriteArgs),
    /// Create a state file with initial content
    Init(InitArgs),
    /// Run a command as a filter: the document on its stdin, its stdout as the new document
    Exec(ExecArgs),
    /// Hold the file's writers' lock while a command runs
    Lock(LockArgs),
    /// Copy a state with its history to another file or PostgreSQL URL
    Copy(CopyArgs),
    /// Edit the document in $VISUAL or $EDITOR, checked before it is committed
    Edit(EditArgs),
    /// Check the file and its backups without changing anything
    Check(FileArgs),
    /// Recover a damaged file from its newest valid backup
    Recover(RecoverArgs),
    /// List the backups kept beside the file
    Backups(FileArgs),
    /// Bring back the backup of a generation as a new generation
    Restore(RestoreArgs),
    /// Show the history of changes, newest first
    Log(LogArgs),
    /// Show what changed between two generations (an RFC 6902 JSON Patch)
    Diff(DiffArgs),
    /// Summarise the file: generation, format, size, last writer, backups, lock holder
    Info(FileArgs),
    /// Show or change the settings stored with the file (format, schema, retention, limits)
    Settings(SettingsCmdArgs),
    /// Print a shell completion script
    Completions(CompletionsArgs),
    /// Print the whole manual as one page (roff), or write one page per subcommand into a directory
    Man(ManArgs),
    /// Kill writers at random: truncate-and-write against statesafe, side by side
    Torture(statesafe_torture::TortureArgs),
    /// A child process of `statesafe torture` (internal)
    #[command(hide = true)]
    TortureChild {
        /// The child's arguments, passed to `statesafe_torture::child_main`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Options of every command that writes.
#[derive(Debug, Clone, Args)]
pub struct WriteOptions {
    /// How long to wait for the writers' lock (`500ms`, `10s`, `0` = try once);
    /// default: the file's own setting, else 10s
    #[arg(
        long,
        value_name = "DURATION",
        env = "STATESAFE_LOCK_TIMEOUT",
        value_parser = parse_duration
    )]
    pub lock_timeout: Option<Duration>,

    /// `full` syncs the file and its directory (survives power loss); `none` skips
    /// fsync (still atomic against crashes of the process; for tmpfs and throwaway data)
    #[arg(long, value_enum, default_value_t = DurabilityArg::Full)]
    pub durability: DurabilityArg,

    /// Create a new file readable by its owner only (0600); an existing file keeps its mode
    #[arg(long)]
    pub private: bool,

    /// Check the new document against this JSON Schema (overrides the file's own schema)
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
}

/// Per-file settings, recorded with the state file so that every writer agrees.
#[derive(Debug, Clone, Args)]
pub struct SettingsArgs {
    /// `plain` JSON, `sealed` (an envelope whose header holds the generation, writer and a checksum over every byte), or `journal` (the file is a snapshot; each commit appends its change to a journal in the sidecar)
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Journal mode: compact (rewrite the snapshot, start a new journal) once the journal passes this many bytes (default 64 MiB, or 4x the snapshot plus 1 MiB if less)
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true, value_parser = parse_count::<u64>)]
    pub journal_max_bytes: Option<u64>,
    /// How many recent versions to keep as backups (0: none)
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count::<u32>)]
    pub keep_backups: Option<u32>,
    /// How many history entries to keep (0: no history)
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count::<u32>)]
    pub keep_history: Option<u32>,
    /// Refuse documents larger than this many bytes
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true, value_parser = parse_count::<u64>)]
    pub max_bytes: Option<u64>,
    /// Refuse to write when the filesystem has less free space than this
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true, value_parser = parse_count::<u64>)]
    pub min_free_bytes: Option<u64>,
    /// The lock timeout every writer of this file uses unless told otherwise
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub default_lock_timeout: Option<Duration>,
    /// What a read does when the file is damaged
    #[arg(long, value_enum)]
    pub recovery: Option<RecoveryArg>,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Plain JSON.
    Plain,
    /// A JSON envelope whose checksum covers every byte: any outside change is caught.
    Sealed,
    /// A plain snapshot plus a journal of changes: commits cost the change, not the document.
    Journal,
}

/// `--recovery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecoveryArg {
    /// Quarantine the damaged file and restore the newest valid backup.
    RestoreFromBackup,
    /// Fail with the corrupt-state error and leave the file alone.
    Fail,
}

/// Commands that take only a file.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// The state file
    pub file: PathBuf,
}

/// `statesafe recover`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  statesafe recover state.json\n  statesafe recover state.json --accept-snapshot"
)]
pub struct RecoverArgs {
    /// The state file
    pub file: PathBuf,
    /// Journal mode: accept the snapshot as the current state after its journal was
    /// lost (the sidecar or the journal deleted, which every read refuses); its
    /// generations continue past the lost ones
    #[arg(long)]
    pub accept_snapshot: bool,
    #[command(flatten)]
    /// Write options.
    pub write: WriteOptions,
}

/// `statesafe restore`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  statesafe backups state.json\n  statesafe restore state.json --generation 41"
)]
pub struct RestoreArgs {
    /// The state file
    pub file: PathBuf,
    /// The generation to bring back (see `statesafe backups FILE`)
    #[arg(short, long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count::<u64>)]
    pub generation: u64,
    #[command(flatten)]
    /// Write options.
    pub write: WriteOptions,
}

/// `statesafe log`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  statesafe log state.json -n 5\n  statesafe log state.json --patch"
)]
pub struct LogArgs {
    /// The state file
    pub file: PathBuf,
    /// Show at most N entries
    #[arg(short = 'n', long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count::<usize>)]
    pub limit: Option<usize>,
    /// Show each change as a JSON Patch
    #[arg(short, long)]
    pub patch: bool,
}

/// `statesafe diff`.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  statesafe diff state.json 40 42")]
pub struct DiffArgs {
    /// The state file
    pub file: PathBuf,
    /// The older generation
    #[arg(allow_negative_numbers = true, value_parser = parse_count::<u64>)]
    pub from: u64,
    /// The newer generation (default: the current one)
    #[arg(allow_negative_numbers = true, value_parser = parse_count::<u64>)]
    pub to: Option<u64>,
}

/// `statesafe settings`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  statesafe settings state.json\n  statesafe settings state.json --keep-backups 10 --schema state.schema.json"
)]
pub struct SettingsCmdArgs {
    /// The state file
    pub file: PathBuf,
    #[command(flatten)]
    /// The settings to change.
    pub settings: SettingsArgs,
    /// Record this JSON Schema: every later write must satisfy it
    #[arg(long, value_name = "FILE", conflicts_with = "no_schema")]
    pub schema: Option<PathBuf>,
    /// Remove the recorded schema
    #[arg(long)]
    pub no_schema: bool,
    /// How long to wait for the writers' lock (`500ms`, `10s`, `0` = try once);
    /// default: the file's own setting, else 10s
    #[arg(long, value_name = "DURATION", env = "STATESAFE_LOCK_TIMEOUT", value_parser = parse_duration)]
    pub lock_timeout: Option<Duration>,
}

/// `--durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// fsync the file and its directory.
    Full,
    /// No fsync.
    None,
}

/// `statesafe get`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  statesafe get state.json\n  statesafe get state.json /users/0/name --raw"
)]
pub struct GetArgs {
    /// The state file
    pub file: PathBuf,
    /// RFC 6901 JSON pointer (`/users/0/name`); empty or absent for the whole document
    #[arg(default_value = "")]
    pub pointer: String,
    /// Print a string value without quotes
    #[arg(short, long)]
    pub raw: bool,
    /// Print on one line instead of indented
    #[arg(short, long)]
    pub compact: bool,
}

/// `statesafe set`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  statesafe set state.json /retries 3\n  statesafe set state.json /owner --string alice\n  statesafe set state.json '' '{\"n\": 0}'"
)]
pub struct SetArgs {
    /// The state file (created if missing)
    pub file: PathBuf,
    /// RFC 6901 JSON pointer; '' replaces the whole document
    pub pointer: String,
    /// The new value, as JSON (`3`, `-1.5`, `"text"`, `{"a": 1}`)
    #[arg(allow_negative_numbers = true)]
    pub value: String,
    /// Take VALUE as a plain string instead of JSON
    #[arg(short, long)]
    pub string: bool,
    #[command(flatten)]
    /// Write options.
    pub write: WriteOptions,
}

/// `statesafe del`.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  statesafe del state.json /sessions/abc")]
pub struct DelArgs {
    /// The state file
    pub file: PathBuf,
    /// RFC 6901 JSON pointer of the value to delete
    pub pointer: String,
    /// Succeed without writing when there is no value at POINTER
    #[arg(long)]
    pub missing_ok: bool,
    #[command(flatten)]
    /// Write options.
    pub write: WriteOptions,
}

/// `statesafe update`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  statesafe update counter.json '.n += 1'\n  statesafe update state.json '.users += [$u]' --arg u alice"
)]
pub struct UpdateArgs {
    /// The state file
    pub file: PathBuf,
    /// jq expression producing exactly one value: the new document
    pub expr: String,
    /// Bind `$NAME` to the string VALUE
    #[arg(long, num_args = 2, value_names = ["NAME", "VALUE"], action = clap::ArgAction::Append)]
    pub arg: Vec<String>,
    /// Bind `$NAME` to the JSON value JSON
    #[arg(long, num_args = 2, value_names = ["NAME", "JSON"], action = clap::ArgAction::Append)]
    pub argjson: Vec<String>,
    /// If the file does not exist, start from `{}` and create it
    #[arg(long)]
    pub create: bool,
    /// Give up (exit 15, file unchanged) if the expression runs longer than this
    #[arg(long, value_name = "DURATION", default_value = "10s", env = "STATESAFE_EVAL_TIMEOUT", value_parser = parse_duration)]
    pub eval_timeout: Duration,
    #[command(flatten)]
    /// Write options.
    pub write: WriteOptions,
}

/// `statesafe write`.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  generate-config | statesafe write config.json")]
pub struct WriteArgs {
    /// The state file (created if missing)
    pub file: PathBuf,
    /// Write only if the file is still at this generation (0: only if it does not exist)
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count::<u64>)]
    pub if_generation: Option<u64>,
    #[command(flatten)]
    /// Write options.
    pub write: WriteOptions,
}

/// `statesafe init`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  statesafe init state.json\n  statesafe init queue.json '[]' --private\n  statesafe init config.json --format sealed --schema config.schema.json --keep-backups 10"
)]
pub struct InitArgs {
    /// The state file to create
    pub file: PathBuf,
    /// Initial document as JSON (`-` reads stdin)
    #[arg(
        default_value = "{}",
        value_name = "JSON",
        allow_negative_numbers = true
    )]
    pub document: String,
    /// Replace the document if the file exists
    #[arg(long, conflicts_with = "exist_ok")]
    pub force: bool,
    /// Succeed without writing if the file exists (and holds a valid document)
    #[arg(long)]
    pub exist_ok: bool,
    #[command(flatten)]
    /// Settings to record with the new file (`--schema` is recorded too).
    pub settings: SettingsArgs,
    #[command(flatten)]
    /// Write options.
    pub write: WriteOptions,
}

/// `statesafe exec`.
#[derive(Debug, Args)]
#[command(
    after_help = "CMD gets the document on stdin and the environment variables STATESAFE_FILE and\n\
STATESAFE_GENERATION; its stderr passes through. The file changes only if CMD exits 0\n\
and prints exactly one JSON document. Do not run statesafe writers on FILE inside CMD:\n\
they would wait for the lock that exec holds.\n\n\
Example:\n  statesafe exec state.json -- python3 bump.py"
)]
pub struct ExecArgs {
    /// The state file
    pub file: PathBuf,
    /// If the file does not exist, give CMD `{}` and create the file
    #[arg(long)]
    pub create: bool,
    /// Kill CMD and give up (exit 15, file unchanged) if it runs longer than this
    #[arg(long, value_name = "DURATION", default_value = "10s", env = "STATESAFE_EVAL_TIMEOUT", value_parser = parse_duration)]
    pub eval_timeout: Duration,
    #[command(flatten)]
    /// Write options.
    pub write: WriteOptions,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `statesafe lock`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exits with CMD's status (128+N if CMD was killed by signal N). Other writers\n\
wait while CMD runs; CMD's own statesafe writers on FILE (and those of the programs\n\
it starts) are let through, one at a time (STATESAFE_LOCKS; for a PostgreSQL URL,\n\
STATESAFE_PG_LOCKS, and the lock ends when this process or its connection dies).\n\
The lock is released when CMD has ended and no writer it let through is still\n\
writing.\n\n\
Example:\n  statesafe lock state.json --timeout 30s -- ./migrate.sh state.json"
)]
pub struct LockArgs {
    /// The state file (it need not exist)
    pub file: PathBuf,
    /// How long to wait for the lock (`500ms`, `10s`, `0` = try once);
    /// default: the file's own setting, else 10s
    #[arg(
        long,
        visible_alias = "lock-timeout",
        value_name = "DURATION",
        env = "STATESAFE_LOCK_TIMEOUT",
        value_parser = parse_duration
    )]
    pub timeout: Option<Duration>,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `statesafe copy`.
#[derive(Debug, Args)]
#[command(
    after_help = "Each version the source can rebuild (its history's generations, oldest first, then\n\
the current one) is committed to DST in order, so DST's `log`, `diff` and backups show\n\
the same changes; DST numbers them with its own generations and records this copy as\n\
their writer. The source's settings (schema, retention, limits) are recorded with DST\n\
once the last version is in (the schema is not applied to the older versions).\n\n\
DST must not exist, unless --replace (copy on top of whatever DST holds) or\n\
--if-generation N (only if DST is still at generation N, as `statesafe info DST` said).\n\
Every commit to DST is a compare-and-swap on the generation the copy wrote before it:\n\
if anyone else writes DST meanwhile, the copy stops (exit 6) and says how far it got;\n\
each version in DST is whole.\n\n\
Examples:\n  statesafe copy state.json 'postgres://bot@db/ops?state=grades'\n  \
statesafe copy 'postgres://bot@db/ops?state=grades' backup.json --replace"
)]
pub struct CopyArgs {
    /// The state to copy: a file or a PostgreSQL URL
    pub source: PathBuf,
    /// Where to copy it: a file or a PostgreSQL URL
    pub destination: PathBuf,
    /// Copy on top of an existing destination (its versions stay in its history)
    #[arg(long, conflicts_with = "if_generation")]
    pub replace: bool,
    /// Copy only if the destination is at generation N (0: only if it does not exist)
    #[arg(long, value_name = "N", value_parser = parse_count::<u64>)]
    pub if_generation: Option<u64>,
    /// Copy the current version only, not the history
    #[arg(long)]
    pub no_history: bool,
    #[command(flatten)]
    /// Write options.
    pub write: WriteOptions,
}

/// `statesafe edit`.
#[derive(Debug, Args)]
#[command(
    after_help = "The editor is $VISUAL, else $EDITOR, else vi, run through `sh -c` (so `code --wait`\n\
works). An invalid document reopens the editor with the error at the top; save an empty\n\
file or exit the editor with an error to abandon. If someone else changes the file\n\
meanwhile, you are asked whether to edit again on top of their change. Without a\n\
terminal (stdin not a terminal) there is nobody to ask: an invalid document or a\n\
conflict abandons the edit at once, and your version is saved in a file it names.\n\n\
Example:\n  statesafe edit state.json"
)]
pub struct EditArgs {
    /// The state file
    pub file: PathBuf,
    /// If the file does not exist, start from `{}` and create it
    #[arg(long)]
    pub create: bool,
    #[command(flatten)]
    /// Write options.
    pub write: WriteOptions,
}

/// `statesafe completions`.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  statesafe completions bash > /etc/bash_completion.d/statesafe")]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `statesafe man`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  statesafe man | man -l -\n  statesafe man --dir /usr/local/share/man/man1"
)]
pub struct ManArgs {
    /// Write statesafe.1 and statesafe-SUBCOMMAND.1 into this directory instead
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// A count, size or generation: `-1` is told it must be 0 or more (clap alone would
/// take it for an option and suggest `-- -1`).
fn parse_count<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let s = s.trim();
    if s.starts_with('-') {
        return Err("must be 0 or more".into());
    }
    s.parse().map_err(|e: T::Err| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (examples: `500ms`, `10s`, `2m`, `0`)"))
}

/// The clap command, with the exit-code table after every `--help` (`-h` stays short:
/// the examples only).
pub fn command() -> clap::Command {
    let table = exit_codes_help();
    Cli::command()
        .after_long_help(table.clone())
        .mut_subcommands(|sub| {
            let own = sub
                .get_after_help()
                .map(|h| format!("{h}\n\n"))
                .unwrap_or_default();
            sub.after_long_help(format!("{own}{table}"))
        })
}

/// Parses the command line.
///
/// # Errors
/// clap's error (usage, `--help`, `--version`).
pub fn parse(args: &[OsString]) -> Result<Cli, clap::Error> {
    if let Some(cli) = parse_one(args) {
        return Ok(cli);
    }
    let matches = command().try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command()))
}

/// The common case quickly: when the first argument names a file subcommand, builds
/// the parser for that subcommand alone (building all twenty was the largest part of
/// a one-shot `statesafe update` after process start). `None` whenever that parser
/// does not accept the arguments, so that every error, `--help` and `--version` comes
/// from the complete parser, with its full messages.
fn parse_one(args: &[OsString]) -> Option<Cli> {
    fn sub<A: Args>(name: &'static str) -> clap::Command {
        A::augment_args(clap::Command::new(name))
    }
    let name = args.get(1)?.to_str()?;
    let subcommand = match name {
        "get" => sub::<GetArgs>("get"),
        "set" => sub::<SetArgs>("set"),
        "del" => sub::<DelArgs>("del"),
        "update" => sub::<UpdateArgs>("update"),
        "write" => sub::<WriteArgs>("write"),
        "init" => sub::<InitArgs>("init"),
        "exec" => sub::<ExecArgs>("exec"),
        "lock" => sub::<LockArgs>("lock"),
        "copy" => sub::<CopyArgs>("copy"),
        "edit" => sub::<EditArgs>("edit"),
        "check" | "backups" | "info" => sub::<FileArgs>("info"),
        "recover" => sub::<RecoverArgs>("recover"),
        "restore" => sub::<RestoreArgs>("restore"),
        "log" => sub::<LogArgs>("log"),
        "diff" => sub::<DiffArgs>("diff"),
        "settings" => sub::<SettingsCmdArgs>("settings"),
        _ => return None,
    };
    let root = clap::Command::new("statesafe")
        .arg(
            clap::Arg::new("json")
                .long("json")
                .global(true)
                .action(clap::ArgAction::SetTrue),
        )
        .subcommand(subcommand.disable_help_flag(true))
        .disable_help_flag(true)
        .disable_help_subcommand(true)
        .disable_version_flag(true);
    let matches = root.try_get_matches_from(args).ok()?;
    Cli::from_arg_matches(&matches).ok()
}
