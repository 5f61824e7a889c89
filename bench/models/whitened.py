"""``whitened_cnn``: a CIFAR network for CPUs in the spirit of the airbench family (Jordan, 2024).

Written from the idea, not from airbench's code: a frozen first layer that whitens 2×2 patches, then
three groups of two 3×3 convolutions (the first followed by a 2×2 max-pool), each convolution with
BatchNorm and GELU, a global max-pool and a linear head whose logits are scaled down. Whitening the
input patches (their covariance's eigenvectors, each scaled by 1/√(eigenvalue + ε)) makes the first
steps of SGD as useful as later ones, so the network learns most of what it will in a few epochs.

The whitening is fitted to the first training batch the network sees (``fit_whitening``, called
by its first forward in training mode) and is kept in the state_dict: a loaded network needs no
data. Neither label smoothing nor test-time augmentation is used: a teacher's soft labels are what
KD reads, and both would change them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.errors import ConfigError
from kdbench.models.base import Classifier
from kdbench.models.registry import register_model

PATCH = 2  # the whitened patches are PATCH×PATCH: the stem's kernel, without padding
WHITENING_EPS = 5e-4
LOGIT_SCALE = 1 / 9  # airbench's temperature on the head: small logits early, no softmax saturation


class PatchWhitening(nn.Module):
    """A frozen PATCH×PATCH convolution onto the patches' whitened coordinates, both signs of each."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        features = channels * PATCH * PATCH
        self.register_buffer("weight", torch.zeros(2 * features, channels, PATCH, PATCH))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Fit to the images ``x`` (normalised inputs, N×C×H×W)."""
        c = x.shape[1]
        patches = F.unfold(x.float(), PATCH).transpose(1, 2).reshape(-1, c * PATCH * PATCH).double()
        patches = patches - patches.mean(dim=0)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        basis = (eigenvectors / (eigenvalues + WHITENING_EPS).sqrt()).T.reshape(-1, c, PATCH, PATCH)
        self.weight.copy_(torch.cat([basis, -basis]).to(self.weight.dtype))
        self.fitted.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and not self.fitted:
            self.fit(x)
        return F.conv2d(x, self.weight.to(x.dtype))


def _conv_bn_gelu(c_in: int, c_out: int, *, pool: bool) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, 3, padding="same", bias=False)
    return [conv, *([nn.MaxPool2d(2)] if pool else []), nn.BatchNorm2d(c_out), nn.GELU()]


class WhitenedCNN(Classifier):
    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], widths: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = input_shape
        if min(h, w) < 16:
            raise ConfigError(f"model whitened_cnn needs inputs of at least 16×16, got {h}×{w}")
        self.whiten = PatchWhitening(c)
        layers: list[nn.Module] = []
        c_in = self.whiten.out_channels
        for width in widths:
            layers += [*_conv_bn_gelu(c_in, width, pool=True), *_conv_bn_gelu(width, width, pool=False)]
            c_in = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes, bias=False)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body(self.whiten(x)).amax(dim=(2, 3)) * LOGIT_SCALE


@register_model("whitened_cnn")
def whitened_cnn(num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    return WhitenedCNN(num_classes, input_shape, (48, 96, 192))


@register_model("whitened_cnn_m")
def whitened_cnn_m(num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    """Two-thirds of ``whitened_cnn``'s widths, under half its compute: the CPU matrix's teacher."""
    return WhitenedCNN(num_classes, input_shape, (32, 64, 128))


@register_model("whitened_cnn_s")
def whitened_cnn_s(num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    """A quarter of ``whitened_cnn``'s compute: the matrix's student."""
    return WhitenedCNN(num_classes, input_shape, (24, 48, 96))
