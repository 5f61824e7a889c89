"""Progress a person can follow: timestamped lines and heartbeats in a log, what each worker trains
on a terminal, and the same lines in every multirun job's log."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from kdbench.progress import HEARTBEAT_WIDTH, LOG_WIDTH, Progress, cell_kind, duration, network_kind

STAMP = r"^\d\d:\d\d:\d\d "


def bench_to_file(tmp_path: Path, *overrides: str) -> tuple[int, str]:
    """``bench run`` in its own process with stdout and stderr redirected to a file, as in a log."""
    log = tmp_path / "run.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        code = subprocess.run(
            [sys.executable, "-m", "kdbench.cli", "run", "all", "preset=tiny", f"results_dir={tmp_path}", *overrides],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=300,
        ).returncode
    return code, log.read_text()


def test_a_redirected_run_logs_each_network_and_cell_with_a_timestamp_and_heartbeats(tmp_path):
    # more epochs than the preset's two, so that heartbeats (every 0.05 s) fall during training
    code, log = bench_to_file(tmp_path, "heartbeat_s=0.05", "train.epochs=30")
    assert code == 0, log
    lines = log.splitlines()
    assert not any("\x1b[" in line for line in lines)  # no terminal escapes in a file
    cells = [line for line in lines if re.match(STAMP + r"\[\d/2\] .*: ok, student acc \d+\.\d\d \(drop [+-]", line)]
    assert len(cells) == 2, log
    assert re.search(
        STAMP + r"\[1/2\] digits_cnn/normal × kd → mlp \(seed 0\): ok, student acc .*, \d+\.\d s$", log, re.M
    )
    networks = [line for line in lines if re.match(STAMP + r"network ", line)]
    assert any("network teacher digits_cnn/normal (seed 0): ok, acc " in line for line in networks), log
    assert any("network teacher digits_cnn/nasty (seed 0): ok, acc " in line for line in networks), log
    assert any("network scratch mlp (seed 0): ok, acc " in line for line in networks), log
    beats = [line for line in lines if re.match(STAMP + "heartbeat: ", line)]
    assert beats, log
    assert any(re.search(r"networks and cells done, (about .* left|time left: estimating)", b) for b in beats)
    assert any(re.search(r"training .* · epoch \d+/30", b) for b in beats), beats


def test_the_heartbeat_names_what_trains_its_epoch_and_the_time_left():
    out = io.StringIO()
    progress = Progress(Console(file=out, width=80), live=False, heartbeat_s=3600)
    progress.matrix([network_kind("teacher", "digits_cnn", "nasty"), *[cell_kind("kd", "mlp")] * 3])
    assert progress.heartbeat_line().startswith("heartbeat: 0/4 networks and cells done, time left: estimating; ")
    with progress.task("teacher nasty digits_cnn", total=30, epochs=3) as advance:
        advance(10)  # the first epoch's ten steps: now in the second
        line = progress.heartbeat_line()
        assert "training teacher nasty digits_cnn · epoch 2/3" in line
        progress.unit_done(network_kind("teacher", "digits_cnn", "nasty"), 2.0)
        # the networks alone say little of the cells' pace
        assert "1/4 networks and cells done, time left: estimating" in progress.heartbeat_line()
        progress.unit_done(cell_kind("kd", "mlp"), 1.0)
        assert "2/4 networks and cells done, about " in progress.heartbeat_line()
    assert "training nothing right now" in progress.heartbeat_line()
    progress.log("[1/4] a cell: ok")
    assert re.match(STAMP + r"\[1/4\] a cell: ok\n$", out.getvalue())


def test_workers_report_what_each_trains_to_the_parent_on_a_terminal():
    progress = Progress(Console(file=io.StringIO(), width=80, force_terminal=True), live=True)
    with progress.session():
        progress.matrix([cell_kind("kd", "mlp")] * 5, parallel=2)
        progress.worker_event(("train", "worker 1", "teacher nasty digits_cnn", 3, 40))
        progress.worker_event(("train", "worker 2", "scratch mlp", 1, 40))
        descriptions = [task.description for task in progress._bars.tasks]
        assert "worker 1: teacher nasty digits_cnn · epoch 3/40" in descriptions
        assert "worker 2: scratch mlp · epoch 1/40" in descriptions
        assert "worker 1: teacher nasty digits_cnn · epoch 3/40" in progress.heartbeat_line()
        progress.unit_done(cell_kind("kd", "mlp"), 1.0)
        matrix = next(task for task in progress._bars.tasks if task.description == "matrix")
        assert matrix.completed == 1 and matrix.fields["left"].startswith("about ")
        progress.worker_event(("idle", "worker 1"))
        descriptions = [task.description for task in progress._bars.tasks]
        assert "worker 1: waiting for work" in descriptions


class Clock:
    """time.perf_counter for the estimate, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_time_left_counts_each_kind_of_unit_at_its_measured_cost(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("kdbench.progress.time.perf_counter", clock)
    progress = Progress(Console(file=io.StringIO()), quiet=True)
    slow, fast = cell_kind("deepinversion", "mlp"), cell_kind("kd", "mlp")
    teacher = network_kind("teacher", "digits_cnn", "normal")
    progress.matrix([teacher, slow, slow, fast, fast, fast, fast], parallel=1)
    assert progress.time_left() is None  # nothing measured yet
    clock.now += 10
    progress.unit_done(teacher, 10.0)
    assert progress.time_left() is None  # no cell measured yet
    clock.now += 20
    progress.unit_done(slow, 20.0)
    # the slow kind at its cost, the fast one at the mean cell (20 s): 20 + 4 × 20
    assert progress.time_left() == pytest.approx(100.0)
    clock.now += 20
    progress.unit_done(slow, 20.0)
    clock.now += 1
    progress.unit_done(fast, 1.0)
    assert progress.time_left() == pytest.approx(3.0)  # three fast ones left, at 1 s each
    # with two workers the wall time runs at half the summed cost: the pace follows it
    progress.matrix([slow, slow, fast, fast], parallel=2)
    clock.now += 10
    progress.unit_done(slow, 20.0)
    progress.unit_done(slow, 20.0)
    assert progress.time_left() == pytest.approx(10.0 * 40 / 40)  # the fast ones cost like the slow, unmeasured
    clock.now += 0.5
    progress.unit_done(fast, 1.0)
    assert progress.time_left() == pytest.approx(10.5 * 1 / 41)


def test_a_kind_not_measured_yet_counts_at_its_earlier_cost_at_this_runs_pace(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("kdbench.progress.time.perf_counter", clock)
    progress = Progress(Console(file=io.StringIO()), quiet=True)
    slow, fast = cell_kind("deepinversion", "mlp"), cell_kind("kd", "mlp")
    progress.matrix([slow, slow, fast, fast])
    progress.expect({slow: 10.0, fast: 1.0})  # an earlier run, on a machine twice as fast
    clock.now += 20
    progress.unit_done(slow, 20.0)
    # the fast kind at its earlier cost × 2 (this machine's pace on the kind measured in both)
    assert progress.time_left() == pytest.approx(20.0 + 2 * 2.0)
    clock.now += 20
    progress.unit_done(slow, 20.0)
    clock.now += 3
    progress.unit_done(fast, 3.0)  # measured now: its own cost counts, not the earlier one
    assert progress.time_left() == pytest.approx(43.0 * 3.0 / 43.0)


def test_a_heartbeat_and_a_log_line_fit_160_columns():
    out = io.StringIO()
    progress = Progress(Console(file=out, width=80), live=False, heartbeat_s=3600)
    progress.matrix([cell_kind("kd", "mlp")] * 77)
    progress.working([f"digits_cnn__reverse_sigmoid__deepinversion__mlp__seed{i}" for i in range(4)])
    for worker in (1, 2):
        progress.worker_event(
            ("train", f"worker {worker}", "deepinversion digits_cnn/reverse_sigmoid→mlp: synthesis", 3, 80)
        )
    line = progress.heartbeat_line()
    assert line.startswith("heartbeat: 0/77 networks and cells done, time left: estimating; training worker 1: ")
    assert len(line) <= HEARTBEAT_WIDTH
    progress.log(line)
    progress.log("a reason " * 40)
    assert max(len(line) for line in out.getvalue().splitlines()) <= LOG_WIDTH


def test_durations_read_as_a_person_says_them():
    assert [duration(s) for s in (4.4, 75, 4000)] == ["4 s", "1 min 15 s", "1 h 06 min"]


@pytest.mark.slow
def test_a_redirected_run_on_two_workers_logs_every_network_and_cell(tmp_path):
    code, log = bench_to_file(
        tmp_path, "heartbeat_s=0.2", "workers=2", "defense=[normal,nasty]", "attack=kd", "student=[mlp,cnn1]"
    )
    assert code == 0, log
    assert len(re.findall(STAMP + r"\[\d/4\] .*: ok, student acc ", log, re.M)) == 4, log
    # the workers' own lines reach the parent's log
    for network in ("teacher digits_cnn/normal", "teacher digits_cnn/nasty", "scratch mlp", "scratch cnn1"):
        assert re.search(STAMP + f"network {network} \\(seed 0\\): ok, acc ", log, re.M), log
    assert re.search(STAMP + r"heartbeat: \d+/\d+ networks and cells done, .*; (training|loading) ", log, re.M), log


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "heartbeat_s must be a positive number of seconds, got 0"),
        ("-1", "heartbeat_s must be a positive number of seconds, got -1"),
        ("soon", "heartbeat_s must be a finite number, got 'soon'"),
    ],
)
def test_a_bad_heartbeat_interval_is_refused_naming_it(value, message):
    from kdbench.config.compose import compose_config
    from kdbench.config.plan import plan_from_config
    from kdbench.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        plan_from_config(compose_config(["preset=tiny", f"heartbeat_s={value}"]))


def test_a_network_trained_on_the_way_to_another_is_logged_too(tmp_path, capsys):
    """The nasty teacher alone: its normal adversary trains inside its build, and says so."""
    from kdbench.cli import main

    assert main(["run", "all", "preset=tiny", "defense=nasty", f"results_dir={tmp_path}", "reference_dir=null"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"network teacher digits_cnn/normal \(seed 0\): trained for nasty, \d+\.\d s", out), out
    assert "network teacher digits_cnn/nasty (seed 0): ok, acc " in out, out


def test_every_bar_keeps_one_line_of_an_80_column_terminal():
    console = Console(file=io.StringIO(), width=80, force_terminal=True)
    progress = Progress(console, live=True)
    with progress.session():
        progress.matrix([cell_kind("deepinversion", "mlp")] * 77, parallel=2)
        progress.unit_done(cell_kind("deepinversion", "mlp"), 12.0)
        for worker in (1, 2):
            progress.worker_event(
                ("train", f"worker {worker}", "deepinversion digits_cnn/reverse_sigmoid→mlp: distillation", 31, 80)
            )
        lines = console.render_lines(progress._bars.get_renderable(), pad=False)
        text = ["".join(segment.text for segment in line).rstrip() for line in lines]
    assert len(text) == 3, text  # the matrix and one per worker: none wraps
    assert all(len(line) <= 80 for line in text), text
    assert "left" in text[0] and "1/77" in text[0]
