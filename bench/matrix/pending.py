"""What both executors (in-process :mod:`kdbench.matrix.runner`, multi-process :mod:`kdbench.matrix.workers`)
share about cells: which still need computing, how a cell is titled in logs, and how a cell that is
the same computation as one measured already takes over its record."""

from __future__ import annotations

from dataclasses import replace

from kdbench.config.plan import Cell, RunPlan
from kdbench.store.cache import file_digest
from kdbench.store.keys import config_hash
from kdbench.store.records import STATUS_DIVERGED, STATUS_OK, Record, RecordStore

# Records with these statuses are final for their configuration: rerunning would repeat them.
FINAL_STATUSES = (STATUS_OK, STATUS_DIVERGED)


def pending_cells(plan: RunPlan, store: RecordStore) -> list[tuple[Cell, str]]:
    """The plan's cells without a current final record, with their keys (with ``rerun``: all).

    A record is current when its configuration key (which covers the plugins' code) is the cell's
    and every checkpoint it was computed from is still the same file, or gone: a checkpoint
    replaced by another file recomputes the cells that used it.
    """
    todo = []
    for cell in plan.cells:
        key = config_hash(plan.cell_key(cell))
        record = None if plan.rerun else store.get(cell.name)
        if record is None or record.key != key or record.status not in FINAL_STATUSES or weights_changed(plan, record):
            todo.append((cell, key))
    return todo


def weights_changed(plan: RunPlan, record: Record) -> bool:
    """Whether a checkpoint ``record`` was computed from now holds other bytes."""
    for name, digest in record.extra.get("weights", {}).items():
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
