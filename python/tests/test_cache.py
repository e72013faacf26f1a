"""The transaction cache: a long-lived store hands its next transaction a private copy of
what it last committed, instead of parsing the file again, only while the file is still
that version (checked under the lock). These tests show it is never stale, never holds
a half-made change, and never shares objects with the caller."""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import pathlib
import subprocess
import sys
from collections import OrderedDict
from typing import Any

import pytest

import statesafe


def cache(store: statesafe.Store[Any]) -> tuple[int, int]:
    c = store.stats()["transaction_cache"]
    return c["hits"], c["misses"]


def test_consecutive_transactions_use_the_cache(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0, "items": []})
    with store.transaction() as first:
        first["n"] += 1
        first["items"].append({"id": 1})
    assert cache(store) == (0, 1), "the first transaction parses the file (here: the default)"
    with store.transaction() as second:
        assert second == {"n": 1, "items": [{"id": 1}]}
        # A copy, not the object the previous transaction handed out.
        assert second is not first and second["items"] is not first["items"]
        assert second["items"][0] is not first["items"][0]
        second["n"] += 1
    assert cache(store) == (1, 1)
    assert json.loads(path.read_text()) == {"n": 2, "items": [{"id": 1}]}


def test_another_process_commits_between_two_transactions(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0, "by": []})
    with store.transaction() as state:
        state["n"] += 1
        state["by"].append("parent")
    code = (
        "import statesafe\n"
        f"with statesafe.open({str(path)!r}).transaction() as s:\n"
        "    s['n'] += 10\n"
        "    s['by'].append('child')\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    hits, misses = cache(store)
    with store.transaction() as state:
        assert state == {"n": 11, "by": ["parent", "child"]}, "the child's commit is seen"
        state["n"] += 1
        state["by"].append("parent")
    assert cache(store) == (hits, misses + 1)
    assert store.get() == {"n": 12, "by": ["parent", "child", "parent"]}
    # And the version this store committed itself is cached again.
    with store.transaction() as state:
        assert state["n"] == 12
    assert cache(store) == (hits + 1, misses + 1)


def test_another_store_in_this_process_commits_between(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0})
    other = statesafe.open(path)
    with store.transaction() as state:
        state["n"] = 1
    other.replace({"n": 5})
    with store.transaction() as state:
        assert state == {"n": 5}
    store.replace({"n": 7})  # this store, but not through a transaction
    with store.transaction() as state:
        assert state == {"n": 7}


def test_a_change_made_outside_statesafe_is_seen(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0})
    with store.transaction() as state:
        state["n"] = 1
    text = path.read_text()
    path.write_text(text.replace("1", "2"))  # same length, same layout: only the value
    with store.transaction() as state:
        assert state == {"n": 2}
        state["n"] += 1
    assert store.get() == {"n": 3}


def test_a_body_that_raises_leaves_no_cached_change(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0, "nested": {"list": [1]}})
    with store.transaction() as state:
        state["n"] = 1
    with pytest.raises(RuntimeError):
        with store.transaction() as state:
            state["n"] = 99
            state["nested"]["list"].append(2)
            raise RuntimeError("abandon")
    with store.transaction() as state:
        assert state == {"n": 1, "nested": {"list": [1]}}
    assert store.get() == {"n": 1, "nested": {"list": [1]}}


def test_update_that_raises_leaves_no_cached_change(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0})
    store.update(lambda s: s.update(n=1))

    def fails(s: dict[str, Any]) -> None:
        s["n"] = 99
        raise ValueError("no")

    with pytest.raises(ValueError):
        store.update(fails)
    assert store.update(lambda s: None) == {"n": 1}


@pytest.mark.parametrize("how", ["validate", "max_bytes", "not_json"])
def test_a_failed_commit_leaves_no_cached_change(path: pathlib.Path, how: str) -> None:
    store = statesafe.open(path, default={"n": 0, "pad": ""},
                           validate=lambda d: d["n"] < 50, max_bytes=200)
    with store.transaction() as state:
        state["n"] = 1
    with pytest.raises((statesafe.Invalid, statesafe.TooLarge, TypeError)):
        with store.transaction() as state:
            state["n"] = 2
            if how == "validate":
                state["n"] = 99
            elif how == "max_bytes":
                state["pad"] = "x" * 500
            else:
                state["pad"] = {1, 2}
    assert store.generation == 1
    with store.transaction() as state:
        assert state == {"n": 1, "pad": ""}


def test_objects_handed_out_earlier_never_leak_into_the_next_transaction(
        path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0, "records": {"a": {"v": 1}}, "log": []})
    with store.transaction() as kept:
        kept["n"] = 1
    kept_records = kept["records"]
    # Changed after its transaction ended: these must never reach the file.
    kept["n"] = 1000
    kept["log"].append("leak")
    kept_records["a"]["v"] = 1000
    kept_records["b"] = {"v": 1000}
    with store.transaction() as state:
        assert state == {"n": 1, "records": {"a": {"v": 1}}, "log": []}
        state["log"].append("ok")
        # And what this transaction hands out is not what it keeps for the next one.
        late = state
    late["log"].append("late leak")
    late["records"]["a"]["v"] = -1
    assert cache(store)[0] >= 1, "the cache was used"
    with store.transaction() as state:
        assert state == {"n": 1, "records": {"a": {"v": 1}}, "log": ["ok"]}
    assert json.loads(path.read_text()) == {"n": 1, "records": {"a": {"v": 1}}, "log": ["ok"]}


def test_load_and_get_return_objects_of_their_own(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"list": []})
    with store.transaction() as state:
        state["list"].append(1)
    got = store.get()
    got["list"].append(2)
    store.load().value["list"].append(3)
    with store.transaction() as state:
        assert state == {"list": [1]}


def test_subclasses_are_not_cached_as_they_are(path: pathlib.Path) -> None:
    class Level(enum.IntEnum):
        HIGH = 3

    store = statesafe.open(path, default={})
    with store.transaction() as state:
        state["level"] = Level.HIGH
        state["ordered"] = OrderedDict(b=1, a=2)
    hits, misses = cache(store)
    with store.transaction() as state:
        # Exactly what parsing the file gives: plain int and dict, the order kept.
        assert type(state["level"]) is int and state["level"] == 3
        assert type(state["ordered"]) is dict and list(state["ordered"]) == ["b", "a"]
    assert cache(store) == (hits, misses + 1)


def test_numbers_from_the_cache_are_what_the_file_holds(path: pathlib.Path) -> None:
    values = [0.1, -0.0, 1e16, 5e-324, 2**64, -(2**63) - 1, 10**30, True, None, "é"]
    store = statesafe.open(path, default={"v": []})
    with store.transaction() as state:
        state["v"] = list(values)
    with store.transaction() as cached:
        pass
    fresh = statesafe.open(path).get()
    assert cached == fresh == {"v": values}
    assert [type(x) for x in cached["v"]] == [type(x) for x in fresh["v"]]
    assert str(cached["v"][1]) == "-0.0"


@dataclasses.dataclass
class Counter:
    n: int = 0
    names: list[str] = dataclasses.field(default_factory=list)


def test_a_model_store_uses_the_cache_without_sharing(path: pathlib.Path) -> None:
    store = statesafe.open(path, model=Counter, default=Counter())
    with store.transaction() as c:
        c.n += 1
        c.names.append("a")
    c.names.append("leak")
    with store.transaction() as d:
        assert d == Counter(1, ["a"])
        assert d is not c
    assert cache(store)[0] == 1


@pytest.mark.parametrize("layout", ["pretty", "compact"])
@pytest.mark.parametrize("fmt", ["plain", "sealed"])
def test_the_file_keeps_the_library_layout(path: pathlib.Path, layout: str, fmt: str) -> None:
    doc = {"a": {"b": [1, {"c": []}, {}, "x\n\"y\""], "é": None}, "t": True, "e": []}
    store = statesafe.open(path, default={}, layout=layout, format=fmt)
    with store.transaction() as state:
        state.update(doc)
    text = path.read_text(encoding="utf-8")
    on_disk = json.loads(text)
    if layout == "pretty":
        expected = json.dumps(on_disk, indent=2, ensure_ascii=False)
    else:
        expected = json.dumps(on_disk, separators=(",", ":"), ensure_ascii=False)
    assert text == expected + "\n"
    assert store.get() == doc
    assert store.check()["ok"]
    # The text the cache compares is the document's text inside the file (inside the
    # envelope, when sealed): the next transaction finds it.
    with store.transaction() as state:
        assert state == doc
        state["t"] = False
    assert cache(store) == (1, 1)
    with store.transaction() as state:
        assert state == {**doc, "t": False}
    assert cache(store) == (2, 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_and_its_parent_see_each_others_commits(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0, "by": []})
    with store.transaction() as state:
        state["n"] += 1
        state["by"].append("parent")
    pid = os.fork()
    if pid == 0:  # the child: the inherited store, its inherited cache
        code = 1
        try:
            with store.transaction() as state:
                if state == {"n": 1, "by": ["parent"]}:
                    state["n"] += 1
                    state["by"].append("child")
                    code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with store.transaction() as state:
        assert state == {"n": 2, "by": ["parent", "child"]}


def test_the_text_a_transaction_writes_verifies_and_is_recorded(path: pathlib.Path) -> None:
    """The package's own writer makes the committed text, and the library writes it
    without parsing it again: at the deepest nesting the writer accepts, the file is
    still statesafe's own version (a fresh store checks it, reads it back equal) and
    the commit has its backup and its history entry."""
    deep: Any = "leaf"
    for i in range(511):  # 512 levels with the top dict: the writer's limit (the library's)
        deep = [deep] if i % 2 else {"k": deep}
    store = statesafe.open(path, default={})
    with store.transaction() as state:
        state["n"] = 1
    with store.transaction() as state:
        state["deep"] = deep
        state["f"] = [0.1, -0.0, 1e300, 2**64 - 1, "é\n\"q\""]
    fresh = statesafe.open(path)
    assert fresh.check()["ok"]
    assert fresh.get() == {"n": 1, "deep": deep, "f": [0.1, -0.0, 1e300, 2**64 - 1, "é\n\"q\""]}
    assert [b["generation"] for b in fresh.backups()][:1] == [1]
    assert [h["generation"] for h in fresh.history()][-2:] == [1, 2]
    with pytest.raises(TypeError, match="nested more than"):
        with store.transaction() as state:
            state["deep"] = {"k": deep}
    assert fresh.get()["n"] == 1 and fresh.generation == 2
