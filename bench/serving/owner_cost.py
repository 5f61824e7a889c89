"""What a defense costs its owner beyond top-1 accuracy, measured on the test split.

Legitimate users receive the served probabilities too. A perturbation that keeps every top-1 class
still changes them: it can make them badly calibrated and move them away from what the network
believes. Three numbers per teacher:

- ``ece_pct``: expected calibration error (Guo et al., 2017) of the served probabilities, percent;
- ``kl_nats``: mean KL(clean ‖ served) per input, where "clean" is the network's own softmax
  (infinite where the served distribution gives probability 0 to a class the network does not,
  as a top-k teacher does: a user scoring outcomes with it can pay an unbounded log-loss);
- ``tv_pct``: mean total variation ½‖clean − served‖₁, percent (bounded, so always comparable).

And what serving costs the owner's machine: :func:`serving_ms_per_1k`, the wall time of answering
1,000 queries (the network and the defense's perturbation, MAD's surrogate and its Jacobian
included). It is a timing, so a property of the machine and its threads as much as of the defense:
compare it between rows of one run, never across machines.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor

from kdbench.data.images import ImageData
from kdbench.serving.teacher import ASK_CHUNK, Teacher

ECE_BINS = 15
SERVING_MIN_S = 0.05  # time at least this long: a small test split is served several times, above the clock's noise


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> float:
    """Σ_b |B_b|/n · |accuracy(B_b) − mean confidence(B_b)| over equal-width confidence bins (0, 1].

    Confidence is each row's largest probability; the prediction its argmax. Returned as a
    fraction in [0, 1].
    """
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).double()
    # bin b holds confidences in (b/bins, (b+1)/bins]
    which = (torch.ceil(confidence.double() * bins).long() - 1).clamp(0, bins - 1)
    count = torch.zeros(bins, dtype=torch.float64, device=probs.device).index_add_(0, which, torch.ones_like(correct))
    hits = torch.zeros_like(count).index_add_(0, which, correct)
    confidence_sum = torch.zeros_like(count).index_add_(0, which, confidence.double())
    return float((hits - confidence_sum).abs().sum() / max(len(labels), 1))


def kl_divergence_rows(clean_logits: Tensor, served_logits: Tensor) -> Tensor:
    """KL(softmax(clean) ‖ softmax(served)) per row, in nats (+inf where served has a zero the clean lacks)."""
    log_p = F.log_softmax(clean_logits.double(), dim=1)
    log_q = F.log_softmax(served_logits.double(), dim=1)
    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(dim=1)


def total_variation_rows(clean_logits: Tensor, served_logits: Tensor) -> Tensor:
    p = F.softmax(clean_logits.double(), dim=1)
    q = F.softmax(served_logits.double(), dim=1)
    return 0.5 * (p - q).abs().sum(dim=1)


@torch.inference_mode()
def owner_cost(teacher: Teacher, data: ImageData) -> dict[str, float]:
    """ECE of the served probabilities, and their KL and total variation from the clean ones."""
    clean, served, labels = [], [], []
    for x, y in data.batches(data.test, 1024):
        clean.append(teacher.model(x).float())
        served.append(teacher.serve(x).float())
        labels.append(y)
    clean_logits, served_logits, truth = torch.cat(clean), torch.cat(served), torch.cat(labels)
    return {
        "ece_pct": 100.0 * expected_calibration_error(F.softmax(served_logits, dim=1), truth),
        "kl_nats": float(kl_divergence_rows(clean_logits, served_logits).mean()),
        "tv_pct": 100.0 * float(total_variation_rows(clean_logits, served_logits).mean()),
    }


@torch.inference_mode()
def serving_ms_per_1k(teacher: Teacher, data: ImageData) -> float:
    """Milliseconds the teacher takes to answer 1,000 queries: the test split served as the API serves
    a pool, ``ASK_CHUNK`` at a time, repeated until ``SERVING_MIN_S`` have passed (after one untimed
    warm-up chunk)."""
    batches = [x for x, _ in data.batches(data.test, ASK_CHUNK)]
    teacher.serve(batches[0])  # allocations and lazy initialisation are not serving
    answered, start = 0, time.perf_counter()
    while True:
        for x in batches:
            teacher.serve(x)
            answered += len(x)
        elapsed = time.perf_counter() - start
        if elapsed >= SERVING_MIN_S:
            return 1e6 * elapsed / answered  # seconds per query → milliseconds per 1,000
