"""What both executors (in-process :func:`kdbench.matrix.run.run_matrix`, multi-process
:mod:`kdbench.matrix.workers`) share about cells: which still need computing, which distinct
computations they are, how a cell is titled in logs, and how a cell that is the same computation as
one measured already takes over its record."""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from kdbench.config.plan import Cell, RunPlan
from kdbench.store.cache import file_digest
from kdbench.store.keys import CellKey, cell_key
from kdbench.store.records import STATUS_DIVERGED, STATUS_OK, Record, RecordStore

# Records with these statuses are final for their configuration: rerunning would repeat them.
FINAL_STATUSES = (STATUS_OK, STATUS_DIVERGED)


class PendingCell(NamedTuple):
    cell: Cell
    key: CellKey


def pending_cells(plan: RunPlan, store: RecordStore) -> list[PendingCell]:
    """The plan's cells without a current final record, with their keys (with ``rerun``: all).

    A record is current when its configuration key (which covers the plugins' code) is the cell's
    and every checkpoint it was computed from is still the same file, or gone: a checkpoint
    replaced by another file recomputes the cells that used it.
    """
    todo = []
    for cell in plan.cells:
        key = cell_key(plan, cell)
        record = None if plan.rerun else store.get(cell.name)
        if not is_current(plan, record, key.digest):
            todo.append(PendingCell(cell, key))
    return todo


def is_current(plan: RunPlan, record: Record | None, digest: str) -> bool:
    """Whether ``record`` is a final result of the computation ``digest`` from unchanged checkpoints."""
    return (
        record is not None
        and record.key == digest
        and record.status in FINAL_STATUSES
        and not weights_changed(plan, record)
    )


def weights_changed(plan: RunPlan, record: Record) -> bool:
    """Whether a checkpoint ``record`` was computed from now holds other bytes."""
    for name, digest in record.details.weights.items():
        now = file_digest(plan.cache_dir / name)
        if now is not None and now != digest:
            return True
    return False


def measured_records(plan: RunPlan, store: RecordStore) -> dict[str, Record]:
    """The final records a twin cell may take over, by configuration key (with ``rerun``: none, so
    every computation of this run is made anew)."""
    if plan.rerun:
        return {}
    return {r.key: r for r in store.all() if r.status in FINAL_STATUSES and not weights_changed(plan, r)}


def computations(
    todo: list[PendingCell], measured: dict[str, Record]
) -> tuple[list[tuple[Cell, Record]], dict[str, list[PendingCell]]]:
    """``todo`` split into the cells that take over a record measured already (each with it), and the
    distinct computations left (key → the cells that are that one computation, the first computed)."""
    taken: list[tuple[Cell, Record]] = []
    groups: dict[str, list[PendingCell]] = {}
    for pending in todo:
        twin = measured.get(pending.key.digest)
        if twin is not None:
            taken.append((pending.cell, twin))
        else:
            groups.setdefault(pending.key.digest, []).append(pending)
    return taken, groups


def take_over(store: RecordStore, cell: Cell, twin: Record) -> Record:
    """``cell``'s record taken over from ``twin``, the same computation under another name, written."""
    record = replace(twin, student=cell.student, student_arch=cell.student_arch, wall_s=0.0)
    store.put(record)
    return record


def cell_title(cell: Cell, i: int, n: int) -> str:
    return f"[{i}/{n}] {cell.teacher}/{cell.defense} × {cell.attack} → {cell.student} (seed {cell.seed})"


def outcome(record: Record) -> str:
    """What a log line says of a finished cell: status, accuracy and drop (or why not), seconds."""
    if record.status == STATUS_OK and record.student_acc is not None and record.drop is not None:
        result = f"ok, student acc {record.student_acc:.2f} (drop {record.drop:+.2f})"
    else:
        result = f"{record.status}: {record.reason}" if record.reason else record.status
    return f"{result}, {record.wall_s:.1f} s"
