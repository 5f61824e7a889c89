"""MAD prediction poisoning (Orekondy et al., ICLR 2020) against a transcription of its reference
code's per-query loop (tribhuvanesh/prediction-poisoning, defenses/victim/bb_mad.py: the autograd
Jacobian of the last layer, the oracles, the closed-form line search), its options, and a run."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdbench.cli import main
from kdbench.defenses.mad import MADConfig, mad
from kdbench.errors import ConfigError


def reference_mad(proxy: nn.Module, x: torch.Tensor, epsilon: float, oracle: str) -> torch.Tensor:
    """bb_mad.py, one query at a time, the victim as its own proxy (model_adv_proxy=None), the
    default ydist l1, linesearch with the closed-form alpha and the surrogate objective."""
    out = []
    for i in range(len(x)):
        x_i = x[i : i + 1]
        y = F.softmax(proxy(x_i), dim=1)[0].detach()
        # compute_jacobian_nll: row k = d NLL_k / d parameters[-2] (the last linear layer's weights)
        z_a = proxy(x_i)
        nlls = -F.log_softmax(z_a, dim=1).mean(dim=0)
        params = list(proxy.parameters())
        G = torch.stack(
            [torch.autograd.grad(nlls[k], params[-2], retain_graph=True)[0].flatten() for k in range(len(y))]
        )
        K = len(y)
        if oracle == "extreme":  # oracle_extreme with calc_surrogate_objective
            best_val, best_k = -1.0, -1
            for k in range(K):
                yk = torch.zeros_like(y)
                yk[k] = 1.0
                val = ((G.t() @ yk - G.t() @ y).norm() ** 2).item()
                if val > best_val:
                    best_val, best_k = val, k
            ystar = torch.zeros_like(y)
            ystar[best_k] = 1.0
        else:  # oracle_argmax_preserving, K <= 10, calc_surrogate_objective_numpy
            max_k = int(y.argmax())
            G_np, y_np = G.detach().numpy(), y.numpy()
            vertices = np.asarray(list(itertools.product([0, 1], repeat=K)), dtype=np.float32)
            vertices = vertices[vertices[:, max_k] > 0]
            best_val, ystar_np = -1.0, None
            for v in vertices:
                v[max_k] += 1e-5
                v = v / v.sum()
                val = np.linalg.norm(G_np.T @ v - G_np.T @ y_np) ** 2
                if val > best_val:
                    best_val, ystar_np = val, v
            ystar = torch.tensor(ystar_np, dtype=y.dtype)
        alpha = (epsilon / ((y - ystar).norm(p=1) + 1e-7)).clamp(0.0, 1.0)  # closed_form_alpha_estimate
        out.append((1 - alpha) * y + alpha * ystar)
    return torch.stack(out)


@pytest.mark.parametrize("classes", [4, 7])
@pytest.mark.parametrize("oracle", ["extreme", "argmax"])
@pytest.mark.parametrize("epsilon", [0.1, 0.5, 1.5])
def test_mad_serves_the_references_poisoned_probabilities(classes, oracle, epsilon):
    torch.manual_seed(classes)
    proxy = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, classes))
    x = torch.randn(12, 6) * 2
    expected = reference_mad(proxy, x, epsilon, oracle)
    with torch.no_grad():
        served = torch.softmax(mad(proxy(x), epsilon=epsilon, oracle=oracle), dim=1)
    assert torch.allclose(served, expected.float(), atol=1e-5), (served - expected).abs().max()
    l1 = (served - torch.softmax(proxy(x), dim=1)).abs().sum(dim=1)
    assert (l1 <= epsilon + 1e-4).all()  # within the budget
    if oracle == "argmax":
        assert torch.equal(served.argmax(dim=1), proxy(x).argmax(dim=1))


def test_the_extreme_oracle_moves_mass_to_the_least_likely_class():
    served = torch.softmax(mad(torch.log(torch.tensor([[0.6, 0.3, 0.1]])), epsilon=0.36, oracle="extreme"), dim=1)
    # y* = e_2; ‖y − y*‖₁ = 1.8, α = 0.2: 0.8·[0.6, 0.3, 0.1] + 0.2·[0, 0, 1]
    assert torch.allclose(served, torch.tensor([[0.48, 0.24, 0.28]]), atol=1e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epsilon": -0.1}, r"^epsilon must be >= 0"),
        ({"oracle": "random"}, r"^oracle must be one of extreme, argmax, got 'random'"),
    ],
)
def test_bad_options_are_one_clear_error(options, message):
    with pytest.raises(ConfigError, match=message):
        MADConfig(**options)


def test_argmax_preserving_mad_is_refused_above_ten_classes(capsys, tmp_path):
    from kdbench.cli import main as bench

    run = ["run", "preset=tiny", "defense=mad", "defense.mad.oracle=argmax", "dataset.num_classes=12"]
    assert bench([*run, f"results_dir={tmp_path}"]) == 2
    assert "defense.mad.oracle argmax enumerates 2^(K−1) targets" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_run_serves_mad_within_its_budget(tmp_path):
    run = ["run", "preset=tiny", "defense=[normal,mad]", "quiet=true", f"results_dir={tmp_path}"]
    assert main(run) == 0
    records = pd.read_csv(tmp_path / "synthetic" / "records.csv").set_index("defense")
    assert (records.status == "ok").all()
    # total variation = ½ ℓ1 ≤ ε/2 = 25 %
    assert 0 < records.loc["mad", "owner_tv_pct"] <= 25.0 + 1e-6
