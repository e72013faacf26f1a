"""No lost updates across processes (fork and spawn) and threads; the GIL is released
while waiting; a forked child never shares its parent's lock; Ctrl-C during a lock wait
leaves no lock behind."""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import statesafe

import _workers

PROCS, TIMES = 8, 500
# The exclusion under test is the lock's; fsync only makes each turn slower.
FAST = {"durability": "none", "history": 0, "backups": 0, "lock_timeout": 120}


def _check(path: pathlib.Path, procs: int, times: int) -> None:
    final = statesafe.open(path).get()
    assert final["n"] == procs * times, "lost updates"
    assert sorted(final["by"].values()) == [times] * procs


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_processes_never_lose_an_update(path: pathlib.Path, method: str) -> None:
    store = statesafe.open(path, **FAST)
    store.create({"n": 0, "by": {}})
    ctx = multiprocessing.get_context(method)
    if method == "fork":
        _workers.INHERITED = store  # used by the children after the fork
        procs = [ctx.Process(target=_workers.inherited_worker, args=(TIMES,))
                 for _ in range(PROCS)]
    else:
        procs = [ctx.Process(target=_workers.spawned_worker, args=(str(path), TIMES, FAST))
                 for _ in range(PROCS)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=600)
    finally:
        _workers.INHERITED = None
    assert [p.exitcode for p in procs] == [0] * PROCS
    _check(path, PROCS, TIMES)
    # The parent's store still works after its children used copies of it.
    store.update(lambda s: s.update(n=s["n"] + 1))
    assert store.get()["n"] == PROCS * TIMES + 1


@pytest.mark.parametrize("shared", [True, False], ids=["one-store", "store-per-thread"])
def test_threads_never_lose_an_update(path: pathlib.Path, shared: bool) -> None:
    first = statesafe.open(path, **FAST)
    first.create({"n": 0, "by": {}})
    errors: list[BaseException] = []

    def work(i: int) -> None:
        store = first if shared else statesafe.open(path, **FAST)
        try:
            for _ in range(TIMES):
                with store.transaction() as state:
                    state["n"] += 1
                    key = f"t{i}"
                    state["by"][key] = state["by"].get(key, 0) + 1
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _check(path, 8, TIMES)


def test_a_waiting_thread_does_not_hold_the_gil(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0})
    store.replace({"n": 0})
    waiter_store = statesafe.open(path, lock_timeout=60)
    guard = store.lock()
    started = threading.Event()
    done = threading.Event()

    def waiter() -> None:
        started.set()
        with waiter_store.transaction() as s:
            s["n"] += 1
        done.set()

    t = threading.Thread(target=waiter)
    t.start()
    started.wait()
    while waiter_store.lock_holder() is None:  # until the lock is certainly held
        time.sleep(0.001)
    # Pure Python work in this thread while the other waits in native code. Were the
    # GIL held during the wait (100 ms slices), this loop would stall for whole slices.
    progress = 0
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        progress += 1
    assert not done.is_set(), "the waiter must still be waiting"
    assert progress > 10_000, f"only {progress} iterations while the other thread waited"
    guard.release()
    t.join()
    assert store.get() == {"n": 1}


def test_a_forked_child_never_shares_the_parents_lock(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0}, lock_timeout=0.3)
    store.replace({"n": 1})
    with store.lock():
        pid = os.fork()
        if pid == 0:  # child: the parent holds the lock, so we must wait and time out
            code = 1
            try:
                child = statesafe.open(path, lock_timeout=0.3)
                try:
                    with child.transaction() as s:
                        s["n"] = 666
                except statesafe.LockTimeout:
                    try:
                        # The parent's store object, used in the child: reopened, not shared.
                        store.replace({"n": 667})
                    except statesafe.LockTimeout:
                        code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child got into the parent's lock"
        # The child's exit did not release the lock we hold.
        with pytest.raises(statesafe.LockTimeout):
            statesafe.open(path, lock_timeout=0).replace({"n": 2})
    assert store.get() == {"n": 1}
    store.replace({"n": 2})


def test_a_transaction_begun_before_fork_is_the_parents(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0})
    tx = store.transaction()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            try:
                tx.commit({"n": 666})
            except statesafe.UsageError as e:
                code = 0 if "before a fork" in str(e) else 2
            del tx  # dropping the copy must not release the parent's lock
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with pytest.raises(statesafe.LockTimeout):
        statesafe.open(path, lock_timeout=0).lock()
    tx.state["n"] = 5
    tx.commit()
    assert store.get() == {"n": 5}


def test_the_lock_dies_with_its_holder_even_with_a_forked_child_alive(
        path: pathlib.Path) -> None:
    """A holder forks a long-lived child, then dies holding the lock: the lock must be
    free (the child closed its inherited copy of the lock descriptor)."""
    statesafe.open(path).replace({"n": 0})
    script = textwrap.dedent(f"""
        import os, sys, time, statesafe
        store = statesafe.open({str(path)!r})
        guard = store.lock()
        child = os.fork()
        if child == 0:
            time.sleep(60)
            os._exit(0)
        print(child, flush=True)
        os._exit(0)  # dies holding the lock
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    proc.wait(timeout=30)
    try:
        os.kill(child, 0)  # the forked child is alive...
        with statesafe.open(path, lock_timeout=5).lock():  # ...and the lock is free
            pass
    finally:
        os.kill(child, signal.SIGKILL)


def test_ctrl_c_during_a_lock_wait(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0})
    store.replace({"n": 1})
    script = textwrap.dedent(f"""
        import signal, statesafe, sys
        # Python's own Ctrl-C handler, even where a shell started us with SIGINT ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        store = statesafe.open({str(path)!r}, lock_timeout=120)
        print("waiting", flush=True)
        try:
            with store.transaction() as s:
                s["n"] = 666
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(0)
        print("not interrupted", flush=True)
    """)
    with store.lock():
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "waiting"
        time.sleep(0.5)  # let it block in the wait (not a timing assertion)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert out.strip() == "interrupted"
        assert proc.returncode == 0
    # No stale lock, nothing written.
    with statesafe.open(path, lock_timeout=0).transaction() as s:
        assert s == {"n": 1}
        s["n"] = 2
    assert store.get() == {"n": 2}


def test_keyboard_interrupt_inside_a_transaction_writes_nothing(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0})
    store.replace({"n": 1})
    with pytest.raises(KeyboardInterrupt):
        with store.transaction() as s:
            s["n"] = 666
            raise KeyboardInterrupt
    assert store.get() == {"n": 1}
    statesafe.open(path, lock_timeout=0).replace({"n": 2})
