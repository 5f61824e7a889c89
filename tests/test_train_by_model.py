"""``train_by_model.<arch>``: the recipe fields one architecture trains with instead of ``train``'s."""

import pytest

from kdbench.cli import main
from kdbench.config.compose import compose_config
from kdbench.config.plan import plan_from_config
from kdbench.errors import ConfigError
from kdbench.store.keys import cell_spec, network_identity


def plan(*overrides: str):
    return plan_from_config(compose_config(["preset=tiny", *overrides]))


def test_an_architecture_takes_its_own_fields_and_the_rest_of_train():
    p = plan("+train_by_model.mlp.lr=0.003", "+train_by_model.mlp.optimizer=adam", "train.batch_size=16")
    mlp = p.recipe_for("mlp")
    assert (mlp.lr, mlp.optimizer, mlp.batch_size, mlp.epochs) == (0.003, "adam", 16, 2)
    assert p.recipe_for("digits_cnn") == p.recipe


def test_it_changes_the_keys_of_that_architecture_only():
    before, after = plan(), plan("+train_by_model.mlp.lr=0.003")
    assert network_identity(before, "digits_cnn", 0) == network_identity(after, "digits_cnn", 0)
    assert network_identity(before, "mlp", 0) != network_identity(after, "mlp", 0)
    assert cell_spec(before, before.cells[0]) != cell_spec(after, after.cells[0])  # the cells train an mlp student


@pytest.mark.parametrize(
    "override,message",
    [
        ("+train_by_model.bogus.lr=1", r"unknown model 'bogus'"),
        ("+train_by_model.mlp.lr=-1", r"^train_by_model.mlp.lr must be > 0, got -1$"),
        ("+train_by_model.mlp.speed=3", r"train_by_model.mlp: unknown option\(s\) speed; allowed: batch_size"),
        ("+train_by_model.mlp=3", r"train_by_model.mlp must map recipe fields to values"),
    ],
)
def test_bad_per_model_recipes_are_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        plan(override)


def test_changing_one_students_recipe_recomputes_only_its_cells(tmp_path, capsys):
    common = ["preset=tiny", "student=[mlp,cnn1]", "quiet=true", f"results_dir={tmp_path}"]
    assert main(["run", "all", *common]) == 0
    capsys.readouterr()
    assert main(["run", "all", *common, "+train_by_model.mlp.lr=0.01"]) == 0
    assert "2 cell(s) computed, 2 reused" in capsys.readouterr().out
