"""``normal``: a teacher trained with plain cross-entropy (no protection)."""

from __future__ import annotations

from dataclasses import dataclass

from kdbench.api import Defense, DefenseContext, Teacher, register_defense
from kdbench.models import Classifier


@dataclass
class NormalConfig:
    pass


def normal_network(ctx: DefenseContext) -> Classifier:
    """The normally trained teacher network of this context (cached; the nasty teacher's adversary)."""

    def train(model: Classifier, generator) -> None:
        ctx.trainer.fit_scratch(model, ctx.data, generator=generator, description=f"teacher normal {ctx.teacher_arch}")

    return ctx.trained("normal", {}, train)


@register_defense("normal", config=NormalConfig)
class NormalDefense(Defense):
    def build(self, ctx: DefenseContext) -> Teacher:
        return Teacher(normal_network(ctx))
