"""Seed 002, ``magister notify check`` run by cron and by hand at the same time.

Both processes read the state, found their new grades and wrote the state back: the
second write dropped the first one's grades. With statesafe each run's
read-modify-write is one locked transaction (a kernel lock on a sidecar file, freed
if the process dies), so concurrent runs are serialized and no update is lost. A run
that cannot get the lock within ``--wait`` seconds says who holds it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import statesafe

from state_tracker import StateTracker


def check(state_file: str, fetched: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Notifies (prints) the grades in `fetched` that were not notified before."""
    new = StateTracker(state_file).new_grades(fetched)
    for grade in new:
        print(f"notify: new grade {grade['vak']}: {grade['cijfer']}", flush=True)
    return new


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="notify")
    parser.add_argument("command", choices=["check"])
    parser.add_argument("--state", default="state.json")
    parser.add_argument("--grades", default="{}", help="the grades fetched, as JSON")
    args = parser.parse_args(argv)
    try:
        check(args.state, json.loads(args.grades))
    except statesafe.LockTimeout as e:
        print(f"error: {e}", file=sys.stderr)
        return 75  # EX_TEMPFAIL: cron tries again next time
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
