"""Child-process bodies for the multi-process tests (importable by `spawn` children)."""

from __future__ import annotations

import os
from typing import Any, Optional

import statesafe

# Set in the parent before forking: the `fork` children use the parent's store object,
# as a gunicorn or celery prefork worker would.
INHERITED: Optional[statesafe.Store] = None


def increment(store: statesafe.Store, times: int) -> None:
    for _ in range(times):
        with store.transaction() as state:
            state["n"] += 1
            state["by"][str(os.getpid())] = state["by"].get(str(os.getpid()), 0) + 1


def inherited_worker(times: int) -> None:
    assert INHERITED is not None
    increment(INHERITED, times)


def spawned_worker(path: str, times: int, options: dict[str, Any]) -> None:
    increment(statesafe.open(path, **options), times)
