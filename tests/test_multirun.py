"""`bench run all -m`: the matrix as a Hydra multirun, one job per cell, with two launchers."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kdbench.cli import main
from kdbench.config.compose import compose_config
from kdbench.config.plan import plan_from_config
from kdbench.matrix.multirun import sweep_overrides


def test_the_sweep_has_one_job_per_cell_and_keeps_the_other_overrides():
    overrides = ["preset=tiny", "defense=[normal,nasty]", "student=mlp", "seeds=2", "defense.nasty.omega=0.1"]
    plan = plan_from_config(compose_config(overrides))
    assert sweep_overrides(plan, overrides) == [
        "preset=tiny",
        "seeds=2",
        "defense.nasty.omega=0.1",
        "teacher=digits_cnn",
        "defense=normal,nasty",
        "attack=kd",
        "student=mlp",
        "seed=0,1",
    ]


def test_a_job_runs_only_its_seed():
    plan = plan_from_config(compose_config(["preset=tiny", "seeds=3", "seed=2"]))
    assert {c.seed for c in plan.cells} == {2}


# submitit's local executor runs each job the way SLURM would: pickled, submitted, in a process of
# its own, its result read back from the shared folder. Its sweeps run as a `bench` process, as a
# user runs them: the pickled jobs carry the registries, which other tests here fill with plugins
# that only this test process can import.
SUBMITIT_LOCAL = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``bench ARGS`` as a process of its own."""
    command = [sys.executable, "-m", "kdbench.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


@pytest.mark.parametrize(
    "launcher",
    [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], SUBMITIT_LOCAL],
    ids=["basic", "joblib", "submitit_local"],
)
def test_a_two_cell_multirun_writes_both_records_and_the_leaderboard(tmp_path, launcher):
    command = ["run", "all", "-m", "preset=tiny", f"results_dir={tmp_path}", *launcher]
    if launcher is SUBMITIT_LOCAL:
        done = bench(*command)
        assert done.returncode == 0, done.stderr[-3000:]
    else:
        assert main(command) == 0
    folder = tmp_path / "synthetic"
    records = pd.read_csv(folder / "records.csv")
    assert sorted(records.defense) == ["nasty", "normal"] and set(records.status) == {"ok"}
    board = pd.read_csv(folder / "leaderboard.csv")
    assert {"normal", "nasty"} <= set(board.defense)
    assert "Reproduce: `bench run all -m preset=tiny" in (folder / "leaderboard.md").read_text()
    assert len(list((tmp_path / ".multirun").glob("*/[0-9]"))) == 2  # Hydra's own per-job folders
    # each job's log holds its progress lines, as a redirected `bench run` prints them
    logs = sorted((tmp_path / ".multirun").glob("*/[0-9]/*.log"))
    assert len(logs) == 2
    texts = [log.read_text() for log in logs]
    for text in texts:
        assert re.search(r"\[1/1\] digits_cnn/(normal|nasty) × kd → mlp \(seed 0\): ok, student acc ", text), text
        assert "1 of 1 cells to compute" in text, text
    # each teacher is trained once and logged by the job that trains it: which job trains the normal
    # one depends on which gets there first (the nasty teacher trains against it)
    both = "".join(texts)
    assert both.count("network teacher digits_cnn/nasty (seed 0): ok") == 1, both
    normal = re.findall(r"network teacher digits_cnn/normal \(seed 0\): (ok|trained for nasty)", both)
    assert len(normal) == 1, both


def records_of(results: Path) -> dict[str, dict]:
    found = {}
    for path in sorted((results / "synthetic" / "records").glob("*.json")):
        record = json.loads(path.read_text())
        record.pop("wall_s")
        record["details"].pop("serving_ms_per_1k", None)  # a timing too
        record["details"].pop("command", None)  # names the results folder (a job records none)
        found[path.name] = record
    return found


MATRIX = ["preset=tiny", "quiet=true", "student=[mlp,cnn1]", "threads=1"]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> dict[str, dict]:
    results = tmp_path_factory.mktemp("plain")
    assert main(["run", "all", *MATRIX, f"results_dir={results}", "workers=1"]) == 0
    return records_of(results)


def test_a_submitit_multirun_gives_the_records_of_a_plain_run(tmp_path, plain_run):
    done = bench("run", "all", "-m", *MATRIX, f"results_dir={tmp_path}", *SUBMITIT_LOCAL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert records_of(tmp_path) == plain_run
    assert len(list((tmp_path / "synthetic" / ".cache").glob("*.pt"))) == 4  # normal, nasty, mlp, cnn1: once each


def test_a_submitit_job_killed_mid_cell_stops_the_sweep_in_one_line_and_the_same_command_continues(tmp_path, plain_run):
    """What a preempted job leaves: the records of the cells that finished, the networks trained,
    and no record of its own cell; the same command, rerun (a requeue), computes what is missing."""
    command = ["run", "all", "-m", *MATRIX, f"results_dir={tmp_path}", *SUBMITIT_LOCAL]
    done = bench(*command, env={"KDBENCH_FAULT": "kill:train/kd digits_cnn/nasty*"})  # inherited by every job
    assert done.returncode == 1, done.stderr[-3000:]
    (line,) = done.stderr.splitlines()
    assert line.startswith("failed: a multirun job did not finish (Job ")
    assert line.endswith("finished cells are saved, rerun the same command to continue")
    finished = records_of(tmp_path)
    assert all(plain_run[name] == record for name, record in finished.items())
    assert not any("__nasty__" in name for name in finished)  # the killed jobs wrote nothing

    done = bench(*command)
    assert done.returncode == 0, done.stderr[-3000:]
    assert records_of(tmp_path) == plain_run
