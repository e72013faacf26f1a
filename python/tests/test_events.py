"""Events reach on_event and the `statesafe` logger; counters reach stats()."""

from __future__ import annotations

import logging
import pathlib
import sys
from typing import Any

import pytest

import statesafe


def test_recovery_is_reported_everywhere(path: pathlib.Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    events: list[dict[str, Any]] = []
    store = statesafe.open(path, on_event=events.append)
    store.replace({"n": 1})
    store.replace({"n": 2})
    path.write_bytes(b"\x00" * 16)  # NUL-filled, as after a power loss without fsync
    with caplog.at_level(logging.WARNING, logger="statesafe"):
        # The newest provable version: backup 1 carried forward by the history.
        assert store.get() == {"n": 2}
    assert [e["kind"] for e in events] == ["recovered"]
    e = events[0]
    assert e["restored_from"] == 2 and e["rebuilt_from"] == 1
    assert e["generation"] == store.generation
    assert e["path"] == str(path)
    assert "damaged" in e["message"] and e["quarantined"]
    records = [r for r in caplog.records if r.name == "statesafe"]
    assert any("was damaged" in r.getMessage() for r in records)
    assert all(r.levelno == logging.WARNING for r in records)
    assert store.stats()["recoveries"] == 1


def test_a_replace_over_a_damaged_file_says_where_it_was_kept(path: pathlib.Path) -> None:
    events: list[dict[str, Any]] = []
    store = statesafe.open(path, on_event=events.append)
    store.replace({"n": 1})
    path.write_bytes(b'{"n": 3, "cut')
    generation = store.replace({"n": 10})
    assert [e["kind"] for e in events] == ["quarantined"]
    e = events[0]
    assert e["generation"] == generation
    assert e["path"] == str(path)
    assert isinstance(e["damage"], str) and e["damage"]
    kept = pathlib.Path(e["quarantined"])
    assert kept.read_bytes() == b'{"n": 3, "cut'
    assert "kept at" in e["message"]
    assert store.get() == {"n": 10}


def test_external_change_is_reported_once(path: pathlib.Path) -> None:
    events: list[dict[str, Any]] = []
    store = statesafe.open(path, on_event=events.append)
    store.replace({"n": 1})
    path.write_text('{"n": 5}')
    assert store.get() == {"n": 5}
    assert store.get() == {"n": 5}
    assert [e["kind"] for e in events] == ["external_change"]
    assert events[0]["generation"] == 2
    assert store.stats()["external_changes"] == 1


def test_a_failing_callback_does_not_fail_the_read(path: pathlib.Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def bad(event: dict[str, Any]) -> None:
        raise RuntimeError("callback bug")

    seen: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    store = statesafe.open(path, on_event=bad)
    store.replace({"n": 1})
    path.write_text('{"n": 2}')
    assert store.get() == {"n": 2}
    assert len(seen) == 1 and isinstance(seen[0].exc_value, RuntimeError)


def test_stats_count_failures_and_lock_waits(path: pathlib.Path) -> None:
    store = statesafe.open(path, max_bytes=50, default={})
    store.replace({"a": 1})
    with pytest.raises(statesafe.TooLarge):
        store.replace({"a": "x" * 100})
    s = store.stats()
    assert s["commits"] == 1 and s["failures"] == {"too_large": 1}
    assert s["lock_waits"]["count"] == 2
    assert set(s["commit"]) == {"count", "total", "mean", "max", "p50", "p99"}


def test_a_bookkeeping_failure_is_its_own_kind_with_its_fields(path: pathlib.Path) -> None:
    # Red16: a failure after the commit (recording the history) came as kind "other"
    # with only a message, although the Event type declares `what` and `error` for it;
    # a program that watches for it by kind never saw it, and the cause was not said.
    events: list[dict[str, Any]] = []
    store = statesafe.open(path, on_event=events.append)
    store.replace({"n": 1})
    history = path.parent / f".{path.name}.statesafe" / "history"
    for segment in list(history.iterdir()):
        segment.unlink()
        segment.mkdir()  # the next history append fails (EISDIR)
    generation = store.replace({"n": 2})
    assert store.get() == {"n": 2}  # the commit stands
    failed = [e for e in events if e["kind"] == "bookkeeping_failed"]
    assert len(failed) == 1, events
    e = failed[0]
    assert e["path"] == str(path)
    assert e["generation"] == generation
    assert e["what"] == "recording history"
    assert "Is a directory" in e["error"], e
    assert "Is a directory" in e["message"], e
