"""The default digits matrix, RobustBench-style: its acceptance figures are checked on the committed
reference (results/reference/digits, ``bench run all seeds=3``), which must be what the current
configuration and code compute.

- The reference is current: every cell of ``bench run all seeds=3`` has a final record there whose
  key (configuration, the plugins' code) is the one the current tree gives it. Editing a plugin or
  a default without regenerating the reference fails here.
- On it, over three seeds: the Nasty-Teacher effect (issue 2's acceptance, stated on means), the
  black-box attack cloning the normal teacher about as well as vanilla KD (issue 4's), and
  DeepInversion within 10 points of KD with a seed spread of at most 3 points while the nasty
  teacher lowers it (issues 3 and 16).
- That the code reproduces those numbers, training for real, is
  tests/test_reference_reproduction.py: a fresh clone's run of a slice compared with the reference
  within its seed spread.
"""

from pathlib import Path

import pandas as pd
import pytest

from kdbench.config.compose import compose_config
from kdbench.config.plan import plan_from_config
from kdbench.matrix.pending import pending_cells
from kdbench.store.records import RecordStore

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "reference"


@pytest.fixture(scope="module")
def reference_plan(tmp_path_factory):
    """``bench run all seeds=3`` pointed at the reference folder (reading only: no cache there)."""
    cache = tmp_path_factory.mktemp("no-cache")
    # the settings it was made with (run.json): on another machine "auto" would choose others
    overrides = [
        "seeds=3",
        "device=cpu",
        "threads=1",
        f"results_dir={REFERENCE}",
        "reference_dir=null",
        f"cache_dir={cache}",
    ]
    return plan_from_config(compose_config(overrides))


@pytest.fixture(scope="module")
def all_records() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "digits" / "records.csv")


def test_the_reference_is_what_the_current_configuration_and_code_compute(reference_plan):
    before = {p.name: p.stat().st_mtime_ns for p in (REFERENCE / "digits").rglob("*")}
    stale = [cell.name for cell, _ in pending_cells(reference_plan, RecordStore(reference_plan.dataset_dir))]
    # defenses × attacks (kd_t20 and blackbox_ood too) × students × seeds
    assert len(reference_plan.cells) == 8 * 10 * 2 * 3
    assert stale == [], f"{len(stale)} reference cells are stale, e.g. {stale[:3]}: regenerate it (README)"
    assert {p.name: p.stat().st_mtime_ns for p in (REFERENCE / "digits").rglob("*")} == before  # read only


def test_every_cell_finished(reference_plan, all_records):
    assert sorted(
        all_records.apply(lambda r: f"{r.teacher}__{r.defense}__{r.attack}__{r.student}__seed{r.seed}", axis=1)
    ) == sorted(cell.name for cell in reference_plan.cells)
    assert set(all_records.status) == {"ok"}


def test_the_nasty_teacher_keeps_its_accuracy_within_3_points(all_records):
    kd = all_records[all_records.attack == "kd"]
    assert sorted(set(kd.seed)) == [0, 1, 2]
    teacher = kd.groupby("defense").teacher_acc.mean()
    assert teacher["normal"] > 95
    assert teacher["normal"] - teacher["nasty"] <= 3.0


def test_kd_from_the_nasty_teacher_ends_at_least_5_points_below_kd_from_the_normal_one(all_records):
    kd = all_records[all_records.attack == "kd"].groupby(["student", "defense"]).student_acc.mean().unstack()
    gap = kd["normal"] - kd["nasty"]
    assert set(gap.index) == {"mlp", "cnn1"}
    assert (gap >= 5.0).all(), gap.to_dict()


def normal_means(records: pd.DataFrame) -> pd.DataFrame:
    """Student accuracy from the normal teacher, mean over seeds: student × attack."""
    normal = records[records.defense == "normal"]
    return normal.groupby(["student", "attack"]).student_acc.mean().unstack()


def test_blackbox_queries_of_the_training_inputs_come_within_5_points_of_kd_from_the_normal_teacher(all_records):
    normal = normal_means(all_records)
    assert set(normal.index) == {"mlp", "cnn1"}
    assert ((normal["kd"] - normal["blackbox"]) <= 5.0).all(), normal[["kd", "blackbox"]].to_dict()


def test_deepinversion_comes_within_10_points_of_kd_from_the_normal_teacher_with_a_steady_seed_spread(all_records):
    """Issue 16's criteria on 3-seed means (the reference: 98.4 ± 0.4 / 91.7 ± 1.0 against KD's
    97.3 / 95.7). DAFL does not meet them on digits: its budget table shows where it saturates."""
    normal = normal_means(all_records)
    assert ((normal["kd"] - normal["deepinversion"]) <= 10.0).all(), normal[["kd", "deepinversion"]].to_dict()
    di = all_records[(all_records.defense == "normal") & (all_records.attack == "deepinversion")]
    spread = di.groupby("student").student_acc.std()
    assert len(spread) == 2 and (spread <= 3.0).all(), spread.to_dict()


def test_the_nasty_teacher_lowers_the_data_free_students(all_records):
    data_free = all_records[all_records.attack == "deepinversion"]
    acc = data_free.groupby(["student", "defense"]).student_acc.mean().unstack()
    gap = acc["normal"] - acc["nasty"]
    assert len(gap) == 2 and (gap > 0).all(), gap.to_dict()
    assert gap.mean() >= 10, gap.to_dict()


def test_every_black_box_cell_of_the_reference_has_its_stealing_curve():
    blackbox = [r for r in RecordStore(REFERENCE / "digits").all() if r.attack == "blackbox"]
    assert len(blackbox) == 8 * 2 * 3
    for r in blackbox:
        curve = r.details.stealing_curve
        assert sorted(int(q) for q in curve) == [180, 359, 718, 1437], r.cell  # 1/8, 1/4, 1/2, all
        assert curve["1437"] == r.student_acc


def test_photographs_steal_little_and_adaptive_misinformation_turns_them_below_chance(all_records):
    """The out-of-distribution column: queries of photographs, not digits, are a weak transfer set,
    and AM, built against them, answers them with misinformation its students learn: below chance,
    and below the normal teacher's students. By 5 points for cnn1; the mlp learns little from the
    normal teacher's answers to photographs (11.5 ± 0.6 %, chance 10), so there it is only lower
    (8.0 ± 3.5 %; the regeneration of 2026-12-07 moved its gap from 6.8 to 3.5 points)."""
    ood = all_records[all_records.attack == "blackbox_ood"]
    assert len(ood) == 8 * 2 * 3
    acc = ood.groupby(["student", "defense"]).student_acc.mean().unstack()
    normal = normal_means(all_records)
    assert (acc["normal"] < normal["blackbox"] - 50).all(), acc["normal"].to_dict()  # far below in-distribution
    assert (acc["adaptive_misinformation"] < 10.0).all(), acc["adaptive_misinformation"].to_dict()  # chance: 10
    assert (acc["adaptive_misinformation"] < acc["normal"]).all(), acc.to_dict()
    assert acc.loc["cnn1", "adaptive_misinformation"] < acc.loc["cnn1", "normal"] - 5, acc.to_dict()
    for r in RecordStore(REFERENCE / "digits").all():
        if r.attack == "blackbox_ood":
            assert r.details.queries == 4096 and sorted(map(int, r.details.stealing_curve)) == [512, 1024, 2048, 4096]
            assert r.details.serving_ms_per_1k is not None and r.details.serving_ms_per_1k > 0


def test_every_dfme_cell_of_the_reference_has_its_stealing_curve_from_the_one_run():
    """DFME's budget of 500,000 queries is spent in iterations of 1,792: its curve's points are the
    first iteration ends past 1/8, 1/4 and 1/2 of the budget, and the 279 iterations it can afford."""
    dfme = [r for r in RecordStore(REFERENCE / "digits").all() if r.attack == "dfme"]
    assert len(dfme) == 8 * 2 * 3
    for r in dfme:
        curve = r.details.stealing_curve
        assert sorted(int(q) for q in curve) == [62720, 125440, 250880, 499968], r.cell
        assert curve["499968"] == r.student_acc and r.details.queries == 499968


def test_fast_dfkd_comes_within_5_points_of_kd_from_the_normal_teacher_and_the_nasty_teacher_lowers_it(all_records):
    """Issue 30's target, for every student, at the converged default (docs/datasets-and-methods.md)."""
    normal = normal_means(all_records)
    assert ((normal["kd"] - normal["fast_dfkd"]) <= 5.0).all(), normal[["kd", "fast_dfkd"]].to_dict()
    fast = all_records[all_records.attack == "fast_dfkd"]
    acc = fast.groupby(["student", "defense"]).student_acc.mean().unstack()
    gap = acc["normal"] - acc["nasty"]
    assert len(gap) == 2 and (gap >= 10).all(), gap.to_dict()
