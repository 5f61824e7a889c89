"""Datasets read from image files: Tiny-ImageNet in its download layout, and any ImageFolder tree.

Decoding a hundred thousand JPEGs takes minutes, so each dataset is decoded once into uint8 tensors
and kept in ``.kdbench-decoded/`` beside its images, keyed by every file read (path, class, size,
modification time) and the options that change the pixels. Later runs load that file; adding,
removing or editing an image makes a new key, and the stale file is replaced.
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from kdbench.data.images import DatasetConfig, ImageData, Split, channel_stats, register_dataset, require_root
from kdbench.errors import BenchError, ConfigError, DatasetNotFoundError
from kdbench.store.atomic import atomic_write

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
    for path in found:
        _check_regular_file(path)
    return sorted(found)


def _check_regular_file(path: Path) -> None:
    """Refuse, before anything is read, a name that is no image file: a link to nothing, or a FIFO,
    socket or device (reading a FIFO would wait forever)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise BenchError(f"image file {path} is a link to nothing; remove it or point it at an image") from None
    except OSError as err:
        raise BenchError(f"cannot read image file {path}: {err.strerror}") from None
    if not stat.S_ISREG(mode):
        raise BenchError(f"{path} is not a regular file (a FIFO, socket or device); a dataset folder holds image files")


def class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def decode_image(path: Path | IO[bytes], size: int | None) -> np.ndarray:
    """One image as H×W×3 uint8 RGB; with ``size``, resized (shorter side) and centre-cropped to size×size.

    The resize and crop are torchvision's ``Resize(size)`` and ``CenterCrop(size)``.
    """
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    # DecompressionBombError: a header claiming far more pixels than any photo has
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as err:
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


def decode_all(sources: list[Path | IO[bytes]], size: int | None, where: Path | str) -> torch.Tensor:
    """Decode every image (a path or an open file) into one N×3×H×W uint8 tensor, on a thread per
    core (PIL releases the GIL while it decodes); without ``size`` all must share one size."""
    with ThreadPoolExecutor(max_workers=max(1, len(os.sched_getaffinity(0)))) as pool:
        images = list(pool.map(lambda source: decode_image(source, size), sources))
    first = images[0]
    for source, image in zip(sources, images, strict=True):
        if image.shape != first.shape:
            raise ConfigError(
                f"images differ in size under {where}: {_name(source)} is {image.shape[1]}×{image.shape[0]}, "
                f"{_name(sources[0])} is {first.shape[1]}×{first.shape[0]}; set dataset.image_size=N to resize "
                f"every image to N×N"
            )
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def _name(source: Path | IO[bytes]) -> str:
    return str(source) if isinstance(source, Path) else getattr(source, "name", "an image")


def decode_split(files: LabelledFiles, size: int | None) -> Split:
    return Split(decode_all(list(files.paths), size, files.paths[0].parent.parent), torch.tensor(files.labels))


class DecodedStore:
    """A folder of decoded splits, one ``.pt`` file per version of a dataset: a newer version (other
    files, other options) replaces the file of the older one."""

    def __init__(self, folder: Path, prefix: str = "") -> None:
        self.folder, self.prefix = folder, prefix

    def load_or_make(self, stem: str, key: str, make: Callable[[], dict[str, Split]]) -> dict[str, Split]:
        """The splits kept under ``stem`` and ``key``, or ``make()``'s, then kept (stale versions removed)."""
        path = self.folder / f"{self.prefix}{stem}{key}.pt"
        if path.exists():
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
                names = sorted({name.rsplit("_", 1)[0] for name in payload})
                return {split: Split(payload[f"{split}_x"], payload[f"{split}_y"]) for split in names}
            except Exception:  # unreadable (an interrupted copy, another format): decode again
                pass
        result = make()
        payload = {f"{split}_{part}": getattr(data, part) for split, data in result.items() for part in ("x", "y")}
        try:
            atomic_write(path, lambda f: torch.save(payload, f))
            for stale in path.parent.glob(f"{self.prefix}{stem}*.pt"):
                if stale != path:
                    stale.unlink()
        except OSError as err:
            warnings.warn(
                f"could not keep the decoded images in {path.parent} ({err.strerror}); they will be decoded "
                "again next run",
                stacklevel=2,
            )
        return result


def decoded_folder(root: Path) -> DecodedStore:
    """Where the images under ``root`` are kept decoded: ``root/.kdbench-decoded/`` where ``root`` can be
    written, else the user's cache folder (``$XDG_CACHE_HOME/kdbench/decoded``, named after ``root``),
    so that a read-only copy of a dataset is decoded once too."""
    own = root / DECODED_FOLDER
    if _writable(own if own.is_dir() else root):
        return DecodedStore(own)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kdbench" / "decoded"
    return DecodedStore(cache, hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8] + "-")


def _writable(folder: Path) -> bool:
    """Whether this user may write ``folder`` and its mode allows writing: root may write anywhere,
    but a folder made read-only (a shared copy of a dataset) is left as it is."""
    try:
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)
    except OSError:
        return False


def decoded(root: Path, name: str, splits: dict[str, LabelledFiles], size: int | None) -> dict[str, Split]:
    """The decoded ``splits`` of the files under ``root``, decoded once, then kept (:func:`decoded_folder`)
    under a key of every file read (path, class, size, modification time) and the options."""
    listing = [DECODED_FORMAT, size]
    for split, files in splits.items():
        for path, label in zip(files.paths, files.labels, strict=True):
            stat = path.stat()
            listing.append((split, str(path.relative_to(root)), label, stat.st_size, stat.st_mtime_ns))
    key = hashlib.sha256(repr(listing).encode()).hexdigest()[:16]
    return decoded_folder(root).load_or_make(
        f"{name}-{size or 'native'}-",
        key,
        lambda: {split: decode_split(files, size) for split, files in splits.items()},
    )


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
