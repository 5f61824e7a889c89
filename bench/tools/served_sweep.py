"""What does a defense's option cost its owner? The served teacher's test accuracy over its values.

``python -m kdbench.tools.served_sweep adaptive_misinformation tau 0.99 0.5 0.35 preset=cifar10_cpu
data_root=../shared/data`` builds the defense's teacher of seed 0 once per value, as a run's cell
would (its networks come from the cache, or are trained and cached there first), and prints a
Markdown row per value: the served function's accuracy on the test split and its owner cost (ECE,
and KL and total variation from the network's own softmax). Options that change only serving (AM's
τ and ν, MAD's ε, the logit perturbations' scales) cost no training after the first value. Arguments
with ``=`` go to the plan; ``cache_dir=`` points it at the networks of an earlier run. The cache key
holds ``threads``: a run of two workers trained its networks on ``threads=1``.
"""

from __future__ import annotations

import argparse
import sys
import time

from kdbench.config.compose import compose_config
from kdbench.config.plan import RunPlan, plan_from_config
from kdbench.data.catalogue import load_dataset
from kdbench.data.images import ImageData
from kdbench.errors import BenchError
from kdbench.matrix.runner import Runner
from kdbench.progress import Progress


def served_row(plan: RunPlan, defense: str, seed: int, data: ImageData) -> str:
    """The Markdown cells (accuracy, ECE, KL, TV, seconds) of ``defense``'s teacher under ``plan``."""
    start = time.perf_counter()
    runner = Runner(plan, Progress(quiet=True), data)
    built = runner.teacher(plan.teachers[0], defense, seed)  # the plan's first teacher
    cost = built.owner_cost
    return (
        f"{built.accuracy:.2f} | {cost['ece_pct']:.1f} | {cost['kl_nats']:.2f} | {cost['tv_pct']:.1f} | "
        f"{time.perf_counter() - start:.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("defense", help="a registered defense")
    parser.add_argument("option", help="one of its options, e.g. tau")
    parser.add_argument("values", nargs="+", help="the option's values, then config overrides (key=value)")
    parser.add_argument("--seed", type=int, default=0, help="the teacher's seed (default 0)")
    args = parser.parse_args(argv)
    values = [v for v in args.values if "=" not in v]
    overrides = [v for v in args.values if "=" in v]
    if not values:
        parser.error("give at least one value of the option")
    try:  # every value's plan first: a bad one is refused before anything trains
        plans = [
            plan_from_config(
                compose_config(
                    [
                        f"defense={args.defense}",
                        "reference_dir=null",
                        *overrides,
                        f"defense.{args.defense}.{args.option}={value}",
                    ]
                )
            )
            for value in values
        ]
    except BenchError as err:
        print(f"served_sweep: {err}", file=sys.stderr)
        return 2
    print(f"served teacher of {args.defense}, seed {args.seed}; overrides: {' '.join(overrides) or 'none'}")
    print(f"| {args.option} | served accuracy, % | ECE, % | KL, nats | TV, % | seconds (training included) |")
    print("|---|---|---|---|---|---|")
    data = load_dataset(plans[0].dataset, plans[0].device)
    for value, plan in zip(values, plans, strict=True):
        print(f"| {value} | {served_row(plan, args.defense, args.seed, data)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
