"""``logit_noise``: Gaussian noise on the served logits that never changes the top-1 class.

The seed's own question: can the owner simply perturb the logits instead of training a nasty
teacher? Each row's logits get noise of standard deviation ``scale`` × that row's own logit
standard deviation (so the strength means the same for any network), then the clean top-1 class is
restored (:func:`~kdbench.defenses.perturbation.restore_argmax`).

The noise is a fixed function of the input and the run seed, not a fresh draw per query: it is
drawn from a hash of the input's pixels (rounded to 1/1024, so the same image gives the same noise
on any device and in any batch). Asking the same question twice gives the same answer, so an
attacker cannot average the noise away by repeating queries. For a white-box attack the noise is a
constant of each input (it is detached): gradients flow through the clean logits only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from kdbench.api import DefenseContext, OptionError, derive_seed, register_defense
from kdbench.defenses.perturbation import LogitPerturbationDefense, Perturbation, restore_argmax

_PRIME = 2_147_483_647  # 2³¹ − 1: products of two residues fit in int64
_QUANTUM = 1024  # inputs are rounded to 1/1024 before hashing


@dataclass
class LogitNoiseConfig:
    scale: float = 1.0  # noise std in units of each row's logit std

    def __post_init__(self) -> None:
        if not self.scale >= 0:
            raise OptionError("scale", f"must be >= 0, got {self.scale}")


def keyed_uniform(x: Tensor, columns: int, seed: int) -> Tensor:
    """``columns`` numbers in (0, 1) per row of ``x``: a fixed pseudo-random function of the row and ``seed``.

    A random linear hash of the row's quantised values modulo the prime 2³¹ − 1, then one random
    affine map per column; every coefficient comes from ``seed``. Equal rows get equal numbers.
    """
    flat = torch.round(x.detach().flatten(1).double() * _QUANTUM).long() % _PRIME
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randint(1, _PRIME, (flat.shape[1],), generator=generator).to(x.device)
    slopes = torch.randint(1, _PRIME, (columns,), generator=generator).to(x.device)
    offsets = torch.randint(0, _PRIME, (columns,), generator=generator).to(x.device)
    row_hash = ((flat * weights) % _PRIME).sum(dim=1) % _PRIME
    values = (row_hash[:, None] * slopes + offsets) % _PRIME
    return (values.double() + 0.5) / _PRIME


def logit_noise(clean: Tensor, x: Tensor, *, scale: float, seed: int) -> Tensor:
    """The served logits: clean + scale·std(clean row)·N(0, 1) keyed by ``x``, with the top-1 class kept."""
    normal = torch.special.ndtri(keyed_uniform(x, clean.shape[1], seed)).to(clean.dtype)
    spread = clean.detach().std(dim=1, keepdim=True)
    return restore_argmax(clean + scale * spread * normal, clean)


@register_defense("logit_noise", config=LogitNoiseConfig)
class LogitNoiseDefense(LogitPerturbationDefense):
    def perturbation(self, ctx: DefenseContext) -> Perturbation:
        seed = derive_seed(ctx.trainer.seed, "defense/logit_noise")
        scale = self.cfg.scale
        return lambda clean, x: logit_noise(clean, x, scale=scale, seed=seed)
