"""The ``bench`` command end to end on the tiny preset (seconds), and its handling of bad input."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from kdbench.cli import main

REQUIRED_COLUMNS = [
    "dataset",
    "defense",
    "attack",
    "student",
    "seed",
    "teacher_acc",
    "student_acc",
    "baseline_acc",
    "drop",
    "status",
    "wall_s",
]


def run_bench(*args: str) -> int:
    return main(list(args))


@pytest.fixture
def tiny(tmp_path):
    # the two-defense, one-attack slice keeps these command-line tests quick; the whole default
    # matrix runs in test_defense_matrix.py
    return ["preset=tiny", f"results_dir={tmp_path}", "quiet=true", "defense=[normal,nasty]", "attack=kd"]


def test_run_all_fills_the_matrix_and_writes_the_tables(tmp_path, tiny, capsys):
    assert run_bench("run", "all", *tiny) == 0
    folder = tmp_path / "synthetic"
    records = pd.read_csv(folder / "records.csv")
    assert list(records.columns[: len(REQUIRED_COLUMNS)]) != []  # the file parses
    assert set(REQUIRED_COLUMNS) <= set(records.columns)
    assert len(records) == 2  # the tiny preset: normal, nasty × kd × mlp × 1 seed
    assert set(records.status) == {"ok"}
    assert (records["drop"] - (records.baseline_acc - records.student_acc)).abs().max() < 1e-9
    board = pd.read_csv(folder / "leaderboard.csv")
    assert board.defense.iloc[0] == "scratch (no teacher)"
    assert set(board.defense[1:]) == {"normal", "nasty"}
    assert {"teacher_acc", "delta_vs_normal", "guaranteed_drop", "rank", "kd/mlp acc", "kd/mlp drop"} <= set(
        board.columns
    )
    markdown = (folder / "leaderboard.md").read_text()
    assert (
        "| rank | defense | teacher acc | Δ vs normal | owner cost: ECE % · KL · TV % | serving ms / 1k queries "
        "| worst case → mlp "
        "| guaranteed drop | verdict |" in markdown
    )
    assert "| defense | teacher acc | kd → mlp |" in markdown
    assert "Settings: dataset synthetic, preset tiny, teacher digits_cnn, seeds 1" in markdown
    assert "Reproduce: `bench run all preset=tiny" in markdown
    assert (folder / "tradeoff.png").exists() and (folder / "matrix.png").exists()
    out = capsys.readouterr().out
    assert "2 cell(s) computed, 0 reused" in out


def test_a_second_run_trains_nothing(tmp_path, tiny, capsys):
    assert run_bench("run", "all", *tiny) == 0
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "synthetic" / "records").iterdir()}
    capsys.readouterr()
    assert run_bench("run", "all", *tiny) == 0
    assert "0 cell(s) computed, 2 reused" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "synthetic" / "records").iterdir()}
    assert before == after


def test_changing_a_hyperparameter_recomputes_only_the_affected_cells(tmp_path, tiny, capsys):
    assert run_bench("run", "all", *tiny) == 0
    capsys.readouterr()
    assert run_bench("run", "all", *tiny, "defense.nasty.omega=0.5") == 0
    assert "1 cell(s) computed, 1 reused" in capsys.readouterr().out


def test_a_slice_runs_one_cell(tmp_path, tiny):
    assert run_bench("run", *tiny, "defense=nasty", "attack=kd", "student=mlp") == 0
    records = list((tmp_path / "synthetic" / "records").glob("*.json"))
    assert [p.name for p in records] == ["digits_cnn__nasty__kd__mlp__seed0.json"]
    record = json.loads(records[0].read_text())
    assert record["status"] == "ok" and 0 <= record["student_acc"] <= 100


def test_same_seed_same_config_gives_identical_records(tmp_path):
    common = ["preset=tiny", "quiet=true", "defense=nasty"]
    assert run_bench("run", *common, f"results_dir={tmp_path / 'a'}") == 0
    assert run_bench("run", *common, f"results_dir={tmp_path / 'b'}") == 0
    timings = ["wall_s", "serving_ms_per_1k"]
    a, b = (pd.read_csv(tmp_path / d / "synthetic" / "records.csv").drop(columns=timings) for d in "ab")
    pd.testing.assert_frame_equal(a, b)


def test_report_rebuilds_the_tables_from_records_alone(tmp_path, tiny):
    assert run_bench("run", "all", *tiny) == 0
    folder = tmp_path / "synthetic"
    expected = (folder / "leaderboard.md").read_text()
    (folder / "leaderboard.md").unlink()
    (folder / "records.csv").unlink()
    assert run_bench("report", "preset=tiny", f"results_dir={tmp_path}") == 0
    # the same board, now of every record of the folder rather than of the run's cells (here the same)
    scope = "Records shown: the cells of this run only (`bench report` rebuilds the board of every record here).\n\n"
    assert scope in expected
    assert (folder / "leaderboard.md").read_text() == expected.replace(scope, "")


def test_seeds_run_every_cell_per_seed_and_the_board_shows_mean_and_std(tmp_path):
    assert run_bench("run", "preset=tiny", "quiet=true", "seeds=2", "defense=normal", f"results_dir={tmp_path}") == 0
    records = pd.read_csv(tmp_path / "synthetic" / "records.csv")
    assert sorted(records.seed) == [0, 1]
    board = pd.read_csv(tmp_path / "synthetic" / "leaderboard.csv")
    assert board.seeds.tolist() == [2, 2]
    assert " ± " in (tmp_path / "synthetic" / "leaderboard.md").read_text()


def test_report_finds_the_datasets_under_the_results_folder_by_itself(tmp_path, tiny, capsys):
    assert run_bench("run", "all", *tiny) == 0
    (tmp_path / "synthetic" / "leaderboard.md").unlink()
    capsys.readouterr()
    assert run_bench("report", f"results_dir={tmp_path}") == 0  # no preset=tiny repeated
    assert (tmp_path / "synthetic" / "leaderboard.md").exists()
    assert f"tables rebuilt in {tmp_path / 'synthetic'}/" in capsys.readouterr().out


def test_report_on_an_empty_folder_says_what_to_run(tmp_path, capsys):
    assert run_bench("report", f"results_dir={tmp_path}") == 2
    assert "run `bench run all`" in capsys.readouterr().err


def test_list_shows_every_registry(capsys):
    assert run_bench("list") == 0
    out = capsys.readouterr().out
    for name in (
        "digits",
        "cifar10",
        "cifar100",
        "synthetic",
        "digits_cnn",
        "resnet18",
        "resnetc20",
        "timm/",
        "normal",
        "nasty",
        "kd",
        "omega=0.04",
    ):
        assert name in out


def test_list_with_overrides_shows_the_values_that_would_run(capsys):
    """The dataset's and preset's tuning, not the plugins' class defaults, and the root settings."""
    assert run_bench("list", "dataset=digits", "seeds=3", "workers=1") == 0
    out = capsys.readouterr().out
    section = out.split("what `bench run all dataset=digits seeds=3 workers=1` would run")[1]
    assert "seeds 0, 1, 2" in section and "workers 1" in section and "dataset digits" in section
    assert "attack.dafl: epochs=10," in section  # digits' value; the class default is 5
    assert "attack.deepinversion: pool_size=4096," in section
    assert "defense.normal: no options" in section
    assert "restarts (students a cell averages): dafl 4" in section
    assert run_bench("list", "attak=kd") == 2
    assert "unknown setting attak (did you mean attack?)" in capsys.readouterr().err


def test_help_is_a_command_and_says_what_all_means(capsys):
    assert run_bench("help") == 0
    out = capsys.readouterr().out
    assert out.startswith("bench run [all] [KEY=VALUE ...]")
    assert "`bench run` and `bench run all` are the same command" in out


def run_bench_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdbench.cli", *args], capture_output=True, text=True, timeout=120)


def run_bench_captured(capsys, *args: str) -> subprocess.CompletedProcess:
    """``bench ARGS`` in this process, its exit status and output as a finished process would give
    them: the cases below share one real process each (a process costs seconds of imports)."""
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as stop:  # argparse's own refusals
        code = stop.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["bench", *args], code, out.out, out.err)


def run_refused(capsys, first_case: bool, *args: str) -> subprocess.CompletedProcess:
    """The first case of a list through the real process, the others in this process."""
    return run_bench_process(*args) if first_case else run_bench_captured(capsys, *args)


def assert_refused_in_one_line(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


# Each kind of bad input once, the first through the real process and the others through the same
# entry point in this process (tests/test_config.py checks every variant of the config itself).
# A query budget <= 0 is not here: no attack takes a budget yet.
@pytest.mark.parametrize(
    "args,message",
    [
        (["dataset=bogus"], "Could not find 'dataset/bogus' Available options in 'dataset': "),
        (["student=nope"], "unknown model 'nope'; known models:"),
        (["defense=bogus"], "Could not find 'defense/bogus' Available options in 'defense': "),
        (["attack=bogus"], "Could not find 'attack/bogus' Available options in 'attack': "),
        (["defense.nasty.tau=-1"], "defense.nasty.tau must be > 0, got -1"),
        (["defense.nasty.omega=-0.1"], "defense.nasty.omega must be >= 0, got -0.1"),
        (["attack.kd.alpha=1.5"], "attack.kd.alpha must be in [0, 1], got 1.5"),
        (["train.epochs=0"], "train.epochs must be a positive integer, got 0"),
        (["seeds=0"], "seeds must be an integer from 1 to 1000 (the number of seeds), got 0"),
        (["device=tpu"], "unknown device 'tpu'; allowed: auto, cpu, cuda, cuda:N, mps"),
        (["student=timm/not_a_model_xyz"], "unknown timm model 'not_a_model_xyz'"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line_and_no_traceback(tmp_path, capsys, args, message):
    first = args == ["dataset=bogus"]
    result = run_refused(capsys, first, "run", "preset=tiny", *args, f"results_dir={tmp_path}")
    assert_refused_in_one_line(result, message)
    assert list(tmp_path.iterdir()) == []  # refused before anything ran


def test_a_missing_data_folder_is_refused_before_training(tmp_path):
    missing = tmp_path / "no-data-here"
    result = run_bench_process(
        "run", "dataset=cifar10", f"dataset.data_root={missing}", "device=cpu", f"results_dir={tmp_path / 'r'}"
    )
    assert_refused_in_one_line(result, f"dataset 'cifar10': {missing} holds neither cifar-10-batches-py/")
    assert "dataset.download=true" in result.stderr
    assert not (tmp_path / "r" / "cifar10" / "records").exists()
    assert not (tmp_path / "r" / "cifar10" / ".cache").exists()


def test_a_multirun_refuses_a_missing_data_folder_before_any_job(tmp_path, capsys):
    missing = tmp_path / "no-data-here"
    args = ["dataset=cifar10", f"dataset.data_root={missing}", "device=cpu", f"results_dir={tmp_path / 'r'}"]
    assert run_bench("run", "all", "-m", *args) == 2
    assert f"dataset 'cifar10': {missing} holds neither cifar-10-batches-py/" in capsys.readouterr().err
    assert not (tmp_path / "r" / "cifar10" / "records").exists()


def test_an_unwritable_results_folder_is_refused_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_bench_process("run", "preset=tiny", f"results_dir={blocker}")
    assert_refused_in_one_line(result, f"results folder {blocker}/synthetic is not writable")
    assert "set results_dir=<a writable folder>" in result.stderr


# Each input of issue 20 once (the first through the real process): one line naming the field and
# what it takes, exit 2, no traceback, nothing written.
@pytest.mark.parametrize(
    "args,message",
    [
        (["train.epochs=nan"], "train.epochs must be an integer, got nan"),
        (["train.epochs=1.5"], "train.epochs must be an integer, got 1.5"),
        (["train.epochs=abc"], "train.epochs must be an integer, got 'abc'"),
        (["train.batch_size=nan"], "train.batch_size must be an integer, got nan"),
        (["train.batch_size=2.5"], "train.batch_size must be an integer, got 2.5"),
        (["train.momentum=-1", "train.optimizer=sgd"], "train.momentum must be in [0, 1], got -1"),
        (["train.weight_decay=-1"], "train.weight_decay must be >= 0 and finite, got -1"),
        (["train.milestones=[abc]"], "train.milestones must be a list of integers, got ['abc']"),
        (["train.gamma=-1"], "train.gamma (the multistep factor) must be > 0 and finite, got -1"),
        (
            ["train.epochs=12", "train.schedule=multistep", "train.milestones=[80,120]"],
            "train.milestones [80, 120]: 80, 120 not before the last of train.epochs=12; allowed: milestones 1 to 11",
        ),
        (["seeds=1", "seed=5"], "seed=5 is not one of the run's seeds=0..0 (seeds=1); allowed: seed 0 to 0"),
        (["defense.nasty.tau=abc"], "defense.nasty.tau must be a finite number, got 'abc'"),
        (["attack.kd.alpha=abc"], "attack.kd.alpha must be a finite number, got 'abc'"),
        (["dataset=folder", "dataset.image_size=abc"], "dataset.image_size must be an integer or null, got 'abc'"),
        (["defense=topk", "defense.topk.k=100"], "defense.topk.k=100 exceeds the dataset's 4 classes; allowed: 1 to 4"),
        (["cache_dir={file}/cache"], "cache folder {file}/cache is not writable ({file} is a file)"),
    ],
)
def test_issue20_bad_input_is_refused_in_one_line_before_anything_is_written(tmp_path, capsys, args, message):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    results = tmp_path / "results"
    first = args == ["train.epochs=nan"]
    args = [a.format(file=blocker) for a in args]
    result = run_refused(capsys, first, "run", "preset=tiny", *args, f"results_dir={results}")
    assert_refused_in_one_line(result, message.format(file=blocker))
    assert "$VALUE" not in result.stderr
    assert sorted(tmp_path.iterdir()) == [blocker]  # nothing trained or written


def test_a_slice_after_a_full_run_reports_its_own_cells_and_bench_report_the_folder(tmp_path, capsys):
    base = ["preset=tiny", f"results_dir={tmp_path}", "quiet=true", "student=[mlp,cnn1]"]
    assert run_bench("run", "all", *base) == 0
    capsys.readouterr()
    assert run_bench("run", "all", *base, "defense=nasty", "student=mlp", "seeds=2") == 0
    printed = capsys.readouterr().out
    folder = tmp_path / "synthetic"
    board = pd.read_csv(folder / "leaderboard.csv")
    assert list(board.defense) == ["scratch (no teacher)", "nasty"] and set(board.seeds) == {2}  # the slice
    rows = [line.split() for line in printed.splitlines()]
    # no row of the normal defense in either table (its name followed by figures); the legends may name it
    assert not [r for r in rows if "normal" in r[:2] and r[2:3] and r[2][0] in "+-0123456789"]
    assert [r for r in rows if "nasty" in r[:2] and r[2:3] and r[2][0] in "+-0123456789"]
    assert "cnn1" not in printed and "did not finish" not in printed
    assert set(pd.read_csv(folder / "records.csv").student) == {"mlp"}
    assert "Records shown: the cells of this run only" in (folder / "leaderboard.md").read_text()

    assert run_bench("report", f"results_dir={tmp_path}", "dataset=synthetic") == 0
    board = pd.read_csv(folder / "leaderboard.csv").set_index("defense")
    assert set(board.index) == {"scratch (no teacher)", "normal", "nasty"}
    assert (board.loc["nasty", "seeds"], board.loc["normal", "seeds"]) == (2, 1)
    markdown = (folder / "leaderboard.md").read_text()
    assert "Seeds differ between rows: " in markdown and "Records shown: the cells of this run only" not in markdown
