"""What both executors (in-process :mod:`kdbench.runner`, multi-process :mod:`kdbench.workers`)
share about cells: which still need computing, how a cell is titled in logs, and how a cell that is
the same computation as one measured already takes over its record."""

from __future__ import annotations

from dataclasses import replace

from kdbench.cache import config_hash
from kdbench.config import Cell, RunPlan
from kdbench.records import STATUS_DIVERGED, STATUS_OK, Record, RecordStore

# Records with these statuses are final for their configuration: rerunning would repeat them.
FINAL_STATUSES = (STATUS_OK, STATUS_DIVERGED)


def pending_cells(plan: RunPlan, store: RecordStore) -> list[tuple[Cell, str]]:
    """The plan's cells without a final record for their current configuration, with their keys."""
    todo = []
    for cell in plan.cells:
        key = config_hash(plan.cell_key(cell))
        record = store.get(cell.name)
        if record is None or record.key != key or record.status not in FINAL_STATUSES:
            todo.append((cell, key))
    return todo


def measured_records(store: RecordStore) -> dict[str, Record]:
    """Every final record in ``store`` by its configuration key (a twin cell takes one over)."""
    return {r.key: r for r in store.all() if r.status in FINAL_STATUSES}


def cell_title(cell: Cell, i: int, n: int) -> str:
    return f"[{i}/{n}] {cell.teacher}/{cell.defense} × {cell.attack} → {cell.student} (seed {cell.seed})"


def outcome(record: Record) -> str:
    """What a log line says of a finished cell: status, accuracy and drop (or why not), seconds."""
    if record.status == STATUS_OK and record.student_acc is not None and record.drop is not None:
        result = f"ok, student acc {record.student_acc:.2f} (drop {record.drop:+.2f})"
    else:
        result = f"{record.status}: {record.reason}" if record.reason else record.status
    return f"{result}, {record.wall_s:.1f} s"


def twin_record(cell: Cell, twin: Record) -> Record:
    """``cell``'s record taken over from ``twin``, the same computation under another name."""
    return replace(twin, student=cell.student, student_arch=cell.student_arch, wall_s=0.0)
