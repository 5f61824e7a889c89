"""``normal``: a teacher trained with plain cross-entropy (no protection), or, with
``teacher_weights=PATH``, the owner's own trained network loaded from that file."""

from __future__ import annotations

from dataclasses import dataclass

from kdbench.api import Classifier, Defense, DefenseContext, Teacher, register_defense


@dataclass
class NormalConfig:
    pass


def normal_network(ctx: DefenseContext) -> Classifier:
    """The normally trained teacher network of this context (cached; the nasty teacher's adversary).

    With ``teacher_weights=PATH`` it is the owner's network from that file: every defense built on
    it (the nasty teacher's adversary, the logit perturbations' network) starts from the owner's.
    """
    if ctx.teacher_file is not None:
        return ctx.loaded(ctx.teacher_file.path, "teacher_weights", ctx.teacher_file.sha256)

    def train(model: Classifier, generator) -> None:
        ctx.trainer.fit_scratch(model, ctx.data, generator=generator, description=f"teacher normal {ctx.teacher_arch}")

    return ctx.trained("normal", {}, train)


@register_defense("normal", config=NormalConfig)
class NormalDefense(Defense):
    def build(self, ctx: DefenseContext) -> Teacher:
        return Teacher(normal_network(ctx))
