"""Every method of the synchronous API."""

from __future__ import annotations

import json
import os
import pathlib
import re

import pytest

import statesafe


def test_default_only_while_the_file_is_missing(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"grades": {}})
    assert store.get() == {"grades": {}}
    snap = store.load()
    assert (snap.value, snap.generation) == ({"grades": {}}, 0)
    assert not path.exists(), "reading a default must not create the file"
    # Each read gets its own copy: mutating one never changes the default.
    store.get()["grades"]["x"] = 1
    assert store.get() == {"grades": {}}


def test_missing_file_without_default_is_not_found(path: pathlib.Path) -> None:
    store = statesafe.open(path)
    with pytest.raises(statesafe.NotFound) as e:
        store.get()
    assert isinstance(e.value, FileNotFoundError)
    assert e.value.path == str(path)
    with pytest.raises(statesafe.NotFound):
        with store.transaction():
            pass
    assert store.generation == 0


def test_transaction_commits_on_clean_exit(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"grades": {}})
    with store.transaction() as state:
        state["grades"]["g101"] = {"vak": "Mat"}
    assert json.loads(path.read_text()) == {"grades": {"g101": {"vak": "Mat"}}}
    assert store.generation == 1
    with store.transaction() as state:
        state["grades"]["g102"] = {"vak": "Eng"}
    assert store.load().generation == 2
    assert set(store.get()["grades"]) == {"g101", "g102"}


def test_transaction_writes_nothing_when_the_block_raises(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0})
    store.replace({"n": 1})
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        with store.transaction() as state:
            state["n"] = 99
            raise RuntimeError("boom")
    assert path.read_bytes() == before
    assert store.generation == 1
    # The lock was released: another store can take it at once.
    other = statesafe.open(path, lock_timeout=0)
    with other.transaction() as state:
        state["n"] = 2
    assert store.get() == {"n": 2}


def test_transaction_object_api(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0})
    tx = store.transaction()
    assert tx.generation == 0
    assert tx.state == {"n": 0}
    tx.state["n"] = 5
    assert tx.commit() == 1
    assert tx.committed_generation == 1
    with pytest.raises(statesafe.UsageError, match="already finished"):
        tx.commit()
    tx2 = store.transaction()
    assert tx2.commit({"n": 6}) == 2
    tx3 = store.transaction()
    tx3.state["n"] = 100
    tx3.rollback()
    assert store.get() == {"n": 6}
    assert "finished" in repr(tx3)


def test_update_in_place_or_by_return(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0})
    assert store.update(lambda s: s.update(n=s["n"] + 1)) == {"n": 1}
    assert store.update(lambda s: {"n": s["n"] + 10, "new": True}) == {"n": 11, "new": True}
    assert store.get() == {"n": 11, "new": True}

    def fail(state: dict[str, int]) -> None:
        state["n"] = -1
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        store.update(fail)
    assert store.get()["n"] == 11
    assert store.generation == 2


def test_unchanged_document_writes_nothing(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0})
    store.replace({"n": 1})
    with store.transaction():
        pass
    assert store.generation == 1


def test_replace_and_compare_and_swap(path: pathlib.Path) -> None:
    store = statesafe.open(path)
    assert store.replace({"serial": 1}, if_generation=0) == 1
    snap = store.load()
    assert store.replace({"serial": 2}) == 2
    with pytest.raises(statesafe.Conflict) as e:
        store.replace({"serial": 3}, if_generation=snap.generation)
    assert (e.value.expected, e.value.actual) == (1, 2)
    assert "read it again" in (e.value.hint or "")
    assert store.get() == {"serial": 2}


def test_create(path: pathlib.Path) -> None:
    store = statesafe.open(path)
    assert store.create([1, 2]) == 1
    with pytest.raises(statesafe.AlreadyExists) as e:
        store.create([3])
    assert isinstance(e.value, FileExistsError)


def test_lock_holds_other_writers_off(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={})
    other = statesafe.open(path, lock_timeout=0.2)
    with store.lock("maintenance") as guard:
        assert guard.held
        holder = other.lock_holder()
        assert holder is not None
        assert holder["pid"] == os.getpid()
        assert holder["operation"] == "maintenance"
        with pytest.raises(statesafe.LockTimeout) as e:
            other.replace({"x": 1})
        assert e.value.holder is not None
        assert e.value.holder.pid == os.getpid()
        assert e.value.holder.operation == "maintenance"
        assert e.value.waited >= 0.2
        assert "maintenance" in str(e.value) and "hint: " in str(e.value)
    assert not guard.held
    assert other.lock_holder() is None
    other.replace({"x": 1})
    g = store.lock()
    g.release()
    g.release()  # idempotent


def test_backups_restore_history_diff_at(path: pathlib.Path) -> None:
    store = statesafe.open(path, backups=3)
    for n in range(1, 6):
        store.replace({"n": n})
    backups = store.backups()
    assert [b["generation"] for b in backups] == [4, 3, 2]
    assert all(pathlib.Path(b["path"]).exists() and b["size"] > 0 for b in backups)
    assert store.restore(3) == 6
    assert store.get() == {"n": 3}
    history = store.history()
    assert [h["generation"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1]["change"] == {"restore": {"from": 3}}
    # Each entry's checksum of the document it holds (16 hex digits, as the CLI's
    # `--json` and Node): the restore of generation 3 holds its document, so its checksum.
    assert all(re.fullmatch(r"[0-9a-f]{16}", h["checksum"]) for h in history), history
    assert len({h["checksum"] for h in history[:5]}) == 5
    assert history[5]["checksum"] == history[2]["checksum"]
    assert store.diff(1, 2) == [{"op": "replace", "path": "/n", "value": 2}]
    assert store.at(2) == {"n": 2}
    with pytest.raises(statesafe.GenerationUnavailable):
        store.at(99)


def test_check_recover_info_stats(path: pathlib.Path) -> None:
    events: list[dict[str, object]] = []
    store = statesafe.open(path, on_event=events.append)
    store.replace({"n": 1})
    store.replace({"n": 2})
    assert store.check()["ok"] is True
    assert store.recover() is None
    path.write_text('{"n": ')  # damaged outside statesafe
    report = store.check()
    assert report["ok"] is False and report["problems"]
    event = store.recover()
    assert event is not None and event["kind"] == "recovered"
    # The newest provable version: backup 1 carried forward by the history's patch.
    assert event["restored_from"] == 2 and event["rebuilt_from"] == 1
    assert store.get() == {"n": 2}
    assert os.path.exists(event["quarantined"])  # type: ignore[arg-type]
    assert [e["kind"] for e in events] == ["recovered"]
    info = store.info()
    assert info["exists"] and info["generation"] == store.generation
    assert info["last_writer"]["pid"] == os.getpid()
    assert info["settings"]["backups"]["keep"] == 5
    stats = store.stats()
    assert stats["commits"] == 3 and stats["recoveries"] == 1
    assert stats["commit"]["count"] == 3 and stats["commit"]["max"] > 0


def test_close_and_context_manager(path: pathlib.Path) -> None:
    with statesafe.open(path, default={}) as store:
        store.replace({"a": 1})
    assert store.closed
    with pytest.raises(statesafe.Closed) as e:
        store.get()
    assert "closed" in str(e.value) and e.value.hint
    store.close()  # idempotent
    assert "closed" in repr(store)


def test_options(path: pathlib.Path, state_dir: pathlib.Path) -> None:
    store = statesafe.open(path, format="sealed", layout="compact", durability="none",
                           private=True, history=0, backups={"keep": 1, "hourly": 2})
    store.replace({"a": 1})
    text = path.read_text()
    assert text.startswith('{"statesafe":') and "\n" == text[-1]
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert store.history() == []
    assert store.get() == {"a": 1}
    with pytest.raises(ValueError, match="durability"):
        statesafe.open(path, durability="sometimes")
    with pytest.raises(ValueError, match="lock_timeout"):
        statesafe.open(path, lock_timeout=-1)
    with pytest.raises(TypeError, match="backups"):
        statesafe.open(path, backups="many")  # type: ignore[arg-type]
    with pytest.raises(statesafe.BadPath):
        statesafe.open(state_dir)
    assert statesafe.open(path, lock_timeout=2.5).lock_timeout == 2.5
    assert statesafe.open(path).lock_timeout == 10.0


def test_pretty_layout_is_the_default(path: pathlib.Path) -> None:
    statesafe.open(path).replace({"a": [1, 2]})
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ]\n}\n'


def test_an_existing_plain_file_is_adopted(path: pathlib.Path) -> None:
    path.write_text('{"legacy": true}')
    store = statesafe.open(path)
    assert store.get() == {"legacy": True}
    store.update(lambda s: s.update(more=1))
    assert json.loads(path.read_text()) == {"legacy": True, "more": 1}
