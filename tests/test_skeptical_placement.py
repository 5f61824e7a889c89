"""The skeptical student's auxiliary heads on the paper's CIFAR students sit where the reference
(ksouvik52/Skeptical2021) puts them and stack its layers: for each network, the tapped modules, the
shapes they give at 3×32×32, and the heads' layers and parameters against a transcription of the
reference's head definitions (``mobilenetv2_self.py``, ``resnet_self.py``), not the suite's own.

The reference has no ShuffleNetV2 student: its heads follow ``resnet_self.py``'s rule on
ShuffleNetV2's stages (:meth:`kdbench.models.shufflenetv2.ShuffleNetV2.self_distillation_heads`).
"""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from torch import nn

from kdbench.models import create_model
from kdbench.models.intermediate import SelfDistillingModel

NUM_CLASSES = 100
SHAPE = (3, 32, 32)


# -- the reference's head definitions, transcribed ---------------------------------------------------


def sep_conv(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """``SepConv`` of both reference files (their defaults differ: stride 1 in mobilenetv2_self.py,
    2 in resnet_self.py)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, kernel_size=3, stride=stride, padding=1, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_in, kernel_size=1, padding=0, bias=False),
        nn.BatchNorm2d(c_in, affine=True),
        nn.ReLU(inplace=False),
        nn.Conv2d(c_in, c_in, kernel_size=3, stride=1, padding=1, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_out, kernel_size=1, padding=0, bias=False),
        nn.BatchNorm2d(c_out, affine=True),
        nn.ReLU(inplace=False),
    )


def mobilenetv2_self_heads(class_num: int) -> list[nn.Sequential]:
    """mobilenetv2_self.py's attention1-3, scala1-3 and conv_1out-conv_3out, shallowest first."""
    attention = [nn.Sequential(sep_conv(c, c, 1), nn.BatchNorm2d(c), nn.ReLU(), nn.Sigmoid()) for c in (24, 64, 160)]
    scala1 = nn.Sequential(
        sep_conv(24, 64, stride=2),
        sep_conv(64, 160, 1),
        sep_conv(160, 320, 1),
        sep_conv(320, 640, 1),
        sep_conv(640, 1280, 1),
        nn.AvgPool2d(5, 5),
    )
    scala2 = nn.Sequential(
        sep_conv(64, 160, 1), sep_conv(160, 320, 1), sep_conv(320, 640, 1), sep_conv(640, 1280, 1), nn.AvgPool2d(5, 5)
    )
    scala3 = nn.Sequential(sep_conv(160, 320, 1), sep_conv(320, 640, 1), sep_conv(640, 1280, 1), nn.AvgPool2d(5, 5))
    out = [nn.Conv2d(1280, class_num, 1) for _ in range(3)]
    return [nn.Sequential(a, s, o) for a, s, o in zip(attention, [scala1, scala2, scala3], out, strict=True)]


def resnet_self_heads(stage_widths: tuple[int, ...], num_classes: int) -> list[nn.Sequential]:
    """resnet_self.py's attention, scala and fc modules, shallowest first, one head per stage but the
    last, for stage widths (64, 128, 256, 512) × block.expansion; its SepConv strides are 2, its
    gates upsample ×2."""
    heads = []
    for i, c in enumerate(stage_widths[:-1]):
        attention = nn.Sequential(
            sep_conv(c, c, 2), nn.BatchNorm2d(c), nn.ReLU(), nn.Upsample(scale_factor=2, mode="bilinear"), nn.Sigmoid()
        )
        widths = stage_widths[i:]
        scala = nn.Sequential(*(sep_conv(a, b, 2) for a, b in pairwise(widths)), nn.AvgPool2d(4, 4))
        heads.append(nn.Sequential(attention, scala, nn.Linear(stage_widths[-1], num_classes)))
    return heads


def shufflenetv2_heads(num_classes: int) -> list[nn.Sequential]:
    """No reference network: resnet_self.py's heads on ShuffleNetV2's stages (116, 232, then the
    1024 features its own head reads, as both reference students widen to theirs)."""
    return resnet_self_heads((116, 232, 1024), num_classes)


# -- what each network's heads must be ----------------------------------------------------------------

PLACEMENT = {
    # mobilenetv2_self.py: after stage2 (blocks 1-2), stage4 (blocks 6-9) and stage6 (blocks 13-15)
    "mobilenetv2": (["blocks.2", "blocks.9", "blocks.15"], [(24, 17, 17), (64, 5, 5), (160, 5, 5)]),
    # resnet_self.py: the outputs of layer1 (blocks 0-2), layer2 (3-6) and layer3 (7-12), after their ReLU
    "resnet50": (["stages.2", "stages.6", "stages.12"], [(256, 32, 32), (512, 16, 16), (1024, 8, 8)]),
    # the last units of the first two of its three stages (4 and 8 units)
    "shufflenetv2": (["units.3", "units.11"], [(116, 16, 16), (232, 8, 8)]),
}

REFERENCE_HEADS = {
    "mobilenetv2": lambda: mobilenetv2_self_heads(NUM_CLASSES),
    "resnet50": lambda: resnet_self_heads((256, 512, 1024, 2048), NUM_CLASSES),
    "shufflenetv2": lambda: shufflenetv2_heads(NUM_CLASSES),
}

# the transcriptions' totals, so that a slip in them shows too (the issue: ~1.7 M per MobileNetV2 head)
REFERENCE_PARAMETERS = {"mobilenetv2": 5_404_428, "resnet50": 14_721_324, "shufflenetv2": 987_224}


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def layers(module: nn.Module) -> list[tuple]:
    """Every convolution and linear layer in order: its widths, kernel, stride and groups. The
    reference's 1×1 convolution classifier counts as the linear layer it equals."""
    found = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.bias is not None:
            found.append(("linear", m.in_channels, m.out_channels))
        elif isinstance(m, nn.Conv2d):
            found.append(("conv", m.in_channels, m.out_channels, m.kernel_size, m.stride, m.groups))
        elif isinstance(m, nn.Linear):
            found.append(("linear", m.in_features, m.out_features))
    return found


@pytest.fixture(scope="module", params=sorted(PLACEMENT))
def tapped(request):
    torch.manual_seed(0)
    model = create_model(request.param, NUM_CLASSES, SHAPE)
    return request.param, model, SelfDistillingModel(model, SHAPE, NUM_CLASSES)


def test_the_heads_read_the_outputs_of_the_references_stages(tapped):
    name, model, network = tapped
    taps, shapes = PLACEMENT[name]
    assert network.tap_names == taps
    seen: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(tap).register_forward_hook(lambda _m, _i, out, tap=tap: seen.setdefault(tap, out))
        for tap in taps
    ]
    try:
        network.eval()
        with torch.no_grad():
            outputs = network(torch.randn(2, *SHAPE))
    finally:
        for handle in handles:
            handle.remove()
    assert [tuple(seen[tap].shape[1:]) for tap in taps] == shapes
    assert len(outputs) == len(taps) + 1 and all(o.shape == (2, NUM_CLASSES) for o in outputs)
    # each head reads its tap: [final, deepest, ..., shallowest]
    with torch.no_grad():
        for head, tap, out in zip(network.aux_heads, taps, reversed(outputs[1:]), strict=True):
            assert torch.allclose(head(seen[tap]), out, atol=1e-5)
    if name == "resnet50":  # the blocks' outputs, after their ReLU (not the next block's BatchNorm)
        assert all(seen[tap].min() >= 0 for tap in taps)


def test_the_heads_stack_the_references_layers(tapped):
    name, _, network = tapped
    reference = REFERENCE_HEADS[name]()
    assert [layers(head) for head in network.aux_heads] == [layers(head) for head in reference]
    assert parameters(nn.ModuleList(reference)) == REFERENCE_PARAMETERS[name]
    assert parameters(network.aux_heads) == parameters(nn.ModuleList(reference))
