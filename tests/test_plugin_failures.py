"""A bug in one plugin fails its cells only: recorded with the exception and a traceback file, the
matrix goes on, the run exits 1 listing them, and a rerun retries only those cells."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from kdbench.api import ATTACKS, DEFENSES, Attack, DataAccess, Defense
from kdbench.cli import main
from kdbench.defenses.normal import normal_network


@dataclass
class BuggyConfig:
    pass


class BuggyAttack(Attack):
    """Raises a TypeError inside ``run`` while ``broken`` is set, and trains nothing otherwise."""

    data_access = DataAccess.TRAIN
    broken: ClassVar[bool] = True

    def run(self, teacher, student, ctx):
        if BuggyAttack.broken:
            return student(None, "an argument too many")  # a plain bug: TypeError
        return student


class BuggyDefense(Defense):
    def build(self, ctx):
        normal_network(ctx)
        raise ValueError("the perturbation's scale is negative")


@pytest.fixture
def buggy():
    ATTACKS.add("buggy", BuggyAttack, config=BuggyConfig, source=__name__)
    DEFENSES.add("buggy_defense", BuggyDefense, config=BuggyConfig, source=__name__)
    BuggyAttack.broken = True
    yield
    ATTACKS.unregister("buggy")
    DEFENSES.unregister("buggy_defense")


def records(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((folder / "synthetic" / "records").glob("*.json"))}


ARGS = ["run", "all", "preset=tiny", "quiet=true", "attack=[kd,buggy]", "student=[mlp,cnn1]"]


def test_an_exception_in_an_attack_fails_its_cells_only_and_a_rerun_retries_them(tmp_path, buggy, capsys):
    assert main([*ARGS, f"results_dir={tmp_path}", "defense=[normal,nasty]"]) == 1
    err = capsys.readouterr().err
    first = records(tmp_path)
    assert len(first) == 8
    failed = {name for name, r in first.items() if r["status"] == "failed"}
    assert failed == {name for name in first if "__buggy__" in name}
    assert {r["status"] for name, r in first.items() if name not in failed} == {"ok"}
    for name in failed:
        record = first[name]
        assert record["reason"].startswith("attack 'buggy' raised TypeError: ")
        trace = Path(record["details"]["traceback"])
        assert trace.is_file() and trace.is_relative_to(tmp_path / "synthetic")
        text = trace.read_text()
        assert "Traceback (most recent call last)" in text and 'return student(None, "an argument too many")' in text
        assert f"failed: {name}: attack 'buggy' raised TypeError: " in err
    assert "Traceback" not in err and err.count("failed: ") == len(failed)

    BuggyAttack.broken = False  # the plugin's bug is fixed: the rerun computes only its cells
    assert main([*ARGS, f"results_dir={tmp_path}", "defense=[normal,nasty]"]) == 0
    second = records(tmp_path)
    assert {r["status"] for r in second.values()} == {"ok"}
    for name, record in first.items():
        if name not in failed:
            assert second[name] == record  # untouched, wall_s included: not recomputed
        else:
            assert second[name] != record


def test_an_exception_in_a_defense_fails_its_cells_and_the_others_go_on(tmp_path, buggy, capsys):
    args = ["run", "all", "preset=tiny", "quiet=true", "attack=kd", "defense=[normal,buggy_defense]"]
    assert main([*args, f"results_dir={tmp_path}"]) == 1
    result = records(tmp_path)
    assert result["digits_cnn__normal__kd__mlp__seed0"]["status"] == "ok"
    broken = result["digits_cnn__buggy_defense__kd__mlp__seed0"]
    assert broken["status"] == "failed"
    assert broken["reason"] == "defense 'buggy_defense' raised ValueError: the perturbation's scale is negative"
    assert "raise ValueError" in Path(broken["details"]["traceback"]).read_text()
    assert "digits_cnn__buggy_defense__kd__mlp__seed0: defense 'buggy_defense'" in capsys.readouterr().err


def test_a_keyboard_interrupt_in_a_plugin_still_stops_the_run(tmp_path, buggy, monkeypatch):
    def interrupted(self, teacher, student, ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(BuggyAttack, "run", interrupted)
    assert (
        main(["run", "all", "preset=tiny", "quiet=true", "attack=buggy", "defense=normal", f"results_dir={tmp_path}"])
        == 130
    )
    assert records(tmp_path) == {}


def test_an_exception_in_an_attack_on_worker_processes_fails_its_cells_only(tmp_path):
    """The default executor (workers): the plugin is an installed package, so every worker has it."""
    site = tmp_path / "site"
    (site / "buggy_plugin").mkdir(parents=True)
    (site / "buggy_plugin" / "__init__.py").write_text(
        "from dataclasses import dataclass\n"
        "from kdbench.api import Attack, register_attack\n"
        "@dataclass\n"
        "class BuggyConfig:\n"
        "    pass\n"
        "@register_attack('buggy', config=BuggyConfig)\n"
        "class Buggy(Attack):\n"
        "    def run(self, teacher, student, ctx):\n"
        "        return len(student)  # TypeError: object of type ... has no len()\n"
    )
    dist = site / "buggy_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: buggy-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[kdbench.attacks]\nbuggy = buggy_plugin\n")
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "kdbench.cli", *ARGS, "workers=2", f"results_dir={tmp_path}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    got = records(tmp_path)
    assert len(got) == 8
    for name, record in got.items():
        if "__buggy__" in name:
            assert record["status"] == "failed" and record["reason"].startswith("attack 'buggy' raised TypeError: ")
            assert "return len(student)" in Path(record["details"]["traceback"]).read_text()
            assert f"failed: {name}: attack 'buggy' raised TypeError" in result.stderr
        else:
            assert record["status"] == "ok", name
