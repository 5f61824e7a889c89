"""Pre-activation ResNets of depth 6n+2 for CIFAR ("ResNetC-20/32" in the Nasty-Teacher paper).

Three stages of n blocks with 16, 32, 64 channels (He et al., 2016, "Identity Mappings"); the
projection shortcut is a 1×1 convolution where the shape changes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.errors import ConfigError
from kdbench.models.base import Classifier
from kdbench.models.registry import register_model


class PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNetC(Classifier):
    def __init__(self, depth: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ConfigError(f"ResNetC depth must be 6n+2 (20, 32, 44, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        blocks, c_in = [], 16
        for i, c_out in enumerate((16, 32, 64)):
            for j in range(n):
                blocks.append(PreActBlock(c_in, c_out, stride=2 if (i > 0 and j == 0) else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.final = nn.Sequential(nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(64, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.final(self.blocks(self.stem(x)))


@register_model("resnetc20")
def resnetc20(num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    return PreActResNetC(20, num_classes, input_shape[0])


@register_model("resnetc32")
def resnetc32(num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    return PreActResNetC(32, num_classes, input_shape[0])
