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
import functools
import threading
from typing import TYPE_CHECKING, Any, Callable, Generic, Optional, TypeVar, overload

import statesafe
from statesafe import Snapshot, Store, Transaction

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


@overload
def open(path: Any, *, model: "type[T]", **options: Any) -> "AsyncStore[T]": ...  # noqa: A001
@overload
def open(path: Any, **options: Any) -> "AsyncStore[Any]": ...  # noqa: A001


def open(path: Any, **options: Any) -> "AsyncStore[Any]":  # noqa: A001
    """As :func:`statesafe.open` (opening reads only the small settings file)."""
    return AsyncStore(statesafe.open(path, **options))


class AsyncTransaction(Generic[T]):
    """``async with store.transaction() as state:``: commits on a clean exit."""

    def __init__(self, store: "Store[T]") -> None:
        self._store = store
        self._tx: "Optional[Transaction[T]]" = None

    async def __aenter__(self) -> T:
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
        return self._tx.state

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        tx = self._tx
        assert tx is not None, "__aexit__ without __aenter__"
        if exc_type is None:
            await _run(tx.commit)
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

    async def update(self, fn: "Callable[[T], Optional[T]]") -> T:
        """``fn(state)`` runs in the worker thread, under the lock."""
        return await _run(self.sync.update, fn)

    async def replace(self, document: T, *, if_generation: Optional[int] = None) -> int:
        return await _run(functools.partial(self.sync.replace, document,
                                            if_generation=if_generation))

    async def create(self, document: T) -> int:
        return await _run(self.sync.create, document)

    async def generation(self) -> int:
        return await _run(lambda: self.sync.generation)

    async def check(self) -> "CheckReport":
        return await _run(self.sync.check)

    async def recover(self) -> "Optional[Event]":
        return await _run(self.sync.recover)

    async def backups(self) -> "list[BackupInfo]":
        return await _run(self.sync.backups)

    async def restore(self, generation: int) -> int:
        return await _run(self.sync.restore, generation)

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
