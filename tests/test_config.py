"""Composition of the Hydra config tree and the up-front validation of every name and value."""

import pytest
from kdbench.config import compose_config, plan_from_config
from kdbench.errors import ConfigError


def plan(*overrides: str):
    return plan_from_config(compose_config(list(overrides)))


def test_defaults_are_the_digits_matrix():
    p = plan()
    assert p.dataset.name == "digits"
    assert p.teachers == ["digits_cnn"]
    assert p.students == ["mlp", "cnn1"]
    assert list(p.defenses) == ["normal", "nasty", "logit_noise", "topk", "reverse_sigmoid"]
    assert list(p.attacks) == ["kd", "blackbox", "htc", "skeptical", "dafl", "deepinversion", "kd_t20"]
    assert p.seeds == [0]
    assert len(p.cells) == 5 * 7 * 2
    assert p.defenses["nasty"].tau == 4.0 and p.defenses["nasty"].omega == pytest.approx(0.04)


def test_a_slice_selects_one_cell():
    p = plan("defense=nasty", "attack=kd", "student=mlp", "attack_variants=null")
    assert [(c.teacher, c.defense, c.attack, c.student, c.seed) for c in p.cells] == [
        ("digits_cnn", "nasty", "kd", "mlp", 0)
    ]


def test_plugin_options_and_seeds_are_overridable():
    p = plan("defense.nasty.tau=8", "attack.kd.alpha=0.5", "seeds=3", "student=[mlp]")
    assert p.defenses["nasty"].tau == 8.0
    assert p.attacks["kd"].alpha == 0.5
    assert p.seeds == [0, 1, 2]
    assert len(p.cells) == 5 * 7 * 1 * 3


def test_a_dataset_tunes_a_plugin_without_selecting_it():
    p = plan("dataset=cifar100", "defense=normal", "device=cpu")
    assert list(p.defenses) == ["normal"]
    p = plan("dataset=cifar100", "device=cpu")
    assert (p.defenses["nasty"].tau, p.defenses["nasty"].omega) == (20.0, 0.005)
    assert p.defenses["topk"].kept(100) == 10
    assert p.recipe.milestones == [60, 120, 160] and p.recipe.gamma == 0.2


def test_the_command_line_wins_over_the_dataset_defaults():
    p = plan("dataset=cifar100", "defense.nasty.tau=7", "device=cpu")
    assert p.defenses["nasty"].tau == 7.0


@pytest.mark.parametrize(
    "override,message",
    [
        ("attack=bogus", r"Could not find 'attack/bogus'.*Available options in 'attack':.*kd"),
        ("defense=bogus", r"Could not find 'defense/bogus'.*nasty.*normal"),
        ("dataset=bogus", r"Could not find 'dataset/bogus'.*cifar10.*digits"),
        ("student=bogus", r"unknown model 'bogus'; known models: .*mlp"),
        ("teacher=bogus", r"unknown model 'bogus'; known models: .*digits_cnn"),
        ("student=timm/not_a_model_xyz", r"unknown timm model 'not_a_model_xyz'"),
        ("defense.nasty.tau=0", r"defense.nasty.tau must be > 0, got 0"),
        ("defense.nasty.omega=-1", r"defense.nasty.omega must be >= 0, got -1"),
        ("defense.nasty.tau=abc", r"defense.nasty.tau=abc"),
        ("attack.kd.alpha=1.5", r"attack.kd.alpha must be in \[0, 1\], got 1.5"),
        ("attack.kd.tau=-2", r"attack.kd.tau must be > 0, got -2"),
        ("train.epochs=0", r"train.epochs must be a positive integer, got 0"),
        ("train.optimizer=rmsprop", r"train.optimizer 'rmsprop' is unknown; allowed: sgd, adam"),
        ("seeds=0", r"seeds must be a positive integer"),
        ("device=tpu", r"unknown device 'tpu'; allowed: auto, cpu, cuda"),
        ("+attack.kd.beta=1", r"attack.kd"),
    ],
)
def test_bad_input_is_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        plan(override)


def test_cuda_without_a_gpu_is_refused_before_training():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        plan("device=cuda")


def test_editing_an_architecture_changes_every_key_that_uses_it():
    from kdbench.models import MODELS, architecture_fingerprint
    from kdbench.models.digits import MLP

    def register(hidden):
        MODELS.unregister("probe_mlp")
        MODELS.add("probe_mlp", lambda nc, s: MLP(nc, s[0] * s[1] * s[2], hidden))
        architecture_fingerprint.cache_clear()

    try:
        register(8)
        p = plan("student=probe_mlp", "teacher=probe_mlp", "attack=kd")
        before = (p.cell_key(p.cells[0]), p.network_identity("probe_mlp", 0))
        register(16)
        after = (p.cell_key(p.cells[0]), p.network_identity("probe_mlp", 0))
        assert before[0] != after[0] and before[1] != after[1]
    finally:
        MODELS.unregister("probe_mlp")
        architecture_fingerprint.cache_clear()


@pytest.mark.parametrize(
    "dataset,classes,k",
    [("digits", 10, 2), ("cifar10", 10, 2), ("cifar100", 100, 10), ("tinyimagenet", 200, 20)],
)
def test_the_stingy_teacher_keeps_the_reference_share_of_each_datasets_classes(dataset, classes, k):
    # HowieMa/stingy-teacher: int(sparse_ratio · classes), sparse_ratio 0.2 on CIFAR-10, 0.1 on
    # CIFAR-100 and Tiny-ImageNet; digits has CIFAR-10's 10 classes and its ratio
    topk = plan(f"dataset={dataset}", "device=cpu").defenses["topk"]
    assert topk.k is None and topk.kept(classes) == k
    assert plan(f"dataset={dataset}", "device=cpu", "defense.topk.k=3").defenses["topk"].kept(classes) == 3


def test_the_stingy_teachers_share_is_floored_at_one_class():
    from kdbench.defenses.topk import TopKConfig

    assert TopKConfig().kept(4) == 1  # ⌊0.1 · 4⌋ = 0 → 1
    assert TopKConfig().kept(10) == 1 and TopKConfig(ratio=0.2).kept(10) == 2


# -- attack variants ---------------------------------------------------------------------------


def test_the_digits_matrix_has_kd_at_tau_4_and_at_tau_20():
    p = plan("attack=kd", "defense=nasty", "student=mlp")
    assert list(p.attacks) == ["kd", "kd_t20"]
    assert (p.attacks["kd"].tau, p.attacks["kd_t20"].tau) == (4.0, 20.0)
    assert p.attack_plugin("kd_t20") == "kd" and p.attack_plugin("kd") == "kd"
    assert [c.attack for c in p.cells] == ["kd", "kd_t20"]
    keys = [p.cell_key(c)["attack"] for c in p.cells]
    assert keys[0] == {"kd": {"alpha": 0.9, "tau": 4.0}}
    assert keys[1] == {"kd_t20": {"base": "kd", "alpha": 0.9, "tau": 20.0}}


def test_a_variant_takes_its_bases_options_and_changes_only_its_own():
    p = plan("attack=kd", "attack.kd.alpha=0.5", "+attack_variants.kd_a1={base: kd, alpha: 1.0}")
    assert (p.attacks["kd_t20"].alpha, p.attacks["kd_t20"].tau) == (0.5, 20.0)
    assert (p.attacks["kd_a1"].alpha, p.attacks["kd_a1"].tau) == (1.0, 4.0)


def test_a_variant_joins_only_with_its_base():
    assert list(plan("attack=htc").attacks) == ["htc"]
    assert list(plan("attack=kd", "attack_variants=null").attacks) == ["kd"]


@pytest.mark.parametrize(
    "override,message",
    [
        ("attack_variants.kd_t20.tau=-1", r"attack\.kd\.tau must be > 0, got -1"),
        ("+attack_variants.kd_t20.beta=1", r"attack_variants\.kd_t20: unknown option\(s\) beta; allowed: alpha, tau"),
        ("+attack_variants.htc={base: kd}", r"'htc' is already a registered attack"),
        ("+attack_variants.x={base: nope}", r"unknown attack 'nope'"),
        ("+attack_variants.x={tau: 2}", r"attack_variants\.x must set base"),
    ],
)
def test_a_bad_variant_is_one_clear_line(override, message):
    with pytest.raises(ConfigError, match=message):
        plan("attack=kd", override)


def test_bench_list_shows_the_variants(capsys):
    from kdbench.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "attack variants" in out and "kd_t20" in out and "tau=20.0" in out
