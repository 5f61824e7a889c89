"""Throughput of a KD epoch: kdbench's loop against the reference loop, side by side.

Run with ``python -m pytest tests/benchmarks --benchmark-enable``; each group holds the two loops on
the same models and data, and pytest-benchmark's table gives their times (images/second in
``extra_info``). Disabled in the normal test run (``--benchmark-disable`` in pyproject.toml):
then each benchmark body runs once, as a smoke test.
"""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.data.catalogue import load_dataset
from kdbench.data.images import DatasetConfig
from kdbench.models import create_model
from kdbench.progress import Progress
from kdbench.serving.teacher import Access, Teacher
from kdbench.training.loop import Trainer
from kdbench.training.losses import kd_loss
from kdbench.training.recipe import Recipe, resolve_acceleration

from .reference_loop import reference_kd_epoch, reference_loader

CASES = {
    # name: (dataset, teacher, student, batch size); the CIFAR-shaped epoch is 512 images
    "digits-mlp": (DatasetConfig(name="digits"), "digits_cnn", "mlp", 64),
    "digits-cnn1": (DatasetConfig(name="digits"), "digits_cnn", "cnn1", 64),
    "cifar-resnet18": (
        DatasetConfig(name="synthetic", shape=[3, 32, 32], train_size=512, test_size=64, augment=True),
        "resnet18",
        "resnet18",
        128,
    ),
}


def setup(case: str):
    options, teacher_arch, student_arch, batch = CASES[case]
    data = load_dataset(options)
    torch.manual_seed(0)
    teacher = create_model(teacher_arch, data.num_classes, data.input_shape).eval()
    student = create_model(student_arch, data.num_classes, data.input_shape)
    return data, teacher, student, batch


def one_epoch_trainer(batch: int, epochs: int = 1) -> Trainer:
    recipe = Recipe(epochs=epochs, batch_size=batch, optimizer="sgd", lr=0.01, schedule="constant")
    return Trainer(
        torch.device("cpu"),
        0,
        recipe,
        Progress(quiet=True),
        resolve_acceleration(torch.device("cpu"), "auto", "auto", False),
    )


def time_epoch(benchmark, case: str, images: int, epoch, group: str = "kd-epoch") -> None:
    """Time ``epoch()`` in the case's group (so the loops compare side by side), in images/second."""
    benchmark.group = f"{group}-{case}"
    benchmark.pedantic(epoch, rounds=3, warmup_rounds=1)
    if benchmark.stats:
        benchmark.extra_info["images_per_s"] = images / benchmark.stats.stats.mean


@pytest.mark.parametrize("case", list(CASES))
def test_kdbench_kd_epoch(benchmark, case):
    data, teacher, student, batch = setup(case)
    api = Teacher(teacher).api(Access.LOGITS)
    trainer, generator = one_epoch_trainer(batch), torch.Generator().manual_seed(0)

    def objective(x, y):
        return kd_loss(student(x), api(x), y, alpha=0.9, tau=4.0)

    time_epoch(
        benchmark,
        case,
        len(data.train),
        lambda: trainer.fit_supervised(student, objective, data, generator=generator, description=case),
    )


@pytest.mark.parametrize("case", list(CASES))
def test_reference_kd_epoch(benchmark, case):
    data, teacher, student, batch = setup(case)
    loader = reference_loader(data, batch, num_workers=2)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    time_epoch(benchmark, case, len(data.train), lambda: reference_kd_epoch(student, teacher, loader, optimizer))
    assert math.isfinite(sum(p.sum().item() for p in student.parameters()))


@pytest.mark.parametrize("case", ["digits-mlp", "digits-cnn1"])
def test_kdbench_kd_epoch_with_stored_answers(benchmark, case):
    """The path kdbench's KD attacks take where inputs do not change: the teacher is asked once per
    input (inside the timed epoch here, so a one-epoch run pays for all of its asking)."""
    data, teacher, student, batch = setup(case)
    api = Teacher(teacher).api(Access.LOGITS)
    trainer, generator = one_epoch_trainer(batch), torch.Generator().manual_seed(0)

    def objective(x, answered):
        return kd_loss(student(x), answered.teacher, answered.labels, alpha=0.9, tau=4.0)

    time_epoch(
        benchmark,
        case,
        len(data.train),
        lambda: trainer.fit_distillation(student, objective, data, api, generator=generator, description=case),
    )


TRAINING_EPOCHS = 10


@pytest.mark.parametrize("case", ["digits-mlp", "digits-cnn1"])
def test_kdbench_kd_training_with_stored_answers(benchmark, case):
    """A KD attack as a cell runs it, over several epochs: the teacher's answers are asked once and
    reused, so the teacher's forward is paid once per input instead of once per input per epoch."""
    data, teacher, student, batch = setup(case)
    api = Teacher(teacher).api(Access.LOGITS)
    trainer, generator = one_epoch_trainer(batch, TRAINING_EPOCHS), torch.Generator().manual_seed(0)

    def objective(x, answered):
        return kd_loss(student(x), answered.teacher, answered.labels, alpha=0.9, tau=4.0)

    time_epoch(
        benchmark,
        case,
        TRAINING_EPOCHS * len(data.train),
        lambda: trainer.fit_distillation(student, objective, data, api, generator=generator, description=case),
        group=f"kd-{TRAINING_EPOCHS}-epochs",
    )


@pytest.mark.parametrize("case", ["digits-mlp", "digits-cnn1"])
def test_reference_kd_training(benchmark, case):
    data, teacher, student, batch = setup(case)
    loader = reference_loader(data, batch, num_workers=2)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def training():
        for _ in range(TRAINING_EPOCHS):
            reference_kd_epoch(student, teacher, loader, optimizer)

    time_epoch(benchmark, case, TRAINING_EPOCHS * len(data.train), training, group=f"kd-{TRAINING_EPOCHS}-epochs")
