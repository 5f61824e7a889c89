"""``nasty``: the Nasty Teacher (Ma et al., ICLR 2021), trained by self-undermining KD.

Trained from scratch against the frozen normal teacher of the same configuration (taken from the
cache): keep cross-entropy low while pushing the softened outputs away from the normal network's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn.functional as F
from torch import Tensor

from kdbench.api import (
    Answered,
    Classifier,
    Defense,
    DefenseContext,
    OptionError,
    Teacher,
    register_defense,
    soft_kl,
)
from kdbench.defenses.normal import normal_network


@dataclass
class NastyConfig:
    tau: float = 4.0  # the paper's CIFAR-10 values; CIFAR-100 and Tiny-ImageNet use τ=20
    omega: float = 0.04

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise OptionError("tau", f"must be > 0, got {self.tau}")
        if not self.omega >= 0:
            raise OptionError("omega", f"must be >= 0, got {self.omega}")


def nasty_loss(
    nasty_logits: Tensor, adversary_logits: Tensor, labels: Tensor, *, omega: float, tau: float
) -> dict[str, Tensor]:
    """Self-undermining KD: CE(p_T, y) − ω·τ²·KL(σ_τ(p_T) ‖ σ_τ(p_A)).

    The nasty teacher's softened distribution is the KL's target (as in the official code:
    ``kl_div(log_softmax(p_A/τ), softmax(p_T/τ))``); the adversary (a normally trained network
    of the same architecture) is frozen, so only p_T receives gradients.
    """
    return {
        "ce": F.cross_entropy(nasty_logits, labels),
        "adversarial": -omega * tau**2 * soft_kl(nasty_logits, adversary_logits.detach(), tau),
    }


@register_defense("nasty", config=NastyConfig)
class NastyDefense(Defense):
    def build(self, ctx: DefenseContext) -> Teacher:
        adversary = normal_network(ctx)
        tau, omega = self.cfg.tau, self.cfg.omega

        def train(model: Classifier, generator) -> None:
            def objective(x, batch: Answered):
                return nasty_loss(model(x), batch.teacher, batch.labels, omega=omega, tau=tau)

            ctx.trainer.fit_distillation(
                model,
                objective,
                ctx.data,
                adversary,
                generator=generator,
                description=f"teacher nasty {ctx.teacher_arch}",
            )

        return Teacher(ctx.trained("nasty", asdict(self.cfg), train))
