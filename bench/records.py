"""One JSON record per finished cell of the matrix, written atomically."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdbench.cache import atomic_write_text

STATUS_OK = "ok"
STATUS_DIVERGED = "diverged"
STATUS_FAILED = "failed"


@dataclass
class Record:
    dataset: str
    defense: str
    attack: str
    student: str
    seed: int
    teacher: str
    teacher_acc: float | None
    student_acc: float | None
    baseline_acc: float | None
    drop: float | None  # baseline_acc − student_acc, in points
    status: str
    wall_s: float
    key: str  # hash of the cell's whole configuration: a record with another key is stale
    reason: str = ""
    student_arch: str = ""  # the architecture trained, where ``student`` names it indirectly ("self")
    extra: dict[str, Any] = field(default_factory=dict)  # attack-specific measurements

    @property
    def cell(self) -> str:
        return cell_name(self.teacher, self.defense, self.attack, self.student, self.seed, self.student_arch)


def cell_name(teacher: str, defense: str, attack: str, student: str, seed: int, student_arch: str = "") -> str:
    """``teacher__defense__attack__student__seedN``; a "self" student reads ``self=<architecture>``."""
    if student_arch and student_arch != student:
        student = f"{student}={student_arch}"
    parts = (teacher, defense, attack, student)
    return "__".join(p.replace("/", "-") for p in parts) + f"__seed{seed}"


class RecordStore:
    """The records of one dataset's results folder: ``<results>/<dataset>/records/<cell>.json``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder) / "records"

    def path(self, cell: str) -> Path:
        return self.folder / f"{cell}.json"

    def get(self, cell: str) -> Record | None:
        path = self.path(cell)
        if not path.exists():
            return None
        try:
            return Record(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError):
            return None  # unreadable: the cell is simply recomputed

    def put(self, record: Record) -> None:
        atomic_write_text(self.path(record.cell), json.dumps(asdict(record), indent=1, sort_keys=True) + "\n")

    def all(self) -> list[Record]:
        records = (self.get(p.stem) for p in sorted(self.folder.glob("*.json")))
        return [r for r in records if r is not None]
