"""Red team, session 12: attacks on the Python package. A skipped test is a bug it found
(the reason says how it happens; STATESAFE_RED12_RUN=1 runs it, to watch it fail); the
others are attacks the package withstands that no other test makes."""

from __future__ import annotations

import decimal
import json
import os
import pathlib
import subprocess
import sys
from typing import Iterator

import pytest

import statesafe


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
    except statesafe.Error as e:
        assert str(path) in str(e) and "/a" in str(e)
    else:
        assert got["a"] != float("inf"), "1e400 was served as inf"
    try:
        with store.transaction() as state:
            state["n"] = 1
    except (statesafe.Error, TypeError) as e:
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


@bug("red12: Store::verify_bytes takes any document whose text starts `{\"statesafe\"` for "
     "a sealed envelope (format::looks_sealed), even in a plain file: replace({'statesafe': "
     "{'v': 2}, 'x': 1}) is acknowledged (generation 1 on disk, checksum recorded), then "
     "every get() and transaction fails with Error 'this reader's type refuses it: unknown "
     "field `v`, expected one of `format`, `generation`…' and the hint 'read it with the "
     "type it was written with': an acknowledged write that can never be read again")
def test_a_document_whose_first_key_is_statesafe_reads_back(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={})
    store.replace({"statesafe": {"v": 2}, "x": 1})
    assert store.get() == {"statesafe": {"v": 2}, "x": 1}
    with store.transaction() as state:
        state["x"] = 2
    assert statesafe.open(path).get() == {"statesafe": {"v": 2}, "x": 2}


@pytest.fixture(scope="module")
def pg_server() -> Iterator[str]:
    """A throwaway PostgreSQL server (scripts/pg-test-server), as test_postgres.py's."""
    script = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "pg-test-server"
    proc = subprocess.Popen([str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("url "):
        proc.wait(timeout=60)
        why = line.removeprefix("unavailable ") or "scripts/pg-test-server printed nothing"
        if os.environ.get("CI") == "true":
            pytest.fail(f"postgres: {why} (CI=true: these tests must run)")
        pytest.skip(f"postgres: {why}")
    try:
        yield line.removeprefix("url ")
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


@bug("red12: the writer recorded with every remote commit (the row's `writer` column, "
     "every history entry's writer, Store.info()['last_writer'], and application_name "
     "in pg_stat_activity, which every role of the server may read) is the process's "
     "whole command line (lock::identity), never redacted: a program given its URL on "
     "the command line (`python app.py postgres://bot:PASSWORD@db/ops?state=x`, which "
     "the library accepts; only the CLI refuses it) stores its password in the database "
     "for every reader of the tables, while the store's own path shows `***`")
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
