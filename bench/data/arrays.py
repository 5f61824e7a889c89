"""The datasets that come as arrays: sklearn's bundled digits and class-conditional synthetic noise.
Importing this module registers them (CIFAR: :mod:`kdbench.data.cifar`)."""

from __future__ import annotations

import numpy as np
import torch

from kdbench.data.images import DatasetConfig, ImageData, Split, channel_stats, register_dataset
from kdbench.errors import ConfigError


@register_dataset("digits")
def load_digits(cfg: DatasetConfig) -> ImageData:
    """sklearn's bundled 8×8 handwritten digits (1,797 images, pixel values 0–16): no download."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = bunch.images.astype(np.uint8)[:, None]  # N×1×8×8, values 0..16
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=cfg.test_fraction, stratify=labels, random_state=0
    )
    train = Split(torch.from_numpy(x_train), torch.from_numpy(y_train))
    test = Split(torch.from_numpy(x_test), torch.from_numpy(y_test))
    mean, std = channel_stats(train.x, 16.0)
    # Flips and shifts turn digits into other digits (or into nothing at 8×8): no augmentation.
    return ImageData("digits", train, test, 10, mean, std, pixel_max=16.0, augment=False)


@register_dataset("synthetic")
def load_synthetic(cfg: DatasetConfig) -> ImageData:
    """Class-conditional noise of any shape: learnable (each class has its own template) and free."""
    if cfg.num_classes < 2:
        raise ConfigError(f"dataset.num_classes must be at least 2, got {cfg.num_classes}")
    if len(cfg.shape) != 3 or min(cfg.shape) < 1:
        raise ConfigError(f"dataset.shape must be [channels, height, width], got {list(cfg.shape)}")
    gen = torch.Generator().manual_seed(0)
    templates = torch.rand(cfg.num_classes, *cfg.shape, generator=gen) * 255

    def split(n: int) -> Split:
        y = torch.arange(n) % cfg.num_classes
        y = y[torch.randperm(n, generator=gen)]
        noise = torch.randn(n, *cfg.shape, generator=gen) * 60
        x = (templates[y] + noise).clamp(0, 255).to(torch.uint8)
        return Split(x, y)

    train, test = split(cfg.train_size), split(cfg.test_size)
    mean, std = channel_stats(train.x, 255.0)
    return ImageData("synthetic", train, test, cfg.num_classes, mean, std, 255.0, augment=cfg.augment)
