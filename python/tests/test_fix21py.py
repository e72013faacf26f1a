"""Session 21 (fix21py): a `with` block's silent loss, and a blocking wait for
oneself (items 2 and 3, typed documents: test_fix21py_models.py).

1. Rebinding the `as` name inside `with store.transaction() as state:` (or `async
   with`): the new object was lost and the old document committed; now a UsageError
   at the block's end, nothing committed.
4. A blocking call of the store on the event loop's thread inside `async with
   store.transaction()` waited for the task's own lock until the lock timeout,
   blocking the loop; now refused at once."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import pathlib
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import statesafe
import statesafe.aio

# ---------------------------------------------------------------- 1. rebinding


def _rebinds_in_a_function(store: Any) -> None:
    with store.transaction() as state:
        state = {"n": 99}  # noqa: F841 - the footgun under test


def test_rebinding_the_as_name_in_a_function_is_refused(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0}, lock_timeout=30)
    store.replace({"n": 1})
    with pytest.raises(statesafe.UsageError) as e:
        _rebinds_in_a_function(store)
    text = str(e.value)
    assert str(path) in text and "`state`" in text and "nothing was committed" in text
    assert "store.replace(new)" in text and "in place" in text
    assert e.value.path == str(path)
    # Nothing committed, and the lock was given up.
    assert store.load().generation == 1 and store.get() == {"n": 1}
    with store.transaction() as state:
        state["n"] = 2
    assert store.get() == {"n": 2}


def test_changing_in_place_or_rebinding_to_the_same_object_still_commits(
        path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0})
    with store.transaction() as state:
        state["n"] = 1
        same = state
        state = same
    with store.transaction() as state:
        del state  # loses nothing: the document handed out is still committed
    with store.transaction():
        pass
    tx = store.transaction()
    state = tx.__enter__()
    state = {"n": 5}  # not a `with` statement: not checked (and not the document)
    tx.__exit__(None, None, None)
    assert store.get() == {"n": 1}


def test_rebinding_inside_a_closure_and_with_nonlocal_is_refused(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0})

    def closure() -> Any:
        with store.transaction() as state:
            state = {"n": 7}
            return lambda: state  # `state` is a cell variable: STORE_DEREF

    def outer() -> None:
        state: Any = None

        def inner() -> None:
            nonlocal state
            with store.transaction() as state:
                state = {"n": 8}
        inner()

    for fn in (closure, outer):
        with pytest.raises(statesafe.UsageError, match="`state`"):
            fn()
    assert not path.exists()


def test_rebinding_an_exception_in_the_block_wins(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0})
    with pytest.raises(KeyError):
        with store.transaction() as state:
            state = {}
            state["missing"]
    assert not path.exists()


def test_rebinding_a_frozen_dataclass_is_refused(path: pathlib.Path) -> None:
    @dataclasses.dataclass(frozen=True)
    class Frozen:
        n: int = 0

    store = statesafe.open(path, model=Frozen, default=Frozen())
    with pytest.raises(statesafe.UsageError, match="store.update"):
        with store.transaction() as state:
            state = dataclasses.replace(state, n=1)
    assert not path.exists()
    store.update(lambda s: dataclasses.replace(s, n=2))
    assert store.get() == Frozen(2)


def test_rebinding_at_module_level_and_global_is_refused(path: pathlib.Path) -> None:
    """A script's top level (STORE_NAME) and a `global` name (STORE_GLOBAL), in a child
    interpreter: the tests' own module is not a script."""
    script = textwrap.dedent(f"""
        import statesafe
        store = statesafe.open({str(path)!r}, default={{"n": 0}})
        try:
            with store.transaction() as state:
                state = {{"n": 1}}
        except statesafe.UsageError as e:
            print("module refused", "`state`" in str(e))
        def f():
            global g
            with store.transaction() as g:
                g = {{"n": 2}}
        try:
            f()
        except statesafe.UsageError as e:
            print("global refused", "`g`" in str(e))
        with store.transaction() as state:
            state["n"] = 3
        print(store.get())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    assert out.split("\n")[:3] == ["module refused True", "global refused True",
                                   "{'n': 3}"], out


def test_rebinding_in_async_with_is_refused(path: pathlib.Path) -> None:
    async def main() -> None:
        store = statesafe.aio.open(path, default={"n": 0}, lock_timeout=30)
        with pytest.raises(statesafe.UsageError) as e:
            async with store.transaction() as state:
                await asyncio.sleep(0)
                state = {"n": 1}
        assert "`state`" in str(e.value) and str(path) in str(e.value)
        assert not path.exists()
        async with store.transaction() as state:  # the lock was given up
            state["n"] = 2
        assert await store.get() == {"n": 2}

    asyncio.run(main())


# ---------------------------------------------------------------- 4. blocking calls


def test_blocking_calls_inside_async_with_are_refused_at_once(path: pathlib.Path) -> None:
    """lock_timeout=600: a call that waited for the lock would hang the test, not
    pass it slowly."""
    async def main() -> None:
        store = statesafe.aio.open(path, default={"n": 0}, lock_timeout=600)
        await store.replace({"n": 0})
        async with store.transaction() as state:
            state["n"] = 1
            for call in (store.sync.transaction, store.sync.lock,
                         lambda: store.sync.update(lambda s: None),
                         lambda: store.sync.replace({"n": 5}), store.sync.recover):
                with pytest.raises(statesafe.UsageError, match="already open"):
                    call()
            # Reads take no lock: they work, and see the committed version.
            assert store.sync.get() == {"n": 0}
            assert store.sync.load().generation == 1
            assert (await store.load()).generation == 1
        assert await store.get() == {"n": 1}
        # Given up with the lock: the loop's thread may lock again.
        with store.sync.transaction() as state:
            state["n"] = 2
        assert await store.get() == {"n": 2}

    asyncio.run(main())


def test_another_task_still_waits_for_the_lock(path: pathlib.Path) -> None:
    async def main() -> None:
        """Started outside the block (a task started inside inherits the holding
        task's lock and is refused, as documented)."""
        store = statesafe.aio.open(path, default={"n": 0}, lock_timeout=600)
        inside = asyncio.Event()

        async def other() -> None:
            await inside.wait()
            await store.update(lambda s: s.update(n=s["n"] * 10))

        task = asyncio.create_task(other())
        async with store.transaction() as state:
            state["n"] = 1
            inside.set()
            for _ in range(5):
                await asyncio.sleep(0)
        await task
        assert await store.get() == {"n": 10}

    asyncio.run(main())


# The bytecode check under every CPython this machine has (the installed wheel runs
# only under the test's own interpreter): statesafe/_rebind.py is pure Python and runs
# on its own, with a stand-in context manager.
_REBIND_SCRIPT = r'''
import asyncio, sys
sys.path.insert(0, sys.argv[1])
import _rebind

class CM:
    def __init__(self): self.obj = {"n": 0}; self.result = "not exited"
    def __enter__(self):
        self.b = _rebind.capture(1); return self.obj
    def __exit__(self, *a):
        self.result = _rebind.rebound(self.b, self.obj, 1); return False
    async def __aenter__(self):
        self.b = _rebind.capture(1); await asyncio.sleep(0); return self.obj
    async def __aexit__(self, *a):
        await asyncio.sleep(0)
        self.result = _rebind.rebound(self.b, self.obj, 1); return False

def ok():
    c = CM()
    with c as state: state["n"] = 1
    return c.result
def bad():
    c = CM()
    with c as state: state = {}
    return c.result
def closure():
    c = CM()
    with c as state:
        state = 1
        f = lambda: state
    return c.result
def nonlocal_():
    c = CM(); state = None
    def inner():
        nonlocal state
        with c as state: state = 5
    inner(); return c.result
def global_():
    global g
    c = CM()
    with c as g: g = 3
    return c.result
def no_as():
    c = CM()
    with c: pass
    return c.result
def deleted():
    c = CM()
    with c as state: del state
    return c.result
async def async_(rebind):
    c = CM()
    async with c as state:
        await asyncio.sleep(0)
        if rebind: state = {}
    return c.result
m = CM()
with m as top: top = 7
got = {"module": m.result}
for f in (ok, bad, closure, nonlocal_, global_, no_as, deleted):
    got[f.__name__] = f()
got["async_ok"] = asyncio.run(async_(False))
got["async_bad"] = asyncio.run(async_(True))
print(sorted(got.items()))
'''


def _interpreters() -> list[str]:
    import glob
    import shutil
    found = {sys.executable}
    for minor in range(9, 15):
        exe = shutil.which(f"python3.{minor}")
        if exe:
            found.add(exe)
    found.update(glob.glob(str(pathlib.Path.home() / ".pyenv/versions/3.*/bin/python3")))
    return sorted(found)


def test_rebind_bytecode_on_every_interpreter_found() -> None:
    expected = sorted({"module": "top", "ok": None, "bad": "state", "closure": "state",
                       "nonlocal_": "state", "global_": "g", "no_as": None,
                       "deleted": None, "async_ok": None, "async_bad": "state"}.items())
    where = str(pathlib.Path(statesafe.__file__).parent)
    versions = []
    for exe in _interpreters():
        version = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"],
                                 capture_output=True, text=True).stdout.strip()
        if not version or ast.literal_eval(version) < (3, 9):
            continue
        out = subprocess.run([exe, "-c", _REBIND_SCRIPT, where], capture_output=True,
                             text=True, check=True).stdout.strip()
        assert out == str(expected), (exe, out)
        versions.append(version)
    print("checked on", versions)
    assert versions
