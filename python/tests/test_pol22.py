"""Session 22 (pol22): paths, info().deleted, Unsafe.what.

1. A store opened with a relative path: after os.chdir() its operations, `store.path`
   and a forked child's reopening still go to the file it was opened on.
2. A NUL byte in the path is BadPath (a ValueError) naming the path, not an OSError.
3. info()["deleted"]: the state file was deleted (the CLI's "no: deleted").
4. Unsafe.what: which refusal it is, by the core's names."""

from __future__ import annotations

import json
import os
import pathlib

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
