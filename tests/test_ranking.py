"""A ranking that says what the data support: ties within noise, incomplete worst cases after the
complete ones, a verdict only beyond noise, and findings in words.

Hand-computed figures (one attack ``kd``, one student ``s``, baseline 90 in every seed, so each
drop is 90 − student accuracy; intervals are mean ± 2 standard errors, SE = std/√3):
- a: drops 5, 6, 7 → mean 6, std 1, SE 0.577 → [4.85, 7.15]
- b: drops 4, 5, 6 → mean 5 → [3.85, 6.15]: overlaps a's, so a and b share rank 1
- c: drops −1, 0, 1 → mean 0 → [−1.15, 1.15]: below both, rank 3
- d: drops 20, 20 and one failed seed: incomplete, so it comes after every complete defense (rank 4 †)
  although its drop is the largest
Verdicts: a and b protect (their intervals are above 0), c shows no protection, d is incomplete.
"""

from pathlib import Path

from kdbench.report.files import write_reports
from kdbench.store.records import Record, RecordStore

DROPS = {"a": [5.0, 6.0, 7.0], "b": [4.0, 5.0, 6.0], "c": [-1.0, 0.0, 1.0], "d": [20.0, 20.0, None]}


def write(folder: Path, drops: dict[str, list[float | None]]) -> None:
    store = RecordStore(folder)
    for defense, values in drops.items():
        for seed, drop in enumerate(values):
            ok = drop is not None
            store.put(
                Record(
                    dataset="toy",
                    defense=defense,
                    attack="kd",
                    student="s",
                    seed=seed,
                    teacher="t",
                    teacher_acc=95.0,
                    student_acc=90.0 - drop if ok else None,
                    baseline_acc=90.0 if ok else None,
                    drop=drop,
                    status="ok" if ok else "failed",
                    wall_s=1.0,
                    key=f"k-{defense}-{seed}",
                    reason="" if ok else "boom",
                )
            )


def test_ties_within_noise_share_a_rank_and_incomplete_comes_last(tmp_path):
    write(tmp_path, DROPS)
    board = write_reports(tmp_path, {"dataset": "toy"})
    ranked = board[board.teacher != ""][["defense", "rank", "verdict"]].values.tolist()
    assert ranked == [
        ["a", 1.0, "protects"],
        ["b", 1.0, "protects"],
        ["c", 3.0, "no protection shown"],
        ["d", 4.0, "no protection shown (incomplete)"],
    ]
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "| 1 | a |" in markdown and "| 1 | b |" in markdown and "| 3 | c |" in markdown
    assert "| 4 † | d |" in markdown
    assert "share a rank unless their guaranteed drops' intervals (mean ± 2 standard errors" in markdown
    assert "What the data show: a: kd loses 6.0 points. b: kd loses 5.0 points. c: kd: no drop beyond noise" in markdown


def test_distinguishable_defenses_get_distinct_ranks(tmp_path):
    write(tmp_path, {"a": [10.0, 10.5, 11.0], "b": [4.0, 5.0, 6.0]})  # [9.92, 11.08] vs [3.85, 6.15]
    board = write_reports(tmp_path, {"dataset": "toy"})
    assert board[board.teacher != ""][["defense", "rank"]].values.tolist() == [["a", 1.0], ["b", 2.0]]


def test_one_seed_says_no_significance_can_be_judged_and_protects_nothing(tmp_path):
    write(tmp_path, {"a": [6.0], "c": [0.0]})
    board = write_reports(tmp_path, {"dataset": "toy"})
    assert board[board.teacher != ""][["defense", "rank", "verdict"]].values.tolist() == [
        ["a", 1.0, "no protection shown"],
        ["c", 2.0, "no protection shown"],
    ]
    assert "One seed: no significance can be judged." in (tmp_path / "leaderboard.md").read_text()


def test_the_header_lists_the_commands_and_plugins_of_the_records_and_only_the_recipe_that_applies(tmp_path):
    write(tmp_path, {"a": [6.0], "c": [0.0]})
    store = RecordStore(tmp_path)
    for record in store.all():
        record.details.command = "bench run all" if record.defense == "a" else "bench run defense=c"
        record.details.code = {
            "defense": {"package": "kdbench", "version": "0.1.0", "source": "abc"},
            "attack": {"package": "my-plugin", "version": "2.0", "source": "def"},
        }
        store.put(record)
    recipe = {"epochs": 40, "optimizer": "adam", "schedule": "cosine", "milestones": [80, 120], "gamma": 0.1}
    write_reports(tmp_path, {"dataset": "toy", "recipe": {**recipe, "momentum": 0.9}})
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "- `bench run all`\n- `bench run defense=c`" in markdown
    assert "kd (my-plugin 2.0, source def)" in markdown
    assert 'Training recipe: `{"epochs": 40, "optimizer": "adam", "schedule": "cosine"}`' in markdown


def test_equal_drops_share_a_rank_whatever_their_floating_point_rounding():
    """With one seed ranks follow the point estimates: two drops of one image (−5/9 point on 360
    test images), computed from different accuracies, are the same drop."""
    from kdbench.report.leaderboard import leaderboard_frame, records_frame
    from kdbench.store.records import Record

    def record(defense: str, baseline: float, student: float) -> Record:
        return Record(
            "toy", defense, "kd", "s", 0, "t", 99.0, student, baseline, baseline - student, "ok", 1.0, defense
        )

    a = record("a", 95.55555555555556, 96.11111111111111)
    b = record("b", 97.22222222222223, 97.77777777777777)
    assert a.drop != b.drop  # the floating-point difference this test is about
    board = leaderboard_frame(records_frame([a, b])).set_index("defense")
    assert board.loc["a", "rank"] == board.loc["b", "rank"] == 1
