"""``topk``: the Stingy Teacher (Ma et al., 2022): serve the top-k logits, the others set to −inf.

The softened outputs then carry no information about the classes outside the top k (their
probability is exactly 0), while the top-1 class, and so the owner's accuracy, is unchanged. The
paper keeps 20% of the classes on CIFAR-10 and 10% on CIFAR-100 (``defense.topk.k`` in the
dataset configs). A white-box attack differentiates through the k kept logits only.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdbench.api import DefenseContext, register_defense
from kdbench.defenses.perturbation import LogitPerturbationDefense, Perturbation
from kdbench.errors import ConfigError
from kdbench.teacher import keep_top_k


@dataclass
class TopKConfig:
    k: int = 2  # 20% of CIFAR-10's (and digits') 10 classes, as in the paper

    def __post_init__(self) -> None:
        if not self.k >= 1:
            raise ConfigError(f"defense.topk.k must be a positive number of classes, got {self.k}")


@register_defense("topk", config=TopKConfig)
class TopKDefense(LogitPerturbationDefense):
    def check_task(self, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        if self.cfg.k > num_classes:
            raise ConfigError(
                f"defense.topk.k={self.cfg.k} exceeds the dataset's {num_classes} classes; allowed: 1 to {num_classes}"
            )

    def perturbation(self, ctx: DefenseContext) -> Perturbation:
        k, classes = self.cfg.k, ctx.data.num_classes
        if k > classes:
            raise ConfigError(f"defense.topk.k={k} exceeds the {classes} classes of dataset {ctx.data.name!r}")
        return lambda clean, x: keep_top_k(clean, k)
