import math

import pytest
import torch

from kdbench.models import MODELS, create_model

# the CIFAR-style architectures of the paper presets (all take 32×32 and 64×64 inputs)
CIFAR_MODELS = [
    "cnn",
    "resnetc20",
    "resnetc32",
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenetv2",
    "shufflenetv2",
    "resnext29_8x64d",
]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_gives_logits_and_the_features_its_head_reads(name):
    shape = (1, 8, 8) if name in ("digits_cnn", "mlp", "cnn1") else (3, 32, 32)
    model = create_model(name, num_classes=10, input_shape=shape).eval()
    x = torch.randn(2, *shape)
    logits = model(x)
    features = model.forward_features(x)
    assert logits.shape == (2, 10)
    assert features.ndim == 2 and features.shape[0] == 2
    assert torch.allclose(model.head(features), logits)


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_cifar_models_take_tiny_imagenet_inputs(name):
    model = create_model(name, num_classes=200, input_shape=(3, 64, 64)).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 200)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("resnet18", 11_173_962),  # the CIFAR ResNet-18 of the Nasty-Teacher / kuangliu code, 10 classes
        ("resnet34", 21_282_122),
    ],
)
def test_cifar_resnets_have_the_known_parameter_counts(name, expected):
    assert n_params(create_model(name, 10, (3, 32, 32))) == expected


# Published sizes in millions of parameters, with the number of decimals they are given to.
# weiaicunzai/pytorch-cifar100, README "Results" table (100 classes): the implementations the
# Nasty-Teacher code takes MobileNetV2 and ShuffleNetV2 from; its figures are truncated, not rounded.
# Xie et al. (2017), "Aggregated Residual Transformations", Table 7: ResNeXt-29 8×64d on CIFAR-10.
PUBLISHED_MILLIONS = [
    ("resnet18", 100, 11.2, "truncated"),
    ("resnet34", 100, 21.3, "truncated"),
    ("resnet50", 100, 23.7, "truncated"),
    ("mobilenetv2", 100, 2.36, "truncated"),
    ("shufflenetv2", 100, 1.3, "truncated"),
    ("resnext29_8x64d", 10, 34.4, "rounded"),
]


@pytest.mark.parametrize("name,num_classes,millions,how", PUBLISHED_MILLIONS)
def test_parameter_counts_match_the_published_figures(name, num_classes, millions, how):
    decimals = len(str(millions).split(".")[1])
    measured = n_params(create_model(name, num_classes, (3, 32, 32))) / 1e6
    scale = 10**decimals
    shown = math.floor(measured * scale) / scale if how == "truncated" else round(measured, decimals)
    assert shown == pytest.approx(millions), f"{name}: {measured:.4f}M parameters"


def test_the_plain_cnn_has_the_hand_computed_parameter_count():
    conv = (3 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 128 * 9 + 128)
    batch_norm = 2 * (32 + 64 + 128 + 128)
    dense = (128 * 4 * 4 * 128 + 128) + (128 * 10 + 10)
    assert n_params(create_model("cnn", 10, (3, 32, 32))) == conv + batch_norm + dense == 357_514
    # 64×64 inputs leave an 8×8 map for the first dense layer
    assert n_params(create_model("cnn", 10, (3, 64, 64))) == 357_514 + 128 * (8 * 8 - 4 * 4) * 128


def test_mobilenetv2_keeps_the_original_stem_that_pads_a_1x1_convolution():
    # weiaicunzai's stem (used for the paper's figures) turns 32×32 into 34×34 before the blocks
    model = create_model("mobilenetv2", 100, (3, 32, 32))
    assert model.stem(torch.randn(1, 3, 32, 32)).shape == (1, 32, 34, 34)


def test_resnetc_depths_follow_6n_plus_2():
    small, large = (create_model(n, 10, (3, 32, 32)) for n in ("resnetc20", "resnetc32"))
    # 0.27M and 0.46M parameters, as ResNet-20/32 in He et al. (2016)
    assert 0.26e6 < n_params(small) < 0.29e6
    assert 0.45e6 < n_params(large) < 0.48e6


def test_digits_students_are_smaller_than_the_teacher():
    teacher = n_params(create_model("digits_cnn", 10, (1, 8, 8)))
    for student in ("mlp", "cnn1"):
        assert n_params(create_model(student, 10, (1, 8, 8))) < teacher / 4
