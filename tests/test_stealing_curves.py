"""Stealing curves: a query-budgeted attack's student at 1/8, 1/4, 1/2 and all of its queries, from
one query stream; stealing_curves.csv, its plot and the leaderboard's "queries needed"."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from kdbench.cli import main
from kdbench.report.curves import curves_frame, queries_needed
from kdbench.store.records import CellDetails, Record

TINY_BLACKBOX = ["run", "preset=tiny", "defense=[normal,nasty]", "attack=[kd,blackbox]", "quiet=true"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    results = tmp_path_factory.mktemp("curves")
    assert main([*TINY_BLACKBOX, f"results_dir={results}"]) == 0
    return results / "synthetic"


def records_of(folder):
    return {p.stem: json.loads(p.read_text()) for p in (folder / "records").glob("*.json")}


def test_a_query_budgeted_attack_records_its_curve_and_the_others_none(folder):
    for name, record in records_of(folder).items():
        curve = record["details"].get("stealing_curve")
        if "__blackbox__" not in name:
            assert curve is None, name  # KD asks without a budget: no curve
            continue
        queries = record["details"]["queries"]
        assert queries == 128  # the synthetic training split, each input once
        assert sorted(int(q) for q in curve) == [16, 32, 64, 128]  # 1/8, 1/4, 1/2, all
        assert curve["128"] == record["student_acc"]  # the full point is the cell's own result


def test_the_files_hold_the_curves(folder):
    curves = pd.read_csv(folder / "stealing_curves.csv")
    assert list(curves.columns) == [
        "dataset",
        "teacher",
        "defense",
        "attack",
        "student",
        "seed",
        "queries",
        "student_acc",
    ]
    assert set(curves.attack) == {"blackbox"} and len(curves) == 2 * 4  # 2 defenses × 4 points
    assert (folder / "stealing_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (folder / "leaderboard.md").read_text()
    assert "## Stealing curves" in markdown and "| defense | blackbox → mlp |" in markdown


def test_without_curves_nothing_more_is_trained_and_the_result_is_the_same(folder, tmp_path):
    assert main([*TINY_BLACKBOX, "stealing_curves=false", f"results_dir={tmp_path}"]) == 0
    plain = records_of(tmp_path / "synthetic")
    curved = records_of(folder)
    for name, record in plain.items():
        assert "stealing_curve" not in record["details"]
        assert record["student_acc"] == curved[name]["student_acc"]  # the curve never touches the cell's result
    assert not (tmp_path / "synthetic" / "stealing_curves.csv").exists()


def record(defense: str, seed: int, curve: dict[str, float]) -> Record:
    return Record(
        "toy", defense, "blackbox", "s", seed, "t", 99.0, curve["800"], 95.0, 95.0 - curve["800"], "ok", 1.0,
        f"{defense}{seed}", details=CellDetails(queries=800, stealing_curve=curve),
    )  # fmt: skip


def test_queries_needed_is_the_first_point_within_one_point_of_the_full_budget_on_the_seed_mean():
    records = [
        # normal: 88.5 mean at 200 queries, 90 at 800: within 1.5 of it → not enough; 400: 89.5 → enough
        record("normal", 0, {"100": 80.0, "200": 88.0, "400": 89.0, "800": 90.0}),
        record("normal", 1, {"100": 82.0, "200": 89.0, "400": 90.0, "800": 90.0}),
        # mad: only all of them come within a point
        record("mad", 0, {"100": 60.0, "200": 70.0, "400": 80.0, "800": 85.0}),
    ]
    frame = curves_frame(records)
    assert len(frame) == 12
    needed = queries_needed(frame).set_index("defense")
    assert needed.loc["normal", "queries"] == 400 and needed.loc["normal", "full_acc"] == 90.0
    assert needed.loc["mad", "queries"] == 800 and needed.loc["mad", "all_queries"] == 800
