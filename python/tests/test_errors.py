"""Every exception: its class, its fields, its hint, and that nothing was written."""

from __future__ import annotations

import errno
import os
import pathlib
import pickle
import shutil
import subprocess
import sys

import pytest

import statesafe
from statesafe import _errors


def test_hierarchy() -> None:
    for name in ["NotFound", "AlreadyExists", "Corrupt", "LockTimeout", "Conflict", "Invalid",
                 "TooLarge", "OSFailure", "NoSpace", "PermissionDenied", "ReadOnlyFilesystem",
                 "OutcomeUnknown", "Poisoned", "Unrecoverable", "BadPath", "BadSchema",
                 "GenerationUnavailable", "Closed", "UsageError"]:
        assert issubclass(getattr(statesafe, name), statesafe.Error), name
    assert issubclass(statesafe.NotFound, FileNotFoundError)
    assert issubclass(statesafe.PermissionDenied, PermissionError)
    assert issubclass(statesafe.NoSpace, OSError)
    assert issubclass(statesafe.LockTimeout, TimeoutError)
    assert issubclass(statesafe.Invalid, ValueError)


def test_corrupt_names_line_and_column(path: pathlib.Path) -> None:
    path.write_text('{\n  "a": 1,\n  "b": }\n')
    store = statesafe.open(path, recovery="fail")
    before = path.read_bytes()
    with pytest.raises(statesafe.Corrupt) as e:
        store.get()
    assert (e.value.line, e.value.column) == (3, 8)
    assert e.value.path == str(path)
    assert "line 3, column 8" in str(e.value)
    assert "hint: " in str(e.value) and e.value.hint
    assert path.read_bytes() == before, "a failing load must not touch the file"


def test_unrecoverable_keeps_the_damaged_file(path: pathlib.Path) -> None:
    store = statesafe.open(path, backups=0)
    store.replace({"n": 1})
    path.write_text("garbage")
    with pytest.raises(statesafe.Unrecoverable) as e:
        store.get()
    assert e.value.quarantined and os.path.exists(e.value.quarantined)
    assert e.value.damage and "corrupt" in e.value.damage
    assert e.value.tried == []
    assert e.value.causes, "the damage is the cause"
    assert e.value.quarantined in (e.value.hint or "")


def test_invalid_by_schema_names_rule_and_pointer(path: pathlib.Path,
                                                  state_dir: pathlib.Path) -> None:
    schema = {"type": "object",
              "properties": {"balance": {"type": "number", "minimum": 0}}}
    store = statesafe.open(path, schema=schema)
    store.replace({"balance": 5})
    with pytest.raises(statesafe.Invalid) as e:
        with store.transaction() as state:
            state["balance"] = -1
    assert e.value.pointer == "/balance"
    assert e.value.rule == "/properties/balance/minimum"
    assert len(e.value.violations) == 1
    assert store.get() == {"balance": 5}
    # The same schema from a file.
    schema_file = state_dir / "schema.json"
    schema_file.write_text('{"type": "array"}')
    with pytest.raises(statesafe.Invalid):
        statesafe.open(state_dir / "other.json", schema=schema_file).replace({"not": "array"})
    with pytest.raises(statesafe.BadSchema) as bad:
        statesafe.open(path, schema={"type": "no-such-type"})
    assert bad.value.hint


def test_invalid_by_validate_callable(path: pathlib.Path) -> None:
    def rule(state: dict[str, int]) -> object:
        if state["balance"] < 0:
            return "balance must not be negative"
        if state["balance"] > 1000:
            raise ValueError("balance is implausibly high")
        return state["balance"] != 13

    store = statesafe.open(path, default={"balance": 0}, validate=rule)
    store.replace({"balance": 5})
    for bad, text in [(-1, "must not be negative"), (5000, "implausibly high"),
                      (13, "returned False")]:
        with pytest.raises(statesafe.Invalid, match=text) as e:
            store.update(lambda s, bad=bad: s.update(balance=bad))
        assert e.value.rule == "validate"
    assert store.get() == {"balance": 5}

    def broken(state: object) -> None:
        raise KeyError("a bug in the rule")

    store2 = statesafe.open(path, validate=broken)
    with pytest.raises(KeyError):  # a bug is not a verdict: it propagates as it is
        store2.replace({"balance": 6})
    assert store.get() == {"balance": 5}
    # ... and the lock was released.
    statesafe.open(path, lock_timeout=0).replace({"balance": 7})


def test_too_large(path: pathlib.Path) -> None:
    store = statesafe.open(path, max_bytes=100)
    store.replace({"small": 1})
    with pytest.raises(statesafe.TooLarge) as e:
        store.replace({"big": "x" * 200})
    assert e.value.limit == 100 and e.value.size > 100
    assert store.get() == {"small": 1}


def test_closed_and_usage(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={})
    tx = store.transaction()
    tx.rollback()
    with pytest.raises(statesafe.UsageError):
        tx.rollback()
    store.close()
    with pytest.raises(statesafe.Closed):
        store.transaction()


def test_errors_carry_hint_in_str_and_pickle() -> None:
    e = _errors._from_rust(
        "outcome_unknown",
        "outcome unknown for `s.json`: the new state is in place but the directory fsync failed",
        ["Input/output error (os error 5)"], "check the storage",
        {"path": "s.json", "generation": 7})
    assert isinstance(e, statesafe.OutcomeUnknown) and e.generation == 7  # type: ignore[attr-defined]
    assert str(e).splitlines() == [
        "outcome unknown for `s.json`: the new state is in place but the directory fsync failed",
        "caused by: Input/output error (os error 5)",
        "hint: check the storage"]
    again = pickle.loads(pickle.dumps(e))
    assert type(again) is statesafe.OutcomeUnknown and str(again) == str(e)
    p = _errors._from_rust("poisoned", "store for `s.json` refuses writes", [], "reopen",
                           {"path": "s.json"})
    assert isinstance(p, statesafe.Poisoned)


def test_permission_denied_as_another_user(state_dir: pathlib.Path) -> None:
    """A user without write access to the directory gets PermissionDenied (EACCES)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user: NOT TESTED here")
    os.chmod(state_dir, 0o755)
    target = state_dir / "root-owned.json"
    statesafe.open(target).replace({"owner": "root"})
    code = (
        "import os, statesafe\n"
        "os.setgid(65534); os.setuid(65534)\n"
        f"s = statesafe.open({str(target)!r})\n"
        "assert s.get() == {'owner': 'root'}\n"
        "try:\n"
        "    s.replace({'owner': 'nobody'})\n"
        "except statesafe.PermissionDenied as e:\n"
        "    assert isinstance(e, PermissionError) and e.errno in (1, 13), e.errno\n"
        "    assert e.hint and 'permission' in str(e)\n"
        "    print('denied')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "denied", out.stderr
    assert statesafe.open(target).get() == {"owner": "root"}


def _mount_tmpfs(where: pathlib.Path, size: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) for a small tmpfs: NOT TESTED here")
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): NOT TESTED")


def test_no_space_and_read_only(state_dir: pathlib.Path) -> None:
    mnt = state_dir / "small"
    _mount_tmpfs(mnt, "256k")
    try:
        store = statesafe.open(mnt / "s.json", backups=0, history=0)
        store.replace({"n": 1})
        with pytest.raises(statesafe.NoSpace) as e:
            store.replace({"big": "x" * (1 << 20)})
        assert e.value.errno == errno.ENOSPC and e.value.hint
        assert store.get() == {"n": 1}
        store.close()  # its descriptors would keep the mount busy
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        ro = statesafe.open(mnt / "s.json")
        assert ro.get() == {"n": 1}, "reads work on a read-only filesystem"
        with pytest.raises(statesafe.ReadOnlyFilesystem) as r:
            ro.replace({"n": 2})
        assert r.value.errno == errno.EROFS and r.value.hint
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
