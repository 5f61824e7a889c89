"""CIFAR-10 and CIFAR-100, in whichever layout ``data_root`` holds them.

CIFAR-10 is read from torchvision's ``cifar-10-batches-py/`` (the official archive, or
``dataset.download=true``) or from a JPEG copy of it: the archive ``cifar10-jpeg.tar.gz`` itself,
read without extracting it, or its extracted tree ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``
(in ``data_root`` or ``data_root/cifar10/``). JPEG is lossy: networks trained on the JPEG copy score
somewhat below figures published on the original pixels. Decoded images are kept as uint8 tensors
(see :func:`kdbench.data.folders.decoded`), so the 60,000 JPEGs are decoded once.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from kdbench.data.folders import LabelledFiles, decode_all, decoded, decoded_folder, image_data, image_files
from kdbench.data.images import DatasetConfig, ImageData, Split, channel_stats, register_dataset, require_root
from kdbench.errors import DatasetNotFoundError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_SIZES = {"train": 50_000, "test": 10_000}  # images per split in every complete copy
CIFAR10_JPEG_ARCHIVE = "cifar10-jpeg.tar.gz"
JPEG_CAVEAT = (
    "CIFAR-10 read from its JPEG copy (lossy): expect accuracies somewhat below figures published on "
    "the original pixels"
)
TORCHVISION_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def _torchvision_cifar(cfg: DatasetConfig, root: Path, cls_name: str, num_classes: int) -> ImageData:
    import torchvision

    folder = TORCHVISION_FOLDERS[cfg.name]
    cls = getattr(torchvision.datasets, cls_name)
    try:
        splits = [cls(str(root), train=train, download=cfg.download) for train in (True, False)]
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted..."
        raise DatasetNotFoundError(
            f"dataset {cfg.name!r}: no complete {folder}/ under {root} ({err}). Extract the official "
            f"archive there, or run with dataset.download=true to let torchvision fetch it"
        ) from None
    train, test = (
        Split(
            torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))),
            torch.as_tensor(ds.targets, dtype=torch.int64),
        )
        for ds in splits
    )
    mean, std = channel_stats(train.x, 255.0)
    return ImageData(cfg.name, train, test, num_classes, mean, std, 255.0, augment=cfg.augment)


def _jpeg_tree(root: Path) -> Path | None:
    """The folder holding the extracted JPEG copy (train/ and test/), if ``root`` or root/cifar10 is one."""
    for candidate in (root, root / "cifar10"):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    return None


def _check_split(where: Path, split: str, classes: list[str], count: int) -> None:
    """Refuse a JPEG copy that is not CIFAR-10's: other classes, or an incomplete split."""
    if sorted(classes) != sorted(CIFAR10_CLASSES):
        raise DatasetNotFoundError(
            f"dataset 'cifar10': {where} has the classes {', '.join(sorted(classes)) or '(none)'} in {split}/; "
            f"CIFAR-10's are {', '.join(CIFAR10_CLASSES)}"
        )
    if count != CIFAR10_SIZES[split]:
        raise DatasetNotFoundError(
            f"dataset 'cifar10': {where} holds {count:,} {split} images, CIFAR-10 has {CIFAR10_SIZES[split]:,}: "
            f"an incomplete copy; extract {CIFAR10_JPEG_ARCHIVE} again"
        )


def _tree_files(root: Path) -> dict[str, LabelledFiles]:
    splits = {}
    for split in CIFAR10_SIZES:
        folder = root / split
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        files = LabelledFiles([], [])
        for label, name in enumerate(CIFAR10_CLASSES):
            paths = image_files(folder / name) if name in classes else []
            files.paths += paths
            files.labels += [label] * len(paths)
        _check_split(folder, split, classes, len(files.paths))
        splits[split] = files
    return splits


def _archive_splits(archive: Path) -> dict[str, Split]:
    """The splits of the JPEG archive, decoded straight from it (members ``[<top>/]<split>/<class>/<file>``)."""
    stat = archive.stat()
    key = hashlib.sha256(repr(("cifar10-jpeg", stat.st_size, stat.st_mtime_ns)).encode()).hexdigest()[:16]

    def decode() -> dict[str, Split]:
        members: dict[str, dict[str, list[tuple[str, bytes]]]] = {split: {} for split in CIFAR10_SIZES}
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    parts = member.name.split("/")
                    if not member.isfile() or len(parts) < 3 or not parts[-1].lower().endswith((".jpg", ".jpeg")):
                        continue
                    split, name = parts[-3], parts[-2]
                    if split in members:
                        blob = tar.extractfile(member)
                        members[split].setdefault(name, []).append((member.name, blob.read() if blob else b""))
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DatasetNotFoundError(f"dataset 'cifar10': cannot read {archive}: {err}") from None
        splits = {}
        for split, by_class in members.items():
            _check_split(archive, split, list(by_class), sum(len(v) for v in by_class.values()))
            labelled = [
                (label, blob)
                for label, name in enumerate(CIFAR10_CLASSES)
                for _, blob in sorted(by_class[name])  # file order within a class, as a tree lists them
            ]
            x = decode_all([io.BytesIO(blob) for _, blob in labelled], None, where=f"{archive} ({split})")
            splits[split] = Split(x, torch.tensor([label for label, _ in labelled], dtype=torch.int64))
        return splits

    return decoded_folder(archive.parent).load_or_make("cifar10-jpeg-", key, decode)


@register_dataset("cifar10")
def load_cifar10(cfg: DatasetConfig) -> ImageData:
    """CIFAR-10 from torchvision's folder, the JPEG archive or its extracted tree, whichever is there."""
    root = require_root(
        cfg,
        f"it must hold {TORCHVISION_FOLDERS['cifar10']}/ or the JPEG copy ({CIFAR10_JPEG_ARCHIVE} or train/, test/)",
    )
    if (root / TORCHVISION_FOLDERS["cifar10"]).is_dir() or cfg.download:
        return _torchvision_cifar(cfg, root, "CIFAR10", 10)
    if (tree := _jpeg_tree(root)) is not None:
        data = image_data("cifar10", decoded(tree, "cifar10", _tree_files(tree), None), 10, cfg.augment)
        return replace(data, caveat=JPEG_CAVEAT)
    if (root / CIFAR10_JPEG_ARCHIVE).is_file():
        data = image_data("cifar10", _archive_splits(root / CIFAR10_JPEG_ARCHIVE), 10, cfg.augment)
        return replace(data, caveat=JPEG_CAVEAT)
    raise DatasetNotFoundError(
        f"dataset 'cifar10': {root} holds neither {TORCHVISION_FOLDERS['cifar10']}/ (torchvision's; or set "
        f"dataset.download=true) nor the JPEG copy ({CIFAR10_JPEG_ARCHIVE}, or its train/<class>/*.jpg and "
        f"test/<class>/*.jpg, also under cifar10/); set dataset.data_root to the folder that holds one"
    )


@register_dataset("cifar100")
def load_cifar100(cfg: DatasetConfig) -> ImageData:
    root = require_root(
        cfg,
        f"it must hold {TORCHVISION_FOLDERS['cifar100']}/ as extracted from the official archive, or add "
        "dataset.download=true",
    )
    return _torchvision_cifar(cfg, root, "CIFAR100", 100)
