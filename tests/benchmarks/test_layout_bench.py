"""The layout-keeping pooling and flattening layers (kdbench.models.layout) against PyTorch's, side by side.

``pytest tests/benchmarks/test_layout_bench.py --benchmark-enable``: each network runs in both
forms, channels-last on the CPU with one thread as the digits matrix runs it; compare the ``layout``
rows with the ``stock`` rows of the same test.
- the digits teacher's forward and input-gradient backward at batch 256 (a DeepInversion step's
  network cost; DAFL's generator step differentiates it the same way at batch 128);
- a cnn1 student's training step (forward, backward, fused Adam) at batch 256 (DeepInversion's KD
  on its pool) and 64 (every other attack's).
"""

import pytest
import torch
from torch import nn

from kdbench.models import create_model
from kdbench.models.layout import with_pytorch_layers

SHAPE = (1, 8, 8)


def network(name: str, layers: str) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, 10, SHAPE)
    return (with_pytorch_layers(model) if layers == "stock" else model).to(memory_format=torch.channels_last)


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("layers", ["stock", "layout"])
@pytest.mark.parametrize("batch", [256, 128])
def test_teacher_input_gradient(benchmark, layers, batch):
    teacher = network("digits_cnn", layers).eval().requires_grad_(False)
    x = torch.randn(batch, *SHAPE).contiguous(memory_format=torch.channels_last).requires_grad_(True)

    def step() -> None:
        x.grad = None
        teacher(x).logsumexp(dim=1).sum().backward()

    benchmark.extra_info.update(batch=batch)
    benchmark.pedantic(step, rounds=30, iterations=10, warmup_rounds=2)


@pytest.mark.parametrize("layers", ["stock", "layout"])
@pytest.mark.parametrize("batch", [256, 64])
def test_student_step(benchmark, layers, batch):
    student = network("cnn1", layers).train()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3, weight_decay=5e-4, fused=True)
    x = torch.randn(batch, *SHAPE).contiguous(memory_format=torch.channels_last)

    def step() -> None:
        loss = student(x).logsumexp(dim=1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    benchmark.extra_info.update(batch=batch)
    benchmark.pedantic(step, rounds=30, iterations=20, warmup_rounds=2)
