"""Where a run's time went: ``python -m kdbench.tools.time_profile <results>/<dataset> [--log run.log]``.

Sums the cells' wall time by attack from the records (each cell's own clock: its attack, its
evaluation and, for the first cell of a teacher in a worker, the wait or load of that teacher) and,
given the log of a run that printed progress lines (stdout not a terminal, ``quiet=false``), the
time each network took to train by kind: ``network teacher <arch>/<defense> (seed N): ok, acc A, T s``.
The Markdown table it prints is the profile summary quoted in the issue notes.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

from kdbench.store.records import RecordStore

NETWORK_LINE = re.compile(
    r"network (teacher \S+?/(?P<defense>\S+)|scratch (?P<student>\S+)) \(seed \d+\): .*?(?P<seconds>[\d.]+) s$"
)


def cell_seconds(dataset_dir: Path) -> dict[str, tuple[int, float]]:
    """attack → (cells, summed wall seconds)."""
    totals: dict[str, list[float]] = defaultdict(list)
    for record in RecordStore(dataset_dir).all():
        totals[record.attack].append(record.wall_s)
    return {attack: (len(times), sum(times)) for attack, times in sorted(totals.items())}


def network_seconds(log: str) -> dict[str, tuple[int, float]]:
    """``teacher <defense>`` / ``scratch <student>`` → (networks, summed training seconds)."""
    totals: dict[str, list[float]] = defaultdict(list)
    for line in log.splitlines():
        match = NETWORK_LINE.search(line.strip())
        if match:
            what = f"teacher {match['defense']}" if match["defense"] else f"scratch {match['student']}"
            totals[what].append(float(match["seconds"]))
    return {what: (len(times), sum(times)) for what, times in sorted(totals.items())}


def table(rows: dict[str, tuple[int, float]], what: str) -> list[str]:
    total = sum(seconds for _, seconds in rows.values())
    lines = [f"| {what} | count | seconds | per item | share |", "|---|---|---|---|---|"]
    for name, (count, seconds) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
        share = seconds / total if total else 0.0
        lines.append(f"| {name} | {count} | {seconds:.1f} | {seconds / max(count, 1):.2f} | {share:.0%} |")
    lines.append(f"| total | {sum(c for c, _ in rows.values())} | {total:.1f} | | |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir", type=Path, help="a run's <results_dir>/<dataset> folder")
    parser.add_argument("--log", type=Path, help="that run's output, with its progress lines")
    args = parser.parse_args(argv)
    print("\n".join(table(cell_seconds(args.dataset_dir), "cells by attack")))
    if args.log is not None:
        print()
        print("\n".join(table(network_seconds(args.log.read_text()), "networks trained")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
