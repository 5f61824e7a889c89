"""``dfme``: Data-Free Model Extraction (Truong et al., CVPR 2021), black-box and without data.

Written from the reference code (cake-lab/datafree-model-extraction, ``dfme/train.py`` and
``dfme/approximate_gradients.py``). A generator and the student play a min-max game through the
teacher's API alone. Every iteration:

1. ``g_iter`` generator steps. The generator maps Gaussian codes to pre-activation images x; the
   API answers on tanh(x) and on tanh(x + ε·u) for ``grad_m`` random unit directions u of each
   image (``batch_size·(grad_m + 1)`` queries). The gradient of the disagreement loss
   L(x) = −ℓ(student, teacher) with respect to x is estimated by forward differences,
   d/ε·Σ_u (L(x + ε·u) − L(x))·u / grad_m (d the number of pixels), backpropagated into the
   generator, which takes an Adam step: it looks for inputs where the student disagrees most.
2. ``d_iter`` student steps, each on a fresh generated batch and the API's answers to it
   (``batch_size`` queries each), minimising ℓ.

ℓ is ``loss=l1`` (the reference's default): the mean absolute difference between the student's
logits and the logits recovered from the answered probabilities, log p minus its mean over the
classes (``logit_correction=mean``); or ``loss=kl``: KL(p_teacher ‖ p_student). The API serves
probabilities: a probability of 0 (a top-k API, or a float32 underflow) is read as the smallest
normal float32, log ≈ −87.3, the most negative log-probability a float32 softmax can express.

Every query counts against ``budget``; the attack runs ⌊budget / (batch_size·(g_iter·(grad_m + 1)
+ d_iter))⌋ iterations, ``epoch_itrs`` to an epoch, and both learning rates drop by ``lr_gamma``
at 10, 30 and 50 % of the epochs, as in the reference.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.api import (
    Access,
    Attack,
    AttackContext,
    DataAccess,
    OptionError,
    Recipe,
    TeacherAPI,
    TrainingDiverged,
    derive_seed,
    register_attack,
)
from kdbench.attacks.student_recipe import check_recipe_overrides, student_recipe

LOSSES = ("l1", "kl")
LOGIT_CORRECTIONS = ("mean", "none")
# The reference's student optimiser (train.py: SGD 0.1, momentum 0.9, wd 5e-4, multistep ×0.3)
REFERENCE_STUDENT = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}
MILESTONE_FRACTIONS = (0.1, 0.3, 0.5)  # the reference's --steps: where both rates drop
PROBABILITY_FLOOR = torch.finfo(torch.float32).tiny


@dataclass
class DFMEConfig:
    """Defaults: the reference's CIFAR-10 run (run_cifar_dfme.sh: grad_m 1, lr_G 5e-4, l1) with a
    query budget for 8×8 digits; the reference's CIFAR-10 budget is 20 M queries."""

    budget: int = 1_000_000  # queries the API answers (reference CIFAR-10: 20 M)
    batch_size: int = 256  # generated inputs per step (reference: 256)
    epoch_itrs: int = 50  # iterations per epoch, the unit of the rate schedule (reference: 50)
    g_iter: int = 1  # generator steps per iteration (reference: 1)
    d_iter: int = 5  # student steps per iteration (reference: 5)
    grad_m: int = 1  # random directions per input of the gradient estimate (reference: 1)
    grad_epsilon: float = 1e-3  # the forward differences' step (reference: 1e-3)
    generator_lr: float = 5e-4  # Adam (run_cifar_dfme.sh: 5e-4; train.py's default 1e-4)
    lr_gamma: float = 0.3  # both rates' factor at each milestone (reference --scale)
    latent_dim: int = 256  # reference nz
    generator_width: int = 64  # reference ngf
    loss: str = "l1"  # l1 | kl
    logit_correction: str = "mean"  # mean | none: what is subtracted from log p to recover logits (l1)
    student_recipe: dict[str, Any] = field(default_factory=lambda: dict(REFERENCE_STUDENT))

    def __post_init__(self) -> None:
        for name in (
            "budget",
            "batch_size",
            "epoch_itrs",
            "g_iter",
            "d_iter",
            "grad_m",
            "latent_dim",
            "generator_width",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise OptionError(name, f"must be a positive integer, got {value}")
        for name in ("grad_epsilon", "generator_lr", "lr_gamma"):
            if not getattr(self, name) > 0:
                raise OptionError(name, f"must be > 0, got {getattr(self, name)}")
        if self.loss not in LOSSES:
            raise OptionError("loss", f"{self.loss!r} is unknown; allowed: {', '.join(LOSSES)}")
        if self.logit_correction not in LOGIT_CORRECTIONS:
            raise OptionError(
                "logit_correction", f"{self.logit_correction!r} is unknown; allowed: {', '.join(LOGIT_CORRECTIONS)}"
            )
        if self.budget < self.queries_per_iteration:
            raise OptionError(
                "budget",
                f"={self.budget} is below one iteration's {self.queries_per_iteration} queries "
                f"(batch_size·(g_iter·(grad_m + 1) + d_iter)); allowed: at least {self.queries_per_iteration}",
            )
        check_recipe_overrides(self.student_recipe, "student_recipe", fixed=("epochs", "batch_size"))

    @property
    def queries_per_iteration(self) -> int:
        return self.batch_size * (self.g_iter * (self.grad_m + 1) + self.d_iter)

    @property
    def iterations(self) -> int:
        return self.budget // self.queries_per_iteration

    @property
    def epochs(self) -> int:
        return math.ceil(self.iterations / self.epoch_itrs)

    def milestones(self) -> list[int]:
        """Epoch indices (from 0) from which each drop applies. The reference steps its schedulers at
        the start of each epoch, so its milestone s (of the epochs counted from 1) is ours s − 1."""
        reference_epochs = self.budget // (self.queries_per_iteration * self.epoch_itrs) + 1
        return sorted(max(int(f * reference_epochs) - 1, 0) for f in MILESTONE_FRACTIONS)


# -- the generator --------------------------------------------------------------------------------


class DFMEGenerator(nn.Module):
    """The reference's ``GeneratorA``, sized for any C×H×W: z → Linear → 2w×⌈H/4⌉×⌈W/4⌉ → BN → up ×2
    → conv 2w → BN → LeakyReLU(0.2) → up to H×W → conv w → BN → LeakyReLU(0.2) → conv C →
    BN(affine=False): the pre-activation images; tanh gives the inputs the API is sent."""

    def __init__(self, latent_dim: int, input_shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        channels, height, width_px = input_shape
        self.output_size = (height, width_px)
        self.init_size = (math.ceil(height / 4), math.ceil(width_px / 4))
        self.project = nn.Linear(latent_dim, 2 * width * self.init_size[0] * self.init_size[1])
        self.norm = nn.BatchNorm2d(2 * width)
        self.block1 = nn.Sequential(
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2)
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(2 * width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, channels, 3, padding=1),
            nn.BatchNorm2d(channels, affine=False),
        )

    def forward(self, z: Tensor) -> Tensor:
        """The pre-activation images (the reference's ``pre_x=True``)."""
        x = self.project(z).view(z.shape[0], -1, *self.init_size)
        x = F.interpolate(self.norm(x), scale_factor=2)
        x = F.interpolate(self.block1(x), size=self.output_size)
        return self.block2(x)


# -- the losses and the gradient estimate ---------------------------------------------------------


def recovered_logits(probabilities: Tensor, correction: str) -> Tensor:
    """Logits from the API's probabilities: log p (0 read as the smallest normal float32), minus its
    mean over the classes with ``correction=mean`` (the reference's ``no_logits`` + ``mean``)."""
    log_p = torch.log(probabilities.clamp_min(PROBABILITY_FLOOR))
    return log_p - log_p.mean(dim=1, keepdim=True) if correction == "mean" else log_p


def disagreement(student_logits: Tensor, answers: Tensor, cfg: DFMEConfig) -> Tensor:
    """ℓ per input, the reference's per-point loss: mean |s − recovered logits| over the classes
    (l1), or KL(p_teacher ‖ p_student) summed over the classes (kl)."""
    if cfg.loss == "l1":
        return (student_logits - recovered_logits(answers, cfg.logit_correction)).abs().mean(dim=1)
    log_s = F.log_softmax(student_logits, dim=1)
    return F.kl_div(log_s, answers, reduction="none").sum(dim=1)


def student_loss(student_logits: Tensor, answers: Tensor, cfg: DFMEConfig) -> Tensor:
    """The student's loss on a batch: F.l1_loss (mean over every entry) or KL with ``batchmean``."""
    if cfg.loss == "l1":
        return F.l1_loss(student_logits, recovered_logits(answers, cfg.logit_correction))
    return F.kl_div(F.log_softmax(student_logits, dim=1), answers, reduction="batchmean")


def unit_directions(n: int, m: int, shape: tuple[int, ...], stream: torch.Generator) -> Tensor:
    """``m`` directions per input, uniform on the unit sphere of the input space: n×m×shape."""
    dim = math.prod(shape)
    u = torch.randn(n, m, dim, generator=stream)
    return (u / torch.linalg.vector_norm(u, dim=2, keepdim=True)).view(n, m, *shape)


def estimate_gradient(
    ask: Callable[[Tensor], Tensor],
    student: nn.Module,
    x: Tensor,
    directions: Tensor,
    cfg: DFMEConfig,
    num_classes: int,
) -> tuple[Tensor, Tensor]:
    """The forward-difference estimate of ∂L/∂x for L = −ℓ(student, teacher) at the pre-activation
    images ``x`` (n×C×H×W), from the API's answers (``ask``: inputs → probabilities) at tanh(x) and
    tanh(x + ε·u) for the ``directions`` u (n×m×C×H×W); and L at x, averaged (the generator's loss).

    As the reference: the differences are scaled by d/ε (``forward_differences``) and averaged
    over the directions, and the l1 estimate is further divided by (classes · n).
    """
    n, m = directions.shape[:2]
    shape = x.shape[1:]
    dim = math.prod(shape)
    with torch.no_grad():
        u = torch.cat([directions, torch.zeros(n, 1, *shape, dtype=directions.dtype)], dim=1).to(x.device)
        points = torch.tanh((x.detach().unsqueeze(1) + cfg.grad_epsilon * u).view(-1, *shape))
        losses = -disagreement(student(points), ask(points), cfg).view(n, m + 1)
        differences = (losses[:, :-1] - losses[:, -1:]).view(n, m, *([1] * len(shape)))
        estimate = (dim / cfg.grad_epsilon * differences * u[:, :-1]).mean(dim=1)
        if cfg.loss == "l1":
            estimate = estimate / (num_classes * n)
    return estimate, losses[:, -1].mean()


# -- the attack -----------------------------------------------------------------------------------


@register_attack("dfme", config=DFMEConfig)
class DFME(Attack):
    access = Access.PROBABILITIES
    data_access = DataAccess.NONE

    curve_in_run = True  # the student learns as the queries come: its curve is read off the one run

    def __init__(self, cfg: DFMEConfig) -> None:
        super().__init__(cfg)
        self.query_budget = cfg.budget

    def run(self, teacher: TeacherAPI, student: nn.Module, ctx: AttackContext) -> nn.Module:
        cfg, device = self.cfg, ctx.trainer.device
        stream = torch.Generator().manual_seed(derive_seed(ctx.trainer.seed, "dfme/stream"))
        with torch.random.fork_rng(devices=[]):  # the generator's initial weights from the run's seed only
            torch.manual_seed(derive_seed(ctx.trainer.seed, "dfme/generator"))
            generator = DFMEGenerator(cfg.latent_dim, ctx.input_shape, cfg.generator_width)
        generator = ctx.trainer.acceleration.layout(generator.to(device)).train()
        optimizer = torch.optim.Adam(generator.parameters(), lr=cfg.generator_lr)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.milestones(), cfg.lr_gamma)
        recipe = self.student_recipe(ctx)

        def codes() -> Tensor:
            return torch.randn(cfg.batch_size, cfg.latent_dim, generator=stream).to(device)

        def generator_step() -> float:
            x = generator(codes())
            directions = unit_directions(cfg.batch_size, cfg.grad_m, tuple(x.shape[1:]), stream)
            student.eval()  # the reference estimates with the student in eval mode
            estimate, loss = estimate_gradient(teacher, student, x, directions, cfg, ctx.num_classes)
            student.train()
            optimizer.zero_grad(set_to_none=True)
            x.backward(estimate)
            optimizer.step()
            return float(loss)

        def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
            if epoch:
                schedule.step()
            first = epoch * cfg.epoch_itrs
            for _ in range(first, min(first + cfg.epoch_itrs, cfg.iterations)):
                for _ in range(cfg.g_iter):
                    loss = generator_step()
                    if not math.isfinite(loss):
                        raise TrainingDiverged(f"{ctx.description}: generator loss {loss} at epoch {epoch + 1}")
                for _ in range(cfg.d_iter):
                    with torch.no_grad():
                        x = torch.tanh(generator(codes()))
                    yield x, teacher(x)
                ctx.queries_spent(student, teacher.queries)

        ctx.trainer.fit(
            student,
            lambda x, answers: {cfg.loss: student_loss(student(x), answers, cfg)},
            batches,
            steps_per_epoch=cfg.epoch_itrs * cfg.d_iter,
            description=f"{ctx.description}: generator + student",
            recipe=recipe,
        )
        return student

    def student_recipe(self, ctx: AttackContext) -> Recipe:
        """The reference's optimiser with its schedule. A recipe's milestones are distinct epochs from
        1 on, so a drop from the first epoch (a budget of under 20 epochs) scales the initial rate
        instead, and two drops at one epoch (under 4 epochs) count once."""
        cfg = self.cfg
        base = student_recipe(
            ctx.trainer.recipe, epochs=cfg.epochs, overrides={**cfg.student_recipe, "batch_size": cfg.batch_size}
        )
        if "schedule" in cfg.student_recipe:  # the user's own schedule replaces the reference's
            return base
        milestones = cfg.milestones()
        later = sorted({m for m in milestones if m > 0})
        return dataclasses.replace(
            base,
            lr=base.lr * cfg.lr_gamma ** milestones.count(0),
            schedule="multistep" if later else "constant",
            milestones=later,
            gamma=cfg.lr_gamma,
        )
