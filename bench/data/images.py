"""Datasets held as uint8 tensors on the run's device, with batched normalisation and augmentation.

Every dataset becomes a :class:`ImageData`: train and test splits of ``uint8`` images (N×C×H×W)
and ``int64`` labels. Batches are cut, augmented (random crop with padding, horizontal flip) and
normalised on the device, so no per-image Python runs in a training step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kdbench.errors import ConfigError, DatasetNotFoundError
from kdbench.plugins.registry import Registry

MAX_CLASSES = 100_000
MAX_SPLIT_SIZE = 10_000_000
MIN_SIDE, MAX_SIDE = 8, 1024  # an image's height and width, in pixels


@dataclass
class DatasetConfig:
    """Options of the ``dataset`` config group (each dataset reads the fields it needs)."""

    name: str = "digits"
    data_root: str | None = None  # folder holding the dataset's files (cifar*, folder datasets)
    download: bool = False  # let torchvision fetch a missing dataset (off: never touch the network)
    augment: bool = False  # random crop (pad 4) + horizontal flip while training
    # folder only: resize each image (shorter side, then centre crop) to image_size × image_size
    image_size: int | None = None
    # synthetic only
    num_classes: int = 10
    shape: list[int] = field(default_factory=lambda: [3, 32, 32])
    train_size: int = 512
    test_size: int = 256
    # digits only: share of the 1,797 images held out for testing (stratified, fixed seed)
    test_fraction: float = 0.2
    # share of the training split set aside (stratified, fixed seed) as a held-out split: nobody
    # trains on it, a black-box attacker may query it (attack.blackbox.source=heldout)
    heldout_fraction: float = 0.0
    # what the network expects (see NORMALIZATIONS): null (the dataset's own training statistics),
    # a name, a pixel range [lo, hi], or {mean: [...], std: [...]} of pixel/pixel_max
    normalize: Any = None

    def __post_init__(self) -> None:
        # Bounds of what can be trained at all: beyond them a value is a typo, which would otherwise
        # fail deep in a loader (sklearn's split, a 160 GB allocation, a negative range).
        for name, value, low, high in (
            ("num_classes", self.num_classes, 2, MAX_CLASSES),
            ("train_size", self.train_size, 1, MAX_SPLIT_SIZE),
            ("test_size", self.test_size, 1, MAX_SPLIT_SIZE),
        ):
            if not low <= value <= high:
                raise ConfigError(f"dataset.{name} must be an integer from {low} to {high}, got {value}")
        if self.image_size is not None and not MIN_SIDE <= self.image_size <= MAX_SIDE:
            raise ConfigError(
                f"dataset.image_size must be an integer from {MIN_SIDE} to {MAX_SIDE} (pixels), or null, "
                f"got {self.image_size}"
            )
        if (
            len(self.shape) != 3
            or not 1 <= self.shape[0] <= 4
            or not all(MIN_SIDE <= v <= MAX_SIDE for v in self.shape[1:])
        ):
            raise ConfigError(
                f"dataset.shape must be [channels, height, width] with 1 to 4 channels and sides from {MIN_SIDE} "
                f"to {MAX_SIDE}, got {self.shape}"
            )
        if not 0.05 <= self.test_fraction <= 0.95:
            raise ConfigError(f"dataset.test_fraction must be from 0.05 to 0.95, got {self.test_fraction}")
        if not 0.0 <= self.heldout_fraction <= 0.9:
            raise ConfigError(f"dataset.heldout_fraction must be from 0 to 0.9, got {self.heldout_fraction}")
        normalization(self.normalize)  # validated now, fitted to the images' channels when loaded


# Named input conventions: per-channel mean and std of pixel/pixel_max (one value: every channel).
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),  # CIFAR-10's training split
    "[0,1]": ((0.0,), (1.0,)),
    "[-1,1]": ((0.5,), (0.5,)),
}
NORMALIZE_HELP = "null (the dataset's own), imagenet, cifar, [0,1], [-1,1], [lo,hi], or {mean: [...], std: [...]}"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def normalization(value: Any) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``dataset.normalize`` as (mean, std) in pixel/pixel_max units; None: the dataset's own."""
    if value is None or value == "default":
        return None
    where = f"dataset.normalize={value!r}"
    if isinstance(value, str):
        key = value.replace(" ", "")
        if key in NORMALIZATIONS:
            return NORMALIZATIONS[key]
        if key.startswith("[") and key.endswith("]"):
            try:
                value = [float(v) for v in key[1:-1].split(",")]
            except ValueError:
                raise ConfigError(f"{where}: unknown; allowed: {NORMALIZE_HELP}") from None
        else:
            raise ConfigError(f"{where}: unknown; allowed: {NORMALIZE_HELP}")
    if isinstance(value, (list, tuple)):  # a pixel range: x/pixel_max ∈ [0, 1] → [lo, hi]
        if len(value) != 2 or not all(_finite(v) for v in value) or not value[1] > value[0]:
            raise ConfigError(f"{where}: a range is [lo, hi] with lo < hi; allowed: {NORMALIZE_HELP}")
        lo, hi = float(value[0]), float(value[1])
        return ((-lo / (hi - lo),), (1.0 / (hi - lo),))
    if isinstance(value, dict) and set(value) == {"mean", "std"}:
        mean, std = value["mean"], value["std"]
        mean = [mean] if not isinstance(mean, (list, tuple)) else list(mean)
        std = [std] if not isinstance(std, (list, tuple)) else list(std)
        if not all(_finite(v) for v in mean + std):
            raise ConfigError(f"{where}: mean and std must be finite numbers; allowed: {NORMALIZE_HELP}")
        if len(mean) != len(std) or not mean or not all(float(v) > 0 for v in std):
            raise ConfigError(f"{where}: mean and std need one value per channel each, std > 0")
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    raise ConfigError(f"{where}: unknown; allowed: {NORMALIZE_HELP}")


def with_normalization(data: ImageData, value: Any) -> ImageData:
    """``data`` normalised as ``dataset.normalize`` says, or a ConfigError if it does not fit its images."""
    stats = normalization(value)
    if stats is None:
        return data
    mean, std = stats
    channels = data.input_shape[0]
    if len(mean) == 1:
        mean, std = mean * channels, std * channels
    if len(mean) != channels:
        raise ConfigError(
            f"dataset.normalize={value!r} gives {len(mean)} channels, but {data.name}'s images have {channels} "
            f"(shape {list(data.input_shape)}); give one value or {channels} per channel"
        )
    return replace(data, mean=tuple(mean), std=tuple(std))


@dataclass
class Split:
    x: Tensor  # uint8, N×C×H×W
    y: Tensor  # int64, N

    def __len__(self) -> int:
        return self.y.shape[0]

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class InputFormat:
    """What a deployed teacher takes: raw images of one shape and pixel range, normalised by its owner.

    An attacker querying the API must send images in this format (public knowledge, like an API's
    documented input size); the normalisation is the owner's preprocessing.
    """

    shape: tuple[int, int, int]
    pixel_max: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 images → float inputs with zero mean and unit variance per channel."""
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x.float() / self.pixel_max - mean) / std


@dataclass
class ImageData:
    name: str
    train: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]  # per channel, of pixel/pixel_max over the training split
    std: tuple[float, ...]
    pixel_max: float = 255.0  # 16 for sklearn's digits
    augment: bool = False
    heldout: Split | None = None  # set aside from the training split (dataset.heldout_fraction)
    caveat: str = ""  # what a reader comparing its figures with published ones must know (a lossy copy)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def input_format(self) -> InputFormat:
        return InputFormat(self.input_shape, self.pixel_max, self.mean, self.std)

    @property
    def device(self) -> torch.device:
        return self.train.x.device

    def to(self, device: torch.device | str) -> ImageData:
        return replace(
            self,
            train=self.train.to(device),
            test=self.test.to(device),
            heldout=None if self.heldout is None else self.heldout.to(device),
        )

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 images → float inputs with zero mean and unit variance per channel."""
        return self.input_format.normalize(x)

    def batches(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        generator: torch.Generator | None = None,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Normalised (and optionally augmented) batches of ``split``, cut on its device."""
        for idx in index_batches(len(split), batch_size, shuffle=shuffle, generator=generator, device=split.x.device):
            yield self.inputs(split, idx, augment=augment, generator=generator), split.y[idx]

    def inputs(self, split: Split, idx: Tensor, *, augment: bool, generator: torch.Generator | None) -> Tensor:
        """The network inputs of examples ``idx`` of ``split``: (augmented and) normalised."""
        x = split.x[idx]
        if augment:
            x = random_crop_flip(x, padding=CROP_PADDING, generator=generator)
        return self.normalize(x)


def index_batches(
    n: int, batch_size: int, *, shuffle: bool, generator: torch.Generator | None, device: torch.device
) -> Iterator[Tensor]:
    """One epoch of example indices in chunks of ``batch_size``, shuffled with ``generator``."""
    order = (
        torch.randperm(n, generator=generator, device="cpu").to(device) if shuffle else torch.arange(n, device=device)
    )
    yield from order.split(batch_size)


CROP_PADDING = 4  # the training augmentation's crop: CIFAR's usual random crop of a 4-pixel padded image


def random_crop_flip(x: Tensor, *, padding: int, generator: torch.Generator | None = None, flip: bool = True) -> Tensor:
    """torchvision's RandomCrop(size, padding) + RandomHorizontalFlip (``flip=False``: the crop
    alone), for a whole batch at once; differentiable with respect to ``x``."""
    return crop_views(x, padding, *random_views(len(x), padding, generator=generator, flip=flip))


def random_views(
    n: int, padding: int, *, generator: torch.Generator | None = None, flip: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """The draws of :func:`random_crop_flip` for ``n`` images, on the CPU: each crop's offsets
    ``(dy, dx)`` in 0..2·padding and whether it is mirrored (never, with ``flip=False``)."""
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    mirror = (torch.rand(n, generator=generator) < 0.5) & flip
    return dy, dx, mirror


def crop_views(x: Tensor, padding: int, dy: Tensor, dx: Tensor, mirror: Tensor) -> Tensor:
    """Each image of ``x`` zero-padded by ``padding``, cropped back to its size at ``(dy, dx)`` and
    mirrored where ``mirror`` says; differentiable with respect to ``x``."""
    n, _, h, w = x.shape
    dy, dx, mirror = dy.to(x.device), dx.to(x.device), mirror.to(x.device)
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # n×h
    cols = dx[:, None] + torch.arange(w, device=x.device)  # n×w
    cols = torch.where(mirror[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # n×h×w×c
    return out.permute(0, 3, 1, 2).contiguous()


DatasetLoader = Callable[[DatasetConfig], ImageData]
DATASETS: Registry[DatasetLoader] = Registry("dataset")
register_dataset = DATASETS.register


def set_aside_heldout(data: ImageData, fraction: float) -> ImageData:
    """Move a stratified ``fraction`` of the training split (fixed seed) into ``heldout``.

    The normalisation statistics stay those of the whole original training split: the owner's
    preprocessing does not depend on what an attacker may later query.
    """
    from sklearn.model_selection import train_test_split

    labels = data.train.y.numpy()
    keep, held = train_test_split(np.arange(len(labels)), test_size=fraction, stratify=labels, random_state=0)
    keep, held = torch.from_numpy(np.sort(keep)), torch.from_numpy(np.sort(held))
    return replace(
        data,
        train=Split(data.train.x[keep], data.train.y[keep]),
        heldout=Split(data.train.x[held], data.train.y[held]),
    )


def convert_images(images: Tensor, pixel_max: float, to: InputFormat) -> Tensor:
    """uint8 images of any shape and pixel range → uint8 images in the format ``to`` (a surrogate's
    images made queryable): luminance for colour → grey, repetition for grey → colour, an
    antialiased bilinear resize, and the pixel range rescaled."""
    channels, height, width = to.shape
    x = images.float()
    if x.shape[1] != channels:
        if channels == 1 and x.shape[1] == 3:
            x = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        elif channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        else:
            raise ConfigError(f"cannot convert {x.shape[1]}-channel images to {channels} channels")
    if tuple(x.shape[2:]) != (height, width):
        x = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", antialias=True)
    return (x * (to.pixel_max / pixel_max)).round().clamp(0, to.pixel_max).to(torch.uint8)


def channel_stats(x: Tensor, pixel_max: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images ``x`` in [0, 1] units (the normalisation a dataset uses)."""
    scaled = x.float() / pixel_max
    mean = scaled.mean(dim=(0, 2, 3))
    std = scaled.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


def require_root(cfg: DatasetConfig, how: str) -> Path:
    """The dataset's ``data_root`` folder, or a one-line error saying what it must hold (``how``)."""
    if not cfg.data_root:
        raise DatasetNotFoundError(f"dataset {cfg.name!r} needs a folder: set dataset.data_root=/path/to/data ({how})")
    return Path(cfg.data_root).expanduser()
