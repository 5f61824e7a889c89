"""The published figures beside the measured ones in a paper preset's leaderboard."""

import pandas as pd
import pytest

from kdbench.config.compose import compose_config
from kdbench.config.plan import plan_from_config
from kdbench.errors import ConfigError
from kdbench.report.paper import check_paper_table, paper_note, paper_tables, published, with_paper_figures
from kdbench.report.tables import matrix_table


def board() -> pd.DataFrame:
    """A leaderboard frame with report.leaderboard_frame's columns (one seed: no standard deviations)."""
    rows = [
        ("", "scratch (no teacher)", None, 85.0, None),
        ("resnet18", "normal", 95.5, 88.0, -3.0),
        ("resnet18", "nasty", 94.0, 80.0, 5.0),
        ("resnet34", "nasty", 94.0, 80.0, 5.0),
    ]
    frame = pd.DataFrame(rows, columns=["teacher", "defense", "teacher_acc", "kd/cnn acc", "kd/cnn drop"])
    frame["kd/bogus acc"], frame["kd/bogus drop"] = 50.0, 1.0  # a student the paper does not have
    stds = {f"{c}_std": None for c in ("teacher_acc", "kd/cnn acc", "kd/cnn drop", "kd/bogus acc", "kd/bogus drop")}
    return frame.assign(**stds, **{"kd/cnn status": "ok", "kd/bogus status": "ok"})


def test_each_published_figure_lands_beside_its_measured_one_with_the_difference():
    out = with_paper_figures(board(), "nasty_teacher_cifar10").set_index(["teacher", "defense"])
    # Table 1: scratch CNN 86.64; normal ResNet-18 95.13, its CNN 87.75; nasty 94.56, its CNN 82.46
    scratch = out.loc[("", "scratch (no teacher)"), ["kd/cnn acc paper", "kd/cnn acc paper_delta"]]
    assert scratch.tolist() == pytest.approx([86.64, 85.0 - 86.64])
    normal = out.loc[("resnet18", "normal"), ["teacher_acc paper", "teacher_acc paper_delta"]]
    assert normal.tolist() == pytest.approx([95.13, 95.5 - 95.13])
    assert out.loc[("resnet18", "normal"), "kd/cnn acc paper_delta"] == pytest.approx(88.0 - 87.75)
    assert out.loc[("resnet18", "nasty"), "kd/cnn acc paper_delta"] == pytest.approx(80.0 - 82.46)
    # nothing published: no figure (another teacher, another student)
    assert out.loc[("resnet34", "nasty"), ["teacher_acc paper", "kd/cnn acc paper"]].isna().all()
    assert "kd/bogus acc paper" not in out


def test_the_matrix_cell_shows_measured_drop_paper_and_difference():
    out = with_paper_figures(board(), "nasty_teacher_cifar10")
    nasty = out.iloc[2]
    assert paper_note(nasty, "kd/cnn acc") == " · paper 82.46, Δ -2.46"
    assert paper_note(out.iloc[3], "kd/cnn acc") == ""
    lines = matrix_table(out)
    assert lines[0] == ["defense", "teacher acc", "kd → cnn", "kd → bogus"]
    nasty_cells = ["94.00 · paper 94.56, Δ -0.56", "80.00 (+5.00) · paper 82.46, Δ -2.46", "50.00 (+1.00)"]
    assert lines[3] == ["resnet18 nasty", *nasty_cells]


def test_the_tables_hold_the_transcribed_figures_once_each():
    figures = published()
    assert paper_tables() == ["nasty_teacher_cifar10", "nasty_teacher_cifar100"]
    assert not figures.duplicated(["table", "teacher", "defense", "attack", "student"]).any()
    # 5 rows of 5 figures in Table 1 less its 1 empty cell; Table 2's ResNet-18 and ResNet-50 rows
    assert figures.groupby("table").size().to_dict() == {"nasty_teacher_cifar10": 14, "nasty_teacher_cifar100": 23}
    assert figures.accuracy.between(0, 100).all()


def test_an_unknown_paper_table_is_refused_before_anything_runs():
    with pytest.raises(ConfigError, match=r"unknown paper table 'bogus'; known: nasty_teacher_cifar10, nasty_"):
        check_paper_table("bogus")
    with pytest.raises(ConfigError, match="unknown paper table 'bogus'"):
        plan_from_config(compose_config(["paper=bogus"]))


def test_a_run_with_other_settings_shows_the_published_figure_without_a_difference():
    out = with_paper_figures(board(), "nasty_teacher_cifar10", comparable=False)
    assert not any(c.endswith("paper_delta") for c in out.columns)
    assert paper_note(out.iloc[2], "kd/cnn acc") == " · paper 82.46 (other settings)"
    assert matrix_table(out)[3][1] == "94.00 · paper 94.56 (other settings)"


def plan_of(*overrides: str):
    return plan_from_config(compose_config(["preset=paper_cifar10", "device=cpu", *overrides]))


def test_the_settings_a_paper_figure_depends_on_are_its_differences(tmp_path):
    assert plan_of().paper_differences == []
    assert plan_of("seeds=2", "student=cnn", "data_root=/elsewhere").paper_differences == []  # the same experiment
    changed = plan_of("train.epochs=1", "train.schedule=cosine", "dataset=folder", f"data_root={tmp_path}")
    assert changed.paper_differences == ["dataset=folder", "train.epochs=1", "train.schedule=cosine"]
    assert plan_of("defense.nasty.omega=0.1").paper_differences == ["defense.nasty.omega=0.1"]


def test_train_epochs_on_the_command_line_reaches_the_per_model_recipes():
    """paper_cifar10 trains its CNN 100 epochs with a recipe of its own: train.epochs=1 shortens it too,
    unless the command line gives the CNN's epochs as well."""
    assert plan_of().recipe_for("cnn").epochs == 100
    short = plan_of("train.epochs=1", "train.schedule=cosine")
    assert (short.recipe_for("cnn").epochs, short.recipe_for("resnet18").epochs) == (1, 1)
    assert short.recipe_for("cnn").optimizer == "adam"  # only the epochs follow
    both = plan_of("train.epochs=1", "train.schedule=cosine", "train_by_model.cnn.epochs=3")
    assert both.recipe_for("cnn").epochs == 3


def test_one_epoch_under_the_papers_milestones_is_refused_with_what_is_allowed():
    with pytest.raises(ConfigError) as err:
        plan_of("train.epochs=1")
    message = str(err.value)
    assert "no milestone fits in train.epochs=1: set train.schedule=cosine or constant" in message
    assert "epochs 1 to 0" not in message
