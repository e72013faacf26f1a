"""Session 22 (pol22): paths, info().deleted, Unsafe.what, model stores' update and
replace (runtime and stub).

1. A store opened with a relative path: after os.chdir() its operations, `store.path`
   and a forked child's reopening still go to the file it was opened on.
2. A NUL byte in the path is BadPath (a ValueError) naming the path, not an OSError.
3. info()["deleted"]: the state file was deleted (the CLI's "no: deleted").
4. Unsafe.what: which refusal it is, by the core's names.
5. A model store's update(fn) whose fn returns a plain dict returns the model instance
   (what was stored), not the dict; the stub types replace/create/update/commit with a
   plain document as the runtime accepts it (mypy --strict)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import statesafe


# ---------------------------------------------------------------- 1. chdir


def test_relative_path_keeps_to_its_file_after_chdir(state_dir: pathlib.Path,
                                                    tmp_path: pathlib.Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(state_dir)
    store = statesafe.open("state.json", default={"n": 0})
    store.update(lambda s: s.update(n=1))
    monkeypatch.chdir(elsewhere)
    store.update(lambda s: s.update(n=2))
    assert store.get() == {"n": 2}
    assert json.loads((state_dir / "state.json").read_text()) == {"n": 2}
    assert not (elsewhere / "state.json").exists()
    # `path` is the path made absolute at the opening: still the file's.
    assert store.path == str(state_dir / "state.json")
    assert json.loads(pathlib.Path(store.path).read_text()) == {"n": 2}
    # A forked child reopens the store on the same file.
    if hasattr(os, "fork"):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                store.update(lambda s: s.update(n=3))
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert json.loads((state_dir / "state.json").read_text()) == {"n": 3}
        assert not (elsewhere / "state.json").exists()


# ---------------------------------------------------------------- 2. NUL byte


def test_nul_byte_in_the_path_is_bad_path(state_dir: pathlib.Path) -> None:
    bad = str(state_dir / "sta\0te.json")
    with pytest.raises(statesafe.BadPath) as e:
        statesafe.open(bad, default={})
    assert isinstance(e.value, ValueError)
    assert "NUL" in str(e.value)
    assert "NUL" in e.value.reason
    assert e.value.path is not None and "sta\\0te.json" in e.value.path
    assert e.value.hint


# ---------------------------------------------------------------- 3. info()["deleted"]


def test_info_says_deleted(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0})
    assert store.info()["deleted"] is False
    store.update(lambda s: s.update(n=1))
    store.update(lambda s: s.update(n=2))
    assert store.info()["deleted"] is False
    path.unlink()
    info = store.info()
    assert info["deleted"] is True
    assert info["exists"] is False
    assert info["generation"] == 2


# ---------------------------------------------------------------- 4. Unsafe.what


def test_unsafe_says_which_refusal(state_dir: pathlib.Path) -> None:
    victim = state_dir / "victim"
    victim.write_text("x")
    # The sidecar's lock file a symlink, set up by hand: refused as planted.
    (state_dir / ".state.json.statesafe").mkdir()
    (state_dir / ".state.json.statesafe" / "lock").symlink_to(victim)
    with pytest.raises(statesafe.Unsafe) as e:
        statesafe.open(state_dir / "state.json", default={}).update(lambda s: s.update(n=2))
    assert e.value.what == "planted"
    assert "symbolic link" in e.value.reason
    assert victim.read_text() == "x"


# ---------------------------------------------------------------- 5. model stores


def test_model_update_returning_a_dict_returns_the_model(path: pathlib.Path) -> None:
    pydantic = pytest.importorskip("pydantic", reason="pydantic not installed: NOT TESTED")

    class Account(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        balance: int = 0
        owner: str = ""

    store = statesafe.open(path, model=Account, default=Account())
    out = store.update(lambda a: {"balance": 5, "owner": "ann"})
    assert isinstance(out, Account), type(out)
    assert out == Account(balance=5, owner="ann")
    assert store.get() == out
    # In place, and returning the instance: the instance, as before.
    out = store.update(lambda a: setattr(a, "balance", 6))
    assert isinstance(out, Account) and out.balance == 6
    new = Account(balance=7, owner="bob")
    assert store.update(lambda a: new) is new
    # A dict the model refuses: nothing written.
    with pytest.raises(statesafe.UsageError):
        store.update(lambda a: {"balance": "not a number"})
    assert store.get() == new


def test_model_update_returning_a_dict_returns_the_dataclass(path: pathlib.Path) -> None:
    import dataclasses

    @dataclasses.dataclass
    class Counter:
        n: int = 0

    store = statesafe.open(path, model=Counter, default=Counter())
    out = store.update(lambda c: {"n": 3})
    assert out == Counter(n=3) and isinstance(out, Counter)


def test_model_update_returning_a_dict_returns_the_model_aio(path: pathlib.Path) -> None:
    pydantic = pytest.importorskip("pydantic", reason="pydantic not installed: NOT TESTED")
    import asyncio

    import statesafe.aio

    class Account(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        balance: int = 0

    async def main() -> Any:
        store = statesafe.aio.open(path, model=Account, default=Account())
        return await store.update(lambda a: {"balance": 9})

    out = asyncio.run(main())
    assert isinstance(out, Account) and out.balance == 9


def test_stub_types_plain_documents_for_model_stores(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("pydantic", reason="pydantic not installed: NOT TESTED")
    pytest.importorskip("mypy", reason="mypy not installed: NOT TESTED")
    program = tmp_path / "program.py"
    program.write_text(textwrap.dedent("""\
        import pydantic
        import statesafe
        import statesafe.aio


        class Account(pydantic.BaseModel):
            balance: int = 0


        store = statesafe.open("state.json", model=Account, default=Account())
        store.replace({"balance": 1})
        store.replace(Account(balance=2))
        store.create({"balance": 0})
        done: Account = store.update(lambda a: {"balance": a.balance + 1})
        again: Account = store.update(lambda a: None)
        with store.transaction() as state:
            pass
        tx = store.transaction()
        tx.commit({"balance": 3})


        async def main() -> Account:
            s = statesafe.aio.open("state.json", model=Account, default=Account())
            await s.replace({"balance": 1})
            return await s.update(lambda a: {"balance": 2})
        """))
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                          "--cache-dir", os.devnull, str(program)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
