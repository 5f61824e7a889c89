"""``topk``: the Stingy Teacher (Ma et al., 2022): serve the top-k logits, the others set to −inf.

The softened outputs then carry no information about the classes outside the top k (their
probability is exactly 0), while the top-1 class, and so the owner's accuracy, is unchanged.

k follows the class count unless ``k`` is set: k = max(1, ⌊ratio · classes⌋), the reference code's
``int(sparse_ratio * classes)`` (HowieMa/stingy-teacher, ``train_kd_stingy.py``) floored at one
class. Its params files use ``sparse_ratio`` 0.1 on CIFAR-100 and Tiny-ImageNet (k = 10, 20) and 0.2
on CIFAR-10 (k = 2); ``ratio`` defaults to 0.1 and the 10-class datasets (CIFAR-10, digits) set 0.2
in their configs, so both keep k = 2. A white-box attack differentiates through the k kept logits only.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdbench.api import DefenseContext, OptionError, keep_top_k, register_defense
from kdbench.defenses.perturbation import LogitPerturbationDefense, Perturbation


@dataclass
class TopKConfig:
    k: int | None = None  # classes kept; None: max(1, ⌊ratio · classes⌋)
    ratio: float = 0.1  # the reference's sparse_ratio (CIFAR-100, Tiny-ImageNet; CIFAR-10 and digits: 0.2)

    def __post_init__(self) -> None:
        if self.k is not None and not self.k >= 1:
            raise OptionError("k", f"must be a positive number of classes, got {self.k}")
        if not 0.0 < self.ratio <= 1.0:
            raise OptionError("ratio", f"must be in (0, 1], got {self.ratio}")

    def kept(self, classes: int) -> int:
        """How many classes are served for a dataset of ``classes`` classes."""
        return self.k if self.k is not None else max(1, int(self.ratio * classes))


@register_defense("topk", config=TopKConfig)
class TopKDefense(LogitPerturbationDefense):
    def check_task(self, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        if self.cfg.kept(num_classes) > num_classes:
            raise OptionError(
                "k", f"={self.cfg.k} exceeds the dataset's {num_classes} classes; allowed: 1 to {num_classes}"
            )

    def perturbation(self, ctx: DefenseContext) -> Perturbation:
        classes = ctx.data.num_classes
        k = self.cfg.kept(classes)
        if k > classes:
            raise OptionError("k", f"={k} exceeds the {classes} classes of dataset {ctx.data.name!r}")
        return lambda clean, x: keep_top_k(clean, k)
