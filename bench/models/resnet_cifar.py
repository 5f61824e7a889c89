"""ResNet-18/34/50 with the CIFAR stem (3×3 conv, stride 1, no max-pool), as in the Nasty-Teacher code.

Global average pooling is adaptive, so the same networks take 32×32 (CIFAR) and 64×64
(Tiny-ImageNet) inputs, as the original code does.
"""

from __future__ import annotations

from itertools import accumulate

import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.models.base import Classifier
from kdbench.models.intermediate import HeadPlan, resnet_self_heads
from kdbench.models.registry import register_model


def _projection(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """The shortcut: identity where the shape is kept, else a strided 1×1 convolution with BatchNorm."""
    if stride == 1 and c_in == c_out:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(c_in, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided), 1×1 expand to 4× the planes (He et al., 2016)."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.shortcut = _projection(c_in, c_out, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(Classifier):
    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        blocks_per_stage: list[int],
        num_classes: int,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.blocks_per_stage = list(blocks_per_stage)
        self.stage_channels = [64 * 2**i * block.expansion for i in range(len(blocks_per_stage))]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        stages, c_in = [], 64
        for i, n_blocks in enumerate(blocks_per_stage):
            planes = 64 * 2**i
            for j in range(n_blocks):
                stages.append(block(c_in, planes, stride=2 if (i > 0 and j == 0) else 1))
                c_in = planes * block.expansion
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c_in, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.pool(self.stages(self.stem(x)))

    def self_distillation_heads(self) -> list[HeadPlan]:
        """The skeptical student's heads as ``resnet_self.py`` places them: on the outputs of
        ``layer1``-``layer3``, the last block of each of the first three stages (after its ReLU; this
        network holds every block in one Sequential). On ResNet-50 at 32×32: 256×32×32, 512×16×16,
        1024×8×8. A resolution rule would instead find the next stage's first 1×1 reduction, which
        still runs at the old resolution."""
        ends = list(accumulate(self.blocks_per_stage))  # one past each stage's last block
        return resnet_self_heads([f"stages.{end - 1}" for end in ends[:-1]], self.stage_channels[1:])


@register_model("resnet18")
def resnet18(num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    return ResNetCifar(BasicBlock, [2, 2, 2, 2], num_classes, input_shape[0])


@register_model("resnet34")
def resnet34(num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    return ResNetCifar(BasicBlock, [3, 4, 6, 3], num_classes, input_shape[0])


@register_model("resnet50")
def resnet50(num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    return ResNetCifar(Bottleneck, [3, 4, 6, 3], num_classes, input_shape[0])
