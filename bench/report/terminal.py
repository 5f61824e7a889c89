"""The leaderboard as a person reads it in a terminal of any width (80 columns included).

Two views: the summary (:func:`print_summary`, what ``bench run`` ends with: the ranking with its
verdicts, a defense × attack drop matrix, the finding in one sentence and the files, one screen of
an 80×40 terminal for the default matrix) and the full view (:func:`print_terminal_view`, ``bench
report --full``: every column of the ranking and every student of the matrix).

The tables are :mod:`kdbench.report.leaderboard`'s own (:func:`~kdbench.report.tables.ranking_table`,
:func:`~kdbench.report.tables.matrix_table`), so the terminal shows exactly the figures of
``leaderboard.md``; only their layout changes. Nothing is ever cut: a cell's figure and its
parenthesised note go on two lines, headers wrap between words, and a table wider than the console
is split into parts that each repeat the key columns (rank and defense, or defense and teacher
accuracy). The last lines name the files with everything.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kdbench.report.leaderboard import INCOMPLETE_MARK, attack_set_note, findings, headline, ranking_rule
from kdbench.report.tables import BEYOND_NOISE_MARK, drop_matrix_table, matrix_table, ranking_table

RANKING_KEYS = 2  # rank, defense
MATRIX_KEYS = 2  # defense, teacher acc
LEGEND = (
    "Drop: points of test accuracy a stolen student loses against the same student trained from "
    "scratch (means ± std over seeds). Worst case: the smallest drop over attacks, with that attack "
    "in parentheses. Guaranteed drop: the smallest worst case over students; higher is better for "
    "the defense."
)
FILES = (
    ("leaderboard.md", "the ranking and the full matrix, with the run's settings"),
    ("leaderboard.csv", "every figure of both, one row per defense"),
    ("records.csv", "one row per cell and seed, with its status and reason"),
    ("tradeoff.png", "teacher accuracy against guaranteed drop"),
    ("matrix.png", "the drop of every cell"),
)


def _cell(text: str) -> str:
    """A figure and its notes on separate lines: ``97.22 ± 0.48 (+0.00 ± 0.29)`` → two lines."""
    for note in (" (", " [", " · paper"):
        text = text.replace(note, "\n" + note.lstrip())
    return text


def _header(text: str, width: int) -> str:
    """``text`` wrapped between words to ``width`` (at least its longest word); a text already cut
    into lines (:func:`two_line_header`) stays as it is."""
    if "\n" in text:
        return text
    return "\n".join(textwrap.wrap(text, max(width, 1), break_long_words=False, break_on_hyphens=False)) or text


def _table(header: list[str], rows: list[list[str]], columns: list[int], keys: int, *, compact: bool = False) -> Table:
    """``compact``: no blank line above the header and below the last row, and figures marked
    beyond noise in bold green (on a terminal with colour)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=not compact, padding=(0, 0) if compact else (0, 1))
    for i in columns:
        widest = max((len(line) for row in rows for line in row[i].splitlines()), default=1)
        head = max(len(line) for line in header[i].splitlines() or [""])
        table.add_column(
            _header(header[i], max(widest, min(head, 16 if compact else 12))),
            justify="left" if i < keys or compact else "right",
            overflow="fold",
            no_wrap=False,
        )
    # rows of several lines: a gap between them (not in a compact table, which must fit a screen)
    tall = not compact and any("\n" in row[i] for row in rows for i in columns)
    for n, row in enumerate(rows):
        cells = [Text(row[i], style="bold green" if compact and BEYOND_NOISE_MARK in row[i] else "") for i in columns]
        table.add_row(*cells, end_section=tall and n < len(rows) - 1)
    return table


def ranking_first(table: list[list[str]], keys: int) -> list[list[str]]:
    """The ranking's columns with what ranks the defenses first: the guaranteed drop, then the worst
    case per student, then the rest (teacher accuracy, owner cost)."""
    header = table[0]

    def order(i: int) -> int:
        if i < keys:
            return 0
        return 1 if header[i].startswith("guaranteed") else 2 if header[i].startswith("worst case") else 3

    columns = sorted(range(len(header)), key=order)  # stable: the report's order within each group
    return [[row[i] for i in columns] for row in table]


def fitted_tables(
    title: str, table: list[list[str]], *, keys: int, console: Console, compact: bool = False
) -> list[tuple[str, Table]]:
    """``table`` (header + rows of text) as one or more titled rich tables no wider than ``console``:
    the first ``keys`` columns in each, the others packed in order into as few parts as fit."""
    header = table[0]
    rows = [[_cell(c) for c in row] for row in table[1:]]
    width = console.width
    unbounded = console.options.update(width=10_000)  # a table's measure is capped by the width it gets
    parts: list[list[int]] = []
    current: list[int] = []
    for i in range(keys, len(header)):
        trial = [*range(keys), *current, i]
        if (
            current
            and console.measure(_table(header, rows, trial, keys, compact=compact), options=unbounded).maximum > width
        ):
            parts.append(current)
            current = [i]
        else:
            current.append(i)
    if current or not parts:
        parts.append(current)
    tables = []
    for n, part in enumerate(parts, 1):
        name = title if len(parts) == 1 else f"{title} (part {n} of {len(parts)})"
        tables.append((name, _table(header, rows, [*range(keys), *part], keys, compact=compact)))
    return tables


def print_terminal_view(board: pd.DataFrame, console: Console, title: str, folder: Path | None = None) -> None:
    """The ranking, the full matrix and (with ``folder``) where the files are, fitted to ``console``."""
    ranking = ranking_first(ranking_table(board), RANKING_KEYS)
    for name, table in fitted_tables(f"{title}: ranking", ranking, keys=RANKING_KEYS, console=console):
        console.print(name, style="bold", highlight=False, markup=False)
        console.print(table)
    console.print(LEGEND, highlight=False)
    if any(INCOMPLETE_MARK in cell for row in ranking[1:] for cell in row):
        console.print(
            f"{INCOMPLETE_MARK} some attack cells for this student did not finish (see the matrix): "
            "the worst case covers only those that did, so the defense is listed after every complete one.",
            highlight=False,
        )
    console.print(ranking_rule(board), highlight=False, markup=False)
    said = findings(board)
    if said:
        console.print("What the data show: " + " ".join(said), highlight=False, markup=False)
    console.print()
    matrix = matrix_table(board)
    for name, table in fitted_tables(f"{title}: full matrix", matrix, keys=MATRIX_KEYS, console=console):
        console.print(name, style="bold", highlight=False, markup=False)
        console.print(table)
    console.print("Each cell: the student's test accuracy (%) and, below it, its drop (points).", highlight=False)
    if folder is not None:
        console.print()
        console.print(f"Full tables and plots in {folder}/:", highlight=False, markup=False)
        name_width = max(len(name) for name, _ in FILES)
        for name, what in FILES:
            console.print(f"  {name:<{name_width}}  {what}", highlight=False, markup=False)


SUMMARY_RANKING = ("rank", "defense", "teacher acc", "guaranteed drop", "verdict")
SUMMARY_LEGEND = (
    "Drop: points a stolen student loses against itself trained from scratch. Guaranteed: for the "
    "attack and student that steal best; higher is better."
)
DROPS_LEGEND = (
    f"The smallest drop over students; {BEYOND_NOISE_MARK} beyond noise for every student. A drop the "
    "normal row shows too is the attack's weakness, not the defense's doing."
)


HEADER_MIN_WIDTH = 6  # an attack's header is cut in two above this width only: "black-/box", not "blac-/kbox"
NAME_MIN_WIDTH = 8  # the drop matrix's defense column is never narrower: "reverse_/sigmoid" still reads


def wrapped_name(name: str, width: int) -> str:
    """``name`` on lines of at most ``width`` characters: cut after underscores, a part longer than
    ``width`` hyphenated (``adaptive_misinformation`` at 9 → ``adaptive_``, ``misinfor-``, ``mation``)."""
    if len(name) <= width or "\n" in name:
        return name
    lines: list[str] = []
    for part in name.replace("_", "_\n").split("\n"):
        if lines and len(lines[-1]) + len(part) <= width:
            lines[-1] += part  # short parts share a line: "kd_t20" stays whole
            continue
        while len(part) > width:
            lines.append(part[: width - 1] + "-")
            part = part[width - 1 :]
        lines.append(part)
    return "\n".join(line for line in lines if line)


def two_line_header(name: str, width: int) -> str:
    """A column header at most ``width`` characters wide (its figures' width) where it can be, on two
    lines: cut after an underscore (``fast_dfkd`` → ``fast_/dfkd``), else hyphenated, between two
    consonants where it can be (``blackbox`` → ``black-/box``, ``skeptical`` → ``skep-/tical``), as late as
    fits (``deepinversion`` → ``deepin-/version``, 7 wide, the least two lines allow). Ten attack
    columns then fit 80 columns in one table, one line taller."""
    if len(name) <= width or "\n" in name:
        return name
    width = max(width, (len(name) + 2) // 2)  # two lines of at most this many characters, hyphen included
    cut = name.rfind("_", 0, width)
    if cut > 0 and len(name) - cut - 1 <= width:
        return f"{name[: cut + 1]}\n{name[cut + 1 :]}"
    # k letters on the first line (and a hyphen), len − k on the second: every k here fits
    # (width ≥ (len + 2) // 2 makes the range non-empty)
    fits = range(len(name) - width, width)
    between_consonants = [k for k in fits if not ({name[k - 1], name[k]} & set("aeiouy_"))]
    k = max(between_consonants or fits)
    return f"{name[:k]}-\n{name[k:]}"


def print_summary(
    board: pd.DataFrame, console: Console, title: str, folder: Path | None = None, notes: Sequence[str] = ()
) -> None:
    """The answer on one screen: the ranking with its verdicts, the drop of each defense × attack,
    the finding in one sentence, ``notes`` (the run's time, the comparison with the reference) and
    (with ``folder``) where everything else is."""

    def say(text: str, **style: str) -> None:
        console.print(text, highlight=False, markup=False, **style)

    full = ranking_table(board)
    columns = [full[0].index(name) for name in SUMMARY_RANKING]
    ranking = [[row[i] for i in columns] for row in full]
    for name, table in fitted_tables(f"{title}: ranking", ranking, keys=RANKING_KEYS, console=console, compact=True):
        say(name, style="bold")
        console.print(table)
    say(SUMMARY_LEGEND)
    if any(INCOMPLETE_MARK in cell for row in ranking[1:] for cell in row):
        say(f"{INCOMPLETE_MARK} some cells did not finish: ranked after every complete defense.")
    say(ranking_rule(board, short=True))
    if attack_set_note(board):
        say(attack_set_note(board))
    drops = drop_matrix_table(board)
    # a long attack name takes two lines in its header, no wider than its figures
    figures = [max((len(row[i]) for row in drops[1:]), default=0) for i in range(len(drops[0]))]
    drops[0] = [
        drops[0][0],
        *(two_line_header(a, max(w, HEADER_MIN_WIDTH)) for a, w in zip(drops[0][1:], figures[1:], strict=True)),
    ]
    # and a long defense name takes the lines it needs to leave the attacks the width of one table
    # (columns are one space apart), rather than push them into parts
    attacks = [max(max(map(len, h.split("\n"))), w) for h, w in zip(drops[0][1:], figures[1:], strict=True)]
    name_width = max(console.width - sum(attacks) - len(attacks), NAME_MIN_WIDTH)
    drops = [drops[0], *([wrapped_name(row[0], name_width), *row[1:]] for row in drops[1:])]
    for name, table in fitted_tables(
        f"{title}: drop (points) per attack", drops, keys=1, console=console, compact=True
    ):
        say(name, style="bold")
        console.print(table)
    say(DROPS_LEGEND)
    say("Finding: " + headline(board))
    for note in notes:
        say(note)
    if folder is not None:
        curves = ", stealing_curves.csv and .png" if (folder / "stealing_curves.csv").exists() else ""
        say(
            f"Files in {folder}/: leaderboard.md (`bench report --full`), "
            f"leaderboard.csv, records.csv, tradeoff.png, matrix.png{curves}"
        )
