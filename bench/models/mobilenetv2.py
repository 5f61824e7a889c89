"""MobileNetV2 (Sandler et al., 2018) as sized for CIFAR in the Nasty-Teacher code.

The Nasty-Teacher code takes it from weiaicunzai/pytorch-cifar100, which departs from the ImageNet
network in three ways kept here, because the paper's MobileNetV2 figures come from it: the stem is a
1×1 convolution with padding 1 (a 32×32 input becomes 34×34), the stem has stride 1, and only
three stages downsample (the sixth keeps stride 1). Every convolution has a bias. The head is a
linear layer on the pooled 1280 features (the original's 1×1 convolution, same parameters).
"""

from __future__ import annotations

from itertools import accumulate

from torch import Tensor, nn

from kdbench.models.base import Classifier
from kdbench.models.intermediate import HeadPlan
from kdbench.models.registry import register_model

# (expansion t, output channels, blocks, stride of the first block) per stage
STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 1), (6, 320, 1, 1)]
FEATURES = 1280

# The skeptical student's heads as mobilenetv2_self.py (ksouvik52/Skeptical2021) builds them: after
# stages 2, 4 and 6 (1-based, as its stage1..stage7), the (output channels, stride) of each separable
# convolution of its scala1..scala3, all widening to the 1280 features the network's own head reads.
# Its attention gates' separable convolutions keep the resolution (stride 1, no upsampling).
SELF_DISTILLATION_HEADS: list[tuple[int, tuple[tuple[int, int], ...]]] = [
    (2, ((64, 2), (160, 1), (320, 1), (640, 1), (1280, 1))),
    (4, ((160, 1), (320, 1), (640, 1), (1280, 1))),
    (6, ((320, 1), (640, 1), (1280, 1))),
]


class InvertedResidual(nn.Module):
    """1×1 expansion by t, 3×3 depthwise (strided), linear 1×1 projection; identity skip if shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.residual = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, c_out, 1),
            nn.BatchNorm2d(c_out),
        )
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        out = self.residual(x)
        return out + x if self.skip else out


class MobileNetV2(Classifier):
    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 32, 1, padding=1), nn.BatchNorm2d(32), nn.ReLU6(inplace=True))
        blocks, c_in = [], 32
        for expansion, c_out, n_blocks, stride in STAGES:
            for j in range(n_blocks):
                blocks.append(InvertedResidual(c_in, c_out, stride if j == 0 else 1, expansion))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.final = nn.Sequential(
            nn.Conv2d(c_in, FEATURES, 1),
            nn.BatchNorm2d(FEATURES),
            nn.ReLU6(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(FEATURES, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.final(self.blocks(self.stem(x)))

    def self_distillation_heads(self) -> list[HeadPlan]:
        """On the outputs of stages 2, 4 and 6 (their last blocks: 24×17×17, 64×5×5 and 160×5×5 at
        32×32), not where a resolution rule would look (the next stage's first 1×1 expansion, which
        still runs at the old resolution)."""
        ends = list(accumulate(n_blocks for _, _, n_blocks, _ in STAGES))  # one past each stage's last block
        return [
            HeadPlan(f"blocks.{ends[stage - 1] - 1}", convs, gate_stride=1) for stage, convs in SELF_DISTILLATION_HEADS
        ]


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    return MobileNetV2(num_classes, input_shape[0])
