"""Shared fixtures: tiny datasets written in their real on-disk formats."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once, saying what to do, when the strict editable install (README) predates a module:
    its link tree then lacks that file, and the imports fail far from the cause."""
    import kdbench

    installed = Path(kdbench.__file__).parent
    if installed == ROOT / "bench":
        return  # imported from the checkout itself
    for folder, package in (
        (ROOT / "bench", installed),
        (ROOT / "attacks", installed / "attacks"),
        (ROOT / "defenses", installed / "defenses"),
    ):
        sources = [*folder.rglob("*.py"), *folder.glob("conf/**/*.yaml"), *folder.glob("paper_results/*.csv")]
        for source in sources:
            if not (package / source.relative_to(folder)).exists():
                pytest.exit(
                    f"{source.relative_to(ROOT)} is not in the installed kdbench ({installed}): a module added "
                    f"since the install; run the README's install again (pip install -e ... "
                    f"--config-settings editable_mode=strict)",
                    returncode=4,
                )


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _pickle(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


@pytest.fixture
def write_cifar(monkeypatch):
    """Write a tiny CIFAR-10 or CIFAR-100 in the official python-pickle layout under ``root``.

    torchvision verifies each file's MD5 against the official archive's; the test points those
    checksums at its own tiny files, so the loading code under test is torchvision's, unchanged.
    Returns the (train, test) images as N×32×32×3 uint8 arrays and labels, for comparison.
    """
    import torchvision

    def write(root: Path, kind: str, n_train: int = 20, n_test: int = 10, seed: int = 0):
        rng = np.random.default_rng(seed)
        cls = torchvision.datasets.CIFAR10 if kind == "cifar10" else torchvision.datasets.CIFAR100
        num_classes = 10 if kind == "cifar10" else 100
        label_key = "labels" if kind == "cifar10" else "fine_labels"
        folder = root / cls.base_folder
        folder.mkdir(parents=True)
        splits = {}

        def batch(n: int) -> tuple[np.ndarray, list[int]]:
            images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, num_classes, size=n)]
            return images, labels

        def dump(name: str, images: np.ndarray, labels: list[int]) -> None:
            # the official files store rows of 3072 bytes: the red plane, then green, then blue
            rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
            _pickle(folder / name, {"data": rows, label_key: labels, "batch_label": name})

        train_parts = [batch(n_train // len(cls.train_list)) for _ in cls.train_list]
        for (name, _), (images, labels) in zip(cls.train_list, train_parts, strict=True):
            dump(name, images, labels)
        test_images, test_labels = batch(n_test)
        dump(cls.test_list[0][0], test_images, test_labels)
        names_key = cls.meta["key"]
        _pickle(folder / cls.meta["filename"], {names_key: [f"class{i}" for i in range(num_classes)]})

        monkeypatch.setattr(cls, "train_list", [[n, _md5(folder / n)] for n, _ in cls.train_list])
        monkeypatch.setattr(cls, "test_list", [[n, _md5(folder / n)] for n, _ in cls.test_list])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / cls.meta["filename"])})
        splits["train"] = (
            np.concatenate([p[0] for p in train_parts]),
            [label for p in train_parts for label in p[1]],
        )
        splits["test"] = (test_images, test_labels)
        return splits

    return write


@pytest.fixture
def small_cifar10(monkeypatch):
    """A writer of CIFAR-10's JPEG layout (train/<class>/*.jpg, test/<class>/*.jpg) with 3 + 2 images
    per class under a folder, each a solid colour that encodes its split, class and index; the layout
    checks, which expect a complete copy, are told to expect that many."""
    from PIL import Image

    from kdbench.data import cifar

    per_class = {"train": 3, "test": 2}
    monkeypatch.setattr(cifar, "CIFAR10_SIZES", {split: n * 10 for split, n in per_class.items()})

    def write(root: Path) -> None:
        for split, count in per_class.items():
            for label, name in enumerate(cifar.CIFAR10_CLASSES):
                folder = root / split / name
                folder.mkdir(parents=True)
                for i in range(count):
                    colour = (label * 25, i * 60, 200 if split == "train" else 40)
                    Image.new("RGB", (32, 32), colour).save(folder / f"{i:04d}.jpg", quality=95)

    return write
