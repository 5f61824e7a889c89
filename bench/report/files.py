"""A results folder's report files, rebuilt from its records alone: records.csv,
leaderboard.csv, leaderboard.md, run.json and the plots."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pandas as pd

from kdbench.errors import BenchError
from kdbench.report.curves import curves_frame, curves_markdown
from kdbench.report.leaderboard import leaderboard_frame, records_frame, teacher_label
from kdbench.report.paper import with_paper_figures
from kdbench.report.tables import RUN_SCOPE, leaderboard_markdown
from kdbench.store.atomic import atomic_write_text
from kdbench.store.records import STATUS_NA, Record, RecordStore

SETTINGS_FILE = "run.json"


def provenance(records: list[Record]) -> dict[str, Any]:
    """What the records shown came from: the distinct commands that wrote them, and each plugin's
    package, version and source hash (records written before these were kept add nothing)."""
    commands = sorted({r.details.command for r in records if r.details.command})
    plugins: dict[str, set[str]] = {}
    for r in records:
        for role, name in (("defense", r.defense), ("attack", r.attack)):
            code = r.details.code.get(role)
            if code:
                plugins.setdefault(name, set()).add(f"{code['package']} {code['version']}, source {code['source']}")
    out: dict[str, Any] = {}
    files = {}
    for r in records:
        for where, file in r.details.files.items():
            files[f"{where}, row {teacher_label(r)}"] = file
    if files:
        out["files"] = files
    if commands:
        out["commands"] = commands
    if plugins:
        out["plugins"] = {name: " / ".join(sorted(v)) for name, v in sorted(plugins.items())}
    # the columns whose cells average several students, from the records (not the last run's settings)
    counts: dict[str, set[int]] = {}
    for r in records:
        counts.setdefault(r.attack, set()).add(len(r.details.restarts) if r.details.restarts else 1)
    out["restarts"] = {column: sorted(n) for column, n in sorted(counts.items()) if n != {1}}
    return out


def save_settings(folder: Path, settings: dict[str, Any]) -> None:
    """Record the run's settings, which every later rebuild of the leaderboard states."""
    atomic_write_text(folder / SETTINGS_FILE, json.dumps(settings, indent=1) + "\n")


def write_reports(
    folder: Path, settings: dict[str, Any] | None = None, cells: Collection[str] | None = None
) -> pd.DataFrame:
    """Rebuild records.csv, leaderboard.csv, leaderboard.md and the plots of one results folder:
    of the records of ``cells`` (a run's own cells), or of every record there (``bench report``)."""
    from kdbench.report.plots import plot_matrix, plot_stealing_curves, plot_tradeoff

    records, unreadable = RecordStore(folder).scan()
    if cells is not None:
        records = [r for r in records if r.cell in cells]
    if not records and not unreadable:
        raise BenchError(
            f"no records under {folder}/records; run `bench run all` (or `bench run all dataset=...`) first"
        )
    if not records:
        raise BenchError(
            f"no readable record under {folder}/records ({len(unreadable)} unreadable, e.g. {unreadable[0][0]}: "
            f"{unreadable[0][1]}); delete or fix them, or rerun `bench run all` to recompute them"
        )
    settings_path = folder / SETTINGS_FILE
    if settings is not None:
        save_settings(folder, settings)
    elif settings_path.exists():
        settings = json.loads(settings_path.read_text())
    settings = {**(settings or {}), **provenance(records)}
    settings["scope"] = RUN_SCOPE if cells is not None else "every record in the folder"
    settings["not_applicable"] = {
        f"{r.attack} on {teacher_label(r)}": r.reason for r in records if r.status == STATUS_NA
    }
    frame = records_frame(records)
    board = leaderboard_frame(frame)
    if (settings or {}).get("paper"):
        board = with_paper_figures(board, settings["paper"], comparable=not settings.get("paper_differences"))
    title = str((settings or {}).get("dataset", folder.name))
    atomic_write_text(folder / "records.csv", frame.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(folder / "leaderboard.csv", board.to_csv(index=False, float_format="%.4f"))
    markdown = leaderboard_markdown(board, settings or {}, curves_markdown(curves_frame(records)))
    if unreadable:
        markdown += "\n" + unreadable_note(unreadable)
    atomic_write_text(folder / "leaderboard.md", markdown)
    plot_tradeoff(board, folder / "tradeoff.png", title)
    plot_matrix(board, folder / "matrix.png", title)
    curves = curves_frame(records)
    if not curves.empty:
        atomic_write_text(folder / "stealing_curves.csv", curves.to_csv(index=False, float_format="%.4f"))
        plot_stealing_curves(curves, folder / "stealing_curves.png", title)
    return board


def unreadable_records(folder: Path) -> list[tuple[Path, str]]:
    """The record files of ``folder`` that the tables had to leave out, with what is wrong with each."""
    return RecordStore(folder).scan()[1]


def unreadable_note(unreadable: list[tuple[Path, str]]) -> str:
    """The leaderboard's warning that it is incomplete: each record left out, and why."""
    lines = [
        f"**Incomplete:** {len(unreadable)} record file(s) could not be read and are left out of every "
        "table above (fix or delete them; `bench run` recomputes a deleted cell):",
        "",
    ]
    return "\n".join([*lines, *(f"- `{path.name}`: {reason}" for path, reason in unreadable)]) + "\n"
