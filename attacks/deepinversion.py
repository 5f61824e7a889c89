"""``deepinversion``: DeepInversion (Yin et al., CVPR 2020), then KD on the synthesised pool.

Batches of inputs are optimised from Gaussian noise (in the normalised input space the teacher
reads) so that the white-box teacher classifies them as chosen target classes, while the batch
statistics entering every BatchNorm layer of the teacher match that layer's running statistics,
under total-variation and l2 priors, with random jitter at every step (flips optional: the official
CIFAR-10 code only jitters). The optional adaptive term (Adaptive DeepInversion) rewards inputs on
which the current student disagrees with the teacher, computed as the official CIFAR-10 code does
(NVlabs/DeepInversion, ``cifar10/deepinversion_cifar10.py``, weight ``competitive_scale`` 0.01): see
:func:`reference_competition_loss`; the textbook 1 − JS is ``competition=js``. The student then
distils from the teacher on the pool: τ²·KL(σ_τ(teacher) ‖ σ_τ(student)).

Without the adaptive term the pool does not depend on the student, so it is synthesised once per
teacher in a run and reused by every student.
"""

from __future__ import annotations

import json
import math
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    ask_in_chunks,
    derive_seed,
    finite_logits,
    index_batches,
    random_crop_flip,
    register_attack,
    soft_kl,
)
from kdbench.attacks.student_recipe import check_recipe_overrides, student_recipe

# Temperature of the adaptive term's Jensen-Shannon divergence, as in the official CIFAR-10 code.
COMPETITION_TAU = 3.0

BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass
class DeepInversionConfig:
    """Defaults: the paper's CIFAR-10 settings with a budget small enough for 8×8 digits (seconds on
    a CPU); ``preset=paper_datafree`` sets the published budget."""

    pool_size: int = 1024  # synthesised inputs (common re-implementations: about 50k on CIFAR-10)
    batch_size: int = 256  # inputs optimised together (paper: 256): BatchNorm statistics are per batch
    steps: int = 25  # Adam steps per batch (paper: 2000)
    lr: float = 0.05  # Adam (paper: 0.05; the official code's default 0.1)
    w_bn: float = 10.0  # feature-distribution (BatchNorm statistics) weight (paper: 10)
    w_tv: float = 2.5e-5  # total-variation prior (official code: 2.5e-5; "better images": 1e-3)
    w_l2: float = 0.0  # l2 prior (official CIFAR-10 code: 0)
    jitter: int = 2  # random shift of up to ± this many pixels at every step (paper: 2)
    flip: bool = False  # random horizontal flip at every step (the ImageNet code; the CIFAR-10 code only jitters)
    adaptive: bool = False  # Adaptive DeepInversion: compete with the current student
    w_compete: float = 0.01  # weight of the competition term when adaptive (the CIFAR-10 code's competitive_scale)
    competition: str = "reference"  # reference: the official CIFAR-10 code's clamped form; js: textbook 1 − JS
    round_epochs: int = 1  # adaptive only: KD epochs on the pool so far after each synthesised batch
    kd_epochs: int = 40  # KD epochs on the finished pool
    tau: float = 3.0  # KD temperature on the pool (the official code compares teacher and student at τ = 3)
    augment: bool = False  # random crop (pad 4) + horizontal flip of pool inputs during KD
    student_recipe: dict[str, Any] = field(default_factory=dict)  # overrides of the run's `train` recipe

    def __post_init__(self) -> None:
        for name in ("pool_size", "batch_size", "steps", "kd_epochs", "round_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise OptionError(name, f"must be a positive integer, got {value}")
        if not isinstance(self.jitter, int) or self.jitter < 0:
            raise OptionError("jitter", f"must be an integer >= 0, got {self.jitter}")
        for name in ("lr", "tau"):
            if not getattr(self, name) > 0:
                raise OptionError(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("w_bn", "w_tv", "w_l2", "w_compete"):
            if not getattr(self, name) >= 0:
                raise OptionError(name, f"must be >= 0, got {getattr(self, name)}")
        if self.competition not in COMPETITION_FORMS:
            raise OptionError("competition", f"must be one of {', '.join(COMPETITION_FORMS)}, got {self.competition!r}")
        check_recipe_overrides(self.student_recipe)

    def synthesis_options(self) -> dict[str, Any]:
        """The options the pool depends on (when the adaptive term is off)."""
        kd_only = {"kd_epochs", "tau", "augment", "student_recipe", "w_compete", "round_epochs"}
        return {k: v for k, v in asdict(self).items() if k not in kd_only}


# -- the paper's loss terms -----------------------------------------------------------------------


class _BatchStatistics(torch.autograd.Function):
    """Per-channel mean and biased variance with a one-pass backward.

    For μ = E[x] and σ² = E[x²] − μ² over the N values of a channel, ∂L/∂x = a + b·x with
    b = 2·∂L/∂σ² / N and a = ∂L/∂μ / N − b·μ: one fused multiply-add over the input. Autograd's
    backward of the same formula makes about six passes over it (the two means' expansions, the
    product rule of x·x, their sum); the DeepInversion cells of the digits matrix run 9 % faster
    (normal teacher, both students, one thread: 12.1 and 12.0 s → 10.8 and 11.2 s). Where rounding
    makes E[x²] − μ² negative the variance is clamped to 0 and the formula's gradient still flows.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> tuple[Tensor, Tensor]:
        rows = x.movedim(1, -1).reshape(-1, x.shape[1])
        mean = rows.mean(dim=0)
        var = ((rows * rows).mean(dim=0) - mean * mean).clamp_min(0.0)
        ctx.save_for_backward(x, mean)
        return mean, var

    @staticmethod
    def backward(ctx: Any, grad_mean: Tensor, grad_var: Tensor) -> Tensor:
        x, mean = ctx.saved_tensors
        n = x.numel() // x.shape[1]  # values per channel
        b = (2.0 / n) * grad_var
        a = grad_mean / n - b * mean
        per_channel = [1, -1] + [1] * (x.ndim - 2)
        return torch.addcmul(a.view(per_channel), x, b.view(per_channel))


def batch_statistics(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of a BatchNorm layer's input (N×C or N×C×...).

    Computed as E[x²] − E[x]² over the rows of an (elements × channels) view: for the NHWC
    activations of a channels-last teacher that view costs no copy, and forward plus backward take
    a third of the time of ``x.var`` over dims (0, 2, 3) on the CPU (digits teacher, batch 256:
    3.3 ms against 8.8 ms per step for its three layers: ``test_batch_statistics`` in
    tests/benchmarks/test_datafree_bench.py); the backward is :class:`_BatchStatistics`'s.
    """
    return _BatchStatistics.apply(x)


def feature_distribution_loss(mean: Tensor, var: Tensor, running_mean: Tensor, running_var: Tensor) -> Tensor:
    """‖μ − μ_BN‖₂ + ‖σ² − σ²_BN‖₂: distance of one layer's batch statistics to its running ones."""
    return torch.linalg.vector_norm(mean - running_mean) + torch.linalg.vector_norm(var - running_var)


def total_variation(x: Tensor) -> Tensor:
    """Sum of the l2 norms of the differences between neighbouring pixels (horizontal, vertical and
    both diagonals), over the whole batch, as in the official code."""
    return (
        torch.linalg.vector_norm(x[:, :, :, :-1] - x[:, :, :, 1:])
        + torch.linalg.vector_norm(x[:, :, :-1, :] - x[:, :, 1:, :])
        + torch.linalg.vector_norm(x[:, :, 1:, :-1] - x[:, :, :-1, 1:])
        + torch.linalg.vector_norm(x[:, :, :-1, :-1] - x[:, :, 1:, 1:])
    )


def reference_competition_loss(teacher_logits: Tensor, student_logits: Tensor, tau: float = COMPETITION_TAU) -> Tensor:
    """The adaptive term exactly as the official CIFAR-10 code computes it (its ``loss_verifier_cig``).

    P = σ_τ(student), Q = σ_τ(teacher), M = (P + Q)/2, then P, Q and M each clamped to [0.01, 0.99]
    (M after it is formed, none renormalised); ``kl_loss(log P, M)`` with PyTorch's
    ``KLDivLoss(reduction="batchmean")`` is KL(M ‖ P) = Σ M·(log M − log P) / batch, so

        term = 1 − clamp(½·KL(M ‖ P) + ½·KL(M ‖ Q), 0, 1).

    Finite whatever the logits (every logarithm is of a value ≥ 0.01): −∞ served logits included.
    """
    p = torch.clamp(F.softmax(student_logits / tau, dim=1), 0.01, 0.99)
    q = torch.clamp(F.softmax(teacher_logits / tau, dim=1), 0.01, 0.99)
    m = torch.clamp(0.5 * (F.softmax(student_logits / tau, dim=1) + F.softmax(teacher_logits / tau, dim=1)), 0.01, 0.99)
    divergence = 0.5 * F.kl_div(torch.log(p), m, reduction="batchmean") + 0.5 * F.kl_div(
        torch.log(q), m, reduction="batchmean"
    )
    return 1.0 - torch.clamp(divergence, 0.0, 1.0)


def competition_loss(teacher_logits: Tensor, student_logits: Tensor, tau: float = COMPETITION_TAU) -> Tensor:
    """The textbook form (``competition=js``): 1 − JS(p_T ‖ p_S) at temperature τ, unclamped.

    JS = ½·KL(p_T ‖ m) + ½·KL(p_S ‖ m), m = (p_T + p_S)/2, natural log, averaged over the batch.
    """
    log_teacher = F.log_softmax(teacher_logits / tau, dim=1)
    log_student = F.log_softmax(student_logits / tau, dim=1)
    mixture = (log_teacher.exp() + log_student.exp()) / 2
    # log-probabilities from log_softmax and a floored mixture: a class both give probability 0
    # (underflow) contributes 0 to the divergence and to its gradient, not 0·log 0 = NaN
    log_mixture = torch.log(mixture.clamp_min(torch.finfo(mixture.dtype).tiny))

    def kl_to_mixture(log_p: Tensor) -> Tensor:
        return (log_p.exp() * (log_p - log_mixture)).sum(dim=1).mean()

    js = 0.5 * kl_to_mixture(log_teacher) + 0.5 * kl_to_mixture(log_student)
    return 1.0 - js


COMPETITION_FORMS = {"reference": reference_competition_loss, "js": competition_loss}


# -- BatchNorm statistics through forward hooks ---------------------------------------------------


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers that hold running statistics (what DeepInversion matches)."""
    return [m for m in model.modules() if isinstance(m, BATCHNORM_TYPES) and m.running_mean is not None]


def require_batchnorm(model: nn.Module, arch: str) -> None:
    if not batchnorm_layers(model):
        raise ConfigError(
            f"attack deepinversion matches the teacher's BatchNorm statistics, but teacher {arch!r} has no "
            f"BatchNorm layer with running statistics; choose a teacher with BatchNorm or another attack"
        )


class BatchNormStatistics:
    """A forward hook on one BatchNorm layer: the statistics of the batch entering it, and their
    distance to the layer's running statistics, from the latest forward pass."""

    def __init__(self, layer: nn.Module) -> None:
        self.mean: Tensor | None = None
        self.var: Tensor | None = None
        self.loss: Tensor | None = None
        self._handle = layer.register_forward_hook(self._record)

    def _record(self, layer: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self.mean, self.var = batch_statistics(inputs[0])
        self.loss = feature_distribution_loss(self.mean, self.var, layer.running_mean, layer.running_var)

    def remove(self) -> None:
        self._handle.remove()


@contextmanager
def batchnorm_statistics(model: nn.Module) -> Iterator[list[BatchNormStatistics]]:
    """Hooks on every BatchNorm layer of ``model`` while the block runs; removed afterwards."""
    hooks = [BatchNormStatistics(layer) for layer in batchnorm_layers(model)]
    try:
        yield hooks
    finally:
        for hook in hooks:
            hook.remove()


# -- synthesis ------------------------------------------------------------------------------------


def jitter_and_flip(x: Tensor, jitter: int, flip: bool, stream: torch.Generator) -> Tensor:
    """Roll the batch by a random offset of up to ±``jitter`` pixels and, half the time, mirror it."""
    if jitter:
        dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=stream).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if flip and torch.rand((), generator=stream).item() < 0.5:
        x = torch.flip(x, dims=(3,))
    return x


def inversion_step(
    x: Tensor,
    optimizer: torch.optim.Optimizer,
    teacher: Teacher,
    hooks: list[BatchNormStatistics],
    targets: Tensor,
    cfg: DeepInversionConfig,
    stream: torch.Generator,
    student: nn.Module | None = None,
) -> dict[str, Tensor]:
    """One Adam step on the inputs ``x`` (hooked on the teacher's BatchNorm layers); its loss terms."""
    seen = jitter_and_flip(x, cfg.jitter, cfg.flip, stream)
    logits = finite_logits(teacher.serve(seen))  # a Stingy Teacher's −∞ would make the CE infinite
    terms = {
        "ce": F.cross_entropy(logits, targets),
        "bn": cfg.w_bn * sum(hook.loss for hook in hooks),
        "tv": cfg.w_tv * total_variation(seen),
        "l2": cfg.w_l2 * torch.linalg.vector_norm(seen),
    }
    if student is not None:
        compete = COMPETITION_FORMS[cfg.competition]
        terms["compete"] = cfg.w_compete * compete(logits, student(seen))
    optimizer.zero_grad(set_to_none=True)
    sum(terms.values()).backward()
    optimizer.step()
    return {name: value.detach() for name, value in terms.items()}


def synthesize_batch(
    teacher: Teacher,
    targets: Tensor,
    cfg: DeepInversionConfig,
    input_shape: tuple[int, int, int],
    stream: torch.Generator,
    *,
    student: nn.Module | None = None,
    advance: Callable[[int], None] = lambda n: None,
) -> Tensor:
    """One batch optimised from noise toward ``targets``.

    Like the official code, it returns the last iterate: the code's "best" inputs alias the tensor
    the optimiser updates in place.
    """
    x = torch.randn(len(targets), *input_shape, generator=stream).to(targets.device).requires_grad_(True)
    optimizer = adam([x], cfg.lr)
    terms: dict[str, Tensor] = {}
    with batchnorm_statistics(teacher.model) as hooks:
        for _ in range(cfg.steps):
            terms = inversion_step(x, optimizer, teacher, hooks, targets, cfg, stream, student)
            advance(1)
    last = {name: float(value) for name, value in terms.items()}
    if not all(math.isfinite(v) for v in last.values()):
        raise TrainingDiverged(f"DeepInversion synthesis diverged: {last}")
    return x.detach()


# Pools synthesised without the adaptive term, per teacher object and synthesis settings: every
# student attacking the same teacher in a run reuses them; they go when the teacher does.
_POOLS: weakref.WeakKeyDictionary[Teacher, dict[str, Tensor]] = weakref.WeakKeyDictionary()


@register_attack("deepinversion", config=DeepInversionConfig)
class DeepInversion(Attack):
    access = Access.WHITE_BOX
    data_access = DataAccess.NONE

    def check_teacher(self, arch: str, model: nn.Module) -> None:
        require_batchnorm(model, arch)

    def run(self, teacher: Teacher, student: nn.Module, ctx: AttackContext) -> nn.Module:
        require_batchnorm(teacher.model, type(teacher.model).__name__)
        if self.cfg.adaptive:
            pool = self.synthesize(teacher, ctx, student=student)
        else:
            key = json.dumps(
                {
                    **self.cfg.synthesis_options(),
                    "seed": ctx.trainer.seed,
                    "shape": ctx.input_shape,
                    "classes": ctx.num_classes,
                },
                sort_keys=True,
            )
            pools = _POOLS.setdefault(teacher, {})
            if key not in pools:
                pools[key] = self.synthesize(teacher, ctx)
            pool = pools[key]
        self.distil(teacher, student, pool, ctx, epochs=self.cfg.kd_epochs, description="distillation")
        return student

    def synthesize(self, teacher: Teacher, ctx: AttackContext, *, student: nn.Module | None = None) -> Tensor:
        """The pool, batch by batch, with classes balanced over it. Its random stream depends on the
        run's seed only, not on the student, so a pool is the same whichever student asked first."""
        cfg = self.cfg
        stream = torch.Generator().manual_seed(derive_seed(ctx.trainer.seed, "deepinversion/pool"))
        targets = torch.arange(cfg.pool_size, device=ctx.trainer.device) % ctx.num_classes
        batches: list[Tensor] = []
        rounds = math.ceil(cfg.pool_size / cfg.batch_size)
        with ctx.trainer.progress.task(f"{ctx.description}: synthesis", total=rounds * cfg.steps) as advance:
            for start in range(0, cfg.pool_size, cfg.batch_size):
                if student is not None:
                    student.eval().requires_grad_(False)  # a fixed opponent while the batch is optimised
                x = synthesize_batch(
                    teacher,
                    targets[start : start + cfg.batch_size],
                    cfg,
                    ctx.input_shape,
                    stream,
                    student=student,
                    advance=advance,
                )
                batches.append(x)
                if student is not None:
                    student.requires_grad_(True)
                    if start + cfg.batch_size < cfg.pool_size:
                        self.distil(
                            teacher,
                            student,
                            torch.cat(batches),
                            ctx,
                            epochs=cfg.round_epochs,
                            description=f"distillation on {sum(len(b) for b in batches)} inputs",
                        )
        return torch.cat(batches)

    def distil(
        self, teacher: Teacher, student: nn.Module, pool: Tensor, ctx: AttackContext, *, epochs: int, description: str
    ) -> None:
        cfg = self.cfg
        recipe = student_recipe(ctx.trainer.recipe, epochs=epochs, overrides=cfg.student_recipe)
        pool_logits = finite_logits(ask_in_chunks(teacher.serve, pool))

        def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
            for idx in index_batches(
                len(pool), recipe.batch_size, shuffle=True, generator=ctx.generator, device=pool.device
            ):
                if not cfg.augment:
                    yield pool[idx], pool_logits[idx]
                    continue
                x = random_crop_flip(pool[idx], padding=4, generator=ctx.generator)
                with torch.no_grad():
                    logits = finite_logits(teacher.serve(x))
                yield x, logits  # outside no_grad: the student's step needs gradients

        def objective(x: Tensor, teacher_logits: Tensor) -> dict[str, Tensor]:
            return {"kd": cfg.tau**2 * soft_kl(teacher_logits, student(x), cfg.tau)}

        ctx.trainer.fit(
            student,
            objective,
            batches,
            steps_per_epoch=math.ceil(len(pool) / recipe.batch_size),
            description=f"{ctx.description}: {description}",
            recipe=recipe,
        )
