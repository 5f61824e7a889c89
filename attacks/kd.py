"""``kd``: vanilla knowledge distillation (Hinton et al., 2015) on the teacher's training inputs.

The attacker queries the teacher's logits on the owner's training inputs and trains the student on
α·τ²·KL(σ_τ(teacher) ‖ σ_τ(student)) + (1−α)·CE(student, labels).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from kdbench.api import (
    Access,
    Answered,
    Attack,
    AttackContext,
    DataAccess,
    OptionError,
    TeacherAPI,
    kd_loss,
    register_attack,
)


@dataclass
class KDConfig:
    alpha: float = 0.9
    tau: float = 4.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise OptionError("alpha", f"must be in [0, 1], got {self.alpha}")
        if not self.tau > 0:
            raise OptionError("tau", f"must be > 0, got {self.tau}")


@register_attack("kd", config=KDConfig)
class KnowledgeDistillation(Attack):
    access = Access.LOGITS
    data_access = DataAccess.TRAIN

    def run(self, teacher: TeacherAPI, student: nn.Module, ctx: AttackContext) -> nn.Module:
        assert ctx.data is not None
        alpha, tau = self.cfg.alpha, self.cfg.tau

        def objective(x, batch: Answered):
            return kd_loss(student(x), batch.teacher, batch.labels, alpha=alpha, tau=tau)

        ctx.trainer.fit_distillation(
            student, objective, ctx.data, teacher, generator=ctx.generator, description=ctx.description
        )
        return student
