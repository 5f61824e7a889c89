"""How the loop uses the device: what ``auto`` resolves to, fused optimizers, the teacher's layout."""

from __future__ import annotations

import pytest
import torch

from kdbench.config.compose import compose_config
from kdbench.config.plan import plan_from_config
from kdbench.errors import ConfigError
from kdbench.matrix.runner import Runner
from kdbench.progress import Progress
from kdbench.training.recipe import Acceleration, Recipe, adam, make_optimizer, resolve_acceleration


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("cpu", Acceleration(bf16=False, channels_last=True)),
        ("cuda", Acceleration(bf16=True, channels_last=True)),
        ("mps", Acceleration(bf16=False, channels_last=False)),
    ],
)
def test_auto_is_bf16_on_cuda_only_and_nhwc_on_cuda_and_cpu(device, expected):
    assert resolve_acceleration(torch.device(device), "auto", "auto", False) == expected


def test_explicit_settings_win_over_auto():
    assert resolve_acceleration(torch.device("cpu"), "bf16", False, True) == Acceleration(True, False, True)
    assert resolve_acceleration(torch.device("cuda"), "fp32", False, False) == Acceleration(False, False, False)


def test_bad_acceleration_settings_are_refused_naming_what_is_allowed():
    with pytest.raises(ConfigError, match="precision 'fp16' is unknown; allowed: auto, fp32, bf16"):
        resolve_acceleration(torch.device("cpu"), "fp16", "auto", False)
    with pytest.raises(ConfigError, match="channels_last must be auto, true or false, got 'yes'"):
        resolve_acceleration(torch.device("cpu"), "auto", "yes", False)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_cpu_parameters_get_a_fused_optimizer(optimizer):
    params = [torch.nn.Parameter(torch.ones(3))]
    assert make_optimizer(params, Recipe(optimizer=optimizer)).defaults["fused"] is True


def test_the_data_free_attacks_adam_is_fused_on_the_cpu_and_pytorchs_default_elsewhere():
    """DAFL's generator and DeepInversion's inputs step through ``adam``: fused where PyTorch can fuse."""
    assert adam([torch.zeros(4, requires_grad=True)], 0.1).defaults["fused"] is True
    assert adam([torch.zeros(4, device="meta", requires_grad=True)], 0.1).defaults["fused"] is None


def test_a_trained_teacher_serves_from_nhwc_weights_on_the_cpu(tmp_path):
    """Trained or loaded from the cache, a teacher's convolutions read NHWC inputs without conversion."""
    for _ in range(2):  # the second runner loads the first one's checkpoint
        cfg = compose_config(["preset=tiny", f"results_dir={tmp_path}", "quiet=true"])
        runner = Runner(plan_from_config(cfg), Progress(quiet=True))
        teacher = runner.teacher("digits_cnn", "nasty", 0).teacher
        convs = [m for m in teacher.model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


def sgd_steps(prefilled: bool, *, late_head: bool) -> list[torch.Tensor]:
    """Five steps of the recipe's fused SGD; with ``late_head`` a second head joins the loss at step 3
    (as the skeptical student's auxiliary heads do after its CE-only epochs)."""
    torch.manual_seed(0)
    body, head, late = torch.nn.Linear(6, 4), torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    params = [*body.parameters(), *head.parameters(), *late.parameters()]
    optimizer = make_optimizer(params, Recipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4))
    if not prefilled:
        optimizer.state.clear()  # PyTorch's own start: no momentum buffers
    generator = torch.Generator().manual_seed(1)
    for step in range(5):
        features = body(torch.randn(8, 6, generator=generator))
        loss = head(features).square().mean() + (late(features).square().mean() if late_head and step >= 2 else 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return [p.detach().clone() for p in params]


def test_fused_sgd_takes_parameters_that_join_the_loss_late_and_steps_as_pytorch_does():
    # PyTorch's fused SGD alone fails once some parameters have momentum buffers and others not yet
    with pytest.raises(TypeError, match="expected Tensor"):
        sgd_steps(prefilled=False, late_head=True)
    sgd_steps(prefilled=True, late_head=True)
    ours, pytorch = sgd_steps(prefilled=True, late_head=False), sgd_steps(prefilled=False, late_head=False)
    assert all(torch.equal(a, b) for a, b in zip(ours, pytorch, strict=True))  # the same bits otherwise


def test_the_skeptical_student_trains_with_the_recipes_sgd(tmp_path):
    """Its auxiliary heads join the loss after the CE-only epochs: with fused SGD this crashed the
    cell (found on CIFAR-10, whose recipe is SGD; the digits recipe is Adam)."""
    from kdbench.matrix.run import run_matrix

    overrides = ["preset=tiny", "attack=skeptical", "defense=normal", "train.optimizer=sgd", "train.epochs=4"]
    plan = plan_from_config(compose_config([*overrides, f"results_dir={tmp_path}", "quiet=true"]))
    records = run_matrix(plan, Progress(quiet=True))
    assert [(r.attack, r.status) for r in records] == [("skeptical", "ok")]
