"""Seed 000, the grades notifier's ``StateTracker``, on statesafe.

The original truncated ``state.json`` with ``open(..., "w")`` and wrote into it: a crash
mid-write left half a document, the next run's ``JSONDecodeError`` handler returned an
empty state, and every grade was notified again. Here each check is one transaction:
after a crash the file holds the old or the new state, a damaged file is restored from
a backup (never replaced by an empty state), and a cron run and a manual run never
lose each other's updates.
"""

from __future__ import annotations

import datetime
from typing import Any

import statesafe

Item = dict[str, Any]
EMPTY: dict[str, Any] = {"grades": {}, "schedule": {}, "homework": {}, "last_check": None}


class StateTracker:
    """Remembers which grades, schedule changes and homework were already notified."""

    def __init__(self, state_file: str) -> None:
        self.store = statesafe.open(state_file, default=EMPTY, backups=5)

    def _record(self, section: str, items: dict[str, Item]) -> list[Item]:
        """Records `items` (by id) in `section`; returns the ones not seen before."""
        with self.store.transaction() as state:
            seen: dict[str, Item] = state[section]
            new = [item for key, item in items.items() if seen.get(key) != item]
            seen.update(items)
            state["last_check"] = datetime.datetime.now().isoformat()
        return new

    def new_grades(self, grades: dict[str, Item]) -> list[Item]:
        return self._record("grades", grades)

    def schedule_changes(self, lessons: dict[str, Item]) -> list[Item]:
        return self._record("schedule", lessons)

    def new_homework(self, homework: dict[str, Item]) -> list[Item]:
        return self._record("homework", homework)


if __name__ == "__main__":
    import sys

    tracker = StateTracker(sys.argv[1] if len(sys.argv) > 1 else "state.json")
    for grade in tracker.new_grades({"g101": {"vak": "Mat", "cijfer": "8.5"}}):
        print(f"new grade: {grade['vak']} {grade['cijfer']}")
