"""The budget table (kdbench.tools.budget_table) and the time profile (kdbench.tools.time_profile): what they
read from records and logs, and the tables they print."""

from pathlib import Path

import pytest

from kdbench.store.records import Record, RecordStore
from kdbench.tools import budget_table, time_profile


def put(folder: Path, attack: str, student: str, seed: int, acc: float | None, wall: float, status="ok") -> None:
    RecordStore(folder / "digits").put(
        Record(
            dataset="digits",
            defense="normal",
            attack=attack,
            student=student,
            seed=seed,
            teacher="digits_cnn",
            teacher_acc=99.0,
            student_acc=acc,
            baseline_acc=97.0,
            drop=None if acc is None else 97.0 - acc,
            status=status,
            wall_s=wall,
            key="k",
        )
    )


def test_the_budget_table_gives_each_students_mean_std_and_change_from_the_default(tmp_path):
    rows = []
    for i, accs in enumerate([{"mlp": [95, 96]}, {"mlp": [80, 84]}, {"mlp": [83, 85]}]):
        folder = tmp_path / str(i)
        for seed, acc in enumerate(accs["mlp"]):
            put(folder, "deepinversion", "mlp", seed, acc, wall=1.5)
        rows.append(budget_table.measured(folder, "digits", ["kd", "default", "pool_size=8192"][i]))
    put(tmp_path / "2", "deepinversion", "mlp", 2, None, wall=0.5, status="diverged")
    rows[2] = budget_table.measured(tmp_path / "2", "digits", "pool_size=8192")
    lines = budget_table.table(rows, ["mlp"]).splitlines()
    assert lines[2] == "| kd | 95.5 ± 0.7 |  | 3.0 |"
    assert lines[3] == "| default | 82.0 ± 2.8 | +0.0 | 3.0 |"
    # mean 84 against 82; the diverged cell is counted, not averaged
    assert lines[4] == "| pool_size=8192 (1 cell(s) not ok) | 84.0 ± 1.4 | +2.0 | 3.5 |"


def test_the_default_budget_is_read_from_the_composed_config():
    budget = budget_table.default_budget("deepinversion", ["attack.deepinversion.steps=7"], ("pool_size", "steps"))
    assert budget["steps"] == 7 and budget["pool_size"] > 0


def test_an_attack_without_known_knobs_needs_them_named():
    with pytest.raises(SystemExit) as stop:
        budget_table.main(["kd"])
    assert stop.value.code == 2


def test_the_time_profile_sums_cells_by_attack_and_networks_by_kind(tmp_path, capsys):
    put(tmp_path, "kd", "mlp", 0, 90.0, wall=1.0)
    put(tmp_path, "kd", "cnn1", 0, 91.0, wall=2.0)
    put(tmp_path, "dafl", "mlp", 0, 50.0, wall=5.0)
    log = tmp_path / "run.log"
    log.write_text(
        "network teacher digits_cnn/normal (seed 0): ok, acc 99.44, 4.5 s\n"
        "  network scratch mlp (seed 0): ok, acc 95.00, 1.5 s\n"
        "network teacher digits_cnn/nasty (seed 1): diverged: loss nan at epoch 3, 2.0 s\n"
        "digits_cnn__normal__kd__mlp__seed0: ok\n"
    )
    assert time_profile.cell_seconds(tmp_path / "digits") == {"dafl": (1, 5.0), "kd": (2, 3.0)}
    assert time_profile.network_seconds(log.read_text()) == {
        "scratch mlp": (1, 1.5),
        "teacher nasty": (1, 2.0),
        "teacher normal": (1, 4.5),
    }
    assert time_profile.main([str(tmp_path / "digits"), "--log", str(log)]) == 0
    out = capsys.readouterr().out
    assert "| dafl | 1 | 5.0 | 5.00 | 62% |" in out and "| total | 3 | 8.0 | | |" in out
    assert "| teacher normal | 1 | 4.5 | 4.50 | 56% |" in out


@pytest.mark.parametrize("attack", sorted(budget_table.KNOBS))
def test_every_budget_knob_is_an_integer_option_of_its_attack(attack):
    knobs = budget_table.KNOBS[attack]
    budget = budget_table.default_budget(attack, [], knobs)
    assert set(budget) == set(knobs)
    assert all(isinstance(v, int) and v > 0 for v in budget.values()), budget


def test_the_attacks_own_overrides_reach_its_runs_but_not_the_kd_reference(monkeypatch, capsys):
    """A candidate default (attack.dafl.batch_size=128) is checked by doubling from it; the KD run
    has no dafl node to override and would refuse it."""
    calls = []
    monkeypatch.setattr(
        budget_table, "run", lambda attack, overrides, results, cache: calls.append((attack, overrides))
    )
    monkeypatch.setattr(
        budget_table, "measured", lambda folder, dataset, label: budget_table.Row(label, {"mlp": [90.0]}, 1.0, 0)
    )
    assert budget_table.main(["dafl", "--knobs", "batch_size", "seeds=1", "attack.dafl.batch_size=128"]) == 0
    assert calls[0] == ("kd", ["seeds=1"])
    assert calls[1] == ("dafl", ["seeds=1", "attack.dafl.batch_size=128"])
    assert calls[2] == ("dafl", ["seeds=1", "attack.dafl.batch_size=128", "attack.dafl.batch_size=256"])
    assert "| batch_size=256 |" in capsys.readouterr().out


def test_the_time_left_check_prints_the_estimate_beside_the_truth(capsys):
    from kdbench.tools.time_left_check import main

    main(["preset=tiny", "defense=[normal,nasty]", "student=[mlp,cnn1]", "quiet=true"])
    printed = capsys.readouterr().out
    assert printed.startswith("| mark | at | networks and cells done | estimated left | true left | error |")
    for mark in ("25% of units", "50% of units", "75% of units", "25% of time", "50% of time", "75% of time"):
        assert f"| {mark} | " in printed
    assert "Every estimate (s into the run: estimated/true s left): " in printed


def test_several_scales_give_a_row_each_for_a_stealing_curve(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(
        budget_table, "run", lambda attack, overrides, results, cache: calls.append((attack, overrides))
    )
    monkeypatch.setattr(
        budget_table, "measured", lambda folder, dataset, label: budget_table.Row(label, {"mlp": [50.0]}, 1.0, 0)
    )
    assert budget_table.main(["dfme", "--scale", "0.5,2", "seeds=1", "attack.dfme.budget=400000"]) == 0
    assert [c[1][-1] for c in calls[1:]] == [
        "attack.dfme.budget=400000",
        "attack.dfme.budget=200000",
        "attack.dfme.budget=800000",
    ]
    out = capsys.readouterr().out
    assert "| budget=200000 |" in out and "| budget=800000 |" in out


def test_the_thread_spread_table_has_a_row_per_attack_and_student(capsys):
    from kdbench.tools import thread_spread

    assert thread_spread.main(["dafl", "preset=tiny"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| dafl | mlp |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    one, two, per_seed, mean_delta, verdict = cells[2:]
    assert " ± " in one and " ± " in two and verdict in {"yes", "no"}
    deltas = [float(d) for d in per_seed.split(" / ")]
    assert len(deltas) == 3 and float(mean_delta) == pytest.approx(sum(deltas) / 3, abs=0.051)


def test_a_thread_spread_row_compares_the_mean_difference_with_the_seeds_std():
    from kdbench.tools.thread_spread import spread_row

    # one thread: 90, 92, 94 (std 2.0); two threads: 91, 95, 94 → differences 1, 3, 0, mean 1.33
    assert spread_row("a", "s", [90.0, 92.0, 94.0], [91.0, 95.0, 94.0]) == (
        "| a | s | 92.0 ± 2.0 | 93.3 ± 2.1 | 1.0 / 3.0 / 0.0 | 1.3 | no |"
    )
    assert spread_row("a", "s", [90.0, 90.5, 91.0], [92.0, 90.5, 91.0]).endswith("| 2.0 / 0.0 / 0.0 | 0.7 | yes |")


def test_one_seed_shows_no_spread_rather_than_a_spread_of_zero():
    assert budget_table.mean_std([15.9]) == "15.9 (1 seed)"
    assert budget_table.mean_std([15.0, 17.0]) == "16.0 ± 1.4"
    assert budget_table.mean_std([]) == "—"


def test_the_served_sweep_prints_a_row_per_value_and_trains_the_networks_once(tmp_path, capsys):
    from kdbench.tools import served_sweep

    run = ["adaptive_misinformation", "tau", "1.0", "0.1", "preset=tiny", f"results_dir={tmp_path}"]
    assert served_sweep.main(run) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| 1.0 |", "| 0.1 |"))]
    assert len(rows) == 2
    accuracy = {row.split("|")[1].strip(): float(row.split("|")[2]) for row in rows}
    # τ 1 flags every query (no top probability reaches 1): the misinformation network answers all
    # of them; τ 0.1 none (the top of 10 classes is at least 0.1): the defender answers alone
    assert accuracy["0.1"] > accuracy["1.0"]
    cache = tmp_path / "synthetic" / ".cache"
    cached = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.pt")}
    assert len(cached) >= 2  # the defender and the misinformation network at least
    assert served_sweep.main(run) == 0  # again: every network from the cache, none trained or written anew
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.pt")} == cached


def test_the_served_sweep_refuses_a_bad_value_in_one_line_before_anything_trains(tmp_path, capsys):
    from kdbench.tools import served_sweep

    run = ["mad", "epsilon", "0.5", "-1", "preset=tiny", f"results_dir={tmp_path / 'results'}"]
    assert served_sweep.main(run) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("served_sweep: ") and "epsilon" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "results").exists()  # the good first value trained nothing either
