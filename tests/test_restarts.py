"""``restarts``: a column whose cells each average several students (DAFL on digits, whose single
runs hinge on floating-point rounding). The first restart is the cell as a single run computes it,
the key changes only for the restarted column, and the leaderboard says which columns are means."""

from __future__ import annotations

import json
import statistics

import pytest

from kdbench.cli import main

TINY = ["run", "preset=tiny", "defense=[normal,nasty]", "attack=[kd,dafl]", "quiet=true"]


def records_of(folder):
    return {p.stem: json.loads(p.read_text()) for p in (folder / "synthetic" / "records").glob("*.json")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    one, three = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("three")
    assert main([*TINY, f"results_dir={one}"]) == 0
    assert main([*TINY, f"results_dir={three}", "+restarts.dafl=3"]) == 0
    return one, three


def test_a_restarted_cell_reports_the_mean_of_its_students_the_first_being_the_single_run(runs):
    single, restarted = (records_of(folder) for folder in runs)
    assert sorted(single) == sorted(restarted) and any("__dafl__" in name for name in single)
    for name, record in restarted.items():
        if "__dafl__" not in name:  # another column: the same key and the same result
            assert "restarts" not in record["details"]
            assert (record["key"], record["student_acc"]) == (single[name]["key"], single[name]["student_acc"])
            continue
        accuracies = record["details"]["restarts"]
        assert len(accuracies) == 3
        assert record["student_acc"] == pytest.approx(statistics.fmean(accuracies))
        assert record["drop"] == pytest.approx(record["baseline_acc"] - record["student_acc"])
        assert accuracies[0] == single[name]["student_acc"]  # restart 0: the cell's own seed
        assert record["key"] != single[name]["key"]  # a mean of three is another result


def test_the_restarts_train_other_students(runs):
    """Each restart draws its own generator and student: over the dafl cells, not every restart
    lands on the first one's accuracy."""
    restarted = records_of(runs[1])
    lists = [r["details"]["restarts"] for name, r in restarted.items() if "__dafl__" in name]
    assert any(len(set(accuracies)) > 1 for accuracies in lists), lists


def test_the_leaderboard_names_the_restarted_columns(runs):
    single, restarted = ((folder / "synthetic" / "leaderboard.md").read_text() for folder in runs)
    assert "Restarts:" not in single
    assert "each cell of these columns is the mean accuracy of that many students" in restarted
    assert restarted.count("dafl 3") == 1


def test_the_same_run_again_reuses_the_restarted_cells(runs, capsys):
    capsys.readouterr()
    assert main([*TINY, f"results_dir={runs[1]}", "+restarts.dafl=3"]) == 0
    said = " ".join(capsys.readouterr().out.split())  # the terminal view wraps its lines
    assert "0 cell(s) computed, 4 reused" in said, said


def test_a_folder_whose_records_differ_in_restarts_says_so(runs, tmp_path):
    """The note comes from the records, not from the last run's settings: a folder holding single
    runs and means of three names both."""
    import shutil

    from kdbench.report.files import write_reports

    folder = tmp_path / "synthetic"
    shutil.copytree(runs[1] / "synthetic" / "records", folder / "records")
    one_run = sorted((runs[0] / "synthetic" / "records").glob("*__dafl__*.json"))[0]
    shutil.copy(one_run, folder / "records" / one_run.name)  # one cell as a single run computed it
    write_reports(folder)
    assert (
        "dafl 1 or 3 (its records come from runs with different restarts)." in (folder / "leaderboard.md").read_text()
    )
