"""``reverse_sigmoid``: deceptive perturbation of the served probabilities (Lee et al., 2019).

With y the clean softmax, s the sigmoid and s⁻¹ its inverse (the log-odds), the paper's Eq. 3–4:

    r(y) = β · (s(γ · s⁻¹(y)) − 1/2),    ŷ = α · (y − r(y)),

clipped to [0, 1] as in ART's implementation, α normalising each row to sum 1. As in ART, the
probabilities are clipped to [1e-9, 1 − 1e-9] before their log-odds s⁻¹(y). Small
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
from torch import Tensor

from kdbench.api import DefenseContext, OptionError, register_defense
from kdbench.defenses.perturbation import LogitPerturbationDefense, Perturbation, restore_argmax


@dataclass
class ReverseSigmoidConfig:
    beta: float = 1.0  # magnitude
    gamma: float = 0.1  # convergence

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise OptionError("beta", f"must be > 0, got {self.beta}")
        if not self.gamma > 0:
            raise OptionError("gamma", f"must be > 0, got {self.gamma}")


# ART's clipping of the probabilities before their log-odds (art/defences/postprocessor/reverse_sigmoid.py):
# the log-odds of a confident row saturate at ±log((1 − 1e-9)/1e-9) = ±20.72 instead of growing with
# the logits. Computed in float64 (ART's numpy default): 1 − 1e-9 rounds to 1 in float32.
CLIP = 1e-9


def clipped_log_odds(probs: Tensor) -> Tensor:
    """s⁻¹(clip(p, 1e-9, 1 − 1e-9)) = log p − log(1 − p) on the clipped probabilities, as ART does."""
    clipped = probs.double().clamp(CLIP, 1.0 - CLIP)
    return torch.log(clipped) - torch.log1p(-clipped)


def reverse_sigmoid(clean: Tensor, *, beta: float, gamma: float) -> Tensor:
    """The served logits log ŷ for clean logits (rows of classes), with the top-1 class kept."""
    clean = clean.float()
    y = F.softmax(clean.double(), dim=1)
    r = beta * (torch.sigmoid(gamma * clipped_log_odds(y)) - 0.5)
    perturbed = (y - r).clamp(0.0, 1.0)
    perturbed = (perturbed / perturbed.sum(dim=1, keepdim=True)).float()
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
