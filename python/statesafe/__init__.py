"""Crash-safe, concurrency-safe JSON state files.

::

    import statesafe
    store = statesafe.open("state.json", default={"grades": {}})
    with store.transaction() as state:      # locked read-modify-write
        state["grades"]["g101"] = {"vak": "Mat"}
    print(store.get())

After a crash at any instant the file holds the old or the new version; concurrent
transactions from threads and processes never lose an update; damaged files are
quarantined and restored from a backup, never replaced by defaults. The work is done
in Rust with the GIL released. Full reference: docs/python.md.
"""

from __future__ import annotations

import json as _json  # noqa: F401 - the native module parses with json.loads: loaded
import os as _os       # now, not at the first read (a process may have dropped its rights)
from typing import Any, Callable, Optional, Union

from . import _model
from ._errors import (AlreadyExists, BadPath, BadSchema, Closed, Conflict, Corrupt, Deleted,
                      Error, GenerationUnavailable, Holder, Invalid, LockLost, LockTimeout,
                      Mismatch, NoSpace, NotFound, OSFailure, OutcomeUnknown, PermissionDenied,
                      Poisoned, ReadOnlyFilesystem, RemoteError, TooDeep, TooLarge,
                      Unrecoverable, Unsafe, Unsupported, UsageError)
from ._statesafe import BIG_INTS, LockGuard, Snapshot, Store, Transaction, __version__

__all__ = [
    "open", "Store", "Transaction", "LockGuard", "Snapshot", "Holder", "BIG_INTS",
    "Error", "NotFound", "Deleted", "AlreadyExists", "Corrupt", "LockTimeout", "Conflict", "Invalid",
    "TooLarge", "OSFailure", "NoSpace", "PermissionDenied", "ReadOnlyFilesystem",
    "OutcomeUnknown", "Poisoned", "Unrecoverable", "BadPath", "BadSchema",
    "GenerationUnavailable", "Mismatch", "RemoteError", "Unsafe", "TooDeep", "LockLost",
    "Unsupported", "Closed", "UsageError",
    "__version__",
]

_MISSING: Any = object()


def open(  # noqa: A001 - the natural name, as in io.open
    path: Union[str, "_os.PathLike[str]"],
    *,
    default: Any = _MISSING,
    model: Any = None,
    lock_timeout: Optional[float] = None,
    durability: str = "full",
    private: bool = False,
    format: Optional[str] = None,  # noqa: A002
    layout: str = "pretty",
    backups: Union[int, dict[str, int], None] = None,
    history: Union[int, dict[str, int], None] = None,
    schema: Union[dict[str, Any], str, "_os.PathLike[str]", None] = None,
    validate: Optional[Callable[[Any], Any]] = None,
    max_bytes: Optional[int] = None,
    min_free_bytes: Optional[int] = None,
    recovery: Optional[str] = None,
    on_event: Optional[Callable[[dict[str, Any]], None]] = None,
) -> Store:
    """Opens the state file at ``path``; nothing is created until the first commit.

    ``default`` is the document while the file does not exist (never used for a
    damaged file). ``model`` (a dataclass or pydantic v2 model) converts documents on
    load and commit. See docs/python.md for every option.
    """
    to_model = from_model = None
    if model is not None:
        to_model, from_model = _model.adapters(model)
    has_default = default is not _MISSING
    if has_default:
        default = _model.default_document(default, from_model)
    store = Store(
        _os.fspath(path), default=default if has_default else None, has_default=has_default,
        lock_timeout=lock_timeout, durability=durability, private=private, format=format,
        layout=layout, backups=backups, history=history, schema=schema, validate=validate,
        max_bytes=max_bytes, min_free_bytes=min_free_bytes, recovery=recovery,
        on_event=on_event, to_model=to_model, from_model=from_model)
    return store


# Fork safety. A child made by os.fork() inherits the parent's open lock descriptors:
# the same open file descriptions, so the same flock. The native store never uses or
# releases them in a child (it reopens the file), but while the child keeps them open
# a lock the parent holds cannot die with the parent. So the child closes them at once:
# right after the fork, every descriptor of a statesafe lock file is the parent's.
_FD_DIR = "/proc/self/fd"
_LOCK_SUFFIX = ".statesafe/lock"


def _close_inherited_lock_descriptors() -> None:
    try:
        fds = _os.listdir(_FD_DIR)
    except OSError:
        return
    for fd in fds:
        try:
            target = _os.readlink(f"{_FD_DIR}/{fd}")
            if target.endswith(_LOCK_SUFFIX) and _os.path.basename(
                    _os.path.dirname(target)).startswith("."):
                _os.close(int(fd))
        except (OSError, ValueError):
            pass


if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_close_inherited_lock_descriptors)
