"""A thread that holds a store's lock (an open transaction, a `lock()` guard) and asks
for it again through the same store: refused at once with UsageError, never a wait for
itself that ends in a LockTimeout blaming this very process."""

from __future__ import annotations

import pathlib
import threading

import pytest

import statesafe


def test_every_locking_call_inside_a_transaction_is_refused_at_once(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0}, lock_timeout=30)
    store.replace({"n": 0})
    with store.transaction() as outer:
        outer["n"] = 1
        calls = {
            "transaction": store.transaction,
            "update": lambda: store.update(lambda s: None),
            "replace": lambda: store.replace({"n": 2}),
            "create": lambda: store.create({"n": 2}),
            "restore": lambda: store.restore(1),
            "recover": store.recover,
            "lock": store.lock,
        }
        for name, call in calls.items():
            with pytest.raises(statesafe.UsageError) as e:
                call()
            assert "already open in this thread" in str(e.value), name
            assert "commit or roll it back first" in str(e.value), name
        # Reads take no lock: they still work, and see the committed version.
        assert store.get() == {"n": 0}
    # The outer transaction was not harmed: it committed.
    assert store.get() == {"n": 1}
    assert store.load().generation == 2


def test_the_same_thread_may_lock_again_once_it_let_go(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0}, lock_timeout=30)
    with store.transaction() as s:
        s["n"] = 1
    tx = store.transaction()
    tx.rollback()
    with pytest.raises(RuntimeError):
        with store.transaction() as s:
            raise RuntimeError("abort")
    with pytest.raises(ValueError):
        store.update(lambda s: int("x"))
    with store.lock():
        pass
    guard = store.lock()
    guard.release()
    store.update(lambda s: s.update(n=s["n"] + 1))
    assert store.get() == {"n": 2}


def test_another_thread_still_waits_for_the_lock(path: pathlib.Path) -> None:
    """Only the thread that holds the lock is refused: another one waits, as always."""
    store = statesafe.open(path, default={"n": 0}, lock_timeout=30)
    done: list[object] = []
    with store.transaction() as s:
        s["n"] = 1
        t = threading.Thread(target=lambda: done.append(store.update(
            lambda d: d.update(n=d["n"] * 10))))
        t.start()
        t.join(0.3)
        assert done == []
    t.join(30)
    assert done == [{"n": 10}]
    assert store.get() == {"n": 10}
