"""One cell pipeline: each plugin is built once per run, and the serial and worker executors
compute a cell and hand its record to a twin cell the same way."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from kdbench.api import ATTACKS
from kdbench.attacks.kd import KDConfig, KnowledgeDistillation
from kdbench.config.compose import compose_config
from kdbench.config.plan import plan_from_config
from kdbench.matrix.run import run_matrix
from kdbench.progress import Progress

BUILT: list[object] = []  # every instance of the probe attack made in this process


@dataclass
class CountedConfig(KDConfig):
    pass


class CountedKD(KnowledgeDistillation):
    def __init__(self, cfg: CountedConfig | None = None) -> None:
        super().__init__(cfg)
        BUILT.append(self)


@pytest.fixture
def counted_attack():
    ATTACKS.add("counted_kd", CountedKD, config=CountedConfig, source=__name__)
    BUILT.clear()
    yield
    ATTACKS.unregister("counted_kd")


def test_each_plugin_is_built_once_per_run(tmp_path, counted_attack):
    cfg = compose_config(["preset=tiny", "attack=counted_kd", "student=[mlp,digits_cnn]", f"results_dir={tmp_path}"])
    plan = plan_from_config(cfg)
    assert len(BUILT) == 1  # built while the plan was checked
    done = run_matrix(plan, Progress(quiet=True))
    assert len(done) == 4  # 2 defenses × 2 students, each asking the same instance
    assert len(BUILT) == 1 and plan.attack("counted_kd") is BUILT[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_twin_cell_takes_over_the_one_computation_in_either_executor(tmp_path, workers):
    """``self`` and the teacher's architecture named outright are one computation: computed once,
    written under both names, whichever executor runs the matrix."""
    overrides = ["preset=tiny", "defense=[normal,nasty]", "student=[digits_cnn,self]", f"workers={workers}"]
    plan = plan_from_config(compose_config([*overrides, f"results_dir={tmp_path}"]))
    done = run_matrix(plan, Progress(quiet=True))
    assert len(done) == 4
    records = {r.cell: r for r in done}
    for defense in ("normal", "nasty"):
        named = records[f"digits_cnn__{defense}__kd__digits_cnn__seed0"]
        own = records[f"digits_cnn__{defense}__kd__self=digits_cnn__seed0"]
        assert own.key == named.key and own.student_acc == named.student_acc
        assert own.wall_s == 0.0 < named.wall_s  # taken over, not trained again
        written = json.loads((tmp_path / "synthetic" / "records" / f"{own.cell}.json").read_text())
        assert written["student"] == "self" and written["student_arch"] == "digits_cnn"
