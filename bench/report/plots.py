"""The leaderboard's pictures: the owner's trade-off, the whole matrix as a heatmap, and the stealing
curves of the query-budgeted attacks."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from kdbench.report.leaderboard import shown_status
from kdbench.store.atomic import atomic_write


def _save(fig: Figure, path: Path) -> None:
    # A bare Figure renders with Agg: no pyplot state, no window, safe on servers and in CI.
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=150, bbox_inches="tight"))


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _defense_rows(board: pd.DataFrame) -> pd.DataFrame:
    return board[board.teacher != ""]


def _row_label(row: pd.Series, several_teachers: bool) -> str:
    return f"{row.teacher}\n{row.defense}" if several_teachers else str(row.defense)


def plot_tradeoff(board: pd.DataFrame, path: Path, title: str) -> None:
    """Teacher accuracy (what the owner keeps) against guaranteed drop (what the attacker loses)."""
    rows = _defense_rows(board)
    several = rows.teacher.nunique() > 1
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    ax.axhline(0, color="0.6", linewidth=0.8, zorder=0)
    # A legend, not labels beside the points: defenses that keep the normal network's accuracy sit
    # on one vertical line, often within a fraction of a point, and their labels would overprint.
    # Distinct markers keep coinciding points apart to the eye.
    for i, (_, row) in enumerate(rows.iterrows()):
        if pd.isna(row.teacher_acc) or pd.isna(row.guaranteed_drop):
            continue
        ax.errorbar(
            row.teacher_acc,
            row.guaranteed_drop,
            xerr=np.nan_to_num(row.teacher_acc_std),
            yerr=np.nan_to_num(row.guaranteed_drop_std),
            fmt=MARKERS[i % len(MARKERS)],
            markersize=9 - 2 * (i % 3),
            capsize=4,
            color=f"C{i % 10}",
            alpha=0.85,
            label=_row_label(row, several).replace("\n", " "),
        )
    if ax.get_legend_handles_labels()[0]:  # none when every defense's cells failed
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9, title="defense", title_fontsize=9)
    ax.set_xlabel("teacher test accuracy (%)   [right: the owner keeps more]")
    ax.set_ylabel("guaranteed student drop (points)\n[up: the defense protects more]")
    ax.set_title(f"{title}: accuracy kept vs. protection\n(drop: worst case over attacks and students)", fontsize=10)
    ax.margins(x=0.25, y=0.2)
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_matrix(board: pd.DataFrame, path: Path, title: str) -> None:
    """Mean drop of every (teacher, defense) × (attack, student) cell; red protects, blue leaks."""
    rows = _defense_rows(board)
    several = rows.teacher.nunique() > 1
    pairs = [c.removesuffix(" drop") for c in board.columns if c.endswith(" drop") and "/" in c]
    values = rows[[f"{p} drop" for p in pairs]].to_numpy(dtype=float)
    fig = Figure(figsize=(1.3 + 1.5 * len(pairs), 1.2 + 0.55 * len(rows)))
    ax = fig.subplots()
    finite = values[np.isfinite(values)]
    span = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    image = ax.imshow(values, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -span, span), aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        status = rows.iloc[i].get(f"{pairs[j]} status")
        text = f"{value:+.1f}" if np.isfinite(value) else (shown_status(status) if isinstance(status, str) else "–")
        dark = np.isfinite(value) and abs(value) >= 0.6 * span  # an empty cell is white: its text black
        ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ax.set_xticks(range(len(pairs)), [p.replace("/", "\n→ ") for p in pairs], fontsize=9)
    ax.set_yticks(range(len(rows)), [_row_label(r, several) for _, r in rows.iterrows()], fontsize=9)
    ax.set_xlabel("attack → student")
    ax.set_title(f"{title}: student drop per cell (points)\nred: the defense holds · blue: it leaks", fontsize=10)
    fig.colorbar(image, ax=ax, label="drop (points)")
    _save(fig, path)


def plot_stealing_curves(curves: pd.DataFrame, path: Path, title: str) -> None:
    """The student's accuracy against the attacker's queries (log scale), one line per defense (mean
    over seeds): a row of panels per attack, a column per student, one legend for all."""
    attacks, students = sorted(set(curves.attack)), sorted(set(curves.student))
    fig = Figure(figsize=(4.2 * len(students) + 1.8, 3.2 * len(attacks)), layout="constrained")
    axes = fig.subplots(len(attacks), len(students), squeeze=False)
    several = curves.teacher.nunique() > 1
    # a defense keeps its colour and marker in every panel, whichever defenses a panel lacks
    order = {key: n for n, key in enumerate(sorted(set(zip(curves.teacher, curves.defense, strict=True))))}
    for (row, attack), (col, student) in itertools.product(enumerate(attacks), enumerate(students)):
        ax = axes[row][col]
        mine = curves[(curves.attack == attack) & (curves.student == student)]
        if mine.empty:
            ax.set_visible(False)
            continue
        for (teacher, defense), line in mine.groupby(["teacher", "defense"], sort=True):
            n = order[(teacher, defense)]
            mean = line.groupby("queries").student_acc.mean()
            label = f"{teacher} {defense}" if several else defense
            ax.plot(mean.index, mean.values, color=f"C{n % 10}", marker=MARKERS[n % len(MARKERS)], label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("queries")
        ax.set_ylabel("student test accuracy (%)")
        ax.set_title(f"{attack} → {student}", fontsize=10)
        ax.grid(alpha=0.3)
    # one legend outside the data, each defense once
    legend: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend.keys()), fontsize=8, loc="outside right upper")
    fig.suptitle(f"{title}: stealing curves (mean over seeds)", fontsize=10)
    _save(fig, path)
