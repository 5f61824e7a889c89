"""DAFL and DeepInversion as plugins: their threat model, budgets, pool reuse and configuration."""

import pytest
import torch
import torch.nn.functional as F

import kdbench.attacks.dafl as dafl_module
from kdbench.api import ATTACKS, AttackContext, DataAccess
from kdbench.attacks.dafl import DAFL, DAFLConfig, Generator, teacher_logits_and_features
from kdbench.attacks.deepinversion import DeepInversion, DeepInversionConfig, batchnorm_layers, batchnorm_statistics
from kdbench.attacks.student_recipe import student_recipe
from kdbench.config.compose import compose_config
from kdbench.config.plan import plan_from_config
from kdbench.data.images import ImageData, Split
from kdbench.errors import ConfigError
from kdbench.matrix.run import run_matrix
from kdbench.models import create_model
from kdbench.progress import Progress
from kdbench.serving.teacher import Access, Teacher
from kdbench.store.records import Record
from kdbench.training.loop import Trainer
from kdbench.training.recipe import Recipe

DATA_FREE = ["dafl", "deepinversion", "fast_dfkd"]


def plan(*overrides: str):
    return plan_from_config(compose_config(list(overrides)))


def run_tiny(tmp_path, *overrides: str) -> list[Record]:
    """The tiny preset's matrix with ``overrides``, computed in this process; its records."""
    return run_matrix(plan("preset=tiny", f"results_dir={tmp_path}", "quiet=true", *overrides), Progress(quiet=True))


def trained_teacher(shape=(1, 8, 8), classes=4) -> Teacher:
    """A digits_cnn whose BatchNorm layers hold non-trivial running statistics and whose logits
    respond to its input (a scaled-up head)."""
    torch.manual_seed(0)
    model = create_model("digits_cnn", classes, shape)
    model.train()
    for layer in batchnorm_layers(model):
        layer.momentum = None  # running statistics: the plain average over the batches below
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, *shape) * 2 + 0.5)
        model.head.weight.mul_(20)
    return Teacher(model)


def context(shape=(1, 8, 8), classes=4, seed=0, stream_seed=0) -> AttackContext:
    recipe = Recipe(epochs=1, batch_size=16, optimizer="adam", lr=1e-3)
    trainer = Trainer(torch.device("cpu"), seed, recipe, Progress(quiet=True))
    return AttackContext(trainer, classes, shape, None, torch.Generator().manual_seed(stream_seed), "test")


# -- the threat model -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATA_FREE)
def test_data_free_attacks_are_white_box_and_hold_no_data(name):
    attack = ATTACKS.get(name).factory
    assert attack.access is Access.WHITE_BOX
    assert attack.data_access is DataAccess.NONE


@pytest.mark.parametrize("name", DATA_FREE)
def test_the_runner_hands_the_teacher_itself_and_never_the_training_data(tmp_path, monkeypatch, name):
    cls = ATTACKS.get(name).factory
    original = cls.run
    seen = {}

    def refuse(*args, **kwargs):
        raise AssertionError("a data-free attack read the owner's dataset")

    def spy(self, teacher, student, ctx):
        seen["teacher"], seen["ctx"] = teacher, ctx
        with monkeypatch.context() as patch:  # the dataset is unreadable while the attack runs
            patch.setattr(ImageData, "batches", refuse)
            patch.setattr(ImageData, "normalize", refuse)
            return original(self, teacher, student, ctx)

    monkeypatch.setattr(cls, "run", spy)
    records = run_tiny(tmp_path, f"attack={name}", "defense=normal")
    assert [r.status for r in records] == ["ok"], records[0].reason
    assert isinstance(seen["teacher"], Teacher)
    ctx = seen["ctx"]
    assert ctx.data is None
    held = [*vars(ctx).values(), *vars(ctx.trainer).values()]
    assert not any(isinstance(value, ImageData | Split | torch.Tensor) for value in held)


# -- DAFL -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 64, 64), (3, 28, 20)])
def test_the_generator_fits_any_input_shape_and_normalises_its_batch(shape):
    torch.manual_seed(0)
    x = Generator(16, shape)(torch.randn(6, 16))
    assert x.shape == (6, *shape)
    per_channel = x.transpose(0, 1).reshape(shape[0], -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(shape[0]), atol=1e-4)
    assert torch.allclose(per_channel.var(1, unbiased=False), torch.ones(shape[0]), atol=1e-2)


def test_dafl_reads_the_penultimate_features_and_the_served_logits():
    teacher = trained_teacher()
    x = torch.randn(5, 1, 8, 8)
    logits, features = teacher_logits_and_features(teacher, x)
    assert torch.allclose(logits, teacher.model(x), atol=1e-6)
    assert torch.allclose(features, teacher.model.forward_features(x))
    perturbed = Teacher(teacher.model, serve=lambda x: -teacher.model(x), perturbed=True)
    logits, _ = teacher_logits_and_features(perturbed, x)
    assert torch.allclose(logits, -teacher.model(x), atol=1e-6)


def test_dafl_runs_a_perturbed_teachers_network_once_per_batch():
    """A logit defense's perturbation applies to the logits of the pass that gave the features."""
    teacher = trained_teacher()
    x = torch.randn(5, 1, 8, 8)
    perturbed = Teacher(teacher.model, perturb=lambda logits, inputs: logits.flip(1) + inputs.mean())
    calls = []
    hook = teacher.model.body.register_forward_hook(lambda *_: calls.append(1))
    logits, features = teacher_logits_and_features(perturbed, x)
    hook.remove()
    assert len(calls) == 1
    assert torch.allclose(logits, teacher.model(x).flip(1) + x.mean(), atol=1e-6)
    assert torch.allclose(features, teacher.model.forward_features(x))


def test_dafl_trains_the_student_and_leaves_the_teacher_untouched():
    teacher = trained_teacher()
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    torch.manual_seed(1)
    student = create_model("mlp", 4, (1, 8, 8))
    start = [p.clone() for p in student.parameters()]
    DAFL(DAFLConfig(epochs=2, iters_per_epoch=3, batch_size=8)).run(teacher, student, context())
    assert all(not torch.equal(a, b) for a, b in zip(start, student.parameters(), strict=True))
    after = teacher.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in teacher.model.parameters())


def trained_dafl_student(teacher: Teacher, arch: str, cfg: DAFLConfig, **context_options) -> torch.nn.Module:
    torch.manual_seed(1)
    student = create_model(arch, 4, (1, 8, 8))
    return DAFL(cfg).run(teacher, student, context(**context_options))


def test_a_second_student_replays_the_generated_batches_and_trains_as_in_its_own_joint_loop(monkeypatch):
    """The generator never reads the student: a student replaying the first one's recorded batches
    ends with the very weights it gets from a joint loop of its own (a fresh teacher object)."""
    cfg = DAFLConfig(epochs=2, iters_per_epoch=3, batch_size=8, latent_dim=16, generator_width=8)
    calls = []
    original = dafl_module.generator_step
    monkeypatch.setattr(dafl_module, "generator_step", lambda *a: calls.append(1) or original(*a))
    shared = trained_teacher()
    trained_dafl_student(shared, "cnn1", cfg, stream_seed=5)  # the first student: the joint loop
    assert len(calls) == 6
    replayed = trained_dafl_student(shared, "mlp", cfg, stream_seed=7)
    assert len(calls) == 6  # no generator step for the second student
    alone = trained_dafl_student(trained_teacher(), "mlp", cfg, stream_seed=7)
    assert len(calls) == 12
    for a, b in zip(replayed.state_dict().values(), alone.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other_seed = trained_dafl_student(shared, "mlp", cfg, seed=3)  # another run seed: another generator
    assert len(calls) == 18
    assert not torch.equal(other_seed.head.weight, replayed.head.weight)


def test_dafl_keeps_no_sequence_beyond_the_memory_limit(monkeypatch):
    cfg = DAFLConfig(epochs=1, iters_per_epoch=2, batch_size=8, latent_dim=16, generator_width=8)
    monkeypatch.setattr(dafl_module, "RECORD_LIMIT_BYTES", 0)
    calls = []
    original = dafl_module.generator_step
    monkeypatch.setattr(dafl_module, "generator_step", lambda *a: calls.append(1) or original(*a))
    teacher = trained_teacher()
    trained_dafl_student(teacher, "mlp", cfg)
    trained_dafl_student(teacher, "cnn1", cfg)
    assert len(calls) == 4  # each student trained its own generator


# -- DeepInversion --------------------------------------------------------------------------------


@pytest.fixture
def synthesis_calls(monkeypatch) -> list:
    """The ``student`` argument of every DeepInversion synthesis (None: a pool for any student)."""
    calls = []
    original = DeepInversion.synthesize

    def counting(self, teacher, ctx, *, student=None):
        calls.append(student)
        return original(self, teacher, ctx, student=student)

    monkeypatch.setattr(DeepInversion, "synthesize", counting)
    return calls


def test_deepinversion_synthesises_one_pool_per_teacher_for_every_student(tmp_path, synthesis_calls):
    calls = synthesis_calls
    records = run_tiny(tmp_path, "attack=deepinversion", "defense=normal", "student=[mlp,cnn1]")
    assert [r.status for r in records] == ["ok", "ok"]
    assert calls == [None]


def test_adaptive_deepinversion_synthesises_against_each_student(tmp_path, synthesis_calls):
    calls = synthesis_calls
    records = run_tiny(
        tmp_path, "attack=deepinversion", "defense=normal", "student=[mlp,cnn1]", "attack.deepinversion.adaptive=true"
    )
    assert [r.status for r in records] == ["ok", "ok"], [r.reason for r in records]
    assert len(calls) == 2 and all(isinstance(s, torch.nn.Module) for s in calls)


def test_the_pool_depends_on_the_run_seed_not_on_the_students_stream():
    teacher = trained_teacher()
    attack = DeepInversion(DeepInversionConfig(pool_size=12, batch_size=8, steps=3))
    a = attack.synthesize(teacher, context(stream_seed=1))
    b = attack.synthesize(teacher, context(stream_seed=2))
    c = attack.synthesize(teacher, context(seed=5))
    assert a.shape == (12, 1, 8, 8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def synthesized(teacher: Teacher, steps: int, **options) -> torch.Tensor:
    cfg = DeepInversionConfig(pool_size=16, batch_size=16, steps=steps, lr=0.1, jitter=0, flip=False, **options)
    return DeepInversion(cfg).synthesize(teacher, context())


def test_synthesis_moves_the_inputs_toward_their_targets():
    teacher = trained_teacher()
    targets = torch.arange(16) % 4
    ce = [F.cross_entropy(teacher(synthesized(teacher, steps, w_bn=0.0)), targets) for steps in (1, 40)]
    assert ce[1] < ce[0] * 0.5


def test_synthesis_moves_the_batch_statistics_toward_the_running_ones():
    teacher = trained_teacher()

    def bn_loss(x: torch.Tensor) -> float:
        with batchnorm_statistics(teacher.model) as hooks:
            teacher(x)
            return sum(hook.loss for hook in hooks).item()

    losses = [bn_loss(synthesized(teacher, steps)) for steps in (1, 40)]
    assert losses[1] < losses[0] * 0.5


def test_adaptive_synthesis_leaves_the_student_trainable_and_distils_between_rounds():
    teacher = trained_teacher()
    torch.manual_seed(1)
    student = create_model("mlp", 4, (1, 8, 8))
    start = [p.clone() for p in student.parameters()]
    attack = DeepInversion(DeepInversionConfig(pool_size=16, batch_size=8, steps=2, adaptive=True))
    attack.synthesize(teacher, context(), student=student)
    assert all(p.requires_grad for p in student.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(start, student.parameters(), strict=True))


def test_a_teacher_without_batchnorm_is_refused_before_training():
    with pytest.raises(ConfigError, match="teacher 'mlp' has no BatchNorm layer"):
        plan("teacher=mlp", "attack=deepinversion")
    assert list(plan("teacher=mlp", "attack=dafl").attacks) == ["dafl"]  # DAFL needs none


def test_a_teacher_without_batchnorm_is_refused_by_the_attack_itself():
    teacher = Teacher(create_model("mlp", 4, (1, 8, 8)))
    with pytest.raises(ConfigError, match="no BatchNorm layer"):
        DeepInversion(DeepInversionConfig()).run(teacher, create_model("mlp", 4, (1, 8, 8)), context())


# -- budgets and configuration --------------------------------------------------------------------


def test_both_attacks_are_columns_of_the_default_matrix():
    p = plan()
    assert {"dafl", "deepinversion"} <= set(p.attacks)
    assert len(p.cells) == len(p.defenses) * len(p.attacks) * 2


def test_the_student_recipe_takes_the_attack_epochs_and_scales_milestones():
    base = Recipe(epochs=160, lr=0.1, schedule="multistep", milestones=[80, 120])
    stretched = student_recipe(base, epochs=2000, overrides={})
    assert (stretched.epochs, stretched.milestones, stretched.lr) == (2000, [1000, 1500], 0.1)
    own = student_recipe(base, epochs=2000, overrides={"milestones": [800, 1600], "lr": 0.05})
    assert (own.milestones, own.lr) == ([800, 1600], 0.05)


def test_the_paper_preset_sets_the_published_budgets():
    p = plan("dataset=cifar10", "device=cpu", "preset=paper_datafree", "attack=[dafl,deepinversion]")
    dafl, di = p.attacks["dafl"], p.attacks["deepinversion"]
    assert (dafl.epochs, dafl.iters_per_epoch, dafl.batch_size, dafl.latent_dim) == (2000, 120, 1024, 1000)
    assert (dafl.w_one_hot, dafl.w_entropy, dafl.w_activation) == (0.05, 5.0, 0.01)
    assert dafl.student_recipe["milestones"] == [800, 1600] and dafl.student_recipe["lr"] == 0.1
    assert (di.batch_size, di.steps, di.lr, di.w_bn, di.jitter, di.flip) == (256, 2000, 0.05, 10.0, 2, False)
    p = plan("dataset=cifar100", "device=cpu", "preset=paper_datafree", "attack=dafl")
    assert (p.attacks["dafl"].w_one_hot, p.attacks["dafl"].w_entropy, p.attacks["dafl"].w_activation) == (0.5, 20, 0.1)


@pytest.mark.parametrize("overrides", [["dataset=cifar10"], ["dataset=cifar100"], ["preset=cifar10_cpu"]])
def test_dafl_on_cifar_trains_its_generator_at_the_rate_of_the_reference_cifar_commands(overrides):
    # the README's CIFAR-10 and CIFAR-100 commands: --lr_G 0.02; 0.2 is the class default, its MNIST rate
    p = plan(*overrides, "device=cpu", "defense=normal", "attack=dafl")
    assert p.attacks["dafl"].generator_lr == 0.02


@pytest.mark.parametrize(
    "override,message",
    [
        ("attack.dafl.epochs=0", r"attack.dafl.epochs must be a positive integer, got 0"),
        ("attack.dafl.generator_width=1", r"attack.dafl.generator_width must be an integer >= 2, got 1"),
        ("attack.dafl.generator_lr=-1", r"attack.dafl.generator_lr must be > 0, got -1"),
        ("attack.dafl.w_entropy=-5", r"attack.dafl.w_entropy must be >= 0, got -5"),
        ("+attack.dafl.student_recipe.epochs=3", r"attack.dafl.student_recipe: .*epochs.*allowed: gamma"),
        ("++attack.dafl.student_recipe.lr=-1", r"attack.dafl.student_recipe.lr must be > 0, got -1"),
        ("++attack.dafl.student_recipe.optimizer=lbfgs", r"student_recipe.optimizer .lbfgs. is unknown"),
        ("attack.deepinversion.steps=0", r"attack.deepinversion.steps must be a positive integer, got 0"),
        ("attack.deepinversion.jitter=-1", r"attack.deepinversion.jitter must be an integer >= 0, got -1"),
        ("attack.deepinversion.w_bn=-1", r"attack.deepinversion.w_bn must be >= 0, got -1"),
        ("attack.deepinversion.tau=0", r"attack.deepinversion.tau must be > 0, got 0"),
        ("attack.deepinversion.pool_size=abc", r"^attack.deepinversion.pool_size must be an integer, got 'abc'$"),
    ],
)
def test_bad_options_are_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        plan(override)
