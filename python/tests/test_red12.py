"""Red team, session 12: attacks on the Python package. A skipped test is a bug it found
(the reason says how it happens; STATESAFE_RED12_RUN=1 runs it, to watch it fail); the
others are attacks the package withstands that no other test makes."""

from __future__ import annotations

import asyncio
import decimal
import json
import os
import pathlib
import subprocess
import sys
import threading

import pytest

import statesafe
import statesafe.aio


def bug(reason: str) -> pytest.MarkDecorator:
    """Skips a test that shows a bug, unless STATESAFE_RED12_RUN is set."""
    return pytest.mark.skipif(not os.environ.get("STATESAFE_RED12_RUN"), reason=reason)


class Cents(int):
    """An int subclass whose str() is not its value (a display format)."""

    def __str__(self) -> str:
        return f"{int(self) // 100}"


# Was a bug (red12): an int beyond 64 bits was written through its own __str__.
def test_an_int_subclass_beyond_64_bits_keeps_its_value(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={})
    doc = {"small": Cents(12345), "big": Cents(2**70), "neg": Cents(-(2**70))}
    try:
        store.replace(doc)
    except TypeError:
        # A build without big integers may refuse it, naming it; never change it.
        assert not statesafe.BIG_INTS
        return
    assert json.loads(path.read_text()) == {"small": 12345, "big": 2**70, "neg": -(2**70)}
    assert store.get() == {"small": 12345, "big": 2**70, "neg": -(2**70)}


# Was a bug (red12): 1e400 was served as inf, then blamed on the program.
def test_a_number_beyond_a_doubles_range_is_not_served_as_inf(path: pathlib.Path) -> None:
    path.write_text('{"a": 1e400, "n": 0}\n')
    store = statesafe.open(path)
    try:
        got = store.get()
    except Exception as e:  # refusing is fine if it says where and why
        assert str(path) in str(e) and "/a" in str(e), str(e)
    else:
        assert got["a"] != float("inf"), "1e400 was served as inf"
    try:
        with store.transaction() as state:
            state["n"] = 1
    except Exception as e:
        assert str(path) in str(e), f"the error names no file: {e}"
        assert path.read_text() == '{"a": 1e400, "n": 0}\n'
    else:
        assert '"a": 1e400' in path.read_text(), "the untouched 1e400 was changed"


# Was a bug (red12): such a number was read as the nearest float and written back as it.
@pytest.mark.parametrize("written", ["12345678901234567890e0", "1234567890.123456789e10",
                                     "9007199254740993.0", "1e-400"])
def test_an_untouched_number_keeps_its_value(path: pathlib.Path, written: str) -> None:
    path.write_text(f'{{"id": {written}, "n": 0}}\n')
    store = statesafe.open(path)
    with store.transaction() as state:
        state["n"] = 1
    # The file's number, read exactly (json's parse_float keeps the decimal text).
    got = json.loads(path.read_text(), parse_float=decimal.Decimal, parse_int=decimal.Decimal)
    assert got["n"] == 1
    assert got["id"] == decimal.Decimal(written), f"{written} became {got['id']}"


# Once a bug (a plain document starting with a `statesafe` member was read as a sealed
# envelope): fixed, only an envelope's exact shape is sealed.
def test_a_document_whose_first_key_is_statesafe_reads_back(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={})
    store.replace({"statesafe": {"v": 2}, "x": 1})
    assert store.get() == {"statesafe": {"v": 2}, "x": 1}
    with store.transaction() as state:
        state["x"] = 2
    assert statesafe.open(path).get() == {"statesafe": {"v": 2}, "x": 2}


def test_a_password_on_the_command_line_is_not_recorded_in_the_database(pg_server: str) -> None:
    # The test server trusts every local connection: any password is accepted.
    user_at = pg_server.removeprefix("postgres://")
    url = f"postgres://{user_at.replace('@', ':hunter2-red12@', 1)}?state=red12-pw"
    code = ("import statesafe, sys\n"
            "s = statesafe.open(sys.argv[1], default={'n': 0})\n"
            "s.update(lambda d: d.update(n=d['n'] + 1))\n"
            "print(s.info()['path'])\n")
    out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True,
                         cwd="/", check=True)
    assert "hunter2-red12" not in out.stdout
    store = statesafe.open(f"{pg_server}?state=red12-pw")
    info = store.info()
    recorded = json.dumps([info["last_writer"], store.history()])
    assert "hunter2-red12" not in recorded, recorded


def test_a_nested_transaction_of_one_store_is_told_so(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0}, lock_timeout=1)
    with pytest.raises(statesafe.Error) as e:
        with store.transaction() as outer:
            outer["n"] = 1
            with store.transaction() as inner:
                inner["n"] = 2
    text = str(e.value)
    if isinstance(e.value, statesafe.LockTimeout):
        assert f"wait for process {os.getpid()} to finish" not in text, text
    assert path.exists() is False or statesafe.open(path).get() == {"n": 0}


def test_a_cancelled_async_update_is_never_committed_later(path: pathlib.Path) -> None:
    holder = statesafe.open(path, default={"n": 0})
    holder.replace({"n": 0})

    async def main() -> None:
        store = statesafe.aio.open(path, lock_timeout=30)
        guard = holder.lock()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(store.update(lambda s: s.update(n=s["n"] + 1)), 0.2)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(store.replace({"n": 99}), 0.2)
        guard.release()

    asyncio.run(main())
    # Every worker thread of statesafe.aio has finished: whatever it was going to do
    # after the lock came free is done.
    for t in threading.enumerate():
        if t.name == "statesafe-aio":
            t.join(30)
    assert holder.get() == {"n": 0}
    assert holder.generation == 1


def test_an_error_of_a_postgres_state_names_its_url() -> None:
    url = "postgres://nobody@127.0.0.1:1/db?state=red12&connect_timeout=2"
    with pytest.raises(statesafe.Error) as e:
        statesafe.open(url).get()
    assert e.value.path == url
    assert type(e.value) is not statesafe.Error, "no class of its own"


# Once a red12 bug (fixed in session 12).
def test_the_refusal_of_a_planted_symlink_names_its_path(state_dir: pathlib.Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user through setpriv: NOT TESTED here")
    state_dir.chmod(0o755)
    shared = state_dir / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    victim = state_dir / "victim.json"
    victim.write_text('{"secret": 1}\n')
    link = shared / "state.json"
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "ln", "-s", str(victim), str(link)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"setpriv failed ({r.stderr.strip()}): NOT TESTED here")
    with pytest.raises(statesafe.Error) as e:
        statesafe.open(link, default={"n": 0}).get()
    assert "symbolic link owned by uid 65534" in str(e.value)
    assert victim.read_text() == '{"secret": 1}\n'
    assert e.value.path == str(link)
    assert type(e.value) is not statesafe.Error, "no class of its own"


def test_a_password_in_a_url_is_hidden_in_the_error_of_a_failed_open() -> None:
    """Attack (holds): the library's own error for a URL it cannot reach shows `***`."""
    url = "postgres://bot:hunter2-red12@127.0.0.1:1/db?state=a&connect_timeout=2"
    with pytest.raises(statesafe.Error) as e:
        statesafe.open(url)
    assert "hunter2-red12" not in str(e.value)
    assert "bot:***@127.0.0.1:1" in str(e.value)


# Once a red12 bug (fixed in session 12).
def test_a_password_in_a_url_is_never_shown_by_repr_path_or_closed(pg_server: str) -> None:
    user_at = pg_server.removeprefix("postgres://")
    url = f"postgres://{user_at.replace('@', ':hunter2-red12@', 1)}?state=red12-repr"
    store = statesafe.open(url)
    shown = [repr(store), str(store.path)]
    store.close()
    with pytest.raises(statesafe.Error) as e:
        store.get()
    shown.append(str(e.value))
    for text in shown:
        assert "hunter2-red12" not in text, text
