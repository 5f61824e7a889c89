"""The black-box query attack: its threat model (an API only, a budget it stops at exactly, no labels),
its query sources, its loss on each access level, and its options."""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.api import AttackContext, DataAccess
from kdbench.attacks.blackbox import BlackboxConfig, BlackboxKD, imitation_loss
from kdbench.config.compose import compose_config
from kdbench.config.plan import plan_from_config
from kdbench.data.catalogue import load_dataset
from kdbench.data.images import DatasetConfig
from kdbench.errors import ConfigError
from kdbench.models import create_model
from kdbench.progress import Progress
from kdbench.serving.teacher import Access, QueryBudgetExceeded, Teacher, TeacherAPI
from kdbench.serving.threat_model import attacker_inputs
from kdbench.training.loop import Trainer
from kdbench.training.recipe import Recipe

LN3 = math.log(3.0)


@pytest.fixture(scope="module")
def data():
    cfg = DatasetConfig(name="synthetic", num_classes=4, shape=[1, 8, 8], train_size=128, test_size=64)
    return load_dataset(cfg)


@pytest.fixture
def teacher(data) -> Teacher:
    torch.manual_seed(0)
    return Teacher(create_model("digits_cnn", data.num_classes, data.input_shape))


def attack_context(data, access: DataAccess) -> AttackContext:
    recipe = Recipe(epochs=1, batch_size=32, optimizer="adam", lr=1e-3)
    trainer = Trainer(torch.device("cpu"), 0, recipe, Progress(quiet=True))
    return AttackContext(
        trainer=trainer,
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        data=None,
        generator=torch.Generator().manual_seed(0),
        description="test",
        input_format=data.input_format,
        inputs=attacker_inputs(access, data),
    )


def run_blackbox(teacher: Teacher, data, **options) -> tuple[BlackboxKD, TeacherAPI]:
    attack = BlackboxKD(BlackboxConfig(**options))
    api = teacher.api(attack.access, attack.query_budget, top_k=attack.top_k)
    student = create_model("mlp", data.num_classes, data.input_shape)
    attack.run(api, student, attack_context(data, attack.data_access))
    return attack, api


# -- threat model ------------------------------------------------------------------------------


def test_the_attack_stops_at_its_budget_exactly_and_the_api_refuses_more(teacher, data):
    _, api = run_blackbox(teacher, data, budget=100)  # fewer than the 128 training inputs
    assert api.queries == 100
    with pytest.raises(QueryBudgetExceeded, match="query budget of 100 inputs spent"):
        api(data.normalize(data.train.x[:1]))
    assert api.queries == 100


def test_a_finite_source_is_queried_once_per_input_and_noise_exactly_budget_times(teacher, data):
    assert run_blackbox(teacher, data, budget=50_000)[1].queries == len(data.train)
    assert run_blackbox(teacher, data, source="noise", budget=77)[1].queries == 77


def test_an_api_with_less_budget_than_the_attack_wants_stops_it_with_a_clear_error(teacher, data):
    attack = BlackboxKD(BlackboxConfig(budget=100))
    api = teacher.api(attack.access, 60)
    student = create_model("mlp", data.num_classes, data.input_shape)
    with pytest.raises(QueryBudgetExceeded, match="query budget of 60 inputs spent"):
        attack.run(api, student, attack_context(data, attack.data_access))
    assert api.queries <= 60


def test_the_attack_cannot_reach_the_teachers_parameters_or_gradients(teacher, data):
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    _, api = run_blackbox(teacher, data, budget=64)
    # nothing flowed back into the teacher: no gradient, no update, no BatchNorm statistics moved
    assert all(p.grad is None for p in teacher.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.model.state_dict().items())
    # its answers carry no autograd graph back to the teacher, even for inputs that require grad
    x = data.normalize(data.train.x[:4]).requires_grad_(True)
    answer = teacher.api(Access.LOGITS)(x)
    assert answer.grad_fn is None and not answer.requires_grad
    with pytest.raises(RuntimeError):
        torch.autograd.grad(answer.sum(), x)
    # and the API exposes no module, parameter or differentiable tensor among its attributes
    held = [v for k, v in vars(api).items() if not k.startswith("_")]
    assert not any(isinstance(v, torch.nn.Module | torch.nn.Parameter) for v in held)
    assert not any(isinstance(v, torch.Tensor) and v.requires_grad for v in held)


def test_the_runner_hands_a_black_box_attack_the_api_and_never_the_teacher(tmp_path, monkeypatch):
    from kdbench.cli import main

    seen = []
    original = BlackboxKD.run

    def spy(self, teacher, student, ctx):
        seen.append((teacher, ctx))
        return original(self, teacher, student, ctx)

    monkeypatch.setattr(BlackboxKD, "run", spy)
    args = ["run", "preset=tiny", "quiet=true", f"results_dir={tmp_path}", "defense=nasty", "attack=blackbox"]
    assert main([*args, "attack.blackbox.budget=90"]) == 0
    # the cell's own run, then the stealing curve's three smaller budgets: each sees the API only
    (view, ctx), *curve = seen
    assert [v.budget for v, _ in curve] == [11, 22, 45]  # 1/8, 1/4, 1/2 of the 90 queries made
    assert all(isinstance(v, TeacherAPI) and not isinstance(v, Teacher | torch.nn.Module) for v, _ in seen)
    assert view.access is Access.PROBABILITIES and view.budget == 90 and view.queries == 90
    assert ctx.data is None  # the training inputs without their labels, nothing else
    assert ctx.inputs is not None and ctx.inputs.dtype == torch.uint8 and len(ctx.inputs) == 128


# -- query sources -----------------------------------------------------------------------------


def test_the_train_source_holds_the_unlabelled_training_inputs_and_heldout_the_held_out_ones():
    data = load_dataset(DatasetConfig(name="digits", heldout_fraction=0.2))
    assert torch.equal(attacker_inputs(DataAccess.TRAIN_INPUTS, data), data.train.x)
    assert torch.equal(attacker_inputs(DataAccess.HELDOUT_INPUTS, data), data.heldout.x)
    assert attacker_inputs(DataAccess.NONE, data) is None
    assert attacker_inputs(DataAccess.TRAIN, data) is None  # labelled data travels as ctx.data
    without = load_dataset(DatasetConfig(name="digits"))
    with pytest.raises(ConfigError, match=r"has no held-out split: set dataset\.heldout_fraction"):
        attacker_inputs(DataAccess.HELDOUT_INPUTS, without)


@pytest.mark.parametrize(
    "source,expected",
    [("train", DataAccess.TRAIN_INPUTS), ("heldout", DataAccess.HELDOUT_INPUTS), ("noise", DataAccess.NONE)],
)
def test_the_source_sets_the_attacks_data_access(source, expected):
    assert BlackboxKD(BlackboxConfig(source=source)).data_access is expected
    assert BlackboxKD(BlackboxConfig(source="surrogate", surrogate="digits")).data_access is DataAccess.NONE


def test_surrogate_images_are_converted_to_the_teachers_input_format(data):
    attack = BlackboxKD(BlackboxConfig(source="surrogate", surrogate="digits", budget=300))
    ctx = attack_context(data, attack.data_access)
    assert ctx.inputs is None
    pool = attack.query_pool(ctx)
    assert pool.shape == (300, *data.input_shape) and pool.dtype == torch.uint8  # 8×8 grey at 0..16 → 0..255
    assert int(pool.max()) > 200


def test_the_default_matrix_queries_photographs_as_its_out_of_distribution_set():
    plan = plan_from_config(compose_config([]))
    ood = plan.attacks["blackbox_ood"]
    assert (ood.source, ood.surrogate, ood.surrogate_root) == ("surrogate", "photos", None)
    assert plan.attack_plugin("blackbox_ood") == "blackbox"


def test_photograph_patches_become_digit_sized_queries_different_from_every_digit(data):
    attack = BlackboxKD(BlackboxConfig(source="surrogate", surrogate="photos"))
    pool = attack.query_pool(attack_context(data, attack.data_access))
    assert pool.shape == (4096, *data.input_shape) and pool.dtype == torch.uint8  # every patch, once
    assert len(torch.unique(pool.flatten(1), dim=0)) == 4096
    # natural images: smooth, mostly mid-grey, where a digit is black with a few bright strokes
    digits_x = data.train.x.float()
    assert (pool.float() == 0).float().mean() < 0.5 * (digits_x == 0).float().mean()


def test_noise_queries_span_the_pixel_range_and_depend_only_on_the_seed(data):
    attack = BlackboxKD(BlackboxConfig(source="noise", budget=500))
    a, b = (attack.query_pool(attack_context(data, attack.data_access)) for _ in range(2))
    assert torch.equal(a, b) and a.shape == (500, *data.input_shape)
    assert int(a.min()) == 0 and int(a.max()) == 255


def test_a_held_out_source_needs_a_held_out_split_before_anything_trains():
    with pytest.raises(ConfigError, match=r"queries a held-out split.*set dataset\.heldout_fraction"):
        plan_from_config(compose_config(["attack=blackbox", "attack.blackbox.source=heldout"]))
    plan = plan_from_config(
        compose_config(["attack=blackbox", "attack.blackbox.source=heldout", "dataset.heldout_fraction=0.2"])
    )
    assert plan.dataset.heldout_fraction == 0.2


# -- the student's loss on each access level ---------------------------------------------------


def test_imitation_loss_on_logits_and_probabilities_is_tau_squared_kl():
    student = torch.tensor([[0.0, 0.0]])
    # answers p = [3/4, 1/4]; at τ=1: KL(p ‖ [½, ½]) = ¾·ln(3/2) + ¼·ln(1/2) = 0.130812
    logits = imitation_loss(student, torch.tensor([[LN3, 0.0]]), Access.LOGITS, tau=1.0)
    probs = imitation_loss(student, torch.tensor([[0.75, 0.25]]), Access.PROBABILITIES, tau=1.0)
    assert logits["kd"].item() == pytest.approx(0.130812, abs=1e-6)
    assert probs["kd"].item() == pytest.approx(0.130812, abs=1e-6)
    # at τ=2 the target is σ(ln p / 2) = [√3, 1]/(√3+1) either way: 4 · 0.036341 = 0.145364
    logits = imitation_loss(student, torch.tensor([[LN3, 0.0]]), Access.LOGITS, tau=2.0)
    probs = imitation_loss(student, torch.tensor([[0.75, 0.25]]), Access.PROBABILITIES, tau=2.0)
    assert logits["kd"].item() == pytest.approx(0.145364, abs=1e-6)
    assert probs["kd"].item() == pytest.approx(0.145364, abs=1e-6)


def test_imitation_loss_gives_classes_the_api_zeroed_a_zero_target():
    # top-k answer [1, 0, 0] against a uniform student: KL = ln 3, finite, with finite gradients
    student = torch.zeros(1, 3, requires_grad=True)
    loss = imitation_loss(student, torch.tensor([[1.0, 0.0, 0.0]]), Access.TOP_K, tau=1.0)["kd"]
    assert loss.item() == pytest.approx(LN3, abs=1e-6)
    loss.backward()
    assert torch.allclose(student.grad, torch.tensor([[-2 / 3, 1 / 3, 1 / 3]]), atol=1e-6)


def test_imitation_loss_on_labels_is_cross_entropy():
    terms = imitation_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1]), Access.TOP1_LABEL, tau=4.0)
    assert set(terms) == {"ce"} and terms["ce"].item() == pytest.approx(math.log(2), abs=1e-6)


@pytest.mark.parametrize("access,k", [("logits", None), ("top_k", 2), ("top1_label", None)])
def test_every_access_level_trains_a_student(teacher, data, access, k):
    _, api = run_blackbox(teacher, data, access=access, budget=64)
    assert api.access is Access(access) and api.top_k == k and api.queries == 64


# -- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options,message",
    [
        ({"source": "web"}, r"^source 'web' is unknown; allowed: train, heldout, surrogate, noise"),
        ({"access": "white_box"}, r"^access 'white_box' is unknown; allowed: logits, probabilities"),
        ({"source": "surrogate"}, r"^surrogate must name a dataset with source=surrogate; known datasets:"),
        (
            {"source": "surrogate", "surrogate": "mnist"},
            r"surrogate 'mnist' is not a dataset; known datasets: .*digits",
        ),
        ({"surrogate": "digits"}, r"only used with source=surrogate, not source=train"),
        ({"budget": 0}, r"^budget must be a positive number of queries, got 0"),
        ({"top_k": 0}, r"^top_k must be at least 1, got 0"),
        ({"tau": 0.0}, r"^tau must be > 0, got 0.0"),
    ],
)
def test_bad_options_are_one_clear_error(options, message):
    with pytest.raises(ConfigError, match=message):
        BlackboxConfig(**options)


def test_bad_options_are_refused_from_the_command_line_too():
    with pytest.raises(ConfigError, match=r"attack\.blackbox\.budget must be a positive number of queries, got -5"):
        plan_from_config(compose_config(["attack=blackbox", "attack.blackbox.budget=-5"]))
