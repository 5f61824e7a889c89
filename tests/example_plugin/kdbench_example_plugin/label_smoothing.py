"""``label_smoothing``: a teacher trained on label-smoothed targets, its served logits optionally
sharpened (multiplied by ``sharpen``; the top-1 class never changes).
"""

from dataclasses import dataclass

import torch.nn.functional as F

from kdbench.api import Defense, DefenseContext, OptionError, Teacher, register_defense


@dataclass
class LabelSmoothingConfig:
    smoothing: float = 0.2  # of the training targets (changes the weights: part of the cache key)
    sharpen: float = 1.0  # the served logits are the network's times this (changes only what is served)

    def __post_init__(self) -> None:
        if not 0.0 <= self.smoothing < 1.0:
            raise OptionError("smoothing", f"must be in [0, 1), got {self.smoothing}")
        if not self.sharpen > 0:
            raise OptionError("sharpen", f"must be > 0, got {self.sharpen}")


@register_defense("label_smoothing", config=LabelSmoothingConfig)
class LabelSmoothing(Defense):
    def build(self, ctx: DefenseContext) -> Teacher:
        smoothing = self.cfg.smoothing

        def train(model, generator) -> None:
            def objective(x, y):
                return {"ce": F.cross_entropy(model(x), y, label_smoothing=smoothing)}

            description = f"teacher label_smoothing {ctx.teacher_arch}"
            ctx.trainer.fit_supervised(model, objective, ctx.data, generator=generator, description=description)

        model = ctx.trained("label_smoothing", {"smoothing": smoothing}, train)
        sharpen = self.cfg.sharpen
        return Teacher(model, perturb=lambda clean_logits, x: clean_logits * sharpen)
