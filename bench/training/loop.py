"""The one training loop: scratch training, nasty training and every KD attack differ only in their
objective (a function from a batch to named loss terms, which the loop sums)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from kdbench.data.images import ImageData
from kdbench.faults import fault_point
from kdbench.progress import Progress
from kdbench.serving.answers import Answered, answered_batches
from kdbench.training.losses import cross_entropy
from kdbench.training.recipe import Acceleration, Recipe, make_optimizer, make_schedule
from kdbench.training.seeds import derive_seed

# A batch is (inputs, targets): the labels, or for distillation the labels with the teacher's
# answers (kdbench.serving.answers.Answered). The loop only hands the targets to the objective.
Batch = tuple[Tensor, Any]


Objective = Callable[[Tensor, Any], dict[str, Tensor]]


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite: the cell is recorded as diverged and the matrix goes on."""


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
        (:class:`kdbench.serving.answers.Answered`): asked once per input when inputs do not change,
        else about each epoch's view of the split, the same views for every cell at this seed."""
        recipe = recipe or self.recipe
        batches, steps = answered_batches(data, ask, recipe.batch_size, generator, seed=self.seed)
        return self.fit(model, objective, batches, steps_per_epoch=steps, description=description, recipe=recipe)

    def accuracy(self, predict: Callable[[Tensor], Tensor], data: ImageData) -> float:
        """Test-split top-1 accuracy (percent) of ``predict``."""
        return predict_accuracy(predict, data.batches(data.test, 1024))
