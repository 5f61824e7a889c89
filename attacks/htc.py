"""``htc``: high-temperature composition (Jandial et al., ECCV 2022, "Distilling the Undistillable").

Vanilla KD's threat model, but only the teacher's outputs are softened, with a high temperature
(about 70): the nasty teacher's misleading secondary peaks flatten out while its ranking of the
classes survives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.api import (
    Access,
    Answered,
    Attack,
    AttackContext,
    DataAccess,
    OptionError,
    TeacherAPI,
    register_attack,
)


@dataclass
class HTCConfig:
    alpha: float = 0.9
    teacher_tau: float = 70.0
    student_tau: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise OptionError("alpha", f"must be in [0, 1], got {self.alpha}")
        for name in ("teacher_tau", "student_tau"):
            if not getattr(self, name) > 0:
                raise OptionError(name, f"must be > 0, got {getattr(self, name)}")


def htc_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float,
    teacher_tau: float,
    student_tau: float,
) -> dict[str, Tensor]:
    """High-temperature composition (Jandial et al., ECCV 2022): soften only the teacher.

    α·τ_S²·KL(σ(teacher/τ_T) ‖ σ(student/τ_S)) + (1−α)·CE, with τ_T high (about 70) and the student
    at its own temperature τ_S (1: not softened). The τ_S² factor keeps the gradient scale of
    Hinton's KD at the student's temperature.
    """
    target = F.softmax(teacher_logits / teacher_tau, dim=1)
    kl = F.kl_div(F.log_softmax(student_logits / student_tau, dim=1), target, reduction="batchmean")
    return {
        "kd": alpha * student_tau**2 * kl,
        "ce": (1.0 - alpha) * F.cross_entropy(student_logits, labels),
    }


@register_attack("htc", config=HTCConfig)
class HighTemperatureComposition(Attack):
    access = Access.LOGITS
    data_access = DataAccess.TRAIN

    def run(self, teacher: TeacherAPI, student: nn.Module, ctx: AttackContext) -> nn.Module:
        assert ctx.data is not None
        cfg = self.cfg

        def objective(x, batch: Answered):
            return htc_loss(
                student(x),
                batch.teacher,
                batch.labels,
                alpha=cfg.alpha,
                teacher_tau=cfg.teacher_tau,
                student_tau=cfg.student_tau,
            )

        ctx.trainer.fit_distillation(
            student, objective, ctx.data, teacher, generator=ctx.generator, description=ctx.description
        )
        return student
