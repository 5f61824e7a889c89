"""``adaptive_misinformation``: Adaptive Misinformation (Kariyappa & Qureshi, CVPR 2020), as its
reference code (sanjaykariyappa/adaptive_misinformation) builds and serves it.

Three pieces, each a transcription of that code:

- **The defender** is trained with Outlier Exposure (``admis/utils/model.py``, ``train_step``):
  in-distribution and outlier batches go through the network together, and the loss is
  ``CE(f(x), y) + λ · CXE_unif(f(x_oe))``, where ``CXE_unif(z) = −mean(z) + logsumexp(z)`` is the
  cross-entropy of the outliers' outputs to the uniform distribution (:func:`uniform_cross_entropy`).
  The network thus learns low maximum probabilities off its data: the out-of-distribution detector.
- **The misinformation network** (``model_poison``), of the same architecture, learns to put little
  probability on the right class: the reference applies its cross-entropy criterion to
  ``log(1 − softmax(g(x)) + 1e-7)`` (:func:`misinformation_loss`), with the true labels on the
  in-distribution inputs and the defender's top class on the outliers.
- **Serving** (``admis/utils/defense.py``, ``selectiveMisinformation``): with ``y`` the defender's
  softmax and ``ŷ`` the misinformation network's, ``h = σ(ν · (τ − max y))`` (the max detached), and
  the answer is ``(1 − h) · y + h · ŷ`` (:func:`adaptive_misinformation`). Queries the defender is
  sure of pass unchanged; the others get misinformation, smoothly.

Defaults are the reference's README command for MNIST: ``--oe_lamb 1``, ``--defense_levels 0.99``
(τ), ν = 10000 in ``defense.py``. The reference's outliers are another dataset (KMNIST for MNIST);
``outliers`` names a dataset of the suite here (converted to the teacher's input format), or
``noise``, uniformly random pixels, the default, since a dataset of outliers is not at hand
everywhere (sklearn's digits come with none).

Two departures, for the suite's cache: the reference trains the two networks side by side, the
misinformation network's outlier targets coming from the defender as it trains; here the defender
is trained (and cached) first, and the misinformation network learns from the finished defender's
top classes, in evaluation mode. With ``teacher_weights=`` (the owner's network) the defender is
that network, without Outlier Exposure: only the misinformation network is trained.

AM changes the top class of the queries it flags: the owner's accuracy on clean test inputs is the
served function's, in the teacher-accuracy column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kdbench.api import (
    Classifier,
    ConfigError,
    DatasetConfig,
    DatasetNotFoundError,
    Defense,
    DefenseContext,
    ImageData,
    OptionError,
    Teacher,
    convert_images,
    load_dataset,
    register_defense,
)
from kdbench.defenses.normal import normal_network

MISINFORMATION_EPS = 1e-7  # the reference's: log(1 − p + 1e-7)


@dataclass
class AdaptiveMisinformationConfig:
    tau: float = 0.99  # OOD threshold on the defender's top probability (the reference's defense level)
    nu: float = 10000.0  # steepness of the switch σ(ν · (τ − max y))
    oe_lambda: float = 1.0  # weight of the Outlier Exposure term while the defender trains
    outliers: str = "noise"  # noise, or a dataset of the suite (converted to the teacher's input format)
    outliers_root: str | None = None  # where that dataset's files are (its data_root)

    def __post_init__(self) -> None:
        if not 0 < self.tau <= 1:
            raise OptionError("tau", f"must be a probability in (0, 1], got {self.tau}")
        if not self.nu > 0:
            raise OptionError("nu", f"must be > 0, got {self.nu}")
        if not self.oe_lambda >= 0:
            raise OptionError("oe_lambda", f"must be >= 0, got {self.oe_lambda}")
        if not isinstance(self.outliers, str) or not self.outliers:
            raise OptionError("outliers", f"must be noise or a dataset name, got {self.outliers!r}")

    def training_options(self) -> dict[str, object]:
        """What the two networks' training depends on (τ and ν only change how they are served)."""
        return {"oe_lambda": self.oe_lambda, "outliers": self.outliers, "outliers_root": self.outliers_root}


def uniform_cross_entropy(logits: Tensor) -> Tensor:
    """The reference's ``CXE_unif``: the cross-entropy from the softmax of ``logits`` to the uniform
    distribution, ``−(mean_k z_k − logsumexp_k z_k)``, averaged over the batch."""
    return -(logits.mean(dim=1) - torch.logsumexp(logits, dim=1)).mean()


def misinformation_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """The reference's poison loss: its cross-entropy criterion on ``log(1 − softmax(z) + 1e-7)``,
    lowest where the target class gets the least probability."""
    return F.cross_entropy(torch.log(1 - F.softmax(logits, dim=1) + MISINFORMATION_EPS), targets)


def adaptive_misinformation(clean: Tensor, misinformation: Tensor, *, tau: float, nu: float) -> Tensor:
    """The served logits: log of ``(1 − h) · y + h · ŷ`` with ``h = σ(ν · (τ − max y))``, ``y`` and
    ``ŷ`` the softmax of the defender's and of the misinformation network's logits."""
    y = F.softmax(clean.float(), dim=1)
    y_mis = F.softmax(misinformation.float(), dim=1)
    h = torch.sigmoid(nu * (tau - y.max(dim=1, keepdim=True).values.detach()))
    mixed = (1.0 - h) * y + h * y_mis
    positive = mixed > 0
    return torch.where(positive, torch.log(torch.where(positive, mixed, 1.0)), float("-inf"))


def outlier_source(cfg: AdaptiveMisinformationConfig, data: ImageData) -> Callable[[int, torch.Generator], Tensor]:
    """A function giving ``n`` outlier images (uint8, the teacher's input format) for a batch."""
    fmt = data.input_format
    if cfg.outliers == "noise":

        def noise(n: int, generator: torch.Generator) -> Tensor:
            pixels = torch.rand((n, *fmt.shape), generator=generator) * (fmt.pixel_max + 1)
            return pixels.floor().clamp(max=fmt.pixel_max).to(torch.uint8).to(data.device)

        return noise
    try:
        other = load_dataset(DatasetConfig(name=cfg.outliers, data_root=cfg.outliers_root), data.device)
    except DatasetNotFoundError as err:
        raise ConfigError(
            f"defense.adaptive_misinformation.outliers={cfg.outliers!r} cannot be loaded: {err}"
        ) from None
    pool = convert_images(other.train.x, other.pixel_max, fmt)

    def drawn(n: int, generator: torch.Generator) -> Tensor:
        return pool[torch.randint(len(pool), (n,), generator=generator).to(pool.device)]

    return drawn


def with_outliers(
    data: ImageData, outliers: Callable[[int, torch.Generator], Tensor], batch_size: int, generator: torch.Generator
) -> Callable[[int], Iterator[tuple[Tensor, Tensor]]]:
    """Each epoch's training batches, each followed by as many outliers: ``(cat(x, x_oe), y)``, the
    in-distribution part first, as the reference concatenates them before one forward pass."""

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in data.batches(data.train, batch_size, shuffle=True, augment=data.augment, generator=generator):
            yield torch.cat([x, data.normalize(outliers(len(y), generator))]), y

    return batches


@register_defense("adaptive_misinformation", config=AdaptiveMisinformationConfig)
class AdaptiveMisinformationDefense(Defense):
    def build(self, ctx: DefenseContext) -> Teacher:
        cfg = self.cfg
        outliers = outlier_source(cfg, ctx.data)
        recipe = ctx.trainer.recipe
        steps = -(-len(ctx.data.train) // recipe.batch_size)
        options = cfg.training_options()

        def train_defender(model: Classifier, generator) -> None:
            def objective(x: Tensor, y: Tensor) -> dict[str, Tensor]:
                out = model(x)
                n = len(y)
                return {
                    "ce": F.cross_entropy(out[:n], y),
                    "outlier_exposure": cfg.oe_lambda * uniform_cross_entropy(out[n:]),
                }

            ctx.trainer.fit(
                model,
                objective,
                with_outliers(ctx.data, outliers, recipe.batch_size, generator),
                steps_per_epoch=steps,
                description=f"teacher adaptive_misinformation {ctx.teacher_arch} (outlier exposure)",
            )

        if ctx.teacher_file is not None:
            defender = normal_network(ctx)
        else:
            defender = ctx.trained("adaptive_misinformation_defender", options, train_defender)

        def train_misinformation(model: Classifier, generator) -> None:
            def objective(x: Tensor, y: Tensor) -> dict[str, Tensor]:
                n = len(y)
                with torch.no_grad():
                    outlier_targets = defender(x[n:]).argmax(dim=1)
                return {"misinformation": misinformation_loss(model(x), torch.cat([y, outlier_targets]))}

            ctx.trainer.fit(
                model,
                objective,
                with_outliers(ctx.data, outliers, recipe.batch_size, generator),
                steps_per_epoch=steps,
                description=f"misinformation network {ctx.teacher_arch}",
            )

        misinformation = ctx.trained("adaptive_misinformation_misinformation", options, train_misinformation)
        tau, nu = cfg.tau, cfg.nu
        return Teacher(
            defender, perturb=lambda clean, x: adaptive_misinformation(clean, misinformation(x), tau=tau, nu=nu)
        )
