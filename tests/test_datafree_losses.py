"""Golden values for the data-free attacks' loss terms (DAFL, DeepInversion), computed by hand."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdbench.attacks.dafl import DAFLConfig, activation_loss, generator_loss, information_entropy_loss, one_hot_loss
from kdbench.attacks.deepinversion import (
    BatchNormStatistics,
    batch_statistics,
    batchnorm_statistics,
    competition_loss,
    feature_distribution_loss,
    jitter_and_flip,
    reference_competition_loss,
    total_variation,
)

LN3 = math.log(3.0)

# -- DAFL -----------------------------------------------------------------------------------------


def test_one_hot_term_is_cross_entropy_against_the_argmax():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    # row 1: argmax 0 → −log(e²/(e²+e+1)) = 0.407606; row 2: argmax 2 → −log(e³/(e³+2)) = 0.094923
    row1 = -math.log(math.exp(2) / (math.exp(2) + math.e + 1))
    row2 = -math.log(math.exp(3) / (math.exp(3) + 2))
    assert one_hot_loss(logits).item() == pytest.approx((row1 + row2) / 2, abs=1e-6)
    assert one_hot_loss(logits).item() == pytest.approx(0.251264, abs=1e-6)
    # the same as cross-entropy with the argmax as labels
    assert one_hot_loss(logits).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).item(), abs=1e-7
    )


def test_one_hot_term_sends_no_gradient_through_its_labels():
    logits = torch.tensor([[2.0, 1.0]], requires_grad=True)
    one_hot_loss(logits).backward()
    # d CE / d logits = softmax − onehot(argmax): the labels themselves are constants
    p = torch.softmax(torch.tensor([2.0, 1.0]), 0)
    assert torch.allclose(logits.grad, (p - torch.tensor([1.0, 0.0])).unsqueeze(0), atol=1e-6)


def test_information_entropy_term_by_hand():
    # batch-mean softmax of [[ln3, 0], [ln3, 0]] is [3/4, 1/4]
    logits = torch.tensor([[LN3, 0.0], [LN3, 0.0]])
    expected = 0.75 * math.log10(0.75) + 0.25 * math.log10(0.25)  # −0.244219
    assert information_entropy_loss(logits).item() == pytest.approx(expected, abs=1e-6)
    assert information_entropy_loss(logits).item() == pytest.approx(-0.244219, abs=1e-6)


def test_information_entropy_term_is_lowest_for_a_uniform_class_balance():
    confident_balanced = torch.tensor([[9.0, 0.0], [0.0, 9.0]])  # each input sure, the batch balanced
    confident_one_class = torch.tensor([[9.0, 0.0], [9.0, 0.0]])
    balanced = information_entropy_loss(confident_balanced).item()
    assert balanced == pytest.approx(-math.log10(2), abs=1e-6)  # the minimum for 2 classes
    assert information_entropy_loss(confident_one_class).item() > balanced + 0.29


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(-20, 20, allow_nan=False), min_size=4, max_size=4),
        min_size=1,
        max_size=6,
    )
)
def test_information_entropy_term_is_never_below_the_uniform_balance(rows):
    value = information_entropy_loss(torch.tensor(rows, dtype=torch.float64)).item()
    assert value >= -math.log10(4) - 1e-9


def test_entropy_and_competition_terms_stay_finite_when_a_class_underflows():
    logits = torch.tensor([[0.0, -200.0], [0.0, -200.0]], requires_grad=True)  # p̄ = (1, 0) in float32
    value = information_entropy_loss(logits) + competition_loss(logits, logits * 2, tau=1.0)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


def test_activation_term_is_minus_the_mean_absolute_feature():
    features = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    assert activation_loss(features).item() == pytest.approx(-1.5)


def test_generator_loss_weights_each_term():
    logits = torch.tensor([[LN3, 0.0], [LN3, 0.0]])
    features = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    cfg = DAFLConfig(w_one_hot=0.05, w_entropy=5.0, w_activation=0.01)
    terms = generator_loss(logits, features, cfg)
    assert set(terms) == {"one_hot", "entropy", "activation"}
    assert terms["one_hot"].item() == pytest.approx(0.05 * -math.log(0.75), abs=1e-7)
    assert terms["entropy"].item() == pytest.approx(5.0 * -0.244219, abs=1e-5)
    assert terms["activation"].item() == pytest.approx(0.01 * -1.5, abs=1e-7)


# -- DeepInversion --------------------------------------------------------------------------------

# two images, two channels, 1×2 pixels: channel 0 holds 1, 2 | 3, 4; channel 1 holds 0, 0 | 2, 6
X = torch.tensor([[[[1.0, 2.0]], [[0.0, 0.0]]], [[[3.0, 4.0]], [[2.0, 6.0]]]])
# channel 0: mean 2.5, biased variance (2.25 + 0.25 + 0.25 + 2.25)/4 = 1.25
# channel 1: mean 2.0, biased variance (4 + 4 + 0 + 16)/4 = 6.0
MEAN, VAR = torch.tensor([2.5, 2.0]), torch.tensor([1.25, 6.0])


def test_batch_statistics_by_hand():
    mean, var = batch_statistics(X)
    assert torch.allclose(mean, MEAN) and torch.allclose(var, VAR)


def test_batch_statistics_of_a_flat_batchnorm1d_input():
    mean, var = batch_statistics(torch.tensor([[1.0, 0.0], [3.0, 4.0]]))
    assert torch.allclose(mean, torch.tensor([2.0, 2.0])) and torch.allclose(var, torch.tensor([1.0, 4.0]))


@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_statistics_and_their_gradients_match_torch_var(channels_last):
    torch.manual_seed(0)
    x = torch.randn(16, 5, 3, 4) * 3 + 2
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ours, theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    mean, var = batch_statistics(ours)
    (mean.sum() + (var * torch.arange(5.0)).sum()).backward()
    ref_mean, ref_var = theirs.mean(dim=(0, 2, 3)), theirs.var(dim=(0, 2, 3), unbiased=False)
    (ref_mean.sum() + (ref_var * torch.arange(5.0)).sum()).backward()
    assert torch.allclose(mean, ref_mean, atol=1e-5) and torch.allclose(var, ref_var, atol=1e-4)
    assert torch.allclose(ours.grad, theirs.grad, atol=1e-5)


def test_feature_distribution_loss_is_the_sum_of_two_l2_distances():
    loss = feature_distribution_loss(MEAN, VAR, torch.tensor([2.5, 5.0]), torch.tensor([5.25, 3.0]))
    # ‖(0, −3)‖ + ‖(−4, 3)‖ = 3 + 5
    assert loss.item() == pytest.approx(8.0)


def test_the_batchnorm_hook_records_the_batch_statistics_entering_the_layer():
    layer = torch.nn.BatchNorm2d(2).eval()
    layer.running_mean.copy_(torch.tensor([2.5, 5.0]))
    layer.running_var.copy_(torch.tensor([5.25, 3.0]))
    hook = BatchNormStatistics(layer)
    layer(X)
    assert torch.allclose(hook.mean, MEAN) and torch.allclose(hook.var, VAR)
    assert hook.loss.item() == pytest.approx(8.0)
    hook.remove()


def test_the_hooks_cover_every_batchnorm_layer_and_are_removed_afterwards():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2), torch.nn.Flatten(), torch.nn.BatchNorm1d(8)
    ).eval()
    with batchnorm_statistics(model) as hooks:
        model(torch.randn(3, 1, 2, 2))
        assert len(hooks) == 2 and all(h.loss is not None for h in hooks)
    assert all(not layer._forward_hooks for layer in model.modules())


def test_the_hook_loss_is_differentiable_with_respect_to_the_inputs():
    layer = torch.nn.BatchNorm2d(2).eval()
    x = X.clone().requires_grad_(True)
    with batchnorm_statistics(layer) as (hook,):
        layer(x)
        hook.loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_total_variation_is_zero_for_a_constant_image():
    assert total_variation(torch.full((2, 3, 4, 4), 0.7)).item() == 0.0


def test_total_variation_by_hand():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    # horizontal (−1, −1) → √2; vertical (−2, −2) → √8; diagonals 2 − 1 = 1 and 0 − 3 = −3
    assert total_variation(x).item() == pytest.approx(3 * math.sqrt(2) + 4, abs=1e-6)


def test_competition_term_is_one_when_teacher_and_student_agree():
    logits = torch.tensor([[1.0, -2.0, 0.5]])
    assert competition_loss(logits, logits.clone()).item() == pytest.approx(1.0, abs=1e-7)


def test_competition_term_is_one_minus_the_jensen_shannon_divergence():
    teacher = torch.tensor([[LN3, 0.0]])  # p_T = (3/4, 1/4)
    student = torch.tensor([[0.0, LN3]])  # p_S = (1/4, 3/4); m = (1/2, 1/2)
    js = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # KL(p_T‖m) = KL(p_S‖m) = 0.130812
    assert competition_loss(teacher, student, tau=1.0).item() == pytest.approx(1 - js, abs=1e-6)
    assert competition_loss(teacher, student, tau=1.0).item() == pytest.approx(0.869188, abs=1e-6)


def test_competition_term_softens_both_distributions_with_its_temperature():
    teacher = torch.tensor([[2 * LN3, 0.0]])  # at τ = 2: p_T = (3/4, 1/4)
    student = torch.tensor([[0.0, 2 * LN3]])
    assert competition_loss(teacher, student, tau=2.0).item() == pytest.approx(0.869188, abs=1e-6)


def test_reference_competition_term_is_the_official_codes_kl_of_the_mixture():
    # NVlabs/DeepInversion cifar10/deepinversion_cifar10.py: P = σ(student/T), Q = σ(teacher/T),
    # M = (P+Q)/2, all clamped to [0.01, 0.99]; 0.5·kl_loss(log P, M) + 0.5·kl_loss(log Q, M) with
    # KLDivLoss(batchmean) = KL(M ‖ P)/2 + KL(M ‖ Q)/2; the term is 1 − clamp(that, 0, 1).
    teacher = torch.tensor([[LN3, 0.0]])  # Q = (3/4, 1/4)
    student = torch.tensor([[0.0, LN3]])  # P = (1/4, 3/4); M = (1/2, 1/2); no clamp is active
    kl_m_p = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # = ½·ln(4/3) = 0.143841
    assert kl_m_p == pytest.approx(0.143841, abs=1e-6)
    value = reference_competition_loss(teacher, student, tau=1.0).item()
    assert value == pytest.approx(1 - kl_m_p, abs=1e-6)  # KL(M ‖ Q) is the same by symmetry
    assert value == pytest.approx(0.856159, abs=1e-6)  # the textbook 1 − JS would be 0.869188


def test_reference_competition_term_clamps_the_probabilities_and_the_divergence():
    # a Stingy-Teacher row: Q = (1, 0) → clamped (0.99, 0.01); P = (1/2, 1/2); M = (3/4, 1/4)
    teacher = torch.tensor([[0.0, -math.inf]])
    student = torch.tensor([[0.0, 0.0]], requires_grad=True)
    kl_m_p = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # 0.130812
    kl_m_q = 0.75 * math.log(0.75 / 0.99) + 0.25 * math.log(0.25 / 0.01)  # 0.596495
    value = reference_competition_loss(teacher, student, tau=1.0)
    assert value.item() == pytest.approx(1 - 0.5 * (kl_m_p + kl_m_q), abs=1e-6)
    assert value.item() == pytest.approx(0.636346, abs=1e-6)
    value.backward()
    assert torch.isfinite(student.grad).all()
    # opposite one-hot rows over 10 classes: P, Q clamp to 0.99 / 0.01, M to (½, ½, 0.01 × 8);
    # KL(M ‖ P) = ½·ln(0.5/0.01) + ½·ln(0.5/0.99) = 1.614463 > 1, so the divergence clamps to 1
    kl = 0.5 * math.log(0.5 / 0.01) + 0.5 * math.log(0.5 / 0.99)
    assert kl == pytest.approx(1.614463, abs=1e-6)
    teacher = torch.full((1, 10), -100.0).index_fill_(1, torch.tensor([0]), 100.0)
    student = torch.full((1, 10), -100.0).index_fill_(1, torch.tensor([1]), 100.0)
    assert reference_competition_loss(teacher, student, tau=3.0).item() == 0.0


def test_the_cifar_defaults_follow_the_official_code():
    from kdbench.attacks.deepinversion import DeepInversionConfig

    cfg = DeepInversionConfig()
    assert (cfg.w_compete, cfg.competition, cfg.jitter, cfg.flip) == (0.01, "reference", 2, False)


def test_jitter_rolls_within_its_range_and_flip_mirrors():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(jitter_and_flip(x, 0, False, torch.Generator().manual_seed(0)), x)
    stream = torch.Generator().manual_seed(0)
    rolled = [torch.roll(x, (dy, dx), (2, 3)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    outputs = [jitter_and_flip(x, 1, True, stream) for _ in range(40)]
    flipped = [any(torch.equal(out, r.flip(3)) for r in rolled) for out in outputs]
    plain = [any(torch.equal(out, r) for r in rolled) for out in outputs]
    assert all(f or p for f, p in zip(flipped, plain, strict=True))  # nothing else comes out
    assert 5 < sum(flipped) < 35  # about half mirrored
    assert len({tuple(out.flatten().tolist()) for out in outputs}) > 5  # and the shift varies


@pytest.mark.parametrize("shape", [(6, 3, 2, 2), (5, 4)], ids=["conv", "flat"])
def test_the_batch_statistics_backward_is_the_exact_gradient(shape):
    """gradcheck in double precision, for a BatchNorm2d and a BatchNorm1d input: the one-pass
    backward a + b·x is the gradient of E[x] and E[x²] − E[x]²."""
    torch.manual_seed(0)
    x = (torch.randn(*shape, dtype=torch.double) * 2 + 1).requires_grad_(True)
    assert torch.autograd.gradcheck(batch_statistics, (x,))
