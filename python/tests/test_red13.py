"""Red team, session 13: journal mode (issue 16) seen from Python. Python cannot put a
file into journal mode (a store option never chooses it): the CLI does, and Python
stores opened on the file then commit by appending to its journal. The CLI binary is
the workspace's (`$CARGO_TARGET_DIR/debug/statesafe`, else `target/debug/statesafe`);
without it the test is skipped, with the reason recorded."""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import subprocess

import pytest

import statesafe

import _workers

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _cli() -> pathlib.Path:
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "statesafe"


def _cli_increments(cli: pathlib.Path, path: pathlib.Path, times: int) -> None:
    for _ in range(times):
        subprocess.run(
            [str(cli), "update", str(path), ".n += 1 | .by.cli += 1",
             "--lock-timeout", "120s"],
            check=True, capture_output=True,
        )


def test_python_processes_and_the_cli_lose_no_update_on_a_journal_mode_file(
    path: pathlib.Path,
) -> None:
    """Attack (held): Python processes (each with a long-lived store: from its second
    read on it keeps the replayed document and appends records) and CLI processes (a
    full read and one append each) increment one journal-mode counter at once; with a
    tiny compaction threshold, compactions (a new snapshot and a new journal renamed
    in) interleave with the appends. No update is lost, and the file is still in
    journal mode."""
    cli = _cli()
    if not cli.exists():
        pytest.skip(f"red13: the CLI binary {cli} is not built (cargo build -p statesafe-cli)")
    subprocess.run([str(cli), "init", str(path), "--format", "journal",
                    '{"n": 0, "by": {"cli": 0}}'], check=True)
    subprocess.run([str(cli), "settings", str(path), "--journal-max-bytes", "4096"],
                   check=True, capture_output=True)
    procs, times, cli_procs, cli_times = 4, 150, 2, 60
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_workers.spawned_worker,
                           args=(str(path), times, {"lock_timeout": 120}))
               for _ in range(procs)]
    clis = [ctx.Process(target=_cli_increments, args=(cli, path, cli_times))
            for _ in range(cli_procs)]
    for p in workers + clis:
        p.start()
    for p in workers + clis:
        p.join(timeout=600)
    assert [p.exitcode for p in workers + clis] == [0] * (procs + cli_procs)
    final = statesafe.open(path).get()
    assert final["n"] == procs * times + cli_procs * cli_times, "lost updates"
    assert final["by"]["cli"] == cli_procs * cli_times
    assert sorted(v for k, v in final["by"].items() if k != "cli") == [times] * procs
    info = subprocess.run([str(cli), "info", str(path)], check=True,
                          capture_output=True, text=True).stdout
    assert "format:      journal" in info
