"""A PostgreSQL state by URL (issue 15): `statesafe.open("postgres://…?state=NAME")` is
the same store as a file, on a throwaway server started for this module
(conftest.py's `pg_server`). No lost update across processes; the lock wait is bounded
and names the holder; a wrong database is a clear error. When no server can be
started the tests are skipped loudly, and fail under CI=true (CI installs it)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import uuid

import pytest

import statesafe

import _workers


def url(pg_server: str) -> str:
    return f"{pg_server}?state=py-{uuid.uuid4().hex[:12]}"


def test_a_url_is_a_store_like_a_file(pg_server: str) -> None:
    store = statesafe.open(url(pg_server))
    with pytest.raises(statesafe.NotFound):
        store.get()
    assert store.create({"n": 1, "tags": ["a"], "big": 12345678901234567890}) == 1
    assert store.update(lambda s: s.update(n=s["n"] + 1))["n"] == 2
    with store.transaction() as state:
        state["tags"].append("b")
    snap = store.load()
    assert snap.generation == 3
    assert snap.value == {"n": 2, "tags": ["a", "b"], "big": 12345678901234567890}
    with pytest.raises(statesafe.Conflict):
        store.replace({"n": 0}, if_generation=1)
    assert [e["generation"] for e in store.history()][-3:] == [1, 2, 3]
    assert store.check()["ok"] is True


def test_processes_never_lose_an_update(pg_server: str) -> None:
    target = url(pg_server)
    statesafe.open(target).create({"n": 0, "by": {}})
    procs_n, times = 4, 50
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_workers.spawned_worker, args=(target, times, {"lock_timeout": 120}))
             for _ in range(procs_n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert [p.exitcode for p in procs] == [0] * procs_n
    final = statesafe.open(target).get()
    assert final["n"] == procs_n * times, "lost updates"
    assert sorted(final["by"].values()) == [times] * procs_n


def test_a_held_lock_times_out_naming_the_holder(pg_server: str) -> None:
    target = url(pg_server)
    holder = statesafe.open(target)
    holder.create({"n": 0})
    waiter = statesafe.open(target, lock_timeout=0.3)
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with holder.transaction() as state:
            state["n"] = 1
            entered.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert entered.wait(30)
        with pytest.raises(statesafe.LockTimeout) as raised:
            waiter.update(lambda s: s.update(n=99))
        assert raised.value.holder is not None
        assert raised.value.holder.pid == os.getpid()
    finally:
        release.set()
        t.join()
    assert waiter.get() == {"n": 1}


def test_a_missing_database_is_a_clear_error(pg_server: str) -> None:
    base = pg_server.rsplit("/", 1)[0]
    with pytest.raises(statesafe.Error) as raised:
        statesafe.open(f"{base}/no_such_database?state=x").get()
    assert "no_such_database" in str(raised.value) or "does not exist" in str(raised.value)
