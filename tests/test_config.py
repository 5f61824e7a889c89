"""Composition of the Hydra config tree and the up-front validation of every name and value."""

import pytest

from kdbench.config.compose import compose_config
from kdbench.config.plan import plan_from_config
from kdbench.errors import ConfigError
from kdbench.store.keys import cell_spec, network_identity


def plan(*overrides: str):
    return plan_from_config(compose_config(list(overrides)))


def test_defaults_are_the_digits_matrix():
    p = plan()
    assert p.dataset.name == "digits"
    assert p.teachers == ["digits_cnn"]
    assert p.students == ["mlp", "cnn1"]
    assert list(p.defenses) == [
        "normal",
        "nasty",
        "logit_noise",
        "topk",
        "reverse_sigmoid",
        "rounding",
        "mad",
        "adaptive_misinformation",
    ]
    assert list(p.attacks) == [
        "kd",
        "blackbox",
        "htc",
        "skeptical",
        "dafl",
        "deepinversion",
        "fast_dfkd",
        "dfme",
        "kd_t20",
        "blackbox_ood",
    ]
    assert p.seeds == [0]
    assert len(p.cells) == 8 * 10 * 2
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
    assert len(p.cells) == 8 * 10 * 1 * 3


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
        ("defense.nasty.tau=abc", r"^defense.nasty.tau must be a finite number, got 'abc'$"),
        ("attack.kd.alpha=1.5", r"attack.kd.alpha must be in \[0, 1\], got 1.5"),
        ("attack.kd.tau=-2", r"attack.kd.tau must be > 0, got -2"),
        ("train.epochs=0", r"train.epochs must be a positive integer, got 0"),
        ("train.optimizer=rmsprop", r"train.optimizer 'rmsprop' is unknown; allowed: sgd, adam"),
        ("seeds=0", r"seeds must be an integer from 1 to 1000"),
        ("device=tpu", r"unknown device 'tpu'; allowed: auto, cpu, cuda"),
        ("+attack.kd.beta=1", r"attack.kd"),
        # wrong types: the field and the type it takes, never a comparison error or OmegaConf's template
        ("train.epochs=nan", r"^train.epochs must be an integer, got nan$"),
        ("train.epochs=1.5", r"^train.epochs must be an integer, got 1.5$"),
        ("train.epochs=abc", r"^train.epochs must be an integer, got 'abc'$"),
        ("train.epochs=true", r"^train.epochs must be an integer, got True$"),
        ("train.epochs=-3", r"train.epochs must be a positive integer, got -3"),
        ("train.batch_size=nan", r"^train.batch_size must be an integer, got nan$"),
        ("train.batch_size=2.5", r"^train.batch_size must be an integer, got 2.5$"),
        ("train.batch_size=0", r"train.batch_size must be a positive integer, got 0"),
        ("train.lr=abc", r"^train.lr must be a finite number, got 'abc'$"),
        ("train.lr=nan", r"^train.lr must be a finite number, got nan$"),
        ("train.lr=0", r"train.lr must be > 0, got 0"),
        ("train.lr=-0.1", r"train.lr must be > 0, got -0.1"),
        ("train.momentum=-1", r"train.momentum must be in \[0, 1\], got -1"),
        ("train.momentum=1.5", r"train.momentum must be in \[0, 1\], got 1.5"),
        ("train.momentum=abc", r"^train.momentum must be a finite number, got 'abc'$"),
        ("train.weight_decay=-1", r"train.weight_decay must be >= 0 and finite, got -1"),
        ("train.weight_decay=inf", r"train.weight_decay must be a finite number, got inf"),
        ("train.gamma=-1", r"train.gamma \(the multistep factor\) must be > 0 and finite, got -1"),
        ("train.gamma=0", r"train.gamma \(the multistep factor\) must be > 0 and finite, got 0"),
        ("train.milestones=[abc]", r"^train.milestones must be a list of integers, got \['abc'\]$"),
        ("train.milestones=[1.5]", r"^train.milestones must be a list of integers, got \[1.5\]$"),
        ("train.milestones=5", r"^train.milestones must be a list of integers, got 5$"),
        ("train.milestones=[30,10]", r"train.milestones must be increasing positive epochs .*got \[30, 10\]"),
        ("train.milestones=[0]", r"train.milestones must be increasing positive epochs .*got \[0\]"),
        ("train.schedule=step", r"train.schedule 'step' is unknown; allowed: cosine, multistep, constant"),
        ("train.optimizer=3", r"^train.optimizer must be a string, got 3$"),
        ("+train.warmup=5", r"train: unknown option\(s\) warmup; allowed: batch_size, epochs"),
        ("+train_by_model.mlp.epochs=1.5", r"^train_by_model.mlp.epochs must be an integer, got 1.5$"),
        ("+train_by_model.mlp.lr=-1", r"train_by_model.mlp.lr must be > 0, got -1"),
        ("+train_by_model.nope.lr=1", r"unknown model 'nope'"),
        # plugin options: the field, the type it takes and the value given
        ("attack.kd.alpha=abc", r"^attack.kd.alpha must be a finite number, got 'abc'$"),
        ("attack.kd.tau=[1,2]", r"^attack.kd.tau must be a finite number, got \[1, 2\]$"),
        ("defense.nasty.omega=true", r"^defense.nasty.omega must be a finite number, got True$"),
        ("defense.nasty.tau=nan", r"^defense.nasty.tau must be a finite number, got nan$"),
        ("attack=blackbox attack.blackbox.budget=abc", r"^attack.blackbox.budget must be an integer, got 'abc'$"),
        ("attack=blackbox attack.blackbox.budget=0", r"attack.blackbox.budget must be a positive number of queries"),
        ("attack=blackbox attack.blackbox.access=everything", r"attack.blackbox.access"),
        ("defense=topk defense.topk.k=abc", r"^defense.topk.k must be an integer, got 'abc'$"),
        ("defense=topk defense.topk.k=0", r"defense.topk.k must be a positive number of classes, got 0"),
        # dataset options
        ("dataset=folder dataset.image_size=abc", r"^dataset.image_size must be an integer or null, got 'abc'$"),
        ("dataset=folder dataset.image_size=1.5", r"^dataset.image_size must be an integer or null, got 1.5$"),
        ("dataset=synthetic dataset.shape=[1,a]", r"^dataset.shape must be a list of integers, got \[1, 'a'\]$"),
        ("dataset=synthetic dataset.num_classes=abc", r"^dataset.num_classes must be an integer, got 'abc'$"),
        ("dataset.heldout_fraction=1.5", r"dataset.heldout_fraction must be from 0 to 0.9, got 1.5"),
        ("dataset=cifar10 device=cpu dataset.augment=maybe", r"^dataset.augment must be true or false, got 'maybe'$"),
        # seeds, milestones past the run's end
        ("seeds=1 seed=5", r"^seed=5 is not one of the run's seeds=0..0 \(seeds=1\); allowed: seed 0 to 0"),
        ("seeds=3 seed=3", r"^seed=3 is not one of the run's seeds=0..2 \(seeds=3\); allowed: seed 0 to 2"),
        ("seed=-1", r"seed must be a non-negative integer"),
        ("seeds=abc", r"seeds must be an integer, got .abc."),
        (
            "train.epochs=12 train.schedule=multistep train.milestones=[80,120]",
            r"^train.milestones \[80, 120\]: 80, 120 not before the last of train.epochs=12; "
            r"allowed: milestones 1 to 11",
        ),
        ("train.epochs=100 train.schedule=multistep train.milestones=[50,100]", r"100 not before the last of"),
        ("dataset=cifar10 device=cpu train.epochs=12", r"train.milestones \[80, 120\]: 80, 120 not before"),
        ("workers=0", r"workers must be an integer from 1 to 256, or auto, got 0"),
        ("precision=fp8", r"precision 'fp8' is unknown; allowed: auto, fp32, bf16"),
        ("channels_last=sometimes", r"channels_last must be auto, true or false"),
    ],
)
def test_bad_input_is_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=message) as raised:
        plan(*override.split())
    assert "\n" not in str(raised.value) and "$VALUE" not in str(raised.value)


def test_milestones_that_are_never_reached_are_allowed_without_a_multistep_schedule():
    p = plan("train.epochs=12", "train.schedule=cosine", "train.milestones=[80,120]")
    assert p.recipe.epochs == 12


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["defense=topk", "defense.topk.k=100"],
            r"defense.topk.k=100 exceeds the dataset's 4 classes; allowed: 1 to 4",
        ),
        (["defense=topk", "defense.topk.k=5"], r"defense.topk.k=5 exceeds the dataset's 4 classes; allowed: 1 to 4"),
        (
            ["attack=blackbox", "attack.blackbox.access=top_k", "attack.blackbox.top_k=9"],
            r"attack.blackbox.top_k=9 exceeds the dataset's 4 classes; allowed: 1 to 4",
        ),
        (["cache_dir={file}/cache"], r"cache folder {file}/cache is not writable \({file} is a file\)"),
        (["results_dir={file}"], r"results folder {file}/synthetic is not writable \({file} is a file\)"),
    ],
)
def test_what_depends_on_the_dataset_and_folders_is_refused_before_anything_is_written(tmp_path, overrides, message):
    from kdbench.errors import BenchError
    from kdbench.matrix.run import check_runnable

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    results = tmp_path / "results"
    overrides = [o.format(file=blocker) for o in overrides]
    p = plan("preset=tiny", f"results_dir={results}", *overrides)
    with pytest.raises(BenchError, match=message.format(file=blocker)):
        check_runnable(p)
    assert sorted(tmp_path.iterdir()) == [blocker]  # no results or cache folder made


def test_a_topk_that_fits_the_dataset_passes_the_check(tmp_path):
    from kdbench.matrix.run import check_runnable

    check_runnable(plan("preset=tiny", f"results_dir={tmp_path}", "defense=topk", "defense.topk.k=4"))


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
        before = (cell_spec(p, p.cells[0]), network_identity(p, "probe_mlp", 0))
        register(16)
        after = (cell_spec(p, p.cells[0]), network_identity(p, "probe_mlp", 0))
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
    keys = [cell_spec(p, c)["attack"] for c in p.cells]
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
        ("attack_variants.kd_t20.tau=-1", r"^attack_variants\.kd_t20\.tau must be > 0, got -1"),
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


def test_an_option_error_names_the_column_it_was_given_under():
    """A plugin names only its field; the framework prefixes where it was set (a variant: its own entry)."""
    with pytest.raises(ConfigError, match=r"^attack\.kd\.tau must be > 0, got -1"):
        plan_from_config(compose_config(["preset=tiny", "attack=kd", "attack.kd.tau=-1"]))
    variant = "+attack_variants.kd_hot={base: kd, tau: -2}"
    with pytest.raises(ConfigError, match=r"^attack_variants\.kd_hot\.tau must be > 0, got -2"):
        plan_from_config(compose_config(["preset=tiny", "attack=kd", variant]))


def test_a_run_compares_with_the_reference_folder_its_preset_names(tmp_path):
    assert plan_from_config(compose_config(["preset=tiny"])).reference_name == "synthetic"  # the dataset's
    plan = plan_from_config(compose_config(["preset=cifar10_cpu", f"results_dir={tmp_path}"]))
    assert plan.reference_name == "cifar10_cpu"
    assert plan.dataset.name == "cifar10"
    for bad in ("a/b", "..", "''"):
        with pytest.raises(ConfigError, match="reference_name must be a folder name inside reference_dir"):
            plan_from_config(compose_config(["preset=tiny", f"reference_name={bad}"]))
