"""``blackbox``: Knockoff-style query KD (Orekondy et al., CVPR 2019) through the teacher's API only.

The attacker picks query inputs from a source, sends each to the API once (the budget counts every
input), and trains the student on the answers it got: the transfer set. It never receives the
teacher, its weights or its gradients, only a :class:`~kdbench.serving.teacher.TeacherAPI`.

Sources (``attack.blackbox.source``):

- ``train``: the owner's training inputs, without their labels;
- ``heldout``: inputs of the same distribution that nobody trained on (``dataset.heldout_fraction``);
- ``surrogate``: another registered dataset (``attack.blackbox.surrogate``), converted to the
  teacher's input format (channels, size, pixel range);
- ``noise``: uniformly random pixels.

A finite source gives min(budget, its size) distinct inputs in random order; noise gives exactly
``budget`` inputs. The student learns τ²·KL(σ_τ(answer) ‖ σ_τ(student)) from logits, probabilities
or top-k probabilities (their logarithms are logits up to a constant, so the same temperature
applies; classes the API gave probability 0 get target 0), and cross-entropy from top-1 labels.
The transfer set is fixed, so it is never augmented: an augmented input would not match its answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.api import (
    DATASETS,
    Access,
    Attack,
    AttackContext,
    DataAccess,
    DatasetConfig,
    InputFormat,
    OptionError,
    TeacherAPI,
    ask_in_chunks,
    convert_images,
    index_batches,
    load_dataset,
    register_attack,
    soft_kl,
)

SOURCES = {
    "train": DataAccess.TRAIN_INPUTS,
    "heldout": DataAccess.HELDOUT_INPUTS,
    "surrogate": DataAccess.NONE,  # public data of the attacker's own, not the owner's
    "noise": DataAccess.NONE,
}
ACCESS_LEVELS = [a.value for a in Access if a is not Access.WHITE_BOX]


@dataclass
class BlackboxConfig:
    source: str = "train"  # train | heldout | surrogate | noise
    surrogate: str | None = None  # a registered dataset, for source=surrogate
    surrogate_root: str | None = None  # that dataset's data_root, if it needs files
    access: str = "probabilities"  # logits | probabilities | top_k | top1_label
    top_k: int = 2  # classes the API reveals with access=top_k
    budget: int = 50_000  # inputs the API answers (CIFAR's training set once)
    tau: float = 1.0  # distillation temperature (Knockoff Nets: plain soft cross-entropy)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise OptionError("source", f"{self.source!r} is unknown; allowed: {', '.join(SOURCES)}")
        if self.access not in ACCESS_LEVELS:
            raise OptionError("access", f"{self.access!r} is unknown; allowed: {', '.join(ACCESS_LEVELS)}")
        if self.source == "surrogate":
            if not self.surrogate:
                raise OptionError(
                    "surrogate",
                    f"must name a dataset with source=surrogate; known datasets: {', '.join(DATASETS.names())}",
                )
            if self.surrogate not in DATASETS:
                raise OptionError(
                    "surrogate", f"{self.surrogate!r} is not a dataset; known datasets: {', '.join(DATASETS.names())}"
                )
        elif self.surrogate is not None or self.surrogate_root is not None:
            raise OptionError(
                "surrogate", f"and surrogate_root are only used with source=surrogate, not source={self.source}"
            )
        if not (isinstance(self.budget, int) and self.budget >= 1):
            raise OptionError("budget", f"must be a positive number of queries, got {self.budget}")
        if not self.top_k >= 1:
            raise OptionError("top_k", f"must be at least 1, got {self.top_k}")
        if not self.tau > 0:
            raise OptionError("tau", f"must be > 0, got {self.tau}")


def imitation_loss(student_logits: Tensor, answers: Tensor, access: Access, *, tau: float) -> dict[str, Tensor]:
    """The student's loss on the API's answers: τ²·KL(σ_τ(answer) ‖ σ_τ(student)), or CE on labels."""
    if access is Access.TOP1_LABEL:
        return {"ce": F.cross_entropy(student_logits, answers)}
    answer_logits = answers if access is Access.LOGITS else torch.log(answers)  # log 0 = −inf: target 0
    return {"kd": tau**2 * soft_kl(answer_logits, student_logits, tau)}


@register_attack("blackbox", config=BlackboxConfig)
class BlackboxKD(Attack):
    access = Access.PROBABILITIES
    data_access = DataAccess.TRAIN_INPUTS

    def __init__(self, cfg: BlackboxConfig) -> None:
        super().__init__(cfg)
        self.access = Access(cfg.access)
        self.top_k = cfg.top_k if self.access is Access.TOP_K else None
        self.data_access = SOURCES[cfg.source]
        self.query_budget = cfg.budget

    def check_task(self, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        if self.access is Access.TOP_K and self.cfg.top_k > num_classes:
            raise OptionError(
                "top_k", f"={self.cfg.top_k} exceeds the dataset's {num_classes} classes; allowed: 1 to {num_classes}"
            )

    def query_pool(self, ctx: AttackContext) -> Tensor:
        """The uint8 images the attacker will send, in the teacher's input format."""
        fmt = ctx.input_format
        assert fmt is not None
        if self.cfg.source == "noise":
            pixels = torch.rand((self.cfg.budget, *fmt.shape), generator=ctx.generator) * (fmt.pixel_max + 1)
            return pixels.floor().clamp(max=fmt.pixel_max).to(torch.uint8).to(ctx.trainer.device)
        if self.cfg.source == "surrogate":
            surrogate_cfg = DatasetConfig(name=self.cfg.surrogate, data_root=self.cfg.surrogate_root)
            surrogate = load_dataset(surrogate_cfg, ctx.trainer.device)
            pool = convert_images(surrogate.train.x, surrogate.pixel_max, fmt)
        else:
            assert ctx.inputs is not None
            pool = ctx.inputs
        chosen = torch.randperm(len(pool), generator=ctx.generator)[: self.cfg.budget]
        return pool[chosen.to(pool.device)]

    def run(self, teacher: TeacherAPI, student: nn.Module, ctx: AttackContext) -> nn.Module:
        fmt = ctx.input_format
        assert fmt is not None
        queries = self.query_pool(ctx)
        answers = collect_answers(teacher, queries, fmt)
        batch_size = ctx.trainer.recipe.batch_size
        tau, access = self.cfg.tau, self.access

        def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
            for idx in index_batches(
                len(queries), batch_size, shuffle=True, generator=ctx.generator, device=queries.device
            ):
                yield fmt.normalize(queries[idx]), answers[idx]

        ctx.trainer.fit(
            student,
            lambda x, answer: imitation_loss(student(x), answer, access, tau=tau),
            batches,
            steps_per_epoch=math.ceil(len(queries) / batch_size),
            description=ctx.description,
        )
        return student


def collect_answers(teacher: TeacherAPI, queries: Tensor, fmt: InputFormat) -> Tensor:
    """The API's answer to every query, each input sent exactly once."""
    return ask_in_chunks(teacher, queries, prepare=fmt.normalize)
