"""Accuracy against budget for an attack: is its default budget converged?

``python -m kdbench.tools.budget_table deepinversion`` runs the attack from the normal teacher at its
default budget and at that budget with each knob doubled (one at a time, then all together), for
every student and seed, next to KD from the same teacher, and prints one Markdown row per budget:
each student's mean ± std over the seeds, its change from the default, and the cells' summed time.
A default is converged when no doubling moves a student's mean by 2 points or more.

Each budget is one ``bench run all`` in a fresh results folder; the teachers and baselines come
from one cache folder shared by the budgets, so they train once. Extra arguments are passed to every
run (``seeds=5``, ``dataset=...``, a preset), except the attack's own options (a candidate default,
``attack.dafl.batch_size=128``), which go to its runs and not to KD's. The knobs of each data-free
attack are in :data:`KNOBS`; ``--knobs a,b`` picks others, ``--scale 0.5`` halves instead of doubling,
and ``--scale 0.125,0.25,0.5,2`` gives a row per factor (DFME's stealing curve).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kdbench.store.records import STATUS_OK, RecordStore

KNOBS: dict[str, tuple[str, ...]] = {
    "dafl": ("epochs", "iters_per_epoch", "batch_size"),
    "deepinversion": ("pool_size", "steps", "kd_epochs"),
    "fast_dfkd": ("epochs", "kd_steps", "g_steps"),
    "dfme": ("budget",),  # its stealing curve: `dfme --scale 0.125,0.25,0.5,2`
}


@dataclass
class Row:
    label: str
    accuracy: dict[str, list[float]]  # student → accuracy per seed (a failed cell: missing)
    cell_s: float  # summed wall time of the run's cells
    failed: int


def measured(folder: Path, dataset: str, label: str) -> Row:
    records = RecordStore(folder / dataset).all()
    accuracy: dict[str, list[float]] = {}
    for record in sorted(records, key=lambda r: (r.student, r.seed)):
        if record.status == STATUS_OK and record.student_acc is not None:
            accuracy.setdefault(record.student, []).append(record.student_acc)
    failed = sum(r.status != STATUS_OK for r in records)
    return Row(label, accuracy, sum(r.wall_s for r in records), failed)


def run(attack: str, overrides: list[str], results: Path, cache: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "kdbench.cli",
        "run",
        "all",
        "defense=normal",
        f"attack={attack}",
        "attack_variants=null",
        "seeds=3",
        f"results_dir={results}",
        f"cache_dir={cache}",
        "reference_dir=null",
        "quiet=true",
        *overrides,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def default_budget(attack: str, overrides: list[str], knobs: tuple[str, ...]) -> dict[str, int]:
    """The knobs' values in the configuration ``overrides`` compose to."""
    from kdbench.config.compose import compose_config
    from kdbench.config.plan import plan_from_config

    plan = plan_from_config(compose_config(["defense=normal", f"attack={attack}", "attack_variants=null", *overrides]))
    options = plan.attacks[attack]
    return {knob: getattr(options, knob) for knob in knobs}


def shared_overrides(attack: str, overrides: list[str]) -> list[str]:
    """The overrides that also apply to the KD reference run: all but the attack's own options
    (``attack.dafl.batch_size=128``, a candidate default), which a run without that attack refuses."""
    own = f"attack.{attack}."
    return [o for o in overrides if not o.lstrip("+~").startswith(own)]


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:  # one seed has no spread to show, not a spread of 0
        return f"{values[0]:.1f} (1 seed)"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def table(rows: list[Row], students: list[str]) -> str:
    base = rows[1]  # rows[0] is KD, rows[1] the attack's default budget
    head = ["budget", *(f"{s} (mean ± std)" for s in students), *(f"Δ{s}" for s in students), "cells (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        deltas = []
        for student in students:
            here, there = row.accuracy.get(student, []), base.accuracy.get(student, [])
            if row is rows[0] or not here or not there:
                deltas.append("")
            else:
                deltas.append(f"{statistics.mean(here) - statistics.mean(there):+.1f}")
        cells = [row.label, *(mean_std(row.accuracy.get(s, [])) for s in students), *deltas, f"{row.cell_s:.1f}"]
        if row.failed:
            cells[0] += f" ({row.failed} cell(s) not ok)"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("attack", help=f"the attack whose budget to check (knobs known for {', '.join(KNOBS)})")
    parser.add_argument("--knobs", help="comma-separated options to scale (default: the attack's own)")
    parser.add_argument(
        "--scale", default="2", help="the factor each knob is multiplied by; several, comma-separated: a row each"
    )
    parser.add_argument("overrides", nargs="*", help="config overrides for every run (seeds=5, dataset=...)")
    args = parser.parse_intermixed_args(argv)  # options may follow the attack: `dafl --knobs epochs seeds=5`
    knobs = tuple(args.knobs.split(",")) if args.knobs else KNOBS.get(args.attack, ())
    if not knobs:
        parser.error(f"attack {args.attack!r} has no known budget knobs: name them with --knobs a,b")
    budget = default_budget(args.attack, args.overrides, knobs)
    dataset = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("dataset=")), "digits")
    prefix = f"attack.{args.attack}"
    budgets = [("default " + ", ".join(f"{k}={v}" for k, v in budget.items()), [])]
    for scale in (float(s) for s in args.scale.split(",")):
        scaled = {k: max(1, round(v * scale)) for k, v in budget.items()}
        budgets += [(f"{knob}={scaled[knob]}", [f"{prefix}.{knob}={scaled[knob]}"]) for knob in knobs]
        if len(knobs) > 1:
            budgets.append((f"all ×{scale:g}", [f"{prefix}.{k}={v}" for k, v in scaled.items()]))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="kdbench-budget-") as tmp:
        cache = Path(tmp) / "cache"
        for i, (label, extra) in enumerate([("kd (reference point)", None), *budgets]):
            folder = Path(tmp) / f"run{i}"
            if extra is None:
                run("kd", shared_overrides(args.attack, args.overrides), folder, cache)
            else:
                run(args.attack, [*args.overrides, *extra], folder, cache)
            row = measured(folder, dataset, label)
            rows.append(row)
            print(f"{label}: {', '.join(f'{s} {mean_std(v)}' for s, v in sorted(row.accuracy.items()))}", flush=True)
    students = sorted({s for row in rows for s in row.accuracy})
    print()
    print(f"{args.attack} from the normal teacher, {dataset}; overrides: {' '.join(args.overrides) or 'none'}")
    print(table(rows, students))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
