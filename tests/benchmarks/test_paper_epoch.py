"""Wall time of one epoch of each paper preset's teacher training, for the README's time estimates.

Synthetic data of the real dataset's shape and size (CIFAR: 50,000 images of 3×32×32; Tiny-ImageNet:
100,000 of 3×64×64) on the GPU, the preset's recipe, one epoch of cross-entropy training: a full
table trains about (2 teachers + 1 baseline + one KD run per student and defense) × its epochs of
such passes. Needs CUDA (an epoch on two CPU cores takes hours); run with
``pytest tests/benchmarks --benchmark-enable``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from kdbench.config.compose import compose_config
from kdbench.config.plan import plan_from_config
from kdbench.data.catalogue import load_dataset
from kdbench.models import create_model
from kdbench.progress import Progress
from kdbench.training.loop import Trainer
from kdbench.training.losses import cross_entropy

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="times a GPU epoch; no CUDA here")

REAL_DATA = {
    "paper_cifar10": ("[3,32,32]", 10, 50_000),
    "paper_cifar100": ("[3,32,32]", 100, 50_000),
    "paper_tinyimagenet": ("[3,64,64]", 200, 100_000),
}
TEACHERS = [("paper_cifar10", "resnet18")] + [
    (preset, teacher)
    for preset in ("paper_cifar100", "paper_tinyimagenet")
    for teacher in ("resnet18", "resnet50", "resnext29_8x64d")
]


@pytest.mark.parametrize("preset,teacher", TEACHERS)
def test_one_teacher_epoch(benchmark, preset, teacher):
    shape, num_classes, train_size = REAL_DATA[preset]
    overrides = [f"dataset.shape={shape}", f"dataset.num_classes={num_classes}", f"dataset.train_size={train_size}"]
    plan = plan_from_config(compose_config([f"preset={preset}", "dataset=synthetic", *overrides, "device=cuda"]))
    plan.dataset.augment = True  # as the real dataset trains
    data = load_dataset(plan.dataset, plan.device)
    recipe = replace(plan.recipe_for(teacher), epochs=1)
    trainer = Trainer(plan.device, 0, recipe, Progress(quiet=True), plan.acceleration)  # the suite's CUDA settings
    model = create_model(teacher, num_classes, data.input_shape).to(plan.device)
    generator = trainer.seeded("benchmark")

    def objective(x, y):
        return cross_entropy(model(x), y)

    def epoch() -> None:
        trainer.fit_supervised(model, objective, data, generator=generator, description=teacher)
        torch.cuda.synchronize()

    epoch()  # warm-up: cuDNN autotuning, allocator
    benchmark.pedantic(epoch, rounds=1, iterations=1)
