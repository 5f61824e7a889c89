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
