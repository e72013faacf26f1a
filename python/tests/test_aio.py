"""statesafe.aio: coroutines, and lock waits that never block the event loop."""

from __future__ import annotations

import asyncio
import pathlib
import threading

import pytest

import statesafe
import statesafe.aio


def test_async_api(path: pathlib.Path) -> None:
    async def main() -> None:
        async with statesafe.aio.open(path, default={"n": 0}) as store:
            assert await store.get() == {"n": 0}
            async with store.transaction() as state:
                state["n"] += 1
            assert (await store.load()).generation == 1
            await store.update(lambda s: s.update(n=s["n"] + 1))
            assert await store.replace({"n": 10}, if_generation=2) == 3
            with pytest.raises(statesafe.Conflict):
                await store.replace({"n": 11}, if_generation=2)
            with pytest.raises(RuntimeError):
                async with store.transaction() as state:
                    state["n"] = -1
                    raise RuntimeError("abort")
            assert await store.get() == {"n": 10}
            assert await store.generation() == 3
            assert [b["generation"] for b in await store.backups()] == [2, 1]
            assert len(await store.history()) == 3
            assert await store.diff(2, 3) == [{"op": "replace", "path": "/n", "value": 10}]
            assert (await store.check())["ok"]
            assert await store.recover() is None
            assert (await store.info())["generation"] == 3
            assert await store.restore(1) == 4
            assert store.stats()["commits"] == 4
            # Concurrent transactions from many tasks: none lost.
            async def bump() -> None:
                async with store.transaction() as s:
                    s["n"] += 1
            await asyncio.gather(*(bump() for _ in range(20)))
            assert (await store.get())["n"] == 21

    asyncio.run(main())


def test_lock_wait_does_not_block_the_loop(path: pathlib.Path) -> None:
    holder = statesafe.open(path, default={"n": 0})
    holder.replace({"n": 0})

    async def main() -> int:
        store = statesafe.aio.open(path, lock_timeout=30)
        ticks = 0
        guard = holder.lock()

        async def wait_for_lock() -> None:
            async with store.transaction() as s:
                s["n"] += 1

        task = asyncio.create_task(wait_for_lock())
        # The loop keeps running while the task waits for the lock.
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1
        assert not task.done(), "the transaction must still be waiting for the lock"
        guard.release()
        await task
        return ticks

    assert asyncio.run(main()) == 20
    assert holder.get() == {"n": 1}


def test_cancelled_wait_leaves_no_lock(path: pathlib.Path) -> None:
    holder = statesafe.open(path, default={"n": 0})

    async def main() -> None:
        store = statesafe.aio.open(path, lock_timeout=30)
        guard = holder.lock()

        async def wait_for_lock() -> None:
            async with store.transaction() as s:
                s["n"] = 99

        task = asyncio.create_task(wait_for_lock())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        guard.release()
        # The worker thread gets the lock after the cancel, then lets it go.
        for _ in range(200):
            if holder.lock_holder() is None:
                break
            await asyncio.sleep(0.05)
        with statesafe.open(path, lock_timeout=5).lock():
            pass

    asyncio.run(main())
    assert holder.get() == {"n": 0}


def test_a_cancel_once_the_update_holds_the_lock_reports_the_write(path: pathlib.Path) -> None:
    """A cancel that comes while `fn` runs under the lock cannot stop the commit: the
    task waits for it and gets what was committed, never a CancelledError for a write
    that happened."""
    inside = threading.Event()
    go_on = threading.Event()

    def bump(state: dict[str, int]) -> None:
        inside.set()
        go_on.wait(30)
        state["n"] += 1

    async def main() -> None:
        store = statesafe.aio.open(path, default={"n": 0})
        task = asyncio.create_task(store.update(bump))
        while not inside.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0)
        go_on.set()
        assert await task == {"n": 1}

    asyncio.run(main())
    assert statesafe.open(path).get() == {"n": 1}


def test_a_cancel_before_the_lock_stops_every_kind_of_write(path: pathlib.Path) -> None:
    """replace, create, restore and recover cancelled while they wait for the lock:
    CancelledError, and nothing written once the lock comes free."""
    holder = statesafe.open(path, default={"n": 0})
    holder.replace({"n": 0})

    async def main() -> None:
        store = statesafe.aio.open(path, lock_timeout=30)
        with holder.lock():
            for write in (store.replace({"n": 1}), store.replace({"n": 2}, if_generation=1),
                          store.update(lambda s: {"n": 3}), store.restore(1)):
                task = asyncio.create_task(write)
                await asyncio.sleep(0.15)  # into the lock wait (slices of 100 ms)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

    asyncio.run(main())
    for t in threading.enumerate():
        if t.name == "statesafe-aio":
            t.join(30)
    assert holder.load().generation == 1
    assert holder.get() == {"n": 0}


def test_a_write_of_the_store_inside_its_own_async_transaction_is_refused(
        path: pathlib.Path) -> None:
    """The task holds the lock: waiting for it again would wait for itself until the lock
    timeout. UsageError at once; a task started inside that runs after the commit is not
    refused."""

    async def main() -> None:
        store = statesafe.aio.open(path, default={"n": 0}, lock_timeout=30)
        later: "list[asyncio.Task[object]]" = []
        gate = asyncio.Event()

        async def after() -> object:
            await gate.wait()
            return await store.update(lambda s: s.update(n=s["n"] + 10))

        async with store.transaction() as state:
            state["n"] = 1
            for write in (lambda: store.update(lambda s: None),
                          lambda: store.replace({"n": 2}), lambda: store.create({"n": 2}),
                          lambda: store.restore(1), lambda: store.recover()):
                with pytest.raises(statesafe.UsageError) as e:
                    await write()
                assert "already open in this task" in str(e.value)
            with pytest.raises(statesafe.UsageError):
                async with store.transaction():
                    pass
            assert await store.get() == {"n": 0}
            later.append(asyncio.create_task(after()))
        gate.set()
        assert await later[0] == {"n": 11}
        assert await store.get() == {"n": 11}

    asyncio.run(main())
