"""One JSON record per finished cell of the matrix, written atomically."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from kdbench.store.atomic import atomic_write_text

STATUS_OK = "ok"
STATUS_DIVERGED = "diverged"
STATUS_FAILED = "failed"
# the attack cannot run on the teacher's architecture (DeepInversion on a network without BatchNorm):
# the reason says why; such a cell is not a result that is missing
STATUS_NA = "not_applicable"  # the tables show "n/a" (which pandas would read as a missing value)


@dataclass
class CellDetails:
    """What a record keeps beside its accuracies: what its cell was computed from and with, and what
    was measured on the way. Written as the record's ``details`` object, without the unset fields."""

    threads: int | None = None  # the intra-op threads its networks trained with
    # the checkpoints the result came from, file name → content digest: replaced files make it stale
    weights: dict[str, str] = field(default_factory=dict)
    # the owner's weight files it was built from: option → path, sha256, what cannot be known of them
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    teacher_label: str | None = None  # the owner's name for the teacher (teacher_weights=)
    command: str | None = None  # the command line that wrote it
    code: dict[str, dict[str, Any]] = field(default_factory=dict)  # "defense"/"attack" → package, version, source
    # the defense's cost to legitimate users: ECE (%), KL (nats) and TV (%) of the served probabilities
    owner_cost: dict[str, float] = field(default_factory=dict)
    # milliseconds the defended teacher took to answer 1,000 queries, on the machine and threads that
    # ran the cell (kdbench.serving.owner_cost.serving_ms_per_1k): a timing, comparable within a run
    serving_ms_per_1k: float | None = None
    queries: int | None = None  # inputs the attack asked the teacher (None: white box, or not run)
    # queries → the student's test accuracy had the attacker stopped there (query-budgeted attacks)
    stealing_curve: dict[str, float] = field(default_factory=dict)
    # each restart's student accuracy where the column trains several (``restarts``): the record's
    # student_acc is their mean
    restarts: list[float] | None = None
    traceback: str | None = None  # the file holding a failed plugin's traceback

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}

    @classmethod
    def from_json(cls, data: Any) -> CellDetails:
        if not isinstance(data, dict):
            raise UnreadableRecord(
                f"details is a JSON {_JSON_TYPES.get(type(data), type(data).__name__)}, not an object"
            )
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise UnreadableRecord(f"details has unknown field(s) {', '.join(unknown)}")
        return cls(**{k: v for k, v in data.items() if v is not None})


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
    details: CellDetails = field(default_factory=CellDetails)

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
            return read_record(path)
        except UnreadableRecord:
            return None  # unreadable: the cell is simply recomputed

    def put(self, record: Record) -> None:
        atomic_write_text(self.path(record.cell), json.dumps(record_json(record), indent=1, sort_keys=True) + "\n")

    def all(self) -> list[Record]:
        return self.scan()[0]

    def scan(self) -> tuple[list[Record], list[tuple[Path, str]]]:
        """Every readable record, and each unreadable one's path with what is wrong with it."""
        records, unreadable = [], []
        for path in sorted(self.folder.glob("*.json")):
            try:
                records.append(read_record(path))
            except UnreadableRecord as err:
                unreadable.append((path, str(err)))
            except FileNotFoundError:
                continue  # replaced or removed by another process since the listing
        return records, unreadable


class UnreadableRecord(ValueError):
    """A record file that is not a JSON object of a record's fields (the message says what is wrong)."""


_JSON_TYPES = {list: "list", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def record_json(record: Record) -> dict[str, Any]:
    return {**asdict(record), "details": record.details.to_json()}


def read_record(path: Path) -> Record:
    try:
        data = json.loads(path.read_bytes().decode())
    except UnicodeDecodeError:
        raise UnreadableRecord("not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise UnreadableRecord(f"not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    if not isinstance(data, dict):
        raise UnreadableRecord(f"a JSON {_JSON_TYPES.get(type(data), type(data).__name__)}, not an object") from None
    if "extra" in data and "details" not in data:  # records written before the details were typed
        data["details"] = data.pop("extra")
    known = {f.name for f in fields(Record)}
    required = {f.name for f in fields(Record) if f.default is MISSING and f.default_factory is MISSING}
    if missing := sorted(required - set(data)):
        raise UnreadableRecord(f"lacks field(s) {', '.join(missing)}")
    if unknown := sorted(set(data) - known):
        raise UnreadableRecord(f"has unknown field(s) {', '.join(unknown)}")
    try:
        return Record(**{**data, "details": CellDetails.from_json(data.get("details", {}))})
    except TypeError as err:
        raise UnreadableRecord(str(err)) from None
