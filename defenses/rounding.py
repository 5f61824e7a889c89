"""``rounding``: the served probabilities rounded to a few decimals (IBM ART's ``Rounded``).

ART's postprocessor (art/defences/postprocessor/rounded.py) serves ``np.around(y, decimals)`` of
the clean softmax ``y``, with 3 decimals by default: probabilities below half a unit of the last
decimal become 0, so an attacker loses the smallest "dark knowledge" and every value carries at
most ``decimals`` digits. numpy rounds half to even, as :func:`torch.round` does.

The served logits are the logarithms of the rounded probabilities (−inf where one rounds to 0), so
the API serves them renormalised to sum 1: ART serves the rounded values as they are, whose sum
differs from 1 by at most K · ½ · 10^−decimals for K classes. Where rounding ties the top class with
another, the clean top-1 class is kept (:func:`~kdbench.defenses.perturbation.restore_argmax`), as
for every perturbation of the suite: the owner's top-1 accuracy is the normal network's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kdbench.api import DefenseContext, OptionError, register_defense
from kdbench.defenses.perturbation import LogitPerturbationDefense, Perturbation, restore_argmax

MAX_DECIMALS = 8  # float32 probabilities hold about 7 significant digits: more would round nothing


@dataclass
class RoundingConfig:
    decimals: int = 3  # ART's default

    def __post_init__(self) -> None:
        if isinstance(self.decimals, bool) or not isinstance(self.decimals, int):
            raise OptionError("decimals", f"must be an integer from 1 to {MAX_DECIMALS}, got {self.decimals!r}")
        if not 1 <= self.decimals <= MAX_DECIMALS:
            raise OptionError("decimals", f"must be an integer from 1 to {MAX_DECIMALS}, got {self.decimals}")


def rounded(clean: Tensor, *, decimals: int) -> Tensor:
    """The served logits: log of the softmax of ``clean`` rounded to ``decimals`` (in float64, as
    ART's numpy), −inf where it rounds to 0, each row's clean top-1 class kept."""
    probs = torch.round(F.softmax(clean.double(), dim=1), decimals=decimals).float()
    positive = probs > 0
    # log of the positive entries only: log(0)'s infinite gradient would make a white-box
    # attack's gradients NaN even where the −inf is masked out
    served = torch.where(positive, torch.log(torch.where(positive, probs, 1.0)), float("-inf"))
    return restore_argmax(served, clean.float())


@register_defense("rounding", config=RoundingConfig)
class RoundingDefense(LogitPerturbationDefense):
    def perturbation(self, ctx: DefenseContext) -> Perturbation:
        decimals = self.cfg.decimals
        return lambda clean, x: rounded(clean, decimals=decimals)
