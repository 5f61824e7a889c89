"""The plain CNN student of the Nasty-Teacher paper's CIFAR-10 table.

Three blocks of 3×3 convolution (32, 64, 128 channels, with bias), BatchNorm, 2×2 max-pool and
ReLU, then a 128-unit fully connected layer with BatchNorm and ReLU, and the linear head (the
Stanford CS230 network the Nasty-Teacher code uses, with its dropout rate of 0). The first fully
connected layer reads the whole ⅛-size feature map: 4×4 for 32×32 inputs, 8×8 for 64×64.
"""

from __future__ import annotations

from torch import Tensor, nn

from kdbench.errors import ConfigError
from kdbench.models.base import Classifier
from kdbench.models.registry import register_model

CHANNELS = (32, 64, 128)
HIDDEN = 128


class PlainCNN(Classifier):
    def __init__(self, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = input_shape
        downsample = 2 ** len(CHANNELS)
        if h < downsample or w < downsample:
            raise ConfigError(f"model cnn needs inputs of at least {downsample}×{downsample}, got {h}×{w}")
        layers: list[nn.Module] = []
        for c_out in CHANNELS:
            layers += [nn.Conv2d(c, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.MaxPool2d(2), nn.ReLU(inplace=True)]
            c = c_out
        flat = c * (h // downsample) * (w // downsample)
        self.body = nn.Sequential(
            *layers, nn.Flatten(), nn.Linear(flat, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(inplace=True)
        )
        self.head = nn.Linear(HIDDEN, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body(x)


@register_model("cnn")
def cnn(num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    return PlainCNN(num_classes, input_shape)
