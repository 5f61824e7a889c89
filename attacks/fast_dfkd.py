"""``fast_dfkd``: Fast-DFKD, data-free KD by meta-learned synthesis (Fang et al., AAAI 2022).

Written from the reference code (zju-vipa/Fast-Datafree, ``datafree/synthesis/fast_meta.py`` and
``datafree_kd.py``, method ``fast_meta``). Every round:

1. A *fast* generator, a copy of the *meta* generator, and a fresh batch of latent codes ``z`` take
   ``g_steps`` Adam steps (β = 0.5, 0.999; generator rate ``lr_g``, codes ``lr_z``) on
   ``w_bn·L_bn + w_oh·L_oh + w_adv·L_adv``, each step on a randomly cropped (and flipped) view:

   - L_bn: DeepInversion's feature-distribution loss ‖μ − μ_BN‖₂ + ‖σ² − σ²_BN‖₂ at every
     BatchNorm layer of the teacher, the batch's statistics mixed with a momentum average of the
     earlier rounds' (``bn_momentum``, the reference's ``bn_mmt``);
   - L_oh: cross-entropy of the teacher's outputs against random target classes;
   - L_adv: −mean(KL(p_teacher ‖ p_student) · [the student agrees with the teacher]), from the
     ``warmup``-th round on: inputs on which the student already agrees but with a different
     distribution.
2. The meta generator takes one Adam step (rate ``lr_g·g_steps``) on the sum of the fast
   generator's gradients over its steps (first-order MAML, the reference's ``is_maml=1``).
3. The iterate of lowest loss joins the memory bank (as 8-bit images, the reference's PNGs), and
   after the warm-up the student takes ``kd_steps`` SGD steps on random batches of the whole bank,
   cropped and flipped, on τ²·KL(σ_τ(teacher) ‖ σ_τ(student)) at τ = 20.

The attacker never sees a training input (data access: none) and reads the teacher white-box, as
the reference does. Not carried over: the reference's ``reset_l0`` (its condition is always true,
so it would reinitialise every module, the generator itself included, which has no weight) and the
REPTILE variant (``is_maml=0``), which no published setting uses.
"""

from __future__ import annotations

import copy
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
    InputFormat,
    OptionError,
    Teacher,
    TrainingDiverged,
    crop_views,
    derive_seed,
    finite_logits,
    index_batches,
    random_crop_flip,
    random_views,
    register_attack,
    soft_kl,
)
from kdbench.attacks.deepinversion import (
    batch_statistics,
    batchnorm_layers,
    feature_distribution_loss,
    require_batchnorm,
)
from kdbench.attacks.student_recipe import check_recipe_overrides, student_recipe

# The student's optimiser in the reference (datafree_kd.py: SGD 0.2, momentum 0.9, wd 1e-4, cosine)
REFERENCE_STUDENT = {"optimizer": "sgd", "lr": 0.2, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "cosine"}
ADAM_BETAS = (0.5, 0.999)  # the reference's, for the fast and the meta generator alike


@dataclass
class FastDFKDConfig:
    """Defaults: the reference's Fast-2 CIFAR setting (scripts/fast_cifar.sh, ResNet-34 teacher)
    with a budget small enough for 8×8 digits; ``preset=paper_datafree`` sets the published one."""

    epochs: int = 20  # rounds with KD after the warm-up (reference: 200)
    warmup: int = 2  # rounds of synthesis alone, without the adversarial term, first (reference: 20)
    kd_steps: int = 25  # student steps after each round's synthesis (reference: 400)
    batch_size: int = 256  # inputs synthesised per round, and the student's batch (reference: 256)
    g_steps: int = 2  # steps of the fast generator per round (Fast-2; Fast-5 and Fast-10 exist)
    lr_g: float = 5e-3  # the fast generator's Adam rate (Fast-2: 5e-3; Fast-5 3e-3; Fast-10 2e-3)
    lr_z: float = 0.015  # the latent codes' Adam rate (Fast-2: 0.015; Fast-5 and Fast-10 0.01)
    latent_dim: int = 256  # reference nz
    generator_width: int = 64  # reference ngf: channels of the generator's last block (its first has twice)
    w_bn: float = 10.0
    w_oh: float = 0.5
    w_adv: float = 1.33  # ResNet-34 teacher: 1.33; WRN-40-2: 1.1; VGG-11: 1.0
    bn_momentum: float = 0.9  # reference bn_mmt
    tau: float = 20.0  # the student's KD temperature (reference --T 20)
    crop_padding: int = 4  # random crop of the padded image, at synthesis and in KD (reference: 4)
    flip: bool = True  # random horizontal flip with the crop (reference: yes; a mirrored digit is another digit)
    student_recipe: dict[str, Any] = field(default_factory=lambda: dict(REFERENCE_STUDENT))

    def __post_init__(self) -> None:
        for name in ("epochs", "kd_steps", "batch_size", "g_steps", "latent_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise OptionError(name, f"must be a positive integer, got {value}")
        for name in ("warmup", "crop_padding"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise OptionError(name, f"must be an integer >= 0, got {value}")
        if not isinstance(self.generator_width, int) or self.generator_width < 1:
            raise OptionError("generator_width", f"must be a positive integer, got {self.generator_width}")
        for name in ("lr_g", "lr_z", "tau"):
            if not getattr(self, name) > 0:
                raise OptionError(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("w_bn", "w_oh", "w_adv"):
            if not getattr(self, name) >= 0:
                raise OptionError(name, f"must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.bn_momentum < 1:
            raise OptionError("bn_momentum", f"must be in [0, 1), got {self.bn_momentum}")
        # the student learns on the synthesised rounds: their number is the attack's budget
        check_recipe_overrides(self.student_recipe, "student_recipe", fixed=("epochs", "batch_size"))


# -- the generator --------------------------------------------------------------------------------


class FastGenerator(nn.Module):
    """The reference's generator, sized for any C×H×W: z → Linear → 2w×⌈H/4⌉×⌈W/4⌉ → BN → up ×2 →
    conv 2w (no bias) → BN → LeakyReLU(0.2) → up to H×W → conv w (no bias) → BN → LeakyReLU(0.2) →
    conv C → sigmoid: images in [0, 1], normalised by the owner's preprocessing afterwards."""

    def __init__(self, latent_dim: int, input_shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        channels, height, width_px = input_shape
        self.output_size = (height, width_px)
        self.init_size = (math.ceil(height / 4), math.ceil(width_px / 4))
        self.project = nn.Linear(latent_dim, 2 * width * self.init_size[0] * self.init_size[1])
        self.norm = nn.BatchNorm2d(2 * width)
        self.block1 = nn.Sequential(
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2),
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(2 * width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, channels, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, z: Tensor) -> Tensor:
        x = self.project(z).view(z.shape[0], -1, *self.init_size)
        x = F.interpolate(self.norm(x), scale_factor=2)  # nn.Upsample's default: nearest
        x = F.interpolate(self.block1(x), size=self.output_size)
        return self.block2(x)


# -- the loss terms -------------------------------------------------------------------------------


class MomentumBatchNormStatistics:
    """The reference's ``DeepInversionHook`` with momentum: at one BatchNorm layer,
    ‖σ²_BN − ((1−m)·σ² + m·σ²_avg)‖₂ + ‖μ_BN − ((1−m)·μ + m·μ_avg)‖₂, where (μ_avg, σ²_avg) average
    the statistics of the last pass of every earlier round (:meth:`update_average`); without an
    average yet (the first round) or with m = 0 it is DeepInversion's distance."""

    def __init__(self, layer: nn.Module, momentum: float) -> None:
        self.layer = layer
        self.momentum = momentum
        self.average: tuple[Tensor, Tensor] | None = None
        self.last: tuple[Tensor, Tensor] | None = None
        self.loss: Tensor | None = None
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def attach(self) -> None:
        self._handle = self.layer.register_forward_hook(self._record)

    def _record(self, layer: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        mean, var = batch_statistics(inputs[0])
        self.last = (mean, var)
        if self.average is not None and self.momentum:
            m = self.momentum
            mean = (1 - m) * mean + m * self.average[0]
            var = (1 - m) * var + m * self.average[1]
        self.loss = feature_distribution_loss(mean, var, layer.running_mean, layer.running_var)

    def update_average(self) -> None:
        """End of a round: fold its last pass's statistics into the average."""
        if self.last is None:
            return
        mean, var = (t.detach() for t in self.last)
        if self.average is None:
            self.average = (mean, var)
        else:
            m = self.momentum
            self.average = (m * self.average[0] + (1 - m) * mean, m * self.average[1] + (1 - m) * var)

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def kl_rows(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """KL(p_teacher ‖ p_student) of each row at τ = 1, from log-probabilities on both sides (finite
    where a masked class has probability 0; the reference's ``kldiv(s, t, reduction='none').sum(1)``
    for finite logits). The teacher's side keeps its gradient, as in the reference."""
    log_t = F.log_softmax(teacher_logits, dim=1)
    log_s = F.log_softmax(student_logits, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(dim=1)


def adversarial_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """−mean over the batch of KL(p_t ‖ p_s) on the inputs where the student's top class is the
    teacher's (the reference's "decision adversarial distillation"); 0 elsewhere."""
    agree = (student_logits.argmax(dim=1) == teacher_logits.argmax(dim=1)).float()
    return -(kl_rows(student_logits, teacher_logits) * agree).mean()


def synthesis_loss(
    teacher_logits: Tensor,
    targets: Tensor,
    bn_losses: list[Tensor],
    cfg: FastDFKDConfig,
    student_logits: Tensor | None = None,
) -> dict[str, Tensor]:
    """The generator's weighted terms; ``student_logits`` None before the warm-up ends (no L_adv)."""
    terms = {"bn": cfg.w_bn * sum(bn_losses, torch.zeros((), device=teacher_logits.device))}
    terms["oh"] = cfg.w_oh * F.cross_entropy(teacher_logits, targets)
    if student_logits is not None and cfg.w_adv > 0:
        terms["adv"] = cfg.w_adv * adversarial_loss(student_logits, teacher_logits)
    return terms


# -- synthesis ------------------------------------------------------------------------------------


class Synthesizer:
    """The meta generator, its optimiser, the BatchNorm hooks' averages and the memory bank."""

    def __init__(self, teacher: Teacher, cfg: FastDFKDConfig, ctx: AttackContext) -> None:
        self.teacher, self.cfg, self.ctx = teacher, cfg, ctx
        fmt = ctx.input_format
        assert fmt is not None
        self.fmt = fmt
        self.device = ctx.trainer.device
        self.stream = torch.Generator().manual_seed(derive_seed(ctx.trainer.seed, "fast_dfkd/synthesis"))
        with torch.random.fork_rng(devices=[]):  # the generator's initial weights from the run's seed only
            torch.manual_seed(derive_seed(ctx.trainer.seed, "fast_dfkd/generator"))
            self.generator = FastGenerator(cfg.latent_dim, ctx.input_shape, cfg.generator_width)
        self.generator = ctx.trainer.acceleration.layout(self.generator.to(self.device)).train()
        self.meta_optimizer = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_g * cfg.g_steps, betas=ADAM_BETAS)
        self.hooks = [MomentumBatchNormStatistics(layer, cfg.bn_momentum) for layer in batchnorm_layers(teacher.model)]
        self.bank: list[Tensor] = []  # uint8 batches, values 0..255 standing for [0, 1]
        self.rounds = 0

    def view(self, images: Tensor, stream: torch.Generator) -> Tensor:
        """Images in [0, 1] → a random crop (and flip), normalised as the teacher reads its inputs."""
        cfg = self.cfg
        if cfg.crop_padding or cfg.flip:
            images = random_crop_flip(images, padding=cfg.crop_padding, generator=stream, flip=cfg.flip)
        return normalize_unit(images, self.fmt)

    def synthesize(self, student: nn.Module | None) -> dict[str, float]:
        """One round: the fast generator's steps, the meta step, the best iterate into the bank.
        ``student`` None: a warm-up round (no adversarial term). Returns the last step's terms."""
        cfg, device = self.cfg, self.device
        self.rounds += 1
        z = torch.randn(cfg.batch_size, cfg.latent_dim, generator=self.stream).to(device).requires_grad_(True)
        targets = torch.randint(0, self.ctx.num_classes, (cfg.batch_size,), generator=self.stream).to(device)
        if student is not None:
            student.eval().requires_grad_(False)  # a fixed opponent: gradients reach the inputs only
        for hook in self.hooks:  # attached for the synthesis only, not for the teacher's KD passes
            hook.attach()
        try:
            terms, best = self.fast_steps(z, targets, student)
        finally:
            for hook in self.hooks:
                hook.remove()
        for hook in self.hooks:
            hook.update_average()
        if student is not None:
            student.train().requires_grad_(True)
        last = {name: float(value) for name, value in terms.items()}
        if not all(math.isfinite(v) for v in last.values()):
            raise TrainingDiverged(
                f"{self.ctx.description}: Fast-DFKD synthesis diverged at round {self.rounds}: {last}"
            )
        self.bank.append(to_bytes(best))
        return last

    def fast_steps(self, z: Tensor, targets: Tensor, student: nn.Module | None) -> tuple[dict[str, Tensor], Tensor]:
        """The fast generator's ``g_steps`` from a copy of the meta generator, and the meta step on
        the sum of their gradients; the last step's terms and the iterate of lowest loss."""
        cfg = self.cfg
        fast = copy.deepcopy(self.generator)
        optimizer = torch.optim.Adam(
            [{"params": fast.parameters()}, {"params": [z], "lr": cfg.lr_z}], lr=cfg.lr_g, betas=ADAM_BETAS
        )
        self.meta_optimizer.zero_grad(set_to_none=True)
        best_cost, best = math.inf, None
        terms: dict[str, Tensor] = {}
        for _ in range(cfg.g_steps):
            images = fast(z)
            seen = self.view(images, self.stream)
            teacher_logits = finite_logits(self.teacher.serve(seen))
            student_logits = student(seen) if student is not None else None
            terms = synthesis_loss(
                teacher_logits, targets, [h.loss for h in self.hooks if h.loss is not None], cfg, student_logits
            )
            loss = sum(terms.values())
            cost = float(loss.detach())
            if best is None or cost < best_cost:
                best_cost, best = cost, images.detach()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            accumulate_gradients(self.generator, fast)  # first-order MAML: Σ of the fast steps' gradients
            optimizer.step()
        self.meta_optimizer.step()
        assert best is not None
        return {name: value.detach() for name, value in terms.items()}, best


def accumulate_gradients(meta: nn.Module, fast: nn.Module) -> None:
    """Add each fast parameter's gradient to its meta parameter's (zeros where it has none yet)."""
    for p, fast_p in zip(meta.parameters(), fast.parameters(), strict=True):
        if fast_p.grad is None:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.add_(fast_p.grad)


def to_bytes(images: Tensor) -> Tensor:
    """[0, 1] → uint8 as the reference saves its PNGs: ``(x.clamp(0, 1) * 255).astype(uint8)``, truncated."""
    return (images.clamp(0, 1) * 255).to(torch.uint8)


def normalize_unit(images: Tensor, fmt: InputFormat) -> Tensor:
    """Images in [0, 1] normalised with the owner's per-channel statistics (those of pixel/pixel_max)."""
    mean = torch.tensor(fmt.mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.tensor(fmt.std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - mean) / std


# -- the attack -----------------------------------------------------------------------------------


@register_attack("fast_dfkd", config=FastDFKDConfig)
class FastDFKD(Attack):
    access = Access.WHITE_BOX
    data_access = DataAccess.NONE

    def check_teacher(self, arch: str, model: nn.Module) -> None:
        require_batchnorm(model, arch)

    def run(self, teacher: Teacher, student: nn.Module, ctx: AttackContext) -> nn.Module:
        require_batchnorm(teacher.model, type(teacher.model).__name__)
        cfg = self.cfg
        synthesizer = Synthesizer(teacher, cfg, ctx)
        with ctx.trainer.progress.task(f"{ctx.description}: warm-up synthesis", total=cfg.warmup) as advance:
            for round_ in range(1, cfg.warmup + 1):
                # the reference's adversarial term starts at round `warmup` (its `ep >= ep_start`,
                # counted from 1), the last warm-up round, one round before the student's first KD
                synthesizer.synthesize(student if round_ >= cfg.warmup else None)
                advance(1)
        self.distil(synthesizer, teacher, student, ctx)
        return student

    def distil(self, synthesizer: Synthesizer, teacher: Teacher, student: nn.Module, ctx: AttackContext) -> None:
        """Each epoch of ``fit`` is one round: synthesis against the current student, then
        ``kd_steps`` batches drawn from the whole bank, reshuffled whenever it is used up (the
        reference's data loader, built anew each round), each image a random crop (and flip) of
        its bank image, with the teacher's answer to that view."""
        cfg = self.cfg
        recipe = student_recipe(
            ctx.trainer.recipe, epochs=cfg.epochs, overrides={**cfg.student_recipe, "batch_size": cfg.batch_size}
        )
        device = ctx.trainer.device
        answers = ViewAnswers.for_run(cfg, ctx.num_classes, device)

        def ask(images: Tensor) -> Tensor:
            with torch.no_grad():
                return finite_logits(teacher.serve(normalize_unit(images, synthesizer.fmt)))

        def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
            synthesizer.synthesize(student)
            bank = torch.cat(synthesizer.bank)
            steps = 0
            while steps < cfg.kd_steps:
                for idx in index_batches(
                    len(bank), cfg.batch_size, shuffle=True, generator=ctx.generator, device=device
                ):
                    # the draws random_crop_flip would make, named so that a view's answer can be kept
                    dy, dx, mirror = random_views(len(idx), cfg.crop_padding, generator=ctx.generator, flip=cfg.flip)
                    images = crop_views(bank[idx].float() / 255, cfg.crop_padding, dy, dx, mirror)
                    if answers is None:
                        logits = ask(images)
                    else:
                        views = view_index(dy, dx, mirror, cfg.crop_padding, cfg.flip)
                        logits = answers.lookup(idx, views, images, ask)
                    yield normalize_unit(images, synthesizer.fmt), logits
                    steps += 1
                    if steps == cfg.kd_steps:
                        return

        def objective(x: Tensor, teacher_logits: Tensor) -> dict[str, Tensor]:
            return {"kd": cfg.tau**2 * soft_kl(teacher_logits, student(x), cfg.tau)}

        ctx.trainer.fit(
            student,
            objective,
            batches,
            steps_per_epoch=cfg.kd_steps,
            description=f"{ctx.description}: synthesis + distillation",
            recipe=recipe,
        )


# -- the teacher's answers to the bank's views ----------------------------------------------------

VIEW_ANSWERS_MAX_BYTES = 1 << 30  # above this a run asks the teacher about every KD batch afresh


def view_count(padding: int, flip: bool) -> int:
    """An image's views: (2·padding + 1)² crops, each also mirrored with ``flip``."""
    return (2 * padding + 1) ** 2 * (2 if flip else 1)


def view_index(dy: Tensor, dx: Tensor, mirror: Tensor, padding: int, flip: bool) -> Tensor:
    """Each view's number in 0..view_count − 1: the crop's (dy·(2·padding + 1) + dx), then ×2 + mirror with flips."""
    crop = dy * (2 * padding + 1) + dx
    return 2 * crop + mirror.long() if flip else crop


class ViewAnswers:
    """The teacher's answer to each (bank image, view) pair, asked the first time a KD batch draws it.

    A bank image is never changed and has only ``view_count(padding, flip)`` views, so over a run
    the KD batches draw the same view of an image again and again: at the digits settings (one view,
    without crops or flips; 25 batches of 256 a round, 256 new images a round) an image is drawn
    about 25 times. The teacher, frozen and served as a fixed function of its input, answers the
    same bits each time, so asking once per pair changes nothing the student sees and skips most of
    the teacher's passes.
    """

    def __init__(self, images: int, views: int, num_classes: int, device: torch.device) -> None:
        self.logits = torch.zeros(images, views, num_classes, device=device)
        self.known = torch.zeros(images, views, dtype=torch.bool, device=device)

    @classmethod
    def for_run(cls, cfg: FastDFKDConfig, num_classes: int, device: torch.device) -> ViewAnswers | None:
        """A table for every view of the run's whole bank, or None where it would exceed
        ``VIEW_ANSWERS_MAX_BYTES`` (CIFAR-100 at the published budget: 162 views of 56,320 images, 3.7 GB)."""
        images = (cfg.warmup + cfg.epochs) * cfg.batch_size
        views = view_count(cfg.crop_padding, cfg.flip)
        if images * views * (4 * num_classes + 1) > VIEW_ANSWERS_MAX_BYTES:
            return None
        return cls(images, views, num_classes, device)

    def lookup(self, idx: Tensor, view: Tensor, images: Tensor, ask: Callable[[Tensor], Tensor]) -> Tensor:
        """The answers for views ``view`` of bank images ``idx`` (whose pixels are ``images``),
        asking ``ask`` about those not yet known, in one batch."""
        view = view.to(idx.device)
        missing = ~self.known[idx, view]
        if bool(missing.any()):
            new = ask(images[missing])
            # one batch may draw the same pair twice: both get the answer, which is the same either way
            self.logits[idx[missing], view[missing]] = new
            self.known[idx[missing], view[missing]] = True
        return self.logits[idx, view]
