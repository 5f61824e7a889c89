"""An attack that cannot run on the teacher's architecture (DeepInversion without BatchNorm) makes
its cells "n/a", with the reason, and the rest of the matrix runs; naming it in ``attack=`` is still
refused, and a missing weight file is named before any of this."""

from __future__ import annotations

import pandas as pd
import pytest

from kdbench.cli import main
from kdbench.config.compose import compose_config
from kdbench.config.plan import plan_from_config
from kdbench.errors import ConfigError
from kdbench.store.records import STATUS_NA, RecordStore

# the digits matrix on the mlp, which has no BatchNorm: every attack but DeepInversion can run on it
NO_BATCHNORM = ["teacher=mlp", "student=mlp", "defense=[normal,topk]"]
QUICK = ["train.epochs=1", "attack.dafl.epochs=1", "attack.dafl.iters_per_epoch=5", "quiet=true", "workers=1"]
QUICK += ["attack.dfme.budget=3584", "attack.dfme.generator_width=8"]  # two of DFME's iterations


def test_an_attack_that_cannot_run_on_the_teacher_is_not_applicable_unless_chosen():
    plan = plan_from_config(compose_config(NO_BATCHNORM))
    assert list(plan.not_applicable) == [("mlp", "deepinversion"), ("mlp", "fast_dfkd")]
    assert "no BatchNorm layer" in plan.not_applicable["mlp", "deepinversion"]
    assert "no BatchNorm layer" in plan.not_applicable["mlp", "fast_dfkd"]
    assert {c.attack for c in plan.cells} == set(plan.attacks) - {"deepinversion", "fast_dfkd"}
    assert {c.attack for c, _ in plan.not_applicable_cells} == {"deepinversion", "fast_dfkd"}
    assert len(plan.cells) + len(plan.not_applicable_cells) == len(plan.selected_cells)
    with pytest.raises(ConfigError, match="no BatchNorm layer"):
        plan_from_config(compose_config([*NO_BATCHNORM, "attack=[kd,deepinversion]"]))


def test_with_no_attack_that_can_run_the_run_is_refused():
    from kdbench.config.plan import _check_attacks

    plan = plan_from_config(compose_config(NO_BATCHNORM))
    only = {"deepinversion": plan.attack("deepinversion")}
    with pytest.raises(ConfigError, match=r"no attack can run on teacher .mlp.: .*no BatchNorm layer"):
        _check_attacks(only, ["mlp"], plan.dataset, chosen=False)


def test_a_missing_weight_file_is_named_before_an_attack_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="teacher_weights") as refused:
        plan_from_config(
            compose_config([*NO_BATCHNORM, "attack=deepinversion", f"teacher_weights={tmp_path / 'none.pt'}"])
        )
    assert "BatchNorm" not in str(refused.value)


def test_the_run_records_n_a_cells_with_their_reason_and_ranks_on_the_rest(tmp_path, capsys):
    args = ["run", *NO_BATCHNORM, *QUICK, f"results_dir={tmp_path}"]
    assert main(args) == 0
    printed = " ".join(capsys.readouterr().out.split())
    store = RecordStore(tmp_path / "digits")
    na = [r for r in store.all() if r.status == STATUS_NA]
    assert sorted((r.defense, r.attack) for r in na) == [
        ("normal", "deepinversion"),
        ("normal", "fast_dfkd"),
        ("topk", "deepinversion"),
        ("topk", "fast_dfkd"),
    ]
    assert all("no BatchNorm layer" in r.reason for r in na)
    board = pd.read_csv(tmp_path / "digits" / "leaderboard.csv").set_index("defense")
    # n/a is not a missing result: both defenses are complete, ranked on the attacks that ran
    assert board.loc[["normal", "topk"], "complete"].all()
    assert board.loc["normal", "deepinversion/mlp status"] == STATUS_NA
    markdown = (tmp_path / "digits" / "leaderboard.md").read_text()
    assert "n/a: attack deepinversion on mlp, not run: " in markdown and "no BatchNorm layer" in markdown
    assert "n/a: deepinversion, fast_dfkd cannot run on teacher mlp" in printed
    drops = printed.split("drop (points) per attack")[1].split(" The smallest")[0]
    assert "deepin-" in drops and drops.count(" n/a ") == 4  # two per defense (a long name takes two lines)
    files = {r.cell: store.path(r.cell).stat().st_mtime_ns for r in na}

    assert main(args) == 0  # again: nothing computed, the n/a records left as they are
    assert "0 cell(s) computed" in capsys.readouterr().out
    assert {r.cell: store.path(r.cell).stat().st_mtime_ns for r in na} == files
