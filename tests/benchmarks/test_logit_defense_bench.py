"""What serving through each logit perturbation costs per batch (CIFAR-shaped inputs, 100 classes).

Disabled by default (``--benchmark-disable`` in pyproject); run with ``--benchmark-enable``.
"""

import pytest
import torch

from kdbench.defenses.logit_noise import logit_noise
from kdbench.defenses.reverse_sigmoid import reverse_sigmoid
from kdbench.serving.teacher import keep_top_k

PERTURBATIONS = {
    "none": lambda z, x: z,
    "logit_noise": lambda z, x: logit_noise(z, x, scale=1.0, seed=0),
    "topk": lambda z, x: keep_top_k(z, 10),
    "reverse_sigmoid": lambda z, x: reverse_sigmoid(z, beta=1.0, gamma=0.1),
}


@pytest.mark.parametrize("name", PERTURBATIONS)
def test_perturbation_of_a_cifar_batch(benchmark, name):
    torch.manual_seed(0)
    x = torch.randn(256, 3, 32, 32)
    logits = torch.randn(256, 100)
    perturb = PERTURBATIONS[name]
    served = benchmark(lambda: perturb(logits, x))
    assert torch.equal(served.argmax(1), logits.argmax(1))
