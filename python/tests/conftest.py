"""Shared fixtures. Every test directory comes from `state_dir`, so a run can be pointed
at tmpfs, a loop mount or a FUSE mount with STATESAFE_TEST_DIR."""

from __future__ import annotations

import os
import pathlib
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


def temp_files(directory: pathlib.Path) -> list[str]:
    """Leftover temporary files of statesafe writes in `directory`."""
    return sorted(n for n in os.listdir(directory) if ".statesafe-tmp-" in n)
