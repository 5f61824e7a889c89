"""``label_only``: clone a model that answers only with its top-1 label.

The attacker queries the API on the training inputs and trains the student with cross-entropy on
the returned labels, optionally smoothed.
"""

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from kdbench.api import Access, Attack, AttackContext, DataAccess, OptionError, TeacherAPI, register_attack


@dataclass
class LabelOnlyConfig:
    smoothing: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.smoothing < 1.0:
            raise OptionError("smoothing", f"must be in [0, 1), got {self.smoothing}")


@register_attack("label_only", config=LabelOnlyConfig)
class LabelOnly(Attack):
    access = Access.TOP1_LABEL
    data_access = DataAccess.TRAIN

    # the base class's constructor keeps the validated options as self.cfg
    def run(self, teacher: TeacherAPI, student: nn.Module, ctx: AttackContext) -> nn.Module:
        def objective(x, _labels_the_attacker_never_sees):
            stolen = teacher(x)
            return {"ce": F.cross_entropy(student(x), stolen, label_smoothing=self.cfg.smoothing)}

        ctx.trainer.fit_supervised(student, objective, ctx.data, generator=ctx.generator, description=ctx.description)
        return student
