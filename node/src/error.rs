//! Library errors as the JSON payload `index.js` turns into a `StatesafeError`.
//!
//! Every variant gets a stable `code` (mirroring the Python package's exception names),
//! the library's message, its hint, and the fields a caller may act on. The OS error,
//! where there is one, travels as `cause` with its errno, so JavaScript can name it the
//! way Node does (`ENOSPC`, ...).

use std::error::Error as _;
use std::io;

use serde_json::{Value, json};
use statesafe::{Error, Holder};

/// The prefix of a thrown message that carries a payload (see `index.js`).
const MARKER: &str = "STATESAFE_PAYLOAD ";

/// A failure on its way to JavaScript.
#[derive(Debug)]
pub(crate) struct Failure(Value);

impl Failure {
    /// A failure of the binding itself (no library error behind it).
    pub fn binding(code: &str, message: String, hint: &str) -> Failure {
        Failure(json!({ "code": code, "message": message, "hint": hint }))
    }

    /// A value that JavaScript should have refused before sending it (a `TypeError`).
    pub fn type_error(message: String) -> Failure {
        Failure(json!({ "code": "ETYPE", "message": message, "typeError": true }))
    }

    /// A bad option of `open()` (a `TypeError` with code `EBADOPTION`).
    pub fn option_error(message: String) -> Failure {
        Failure(json!({ "code": "EBADOPTION", "message": message, "typeError": true }))
    }

    /// A number JavaScript sent that no JSON integer here can hold (a `RangeError`).
    pub fn range_error(message: String) -> Failure {
        Failure(json!({ "code": "ERANGE", "message": message, "rangeError": true }))
    }

    pub fn into_napi(self) -> napi::Error {
        napi::Error::from_reason(format!("{MARKER}{}", self.0))
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure(payload(&e))
    }
}

/// The stable code of each library error.
pub(crate) fn code(e: &Error) -> &'static str {
    match e {
        Error::NotFound { .. } => "ENOENT",
        Error::Deleted { .. } => "EDELETED",
        Error::Corrupt { .. } => "ECORRUPT",
        Error::LockTimeout { .. } => "ELOCKTIMEOUT",
        Error::GenerationConflict { .. } => "ECONFLICT",
        Error::Invalid { .. } => "EINVALID",
        Error::Serialize { .. } => "ESERIALIZE",
        Error::Aborted { .. } => "EABORTED",
        Error::NoSpace { .. } => "ENOSPC",
        Error::PermissionDenied { .. } => "EACCES",
        Error::ReadOnly { .. } => "EROFS",
        Error::OutcomeUnknown { .. } => "EOUTCOMEUNKNOWN",
        Error::Poisoned { .. } => "EPOISONED",
        Error::BadPath { .. } => "EBADPATH",
        Error::AlreadyExists { .. } => "EEXIST",
        Error::TooLarge { .. } => "ETOOLARGE",
        Error::Unrecoverable { .. } => "EUNRECOVERABLE",
        Error::BadSchema { .. } => "EBADSCHEMA",
        Error::GenerationUnavailable { .. } => "ENOGENERATION",
        Error::Mismatch { .. } => "EMISMATCH",
        Error::Remote { .. } => "EREMOTE",
        Error::Unsafe { .. } => "EUNSAFE",
        Error::Io { .. } => "EIO",
        Error::Nested { .. } => "ENESTED",
        Error::TooDeep { .. } => "ETOODEEP",
        _ => "ESTATESAFE",
    }
}

fn payload(e: &Error) -> Value {
    let mut p = json!({
        "code": code(e),
        "kind": e.kind(),
        "message": e.to_string(),
    });
    if let Some(hint) = e.hint() {
        p["hint"] = hint.into();
    }
    match e {
        Error::NotFound { path }
        | Error::Poisoned { path }
        | Error::AlreadyExists { path }
        | Error::Serialize { path, .. }
        | Error::Aborted { path, .. }
        | Error::BadSchema { path, .. }
        | Error::LockLost { path, .. }
        | Error::Unsupported { path, .. }
        | Error::Nested { path, .. } => p["path"] = path.display().to_string().into(),
        Error::Unsafe { path, reason, what } => {
            p["path"] = path.display().to_string().into();
            p["reason"] = reason.as_str().into();
            // Which refusal: `planted`, `sidecar_without_file` (the core's names).
            p["what"] = what.name().into();
        }
        Error::Mismatch {
            path,
            generation,
            committed,
            reason,
        } => {
            p["path"] = path.display().to_string().into();
            p["generation"] = json!(generation);
            p["committed"] = json!(committed);
            p["reason"] = reason.as_str().into();
        }
        // `path`: the state's URL, its password already redacted by the library.
        Error::Remote {
            path, op, reason, ..
        } => {
            p["path"] = path.display().to_string().into();
            p["op"] = op.as_str().into();
            p["reason"] = reason.as_str().into();
        }
        Error::Corrupt {
            path,
            line,
            column,
            reason,
        } => {
            p["path"] = path.display().to_string().into();
            p["line"] = json!(line);
            p["column"] = json!(column);
            p["reason"] = reason.as_str().into();
        }
        Error::Deleted {
            path,
            generation,
            newest_backup,
            sidecar,
        } => {
            p["path"] = path.display().to_string().into();
            p["generation"] = json!(generation);
            p["newestBackup"] = json!(newest_backup.as_ref().map(|b| b.display().to_string()));
            p["sidecar"] = sidecar.display().to_string().into();
            // The library's hint speaks of the command line; the Node way first.
            p["hint"] = format!(
                "store.recover() (or `statesafe recover FILE`) puts back the newest version its backups, history and journal prove, as the next generation (when they prove none, it rejects with EUNRECOVERABLE and writes nothing); to start over on purpose, store.replace(doc) writes a whole new document (the old generations' backups and history stay), or remove the sidecar directory `{}` to discard them too",
                sidecar.display()
            )
            .into();
        }
        Error::LockTimeout {
            path,
            waited,
            holder,
        } => {
            p["path"] = path.display().to_string().into();
            p["waitedMs"] = json!(waited.as_millis() as u64);
            p["holder"] = holder.as_deref().map_or(Value::Null, holder_json);
        }
        Error::GenerationConflict {
            path,
            expected,
            found,
        } => {
            p["path"] = path.display().to_string().into();
            p["expected"] = json!(expected);
            p["actual"] = json!(found);
        }
        Error::Invalid { path, message } => {
            p["path"] = path.display().to_string().into();
            let (rule, pointer) = invalid_parts(message);
            p["rule"] = rule.into();
            p["pointer"] = pointer.into();
            p["reason"] = message.as_str().into();
        }
        Error::NoSpace { path, op, source }
        | Error::PermissionDenied { path, op, source }
        | Error::ReadOnly { path, op, source }
        | Error::Io { path, op, source } => {
            p["path"] = path.display().to_string().into();
            p["op"] = op_name(*op).into();
            p["cause"] = os_cause(source, &op.to_string());
        }
        Error::OutcomeUnknown {
            path,
            generation,
            source,
        } => {
            p["path"] = path.display().to_string().into();
            p["generation"] = json!(generation);
            p["op"] = "syncDir".into();
            p["cause"] = os_cause(source, "fsync");
        }
        Error::BadPath { path, reason } => {
            p["path"] = path.display().to_string().into();
            p["reason"] = reason.as_str().into();
        }
        Error::TooLarge { path, size, limit } => {
            p["path"] = path.display().to_string().into();
            p["size"] = json!(size);
            p["limit"] = json!(limit);
        }
        Error::TooDeep { path, depth, limit } => {
            p["path"] = path.display().to_string().into();
            p["depth"] = json!(depth);
            p["limit"] = json!(limit);
        }
        Error::Unrecoverable {
            path,
            damage,
            quarantined,
            tried,
        } => {
            p["path"] = path.display().to_string().into();
            p["quarantined"] = json!(quarantined.as_ref().map(|q| q.display().to_string()));
            p["tried"] = tried
                .iter()
                .map(|(b, why)| json!({ "path": b.display().to_string(), "reason": why }))
                .collect();
            p["cause"] = payload(damage);
        }
        Error::GenerationUnavailable {
            path,
            generation,
            reason,
        } => {
            p["path"] = path.display().to_string().into();
            p["generation"] = json!(generation);
            p["reason"] = reason.as_str().into();
        }
        _ => {}
    }
    if p.get("cause").is_none()
        && let Some(source) = e.source()
    {
        p["cause"] = json!({ "message": source.to_string() });
    }
    p
}

/// The OS error behind a failure, with its errno for `util.getSystemErrorName`.
fn os_cause(source: &io::Error, syscall: &str) -> Value {
    json!({
        "message": source.to_string(),
        "errno": source.raw_os_error(),
        "syscall": syscall,
    })
}

pub(crate) fn holder_json(h: &Holder) -> Value {
    json!({
        "pid": h.pid,
        "host": h.host,
        "user": h.user,
        "command": h.command,
        "operation": h.operation,
        "since": h.since,
    })
}

/// The operation as a short camel-case name (`rename`, `syncDir`, ...).
fn op_name(op: statesafe::Op) -> String {
    let debug = format!("{op:?}");
    let mut chars = debug.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => debug,
    }
}

/// The first failed rule and where it failed, from the library's message:
/// ``at `/where`: what (schema rule `/rule`)`` or `validation rule: what`.
fn invalid_parts(message: &str) -> (String, String) {
    let first = message.split("; ").next().unwrap_or(message);
    if first.starts_with("validation rule:") {
        return ("validate".into(), "/".into());
    }
    let pointer = between(first, "at `", "`:").unwrap_or("/");
    let rule = between(first, "(schema rule `", "`)").unwrap_or("schema");
    (rule.into(), pointer.into())
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let len = s[start..].find(close)?;
    Some(&s[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_messages_give_their_rule_and_pointer() {
        let (rule, pointer) = invalid_parts(
            "at `/balance`: -5 is less than the minimum of 0 (schema rule `/properties/balance/minimum`); at `/x`: y",
        );
        assert_eq!(rule, "/properties/balance/minimum");
        assert_eq!(pointer, "/balance");
        assert_eq!(invalid_parts("validation rule: no").0, "validate");
    }

    #[test]
    fn op_names_are_camel_case() {
        assert_eq!(op_name(statesafe::Op::SyncDir), "syncDir");
        assert_eq!(op_name(statesafe::Op::Rename), "rename");
    }
}
