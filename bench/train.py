"""The one training loop: scratch training, nasty training and every KD attack differ only in their
objective (a function from a batch to named loss terms, which the loop sums)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from kdbench.data import ImageData
from kdbench.errors import ConfigError
from kdbench.faults import fault_point
from kdbench.losses import cross_entropy
from kdbench.progress import Progress
from kdbench.teacher_answers import Answered, answered_batches
from kdbench.typecheck import check_types
from torch import Tensor, nn

# A batch is (inputs, targets): the labels, or for distillation the labels with the teacher's
# answers (kdbench.teacher_answers.Answered). The loop only hands the targets to the objective.
Batch = tuple[Tensor, Any]
Objective = Callable[[Tensor, Any], dict[str, Tensor]]


@dataclass
class Recipe:
    """How a network is trained (the ``train`` config node)."""

    epochs: int = 60
    batch_size: int = 64
    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | multistep | constant
    milestones: list[int] = field(default_factory=list)  # epochs at which multistep multiplies by gamma
    gamma: float = 0.1

    def __post_init__(self) -> None:
        check_types(Recipe, vars(self), "train")
        if self.epochs <= 0:
            raise ConfigError(f"train.epochs must be a positive integer, got {self.epochs}")
        if self.batch_size <= 0:
            raise ConfigError(f"train.batch_size must be a positive integer, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train.optimizer {self.optimizer!r} is unknown; allowed: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule {self.schedule!r} is unknown; allowed: {', '.join(SCHEDULES)}")
        if not 0 <= self.momentum <= 1:
            raise ConfigError(f"train.momentum must be in [0, 1], got {self.momentum}")
        if not 0 <= self.weight_decay < math.inf:
            raise ConfigError(f"train.weight_decay must be >= 0 and finite, got {self.weight_decay}")
        if not 0 < self.gamma < math.inf:
            raise ConfigError(f"train.gamma (the multistep factor) must be > 0 and finite, got {self.gamma}")
        if any(m < 1 for m in self.milestones) or list(self.milestones) != sorted(set(self.milestones)):
            raise ConfigError(
                f"train.milestones must be increasing positive epochs (e.g. [80, 120]), got {list(self.milestones)}"
            )

    def check_milestones(self, where: str = "train") -> None:
        """Refuse a multistep schedule whose milestones all lie past the last epoch: the rate would never
        decay (``train.epochs=12`` with the default milestones 80 and 120)."""
        late = [m for m in self.milestones if m >= self.epochs]
        if self.schedule == "multistep" and late:
            raise ConfigError(
                f"{where}.milestones {list(self.milestones)}: {', '.join(map(str, late))} not before the last of "
                f"{where}.epochs={self.epochs}; allowed: epochs 1 to {self.epochs - 1} (or train.schedule=cosine)"
            )


OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "multistep", "constant")


@dataclass(frozen=True)
class Acceleration:
    """How the loop uses the device: resolved from the ``precision``, ``channels_last`` and
    ``compile`` config keys (see :func:`resolve_acceleration`)."""

    bf16: bool = False  # autocast the forward passes to bfloat16 (CUDA)
    channels_last: bool = False  # NHWC memory layout for convolutions (CUDA and CPU)
    compile: bool = False  # torch.compile the trained network's forward

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def layout(self, model: nn.Module) -> nn.Module:
        """The memory layout alone: for networks that only run forward here (a trained teacher)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def prepare(self, model: nn.Module) -> nn.Module:
        self.layout(model)
        if self.compile:
            model.compile()  # in place: objectives that call the module get the compiled forward
        return model

    def inputs(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x


PRECISIONS = ("auto", "fp32", "bf16")


def resolve_acceleration(
    device: torch.device, precision: str, channels_last: str | bool, compile: bool
) -> Acceleration:
    """``auto`` means: bf16 on CUDA only; channels_last on CUDA (tensor cores) and on the CPU, where
    oneDNN's NHWC convolutions train the digits CNN 1.2× and ResNet-18 1.4× faster (measured: README)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is unknown; allowed: {', '.join(PRECISIONS)}")
    on_cuda = device.type == "cuda"
    bf16 = on_cuda if precision == "auto" else precision == "bf16"
    if channels_last not in ("auto", True, False):
        raise ConfigError(f"channels_last must be auto, true or false, got {channels_last!r}")
    nhwc = device.type in ("cuda", "cpu") if channels_last == "auto" else bool(channels_last)
    return Acceleration(bf16=bf16, channels_last=nhwc, compile=bool(compile))


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite: the cell is recorded as diverged and the matrix goes on."""


FUSED_OPTIMIZER_DEVICES = ("cpu", "cuda")


def can_fuse(params: list[Tensor]) -> bool | None:
    """Whether the optimizer of ``params`` may use one fused kernel per step (None: PyTorch's default).

    One kernel instead of a dozen small ops per parameter: on the digits students the optimizer step
    is a third of the step time otherwise, and on DAFL's generator a tenth of its step."""
    return (bool(params) and all(p.device.type in FUSED_OPTIMIZER_DEVICES for p in params)) or None


def adam(params: Iterable[Tensor], lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    params = list(params)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=can_fuse(params))


def make_optimizer(params: Iterable[nn.Parameter], recipe: Recipe) -> torch.optim.Optimizer:
    params = list(params)
    if recipe.optimizer == "adam":
        return adam(params, recipe.lr, recipe.weight_decay)
    return torch.optim.SGD(
        params,
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        nesterov=False,
        fused=can_fuse(params),
    )


def make_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe) -> torch.optim.lr_scheduler.LRScheduler:
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs)
    if recipe.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(recipe.milestones), recipe.gamma)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def fit(
    model: nn.Module,
    objective: Objective,
    batches: Callable[[int], Iterator[Batch]],
    recipe: Recipe,
    *,
    progress: Progress,
    description: str,
    steps_per_epoch: int,
    acceleration: Acceleration = Acceleration(),
) -> dict[str, float]:
    """Train ``model`` for ``recipe.epochs`` epochs; ``batches(epoch)`` yields that epoch's batches.

    Loss terms are accumulated on the device and read once per epoch (no host sync per step).
    Returns the last epoch's mean of each loss term. Raises :class:`TrainingDiverged` on NaN/inf.
    """
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], recipe)
    schedule = make_schedule(optimizer, recipe)
    acceleration.prepare(model)
    device = next(model.parameters()).device
    model.train()
    means: dict[str, float] = {}
    step_point = f"train/{description}"
    with progress.task(description, total=recipe.epochs * steps_per_epoch, epochs=recipe.epochs) as advance:
        for epoch in range(recipe.epochs):
            sums: dict[str, Tensor] = {}
            steps = 0
            for x, y in batches(epoch):
                with acceleration.autocast(device):
                    terms = objective(acceleration.inputs(x), y)
                loss = sum(terms.values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0) + value.detach()
                steps += 1
                advance(1)
                fault_point(step_point)
            schedule.step()
            means = {name: float(total) / max(steps, 1) for name, total in sums.items()}
            bad = {name: value for name, value in means.items() if not math.isfinite(value)}
            if bad:
                raise TrainingDiverged(f"{description}: loss {bad} at epoch {epoch + 1}/{recipe.epochs}")
    model.eval()
    return means


@torch.inference_mode()
def predict_accuracy(predict: Callable[[Tensor], Tensor], batches: Iterable[Batch]) -> float:
    """Top-1 accuracy in percent of ``predict`` (inputs → logits or scores) over ``batches``."""
    correct, total = None, 0
    for x, y in batches:
        hits = (predict(x).argmax(dim=1) == y).sum()
        correct = hits if correct is None else correct + hits
        total += y.numel()
    return 100.0 * (correct.item() if correct is not None else 0) / max(total, 1)  # one host sync


def derive_seed(seed: int, purpose: str) -> int:
    """A reproducible seed for one purpose ("teacher/normal", "student/mlp/kd", ...).

    Each artifact and cell seeds itself from (run seed, purpose), so results do not depend on which
    other cells ran before it in this process or came from the cache.
    """
    import hashlib

    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass
class Trainer:
    """The training loop bound to one run's device, seed, recipe and progress reporter."""

    device: torch.device
    seed: int
    recipe: Recipe
    progress: Progress
    acceleration: Acceleration = Acceleration()

    def seeded(self, purpose: str) -> torch.Generator:
        """Seed torch's global RNG (weight init) for ``purpose`` and return a generator for its data order."""
        s = derive_seed(self.seed, purpose)
        torch.manual_seed(s)
        return torch.Generator().manual_seed(s)

    def fit(
        self,
        model: nn.Module,
        objective: Objective,
        batches: Callable[[int], Iterator[Batch]],
        *,
        steps_per_epoch: int,
        description: str,
        recipe: Recipe | None = None,
    ) -> dict[str, float]:
        return fit(
            model,
            objective,
            batches,
            recipe or self.recipe,
            progress=self.progress,
            description=description,
            steps_per_epoch=steps_per_epoch,
            acceleration=self.acceleration,
        )

    def fit_supervised(
        self,
        model: nn.Module,
        objective: Objective,
        data: ImageData,
        *,
        generator: torch.Generator,
        description: str,
        recipe: Recipe | None = None,
    ) -> dict[str, float]:
        """``fit`` over shuffled (and, where the dataset says so, augmented) training batches."""
        recipe = recipe or self.recipe

        def batches(epoch: int) -> Iterator[Batch]:
            return data.batches(data.train, recipe.batch_size, shuffle=True, augment=data.augment, generator=generator)

        steps = math.ceil(len(data.train) / recipe.batch_size)
        return self.fit(model, objective, batches, steps_per_epoch=steps, description=description, recipe=recipe)

    def fit_scratch(
        self, model: nn.Module, data: ImageData, *, generator: torch.Generator, description: str
    ) -> dict[str, float]:
        """Plain cross-entropy training on the labels: a normal teacher, a student's scratch baseline."""
        return self.fit_supervised(
            model, lambda x, y: cross_entropy(model(x), y), data, generator=generator, description=description
        )

    def fit_distillation(
        self,
        model: nn.Module,
        objective: Callable[[Tensor, Answered], dict[str, Tensor]],
        data: ImageData,
        ask: Callable[[Tensor], Tensor],
        *,
        generator: torch.Generator,
        description: str,
        recipe: Recipe | None = None,
    ) -> dict[str, float]:
        """``fit`` over the training split where each batch carries the teacher's answers
        (:class:`kdbench.teacher_answers.Answered`): asked once per input when inputs do not change."""
        recipe = recipe or self.recipe
        batches, steps = answered_batches(data, ask, recipe.batch_size, generator)
        return self.fit(model, objective, batches, steps_per_epoch=steps, description=description, recipe=recipe)

    def accuracy(self, predict: Callable[[Tensor], Tensor], data: ImageData) -> float:
        """Test-split top-1 accuracy (percent) of ``predict``."""
        return predict_accuracy(predict, data.batches(data.test, 1024))
