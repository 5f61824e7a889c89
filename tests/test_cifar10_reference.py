"""The CIFAR-10 CPU reference (results/reference/cifar10_cpu), RobustBench-style: it is what the
current configuration and code compute, every planned cell finished, and the figures its README
publishes are the records' figures.

Made with (README there): ``bench run all preset=cifar10_cpu data_root=../shared/data`` (seed 0,
every defense and attack column) and ``bench run all preset=cifar10_cpu data_root=../shared/data
seeds=2 seed=1 "defense=[normal,nasty]"`` (the headline's second seed). Nothing here trains or
reads the images: the keys need only the configuration.
"""

from pathlib import Path

import pandas as pd
import pytest

from kdbench.config.compose import compose_config
from kdbench.config.plan import plan_from_config
from kdbench.matrix.pending import pending_cells
from kdbench.store.records import RecordStore

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "results" / "reference" / "cifar10_cpu"
SECOND_SEED = {"normal", "nasty"}  # the rows with a second seed (the paper's headline), every attack


@pytest.fixture(scope="module")
def reference_plan(tmp_path_factory):
    """The runs that made the reference, pointed at it (reading only: no cache there)."""
    overrides = [
        "preset=cifar10_cpu",
        "data_root=../shared/data",  # part of the keys: the path the reference was made with
        "seeds=2",
        "device=cpu",
        "threads=1",
        f"results_dir={FOLDER.parent}",
        "reference_dir=null",
        f"cache_dir={tmp_path_factory.mktemp('no-cache')}",
    ]
    plan = plan_from_config(compose_config(overrides))
    return plan


@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    return pd.read_csv(FOLDER / "records.csv")


def planned(plan) -> list:
    return [cell for cell in plan.cells if cell.seed == 0 or cell.defense in SECOND_SEED]


def test_the_reference_is_what_the_current_configuration_and_code_compute(reference_plan):
    before = {p.name: p.stat().st_mtime_ns for p in FOLDER.rglob("*")}
    stale = [cell.name for cell, _ in pending_cells(reference_plan, RecordStore(FOLDER))]
    expected = planned(reference_plan)
    assert len(expected) == 8 * 6 * 2 + 2 * 6 * 2  # seed 0: every cell; seed 1: the normal and nasty rows
    assert [name for name in stale if name in {cell.name for cell in expected}] == [], (
        "reference cells are stale: regenerate them (results/reference/cifar10_cpu/README.md)"
    )
    assert {p.name: p.stat().st_mtime_ns for p in FOLDER.rglob("*")} == before  # read only


def test_every_planned_cell_finished_and_no_other(reference_plan, records):
    names = records.apply(lambda r: f"{r.teacher}__{r.defense}__{r.attack}__{r.student}__seed{r.seed}", axis=1)
    assert sorted(names) == sorted(cell.name for cell in planned(reference_plan))
    assert set(records.status) == {"ok"}


def accuracy(records: pd.DataFrame, defense: str, attack: str, student: str) -> list[float]:
    cells = records[(records.defense == defense) & (records.attack == attack) & (records.student == student)]
    return [round(a, 2) for a in cells.sort_values("seed").student_acc]


def test_the_figures_its_readme_publishes(records):
    """results/reference/cifar10_cpu/README.md, "What it shows" (seeds 0 and 1 where both exist)."""
    kd = records[records.attack == "kd"]
    teachers = kd.groupby(["defense", "seed"]).teacher_acc.first().round(2).to_dict()
    assert teachers[("normal", 0)] == 83.07 and teachers[("normal", 1)] == 83.39
    assert teachers[("nasty", 0)] == 81.65 and teachers[("nasty", 1)] == 81.38
    assert teachers[("normal", 0)] >= 80  # the target for the teacher
    baselines = kd.groupby(["student", "seed"]).baseline_acc.first().round(2).to_dict()
    assert baselines == {
        ("cnn", 0): 71.35,
        ("cnn", 1): 72.44,
        ("whitened_cnn_s", 0): 73.44,
        ("whitened_cnn_s", 1): 74.06,
    }
    assert accuracy(records, "normal", "kd", "whitened_cnn_s") == [76.77, 76.29]
    assert accuracy(records, "nasty", "kd", "whitened_cnn_s") == [74.12, 73.54]
    assert accuracy(records, "normal", "kd", "cnn") == [75.21, 75.67]
    assert accuracy(records, "nasty", "kd", "cnn") == [72.71, 72.23]
    assert accuracy(records, "normal", "blackbox", "whitened_cnn_s") == [77.35, 78.01]
    assert accuracy(records, "nasty", "blackbox", "cnn") == [73.87, 75.13]
    assert accuracy(records, "normal", "skeptical", "cnn") == [72.36, 71.43]
    assert accuracy(records, "nasty", "skeptical", "cnn") == [71.28, 70.44]
    for attack in ("dafl", "deepinversion"):  # at chance (10 %) at their digits-sized default budgets
        assert records[records.attack == attack].student_acc.max() < 16


def test_the_figures_of_the_rows_added_later(records):
    """README, "The rows added later" (seed 0): rounding, mad and adaptive misinformation at τ 0.35."""
    kd = records[records.attack == "kd"]
    teachers = kd.groupby("defense").teacher_acc.first().round(2).to_dict()
    assert (teachers["rounding"], teachers["mad"], teachers["adaptive_misinformation"]) == (83.07, 82.46, 81.48)
    assert accuracy(records, "rounding", "kd", "whitened_cnn_s") == [75.17]
    assert accuracy(records, "rounding", "blackbox", "whitened_cnn_s") == [77.70]
    assert accuracy(records, "mad", "kd", "cnn") == [68.19]
    assert accuracy(records, "mad", "blackbox", "cnn") == [73.39]
    assert accuracy(records, "adaptive_misinformation", "kd", "cnn") == [74.55]
    assert accuracy(records, "adaptive_misinformation", "blackbox", "whitened_cnn_s") == [77.45]
    for defense in ("rounding", "mad", "adaptive_misinformation"):  # black-box cloning beats scratch
        cells = records[(records.defense == defense) & (records.attack == "blackbox")]
        assert (cells.student_acc > cells.baseline_acc).all()
