"""How true the time-left estimate is: ``python -m kdbench.tools.time_left_check [OVERRIDES]``.

Runs the matrix that ``bench run all OVERRIDES`` would run, into a new temporary results folder
(so every network and cell is computed), records the estimate each time a network or cell
finishes, and prints it beside the truth (the time the run actually took from then on) at 25, 50
and 75 % of the networks and cells, and of the wall time. The Markdown table it prints is the one
quoted in the issue notes; the estimate is meant to stay within ±35 % of the truth from the 25 %
mark on the default matrix.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass

from rich.console import Console

from kdbench.config.compose import compose_config
from kdbench.config.plan import plan_from_config
from kdbench.matrix.run import check_runnable, run_matrix
from kdbench.progress import Progress, duration

MARKS = (0.25, 0.5, 0.75)


@dataclass
class Sample:
    at: float  # seconds since the matrix started
    done: int
    total: int
    estimate: float | None  # seconds left, as the progress line says it
    per_unit: float  # what the mean wall time per unit so far would say (the estimate before kinds)


class RecordingProgress(Progress):
    """A silent progress that keeps its time-left estimate after every finished network or cell."""

    def __init__(self) -> None:
        super().__init__(Console(stderr=True), quiet=True)
        self.samples: list[Sample] = []
        self.started = time.perf_counter()

    def unit_done(self, kind: str, seconds: float | None = None) -> None:
        super().unit_done(kind, seconds)
        elapsed = time.perf_counter() - (self._matrix_start or self.started)
        per_unit = elapsed / self.units_done * (self.units_total - self.units_done)
        self.samples.append(
            Sample(time.perf_counter() - self.started, self.units_done, self.units_total, self.time_left(), per_unit)
        )


def report(samples: list[Sample], total_s: float) -> list[str]:
    """The Markdown table: at each mark (of units done, then of wall time), the estimate, the
    truth and the error; then the largest error from the first 25 % mark on."""
    lines = [
        "| mark | at | networks and cells done | estimated left | true left | error | mean per unit would say |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(name: str, sample: Sample) -> str:
        truth = total_s - sample.at
        if sample.estimate is None:
            progress = f"{duration(sample.at)} | {sample.done}/{sample.total}"
            return f"| {name} | {progress} | estimating | {duration(truth)} | – | – |"
        error = (sample.estimate - truth) / truth * 100 if truth > 0 else float("nan")
        before = (sample.per_unit - truth) / truth * 100 if truth > 0 else float("nan")
        return (
            f"| {name} | {duration(sample.at)} | {sample.done}/{sample.total} | {duration(sample.estimate)} | "
            f"{duration(truth)} | {error:+.0f} % | {duration(sample.per_unit)} ({before:+.0f} %) |"
        )

    for mark in MARKS:
        first = next((s for s in samples if s.done >= mark * s.total), None)
        if first is not None:
            lines.append(row(f"{mark:.0%} of units", first))
    for mark in MARKS:
        first = next((s for s in samples if s.at >= mark * total_s), None)
        if first is not None:
            lines.append(row(f"{mark:.0%} of time", first))
    # from the first 25 % mark to the last tenth of the run (where a second off is a large fraction)
    judged = [
        (s.estimate - (total_s - s.at)) / (total_s - s.at) * 100
        for s in samples
        if s.estimate is not None
        and total_s - s.at >= 0.1 * total_s
        and (s.done >= 0.25 * s.total or s.at >= 0.25 * total_s)
    ]
    lines.append("")
    if judged:
        worst = max(judged, key=abs)
        lines.append(
            f"Largest error from the first 25 % mark to the last tenth of the run: {worst:+.0f} % over "
            f"{len(judged)} estimates; the run took {duration(total_s)} ({total_s:.1f} s)."
        )
    lines.append(
        "Every estimate (s into the run: estimated/true s left): "
        + ", ".join(
            f"{s.at:.0f}: {'–' if s.estimate is None else f'{s.estimate:.0f}'}/{total_s - s.at:.0f}" for s in samples
        )
    )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kdbench.tools.time_left_check", description=__doc__)
    parser.add_argument("overrides", nargs="*", help="bench run overrides (results_dir is a new temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kdbench-time-left-") as results:
        plan = plan_from_config(compose_config([*args.overrides, f"results_dir={results}"]))
        data = check_runnable(plan)
        progress = RecordingProgress()
        progress.started = time.perf_counter()
        run_matrix(plan, progress, data)
        total_s = time.perf_counter() - progress.started
    print("\n".join(report(progress.samples, total_s)))


if __name__ == "__main__":
    main()
