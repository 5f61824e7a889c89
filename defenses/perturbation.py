"""What the logit-perturbation defenses share: the normal network behind a perturbed serving function.

Such a defense trains nothing. It serves ``perturb(normal_logits, x)``: the API derives its
probabilities, top-k and labels from those logits, and a white-box attack differentiates through
the same function. Every perturbation here keeps each row's top-1 class exactly, so the owner's
top-1 accuracy is the normal teacher's; the price shows in the served probabilities instead.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor

from kdbench.api import Defense, DefenseContext, Perturbation, Teacher
from kdbench.defenses.normal import normal_network


class LogitPerturbationDefense(Defense):
    @abstractmethod
    def perturbation(self, ctx: DefenseContext) -> Perturbation: ...

    def build(self, ctx: DefenseContext) -> Teacher:
        return Teacher(normal_network(ctx), perturb=self.perturbation(ctx))


def restore_argmax(served: Tensor, clean: Tensor) -> Tensor:
    """``served`` with each row's top-1 class put back to ``clean``'s (differentiable).

    Where the perturbation moved the maximum to another class, the two classes swap their served
    values, so the served values stay the perturbation's own. The clean top-1 class is then lifted
    by one float step above any exact tie, because ``argmax`` resolves ties to the lowest index.
    """
    want = clean.argmax(dim=1, keepdim=True)
    got = served.argmax(dim=1, keepdim=True)
    index = torch.arange(served.shape[1], device=served.device).expand_as(served).clone()
    index.scatter_(1, want, got)
    index.scatter_(1, got, want)
    swapped = served.gather(1, index)
    others = swapped.scatter(1, want, float("-inf")).amax(dim=1, keepdim=True)
    above_others = torch.nextafter(others, torch.full_like(others, float("inf")))
    top = torch.maximum(swapped.gather(1, want), above_others)
    return swapped.scatter(1, want, top)
