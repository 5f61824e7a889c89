"""Datasets read from image files: Tiny-ImageNet in its download layout, and any ImageFolder tree.

Decoding a hundred thousand JPEGs takes minutes, so each dataset is decoded once into uint8 tensors
and kept in ``.kdbench-decoded/`` beside its images, keyed by every file read (path, class, size,
modification time) and the options that change the pixels. Later runs load that file; adding,
removing or editing an image makes a new key, and the stale file is replaced.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from kdbench.store.atomic import atomic_write
from kdbench.data.images import DatasetConfig, ImageData, Split, channel_stats, register_dataset, require_root
from kdbench.errors import BenchError, ConfigError, DatasetNotFoundError
from PIL import Image, UnidentifiedImageError

# torchvision's ImageFolder extensions, compared case-insensitively (Tiny-ImageNet's are ".JPEG")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DECODED_FOLDER = ".kdbench-decoded"
DECODED_FORMAT = 1  # bump when decoding changes, so that files decoded the old way are not reused

TINY_IMAGENET_FOLDER = "tiny-imagenet-200"
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"


@dataclass
class LabelledFiles:
    """A split before decoding: its image files and the class index of each."""

    paths: list[Path]
    labels: list[int]


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder``, recursively and sorted, as torchvision's ImageFolder finds them."""
    found = []
    for dirpath, _, filenames in os.walk(folder, followlinks=True):
        found += [Path(dirpath) / name for name in filenames if name.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def decode_image(path: Path, size: int | None) -> np.ndarray:
    """One image as H×W×3 uint8 RGB; with ``size``, resized (shorter side) and centre-cropped to size×size.

    The resize and crop are torchvision's ``Resize(size)`` and ``CenterCrop(size)``.
    """
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise BenchError(f"cannot decode image {path}: {err}") from None
    if size is not None:
        width, height = image.size
        short, long = sorted((width, height))
        long = int(size * long / short)
        image = image.resize((size, long) if width <= height else (long, size), Image.Resampling.BILINEAR)
        left = round((image.width - size) / 2)
        top = round((image.height - size) / 2)
        image = image.crop((left, top, left + size, top + size))
    return np.array(image)  # a writable copy: torch refuses to wrap read-only arrays


def decode_split(files: LabelledFiles, size: int | None) -> Split:
    """Decode every image into one N×3×H×W uint8 tensor; without ``size`` all must share one size."""
    first = decode_image(files.paths[0], size)
    x = torch.empty((len(files.paths), 3, *first.shape[:2]), dtype=torch.uint8)
    for i, path in enumerate(files.paths):
        image = first if i == 0 else decode_image(path, size)
        if image.shape != first.shape:
            raise ConfigError(
                f"images differ in size: {path} is {image.shape[1]}×{image.shape[0]}, {files.paths[0]} is "
                f"{first.shape[1]}×{first.shape[0]}; set dataset.image_size=N to resize every image to N×N"
            )
        x[i] = torch.from_numpy(image).permute(2, 0, 1)
    return Split(x, torch.tensor(files.labels, dtype=torch.int64))


def decoded(root: Path, name: str, splits: dict[str, LabelledFiles], size: int | None) -> dict[str, Split]:
    """The decoded ``splits``, from ``root/.kdbench-decoded/`` when decoded before, else decoded now and kept."""
    listing = [DECODED_FORMAT, size]
    for split, files in splits.items():
        for path, label in zip(files.paths, files.labels, strict=True):
            stat = path.stat()
            listing.append((split, str(path.relative_to(root)), label, stat.st_size, stat.st_mtime_ns))
    key = hashlib.sha256(repr(listing).encode()).hexdigest()[:16]
    prefix = f"{name}-{size or 'native'}-"
    path = root / DECODED_FOLDER / f"{prefix}{key}.pt"
    if path.exists():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            return {split: Split(payload[f"{split}_x"], payload[f"{split}_y"]) for split in splits}
        except Exception:  # unreadable (an interrupted copy, another format): decode again
            pass
    result = {split: decode_split(files, size) for split, files in splits.items()}
    payload = {f"{split}_{part}": getattr(data, part) for split, data in result.items() for part in ("x", "y")}
    try:
        atomic_write(path, lambda f: torch.save(payload, f))
        for stale in path.parent.glob(f"{prefix}*.pt"):
            if stale != path:
                stale.unlink()
    except OSError as err:
        warnings.warn(
            f"could not keep the decoded images in {path.parent} ({err.strerror}); they will be decoded again next run",
            stacklevel=2,
        )
    return result


def image_data(name: str, splits: dict[str, Split], num_classes: int, augment: bool) -> ImageData:
    mean, std = channel_stats(splits["train"].x, 255.0)
    return ImageData(name, splits["train"], splits["test"], num_classes, mean, std, 255.0, augment=augment)


# -- Tiny-ImageNet ------------------------------------------------------------------------------


def tiny_imagenet_root(cfg: DatasetConfig) -> Path:
    """The ``tiny-imagenet-200/`` folder under ``data_root`` (or ``data_root`` itself), downloaded if allowed."""
    base = require_root(
        cfg, f"it must hold {TINY_IMAGENET_FOLDER}/ as extracted from tiny-imagenet-200.zip, or add download=true"
    )
    for candidate in (base / TINY_IMAGENET_FOLDER, base):
        if (candidate / "wnids.txt").is_file():
            return candidate
    if cfg.download:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(TINY_IMAGENET_URL, str(base), md5=TINY_IMAGENET_MD5)
        return base / TINY_IMAGENET_FOLDER
    raise DatasetNotFoundError(
        f"dataset 'tinyimagenet': no {TINY_IMAGENET_FOLDER}/ (with wnids.txt, train/ and val/) under {base}. "
        f"Extract tiny-imagenet-200.zip there, or run with download=true to fetch it"
    )


def tiny_imagenet_files(root: Path) -> tuple[list[str], dict[str, LabelledFiles]]:
    """Class ids (sorted, as ImageFolder orders them) and the labelled files of train and test.

    The test split is the labelled validation set: ``val/images/*`` with classes from
    ``val/val_annotations.txt``, or ``val/<wnid>/*`` where the validation folder was reorganised.
    """
    wnids = sorted(set((root / "wnids.txt").read_text().split()))
    index = {wnid: i for i, wnid in enumerate(wnids)}
    train = LabelledFiles([], [])
    for wnid in wnids:
        paths = image_files(root / "train" / wnid)
        if not paths:
            raise DatasetNotFoundError(f"dataset 'tinyimagenet': no training images under {root / 'train' / wnid}")
        train.paths += paths
        train.labels += [index[wnid]] * len(paths)
    annotations = root / "val" / "val_annotations.txt"
    test = LabelledFiles([], [])
    if annotations.is_file():
        for number, line in enumerate(annotations.read_text().splitlines(), 1):
            if not line.strip():
                continue
            filename, wnid = line.split("\t")[:2]
            if wnid not in index:
                raise DatasetNotFoundError(f"{annotations} line {number}: class {wnid!r} is not in wnids.txt")
            path = root / "val" / "images" / filename
            if not path.is_file():
                raise DatasetNotFoundError(f"{annotations} line {number}: no image {path}")
            test.paths.append(path)
            test.labels.append(index[wnid])
    elif (root / "val").is_dir():
        for wnid in wnids:
            paths = image_files(root / "val" / wnid) if (root / "val" / wnid).is_dir() else []
            test.paths += paths
            test.labels += [index[wnid]] * len(paths)
    if not test.paths:
        raise DatasetNotFoundError(
            f"dataset 'tinyimagenet': no validation images in {root / 'val'} (expected val/images/ and "
            f"val/val_annotations.txt, as in tiny-imagenet-200.zip)"
        )
    return wnids, {"train": train, "test": test}


@register_dataset("tinyimagenet")
def load_tiny_imagenet(cfg: DatasetConfig) -> ImageData:
    """Tiny-ImageNet (200 classes of 64×64 images) from the official archive's layout."""
    root = tiny_imagenet_root(cfg)
    wnids, files = tiny_imagenet_files(root)
    return image_data("tinyimagenet", decoded(root, "tinyimagenet", files, None), len(wnids), cfg.augment)


# -- any ImageFolder tree ------------------------------------------------------------------------


def folder_files(root: Path) -> tuple[list[str], dict[str, LabelledFiles]]:
    """Classes (train/'s sub-folders, sorted) and the labelled files of train and test (or val)."""
    layout = "train/<class>/* and test/<class>/* (or val/<class>/*)"
    train_dir = root / "train"
    test_dir = next((root / name for name in ("test", "val") if (root / name).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DatasetNotFoundError(f"dataset 'folder': {root} must hold {layout}")
    classes = class_folders(train_dir)
    if len(classes) < 2:
        raise DatasetNotFoundError(f"dataset 'folder': {train_dir} has {len(classes)} class folder(s), needs 2 or more")
    unknown = sorted(set(class_folders(test_dir)) - set(classes))
    if unknown:
        raise DatasetNotFoundError(f"dataset 'folder': {test_dir} has classes that train/ lacks: {', '.join(unknown)}")
    splits = {}
    for split, folder in (("train", train_dir), ("test", test_dir)):
        files = LabelledFiles([], [])
        for label, name in enumerate(classes):
            paths = image_files(folder / name) if (folder / name).is_dir() else []
            if split == "train" and not paths:
                raise DatasetNotFoundError(
                    f"dataset 'folder': no images in {folder / name} (extensions: {', '.join(IMAGE_EXTENSIONS)})"
                )
            files.paths += paths
            files.labels += [label] * len(paths)
        if not files.paths:
            raise DatasetNotFoundError(f"dataset 'folder': no images under {folder}")
        splits[split] = files
    return classes, splits


@register_dataset("folder")
def load_folder(cfg: DatasetConfig) -> ImageData:
    """Your own images in torchvision's ImageFolder layout, read as RGB."""
    root = require_root(cfg, "the folder holding train/<class>/ and test/<class>/ (or val/<class>/)")
    if cfg.image_size is not None and cfg.image_size < 1:
        raise ConfigError(f"dataset.image_size must be a positive number of pixels, got {cfg.image_size}")
    if not root.is_dir():
        raise DatasetNotFoundError(f"dataset 'folder': data_root {root} is not a folder")
    classes, files = folder_files(root)
    return image_data("folder", decoded(root, "folder", files, cfg.image_size), len(classes), cfg.augment)
