"""The datasets that need no files: sklearn's bundled digits, patches of its two bundled photographs and
class-conditional synthetic noise. Importing this module registers them (CIFAR: :mod:`kdbench.data.cifar`)."""

from __future__ import annotations

import functools

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


PHOTO_PATCH_SIDE = 32
PHOTO_TRAIN_PER_PHOTO, PHOTO_TEST_PER_PHOTO = 2048, 512
PHOTO_TEST_STRIP = 0.25  # the right quarter of each photograph gives the test patches, the rest the training ones
PHOTO_CROP_SIDES = (16, 128)  # a patch's side in the photograph, in pixels, before it is resized


def photo_patch_boxes(
    sizes: list[tuple[int, int]], per_photo: int, test: bool, generator: torch.Generator
) -> list[tuple[int, int, int, int]]:
    """Where each patch is cut: ``(photo, top, left, side)`` for ``per_photo`` squares of each photograph
    of ``sizes`` (height, width), inside its right strip (:data:`PHOTO_TEST_STRIP` of its width) for the
    test split, left of it for the training split."""
    boxes = []
    for photo, (height, width) in enumerate(sizes):
        split_at = int(width * (1 - PHOTO_TEST_STRIP))
        left, right = (split_at, width) if test else (0, split_at)
        for _ in range(per_photo):
            side = int(torch.randint(PHOTO_CROP_SIDES[0], PHOTO_CROP_SIDES[1] + 1, (1,), generator=generator))
            top = int(torch.randint(0, height - side + 1, (1,), generator=generator))
            x0 = int(torch.randint(left, right - side + 1, (1,), generator=generator))
            boxes.append((photo, top, x0, side))
    return boxes


@functools.cache
def _photo_patches() -> tuple[Split, Split]:
    """The fixed training and test patches, cut once per process: every black-box cell that queries
    them loads the dataset again, and cutting 5,120 patches one by one takes about a second."""
    from sklearn.datasets import load_sample_images

    photos = [torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in load_sample_images().images]
    sizes = [(photo.shape[1], photo.shape[2]) for photo in photos]
    gen = torch.Generator().manual_seed(0)

    def patches(per_photo: int, test: bool) -> Split:
        boxes = photo_patch_boxes(sizes, per_photo, test, gen)
        size = (PHOTO_PATCH_SIDE, PHOTO_PATCH_SIDE)
        xs = [
            torch.nn.functional.interpolate(
                photos[photo][None, :, top : top + side, x0 : x0 + side].float(),
                size=size,
                mode="bilinear",
                antialias=True,
            )
            for photo, top, x0, side in boxes
        ]
        x = torch.cat(xs).round().clamp(0, 255).to(torch.uint8)
        order = torch.randperm(len(boxes), generator=gen)
        labels = torch.tensor([photo for photo, *_ in boxes], dtype=torch.int64)
        return Split(x[order], labels[order])

    return patches(PHOTO_TRAIN_PER_PHOTO, test=False), patches(PHOTO_TEST_PER_PHOTO, test=True)


@register_dataset("photos")
def load_photos(cfg: DatasetConfig) -> ImageData:
    """Square patches of the two photographs bundled with scikit-learn (a temple, a flower), 32×32 RGB.

    Natural images from outside every task's distribution, always at hand: the out-of-distribution
    query set of a black-box attacker (``attack.blackbox.source=surrogate surrogate=photos``), as
    Knockoff Nets and adaptive misinformation's attacker query natural images of another kind. The
    label says which photograph a patch comes from; training and test patches come from disjoint
    strips, so the two-class task is a real one. Fixed: 4,096 training and 1,024 test patches, each
    a random square of 16 to 128 pixels resized (antialiased) to 32×32, drawn with seed 0.
    """
    train, test = (Split(split.x.clone(), split.y.clone()) for split in _photo_patches())
    mean, std = channel_stats(train.x, 255.0)
    classes = int(train.y.max()) + 1  # one per photograph
    return ImageData("photos", train, test, classes, mean, std, 255.0, augment=cfg.augment)


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
