"""``mad``: Maximizing Angular Deviation prediction poisoning (Orekondy et al., ICLR 2020), in the
configuration its reference code (tribhuvanesh/prediction-poisoning, ``defenses/victim/bb_mad.py``)
runs by default.

For each query the reference builds ``G``, the K × D Jacobian of the negative log-likelihood of each
class with respect to the last linear layer's weights of a proxy of the attacker's model (the
victim itself when no proxy is given, ``model_adv_proxy=None``). An oracle picks the target ``y*``
that maximises the surrogate objective ``‖Gᵀ(y* − y)‖²``: among the one-hot vectors (``extreme``,
the default) or, keeping the top class, among the uniform vectors over class sets that hold it
(``argmax``, the argmax-preserving variant, with the top class weighted up by 1e-5). A line search
then moves ``y`` towards ``y*`` as far as the ℓ1 budget ε allows: ``ỹ = (1 − α) y + α y*`` with
``α = clamp(ε / (‖y − y*‖₁ + 1e-7), 0, 1)`` (``closed_form_alpha_estimate``).

For that layer the Jacobian has a closed form: with ``p`` the proxy's softmax and ``f`` its
penultimate features, row k of ``G`` is ``(p − e_k) ⊗ f``, so for any target that sums to one
``Gᵀ(y* − y) = (y − y*) ⊗ f`` and the objective is ``‖y* − y‖² · ‖f‖²``. The proxy only scales it:
the oracle's choice depends on ``y`` alone (the extreme oracle picks the least likely class), and
MAD costs one softmax per query here instead of K backward passes. ``tests/test_mad.py`` checks
this against a transcription of the reference's per-query loop, autograd Jacobian included.

The reference takes ε as an argument (its paper sweeps 0.01 to 2); the default here is 0.5. The
perturbation may change the top class (``oracle=extreme``): the owner's accuracy on clean test
inputs is the served function's. ``oracle=argmax`` keeps it. The reference enumerates the
argmax-preserving targets exactly for K ≤ 10 classes only (2^(K−1) of them); above that its
heuristic compares normalised objectives, which are undefined when the proxy is the victim itself,
so that variant is refused there.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kdbench.api import Defense, DefenseContext, OptionError, Teacher, register_defense
from kdbench.defenses.normal import normal_network

ORACLES = ("extreme", "argmax")
MAX_ARGMAX_CLASSES = 10  # the reference enumerates the argmax-preserving vertices up to 10 classes
TOP_CLASS_WEIGHT = 1e-5  # the reference's up-weighting of the top class in each vertex
ALPHA_EPS = 1e-7  # the reference's closed-form step: ε / (‖y − y*‖₁ + 1e-7)


@dataclass
class MADConfig:
    epsilon: float = 0.5  # ℓ1 budget of the perturbation of each answer
    oracle: str = "extreme"  # extreme | argmax (argmax-preserving)

    def __post_init__(self) -> None:
        if not self.epsilon >= 0:
            raise OptionError("epsilon", f"must be >= 0 (an ℓ1 distance between distributions), got {self.epsilon}")
        if self.oracle not in ORACLES:
            raise OptionError("oracle", f"must be one of {', '.join(ORACLES)}, got {self.oracle!r}")


def argmax_vertices(num_classes: int, top: Tensor) -> Tensor:
    """For each row's top class, the reference's argmax-preserving targets in its order
    (``itertools.product([0, 1], repeat=K)`` with the top class set): rows × 2^(K−1) × K."""
    return _vertices_by_top_class(num_classes).to(top.device)[top]


@functools.cache
def _vertices_by_top_class(num_classes: int) -> Tensor:
    """K × 2^(K−1) × K: for each class k, the targets that hold it, up-weighted, as probabilities
    (built once per class count: a serving path must not loop over its queries)."""
    grid = torch.tensor(list(itertools.product([0.0, 1.0], repeat=num_classes)), dtype=torch.float64)
    vertices = torch.stack([grid[grid[:, k] > 0] for k in range(num_classes)])
    classes = torch.arange(num_classes)
    vertices[classes, :, classes] += TOP_CLASS_WEIGHT
    return vertices / vertices.sum(dim=2, keepdim=True)


def mad_targets(y: Tensor, oracle: str) -> Tensor:
    """The oracle's ``y*`` for each row of probabilities ``y``: the candidate farthest from ``y``
    in ℓ2 (the surrogate objective up to the factor ‖f‖²), the first of equals as in the reference."""
    rows, classes = y.shape
    if oracle == "extreme":
        candidates = torch.eye(classes, dtype=y.dtype, device=y.device).expand(rows, classes, classes)
    else:
        candidates = argmax_vertices(classes, y.argmax(dim=1)).to(y.dtype)
    objective = ((candidates - y[:, None, :]) ** 2).sum(dim=2)
    best = (objective == objective.max(dim=1, keepdim=True).values).float().argmax(dim=1)  # first maximum
    return candidates[torch.arange(rows, device=y.device), best]


def mad(clean: Tensor, *, epsilon: float, oracle: str) -> Tensor:
    """The served logits: log of ``(1 − α) y + α y*`` (−inf where 0), ``y`` the softmax of ``clean``."""
    y = F.softmax(clean.double(), dim=1)
    target = mad_targets(y, oracle)
    alpha = (epsilon / ((y - target).abs().sum(dim=1, keepdim=True) + ALPHA_EPS)).clamp(0.0, 1.0)
    poisoned = ((1 - alpha) * y + alpha * target).float()
    positive = poisoned > 0
    return torch.where(positive, torch.log(torch.where(positive, poisoned, 1.0)), float("-inf"))


@register_defense("mad", config=MADConfig)
class MADDefense(Defense):
    def check_task(self, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        if self.cfg.oracle == "argmax" and num_classes > MAX_ARGMAX_CLASSES:
            raise OptionError(
                "oracle",
                f"argmax enumerates 2^(K−1) targets, as the reference does up to {MAX_ARGMAX_CLASSES} classes; "
                f"this dataset has {num_classes}: use oracle=extreme",
            )

    def build(self, ctx: DefenseContext) -> Teacher:
        epsilon, oracle = self.cfg.epsilon, self.cfg.oracle
        return Teacher(normal_network(ctx), perturb=lambda clean, x: mad(clean, epsilon=epsilon, oracle=oracle))
