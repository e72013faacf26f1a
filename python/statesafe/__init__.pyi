"""Type stubs for statesafe: crash-safe, concurrency-safe JSON state files."""

import os
from typing import (Any, Callable, Generic, Literal, NamedTuple, Optional, TypedDict, TypeVar,
                    Union, overload)


T = TypeVar("T")

__version__: str
BIG_INTS: bool
"""Whether ints beyond 64 bits round-trip exactly in this build (otherwise: TypeError)."""

StrPath = Union[str, "os.PathLike[str]"]

# ---------------------------------------------------------------------------------------
# Reports

class Latency(TypedDict):
    count: int
    total: float
    mean: float
    max: float
    p50: float
    p99: float

class CacheCounts(TypedDict):
    hits: int
    misses: int

class Stats(TypedDict):
    commits: int
    failures: dict[str, int]
    recoveries: int
    external_changes: int
    lock_waits: Latency
    fsync: Latency
    commit: Latency
    transaction_cache: CacheCounts

class BackupInfo(TypedDict):
    generation: int
    path: str
    size: int
    committed: float

class HolderInfo(TypedDict):
    pid: int
    host: str
    user: str
    command: str
    operation: str
    since: str

class CheckReport(TypedDict):
    ok: bool
    path: str
    exists: bool
    generation: int
    format: Optional[str]
    external: bool
    problems: list[str]
    backups_valid: int
    backups_damaged: list[tuple[str, str]]
    foreign: list[str]
    quarantined: list[str]

class Event(TypedDict, total=False):
    kind: str
    message: str
    path: str
    damage: str
    # A str for `recovered` and `quarantined`; for `undeleted`, where a journal it
    # could not apply whole was kept (journal mode), else None.
    quarantined: Optional[str]
    restored_from: Optional[int]
    rebuilt_from: Optional[int]
    # `undeleted`: "backup" or "history" (where the whole copy it started from was
    # kept), and the first and last generation of the journal's records applied.
    source: str
    journal: Optional[tuple[int, int]]
    generation: int
    filesystem: str
    because: str
    served: int
    known: int
    what: str
    error: str

# ---------------------------------------------------------------------------------------
# Exceptions

class Holder(NamedTuple):
    pid: int
    host: str
    user: str
    command: str
    operation: str
    since: str

class Error(Exception):
    kind: str
    message: str
    path: Optional[str]
    causes: list[str]
    hint: Optional[str]
    def __init__(self, message: str, *, path: Optional[str] = ...,
                 causes: Optional[list[str]] = ..., hint: Optional[str] = ...) -> None: ...

class NotFound(Error, FileNotFoundError): ...
class AlreadyExists(Error, FileExistsError): ...

class Corrupt(Error):
    line: Optional[int]
    column: Optional[int]
    reason: str

class LockTimeout(Error, TimeoutError):
    holder: Optional[Holder]
    waited: float

class Conflict(Error):
    expected: int
    actual: int

class Invalid(Error, ValueError):
    rule: Optional[str]
    pointer: Optional[str]
    violations: list[str]

class TooLarge(Error):
    size: int
    limit: int

class OSFailure(Error, OSError):
    operation: Optional[str]

class NoSpace(OSFailure): ...
class PermissionDenied(OSFailure, PermissionError): ...
class ReadOnlyFilesystem(OSFailure): ...

class OutcomeUnknown(Error):
    generation: int

class Poisoned(Error): ...

class Deleted(Error):
    generation: int
    newest_backup: Optional[str]
    sidecar: Optional[str]

class Unrecoverable(Error):
    damage: str
    quarantined: Optional[str]
    tried: list[tuple[str, str]]

class BadPath(Error, ValueError):
    reason: str
class BadSchema(Error, ValueError): ...

class GenerationUnavailable(Error, LookupError):
    generation: int

class Mismatch(Error):
    generation: int
    committed: bool
    reason: str

class RemoteError(Error, ConnectionError):
    operation: Optional[str]
    reason: str

class Unsafe(Error):
    # Which refusal: "planted" or "sidecar_without_file" (the core's names).
    what: str
    reason: str

class TooDeep(Error, ValueError):
    depth: int
    limit: int

class LockLost(Error):
    lock: Optional[str]

class Unsupported(Error):
    operation: Optional[str]
    reason: str

class Closed(Error): ...
class UsageError(Error): ...

# ---------------------------------------------------------------------------------------
# The store

class Snapshot(Generic[T]):
    @property
    def value(self) -> T: ...
    @property
    def generation(self) -> int: ...

class Transaction(Generic[T]):
    """``with store.transaction() as state:``: commits on a clean exit."""
    @property
    def state(self) -> T: ...
    @property
    def generation(self) -> int: ...
    @property
    def committed_generation(self) -> Optional[int]: ...
    # A model store also takes a plain document (a dict), read through the model.
    def commit(self, state: Union[T, dict[str, Any], None] = None) -> int: ...
    def rollback(self) -> None: ...
    def _hold_here(self) -> None: ...  # statesafe.aio: the loop's thread holds the lock
    def __enter__(self) -> T: ...
    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]: ...

class LockGuard:
    @property
    def held(self) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> "LockGuard": ...
    def __exit__(self, *args: Any) -> Literal[False]: ...

class Store(Generic[T]):
    @property
    def path(self) -> str: ...
    @property
    def lock_timeout(self) -> float: ...
    @property
    def closed(self) -> bool: ...
    @property
    def generation(self) -> int: ...
    def get(self) -> T: ...
    def load(self) -> Snapshot[T]: ...
    def transaction(self) -> Transaction[T]: ...
    # `fn` changes the state in place, or returns the new document: for a model store
    # an instance, or a plain document (a dict) that the commit reads through the model;
    # either way update() returns the document as stored (an instance of the model).
    def update(self, fn: Callable[[T], Union[T, dict[str, Any], None]]) -> T: ...
    # A model store takes an instance, or a plain document (a dict) that the model
    # accepts: it is read through the model, as the next load reads it.
    def replace(self, document: Union[T, dict[str, Any]], *,
                if_generation: Optional[int] = None) -> int: ...
    def create(self, document: Union[T, dict[str, Any]]) -> int: ...
    def lock(self, operation: str = "lock") -> LockGuard: ...
    def lock_holder(self) -> Optional[HolderInfo]: ...
    def check(self) -> CheckReport: ...
    def recover(self) -> Optional[Event]: ...
    def backups(self) -> list[BackupInfo]: ...
    def restore(self, generation: int) -> int: ...
    def history(self) -> list[dict[str, Any]]: ...
    def at(self, generation: int) -> T: ...
    def diff(self, a: int, b: int) -> list[dict[str, Any]]: ...
    def info(self) -> dict[str, Any]: ...
    def stats(self) -> Stats: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Store[T]": ...
    def __exit__(self, *args: Any) -> Literal[False]: ...

Durability = Literal["full", "none"]
FileFormat = Literal["plain", "sealed"]
Layout = Literal["pretty", "compact"]
Recovery = Literal["restore-from-backup", "backup", "fail"]

@overload
def open(
    path: StrPath,
    *,
    model: type[T],
    default: T = ...,
    lock_timeout: Optional[float] = None,
    durability: Durability = "full",
    private: bool = False,
    format: Optional[FileFormat] = None,
    layout: Layout = "pretty",
    backups: Union[int, dict[str, int], None] = None,
    history: Union[int, dict[str, int], None] = None,
    schema: Union[dict[str, Any], StrPath, None] = None,
    validate: Optional[Callable[[T], object]] = None,
    max_bytes: Optional[int] = None,
    min_free_bytes: Optional[int] = None,
    recovery: Optional[Recovery] = None,
    on_event: Optional[Callable[[Event], object]] = None,
) -> Store[T]: ...
@overload
def open(
    path: StrPath,
    *,
    model: None = None,
    default: Any = ...,
    lock_timeout: Optional[float] = None,
    durability: Durability = "full",
    private: bool = False,
    format: Optional[FileFormat] = None,
    layout: Layout = "pretty",
    backups: Union[int, dict[str, int], None] = None,
    history: Union[int, dict[str, int], None] = None,
    schema: Union[dict[str, Any], StrPath, None] = None,
    validate: Optional[Callable[[Any], object]] = None,
    max_bytes: Optional[int] = None,
    min_free_bytes: Optional[int] = None,
    recovery: Optional[Recovery] = None,
    on_event: Optional[Callable[[Event], object]] = None,
) -> Store[Any]: ...
