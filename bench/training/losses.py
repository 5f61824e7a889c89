"""The generic distillation losses, plain functions of logits so that unit tests can pin them.

Each method's own loss lives beside its method: ``nasty_loss`` in :mod:`kdbench.defenses.nasty`,
``htc_loss`` in :mod:`kdbench.attacks.htc`, ``skeptical_loss`` in :mod:`kdbench.attacks.skeptical`.

Conventions follow the official Nasty-Teacher code (see ../shared/REFERENCES.md): PyTorch's
``kl_div(log q, p, reduction="batchmean")`` computes KL(p ‖ q), so the *target* distribution p is
the second argument.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# What stands in for a served −∞ (a class served with probability 0): this far below the row's
# smallest finite logit, its softmax is 0 in float32 at every temperature the attacks use (e^(−1e4/τ)),
# so distillation targets are unchanged, while a cross-entropy on it is finite.
MASKED_GAP = 1e4


def finite_logits(logits: Tensor) -> Tensor:
    """Served logits with each −∞ (a class the defense masked) replaced by a finite floor: the row's
    smallest finite logit minus :data:`MASKED_GAP`, detached. The attacker works with what is finite:
    the kept logits carry their gradients, the masked classes none, and no loss on them is infinite.
    Logits without −∞ (and labels) are returned as they are."""
    if not logits.is_floating_point():
        return logits
    masked = torch.isneginf(logits)
    if not bool(masked.any()):
        return logits
    floor = logits.detach().masked_fill(masked, float("inf")).amin(dim=1, keepdim=True) - MASKED_GAP
    return torch.where(masked, floor, logits)


def soft_kl(target_logits: Tensor, input_logits: Tensor, tau: float) -> Tensor:
    """KL(σ_τ(target) ‖ σ_τ(input)) averaged over the batch, without the τ² factor."""
    return F.kl_div(
        F.log_softmax(input_logits / tau, dim=1),
        F.softmax(target_logits / tau, dim=1),
        reduction="batchmean",
    )


def kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, *, alpha: float, tau: float
) -> dict[str, Tensor]:
    """Hinton KD as in the Nasty-Teacher paper: α·τ²·KL(σ_τ(teacher) ‖ σ_τ(student)) + (1−α)·CE.

    Returned as named terms; the trainer sums them.
    """
    return {
        "kd": alpha * tau**2 * soft_kl(teacher_logits, student_logits, tau),
        "ce": (1.0 - alpha) * F.cross_entropy(student_logits, labels),
    }


def cross_entropy(logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Plain supervised training (normal teachers and the students' scratch baselines)."""
    return {"ce": F.cross_entropy(logits, labels)}


__all__ = ["cross_entropy", "finite_logits", "kd_loss", "soft_kl"]
