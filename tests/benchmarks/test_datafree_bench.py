"""Cost of one step of each data-free attack on CIFAR-shaped inputs with a ResNet-18 teacher.

Run with ``pytest tests/benchmarks --benchmark-enable``. On CUDA the batches are the papers'
(DAFL: 1024 generated inputs, DeepInversion: 256 optimised inputs); on a CPU they are 8, so that the
default test run (benchmarks disabled: each body runs once) stays fast. The batch size and device
are in each result's ``extra_info``.
"""

import pytest
import torch

from kdbench.attacks.dafl import DAFLConfig, Generator, generator_step
from kdbench.attacks.deepinversion import DeepInversionConfig, batchnorm_statistics, inversion_step
from kdbench.models import create_model
from kdbench.serving.teacher import Teacher
from kdbench.training.losses import soft_kl

SHAPE = (3, 32, 32)
CLASSES = 10
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def batch(paper: int) -> int:
    return paper if DEVICE.type == "cuda" else 8


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    torch.manual_seed(0)
    return Teacher(create_model("resnet18", CLASSES, SHAPE).to(DEVICE))


def test_one_dafl_step(benchmark, teacher):
    """A generator step (through the teacher) and the ResNet-18 student's KD step on that batch."""
    cfg = DAFLConfig(batch_size=batch(1024), latent_dim=1000, generator_lr=0.02)
    generator = Generator(cfg.latent_dim, SHAPE).to(DEVICE).train()
    generator_optimizer = torch.optim.Adam(generator.parameters(), lr=cfg.generator_lr)
    student = create_model("resnet18", CLASSES, SHAPE).to(DEVICE).train()
    student_optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    z = torch.randn(cfg.batch_size, cfg.latent_dim, device=DEVICE)

    def step() -> None:
        x, logits, _ = generator_step(generator, generator_optimizer, teacher, z, cfg)
        loss = soft_kl(logits, student(x), tau=1.0)
        student_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        student_optimizer.step()
        sync()

    benchmark.extra_info.update(batch=cfg.batch_size, device=str(DEVICE))
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)


def test_one_deepinversion_step(benchmark, teacher):
    """One Adam step on a batch of inputs: jitter/flip, teacher pass with BatchNorm hooks, all priors."""
    cfg = DeepInversionConfig(batch_size=batch(256))
    x = torch.randn(cfg.batch_size, *SHAPE, device=DEVICE, requires_grad=True)
    optimizer = torch.optim.Adam([x], lr=cfg.lr)
    targets = torch.arange(cfg.batch_size, device=DEVICE) % CLASSES
    stream = torch.Generator().manual_seed(0)
    with batchnorm_statistics(teacher.model) as hooks:
        assert len(hooks) == 20  # ResNet-18: stem, 16 in the blocks, 3 projection shortcuts

        def step() -> None:
            inversion_step(x, optimizer, teacher, hooks, targets, cfg, stream)
            sync()

        benchmark.extra_info.update(batch=cfg.batch_size, device=str(DEVICE))
        benchmark.pedantic(step, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("how", ["rows", "torch_var"])
def test_batch_statistics(benchmark, how):
    """DeepInversion's per-layer statistics, forward and backward, on the digits teacher's three
    BatchNorm inputs at batch 256 (NHWC, as a channels-last teacher makes them): ``rows`` is the
    suite's :func:`batch_statistics`, ``torch_var`` the ``x.var(dim=(0, 2, 3))`` it replaced."""
    from kdbench.attacks.deepinversion import batch_statistics

    shapes = [(256, 32, 8, 8), (256, 64, 4, 4), (256, 128, 4, 4)]
    inputs = [
        torch.randn(*s, device=DEVICE).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        for s in shapes
    ]

    def statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if how == "rows":
            return batch_statistics(x)
        return x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)

    def step() -> None:
        for x in inputs:
            mean, var = statistics(x)
            (mean.sum() + var.sum()).backward()
        sync()

    benchmark.extra_info.update(device=str(DEVICE))
    benchmark.pedantic(step, rounds=20, warmup_rounds=2)
