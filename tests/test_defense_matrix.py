"""The defense × attack matrix of issue 4 on the tiny preset: the logit-perturbation defenses as rows, the black-box
attack as a column, the owner's cost and the queries in every record and the leaderboard."""

import json

import pandas as pd
import pytest

from kdbench.cli import main

PERTURBED = ["logit_noise", "topk", "reverse_sigmoid", "rounding"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    selection = [f"defense=[normal,nasty,{','.join(PERTURBED)}]", "attack=[kd,blackbox]"]
    assert main(["run", "all", "preset=tiny", *selection, "quiet=true", f"results_dir={folder}"]) == 0
    return folder / "synthetic"


@pytest.fixture(scope="module")
def records(results) -> pd.DataFrame:
    return pd.read_csv(results / "records.csv")


def test_every_defense_meets_every_attack(records):
    assert set(records.defense) == {"normal", "nasty", *PERTURBED}
    assert set(records.attack) == {"kd", "blackbox"}
    assert len(records) == 12 and set(records.status) == {"ok"}


def test_the_perturbation_defenses_keep_the_normal_teachers_accuracy_exactly(records):
    teacher = records.groupby("defense").teacher_acc.unique()
    for defense in PERTURBED:
        assert list(teacher[defense]) == list(teacher["normal"])


def test_every_record_carries_the_owners_cost(records, results):
    cost = records.drop_duplicates("defense").set_index("defense")
    assert cost.loc["normal", "owner_kl_nats"] == 0 and cost.loc["normal", "owner_tv_pct"] == 0
    assert cost.loc["topk", "owner_kl_nats"] == float("inf")  # classes outside the top k get probability 0
    for defense in ("logit_noise", "reverse_sigmoid"):
        assert 0 < cost.loc[defense, "owner_kl_nats"] < float("inf") and cost.loc[defense, "owner_tv_pct"] > 0
    record = json.loads((results / "records" / "digits_cnn__topk__kd__mlp__seed0.json").read_text())
    assert set(record["details"]["owner_cost"]) == {"ece_pct", "kl_nats", "tv_pct"}


def test_records_count_the_queries_each_attack_made(records):
    queries = records.set_index(["defense", "attack"]).queries
    assert (queries.xs("blackbox", level="attack") == 128).all()  # each training input once
    # KD over unaugmented inputs asks each once and keeps the answers for every epoch (bench/distill.py)
    assert (queries.xs("kd", level="attack") == 128).all()


def test_the_leaderboard_shows_the_owner_cost_and_the_blackbox_column(results):
    markdown = (results / "leaderboard.md").read_text()
    ranking = (
        "| rank | defense | teacher acc | Δ vs normal | owner cost: ECE % · KL · TV % | serving ms / 1k queries "
        "| worst case → mlp |"
    )
    assert ranking in markdown
    assert "| defense | teacher acc | blackbox → mlp | kd → mlp |" in markdown
    topk_row = next(line for line in markdown.splitlines() if "| topk |" in line and " · " in line)
    assert " · ∞ · " in topk_row
    board = pd.read_csv(results / "leaderboard.csv")
    assert {"owner_ece_pct", "owner_kl_nats", "owner_tv_pct"} <= set(board.columns)
    defended = board[board.teacher.notna()]
    assert len(defended) and (defended.serving_ms_per_1k > 0).all()  # every teacher of this run was timed
