"""What a person reads in an 80-column terminal: every figure whole, never cut with `…`.

The golden file is the committed digits reference (results/reference/digits/records) rendered exactly as
`bench run` and `bench report` print it at 80 columns; regenerate it with
`KDBENCH_UPDATE_GOLDEN=1 pytest tests/test_terminal_view.py` after a deliberate change, and read it.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from kdbench.cli import _list
from kdbench.config.compose import compose_config
from kdbench.config.plan import plan_from_config
from kdbench.matrix.pending import pending_cells
from kdbench.report.leaderboard import leaderboard_frame, records_frame
from kdbench.report.tables import matrix_table, ranking_table
from kdbench.report.terminal import print_terminal_view, wrapped_name
from kdbench.store.records import CellDetails, Record, RecordStore

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "results" / "reference" / "digits"
GOLDEN = Path(__file__).parent / "golden" / "terminal" / "digits_80.txt"


def console(width: int) -> Console:
    return Console(width=width, file=io.StringIO(), color_system=None, force_terminal=False, legacy_windows=False)


def rendered(board: pd.DataFrame, width: int, folder: Path | None = None) -> str:
    out = console(width)
    print_terminal_view(board, out, "kdbench: digits", folder)
    return "\n".join(line.rstrip() for line in out.file.getvalue().splitlines()) + "\n"


def assert_nothing_cut(text: str, board: pd.DataFrame, width: int) -> None:
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    # every word of every cell of both tables appears whole (a folded cell would split one)
    words = set(text.split())
    for table in (ranking_table(board), matrix_table(board)):
        for row in table[1:]:
            for cell in row:
                for word in cell.split():
                    assert word in words, (word, cell)


@pytest.fixture(scope="module")
def reference_board() -> pd.DataFrame:
    return leaderboard_frame(records_frame(RecordStore(REFERENCE).all()))


def test_the_digits_reference_at_80_columns_is_the_golden_rendering(reference_board):
    text = rendered(reference_board, 80, Path("results/reference/digits"))
    if os.environ.get("KDBENCH_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    assert_nothing_cut(text, reference_board, 80)
    assert "results/reference/digits/:" in text and "leaderboard.md" in text and "records.csv" in text


@pytest.mark.parametrize("width", [60, 80, 120])
def test_no_cell_is_cut_at_any_width(reference_board, width):
    assert_nothing_cut(rendered(reference_board, width), reference_board, width)


def test_a_wide_table_is_split_and_each_part_repeats_the_defense(reference_board):
    text = rendered(reference_board, 80)
    assert "kdbench: digits: full matrix (part 1 of" in text
    parts = text.count("full matrix (part")
    assert parts > 1
    # every part names every defense again
    assert text.count("reverse_sigmoid") >= parts + 1  # the matrix parts and the ranking


def test_long_names_wrap_instead_of_being_cut(tmp_path):
    store = RecordStore(tmp_path)
    for defense in ("normal", "a_defense_with_a_really_long_name"):
        for student in ("mlp", "timm/mobilenetv3_small_050", "resnext29_8x64d"):
            store.put(
                Record(
                    dataset="digits",
                    defense=defense,
                    attack="blackbox",
                    student=student,
                    seed=0,
                    teacher="digits_cnn",
                    teacher_acc=99.0,
                    student_acc=90.0,
                    baseline_acc=95.5,
                    drop=5.5,
                    status="ok",
                    wall_s=1.0,
                    key=f"{defense}{student}",
                    details=CellDetails(owner_cost={"ece_pct": 1.0, "kl_nats": float("inf"), "tv_pct": 2.0}),
                )
            )
    board = leaderboard_frame(records_frame(store.all()))
    assert_nothing_cut(rendered(board, 80), board, 80)


def test_bench_list_shows_every_option_in_full_at_80_columns():
    from kdbench.api import ATTACKS, DEFENSES
    from kdbench.cli import _default

    out = console(80)
    assert _list([], out) == 0
    text = out.file.getvalue()
    assert "…" not in text
    lines = set(text.splitlines())
    for registry in (DEFENSES, ATTACKS):
        for entry in registry:
            for option in fields(entry.config) if entry.config else ():
                assert f"      {option.name}={_default(option)!r}" in lines, (entry.name, option.name)
    assert "      surrogate_root=None" in lines and "      access='probabilities'" in lines


SUMMARY_GOLDEN = Path(__file__).parent / "golden" / "terminal" / "digits_run_last_screen_80x40.txt"


def test_the_last_screen_of_an_80_column_run_is_the_golden_one(tmp_path, monkeypatch, capsys):
    """`bench run all seeds=3` at 80×40 over a copy of the committed digits records (every cell
    reused, so the figures are the reference's): its last 40 lines hold the whole answer: the
    ranking with its verdicts, the drop of every defense × attack, the finding, the run's time, the
    comparison's verdict and the files. Regenerate with KDBENCH_UPDATE_GOLDEN=1 after a deliberate change."""
    from kdbench.cli import main

    # the default folders, relative to the working directory, as a user's clone has them
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "reference").symlink_to(REFERENCE.parent, target_is_directory=True)
    shutil.copytree(REFERENCE / "records", tmp_path / "results" / "runs" / "digits" / "records")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "40")
    # the run's own time is the one figure that is not the records': a fixed width keeps its
    # paragraph's line breaks those of the golden file
    monkeypatch.setattr("kdbench.matrix.run.duration", lambda seconds: "<time>")
    # a stale reference would make the run below recompute its cells, half an hour of training
    # instead of a failure: say so at once (tests/test_digits_matrix.py says which cells)
    plan = plan_from_config(compose_config(["seeds=3"]))
    stale = [cell.name for cell, _ in pending_cells(plan, RecordStore(plan.dataset_dir))]
    assert not stale, f"{len(stale)} reference cells are stale, e.g. {stale[0]}: regenerate the reference"
    assert main(["run", "all", "seeds=3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    screen = [line.rstrip() for line in printed[-40:]]
    assert max(len(line) for line in screen) <= 80
    screen = [re.sub(r"^\d\d:\d\d:\d\d ", "<hh:mm:ss> ", line) for line in screen]
    text = "\n".join(screen) + "\n"
    if os.environ.get("KDBENCH_UPDATE_GOLDEN"):
        SUMMARY_GOLDEN.write_text(text)
    assert text == SUMMARY_GOLDEN.read_text()
    # what the screen must hold, whatever the golden file says
    assert "kdbench: digits: ranking" in text and "kdbench: digits: drop (points) per attack" in text
    board = leaderboard_frame(records_frame(RecordStore(REFERENCE).all()))
    for row in board[board.defense != "scratch (no teacher)"].itertuples():
        ranking_row = [line for line in screen if line.split()[1:2] == [row.defense]]
        # a long name takes several lines there: its figures stand beside the first
        matrix_row = [
            line
            for line in screen
            if line.split()[1:] and row.defense.startswith(line.split()[0]) and line.split()[1][0] in "+-"
        ]
        assert len(ranking_row) == 1 and ranking_row[0].endswith(str(row.verdict)), row.defense
        assert len(matrix_row) == 1 and len(matrix_row[0].split()) == 1 + 10, row.defense  # 10 attack columns
    said = " ".join(text.split())  # the terminal wraps the sentences
    assert "Finding: " in said and "Reference: all 480 cell(s) identical to results/reference/digits" in said
    assert any(line.startswith("Files in results/runs/digits/: leaderboard.md") for line in screen[-3:])
    assert "stealing_curves.csv" in " ".join(screen[-3:])  # the reference has black-box curves


def test_a_long_defense_name_wraps_at_underscores_and_is_hyphenated_only_where_a_part_is_too_long():
    assert wrapped_name("normal", 9) == "normal"
    assert wrapped_name("reverse_sigmoid", 9) == "reverse_\nsigmoid"
    assert wrapped_name("adaptive_misinformation", 9) == "adaptive_\nmisinfor-\nmation"
    assert wrapped_name("adaptive_misinformation", 16) == "adaptive_\nmisinformation"
    assert wrapped_name("a_b_long_name", 5) == "a_b_\nlong_\nname"  # short parts share a line
    for name in ["adaptive_misinformation", "reverse_sigmoid", "x" * 30]:
        lines = wrapped_name(name, 8).split("\n")
        assert max(map(len, lines)) <= 8 and "".join(lines).replace("-", "") == name.replace("-", "")


def test_a_long_attack_name_takes_two_lines_no_wider_than_its_figures_where_it_can():
    from kdbench.report.terminal import two_line_header

    assert two_line_header("kd_t20", 6) == "kd_t20"
    assert two_line_header("fast_dfkd", 6) == "fast_\ndfkd"  # at the underscore
    assert two_line_header("blackbox", 6) == "black-\nbox"  # hyphenated as late as fits
    assert two_line_header("deepinversion", 6) == "deepin-\nversion"  # 13 letters need 7 a line
    for name in ["skeptical", "adaptive_misinformation", "a_very_long_attack_name"]:
        lines = two_line_header(name, 6).split("\n")
        assert len(lines) == 2 and "".join(lines).replace("-", "") == name.replace("-", "")
        assert max(map(len, lines)) <= max(6, (len(name) + 2) // 2)
