"""``student: [..., self]``: the teacher's own architecture, resolved per teacher."""

import json

import pandas as pd

from kdbench.cli import main
from kdbench.config.compose import compose_config
from kdbench.config.plan import plan_from_config
from kdbench.store.keys import cell_spec


def plan(*overrides: str):
    return plan_from_config(compose_config(["preset=tiny", *overrides]))


def test_self_resolves_to_each_teachers_architecture_and_names_it():
    p = plan("teacher=[digits_cnn,mlp]", "student=[self]", "defense=normal")
    assert [(c.teacher, c.student_arch, c.name) for c in p.cells] == [
        ("digits_cnn", "digits_cnn", "digits_cnn__normal__kd__self=digits_cnn__seed0"),
        ("mlp", "mlp", "mlp__normal__kd__self=mlp__seed0"),
    ]


def test_a_self_cell_has_the_key_of_the_teachers_architecture_named_outright():
    p = plan("student=[mlp,digits_cnn,self]", "defense=normal")
    mlp, named, own = p.cells
    assert cell_spec(p, own) == cell_spec(p, named) != cell_spec(p, mlp)


def test_self_is_measured_once_and_recorded_under_both_names(tmp_path, capsys):
    common = ["preset=tiny", "defense=nasty", "quiet=true", f"results_dir={tmp_path}"]
    assert main(["run", *common, "student=[digits_cnn]"]) == 0
    capsys.readouterr()
    # a later run adding "self" takes the measurement over instead of training again (wall_s 0)
    assert main(["run", *common, "student=[digits_cnn,self]"]) == 0
    assert "1 cell(s) computed, 1 reused" in capsys.readouterr().out
    records = tmp_path / "synthetic" / "records"
    named = json.loads((records / "digits_cnn__nasty__kd__digits_cnn__seed0.json").read_text())
    own = json.loads((records / "digits_cnn__nasty__kd__self=digits_cnn__seed0.json").read_text())
    assert (own["student"], own["student_arch"], own["wall_s"]) == ("self", "digits_cnn", 0.0)
    assert {k: v for k, v in own.items() if k not in ("student", "wall_s")} == {
        k: v for k, v in named.items() if k not in ("student", "wall_s")
    }


def test_the_scratch_row_has_no_single_figure_for_self_under_several_teachers(tmp_path):
    args = ["preset=tiny", "teacher=[digits_cnn,mlp]", "student=[self,mlp]", "defense=normal", "quiet=true"]
    assert main(["run", *args, f"results_dir={tmp_path}"]) == 0
    board = pd.read_csv(tmp_path / "synthetic" / "leaderboard.csv")
    scratch = board[board.defense == "scratch (no teacher)"].iloc[0]
    assert pd.isna(scratch["kd/self acc"]) and not pd.isna(scratch["kd/mlp acc"])
    rows = board.set_index("teacher")
    assert rows.loc["mlp", "kd/self acc"] == rows.loc["mlp", "kd/mlp acc"]  # the same cell under two names
