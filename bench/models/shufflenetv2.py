"""ShuffleNetV2 1× (Ma et al., 2018) as sized for CIFAR in the Nasty-Teacher code.

As in weiaicunzai/pytorch-cifar100, where the Nasty-Teacher code takes it from: the stem is a 3×3
convolution with stride 1 and no max-pool, then three stages of 4, 8 and 4 units with 116, 232 and
464 channels, a 1×1 convolution to 1024 channels and global average pooling. Every convolution has
a bias.
"""

from __future__ import annotations

from itertools import accumulate

import torch
from torch import Tensor, nn

from kdbench.models.base import Classifier
from kdbench.models.intermediate import HeadPlan, resnet_self_heads
from kdbench.models.registry import register_model

STAGE_CHANNELS = (116, 232, 464)
UNITS_PER_STAGE = (4, 8, 4)
FEATURES = 1024
STEM = 24


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _pointwise(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _depthwise(channels: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(channels, channels, 3, stride, 1, groups=channels), nn.BatchNorm2d(channels)]


class ShuffleUnit(nn.Module):
    """A downsampling unit (both branches see the whole input) or a basic one (split in halves).

    Either way the branches are concatenated and their channels shuffled across the two groups.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.split = stride == 1 and c_in == c_out
        if self.split:
            half = c_in // 2
            self.shortcut = nn.Sequential()
            self.residual = nn.Sequential(*_pointwise(half, half), *_depthwise(half, 1), *_pointwise(half, half))
        else:
            half = c_out // 2
            self.shortcut = nn.Sequential(*_depthwise(c_in, stride), *_pointwise(c_in, half))
            self.residual = nn.Sequential(*_pointwise(c_in, c_in), *_depthwise(c_in, stride), *_pointwise(c_in, half))

    def forward(self, x: Tensor) -> Tensor:
        if self.split:
            kept, transformed = x.chunk(2, dim=1)
        else:
            kept, transformed = x, x
        return channel_shuffle(torch.cat([self.shortcut(kept), self.residual(transformed)], dim=1), 2)


class ShuffleNetV2(Classifier):
    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, STEM, 3, padding=1), nn.BatchNorm2d(STEM))
        units, c_in = [], STEM
        for c_out, n_units in zip(STAGE_CHANNELS, UNITS_PER_STAGE, strict=True):
            for j in range(n_units):
                units.append(ShuffleUnit(c_in, c_out, stride=2 if j == 0 else 1))
                c_in = c_out
        self.units = nn.Sequential(*units)
        self.final = nn.Sequential(*_pointwise(c_in, FEATURES), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(FEATURES, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.final(self.units(self.stem(x)))

    def self_distillation_heads(self) -> list[HeadPlan]:
        """The skeptical student's heads on the outputs of the first two stages (their last units:
        116×16×16 and 232×8×8 at 32×32). The reference (ksouvik52/Skeptical2021) has no ShuffleNetV2
        student, so this takes ``resnet_self.py``'s rule (a head after every stage but the last,
        halving the resolution once per later stage) and, like both reference students, widens to
        the features the network's own head reads (1024, after the final 1×1 convolution). Like
        both, no head reads the stem (one convolution); a resolution rule would read the stem and
        the next stages' first units instead."""
        ends = list(accumulate(UNITS_PER_STAGE))  # one past each stage's last unit
        return resnet_self_heads([f"units.{end - 1}" for end in ends[:-1]], [*STAGE_CHANNELS[1:-1], FEATURES])


@register_model("shufflenetv2")
def shufflenetv2(num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    return ShuffleNetV2(num_classes, input_shape[0])
