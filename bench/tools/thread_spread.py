"""Is a data-free cell a property of the method or of the machine? Thread spread against seed spread.

``python -m kdbench.tools.thread_spread dafl deepinversion fast_dfkd dfme`` attacks the normal
teacher of every seed (0..2) with each attack on one thread and again on two threads: the same
teacher, baselines and options, only another floating-point summation order (what another CPU of the
suite's kind does to the same run). Each attack and student gets a Markdown row: the seeds' mean ±
std on one thread and on two, each seed's difference between the two, and their mean. Where that
mean exceeds the seeds' standard deviation, the column reports the machine more than the method.
A column with several ``restarts`` (digits: dafl 4) is measured as its cells report it: the mean of
its restarts, at each seed and thread count (``restarts.dafl=1`` measures single runs).
Extra arguments go to the plan (``dataset=...``, ``attack.dfme.budget=...``). Run it alone: two
threads need both cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile

import torch

from kdbench.config.compose import compose_config
from kdbench.config.plan import RunPlan, plan_from_config
from kdbench.data.catalogue import load_dataset
from kdbench.matrix.runner import Runner
from kdbench.progress import Progress

SEEDS = (0, 1, 2)


def forget_shared_syntheses() -> None:
    """Drop the pools and generated sequences shared between the students of a teacher, so that a
    run on other threads synthesises its own."""
    from kdbench.attacks import dafl, deepinversion

    dafl._SEQUENCES.clear()
    deepinversion._POOLS.clear()


def accuracies(runner: Runner, plan: RunPlan, attack: str, seed: int, threads: int) -> dict[str, float]:
    """Each student's accuracy after ``attack`` on the normal teacher of ``seed``, on ``threads``."""
    forget_shared_syntheses()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = {}
        for cell in plan.cells:
            if cell.attack == attack and cell.seed == seed:
                built = runner.teacher(cell.teacher, cell.defense, seed)
                out[cell.student] = runner.attack(cell, built).accuracy  # what the cell reports (restarts' mean)
        return out
    finally:
        torch.set_num_threads(previous)


def spread_row(attack: str, student: str, one: list[float], two: list[float]) -> str:
    """A table row from each seed's accuracy on one thread and on two (the same seeds, in order)."""
    spread = statistics.stdev(one)
    deltas = [abs(b - a) for a, b in zip(one, two, strict=True)]
    mean_delta = statistics.mean(deltas)
    return (
        f"| {attack} | {student} | {statistics.mean(one):.1f} ± {spread:.1f} | {statistics.mean(two):.1f} ± "
        f"{statistics.stdev(two):.1f} | {' / '.join(f'{d:.1f}' for d in deltas)} | {mean_delta:.1f} | "
        f"{'yes' if mean_delta > spread else 'no'} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("attacks", nargs="+", help="attacks to measure, then config overrides (key=value)")
    args = parser.parse_args(argv)
    attacks = [a for a in args.attacks if "=" not in a]
    overrides = [a for a in args.attacks if "=" in a]
    rows = [
        # the |Δ| bars escaped: a bare | would split the header into more cells than the rows have
        "| attack | student | seeds 0-2, 1 thread (mean ± std) | seeds 0-2, 2 threads | \\|Δ threads\\| per seed "
        "| mean \\|Δ threads\\| | beyond the seed std |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="kdbench-threads-") as tmp:
        plan = plan_from_config(
            compose_config(
                [
                    "defense=normal",
                    f"attack=[{','.join(attacks)}]",
                    "attack_variants=null",
                    f"seeds={len(SEEDS)}",
                    "threads=1",  # the teachers and baselines: one thread, shared by both settings
                    "workers=1",
                    f"results_dir={tmp}",
                    "reference_dir=null",
                    "quiet=true",
                    *overrides,
                ]
            )
        )
        runner = Runner(plan, Progress(quiet=True), load_dataset(plan.dataset, plan.device))
        for attack in attacks:
            one = [accuracies(runner, plan, attack, seed, 1) for seed in SEEDS]
            two = [accuracies(runner, plan, attack, seed, 2) for seed in SEEDS]
            for student in sorted(two[0]):
                rows.append(spread_row(attack, student, [a[student] for a in one], [a[student] for a in two]))
                print(rows[-1], file=sys.stderr, flush=True)
    print(f"thread spread against seed spread, normal teacher; overrides: {' '.join(overrides) or 'none'}")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
