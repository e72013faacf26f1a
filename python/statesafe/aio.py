"""asyncio: the same store, every method a coroutine.

::

    store = statesafe.aio.open("state.json", default={"n": 0})
    async with store.transaction() as state:
        state["n"] += 1

Lock waits and disk work run in worker threads (the native code releases the GIL), so
they never block the event loop. A transaction is begun in a worker thread and
committed in another; the body runs on the loop.

Each call gets a thread of its own rather than a slot in the loop's default executor:
with a bounded pool, tasks waiting for the lock could fill every slot while the task
that holds the lock waits for a slot to commit, and nothing would move until the lock
timeout.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from typing import TYPE_CHECKING, Any, Callable, Generic, Optional, TypeVar, Union, overload

import statesafe
from statesafe import Snapshot, Store, Transaction
from statesafe import _rebind

R = TypeVar("R")
T = TypeVar("T")

if TYPE_CHECKING:
    from statesafe import BackupInfo, CheckReport, Event, Stats


def _start(fn: Callable[[], R]) -> "asyncio.Future[R]":
    """Runs `fn` in a new thread; its result as a future of the running loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[R] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.cancelled():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def work() -> None:
        try:
            result = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
            outcome: tuple[bool, Any] = (False, e)
        else:
            outcome = (True, result)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    threading.Thread(target=work, name="statesafe-aio", daemon=True).start()
    return future


async def _run(fn: Callable[..., R], *args: Any) -> R:
    return await _start(functools.partial(fn, *args))


class _Cancelled(Exception):
    """Raised in the worker by the gate: the write was cancelled before it held the lock."""


class _Gate:
    """Decides, atomically, between a cancel and a write's attempts at the lock.

    The native store waits for the lock in slices of 100 ms. Before each slice it calls
    :meth:`enter`, after a slice that did not get the lock :meth:`leave`; a slice that
    gets the lock goes on to the write (or its error) without asking again. The task
    calls :meth:`cancel` when it is cancelled: between slices (``idle``) the write is
    stopped for good, at once; during a slice (``trying``) the task waits for the
    slice's outcome: no lock (the write is stopped at ``leave``), or the lock and the
    write done or failed (its outcome is reported).
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._state = "idle"  # idle | trying | cancelled
        self._cancel_asked = False

    def enter(self) -> None:
        with self._mutex:
            if self._state == "cancelled":
                raise _Cancelled()
            self._state = "trying"

    def leave(self) -> None:
        with self._mutex:
            if self._cancel_asked:
                self._state = "cancelled"
                raise _Cancelled()
            self._state = "idle"

    def cancel(self) -> bool:
        """True when the write will never happen; False: wait for its outcome."""
        with self._mutex:
            if self._state in ("idle", "cancelled"):
                self._state = "cancelled"
                return True
            self._cancel_asked = True
            return False


async def _outcome(future: "asyncio.Future[R]", cancel: BaseException) -> R:
    """Waits for `future` whatever further cancels say, then reports its outcome: the
    result, or its exception (`cancel` again when the gate stopped the call)."""
    while not future.done():
        try:
            await asyncio.wait((future,))
        except asyncio.CancelledError:
            continue
    try:
        return future.result()
    except _Cancelled:
        raise cancel from None


async def _write(fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Runs the write `fn(*args, **kwargs, _gate=...)` in a thread of its own, behind a
    :class:`_Gate`: a cancel before the write holds the lock stops it for good (and
    ``CancelledError`` is raised at once, or within one lock slice of 100 ms); a
    cancel once it holds the lock waits for the write (its own time, never the lock
    wait) and reports its outcome: the result, as if not cancelled, or its error."""
    store = getattr(fn, "__self__", None)
    if isinstance(store, Store):
        _refuse_nested(store)
    gate = _Gate()
    future = _start(functools.partial(fn, *args, _gate=gate, **kwargs))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError as cancel:
        if future.done() and not future.cancelled():
            return await _outcome(future, cancel)
        if gate.cancel():
            future.cancel()  # nobody will read what the thread reports
            raise
        return await _outcome(future, cancel)


@overload
def open(path: Any, *, model: "type[T]", **options: Any) -> "AsyncStore[T]": ...  # noqa: A001
@overload
def open(path: Any, **options: Any) -> "AsyncStore[Any]": ...  # noqa: A001


def open(path: Any, **options: Any) -> "AsyncStore[Any]":  # noqa: A001
    """As :func:`statesafe.open` (opening reads only the small settings file)."""
    return AsyncStore(statesafe.open(path, **options))


class _Held:
    """A lock the running task holds: an open ``async with store.transaction()``."""

    def __init__(self, store: "Store[Any]") -> None:
        self.store = store
        self.open = True


# The locks the running task holds (tasks it starts inherit the entries; an entry is
# closed once its lock is given up, so their later calls are not refused).
_holding: "contextvars.ContextVar[tuple[_Held, ...]]" = contextvars.ContextVar(
    "statesafe_aio_holding", default=())


def _refuse_nested(store: "Store[Any]") -> None:
    """UsageError at once when the running task holds `store`'s lock already: waiting
    for it would wait for ourselves until the lock timeout (see Store.transaction)."""
    if any(h.store is store and h.open for h in _holding.get()):
        raise statesafe.UsageError(
            f"a transaction of this store (`{store.path}`) is already open in this task: "
            "it cannot wait for its own lock",
            path=str(store.path),
            hint="commit or roll it back first, or use one transaction")


class AsyncTransaction(Generic[T]):
    """``async with store.transaction() as state:``: commits on a clean exit."""

    def __init__(self, store: "Store[T]") -> None:
        self._store = store
        self._tx: "Optional[Transaction[T]]" = None
        self._held: Optional[_Held] = None
        self._token: "Optional[contextvars.Token[tuple[_Held, ...]]]" = None
        self._binding: "Optional[_rebind.Binding]" = None
        self._state: Any = None

    async def __aenter__(self) -> T:
        # The name `async with ... as NAME` binds the document to, in the caller's
        # frame (see statesafe._rebind): a block that rebinds it is refused at its end.
        self._binding = _rebind.capture(1)
        _refuse_nested(self._store)
        begun: "list[Transaction[T]]" = []
        cancelled = threading.Event()

        def begin() -> "Transaction[T]":
            tx = self._store.transaction()
            begun.append(tx)
            if cancelled.is_set():
                tx.rollback()  # nobody will use it: let the lock go at once
            return tx

        try:
            self._tx = await _start(begin)
        except asyncio.CancelledError:
            # The thread may still get the lock: it lets it go as soon as it does.
            cancelled.set()
            for tx in begun:
                try:
                    tx.rollback()
                except statesafe.UsageError:
                    pass
            raise
        # The block runs on this (the loop's) thread: a blocking call of this store
        # here would wait for the lock this task holds, blocking the loop until the
        # lock timeout; marked as the holder, this thread is refused at once instead.
        self._tx._hold_here()
        self._held = _Held(self._store)
        self._token = _holding.set(_holding.get() + (self._held,))
        self._state = self._tx.state
        return self._state  # type: ignore[no-any-return]

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        tx = self._tx
        assert tx is not None, "__aexit__ without __aenter__"
        if self._held is not None:
            self._held.open = False
        if self._token is not None:
            try:
                _holding.reset(self._token)
            except ValueError:  # exited in another context than it was entered in
                pass
        state, self._state = self._state, None
        if exc_type is None:
            name = _rebind.rebound(self._binding, state, 1)
            if name is not None:
                tx.rollback()
                raise _rebind.error(str(self._store.path), name)
        if exc_type is None:
            # The lock is held: a cancel cannot stop the commit. The task waits for it
            # and learns its outcome (the commit's error, or none: then the cancel is
            # not raised here, as the block's changes are written).
            future = _start(tx.commit)
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError as cancel:
                await _outcome(future, cancel)
        else:
            tx.rollback()
        return False

    @property
    def generation(self) -> int:
        """The generation the transaction started from."""
        assert self._tx is not None
        return self._tx.generation


class AsyncStore(Generic[T]):
    """A :class:`statesafe.Store` whose methods are coroutines."""

    def __init__(self, store: "Store[T]") -> None:
        self.sync = store

    @property
    def path(self) -> str:
        return str(self.sync.path)

    async def get(self) -> T:
        return await _run(self.sync.get)

    async def load(self) -> "Snapshot[T]":
        return await _run(self.sync.load)

    def transaction(self) -> "AsyncTransaction[T]":
        return AsyncTransaction(self.sync)

    async def update(self, fn: "Callable[[T], Union[T, dict[str, Any], None]]") -> T:
        """``fn(state)`` runs in the worker thread, under the lock. Cancelled before
        the lock is held, nothing is written, ever; after, the update completes and
        its outcome is what the task gets (see docs/python.md, asyncio)."""
        return await _write(self.sync.update, fn)

    async def replace(self, document: "Union[T, dict[str, Any]]", *,
                      if_generation: Optional[int] = None) -> int:
        return await _write(self.sync.replace, document, if_generation=if_generation)

    async def create(self, document: "Union[T, dict[str, Any]]") -> int:
        return await _write(self.sync.create, document)

    async def generation(self) -> int:
        return await _run(lambda: self.sync.generation)

    async def check(self) -> "CheckReport":
        return await _run(self.sync.check)

    async def recover(self) -> "Optional[Event]":
        return await _write(self.sync.recover)

    async def backups(self) -> "list[BackupInfo]":
        return await _run(self.sync.backups)

    async def restore(self, generation: int) -> int:
        return await _write(self.sync.restore, generation)

    async def history(self) -> list[dict[str, Any]]:
        return await _run(self.sync.history)

    async def diff(self, a: int, b: int) -> list[dict[str, Any]]:
        return await _run(self.sync.diff, a, b)

    async def info(self) -> dict[str, Any]:
        return await _run(self.sync.info)

    def stats(self) -> "Stats":
        return self.sync.stats()

    async def close(self) -> None:
        await _run(self.sync.close)

    async def __aenter__(self) -> "AsyncStore[T]":
        return self

    async def __aexit__(self, *exc: Any) -> bool:
        await self.close()
        return False
