"""Golden values for the Nasty Teacher's loss, computed by hand from the formula in REFERENCES.md."""

import math

import pytest
import torch

from kdbench.defenses.nasty import nasty_loss

LN3 = math.log(3.0)


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def test_nasty_loss_subtracts_omega_tau_squared_kl_with_the_nasty_teacher_as_target():
    nasty = torch.tensor([[LN3, 0.0, 0.0]])
    adversary = torch.tensor([[0.0, LN3, 0.0]])
    labels = torch.tensor([0])
    terms = nasty_loss(nasty, adversary, labels, omega=0.04, tau=1.0)
    p_t, p_a = [0.6, 0.2, 0.2], [0.2, 0.6, 0.2]  # softmax([ln3, 0, 0]) = [3/5, 1/5, 1/5]
    assert terms["ce"].item() == pytest.approx(-math.log(0.6), abs=1e-6)  # 0.510826
    assert terms["adversarial"].item() == pytest.approx(-0.04 * kl(p_t, p_a), abs=1e-6)  # −0.04·0.439445
    assert terms["adversarial"].item() < 0  # maximising the divergence lowers the loss


def test_nasty_loss_direction_and_tau_factor_on_an_asymmetric_case():
    nasty = torch.tensor([[2.0, 0.0, 0.0]])
    adversary = torch.tensor([[0.0, 0.0, 0.0]])
    terms = nasty_loss(nasty, adversary, torch.tensor([0]), omega=0.5, tau=2.0)
    z = math.e + 2  # softmax([2,0,0]/2) = [e, 1, 1] / (e + 2)
    p_t = [math.e / z, 1 / z, 1 / z]
    uniform = [1 / 3] * 3
    expected = -0.5 * 4.0 * kl(p_t, uniform)
    assert terms["adversarial"].item() == pytest.approx(expected, abs=1e-6)
    assert terms["adversarial"].item() != pytest.approx(-0.5 * 4.0 * kl(uniform, p_t), abs=1e-4)


def test_nasty_loss_sends_no_gradient_to_the_adversary():
    nasty = torch.tensor([[1.0, 0.0]], requires_grad=True)
    adversary = torch.tensor([[0.0, 1.0]], requires_grad=True)
    sum(nasty_loss(nasty, adversary, torch.tensor([0]), omega=0.1, tau=4.0).values()).backward()
    assert adversary.grad is None
    assert nasty.grad is not None and nasty.grad.abs().sum() > 0
