"""Stealing curves: how a query-budgeted attack's student improves with the queries it makes.

A record of such an attack (``blackbox``) keeps ``details.stealing_curve``: the student's test
accuracy had the attacker stopped after 1/8, 1/4 and 1/2 of its queries (the same random stream,
so the first queries of the full run; :meth:`kdbench.matrix.runner.Runner.stealing_curve`), and
after all of them. The tables read it from the records alone.
"""

from __future__ import annotations

import pandas as pd

from kdbench.report.leaderboard import teacher_label
from kdbench.store.records import STATUS_OK, Record

CURVE_COLUMNS = ["dataset", "teacher", "defense", "attack", "student", "seed", "queries", "student_acc"]
WITHIN_POINTS = 1.0  # "enough queries": the student within this many points of its full-budget accuracy


def curves_frame(records: list[Record]) -> pd.DataFrame:
    """One row per point of every ok record's stealing curve, in the columns of stealing_curves.csv."""
    rows = [
        {
            "dataset": r.dataset,
            "teacher": teacher_label(r),
            "defense": r.defense,
            "attack": r.attack,
            "student": r.student,
            "seed": r.seed,
            "queries": int(queries),
            "student_acc": accuracy,
        }
        for r in records
        if r.status == STATUS_OK
        for queries, accuracy in r.details.stealing_curve.items()
    ]
    frame = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    return frame.sort_values(CURVE_COLUMNS[:7], kind="stable").reset_index(drop=True)


def mean_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """The curves averaged over seeds: one row per (teacher, defense, attack, student, queries)."""
    keys = ["teacher", "defense", "attack", "student", "queries"]
    return frame.groupby(keys, sort=True).student_acc.agg(["mean", "count"]).reset_index()


def queries_needed(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (teacher, defense, attack, student): the fewest queries whose mean accuracy is within
    :data:`WITHIN_POINTS` of the mean accuracy with all of them, and how many that is of all."""
    rows = []
    for key, curve in mean_curves(frame).groupby(["teacher", "defense", "attack", "student"], sort=True):
        curve = curve.sort_values("queries")
        full = curve.iloc[-1]
        enough = curve[curve["mean"] >= full["mean"] - WITHIN_POINTS].iloc[0]
        rows.append([*key, int(enough.queries), int(full.queries), float(full["mean"])])
    return pd.DataFrame(rows, columns=["teacher", "defense", "attack", "student", "queries", "all_queries", "full_acc"])


def curves_markdown(frame: pd.DataFrame) -> list[str]:
    """leaderboard.md's section: per defense and attack → student, the queries the attacker needs."""
    if frame.empty:
        return []
    needed = queries_needed(frame)
    several = needed.teacher.nunique() > 1
    pairs = sorted({(a, s) for a, s in zip(needed.attack, needed.student, strict=True)})
    header = ["defense", *[f"{a} → {s}" for a, s in pairs]]
    lines = [
        "## Stealing curves",
        "",
        f"Queries the attacker needs for a student within {WITHIN_POINTS:g} point of the accuracy it reaches "
        "with all its queries, of all of them, and that accuracy (means over seeds; measured at 1/8, 1/4, "
        "1/2 and all of them: from one query stream for an attack that trains on a fixed transfer set, off its "
        "one run for one that learns as it queries; `stealing_curves.csv`, `stealing_curves.png`). The "
        "more it needs, the more the defense slows the attacker down.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for (teacher, defense), rows in needed.groupby(["teacher", "defense"], sort=True):
        by_pair = {(r.attack, r.student): r for r in rows.itertuples()}
        cells = [
            f"{by_pair[p].queries:,} of {by_pair[p].all_queries:,} ({by_pair[p].full_acc:.2f} %)"
            if p in by_pair
            else "–"
            for p in pairs
        ]
        lines.append("| " + " | ".join([f"{teacher} {defense}" if several else str(defense), *cells]) + " |")
    return lines
