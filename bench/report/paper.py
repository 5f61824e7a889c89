"""Published figures beside measured ones: the tables a paper preset reproduces, kept as data.

``bench/paper_results/*.csv`` hold one published accuracy per row. A preset names its table with
``paper: <table>``; its leaderboard then gains, for each teacher accuracy and each attack × student
cell the paper reports, the published figure (column ``<measured> paper``) and the difference
``measured − published`` (``<measured> paper_delta``).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from kdbench.errors import ConfigError

PAPER_RESULTS = Path(__file__).parent.parent / "paper_results"
KEY = ["teacher", "defense", "attack", "student"]
PAPER_SCRATCH_DEFENSE = "scratch"  # the defense column of a student trained on the labels alone
TEACHER_ACC = "teacher_acc"


@functools.cache
def published() -> pd.DataFrame:
    """Every published figure: columns table, teacher, defense, attack, student, accuracy."""
    frames = [
        pd.read_csv(path, comment="#", dtype=str, keep_default_na=False) for path in sorted(PAPER_RESULTS.glob("*.csv"))
    ]
    frame = pd.concat(frames, ignore_index=True)
    return frame.astype({"accuracy": float})


def paper_tables() -> list[str]:
    return sorted(published().table.unique())


def check_paper_table(name: str) -> None:
    if name not in paper_tables():
        raise ConfigError(f"unknown paper table {name!r}; known: {', '.join(paper_tables())} (in {PAPER_RESULTS}/)")


def with_paper_figures(board: pd.DataFrame, table: str, *, comparable: bool = True) -> pd.DataFrame:
    """``board`` (a leaderboard frame) plus ``<measured> paper`` and, where the run's settings are the
    paper's (``comparable``), ``<measured> paper_delta``, wherever ``table`` has the figure, for
    ``teacher_acc`` and every ``<attack>/<student> acc`` column."""
    rows = published()[published().table == table]
    figures = {tuple(row[KEY]): row.accuracy for _, row in rows.iterrows()}
    pairs = [c.removesuffix(" acc") for c in board.columns if c.endswith(" acc") and "/" in c]
    board = board.copy()
    for index, row in board.iterrows():
        scratch_row = row["teacher"] == ""
        lookups = {} if scratch_row else {TEACHER_ACC: (row["teacher"], row["defense"], "", "")}
        for pair in pairs:
            attack, student = pair.split("/", 1)
            if scratch_row:
                lookups[f"{pair} acc"] = ("", PAPER_SCRATCH_DEFENSE, "", student)
            else:
                lookups[f"{pair} acc"] = (row["teacher"], row["defense"], attack, student)
        for column, key in lookups.items():
            if key in figures:
                board.loc[index, f"{column} paper"] = figures[key]
                if comparable:
                    board.loc[index, f"{column} paper_delta"] = row[column] - figures[key]
    return board


def paper_note(row: pd.Series, column: str) -> str:
    """`` · paper 87.75, Δ −0.63`` for a measured ``column`` with a published figure, `` · paper 87.75
    (other settings)`` where the run's settings are not the paper's, else nothing."""
    paper = row.get(f"{column} paper")
    if paper is None or pd.isna(paper):
        return ""
    if f"{column} paper_delta" not in row.index:
        return f" · paper {paper:.2f} (other settings)"
    delta = row.get(f"{column} paper_delta")
    return f" · paper {paper:.2f}" + ("" if pd.isna(delta) else f", Δ {delta:+.2f}")
