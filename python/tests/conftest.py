"""Shared fixtures. Every test directory comes from `state_dir`, so a run can be pointed
at tmpfs, a loop mount or a FUSE mount with STATESAFE_TEST_DIR.

Every skipped test is also recorded as a `SKIPPED what: why` line in the file named by
$STATESAFE_SUMMARY, when set (scripts/test prints those lines at the end), so that a
test that could not run here is never mistaken for one that passed."""

from __future__ import annotations

import os
import pathlib
import subprocess
import tempfile
from typing import Iterator

import pytest


@pytest.fixture
def state_dir() -> Iterator[pathlib.Path]:
    base = os.environ.get("STATESAFE_TEST_DIR")
    with tempfile.TemporaryDirectory(prefix="statesafe-py-", dir=base) as d:
        yield pathlib.Path(d)


@pytest.fixture
def path(state_dir: pathlib.Path) -> pathlib.Path:
    return state_dir / "state.json"


@pytest.fixture(scope="module")
def pg_server() -> Iterator[str]:
    """The URL of a throwaway PostgreSQL server (scripts/pg-test-server), one for each
    test module that asks: skipped loudly when none can be started, a failure under
    CI=true (CI installs it)."""
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
        proc.stdin.close()  # the script stops the server and removes its directory
        proc.wait(timeout=60)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    summary = os.environ.get("STATESAFE_SUMMARY")
    if not summary or not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    # A skip's report is (file, line, "Skipped: why").
    why = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    why = " ".join(why.removeprefix("Skipped: ").split())
    with open(summary, "a", encoding="utf-8") as f:
        f.write(f"SKIPPED 70-python {report.nodeid}: {why}\n")


def temp_files(directory: pathlib.Path) -> list[str]:
    """Leftover temporary files of statesafe writes in `directory`."""
    return sorted(n for n in os.listdir(directory) if ".statesafe-tmp-" in n)
