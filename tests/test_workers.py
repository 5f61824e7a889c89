"""Cells on several worker processes: the same records as one process, safe to kill, clear settings.

The runs use the tiny preset (seconds of training) widened to two defenses, two attacks and two
students, so that two workers have work to share; worker processes start in a few seconds each.
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
import torch

from kdbench.cli import main
from kdbench.config.devices import available_cores, resolve_workers
from kdbench.config.plan import Cell
from kdbench.errors import ConfigError
from kdbench.faults import FAULT_ENV
from kdbench.matrix.workers import Network, build_order
from kdbench.store.keys import cell_spec, network_identity

# the thread count each of two workers gets on this machine, pinned so that workers=1 trains alike
THREADS = f"threads={max(1, available_cores() // 2)}"
MATRIX = ["preset=tiny", "quiet=true", "defense=[normal,nasty]", "attack=[kd,blackbox]", "student=[mlp,cnn1]", THREADS]


def records_of(folder: Path) -> dict[str, dict]:
    records = {}
    for path in sorted((folder / "synthetic" / "records").glob("*.json")):
        record = json.loads(path.read_text())
        record.pop("wall_s")
        record["details"].pop("serving_ms_per_1k", None)  # a timing too
        record["details"].pop("command", None)  # provenance: the command line names the worker count
        records[path.name] = record
    return records


@pytest.fixture(scope="module")
def in_one_process(tmp_path_factory) -> dict[str, dict]:
    """The matrix in this process, with the thread count each of two workers gets (``threads``)."""
    results = tmp_path_factory.mktemp("sequential")
    threads = torch.get_num_threads()
    assert main(["run", *MATRIX, f"results_dir={results}", "workers=1"]) == 0
    assert torch.get_num_threads() == threads  # the run's thread count does not leak into the caller
    return records_of(results)


def test_two_workers_write_the_records_of_one_process(tmp_path, in_one_process):
    assert main(["run", *MATRIX, f"results_dir={tmp_path}", "workers=2"]) == 0
    assert len(in_one_process) == 8
    assert records_of(tmp_path) == in_one_process
    assert {r["details"]["threads"] for r in in_one_process.values()} == {max(1, available_cores() // 2)}
    settings = json.loads((tmp_path / "synthetic" / "run.json").read_text())
    assert settings["workers"] == 2 and settings["threads"] == max(1, available_cores() // 2)


def test_the_thread_count_is_part_of_every_cpu_key_and_follows_the_workers_by_default(monkeypatch):
    import kdbench.config.devices
    from kdbench.config.compose import compose_config
    from kdbench.config.plan import plan_from_config

    def plan(*overrides):
        return plan_from_config(compose_config(["preset=tiny", "device=cpu", *overrides]))

    monkeypatch.setattr(kdbench.config.devices, "available_cores", lambda: 4)
    one, two = plan("workers=1"), plan("workers=2")
    assert (one.threads, two.threads, plan("workers=8").threads) == (4, 2, 1)
    cell = one.cells[0]
    # another thread count trains other bits: nothing trained with one is reused under the other
    assert cell_spec(one, cell) != cell_spec(two, cell)
    assert network_identity(one, "mlp", 0) != network_identity(two, "mlp", 0)
    # pinned, the worker count no longer matters
    assert cell_spec(plan("workers=1", "threads=2"), cell) == cell_spec(plan("workers=2", "threads=2"), cell)
    with pytest.raises(ConfigError, match=r"threads must be an integer from 1 to 256, or auto, got 0"):
        plan("threads=0")


def start_bench(results: Path, *, fault: str | None = None, marker: str = "") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    env["KDBENCH_TEST_MARKER"] = marker  # inherited by the workers: finds them if any outlive the run
    if fault is not None:
        env[FAULT_ENV] = fault
    command = [sys.executable, "-m", "kdbench.cli", "run", *MATRIX, f"results_dir={results}", "workers=2"]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_reaches_it
    )


def _ctrl_c_reaches_it() -> None:
    """SIGINT as a terminal delivers it: a test process started in the background by a shell (a CI
    script run with `&`) ignores SIGINT, and its children would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def processes_marked(marker: str) -> list[int]:
    """PIDs of live processes whose environment carries ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"KDBENCH_TEST_MARKER={marker}".encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_a_killed_worker_stops_the_run_with_a_clear_error_and_a_rerun_completes(tmp_path, in_one_process):
    # the worker that trains the nasty teacher kills itself at its first step
    process = start_bench(tmp_path, fault="kill:train/teacher nasty*")
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr
    assert "a worker process died (killed or out of memory) while computing:" in stderr
    assert "rerun the same command to continue" in stderr
    assert main(["run", *MATRIX, f"results_dir={tmp_path}", "workers=2"]) == 0
    assert records_of(tmp_path) == in_one_process


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds leftover workers through /proc")
def test_ctrl_c_ends_the_workers_at_once_and_keeps_finished_cells(tmp_path, in_one_process):
    marker = f"ctrl-c-{os.getpid()}"
    # a worker's second record is never written: the run cannot end before Ctrl-C reaches it
    process = start_bench(tmp_path, marker=marker, fault="hold:write/*/records/*.json#2")
    records = tmp_path / "synthetic" / "records"
    deadline = time.monotonic() + 300
    while not list(records.glob("*.json")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        for pid in processes_marked(marker):  # the held worker would sleep for good
            os.kill(pid, signal.SIGKILL)
        raise
    assert process.returncode == 130, stderr
    assert "interrupted: finished cells and trained teachers are saved" in stderr
    time.sleep(1)
    assert processes_marked(marker) == []  # no worker goes on computing behind the user's back
    finished = records_of(tmp_path)
    assert finished and all(in_one_process[name] == record for name, record in finished.items())
    assert main(["run", *MATRIX, f"results_dir={tmp_path}", "workers=2"]) == 0
    assert records_of(tmp_path) == in_one_process


def wait_for_checkpoint(results: Path, process: subprocess.Popen) -> None:
    """Until the workers have cached a first network: they are mid-run, with more to train."""
    deadline = time.monotonic() + 300
    while not list((results / "synthetic" / ".cache").glob("*.pt")):
        assert process.poll() is None, "the run ended before it could be stopped"
        assert time.monotonic() < deadline, "no network was cached within 300 s"
        time.sleep(0.05)


def wait_until_none_alive(marker: str, timeout: float = 30) -> list[int]:
    """The processes of the run still alive after ``timeout`` seconds (none, when they all end)."""
    deadline = time.monotonic() + timeout
    while (alive := processes_marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds leftover workers through /proc")
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_or_terminated_parent_leaves_no_process_behind_and_a_rerun_completes(tmp_path, in_one_process, signum):
    marker = f"parent-{signum.name}-{os.getpid()}"
    process = start_bench(tmp_path, marker=marker)
    wait_for_checkpoint(tmp_path, process)
    assert len(processes_marked(marker)) >= 3  # the parent, its two workers (and the resource tracker)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    if signum == signal.SIGTERM:  # a handler ends the workers and says what is kept
        assert process.returncode == 143, stderr
        assert "terminated: finished cells and trained teachers are saved" in stderr
    else:
        assert process.returncode == -signal.SIGKILL
    # SIGKILL runs no handler: each worker notices its parent is gone; the resource tracker follows
    assert wait_until_none_alive(marker) == []
    finished = records_of(tmp_path)
    assert all(in_one_process[name] == record for name, record in finished.items())
    assert main(["run", *MATRIX, f"results_dir={tmp_path}", "workers=2"]) == 0
    assert records_of(tmp_path) == in_one_process


def spawned_workers(marker: str) -> list[int]:
    """PIDs of the run's worker processes (spawned by multiprocessing, not its resource tracker)."""
    workers = []
    for pid in processes_marked(marker):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"--multiprocessing-fork" in command and b"resource_tracker" not in command:
            workers.append(pid)
    return workers


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (by SIGSTOP)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds leftover workers through /proc")
def test_a_parent_killed_while_its_workers_start_leaves_no_process_behind(tmp_path):
    """Killed while its workers are starting, before a worker runs any code of the pool (each is held
    there, frozen): the kernel ends them with it."""
    marker = f"start-up-{os.getpid()}"
    process = start_bench(tmp_path, marker=marker, fault="stop:start/worker")
    deadline = time.monotonic() + 120
    while len(held := [pid for pid in spawned_workers(marker) if stopped(pid)]) < 2:
        assert process.poll() is None and time.monotonic() < deadline, "no two workers reached their start"
        time.sleep(0.01)
    process.kill()
    process.wait(timeout=60)  # not its stderr: a worker left behind would hold it open
    process.stderr.close()
    alive = wait_until_none_alive(marker, timeout=1)
    for pid in alive:  # not to leave them behind in the test machine either
        os.kill(pid, signal.SIGKILL)
    assert alive == [], f"{len(held)} workers were held at their start"


def test_networks_are_built_root_teacher_first_then_baselines_then_the_other_teachers():
    cells = [
        Cell("digits_cnn", defense, attack, student, 0)
        for defense in ("normal", "nasty", "topk")
        for attack in ("kd", "dafl")
        for student in ("mlp", "cnn1")
    ]
    assert build_order(cells) == [
        Network("teacher", "digits_cnn", "normal", 0),
        Network("baseline", "mlp", "", 0),
        Network("baseline", "cnn1", "", 0),
        Network("teacher", "digits_cnn", "nasty", 0),
        Network("teacher", "digits_cnn", "topk", 0),
    ]


def test_workers_auto_is_one_per_core_on_the_cpu_and_one_per_gpu_on_cuda():
    assert resolve_workers("auto", torch.device("cpu")) == min(available_cores(), 16)
    assert resolve_workers("auto", torch.device("cuda", 1)) == 1  # a chosen GPU: one worker on it
    assert resolve_workers("auto", torch.device("mps")) == 1
    assert resolve_workers(3, torch.device("cpu")) == 3


@pytest.mark.parametrize("value", [0, -2, "many", True, 1.5])
def test_a_bad_worker_count_is_refused_naming_what_is_allowed(value):
    with pytest.raises(ConfigError, match=r"workers must be an integer from 1 to 256, or auto, got"):
        resolve_workers(value, torch.device("cpu"))


def test_a_bad_worker_count_on_the_command_line_is_refused_before_training(tmp_path, capsys):
    assert main(["run", "preset=tiny", f"results_dir={tmp_path}", "workers=0"]) == 2
    assert "error: workers must be an integer from 1 to 256, or auto, got 0" in capsys.readouterr().err
    assert not (tmp_path / "synthetic" / "records").exists()


def test_the_costliest_attack_measured_so_far_goes_first_and_an_unmeasured_one_before_it():
    from kdbench.matrix.workers import AttackCost

    cost = AttackCost()
    cost.add("kd", 1.0)
    cost.add("kd", 3.0)
    cost.add("deepinversion", 9.0)
    cost.add("blackbox", None)  # reused from another run: not a measurement
    assert cost.estimate("kd") == 2.0 and cost.estimate("deepinversion") == 9.0
    assert cost.estimate("blackbox") == float("inf")
    ranked = sorted(["kd", "deepinversion", "blackbox"], key=cost.estimate, reverse=True)
    assert ranked == ["blackbox", "deepinversion", "kd"]
    # what run_in_workers hands out next among the ready batches' attacks
    assert cost.first(["kd", "deepinversion", "kd"]) == 1
    assert cost.first(["kd", "blackbox", "deepinversion", "htc"]) == 1  # unmeasured: the earliest first


def test_the_parent_hands_a_small_loaded_dataset_to_the_workers_and_a_large_one_is_loaded_there(monkeypatch):
    import kdbench.matrix.runner
    import kdbench.matrix.workers
    from kdbench.config.compose import compose_config
    from kdbench.config.plan import plan_from_config
    from kdbench.data.catalogue import load_dataset
    from kdbench.matrix.runner import Runner
    from kdbench.progress import Progress

    plan = plan_from_config(compose_config(["preset=tiny", "device=cpu"]))
    data = load_dataset(plan.dataset)
    shared = kdbench.matrix.workers.shareable(data)
    assert shared is not None and torch.equal(shared.train.x, data.train.x) and shared.device.type == "cpu"
    size = sum(t.nbytes for s in (data.train, data.test) for t in (s.x, s.y))
    monkeypatch.setattr(kdbench.matrix.workers, "SHARED_DATA_LIMIT_BYTES", size - 1)
    assert kdbench.matrix.workers.shareable(data) is None
    assert kdbench.matrix.workers.shareable(None) is None

    def no_loading(*args, **kwargs):
        raise AssertionError("a Runner given the dataset loads it again")

    monkeypatch.setattr(kdbench.matrix.runner, "load_dataset", no_loading)
    assert torch.equal(Runner(plan, Progress(quiet=True), shared).data.train.x, data.train.x)
