"""Adaptive Misinformation (Kariyappa & Qureshi, CVPR 2020): its three formulas against
transcriptions of the reference code (sanjaykariyappa/adaptive_misinformation) on fixed tensors,
its options, and a run that trains, caches and serves it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kdbench.cli import main
from kdbench.defenses.adaptive_misinformation import (
    AdaptiveMisinformationConfig,
    adaptive_misinformation,
    misinformation_loss,
    uniform_cross_entropy,
)
from kdbench.errors import ConfigError

LOGITS = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [4.0, -1.0, 0.5]]
OTHER = [[3.0, 0.0, -2.0], [1.0, -1.0, 2.0], [0.0, 5.0, 0.0]]


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1)
    return m + np.log(np.exp(z - m[:, None]).sum(axis=1))


def test_outlier_exposure_is_the_references_cross_entropy_to_uniform():
    z = np.array(LOGITS)
    # admis/utils/model.py CXE_unif: -(logits.mean(1) - torch.logsumexp(logits, dim=1)).mean()
    expected = -(z.mean(axis=1) - logsumexp(z)).mean()
    assert uniform_cross_entropy(torch.tensor(LOGITS)).item() == pytest.approx(expected, rel=1e-6)
    # which is the cross-entropy of the softmax to the uniform distribution
    assert expected == pytest.approx(-(np.log(softmax(z)).mean(axis=1)).mean(), rel=1e-6)


def test_the_misinformation_loss_is_the_references_criterion_on_log_one_minus_p():
    z, y = np.array(LOGITS), np.array([2, 0, 1])
    # criterion = CrossEntropyLoss, applied to log(1 - softmax(outputs_poison) + 1e-7)
    q = np.log(1 - softmax(z) + 1e-7)
    expected = -(q[np.arange(3), y] - logsumexp(q)).mean()
    assert misinformation_loss(torch.tensor(LOGITS), torch.tensor(y)).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("tau", [0.99, 0.7, 0.5])
def test_serving_is_the_references_smooth_switch(tau):
    z, m = np.array(LOGITS), np.array(OTHER)
    y, y_mis = softmax(z), softmax(m)
    # admis/utils/defense.py: h = 1 / (1 + exp(-10000 * (delta - probs_max))); (1 - h) * y + h * y_mis
    with np.errstate(over="ignore"):  # exp(+large) = inf: h = 0, as in the reference's torch
        h = 1 / (1 + np.exp(-10000 * (tau - y.max(axis=1))))
    expected = (1 - h[:, None]) * y + h[:, None] * y_mis
    served = adaptive_misinformation(torch.tensor(LOGITS), torch.tensor(OTHER), tau=tau, nu=10000.0)
    assert np.allclose(torch.softmax(served, dim=1).double().numpy(), expected, atol=1e-6)


def test_a_sure_answer_passes_and_an_unsure_one_is_misinformation():
    clean = torch.tensor([[12.0, 0.0, 0.0], [0.2, 0.0, 0.1]])  # top probabilities 0.99999 and 0.37
    other = torch.tensor([[0.0, 9.0, 0.0], [0.0, 0.0, 9.0]])
    served = torch.softmax(adaptive_misinformation(clean, other, tau=0.99, nu=10000.0), dim=1)
    assert torch.allclose(served[0], torch.softmax(clean[0], dim=0), atol=1e-6)
    assert torch.allclose(served[1], torch.softmax(other[1], dim=0), atol=1e-6)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tau": 0.0}, r"^tau must be a probability in \(0, 1\], got 0.0"),
        ({"tau": 1.5}, r"^tau must be a probability in \(0, 1\], got 1.5"),
        ({"nu": 0.0}, r"^nu must be > 0, got 0.0"),
        ({"oe_lambda": -1.0}, r"^oe_lambda must be >= 0, got -1.0"),
        ({"outliers": ""}, r"^outliers must be noise or a dataset name"),
    ],
)
def test_bad_options_are_one_clear_error(options, message):
    with pytest.raises(ConfigError, match=message):
        AdaptiveMisinformationConfig(**options)


def test_a_run_trains_both_networks_once_and_serves_the_switch(tmp_path, capsys):
    run = ["run", "preset=tiny", "defense=[normal,adaptive_misinformation]", f"results_dir={tmp_path}"]
    assert main(run) == 0
    printed = capsys.readouterr().out
    assert "adaptive_misinformation_defender (seed 0): trained for adaptive_misinformation" in printed
    assert "adaptive_misinformation_misinformation (seed 0): trained for adaptive_misinformation" in printed
    records = pd.read_csv(tmp_path / "synthetic" / "records.csv").set_index("defense")
    assert (records.status == "ok").all()
    am = records.loc["adaptive_misinformation"]
    assert 0 < am.teacher_acc <= 100 and am.owner_tv_pct >= 0
    assert len(list((tmp_path / "synthetic" / ".cache").glob("*.pt"))) >= 4  # normal, baseline, the two AM networks
    assert main([*run, "rerun=false"]) == 0
    assert "0 cell(s) computed, 2 reused" in capsys.readouterr().out


def test_outliers_from_another_dataset_of_the_suite(tmp_path):
    """The reference's outliers are another dataset: synthetic images, converted to digits' format."""
    run = [
        "run",
        "preset=tiny",
        "defense=adaptive_misinformation",
        "defense.adaptive_misinformation.outliers=digits",
        "quiet=true",
        f"results_dir={tmp_path}",
    ]
    assert main(run) == 0
    assert (pd.read_csv(tmp_path / "synthetic" / "records.csv").status == "ok").all()


SHARED_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_ARCHIVE.is_file(), reason=f"no {SHARED_ARCHIVE} (../shared/data: CI has it)")
def test_cifar10_images_made_grey_and_small_query_the_digits_teacher(tmp_path, monkeypatch):
    """What AM is built against: natural queries of another distribution (CIFAR-10 → 1×8×8 digits format)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "decoded"))  # ../shared is read-only
    run = [
        "run",
        "defense=[normal,adaptive_misinformation]",
        "attack=blackbox",
        "attack.blackbox.source=surrogate",
        "attack.blackbox.surrogate=cifar10",
        f"attack.blackbox.surrogate_root={SHARED_ARCHIVE.parent}",
        "attack.blackbox.budget=2048",
        "attack_variants=null",  # the blackbox column alone (digits adds blackbox_ood and kd_t20)
        "student=mlp",
        "train.epochs=5",
        "quiet=true",
        f"results_dir={tmp_path / 'results'}",
    ]
    assert main(run) == 0
    records = pd.read_csv(tmp_path / "results" / "digits" / "records.csv").set_index("defense")
    assert (records.status == "ok").all() and (records.queries == 2048).all()
    assert not (SHARED_ARCHIVE.parent / ".kdbench-decoded").exists()
