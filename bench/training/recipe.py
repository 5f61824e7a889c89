"""How a network trains: the recipe (optimiser, schedule, epochs), how it uses the device
(precision, layout, compilation), and the optimisers and schedules built from them."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from kdbench.config.typecheck import check_types
from kdbench.errors import ConfigError


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
            allowed = (
                f"milestones 1 to {self.epochs - 1}"
                if self.epochs > 1
                else f"no milestone fits in {where}.epochs=1: set {where}.schedule=cosine or constant"
            )
            raise ConfigError(
                f"{where}.milestones {list(self.milestones)}: {', '.join(map(str, late))} not before the last of "
                f"{where}.epochs={self.epochs}; allowed: {allowed} (or {where}.schedule=cosine)"
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
        """The memory layout alone, without compiling: for a trained teacher, which only runs forward
        here, and for the attacks' generators (fast_dfkd's, dfme's)."""
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
    fused = can_fuse(params)
    optimizer = torch.optim.SGD(
        params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=False, fused=fused
    )
    if fused and recipe.momentum > 0:
        # Fused SGD fails when only some parameters have a momentum buffer: a network whose heads
        # join the loss after the first steps (the skeptical student's) would crash it. A zero
        # buffer gives the same first step as none (0·momentum + grad = grad, dampening 0).
        for p in params:
            optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return optimizer


def make_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe) -> torch.optim.lr_scheduler.LRScheduler:
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs)
    if recipe.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(recipe.milestones), recipe.gamma)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
