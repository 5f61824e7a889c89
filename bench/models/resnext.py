"""ResNeXt-29 (8×64d) for CIFAR (Xie et al., 2017, "Aggregated Residual Transformations").

As in the Nasty-Teacher code (taken from prlz77/ResNeXt.pytorch, a port of the authors' Torch
model): a 3×3 stem with 64 channels, three stages of three bottlenecks with 256, 512 and 1024
output channels, each bottleneck a 1×1 reduction to ``cardinality × output / widen`` channels, a
grouped 3×3 convolution (cardinality 8) and a 1×1 expansion. Weights start as in that code:
He-normal (fan-out) convolutions, He-normal classifier, zero biases.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.errors import ConfigError
from kdbench.models.base import Classifier
from kdbench.models.registry import register_model

STEM = 64
WIDEN = 4


class ResNeXtBottleneck(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, cardinality: int) -> None:
        super().__init__()
        width = cardinality * c_out // WIDEN
        self.conv_reduce = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(width)
        self.conv_grouped = nn.Conv2d(width, width, 3, stride, 1, groups=cardinality, bias=False)
        self.bn_grouped = nn.BatchNorm2d(width)
        self.conv_expand = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(c_out)
        # As in the original, a projection only where the channels change (the first block of a
        # stage); it carries the stride.
        self.shortcut = nn.Sequential()
        if c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn_reduce(self.conv_reduce(x)))
        out = F.relu(self.bn_grouped(self.conv_grouped(out)))
        out = self.bn_expand(self.conv_expand(out))
        return F.relu(out + self.shortcut(x))


class CifarResNeXt(Classifier):
    def __init__(self, depth: int, cardinality: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 9 != 0:
            raise ConfigError(f"ResNeXt depth must be 9n+2 (29, 38, ...), got {depth}")
        blocks_per_stage = (depth - 2) // 9
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, STEM, 3, 1, 1, bias=False), nn.BatchNorm2d(STEM), nn.ReLU(inplace=True)
        )
        blocks, c_in = [], STEM
        for i, c_out in enumerate((64 * WIDEN, 128 * WIDEN, 256 * WIDEN)):
            for j in range(blocks_per_stage):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(ResNeXtBottleneck(c_in, c_out, stride, cardinality))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c_in, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
        nn.init.kaiming_normal_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.pool(self.blocks(self.stem(x)))


@register_model("resnext29_8x64d")
def resnext29_8x64d(num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    return CifarResNeXt(29, 8, num_classes, input_shape[0])
