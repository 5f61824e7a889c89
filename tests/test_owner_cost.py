"""The owner's cost of a defense: calibration error, KL and total variation, on hand-computed inputs."""

import math
import time

import pytest
import torch

from kdbench.data.catalogue import load_dataset
from kdbench.data.images import DatasetConfig
from kdbench.serving.owner_cost import (
    expected_calibration_error,
    kl_divergence_rows,
    owner_cost,
    serving_ms_per_1k,
    total_variation_rows,
)
from kdbench.serving.teacher import Teacher

LN3 = math.log(3.0)


def test_ece_weighs_each_bins_gap_between_accuracy_and_confidence():
    # three predictions, each alone in its bin of 15: confidences 0.9 (right), 0.75 (wrong), 0.65 (right)
    probs = torch.tensor([[0.9, 0.1], [0.25, 0.75], [0.65, 0.35]])
    labels = torch.tensor([0, 0, 0])
    # (|1 − 0.9| + |0 − 0.75| + |1 − 0.65|) / 3 = 1.2 / 3
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4, abs=1e-6)


def test_ece_averages_within_a_bin_before_taking_the_gap():
    # 0.9 (right) and 0.91 (wrong) share the bin (13/15, 14/15]: |0.5 − 0.905| = 0.405
    probs = torch.tensor([[0.9, 0.1], [0.09, 0.91]])
    assert expected_calibration_error(probs, torch.tensor([0, 0])) == pytest.approx(0.405, abs=1e-6)


def test_kl_and_total_variation_compare_the_clean_and_the_served_softmax():
    clean = torch.tensor([[LN3, 0.0]])  # p = [3/4, 1/4]
    served = torch.tensor([[0.0, 0.0]])  # q = [1/2, 1/2]
    # KL(p ‖ q) = ¾·ln(3/2) + ¼·ln(1/2) = 0.130812; TV = ½(¼ + ¼) = 0.25
    assert kl_divergence_rows(clean, served).item() == pytest.approx(0.130812, abs=1e-6)
    assert total_variation_rows(clean, served).item() == pytest.approx(0.25, abs=1e-6)
    # a served zero where the clean softmax is not: the KL is infinite, the TV is not
    zeroed = torch.tensor([[0.0, -math.inf]])
    assert kl_divergence_rows(clean, zeroed).item() == math.inf
    assert total_variation_rows(clean, zeroed).item() == pytest.approx(0.25, abs=1e-6)


def test_an_unperturbed_teacher_costs_nothing_but_its_own_calibration():
    data = load_dataset(DatasetConfig(name="synthetic", num_classes=4, shape=[1, 8, 8], train_size=8, test_size=50))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)).eval()
    clean = owner_cost(Teacher(model), data)
    assert clean["kl_nats"] == 0.0 and clean["tv_pct"] == 0.0 and 0 < clean["ece_pct"] <= 100
    # serving a uniform distribution: KL(p ‖ uniform) = ln 4 − H(p) > 0, and ECE |accuracy − 1/4|
    uniform = owner_cost(Teacher(model, serve=lambda x: torch.zeros(len(x), 4), perturbed=True), data)
    assert uniform["kl_nats"] > 0 and uniform["tv_pct"] > 0
    _, y = next(data.batches(data.test, 1024))  # a uniform row predicts class 0 with confidence 1/4
    assert uniform["ece_pct"] == pytest.approx(100 * abs((y == 0).float().mean().item() - 0.25), abs=1e-6)


def test_serving_time_counts_the_defenses_perturbation():
    data = load_dataset(DatasetConfig(name="synthetic", shape=[1, 8, 8], test_size=100))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

    def slow_perturbation(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.01)  # one pass over the 100 test inputs: at least 10 ms, so at least 100 ms per 1,000
        return logits

    assert serving_ms_per_1k(Teacher(model, perturb=slow_perturbation), data) >= 100.0
    assert serving_ms_per_1k(Teacher(model), data) > 0
