"""``reverse_sigmoid``: deceptive perturbation of the served probabilities (Lee et al., 2019).

With y the clean softmax, s the sigmoid and s⁻¹ its inverse (the log-odds), the paper's Eq. 3–4:

    r(y) = β · (s(γ · s⁻¹(y)) − 1/2),    ŷ = α · (y − r(y)),

clipped to [0, 1] as in ART's implementation, α normalising each row to sum 1. Small
probabilities are pushed up and large ones down, non-monotonically, so the ranking of the
non-top classes (the "dark knowledge" KD learns from) is scrambled. β is the magnitude and γ the
convergence parameter; the defaults are ART's (β = 1, γ = 0.1, arXiv:1806.00054). Where the
perturbation would move the top-1 class, it is restored (:func:`~kdbench.defenses.perturbation.restore_argmax`).

The served logits are log ŷ (−inf where ŷ = 0), so the API's probabilities are ŷ itself. A
white-box attack differentiates through the whole formula.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kdbench.api import DefenseContext, register_defense
from kdbench.defenses.perturbation import LogitPerturbationDefense, Perturbation, restore_argmax
from kdbench.errors import ConfigError
from torch import Tensor


@dataclass
class ReverseSigmoidConfig:
    beta: float = 1.0  # magnitude
    gamma: float = 0.1  # convergence

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ConfigError(f"defense.reverse_sigmoid.beta must be > 0, got {self.beta}")
        if not self.gamma > 0:
            raise ConfigError(f"defense.reverse_sigmoid.gamma must be > 0, got {self.gamma}")


def log_odds_of_softmax(logits: Tensor) -> Tensor:
    """s⁻¹(softmax(logits)) = log p − log(1 − p), exact even where p rounds to 0 or 1.

    1 − p_i is the sum of the other classes' probabilities: for the top class it is summed directly
    (p_top may round to 1); every other class has p_i ≤ 1/2, where log1p(−p_i) is exact.
    """
    log_p = F.log_softmax(logits, dim=1)
    is_top = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, logits.argmax(dim=1, keepdim=True), True)
    log_rest_of_top = torch.logsumexp(log_p.masked_fill(is_top, float("-inf")), dim=1, keepdim=True)
    p_of_others = log_p.exp().masked_fill(is_top, 0.0)
    return log_p - torch.where(is_top, log_rest_of_top, torch.log1p(-p_of_others))


def reverse_sigmoid(clean: Tensor, *, beta: float, gamma: float) -> Tensor:
    """The served logits log ŷ for clean logits (rows of classes), with the top-1 class kept."""
    clean = clean.float()
    y = F.softmax(clean, dim=1)
    r = beta * (torch.sigmoid(gamma * log_odds_of_softmax(clean)) - 0.5)
    perturbed = (y - r).clamp(0.0, 1.0)
    perturbed = perturbed / perturbed.sum(dim=1, keepdim=True)
    positive = perturbed > 0
    # log of the positive entries only: log(0)'s infinite gradient would turn a white-box
    # attack's gradients into NaN even where the −inf is masked out
    served = torch.where(positive, torch.log(torch.where(positive, perturbed, 1.0)), float("-inf"))
    return restore_argmax(served, clean)


@register_defense("reverse_sigmoid", config=ReverseSigmoidConfig)
class ReverseSigmoidDefense(LogitPerturbationDefense):
    def perturbation(self, ctx: DefenseContext) -> Perturbation:
        beta, gamma = self.cfg.beta, self.cfg.gamma
        return lambda clean, x: reverse_sigmoid(clean, beta=beta, gamma=gamma)
