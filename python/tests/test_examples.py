"""The seeds' programs, ported (examples/python/): they work, and they are safe."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

import statesafe

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples" / "python"
sys.path.insert(0, str(EXAMPLES))

import notify_check  # noqa: E402
import state_tracker  # noqa: E402
import trading_bot_state  # noqa: E402


def test_000_state_tracker_notifies_each_grade_once(path: pathlib.Path) -> None:
    tracker = state_tracker.StateTracker(str(path))
    grades = {"g101": {"vak": "Mat", "cijfer": "8.5"}}
    assert tracker.new_grades(grades) == [grades["g101"]]
    assert tracker.new_grades(grades) == []
    changed = {"g101": {"vak": "Mat", "cijfer": "9.0"}}
    assert tracker.new_grades(changed) == [changed["g101"]]
    assert tracker.new_homework({"h1": {"vak": "Eng"}}) == [{"vak": "Eng"}]
    assert tracker.schedule_changes({}) == []
    state = json.loads(path.read_text())
    assert set(state) == {"grades", "schedule", "homework", "last_check"}


def test_000_a_crash_mid_write_does_not_flood_notifications(path: pathlib.Path) -> None:
    tracker = state_tracker.StateTracker(str(path))
    grades = {f"g{i}": {"vak": "Mat", "cijfer": str(i)} for i in range(100)}
    tracker.new_grades(grades)
    tracker.new_homework({"h1": {"vak": "Eng"}})
    # What the original's crash left behind: half a document.
    path.write_text('{"grades": {"1": {"vak": "Mat')
    again = state_tracker.StateTracker(str(path))
    assert again.new_grades(grades) == [], "restored from the backup, not reset to empty"


def test_002_cron_and_manual_run_at_once_lose_nothing(path: pathlib.Path) -> None:
    statesafe.open(path).create(state_tracker.EMPTY)
    runs = []
    for run in range(6):
        fetched = {f"r{run}-g{i}": {"vak": "Mat", "cijfer": str(i)} for i in range(20)}
        runs.append(subprocess.Popen(
            [sys.executable, str(EXAMPLES / "notify_check.py"), "check", "--state", str(path),
             "--grades", json.dumps(fetched)],
            stdout=subprocess.PIPE, text=True, cwd=EXAMPLES))
    outputs = [p.communicate(timeout=120)[0] for p in runs]
    assert [p.returncode for p in runs] == [0] * 6
    assert sum(o.count("notify: new grade") for o in outputs) == 120
    assert len(json.loads(path.read_text())["grades"]) == 120


def test_002_lock_timeout_is_reported(path: pathlib.Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store = statesafe.open(path, default=state_tracker.EMPTY)
    real_open = statesafe.open
    monkeypatch.setattr(statesafe, "open",
                        lambda p, **kw: real_open(p, **{**kw, "lock_timeout": 0.1}))
    with store.lock("manual repair"):
        code = notify_check.main(["check", "--state", str(path), "--grades",
                                  '{"g1": {"vak": "Mat", "cijfer": "7"}}'])
    assert code == 75
    err = capsys.readouterr().err
    assert "manual repair" in err and "hint:" in err


def test_003_trading_state(state_dir: pathlib.Path) -> None:
    store = trading_bot_state.open_state(str(state_dir / "state"))
    assert trading_bot_state.load_state(store) == trading_bot_state.TradingState()
    state = trading_bot_state.record_trade(store, 200.0, "t1")
    state = trading_bot_state.record_trade(store, -50.0, "t2")
    assert (state.current_balance, state.peak_balance, state.trades_today) == (150.0, 200.0, 2)
    assert trading_bot_state.load_state(store) == state
    bad = trading_bot_state.TradingState(current_balance=-1.0)
    with pytest.raises(statesafe.Invalid, match="negative"):
        trading_bot_state.save_state(store, bad)
    assert trading_bot_state.load_state(store) == state, "a bad state is refused, not written"
    with pytest.raises(statesafe.Invalid, match="peak_balance"):
        trading_bot_state.save_state(store, trading_bot_state.TradingState(10.0, 5.0))
    saved = json.loads((state_dir / "state" / "trading_state.json").read_text())
    assert saved["current_balance"] == 150.0


def test_examples_run_as_scripts(state_dir: pathlib.Path) -> None:
    out = subprocess.run([sys.executable, str(EXAMPLES / "state_tracker.py"),
                          str(state_dir / "s.json")], capture_output=True, text=True, check=True)
    assert out.stdout == "new grade: Mat 8.5\n"
    out = subprocess.run([sys.executable, str(EXAMPLES / "trading_bot_state.py")],
                         capture_output=True, text=True, check=True, cwd=state_dir)
    assert out.stdout == "balance 12.50, peak 12.50\n"
