"""Golden values for the generic distillation losses, computed by hand from the formulas in REFERENCES.md."""

import math

import pytest
import torch

from kdbench.training.losses import cross_entropy, kd_loss, soft_kl

LN3 = math.log(3.0)


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def test_soft_kl_takes_the_first_argument_as_the_target_distribution():
    # teacher logits [ln 3, 0] at τ=1 → p = [3/4, 1/4]; student logits [0, 0] → q = [1/2, 1/2]
    value = soft_kl(torch.tensor([[LN3, 0.0]]), torch.tensor([[0.0, 0.0]]), tau=1.0)
    # KL(p‖q) = 3/4·ln(3/2) + 1/4·ln(1/2) = 0.130812; KL(q‖p) would be 0.143841
    assert value.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), abs=1e-6)
    assert value.item() == pytest.approx(0.130812, abs=1e-6)


def test_soft_kl_averages_over_the_batch():
    target = torch.tensor([[LN3, 0.0], [0.0, 0.0]])
    inputs = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    assert soft_kl(target, inputs, tau=1.0).item() == pytest.approx(0.130812 / 2, abs=1e-6)


def test_kd_loss_is_alpha_tau_squared_kl_plus_weighted_ce():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[LN3, 0.0]])
    labels = torch.tensor([0])
    terms = kd_loss(student, teacher, labels, alpha=0.9, tau=2.0)
    # τ=2: teacher logits/τ = [ln3/2, 0] → p = [√3/(√3+1), 1/(√3+1)] = [0.633975, 0.366025]
    p = [math.sqrt(3) / (math.sqrt(3) + 1), 1 / (math.sqrt(3) + 1)]
    expected_kl = kl(p, [0.5, 0.5])
    assert expected_kl == pytest.approx(0.036341, abs=1e-6)
    assert terms["kd"].item() == pytest.approx(0.9 * 4.0 * expected_kl, abs=1e-6)  # 0.130827
    assert terms["ce"].item() == pytest.approx(0.1 * math.log(2.0), abs=1e-6)  # 0.069315
    assert set(terms) == {"kd", "ce"}


def test_kd_loss_with_alpha_one_ignores_labels_and_with_alpha_zero_is_ce():
    student = torch.tensor([[1.0, -1.0, 0.5]])
    teacher = torch.tensor([[0.2, 0.1, 3.0]])
    only_kd = kd_loss(student, teacher, torch.tensor([1]), alpha=1.0, tau=4.0)
    assert only_kd["ce"].item() == 0.0
    only_ce = kd_loss(student, teacher, torch.tensor([1]), alpha=0.0, tau=4.0)
    assert only_ce["kd"].item() == 0.0
    assert only_ce["ce"].item() == pytest.approx(
        -math.log(math.exp(-1.0) / (math.exp(1.0) + math.exp(-1.0) + math.exp(0.5))), abs=1e-6
    )


def test_cross_entropy_term():
    assert cross_entropy(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))["ce"].item() == pytest.approx(math.log(2))
