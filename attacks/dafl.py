"""``dafl``: Data-Free Learning of student networks (Chen et al., ICCV 2019).

A generator learns to produce inputs on which the white-box teacher is confident (one-hot term),
whose predictions are balanced over the classes (information-entropy term) and which excite the
teacher's penultimate features (activation term). In the same loop the student distils from the
teacher on every generated batch: KL(σ(teacher) ‖ σ(student)). The attacker never sees a training
input; generated batches live in the normalised input space the networks read (the generator ends
with a BatchNorm without affine parameters, as in the paper).

The generator's loss reads the teacher alone, never the student (the official loop's one backward
pass reaches the two optimisers through a detached batch), so the sequence of generated batches does
not depend on the student. The first student to attack a teacher in a run trains the generator in the
official joint loop and records that sequence; every other student of the same teacher and settings
replays it: the same training as its own joint loop, without the generator's cost (most of a step:
the generator and a backward pass through the teacher). A sequence larger than
:data:`RECORD_LIMIT_BYTES` is not kept, and each student trains its own generator.
"""

from __future__ import annotations

import json
import math
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.api import (
    Access,
    Attack,
    AttackContext,
    ConfigError,
    DataAccess,
    OptionError,
    Teacher,
    TrainingDiverged,
    adam,
    derive_seed,
    finite_logits,
    register_attack,
    soft_kl,
)
from kdbench.attacks.student_recipe import check_recipe_overrides, student_recipe


@dataclass
class DAFLConfig:
    """Defaults: the official code's (its MNIST settings) with a budget small enough for 8×8 digits
    (seconds on a CPU). The dataset files set the CIFAR weights; ``preset=paper_datafree`` the
    published budget."""

    epochs: int = 5  # generator + student epochs (paper: 2000 on CIFAR, 200 on MNIST)
    iters_per_epoch: int = 40  # generated batches per epoch (paper: 120)
    batch_size: int = 64  # generated inputs per batch (paper: 1024 on CIFAR, 512 on MNIST)
    latent_dim: int = 100  # paper: 1000 on CIFAR, 100 on MNIST
    generator_width: int = 128  # channels of the generator's first block (the second has half; paper: 128)
    generator_lr: float = 0.2  # Adam (paper: 0.02 on CIFAR, 0.2 on MNIST)
    w_one_hot: float = 1.0  # MNIST: 1; CIFAR-10: 0.05; CIFAR-100: 0.5
    w_entropy: float = 5.0  # MNIST and CIFAR-10: 5; CIFAR-100: 20
    w_activation: float = 0.1  # MNIST: 0.1; CIFAR-10: 0.01; CIFAR-100: 0.1
    student_recipe: dict[str, Any] = field(default_factory=dict)  # overrides of the run's `train` recipe

    def __post_init__(self) -> None:
        for name in ("epochs", "iters_per_epoch", "batch_size", "latent_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise OptionError(name, f"must be a positive integer, got {value}")
        if not isinstance(self.generator_width, int) or self.generator_width < 2:
            raise OptionError("generator_width", f"must be an integer >= 2, got {self.generator_width}")
        if not self.generator_lr > 0:
            raise OptionError("generator_lr", f"must be > 0, got {self.generator_lr}")
        for name in ("w_one_hot", "w_entropy", "w_activation"):
            if not getattr(self, name) >= 0:
                raise OptionError(name, f"must be >= 0, got {getattr(self, name)}")
        # the student learns from the generated batches: their size is the generator's
        check_recipe_overrides(self.student_recipe, "student_recipe", fixed=("epochs", "batch_size"))

    def generator_options(self) -> dict[str, Any]:
        """The options the generated sequence depends on (not the student's recipe)."""
        return {k: v for k, v in asdict(self).items() if k != "student_recipe"}


# -- the paper's generator losses -----------------------------------------------------------------


def one_hot_loss(teacher_logits: Tensor) -> Tensor:
    """Cross-entropy of the teacher's outputs against their own argmax (the pseudo-labels)."""
    return F.cross_entropy(teacher_logits, teacher_logits.detach().argmax(dim=1))


def information_entropy_loss(teacher_logits: Tensor) -> Tensor:
    """Σ p̄ log₁₀ p̄ over the classes, p̄ the batch-mean softmax: the negative entropy of the class balance.

    Lowest (−log₁₀ k for k classes) when the generated batch covers every class equally. Base 10 as in
    the official code, which the published weights (w_entropy = 5, 20) were tuned with.
    """
    mean_probs = F.softmax(teacher_logits, dim=1).mean(dim=0)
    # a class no input predicts at all (an underflowed p̄ = 0) contributes 0, not 0·log 0 = NaN
    floor = torch.finfo(mean_probs.dtype).tiny
    return (mean_probs * torch.log10(mean_probs.clamp_min(floor))).sum()


def activation_loss(teacher_features: Tensor) -> Tensor:
    """−mean |features| of the teacher's penultimate layer: large activations mark "real" inputs."""
    return -teacher_features.abs().mean()


def generator_loss(teacher_logits: Tensor, teacher_features: Tensor, cfg: DAFLConfig) -> dict[str, Tensor]:
    return {
        "one_hot": cfg.w_one_hot * one_hot_loss(teacher_logits),
        "entropy": cfg.w_entropy * information_entropy_loss(teacher_logits),
        "activation": cfg.w_activation * activation_loss(teacher_features),
    }


# -- the generator --------------------------------------------------------------------------------


class Generator(nn.Module):
    """The paper's generator, sized for any input shape C×H×W.

    z → Linear → w×⌈H/4⌉×⌈W/4⌉ → BN → up×2 → conv w → BN → LeakyReLU(0.2) → up to H×W → conv w/2
    → BN → LeakyReLU(0.2) → conv C → tanh → BN(affine=False), with width w = 128 in the paper. The
    inner BatchNorms have eps = 0.8, as in the official code (a positional-argument slip inherited
    from PyTorch-GAN, kept for fidelity).
    """

    def __init__(self, latent_dim: int, input_shape: tuple[int, int, int], width: int = 128) -> None:
        super().__init__()
        channels, height, width_px = input_shape
        self.width = width
        self.output_size = (height, width_px)
        self.init_size = (math.ceil(height / 4), math.ceil(width_px / 4))
        self.project = nn.Linear(latent_dim, width * self.init_size[0] * self.init_size[1])
        self.norm = nn.BatchNorm2d(width)
        self.block1 = nn.Sequential(
            nn.Conv2d(width, width, 3, stride=1, padding=1),
            nn.BatchNorm2d(width, eps=0.8),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(width, width // 2, 3, stride=1, padding=1),
            nn.BatchNorm2d(width // 2, eps=0.8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width // 2, channels, 3, stride=1, padding=1),
            nn.Tanh(),
            nn.BatchNorm2d(channels, affine=False),
        )

    def forward(self, z: Tensor) -> Tensor:
        x = self.project(z).view(z.shape[0], self.width, *self.init_size)
        x = F.interpolate(self.norm(x), scale_factor=2)
        x = F.interpolate(self.block1(x), size=self.output_size)
        return self.block2(x)


def teacher_logits_and_features(teacher: Teacher, x: Tensor) -> tuple[Tensor, Tensor]:
    """The served logits and the penultimate features, from one pass where the served function is
    the network's own; a perturbing defense's served logits are what a white-box attacker sees."""
    features = teacher.model.forward_features(x)
    return finite_logits(teacher.serve_from_logits(teacher.model.head(features), x)), features


def generator_step(
    generator: Generator, optimizer: torch.optim.Optimizer, teacher: Teacher, z: Tensor, cfg: DAFLConfig
) -> tuple[Tensor, Tensor, Tensor]:
    """One Adam step of the generator on the batch it makes from ``z``.

    Returns that batch and the teacher's logits on it (the student's next training pair) and the
    generator's loss, all detached.
    """
    x = generator(z)
    logits, features = teacher_logits_and_features(teacher, x)
    loss = sum(generator_loss(logits, features, cfg).values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return x.detach(), logits.detach(), loss.detach()


def generator_stream(ctx: AttackContext) -> torch.Generator:
    """The latent codes' random stream, on the run's device: from the run's seed only, not from the
    student's stream, so that the generated sequence is the same whichever student asks first."""
    stream = torch.Generator(device=ctx.trainer.device)
    stream.manual_seed(derive_seed(ctx.trainer.seed, "dafl/latent"))
    return stream


def new_generator(cfg: DAFLConfig, ctx: AttackContext) -> Generator:
    """The generator, initialised from the run's seed only (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(ctx.trainer.seed, "dafl/generator"))
        generator = Generator(cfg.latent_dim, ctx.input_shape, cfg.generator_width)
    return generator.to(ctx.trainer.device).train()


# A sequence of generated batches beyond this many bytes is not recorded (the paper's CIFAR budget
# would be terabytes): each student then trains its own generator, as the official code does.
RECORD_LIMIT_BYTES = 1 << 30


class GeneratedSequence:
    """Every batch a generator produced in the joint loop, with the teacher's logits on it, and each
    epoch's summed generator loss: what a later student replays."""

    def __init__(self) -> None:
        self.epochs: list[list[tuple[Tensor, Tensor]]] = []
        self.losses: list[float] = []


def sequence_bytes(cfg: DAFLConfig, ctx: AttackContext) -> int:
    """What recording the whole sequence would hold: every generated input and its logits, float32."""
    per_input = math.prod(ctx.input_shape) + ctx.num_classes
    return cfg.epochs * cfg.iters_per_epoch * cfg.batch_size * per_input * 4


# Sequences per teacher object and generator settings (with the run's seed): every student
# attacking the same teacher in a process replays them; they go when the teacher does.
_SEQUENCES: weakref.WeakKeyDictionary[Teacher, dict[str, GeneratedSequence]] = weakref.WeakKeyDictionary()


@register_attack("dafl", config=DAFLConfig)
class DAFL(Attack):
    access = Access.WHITE_BOX
    data_access = DataAccess.NONE

    def check_teacher(self, arch: str, model: nn.Module) -> None:
        """DAFL's activation term reads the penultimate features: the teacher must expose them."""
        missing = [m for m in ("forward_features", "head") if not callable(getattr(model, m, None))]
        if missing:
            raise ConfigError(
                f"attack 'dafl' needs the teacher's penultimate features: model {arch!r} must expose "
                f"forward_features(x) (the features) and head (the linear layer that maps them to logits), "
                f"with forward(x) == head(forward_features(x)); it lacks {' and '.join(missing)}"
            )

    def run(self, teacher: Teacher, student: nn.Module, ctx: AttackContext) -> nn.Module:
        cfg = self.cfg
        key = json.dumps(
            {**cfg.generator_options(), "seed": ctx.trainer.seed, "shape": ctx.input_shape, "classes": ctx.num_classes},
            sort_keys=True,
        )
        sequences = _SEQUENCES.setdefault(teacher, {})
        recorded = sequences.get(key)
        if recorded is not None and len(recorded.epochs) == cfg.epochs:
            batches, what = self.replayed(recorded, ctx), "student on the recorded generator batches"
        else:
            record = GeneratedSequence() if sequence_bytes(cfg, ctx) <= RECORD_LIMIT_BYTES else None
            batches, what = self.generated(teacher, ctx, record), "generator + student"
            if record is not None:
                sequences[key] = record  # complete once every epoch ran (a diverged one is never replayed)

        def objective(x: Tensor, teacher_logits: Tensor) -> dict[str, Tensor]:
            return {"kd": soft_kl(teacher_logits, student(x), tau=1.0)}

        recipe = student_recipe(ctx.trainer.recipe, epochs=cfg.epochs, overrides=cfg.student_recipe)
        ctx.trainer.fit(
            student,
            objective,
            batches,
            steps_per_epoch=cfg.iters_per_epoch,
            description=f"{ctx.description} ({what})",
            recipe=recipe,
        )
        return student

    def generated(
        self, teacher: Teacher, ctx: AttackContext, record: GeneratedSequence | None
    ) -> Callable[[int], Iterator[tuple[Tensor, Tensor]]]:
        """The official joint loop's batches: one generator step per batch, then the batch (and the
        teacher's logits) for the student, whose step follows in ``fit``; the same order as the
        official code, where both optimisers step after one backward pass that the detached batch
        keeps apart. Each batch also goes into ``record``."""
        cfg, device = self.cfg, ctx.trainer.device
        generator = new_generator(cfg, ctx)
        optimizer = adam(generator.parameters(), cfg.generator_lr)
        noise = generator_stream(ctx)

        def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
            total = torch.zeros((), device=device)
            kept: list[tuple[Tensor, Tensor]] | None = None if record is None else []
            for _ in range(cfg.iters_per_epoch):
                z = torch.randn(cfg.batch_size, cfg.latent_dim, device=device, generator=noise)
                x, logits, loss = generator_step(generator, optimizer, teacher, z, cfg)
                total = total + loss
                if kept is not None:  # over the memory limit nothing is held, not even an epoch
                    kept.append((x, logits))
                yield x, logits
            epoch_loss = float(total)
            if record is not None and kept is not None:
                record.epochs.append(kept)
                record.losses.append(epoch_loss)
            check_generator_loss(epoch_loss, epoch, ctx)

        return batches

    @staticmethod
    def replayed(recorded: GeneratedSequence, ctx: AttackContext) -> Callable[[int], Iterator[tuple[Tensor, Tensor]]]:
        def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
            yield from recorded.epochs[epoch]
            check_generator_loss(recorded.losses[epoch], epoch, ctx)

        return batches


def check_generator_loss(loss: float, epoch: int, ctx: AttackContext) -> None:
    if not math.isfinite(loss):
        raise TrainingDiverged(f"{ctx.description}: generator loss {loss} at epoch {epoch + 1}")
