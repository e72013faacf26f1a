"""Benchmark: ``with store.transaction()`` against the hand-written Python atomic save.

    python python/bench.py [--dir DIR] [--quick]

Prints a Markdown report (copied into docs/python.md). Contenders alternate operation
by operation (in an order drawn afresh for each round), so that bursts of load from
other programs on a shared machine hit all of them alike; the tables give medians and
90th percentiles of the elapsed time, and the median CPU time of this process (all its
threads) per operation, which load from other programs inflates far less. ``sync()``
runs before each section.

Contenders, each doing one read-modify-write step of the same document:

- hand-written save: the document lives in memory; change it, then ``json.dump(...,
  indent=2)`` to a temporary file, ``fsync``, ``os.replace``, ``fsync`` the directory.
  What the seeds' audits recommend (plus the directory fsync), without a lock and
  without reading the file again: the floor for a durable save from Python.
- statesafe: ``with store.transaction() as state:`` change it; takes the lock, reads and
  verifies the file, converts, validates, writes, both fsyncs, keeps a backup and the
  history (the defaults).
- statesafe lean: the same with ``backups=0, history=0``.
- statesafe, two stores taking turns: two stores (as two processes would) on one
  file, each transaction by the other one than the last: the file changed since
  this store's last commit, so the transaction cache never applies and every
  transaction parses the file (the cost after another process's commit).

Conversion (Python objects to the JSON text committed, with the private copy a
transaction keeps, and that text back to Python objects) is timed on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

# `python python/bench.py` puts python/ first on sys.path, and python/statesafe is the
# source tree (no compiled module): measure the installed package instead.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import statesafe  # noqa: E402
from statesafe import _statesafe  # noqa: E402


def document(target_bytes: int) -> dict[str, Any]:
    """Many small records, as a real state file has, about `target_bytes` pretty-printed."""
    records = {}
    i = 0
    doc: dict[str, Any] = {"counter": 0, "records": records}
    while True:
        records[f"g{i:06d}"] = {"vak": "Mat", "cijfer": 7.5 + i % 3, "seen": i % 2 == 0,
                                "when": "2026-01-08T10:00:00"}
        i += 1
        step = max(1, i // 64)  # re-measure often while small, rarely when large
        if i % step == 0 and len(json.dumps(doc, indent=2)) >= target_bytes:
            return doc


def handwritten_save(path: str, state: dict[str, Any]) -> None:
    directory = os.path.dirname(path)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".hand-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def section(name: str, size: int, rounds: int, workdir: str) -> tuple[str, dict[str, float]]:
    doc = document(size)
    actual = len(json.dumps(doc, indent=2).encode())
    hand_path = os.path.join(workdir, f"hand-{size}.json")
    memory = json.loads(json.dumps(doc))
    handwritten_save(hand_path, memory)

    def hand() -> None:
        memory["counter"] += 1
        handwritten_save(hand_path, memory)

    stores = {
        "statesafe": statesafe.open(os.path.join(workdir, f"ss-{size}.json")),
        "statesafe lean": statesafe.open(os.path.join(workdir, f"lean-{size}.json"),
                                         backups=0, history=0),
    }
    for store in stores.values():
        store.create(doc)
    turns_path = os.path.join(workdir, f"turns-{size}.json")
    turns = [statesafe.open(turns_path), statesafe.open(turns_path)]
    turns[0].create(doc)
    turn = [0]

    def tx(store: statesafe.Store[Any]) -> Callable[[], None]:
        def run() -> None:
            with store.transaction() as state:
                state["counter"] += 1
        return run

    def taking_turns() -> None:
        turn[0] ^= 1
        tx(turns[turn[0]])()

    contenders: dict[str, Callable[[], None]] = {"hand-written save": hand}
    contenders.update({k: tx(v) for k, v in stores.items()})
    contenders["statesafe, two stores taking turns"] = taking_turns
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    cpu: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(max(2, rounds // 20)):  # warm-up
        for run in contenders.values():
            run()
    os.sync()
    order = list(contenders)
    for _ in range(rounds):
        random.shuffle(order)
        for k in order:
            c = time.process_time()
            t = time.perf_counter()
            contenders[k]()
            samples[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
    hits = {k: v.stats()["transaction_cache"] for k, v in stores.items()}
    turns_cache = [t.stats()["transaction_cache"] for t in turns]
    hits["statesafe, two stores taking turns"] = {
        k: turns_cache[0][k] + turns_cache[1][k] for k in ("hits", "misses")}
    for store in [*stores.values(), *turns]:
        store.close()

    # Conversion alone, in both directions, on the same document.
    to_rust, to_python = [], []
    for _ in range(max(5, rounds // 4)):
        a, b = _statesafe._convert_timings(doc)
        to_rust.append(a)
        to_python.append(b)

    floor = statistics.median(samples["hand-written save"])
    lines = [f"### {name}: {actual / 1024:.1f} KiB document, {rounds} rounds", "",
             "| contender | median | p90 | vs hand-written | CPU time (median) | CPU vs hand-written |",
             "|---|---|---|---|---|---|"]
    cpu_floor = statistics.median(cpu["hand-written save"])
    medians = {}
    for k, xs in samples.items():
        xs.sort()
        med = statistics.median(xs)
        medians[k] = med
        p90 = xs[int(len(xs) * 0.9) - 1]
        c = statistics.median(cpu[k])
        medians[f"cpu {k}"] = c
        lines.append(f"| {k} | {fmt(med)} | {fmt(p90)} | {med / floor:.2f}x | {fmt(c)} | "
                     f"{c / cpu_floor:.2f}x |")
    lines += ["", "Transaction cache (hits/misses, warm-up included): " + ", ".join(
        f"{k} {v['hits']}/{v['misses']}" for k, v in hits.items()) + ".", "",
        f"Conversion alone (median): Python objects to the committed JSON text, with "
        f"the private copy kept for the next transaction, {fmt(statistics.median(to_rust))}; "
        f"that text to Python objects (`json.loads`, what a transaction that cannot use "
        f"the cache does) {fmt(statistics.median(to_python))}.", ""]
    medians["to_rust"] = statistics.median(to_rust)
    medians["to_python"] = statistics.median(to_python)
    return "\n".join(lines), medians


def fmt(seconds: float) -> str:
    if seconds >= 0.01:
        return f"{seconds * 1e3:.1f} ms"
    if seconds >= 0.001:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="directory to measure in (default: a temporary one "
                        "under the current directory's filesystem)")
    parser.add_argument("--quick", action="store_true", help="few rounds (a smoke test)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="statesafe-pybench-", dir=args.dir or ".") as d:
        start = time.time()
        small, s = section("1 KiB", 1024, 40 if args.quick else 400, d)
        large, m = section("1 MiB", 1 << 20, 4 if args.quick else 30, d)
        elapsed = time.time() - start
    load = os.getloadavg()
    small_ratio = s["statesafe"] / s["hand-written save"]
    small_lean = s["statesafe lean"] / s["hand-written save"]
    large_ratio = m["hand-written save"] / m["statesafe"]
    large_cpu = m["cpu hand-written save"] / m["cpu statesafe"]
    print(f"Measured by `python/bench.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
          f" in {elapsed:.0f} s; Python {platform.python_version()}, statesafe "
          f"{statesafe.__version__}, {platform.system()} {platform.release()}, "
          f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"(a shared machine: ratios are more trustworthy than absolute figures).\n")
    print("| target | measured | |\n|---|---|---|")
    print(f"| 1 KiB: `with store.transaction()` at most 1.15x the hand-written save | "
          f"{small_ratio:.2f}x (lean options: {small_lean:.2f}x) | "
          f"{'met' if small_ratio <= 1.15 else '**missed**'} |")
    print(f"| 1 MiB: at least 3x faster than the hand-written save | {large_ratio:.2f}x "
          f"(CPU time: {large_cpu:.2f}x less) | "
          f"{'met' if large_ratio >= 3 else '**missed**'} |\n")
    print(small)
    print(large)
    return 0


if __name__ == "__main__":
    sys.exit(main())
