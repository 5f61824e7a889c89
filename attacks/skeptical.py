"""``skeptical``: the skeptical student (Kundu et al., NeurIPS 2021, "Analyzing the Confidentiality
of Undistillable Teachers in Knowledge Distillation").

The student distils the teacher into an auxiliary head on an intermediate layer, starting only
after a delay, while the auxiliary head also self-distils from the student's own final head; the
final head learns from the labels. The teacher shapes the shared early layers without dictating
the final decision.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch.nn.functional as F
from kdbench.api import Access, Attack, AttackContext, DataAccess, TeacherAPI, register_attack
from kdbench.errors import ConfigError
from kdbench.losses import soft_kl
from kdbench.models import Classifier
from kdbench.models.intermediate import TappedModel, intermediate_layer
from kdbench.teacher_answers import Answered, answered_batches
from torch import Tensor, nn


@dataclass
class SkepticalConfig:
    alpha: float = 0.9  # weight of the teacher → auxiliary-head KD
    beta: float = 1.0  # weight of the final-head → auxiliary-head self-distillation
    tau: float = 4.0
    delay: float = 0.25  # share of the training epochs before the teacher is listened to
    depth: float = 0.5  # where the auxiliary head attaches: 0 first usable layer, 1 last before the head

    def __post_init__(self) -> None:
        for name in ("alpha", "beta"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"attack.skeptical.{name} must be >= 0, got {getattr(self, name)}")
        if not self.tau > 0:
            raise ConfigError(f"attack.skeptical.tau must be > 0, got {self.tau}")
        for name in ("delay", "depth"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"attack.skeptical.{name} must be in [0, 1], got {getattr(self, name)}")


def skeptical_loss(
    final_logits: Tensor,
    aux_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float,
    beta: float,
    tau: float,
    distil: bool,
) -> dict[str, Tensor]:
    """Skeptical student (Kundu et al., NeurIPS 2021): keep the teacher away from the final head.

    The final head learns from the labels only: CE(final, y). The auxiliary head, on an
    intermediate layer, distils the teacher once ``distil`` is on (after the delay):
    α·τ²·KL(σ_τ(teacher) ‖ σ_τ(aux)), and self-distils from the final head throughout:
    β·τ²·KL(σ_τ(final) ‖ σ_τ(aux)) with the final head as a fixed target. The teacher's signal
    reaches the final head only through the shared early layers.
    """
    terms = {
        "ce": F.cross_entropy(final_logits, labels),
        "self": beta * tau**2 * soft_kl(final_logits.detach(), aux_logits, tau),
    }
    terms["kd"] = alpha * tau**2 * soft_kl(teacher_logits, aux_logits, tau) if distil else aux_logits.sum() * 0.0
    return terms


@register_attack("skeptical", config=SkepticalConfig)
class SkepticalStudent(Attack):
    access = Access.LOGITS
    data_access = DataAccess.TRAIN

    def run(self, teacher: TeacherAPI, student: Classifier, ctx: AttackContext) -> nn.Module:
        assert ctx.data is not None
        data, cfg, recipe = ctx.data, self.cfg, ctx.trainer.recipe
        layer = intermediate_layer(student, ctx.input_shape, cfg.depth, type(student).__name__)
        tapped = TappedModel(student, layer, ctx.num_classes)
        first_kd_epoch = round(cfg.delay * recipe.epochs)
        epoch_now = [0]

        answered, steps = answered_batches(data, teacher, recipe.batch_size, ctx.generator)

        def batches(epoch: int) -> Iterator[tuple[Tensor, Answered]]:
            epoch_now[0] = epoch
            return answered(epoch)

        def objective(x, batch: Answered):
            final, aux = tapped(x)
            return skeptical_loss(
                final,
                aux,
                batch.teacher,
                batch.labels,
                alpha=cfg.alpha,
                beta=cfg.beta,
                tau=cfg.tau,
                distil=epoch_now[0] >= first_kd_epoch,
            )

        ctx.trainer.fit(tapped, objective, batches, steps_per_epoch=steps, description=ctx.description)
        return tapped.detach_head()
