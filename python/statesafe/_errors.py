"""The exception hierarchy: ``statesafe.Error`` and one subclass per kind of failure.

Every exception names the file, what failed, why, and what to do next: ``str(e)``
reads ``message`` / ``caused by: ...`` / ``hint: ...``, and ``e.hint`` holds the hint
alone. Raised by the native module through :func:`_from_rust`.
"""

from __future__ import annotations

import errno as _errno
import re
from typing import Any, NamedTuple, Optional


class Holder(NamedTuple):
    """Who holds a state file's lock, as the holder recorded it."""

    pid: int
    host: str
    user: str
    command: str
    operation: str
    since: str


class Error(Exception):
    """Base class of every statesafe error."""

    kind: str = "error"

    def __init__(self, message: str, *, path: Optional[str] = None,
                 causes: Optional[list[str]] = None, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.causes: list[str] = list(causes or [])
        self.hint = hint

    def __str__(self) -> str:
        text = self.message
        for cause in self.causes:
            text += f"\ncaused by: {cause}"
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text

    def __reduce__(self) -> Any:
        # Picklable (multiprocessing sends exceptions between processes). An OSError
        # keeps errno, strerror and filename in slots of its own, not in __dict__.
        state = self.__dict__.copy()
        if isinstance(self, OSError):
            state["errno"], state["strerror"], state["filename"] = (
                self.errno, self.strerror, self.filename)
        return (_rebuild, (type(self), self.message, state))


def _rebuild(cls: type[Error], message: str, state: dict[str, Any]) -> Error:
    e = cls.__new__(cls)
    Exception.__init__(e, message)
    if isinstance(e, OSError):
        e.errno = state.pop("errno", None)
        e.strerror = state.pop("strerror", None)
        e.filename = state.pop("filename", None)
    e.__dict__.update(state)
    return e


class NotFound(Error, FileNotFoundError):
    """The state file does not exist (and the store has no default)."""

    kind = "not_found"


class Deleted(Error):
    """The state file was deleted (a careless ``rm``, a cleanup script, a sync tool)
    while its sidecar shows committed generations: it is not served as missing, and
    ``default=`` never takes its place. ``generation`` is the last one the sidecar
    knows, ``newest_backup`` the newest backup kept (or None), ``sidecar`` the
    sidecar directory. ``store.recover()`` puts the newest provable version back;
    ``store.replace(document)`` starts over on purpose. Deliberately not a
    ``FileNotFoundError``: code that catches that to start afresh must not."""

    kind = "deleted"
    generation: int = 0
    newest_backup: Optional[str] = None
    sidecar: Optional[str] = None


class AlreadyExists(Error, FileExistsError):
    """``create`` found the file already there."""

    kind = "already_exists"


class Corrupt(Error):
    """The file is not a valid document; ``line`` and ``column`` say where, when known."""

    kind = "corrupt"
    line: Optional[int] = None
    column: Optional[int] = None
    reason: str = ""


class LockTimeout(Error, TimeoutError):
    """Another writer held the lock longer than ``lock_timeout``; ``holder`` says who."""

    kind = "lock_timeout"
    holder: Optional[Holder] = None
    waited: float = 0.0


class Conflict(Error):
    """A compare-and-swap found another generation than ``expected``."""

    kind = "generation_conflict"
    expected: int = 0
    actual: int = 0


class Invalid(Error, ValueError):
    """The new document broke a rule; ``rule`` and ``pointer`` name the first one."""

    kind = "invalid"
    rule: Optional[str] = None
    pointer: Optional[str] = None
    violations: list[str] = []


class TooLarge(Error):
    """The new document is over ``max_bytes``; nothing was written."""

    kind = "too_large"
    size: int = 0
    limit: int = 0


class OSFailure(Error, OSError):
    """An operating-system failure; ``operation`` and ``errno`` say which."""

    kind = "io"
    operation: Optional[str] = None


class NoSpace(OSFailure):
    """The filesystem is full (or the quota exhausted); the state file is unchanged."""

    kind = "no_space"


class PermissionDenied(OSFailure, PermissionError):
    """The OS refused access."""

    kind = "permission_denied"


class ReadOnlyFilesystem(OSFailure):
    """The filesystem is mounted read-only."""

    kind = "read_only"


class OutcomeUnknown(Error):
    """The new version is in place but the directory fsync failed: it may not survive
    a power loss. ``generation`` is the one written."""

    kind = "outcome_unknown"
    generation: int = 0


class Poisoned(Error):
    """An fsync failed earlier; the store refuses writes until reopened."""

    kind = "poisoned"


class Unrecoverable(Error):
    """The file is damaged and no valid backup could replace it."""

    kind = "unrecoverable"
    damage: str = ""
    quarantined: Optional[str] = None
    tried: list[tuple[str, str]] = []


class BadPath(Error, ValueError):
    """The path cannot hold a state file (a directory, a missing parent, a NUL byte);
    ``reason`` says why."""

    kind = "bad_path"
    reason: str = ""


class BadSchema(Error, ValueError):
    """The JSON Schema given is not a valid schema."""

    kind = "bad_schema"


class GenerationUnavailable(Error, LookupError):
    """A past generation that neither a backup nor the history can produce."""

    kind = "generation_unavailable"
    generation: int = 0


class Mismatch(Error):
    """A sound version this store's model, ``validate`` or schema refuses (committed by
    statesafe, or valid JSON changed outside it). Not damage: nothing was quarantined,
    restored or rewritten. Retrying does not help: read it with what it was written
    with, or migrate it deliberately."""

    kind = "mismatch"
    generation: int = 0
    committed: bool = False
    reason: str = ""


class RemoteError(Error, ConnectionError):
    """The PostgreSQL server failed or refused an operation (unreachable, lost
    connection, authentication, a missing database, a statement timeout); ``path`` is
    the state's URL, its password redacted. Nothing was committed by the call that
    raised it, so it is safe to retry; whether a retry can succeed depends on ``reason``
    (a lost connection or timeout: later; a refused password: not until it is fixed)."""

    kind = "remote"
    operation: Optional[str] = None
    reason: str = ""


class Unsafe(Error):
    """Refused for safety: a symlink or a sidecar another user could have planted (in a
    shared directory) was not followed or used; nothing was read or written through it.
    ``path`` is the state file. Retrying does not help: inspect and remove what is not
    yours, or keep the state in a directory other users cannot write.

    ``what`` says which refusal it is (the core's names): ``"planted"`` (an object
    another user may have planted, or one set up by hand) or ``"sidecar_without_file"``
    (another user's sidecar with no state file beside it: perhaps a deleted state's only
    backups, not to be removed on a guess); ``reason`` says what is wrong with it."""

    kind = "unsafe"
    what: str = ""
    reason: str = ""


class TooDeep(Error, ValueError):
    """The document is nested deeper than statesafe's limit (``depth`` over ``limit``):
    a new document is refused with nothing written; a file that deep (written outside
    statesafe) is not served. Not damage: nothing is quarantined."""

    kind = "too_deep"
    depth: int = 0
    limit: int = 0


class LockLost(Error):
    """The lock file ``lock`` was removed or replaced while this store held it (or
    the state file was replaced by a writer without the lock): the commit was
    abandoned before the rename, nothing was written. Find what removes files in the
    state's directory; retry once it is stopped."""

    kind = "lock_lost"
    lock: Optional[str] = None


class Unsupported(Error):
    """An operation this kind of store does not offer (yet), ``operation``, for
    ``reason``: nothing was done."""

    kind = "unsupported"
    operation: Optional[str] = None
    reason: str = ""


class Closed(Error):
    """The store was used after ``close()``."""

    kind = "closed"


class UsageError(Error):
    """The API was used out of order (a finished transaction, a transaction from
    before a fork)."""

    kind = "usage"


_CLASSES: dict[str, type[Error]] = {
    cls.kind: cls
    for cls in (NotFound, Deleted, AlreadyExists, Corrupt, LockTimeout, Conflict, Invalid, TooLarge,
                OSFailure, NoSpace, PermissionDenied, ReadOnlyFilesystem, OutcomeUnknown,
                Poisoned, Unrecoverable, BadPath, BadSchema, GenerationUnavailable, Mismatch,
                RemoteError, Unsafe, TooDeep, LockLost, Unsupported, Closed, UsageError)
}

_ERRNO = {"no_space": _errno.ENOSPC, "permission_denied": _errno.EACCES,
          "read_only": _errno.EROFS, "not_found": _errno.ENOENT,
          "already_exists": _errno.EEXIST, "lock_timeout": _errno.ETIMEDOUT}

# `at `/balance`: -5 is less than the minimum of 0 (schema rule `/properties/balance/minimum`)`
_SCHEMA_VIOLATION = re.compile(r"at `(?P<pointer>[^`]*)`: .*? \(schema rule `(?P<rule>[^`]*)`\)")


# Where the library's hint speaks of the command line, the Python way instead.
_PYTHON_HINTS = {
    "not_found": "pass default=... to statesafe.open() to start from a default document, "
                 "create the file with store.create(...), or check the path",
    "generation_unavailable": "list what is kept with store.history() and store.backups(); "
                              "keep more with history= and backups= in statesafe.open()",
    "too_large": "remove data from the state, or raise max_bytes in statesafe.open()",
}


def _deleted_hint(fields: dict[str, Any]) -> str:
    return ("store.recover() (or `statesafe recover FILE`) puts back the newest version its "
            "backups, history and journal prove, as the next generation (when they prove "
            "none, it raises Unrecoverable and writes nothing); to start over on purpose, "
            "store.replace(document) writes a whole new document (the old generations' "
            "backups and history stay), or remove the sidecar directory "
            f"`{fields.get('sidecar')}` to discard them too")


def _from_rust(kind: str, message: str, causes: list[str], hint: Optional[str],
               fields: dict[str, Any]) -> Error:
    cls = _CLASSES.get(kind, Error)
    hint = _deleted_hint(fields) if kind == "deleted" else _PYTHON_HINTS.get(kind, hint)
    e = cls(message, path=fields.pop("path", None), causes=causes, hint=hint)
    if kind not in _CLASSES:
        e.kind = kind
    holder = fields.pop("holder", None)
    if holder is not None:
        e.holder = Holder(**holder)  # type: ignore[attr-defined]
    code = fields.pop("errno", None) or _ERRNO.get(kind)
    if isinstance(e, OSError):
        e.errno = code
        e.strerror = message
        e.filename = e.path
    # The rule alone (Invalid, BadSchema): str(e) keeps the whole message, which names
    # the file; the rule goes to `violations`, `rule` and `pointer` below.
    text = fields.pop("message", None) or ""
    for name, value in fields.items():
        setattr(e, name, value)
    if isinstance(e, Invalid):
        e.violations = [v.strip() for v in text.split("; ") if v.strip()]
        m = _SCHEMA_VIOLATION.search(text)
        if m:
            e.rule, e.pointer = m.group("rule"), m.group("pointer")
        elif text.startswith("validation rule:"):
            e.rule, e.pointer = "validate", None
    return e
