"""The adaptive attacks' losses and wiring: HTC's target distribution, the skeptical student's
auxiliary heads (where they attach, which parameters each term trains) and the reference's loss
by hand."""

import math

import pytest
import torch

from kdbench.attacks.htc import htc_loss
from kdbench.attacks.skeptical import SkepticalConfig, skeptical_loss
from kdbench.errors import ConfigError
from kdbench.models import create_model
from kdbench.models.base import Classifier
from kdbench.models.intermediate import SelfDistillingModel, SepConv, stage_boundaries


def test_htc_softens_only_the_teacher():
    teacher = torch.tensor([[70.0 * math.log(3.0), 0.0]])  # at τ_T = 70: target [3/4, 1/4]
    student = torch.tensor([[0.0, 0.0]])  # at τ_S = 1: [1/2, 1/2]
    terms = htc_loss(student, teacher, torch.tensor([0]), alpha=0.9, teacher_tau=70.0, student_tau=1.0)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL([3/4,1/4] ‖ [1/2,1/2]) = 0.130812
    assert terms["kd"].item() == pytest.approx(0.9 * kl, abs=1e-6)
    assert terms["ce"].item() == pytest.approx(0.1 * math.log(2.0), abs=1e-6)


def test_htc_student_temperature_scales_the_student_and_the_tau_squared_factor():
    teacher = torch.tensor([[70.0 * math.log(3.0), 0.0]])
    student = torch.tensor([[2.0 * math.log(3.0), 0.0]])  # at τ_S = 2: [3/4, 1/4], a perfect match
    terms = htc_loss(student, teacher, torch.tensor([0]), alpha=1.0, teacher_tau=70.0, student_tau=2.0)
    assert terms["kd"].item() == pytest.approx(0.0, abs=1e-6)
    student = torch.tensor([[0.0, 0.0]])
    terms = htc_loss(student, teacher, torch.tensor([0]), alpha=1.0, teacher_tau=70.0, student_tau=2.0)
    assert terms["kd"].item() == pytest.approx(4.0 * 0.130812, abs=1e-5)


# -- the skeptical student (ksouvik52/Skeptical2021, train_kd_to_SD.py: loss_fn_kd) -----------------

LN3 = math.log(3.0)


def golden_outputs():
    # τ = 2; each row is chosen so that σ_τ gives round numbers (y = class 0):
    final = torch.tensor([[2 * LN3, 0.0]], requires_grad=True)  # σ_2 = (3/4, 1/4); σ_1 = (9/10, 1/10)
    out1 = torch.tensor([[0.0, 0.0]], requires_grad=True)  # σ_2 = σ_1 = (1/2, 1/2)
    out2 = torch.tensor([[0.0, 2 * LN3]], requires_grad=True)  # σ_2 = (1/4, 3/4); σ_1 = (1/10, 9/10)
    teacher = torch.tensor([[2 * LN3, 0.0]])  # σ_2 = (3/4, 1/4)
    return [final, out1, out2], teacher, torch.tensor([0])


def test_skeptical_loss_matches_the_reference_formula_by_hand():
    outputs, teacher, y = golden_outputs()
    terms = skeptical_loss(outputs, teacher, y, alpha=0.9, tau=2.0, loc=2, distil=True)
    # α·τ²·KL((3/4,1/4) ‖ (1/4,3/4)) = 0.9·4·(¾·ln 3 + ¼·ln ⅓) = 3.6·(½·ln 3) = 1.8·ln 3
    assert terms["kd"].item() == pytest.approx(1.8 * LN3, abs=1e-5)
    assert terms["kd"].item() == pytest.approx(1.977502, abs=1e-5)
    # (1 − α)·CE(out[2], 0) = 0.1·(−ln 1/10)
    assert terms["kd_ce"].item() == pytest.approx(0.1 * math.log(10.0), abs=1e-6)
    # 0.3·KL(σ_2(final) ‖ σ_2(out[1])) = 0.3·(¾·ln 1.5 + ¼·ln 0.5) = 0.3·0.130812, no τ² factor
    assert terms["self"].item() == pytest.approx(0.3 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5)), abs=1e-6)
    assert terms["self_ce"].item() == pytest.approx(0.7 * math.log(2.0), abs=1e-6)  # 0.7·CE(out[1], 0)
    assert terms["ce"].item() == pytest.approx(-math.log(0.9), abs=1e-6)  # CE(final, 0)
    total = 1.8 * LN3 + 0.1 * math.log(10) + 0.3 * 0.130812 + 0.7 * math.log(2) - math.log(0.9)
    assert total == pytest.approx(2.837569, abs=1e-5)
    assert sum(terms.values()).item() == pytest.approx(total, abs=1e-5)


def test_skeptical_self_distillation_also_trains_the_final_head():
    # not detached, as in the reference: the final head gets CE's gradient plus the KL's
    outputs, teacher, y = golden_outputs()
    terms = skeptical_loss(outputs, teacher, y, alpha=0.9, tau=2.0, loc=2, distil=True)
    sum(terms.values()).backward()
    # d/dz CE(z, 0) at σ_1 = (9/10, 1/10): (−1/10, 1/10). With p = σ_2(z) = (¾, ¼) and q = (½, ½),
    # d/dz_j KL(p ‖ q) = p_j·(ln(p_j/q_j) − KL(p ‖ q))/τ, KL = 0.130812:
    # 0.3·¾·(ln 1.5 − 0.130812)/2 = 0.030899 and −0.030899 for class 1
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    d_self = 0.3 * 0.75 * (math.log(1.5) - kl) / 2
    assert d_self == pytest.approx(0.030899, abs=1e-6)
    assert outputs[0].grad[0].tolist() == pytest.approx([-0.1 + d_self, 0.1 - d_self], abs=1e-6)
    # the teacher reaches out[2] only: d/dz α·τ²·KL(t ‖ σ_2(z)) = α·τ·(σ_2(z) − t) = 0.9·2·(−½, ½)
    # plus (1 − α)·(σ_1(z) − onehot) = 0.1·(1/10 − 1, 9/10)
    assert outputs[2].grad[0].tolist() == pytest.approx([-0.9 - 0.09, 0.9 + 0.09], abs=1e-6)


def test_skeptical_loss_before_the_delay_is_the_final_heads_cross_entropy_only():
    outputs, teacher, y = golden_outputs()
    terms = skeptical_loss(outputs, teacher, y, alpha=0.9, tau=2.0, loc=2, distil=False)
    assert list(terms) == ["ce"] and terms["ce"].item() == pytest.approx(-math.log(0.9), abs=1e-6)


def test_skeptical_loss_with_the_teacher_on_the_self_distilled_head():
    # loc = 1: the teacher and the final head both teach out[1] (a student with one auxiliary head)
    outputs, teacher, y = golden_outputs()
    terms = skeptical_loss(outputs[:2], teacher, y, alpha=0.9, tau=2.0, loc=1, distil=True)
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # KL((3/4,1/4) ‖ (1/2,1/2))
    assert terms["kd"].item() == pytest.approx(0.9 * 4 * kl, abs=1e-5)
    assert terms["kd_ce"].item() == pytest.approx(0.1 * math.log(2.0), abs=1e-6)


def test_skeptical_delay_follows_the_reference_test_epoch_greater_than_kd_delay():
    assert SkepticalConfig().delay(40) == 10 and SkepticalConfig().delay(2) == 0
    assert SkepticalConfig(kd_delay=3).delay(40) == 3
    with pytest.raises(ConfigError, match=r"^loc must be"):
        SkepticalConfig(loc=0)


def test_resnet18_gets_the_references_three_heads_after_its_first_three_stages():
    model = create_model("resnet18", 10, (3, 32, 32))
    boundaries = stage_boundaries(model, (3, 32, 32))
    # the last block of each of the first three stages (this suite's ResNet holds its 2+2+2+2 blocks
    # in one Sequential): the reference's layer1, layer2 and layer3 outputs
    assert [(layer.name, after) for layer, after in boundaries] == [("stages.1", 3), ("stages.3", 2), ("stages.5", 1)]
    assert [layer.output_shape for layer, _ in boundaries] == [(64, 32, 32), (128, 16, 16), (256, 8, 8)]
    network = SelfDistillingModel(model, (3, 32, 32), 10)
    # stride-2 separable convolutions up to the last stage's 512 channels: 3, 2 and 1 of them
    convs = [[m for m in head.body if isinstance(m, SepConv)] for head in network.aux_heads]
    assert [len(c) for c in convs] == [3, 2, 1]
    assert [c[-1].op[-3].out_channels for c in convs] == [512, 512, 512]
    x = torch.randn(2, 3, 32, 32)
    outputs = network(x)
    assert len(outputs) == 4 and all(o.shape == (2, 10) for o in outputs)
    network.eval()
    assert torch.allclose(network(x)[0], model(x))  # out[0] is the model's own head


@pytest.mark.parametrize("name,boundary", [("digits_cnn", "body.2"), ("cnn1", "body.2")])
def test_the_digits_convnets_get_one_head_after_their_first_stage(name, boundary):
    model = create_model(name, 10, (1, 8, 8))
    assert [(layer.name, after) for layer, after in stage_boundaries(model, (1, 8, 8))] == [(boundary, 1)]
    outputs = SelfDistillingModel(model, (1, 8, 8), 10)(torch.randn(3, 1, 8, 8))
    assert len(outputs) == 2


def test_an_mlp_gets_one_head_on_the_features_its_own_head_reads():
    torch.manual_seed(0)
    model = create_model("mlp", 10, (1, 8, 8))
    network = SelfDistillingModel(model, (1, 8, 8), 10)
    x = torch.randn(5, 1, 8, 8)
    _, aux = network(x)
    head = network.aux_heads[0]
    features = model.forward_features(x)
    assert torch.allclose(aux, head.fc(torch.sigmoid(head.attention(features)) * features), atol=1e-6)


def test_the_teacher_term_trains_the_shared_layers_and_not_the_final_head():
    model = create_model("cnn1", 10, (1, 8, 8))
    network = SelfDistillingModel(model, (1, 8, 8), 10)
    outputs = network(torch.randn(5, 1, 8, 8))
    outputs[1].sum().backward()
    assert model.body[0].weight.grad is not None and model.body[0].weight.grad.abs().sum() > 0
    assert model.head.weight.grad is None


def test_detaching_the_heads_leaves_the_plain_model():
    model = create_model("cnn1", 10, (1, 8, 8))
    plain = SelfDistillingModel(model, (1, 8, 8), 10).detach_heads()
    assert plain is model and not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class LogisticRegression(Classifier):
    def __init__(self) -> None:
        super().__init__()
        self.flatten = torch.nn.Flatten()
        self.head = torch.nn.Linear(64, 10)

    def forward_features(self, x):
        return self.flatten(x)


def test_a_model_without_an_intermediate_layer_is_a_clear_error():
    with pytest.raises(ConfigError, match="model 'LogisticRegression' has no layer with parameters before its head"):
        SelfDistillingModel(LogisticRegression(), (1, 8, 8), 10)


@pytest.mark.parametrize(
    "name,shape",
    [("mlp", (1, 8, 8)), ("digits_cnn", (1, 8, 8)), ("resnetc20", (3, 32, 32)), ("timm/resnet10t", (3, 32, 32))],
)
def test_every_student_architecture_takes_auxiliary_heads(name, shape):
    model = create_model(name, 10, shape)
    outputs = SelfDistillingModel(model, shape, 10)(torch.randn(2, *shape))
    assert len(outputs) >= 2 and all(o.shape == (2, 10) for o in outputs)
