"""A run compared with the committed reference run of its dataset, RobustBench-style.

The reference (``<reference_dir>/<dataset>/records``, committed, never written by a run) was made
with several seeds. A fresh run is compared cell by cell on the student's test accuracy: the
same seed on the same machine with the same thread counts reproduces it bit for bit; on another
machine floating-point summation order differs, and the data-free attacks amplify that. So a
difference counts as *within the reference's spread* when it is at most
:data:`SPREAD_FACTOR` × the reference's standard deviation over seeds of that cell (defense ×
attack × student), and at least :data:`MIN_TOLERANCE` points (the cross-machine difference of
vanilla KD with one seed, 0.3 points measured, rounded up).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from kdbench.store.records import STATUS_OK, Record, RecordStore

SPREAD_FACTOR = 2.0
MIN_TOLERANCE = 0.5  # points


@dataclass
class CellDifference:
    cell: str
    attack: str
    measured: float
    reference: float
    tolerance: float | None  # None: the reference has one seed of this cell, no spread to judge by

    @property
    def delta(self) -> float:
        return self.measured - self.reference

    @property
    def within(self) -> bool | None:
        return None if self.tolerance is None else abs(self.delta) <= self.tolerance


@dataclass
class Comparison:
    reference: Path
    differences: list[CellDifference] = field(default_factory=list)
    same_configuration: int = 0  # cells whose configuration key (code included) equals the reference's

    @property
    def outside(self) -> list[CellDifference]:
        return [d for d in self.differences if d.within is False]

    def summary(self) -> str:
        """The verdict in a sentence: whether the run matches the reference within its seed spread,
        and where it does not, which attacks' cells differ and by how much at most."""
        where = f"the reference {self.reference}"
        if not self.differences:
            return f"Reference: no cell of this run is in {where}; nothing compared."
        n = len(self.differences)
        identical = sum(abs(d.delta) < 1e-9 for d in self.differences)
        same = f"{identical} identical, {self.same_configuration} of the same configuration and code"
        judged = [d for d in self.differences if d.within is not None]
        largest = max(self.differences, key=lambda d: abs(d.delta))
        if not judged:
            return (
                f"Reference: {n} cell(s) compared with {where} ({same}); largest difference "
                f"{largest.delta:+.2f} points ({largest.cell}); the reference has one seed per cell, so no "
                "spread to judge that by."
            )
        if identical == n:  # stronger than "within its seed spread"
            code = "" if self.same_configuration == n else f"{self.same_configuration} "
            return (
                f"Reference: all {n} cell(s) identical to {self.reference}, {code}of the same configuration and code."
            )
        if not self.outside:
            return (
                f"Reference: matches {self.reference} within its seed spread ({n} cell(s), {same}; largest "
                f"difference {largest.delta:+.2f} points)."
            )
        first = max(self.outside, key=lambda d: abs(d.delta))
        attacks = sorted({d.attack for d in self.outside})
        return (
            f"Reference: {len(self.outside)} of {len(judged)} cell(s) differ from {where} by more than "
            f"{SPREAD_FACTOR:g}× its seed std, all of attack{'s' if len(attacks) > 1 else ''} {', '.join(attacks)} "
            f"(largest {first.cell}: {first.delta:+.2f} points, tolerance {first.tolerance:.2f}); the other "
            f"{n - len(self.outside)} match within it ({same})."
        )


def _group(record: Record) -> tuple[str, str, str, str]:
    return record.teacher, record.defense, record.attack, record.student


def compare(records: list[Record], reference: list[Record], where: Path) -> Comparison:
    """``records`` (a run) against ``reference`` (the committed run), cell by cell where both are ok."""
    ok = [r for r in reference if r.status == STATUS_OK and r.student_acc is not None]
    by_cell = {r.cell: r for r in ok}
    spread: dict[tuple[str, str, str, str], list[float]] = {}
    for r in ok:
        spread.setdefault(_group(r), []).append(float(r.student_acc))
    comparison = Comparison(where)
    for record in records:
        ref = by_cell.get(record.cell)
        if ref is None or record.status != STATUS_OK or record.student_acc is None:
            continue
        accs = spread[_group(ref)]
        tolerance = max(SPREAD_FACTOR * statistics.stdev(accs), MIN_TOLERANCE) if len(accs) > 1 else None
        comparison.differences.append(
            CellDifference(record.cell, record.attack, record.student_acc, ref.student_acc, tolerance)
        )
        comparison.same_configuration += record.key == ref.key
    return comparison


def compare_with_reference(run_folder: Path, reference_folder: Path) -> Comparison | None:
    """The run in ``run_folder`` against the reference in ``reference_folder`` (None: no reference)."""
    reference = RecordStore(reference_folder).all()
    if not reference:
        return None
    return compare(RecordStore(run_folder).all(), reference, reference_folder)
