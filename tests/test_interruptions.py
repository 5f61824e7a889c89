"""``bench run`` killed at any moment loses only its unfinished work, and two runs share one folder.

The interruptions are placed with the fault-injection hook (bench/faults.py): the process sends
itself SIGKILL (or SIGSTOP) at a named point, so each test stops it exactly where it means to.
Everything runs on the tiny preset: two cells (normal, nasty × kd × mlp), a few seconds each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdbench.cli import main
from kdbench.errors import ConfigError
from kdbench.faults import FAULT_ENV, fault_point, parse_fault

TINY = ["preset=tiny", "quiet=true"]
NORMAL_RECORD = "digits_cnn__normal__kd__mlp__seed0.json"
NASTY_RECORD = "digits_cnn__nasty__kd__mlp__seed0.json"


def start_bench(results: Path, *args: str, fault: str | None = None, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    env["PYTHONUNBUFFERED"] = "1"  # its progress lines reach the log file as they are printed
    if fault is not None:
        env[FAULT_ENV] = fault
    command = [sys.executable, "-m", "kdbench.cli", "run", *TINY, f"results_dir={results}", *args]
    return subprocess.Popen(command, env=env, stdout=stdout, stderr=subprocess.STDOUT)


def run_bench_killed_at(results: Path, fault: str) -> None:
    process = start_bench(results, fault=fault)
    assert process.wait(timeout=300) == -signal.SIGKILL, f"the run did not reach {fault!r}"


def records_of(folder: Path) -> dict[str, dict]:
    """The finished records of a results folder, without their wall times."""
    records = {}
    for path in sorted((folder / "records").glob("*.json")):
        record = json.loads(path.read_text())
        record.pop("wall_s")
        record["details"].pop("serving_ms_per_1k", None)  # a timing too
        record["details"].pop("command", None)  # provenance: the command line names its results_dir
        records[path.name] = record
    return records


def finished_files(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Modification time and bytes of every record and checkpoint: a recomputed one would differ."""
    paths = [*(folder / "records").glob("*.json"), *(folder / ".cache").glob("*.pt")]
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in paths}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, dict]:
    results = tmp_path_factory.mktemp("uninterrupted")
    assert main(["run", *TINY, f"results_dir={results}"]) == 0
    return records_of(results / "synthetic")


def test_a_run_killed_anywhere_resumes_to_the_records_of_an_uninterrupted_run(tmp_path, uninterrupted, capsys):
    folder = tmp_path / "synthetic"

    # during teacher training: the nasty teacher's, once the first cell is finished
    run_bench_killed_at(tmp_path, "kill:train/teacher nasty*#2")
    assert sorted(records_of(folder)) == [NORMAL_RECORD]
    assert len(list((folder / ".cache").glob("*.pt"))) == 2  # the normal teacher and the mlp baseline
    finished = finished_files(folder)

    # during the attack of the second cell: its teacher is finished and cached by then
    run_bench_killed_at(tmp_path, "kill:train/kd digits_cnn/nasty*#2")
    assert sorted(records_of(folder)) == [NORMAL_RECORD]
    assert finished_files(folder).items() >= finished.items()  # nothing finished was redone
    assert len(list((folder / ".cache").glob("*.pt"))) == 3
    finished = finished_files(folder)

    # while writing the second record: its temporary file is complete but not yet renamed
    run_bench_killed_at(tmp_path, f"kill:write/*/records/{NASTY_RECORD}")
    assert finished_files(folder) == finished
    strays = [p.name for p in (folder / "records").glob(".*.tmp")]
    assert len(strays) == 1 and strays[0].startswith(f".{NASTY_RECORD}."), strays  # never read as a record

    # while writing a table, once both cells are recorded: a half-written leaderboard is left too
    run_bench_killed_at(tmp_path, "kill:write/*/leaderboard.md")
    assert sorted(records_of(folder)) == [NASTY_RECORD, NORMAL_RECORD]
    assert [p.name for p in folder.glob(".leaderboard.md.*.tmp")], "no half-written table was left"
    assert list((folder / "records").glob(".*.tmp")) == []  # that run removed the dead writer's record stray

    capsys.readouterr()
    assert main(["run", *TINY, f"results_dir={tmp_path}"]) == 0
    assert "0 cell(s) computed, 2 reused" in capsys.readouterr().out
    assert finished_files(folder).items() >= finished.items()  # no teacher, baseline or record redone
    assert records_of(folder) == uninterrupted
    leftovers = [p for d in (folder, folder / "records", folder / ".cache") for p in d.glob(".*.tmp")]
    assert leftovers == []  # the killed writers' temporaries are gone


def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    import socket

    from kdbench.store.atomic import FOREIGN_TEMPORARY_AGE_S, HOST, atomic_write_text, remove_stale_temporaries

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = {
        "live": f".records.csv.{HOST}-{os.getpid()}.abcd1234.tmp",  # this process: a write in progress
        "dead": f".records.csv.{HOST}-{dead.pid}.abcd1234.tmp",
        "foreign-new": ".records.csv.otherhost-1.abcd1234.tmp",
        "foreign-old": ".records.csv.otherhost-2.abcd1234.tmp",
        "unnamed-old": ".records.csv.abcd1234.tmp",  # an older kdbench: no writer in the name
    }
    for name in names.values():
        (tmp_path / name).write_text("half")
    old = time.time() - FOREIGN_TEMPORARY_AGE_S - 60
    for kind in ("foreign-old", "unnamed-old"):
        os.utime(tmp_path / names[kind], (old, old))
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(names[k] for k in ("dead", "foreign-old", "unnamed-old"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[k] for k in ("live", "foreign-new"))
    assert HOST in socket.gethostname().replace(".", "_")
    atomic_write_text(tmp_path / "x.json", "{}")  # a finished write leaves no temporary of its own
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*(names[k] for k in ("live", "foreign-new")), "x.json"]
    )


def wait_until_stopped(process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status = os.waitpid(process.pid, os.WUNTRACED | os.WNOHANG)
        if pid:
            assert os.WIFSTOPPED(status), f"the run ended before its fault point (wait status {status})"
            return
        time.sleep(0.05)
    raise AssertionError("the run never reached its fault point")


def wait_for_text(path: Path, text: str, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in " ".join(path.read_text().split()):  # the console wraps long lines
            return
        assert process.poll() is None, f"the run ended without printing {text!r}: {path.read_text()}"
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} in {path.read_text()}")


def test_two_runs_on_one_folder_train_each_teacher_once(tmp_path, uninterrupted):
    results = tmp_path / "results"
    log = tmp_path / "second.log"
    # The first run freezes in the middle of training the normal teacher, holding its lock.
    first = start_bench(results, fault="stop:train/teacher normal*")
    second = None
    try:
        wait_until_stopped(first)
        # The second run is killed if it ever trains the normal teacher itself.
        with open(log, "w") as out:
            second = start_bench(results, "quiet=false", fault="kill:train/teacher normal*", stdout=out)
        # (it waits on the claim of the cell that needs the teacher, or on the teacher's own lock)
        wait_for_text(log, "waiting for another process to finish", second)
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=300) == 0
        assert second.wait(timeout=300) == 0, log.read_text()
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert records_of(results / "synthetic") == uninterrupted


def test_a_fault_spec_names_a_signal_a_pattern_and_which_hit():
    assert parse_fault("kill:train/kd *#3") == ("kill", "train/kd *", 3)
    assert parse_fault("stop:write/*") == ("stop", "write/*", 1)
    assert parse_fault("hold:start/worker") == ("hold", "start/worker", 1)
    assert parse_fault("full:write/*.pt#2") == ("full", "write/*.pt", 2)
    for bad in ("explode:train/*", "kill:", "kill:train/*#0", "kill:train/*#x", "train/*"):
        with pytest.raises(ConfigError, match="malformed; expected <action>:<glob>"):
            parse_fault(bad)


def test_a_fault_point_signals_only_at_the_chosen_hit_of_a_matching_point(monkeypatch):
    import kdbench.faults

    sent = []
    monkeypatch.setattr(kdbench.faults.os, "kill", lambda pid, signum: sent.append((pid, signum)))
    monkeypatch.setattr(kdbench.faults, "_hits", {})
    monkeypatch.delenv(FAULT_ENV, raising=False)
    fault_point("train/kd x")
    monkeypatch.setenv(FAULT_ENV, "kill:train/kd *#2")
    for name in ("train/kd a", "train/scratch mlp", "train/kd b", "train/kd c"):
        fault_point(name)
    assert sent == [(os.getpid(), signal.SIGKILL)]  # at "train/kd b", the second match, only


def computed_count(log: Path) -> int:
    """N of the summary line "N cell(s) computed, M reused" of a finished run's output."""
    (line,) = [line for line in log.read_text().splitlines() if " cell(s) computed, " in line]
    return int(line.split(" cell(s) computed, ")[0].split()[-1])


def test_two_concurrent_runs_on_one_folder_compute_each_cell_once_in_total(tmp_path, uninterrupted):
    results = tmp_path / "results"
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    runs: list[subprocess.Popen] = []
    try:
        # The first run freezes while distilling the first cell's student, holding that cell's claim.
        with open(logs[0], "w") as out:
            runs.append(start_bench(results, fault="stop:train/kd digits_cnn/normal*", stdout=out))
        wait_until_stopped(runs[0])
        with open(logs[1], "w") as out:
            runs.append(start_bench(results, "quiet=false", stdout=out))
        wait_for_text(logs[1], "waiting for another process to finish computing cell digits_cnn__normal__kd", runs[1])
        runs[0].send_signal(signal.SIGCONT)
        for run, log in zip(runs, logs, strict=True):
            assert run.wait(timeout=300) == 0, log.read_text()
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
    assert computed_count(logs[0]) + computed_count(logs[1]) == 2  # two cells, each computed once
    assert "computed by another run on this folder, reused" in " ".join(logs[1].read_text().split())
    assert records_of(results / "synthetic") == uninterrupted
