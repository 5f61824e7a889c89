"""``skeptical``: the skeptical student (Kundu et al., NeurIPS 2021, "Analyzing the Confidentiality
of Undistillable Teachers in Knowledge Distillation"), as its reference code trains it
(ksouvik52/Skeptical2021: ``train_kd_to_SD.py``, ``loss_fn_kd``; the student of ``resnet_self.py``).

The student carries auxiliary heads after its stages (:mod:`kdbench.models.intermediate`) and
returns ``out = [final, after the last-but-one stage, ..., after the first stage]``. For the first
epochs it learns the labels only; then the teacher is distilled into the shallow head ``out[loc]``,
the deepest auxiliary head ``out[1]`` self-distils from the final head and learns the labels, and
the final head learns the labels. The teacher shapes the early layers without dictating the final
decision; the student is evaluated (and deployed) on its final head.

``loc`` (the reference's ``params.loc``) counts heads from the final one: 1 is the head after the
last-but-one stage, 2 the one before it, and so on; where a student has fewer auxiliary heads than
``loc`` (the digits students have one), the shallowest is used. The reference's params files for the
skeptical student are not in its repository, and the paper text was not at hand; the default
``loc = 2`` (on ResNet-18 the head after stage 2) is this suite's reading of the paper's "shallow
sub-section": shallower than ``out[1]``, which self-distils from the final head, and deeper than the
head after the first stage. ``kd_delay`` is the reference's ``params.kd_delay`` (KD once the 0-based
epoch is > kd_delay); its default, a quarter of the epochs, is the suite's earlier delay, not a
published figure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.api import (
    Access,
    Answered,
    Attack,
    AttackContext,
    Classifier,
    DataAccess,
    OptionError,
    SelfDistillingModel,
    TeacherAPI,
    answered_batches,
    register_attack,
    soft_kl,
)

# The reference's fixed weights of the self-distillation of out[1] from the final head.
SELF_KL_WEIGHT = 0.3
SELF_CE_WEIGHT = 0.7


@dataclass
class SkepticalConfig:
    alpha: float = 0.9  # the reference's params.alpha: α·τ²·KL(teacher ‖ out[loc]) + (1 − α)·CE(out[loc])
    tau: float = 4.0  # the reference's params.temperature
    loc: int = 2  # the head the teacher is distilled into, counted from the final head (see the module)
    kd_delay: int | None = None  # CE only while the 0-based epoch is <= kd_delay; None: round(epochs / 4)

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise OptionError("alpha", f"must be in [0, 1], got {self.alpha}")
        if not self.tau > 0:
            raise OptionError("tau", f"must be > 0, got {self.tau}")
        if not isinstance(self.loc, int) or self.loc < 1:
            raise OptionError("loc", f"must be an auxiliary head, 1 or more, got {self.loc}")
        if self.kd_delay is not None and (not isinstance(self.kd_delay, int) or self.kd_delay < 0):
            raise OptionError("kd_delay", f"must be a number of epochs >= 0 or null, got {self.kd_delay}")

    def delay(self, epochs: int) -> int:
        return round(epochs / 4) if self.kd_delay is None else self.kd_delay


def skeptical_loss(
    outputs: list[Tensor],
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float,
    tau: float,
    loc: int,
    distil: bool,
) -> dict[str, Tensor]:
    """The reference's ``loss_fn_kd`` as named terms (the trainer sums them).

    Before the delay (``distil`` false): CE(out[0], y). After it:

        α·τ²·KL(σ_τ(t) ‖ σ_τ(out[loc])) + (1 − α)·CE(out[loc], y)
        + 0.3·KL(σ_τ(out[0]) ‖ σ_τ(out[1])) + 0.7·CE(out[1], y) + CE(out[0], y)

    The self-distillation target out[0] is not detached and has no τ² factor, as in the reference.
    """
    final = outputs[0]
    if not distil:
        return {"ce": F.cross_entropy(final, labels)}
    head = outputs[loc]
    return {
        "kd": alpha * tau**2 * soft_kl(teacher_logits, head, tau),
        "kd_ce": (1.0 - alpha) * F.cross_entropy(head, labels),
        "self": SELF_KL_WEIGHT * soft_kl(final, outputs[1], tau),
        "self_ce": SELF_CE_WEIGHT * F.cross_entropy(outputs[1], labels),
        "ce": F.cross_entropy(final, labels),
    }


@register_attack("skeptical", config=SkepticalConfig)
class SkepticalStudent(Attack):
    access = Access.LOGITS
    data_access = DataAccess.TRAIN

    def run(self, teacher: TeacherAPI, student: Classifier, ctx: AttackContext) -> nn.Module:
        assert ctx.data is not None
        data, cfg, recipe = ctx.data, self.cfg, ctx.trainer.recipe
        network = SelfDistillingModel(student, ctx.input_shape, ctx.num_classes)
        loc = min(cfg.loc, network.num_aux)
        kd_delay = cfg.delay(recipe.epochs)
        epoch_now = [0]

        answered, steps = answered_batches(data, teacher, recipe.batch_size, ctx.generator, seed=ctx.trainer.seed)

        def batches(epoch: int) -> Iterator[tuple[Tensor, Answered]]:
            epoch_now[0] = epoch
            return answered(epoch)

        def objective(x, batch: Answered):
            return skeptical_loss(
                network(x),
                batch.teacher,
                batch.labels,
                alpha=cfg.alpha,
                tau=cfg.tau,
                loc=loc,
                distil=epoch_now[0] > kd_delay,
            )

        ctx.trainer.fit(network, objective, batches, steps_per_epoch=steps, description=ctx.description)
        return network.detach_heads()
