"""The logit-perturbation defenses: top-1 kept for any logits (hypothesis), valid outputs at every
access level, the papers' formulas on hand-computed inputs, determinism, and white-box gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdbench.defenses.logit_noise import LogitNoiseConfig, keyed_uniform, logit_noise
from kdbench.defenses.perturbation import restore_argmax
from kdbench.defenses.reverse_sigmoid import ReverseSigmoidConfig, clipped_log_odds, reverse_sigmoid
from kdbench.defenses.rounding import RoundingConfig, rounded
from kdbench.defenses.topk import TopKConfig
from kdbench.errors import ConfigError
from kdbench.serving.teacher import Access, Teacher, keep_top_k

# Logit rows with ties (values drawn from a few choices), tiny and huge magnitudes and every class
# count from 2 to 12. Magnitudes stop at 2¹⁰⁰ ≈ 1.3e30: noise scaled by a row's spread must stay finite in
# float32, whose largest value is 3.4e38 (no network produces logits anywhere near either).
finite = st.floats(min_value=-(2.0**100), max_value=2.0**100, width=32)
few_values = st.sampled_from([0.0, 1.0, -1.0, 1e-30, 5.0, 1e30, -1e30])
logit_value = st.one_of(finite, few_values, st.floats(-20, 20, width=32))


@st.composite
def logit_batches(draw) -> torch.Tensor:
    classes = draw(st.integers(2, 12))
    rows = draw(st.integers(1, 6))
    values = draw(st.lists(logit_value, min_size=rows * classes, max_size=rows * classes))
    return torch.tensor(values, dtype=torch.float32).view(rows, classes)


PERTURBATIONS = {
    "logit_noise": lambda z: logit_noise(z, z, scale=3.0, seed=7),
    "logit_noise_huge": lambda z: logit_noise(z, z, scale=1e6, seed=3),
    "topk_1": lambda z: keep_top_k(z, 1),
    "topk_2": lambda z: keep_top_k(z, 2),
    "reverse_sigmoid": lambda z: reverse_sigmoid(z, beta=1.0, gamma=0.1),
    "reverse_sigmoid_strong": lambda z: reverse_sigmoid(z, beta=3.0, gamma=1.0),
    "rounding": lambda z: rounded(z, decimals=3),
    "rounding_1": lambda z: rounded(z, decimals=1),
}


@pytest.mark.parametrize("name", PERTURBATIONS)
@settings(max_examples=150, deadline=None)
@given(logits=logit_batches())
def test_every_perturbation_keeps_the_argmax_of_every_row(name, logits):
    served = PERTURBATIONS[name](logits)
    assert served.shape == logits.shape
    assert not torch.isnan(served).any()
    assert torch.equal(served.argmax(dim=1), logits.argmax(dim=1))


@pytest.mark.parametrize("name", PERTURBATIONS)
@settings(max_examples=60, deadline=None)
@given(logits=logit_batches(), k=st.integers(1, 4))
def test_served_outputs_are_valid_for_every_access_level(name, logits, k):
    perturb = PERTURBATIONS[name]
    # the "network" is the identity: its inputs are the logits themselves
    teacher = Teacher(torch.nn.Identity(), serve=perturb, perturbed=True)
    rows, classes = logits.shape
    probs = teacher.api(Access.PROBABILITIES)(logits)
    assert not torch.isnan(probs).any() and (probs >= 0).all() and (probs <= 1).all()
    assert torch.allclose(probs.sum(dim=1), torch.ones(rows), atol=1e-5)
    top = teacher.api(Access.TOP_K, top_k=k)(logits)
    assert torch.allclose(top.sum(dim=1), torch.ones(rows), atol=1e-5) and (top >= 0).all()
    assert ((top > 0).sum(dim=1) <= k).all()
    labels = teacher.api(Access.TOP1_LABEL)(logits)
    assert labels.dtype == torch.int64 and labels.shape == (rows,)
    assert ((labels >= 0) & (labels < classes)).all()
    assert torch.equal(labels, logits.argmax(dim=1))
    served_logits = teacher.api(Access.LOGITS)(logits)
    assert served_logits.dtype == torch.float32 and not torch.isnan(served_logits).any()


# -- restore_argmax ----------------------------------------------------------------------------


def test_restore_argmax_swaps_the_moved_maximum_back():
    clean = torch.tensor([[3.0, 1.0, 2.0]])
    served = torch.tensor([[0.5, 4.0, 1.0]])  # the noise moved the top to class 1
    assert restore_argmax(served, clean).tolist() == [[4.0, 0.5, 1.0]]


def test_restore_argmax_lifts_the_clean_class_above_an_earlier_tie():
    clean = torch.tensor([[1.0, 2.0]])
    served = torch.tensor([[7.0, 7.0]])  # argmax would say class 0
    out = restore_argmax(served, clean)
    assert out[0, 0].item() == 7.0 and out[0, 1].item() == 7.0 + 2.0**-21  # one float32 step above 7
    assert out.argmax(dim=1).item() == 1


def test_restore_argmax_leaves_rows_that_kept_their_top_unchanged():
    clean = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    served = torch.tensor([[9.0, -1.0, 2.5], [1.0, 2.0, -3.0]])
    assert torch.equal(restore_argmax(served, clean), served)


# -- topk (Stingy Teacher) ---------------------------------------------------------------------


def test_keep_top_k_sets_all_but_the_k_largest_to_minus_infinity():
    out = keep_top_k(torch.tensor([[1.0, 3.0, 2.0, 0.0]]), 2)
    assert out.tolist() == [[-math.inf, 3.0, 2.0, -math.inf]]
    assert keep_top_k(torch.tensor([[5.0, 5.0, 5.0]]), 1).tolist() == [[5.0, -math.inf, -math.inf]]
    assert keep_top_k(torch.tensor([[1.0, 2.0]]), 5).tolist() == [[1.0, 2.0]]


def test_top_k_access_renormalises_the_k_largest_probabilities():
    # logits [ln 3, ln 2, 0, −5]: the top two have probabilities 3/5 and 2/5 after renormalising
    teacher = Teacher(torch.nn.Identity())
    out = teacher.api(Access.TOP_K, top_k=2)(torch.tensor([[math.log(3), math.log(2), 0.0, -5.0]]))
    assert out[0].tolist() == pytest.approx([0.6, 0.4, 0.0, 0.0], abs=1e-6)


# -- reverse sigmoid (Lee et al. 2019, Eq. 3–4) ------------------------------------------------


def test_reverse_sigmoid_matches_the_paper_on_two_classes():
    # y = [3/4, 1/4]; β = 1, γ = 1/2: s(½·ln 3) = √3/(√3+1) = 0.633975, so r = [+0.133975, −0.133975]
    # and ŷ = y − r = [0.616025, 0.383975], which already sums to 1 (α = 1).
    served = reverse_sigmoid(torch.tensor([[math.log(3), 0.0]]), beta=1.0, gamma=0.5)
    assert torch.softmax(served, 1)[0].tolist() == pytest.approx([0.616025, 0.383975], abs=1e-6)


def test_reverse_sigmoid_scrambles_the_ranking_of_the_small_probabilities():
    # y = [0.7, 0.2, 0.1], β = 1, γ = 0.1: s(0.1·s⁻¹(y)) = [0.521170, 0.465398, 0.445289]
    # → y − r = [0.678830, 0.234602, 0.154711], sum 1.068143 → ŷ = [0.635524, 0.219635, 0.144841]
    served = reverse_sigmoid(torch.log(torch.tensor([[0.7, 0.2, 0.1]])), beta=1.0, gamma=0.1)
    assert torch.softmax(served, 1)[0].tolist() == pytest.approx([0.635524, 0.219635, 0.144841], abs=1e-5)
    # y = [0.98, 0.019, 0.001]: s(0.1·s⁻¹(y)) = [0.596086, 0.402655, 0.333883]
    # → y − r = [0.883914, 0.116345, 0.167117], sum 1.167376 → ŷ = [0.757180, 0.099663, 0.143156]
    served = reverse_sigmoid(torch.log(torch.tensor([[0.98, 0.019, 0.001]])), beta=1.0, gamma=0.1)
    probs = torch.softmax(served, 1)[0]
    assert probs.tolist() == pytest.approx([0.757180, 0.099663, 0.143156], abs=1e-5)
    assert probs[2] > probs[1]  # the least likely class is now served as the second most likely


def test_reverse_sigmoid_restores_a_top_1_that_the_perturbation_flipped():
    # β = 3, γ = 1: s(s⁻¹(y)) = y, so r = 3(y − ½) = [0.75, −0.75] and y − r = [0, 1] (clipped):
    # the perturbation alone would serve class 1; the defense swaps it back.
    served = reverse_sigmoid(torch.tensor([[math.log(3), 0.0]]), beta=3.0, gamma=1.0)
    assert torch.softmax(served, 1)[0].tolist() == [1.0, 0.0]


def test_reverse_sigmoid_clips_confident_probabilities_before_the_log_odds_as_art_does():
    # logits [30, 0, 0]: y = [1 − 1.9e-13, 9.4e-14, 9.4e-14], clipped to [1 − 1e-9, 1e-9, 1e-9] (ART's
    # clip_min = 1e-9), so the log-odds are ±L with L = ln((1 − 1e-9)/1e-9) = 20.723266, not 30 − ln 2.
    big = math.log((1 - 1e-9) / 1e-9)
    assert clipped_log_odds(torch.tensor([[1.0, 0.0, 0.0]]))[0].tolist() == pytest.approx([big, -big, -big])
    # γ = 0.1, β = 1: s(2.0723266) = 0.888184, so r = [0.388184, −0.388184, −0.388184] and
    # y − r = [0.611816, 0.388184, 0.388184], sum 1.388184 → ŷ = [0.440731, 0.279635, 0.279635]
    s = 1 / (1 + math.exp(-0.1 * big))
    top, other = 1 - (s - 0.5), 0.0 + (s - 0.5)  # y's 9.4e-14 is far below the 1e-6 tolerance
    total = top + 2 * other
    expected = [top / total, other / total, other / total]
    assert expected == pytest.approx([0.440731, 0.279635, 0.279635], abs=1e-6)
    served = reverse_sigmoid(torch.tensor([[30.0, 0.0, 0.0]]), beta=1.0, gamma=0.1)
    assert torch.softmax(served, 1)[0].tolist() == pytest.approx(expected, abs=1e-6)
    # unclipped log-odds (30 − ln 2) would give s = 0.949 and ŷ_top = 0.355 instead
    assert torch.softmax(served, 1)[0, 0].item() == pytest.approx(0.440731, abs=1e-6)
    # every confident row saturates the same way: the served outputs no longer depend on how
    # confident the network is beyond p = 1 − 1e-9
    more = reverse_sigmoid(torch.tensor([[80.0, 0.0, 0.0]]), beta=1.0, gamma=0.1)
    assert torch.allclose(torch.softmax(more, 1), torch.softmax(served, 1), atol=1e-7)


# -- logit noise -------------------------------------------------------------------------------


def test_logit_noise_is_a_fixed_function_of_each_input_and_the_seed():
    torch.manual_seed(0)
    x = torch.randn(64, 1, 8, 8)
    clean = torch.randn(64, 10)
    served = logit_noise(clean, x, scale=1.0, seed=5)
    order = torch.randperm(64)
    # the same inputs in another order and batch split get the same answers: no averaging by repetition
    again = torch.cat(
        [
            logit_noise(clean[order[:20]], x[order[:20]], scale=1.0, seed=5),
            logit_noise(clean[order[20:]], x[order[20:]], scale=1.0, seed=5),
        ]
    )
    assert torch.equal(again, served[order])
    assert not torch.equal(logit_noise(clean, x, scale=1.0, seed=6), served)
    assert torch.equal(logit_noise(clean, x, scale=0.0, seed=5), clean)


def test_keyed_uniform_looks_uniform_and_independent_across_columns():
    x = torch.arange(20000, dtype=torch.float32).view(-1, 1) / 7.0
    u = keyed_uniform(x, 3, seed=1)
    assert ((u > 0) & (u < 1)).all()
    assert u.mean().item() == pytest.approx(0.5, abs=0.01)
    assert u.var().item() == pytest.approx(1 / 12, abs=0.003)
    assert torch.histc(u[:, 0].float(), bins=10, min=0, max=1).min().item() > 1800  # 2000 expected per bin
    assert abs(torch.corrcoef(u.T)[0, 1].item()) < 0.03


# -- rounding: ART's Rounded postprocessor, np.around(softmax, decimals) -------------------------


def art_rounded(logits: list[list[float]], decimals: int) -> np.ndarray:
    """The reference: ART's ``Rounded.__call__`` on the softmax (numpy, float64)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.exp(z - z.max(axis=1, keepdims=True))
    y /= y.sum(axis=1, keepdims=True)
    return np.around(y, decimals=decimals)


ROUNDING_CASES = [
    # 0.7 / 0.2 / 0.1 exactly: nothing to round at 3 decimals; at 1 decimal too
    ([[math.log(0.7), math.log(0.2), math.log(0.1)]], 3),
    ([[math.log(0.7), math.log(0.2), math.log(0.1)]], 1),
    # a confident row: its small probabilities (2e-4, 1e-5) round to 0
    ([[math.log(0.99979), math.log(0.0002), math.log(0.00001)]], 3),
    # 0.1235 and 0.0045: halves, rounded to even by numpy and by torch alike
    ([[math.log(0.872), math.log(0.1235), math.log(0.0045)]], 3),
    ([[2.0, 1.0, 0.5, -1.0, -3.0], [0.3, 0.2, 0.1, 0.0, -0.1]], 2),
]


@pytest.mark.parametrize(("logits", "decimals"), ROUNDING_CASES)
def test_rounding_serves_arts_rounded_probabilities_renormalised(logits, decimals):
    expected = art_rounded(logits, decimals)
    served = torch.softmax(rounded(torch.tensor(logits), decimals=decimals), dim=1).double().numpy()
    assert np.allclose(served, expected / expected.sum(axis=1, keepdims=True), atol=1e-6)
    assert np.array_equal(served == 0, expected == 0)  # the same classes are zeroed


def test_rounding_to_one_decimal_zeroes_what_is_below_half_a_tenth():
    logits = torch.log(torch.tensor([[0.62, 0.33, 0.04, 0.01]]))
    served = torch.softmax(rounded(logits, decimals=1), dim=1)
    # np.around([0.62, 0.33, 0.04, 0.01], 1) = [0.6, 0.3, 0, 0], served as [2/3, 1/3, 0, 0]
    assert torch.allclose(served, torch.tensor([[2 / 3, 1 / 3, 0.0, 0.0]]))


def test_rounding_keeps_the_top_class_where_it_ties_it_with_another():
    # 0.5004 and 0.4996 both round to 0.50 at 2 decimals: argmax would pick class 0, the clean top is 1
    logits = torch.log(torch.tensor([[0.4996, 0.5004]], dtype=torch.float64)).float()
    served = rounded(logits, decimals=2)
    assert served.argmax(dim=1).item() == 1
    assert torch.allclose(torch.softmax(served, dim=1), torch.tensor([[0.5, 0.5]]), atol=1e-6)


def test_logit_noise_has_the_configured_strength():
    # a top class 100 above the rest: the noise (std 0.5 × a row std of about 31) never moves it,
    # so every served logit is clean + noise and the noise can be read off
    torch.manual_seed(0)
    clean = torch.randn(2000, 10)
    clean[:, 0] += 100.0
    spread = clean.std(dim=1, keepdim=True)
    noise = (logit_noise(clean, torch.randn(2000, 5), scale=0.5, seed=1) - clean) / spread
    assert noise.mean().item() == pytest.approx(0.0, abs=0.02)
    assert noise.std().item() == pytest.approx(0.5, rel=0.03)


# -- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: LogitNoiseConfig(scale=-1.0), r"^scale must be >= 0, got -1.0"),
        (lambda: TopKConfig(k=0), r"^k must be a positive number of classes, got 0"),
        (lambda: ReverseSigmoidConfig(beta=0.0), r"^beta must be > 0, got 0.0"),
        (lambda: ReverseSigmoidConfig(gamma=-1.0), r"^gamma must be > 0, got -1.0"),
        (lambda: RoundingConfig(decimals=0), r"^decimals must be an integer from 1 to 8, got 0"),
        (lambda: RoundingConfig(decimals=2.5), r"^decimals must be an integer from 1 to 8, got 2.5"),
        (lambda: RoundingConfig(decimals=9), r"^decimals must be an integer from 1 to 8, got 9"),
    ],
)
def test_bad_options_are_one_clear_error(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


# -- white box: the perturbation is part of the function it differentiates through -------------


@pytest.mark.parametrize("name", ["logit_noise", "topk_2", "reverse_sigmoid", "reverse_sigmoid_strong"])
def test_white_box_gradients_flow_through_the_served_function_and_stay_finite(name):
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 5)
    perturb = PERTURBATIONS[name]
    teacher = Teacher(model, serve=lambda x: perturb(model(x)), perturbed=True)
    x = (torch.randn(16, 6) * 4).requires_grad_(True)
    served = teacher(x)
    # a student-like loss on the served probabilities, as a data-free attack would use
    loss = (torch.softmax(served, dim=1) * torch.arange(5.0)).sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
