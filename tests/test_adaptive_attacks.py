"""The adaptive attacks' losses and wiring: HTC's target distribution, the skeptical student's
auxiliary head (where it attaches, which parameters each term trains, the delay)."""

import math

import pytest
import torch
from kdbench.attacks.htc import htc_loss
from kdbench.attacks.skeptical import skeptical_loss
from kdbench.errors import ConfigError
from kdbench.models import create_model
from kdbench.models.base import Classifier
from kdbench.models.intermediate import TappedModel, intermediate_layer, usable_layers


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


def test_skeptical_loss_terms_and_their_targets():
    final = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)  # σ = [3/4, 1/4]
    aux = torch.tensor([[0.0, 0.0]], requires_grad=True)  # σ = [1/2, 1/2]
    teacher = torch.tensor([[0.0, math.log(3.0)]])  # σ = [1/4, 3/4]
    terms = skeptical_loss(final, aux, teacher, torch.tensor([0]), alpha=0.5, beta=2.0, tau=1.0, distil=True)
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # 0.130812, the same for both targets by symmetry
    assert terms["ce"].item() == pytest.approx(-math.log(0.75), abs=1e-6)
    assert terms["kd"].item() == pytest.approx(0.5 * kl, abs=1e-6)
    assert terms["self"].item() == pytest.approx(2.0 * kl, abs=1e-6)
    sum(terms.values()).backward()
    # the final head gets only the label loss: the self-distillation target is detached
    ce_only = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)
    torch.nn.functional.cross_entropy(ce_only, torch.tensor([0])).backward()
    assert torch.allclose(final.grad, ce_only.grad)


def test_skeptical_loss_before_the_delay_has_no_teacher_term():
    final, aux = torch.randn(4, 3), torch.randn(4, 3, requires_grad=True)
    terms = skeptical_loss(
        final, aux, torch.randn(4, 3), torch.zeros(4, dtype=torch.long), alpha=0.9, beta=1.0, tau=4.0, distil=False
    )
    assert terms["kd"].item() == 0.0


def test_the_auxiliary_head_reads_the_chosen_intermediate_layer():
    torch.manual_seed(0)
    model = create_model("cnn1", 10, (1, 8, 8))
    layer = intermediate_layer(model, (1, 8, 8), depth=0.0, arch="cnn1")
    assert layer.name == "body.0" and layer.output_shape == (16, 8, 8)
    tapped = TappedModel(model, layer, 10)
    x = torch.randn(3, 1, 8, 8)
    final, aux = tapped(x)
    assert torch.allclose(final, model(x))
    expected = tapped.aux_head.fc(model.body[0](x).mean(dim=(2, 3)))
    assert torch.allclose(aux, expected, atol=1e-6)


def test_the_auxiliary_loss_trains_the_shared_layers_and_not_the_final_head():
    model = create_model("mlp", 10, (1, 8, 8))
    tapped = TappedModel(model, intermediate_layer(model, (1, 8, 8), 0.5, "mlp"), 10)
    _, aux = tapped(torch.randn(5, 1, 8, 8))
    aux.sum().backward()
    assert model.body[1].weight.grad is not None and model.body[1].weight.grad.abs().sum() > 0
    assert model.head.weight.grad is None


def test_detaching_the_head_leaves_the_plain_model():
    model = create_model("cnn1", 10, (1, 8, 8))
    tapped = TappedModel(model, intermediate_layer(model, (1, 8, 8), 0.5, "cnn1"), 10)
    plain = tapped.detach_head()
    assert plain is model and not any(m._forward_hooks for m in model.modules())


class LogisticRegression(Classifier):
    def __init__(self) -> None:
        super().__init__()
        self.flatten = torch.nn.Flatten()
        self.head = torch.nn.Linear(64, 10)

    def forward_features(self, x):
        return self.flatten(x)


def test_a_model_without_an_intermediate_layer_is_a_clear_error():
    assert usable_layers(LogisticRegression(), (1, 8, 8)) == []
    with pytest.raises(ConfigError, match="model 'logreg' has no intermediate layer with parameters"):
        intermediate_layer(LogisticRegression(), (1, 8, 8), 0.5, "logreg")


@pytest.mark.parametrize(
    "name,shape",
    [
        ("mlp", (1, 8, 8)),
        ("digits_cnn", (1, 8, 8)),
        ("resnetc20", (3, 32, 32)),
        ("resnet18", (3, 32, 32)),
        ("timm/resnet10t", (3, 32, 32)),
    ],
)
def test_every_student_architecture_takes_an_auxiliary_head(name, shape):
    model = create_model(name, 10, shape)
    final, aux = TappedModel(model, intermediate_layer(model, shape, 0.5, name), 10)(torch.randn(2, *shape))
    assert final.shape == aux.shape == (2, 10)
