"""``dataset=cifar10`` finds CIFAR-10 in each layout it comes in, and says in one line what it
found instead; the real JPEG copy of ../shared/data is read where it is there."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from kdbench.data import cifar
from kdbench.data.catalogue import load_dataset
from kdbench.data.images import DatasetConfig
from kdbench.errors import DatasetNotFoundError

SHARED_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / cifar.CIFAR10_JPEG_ARCHIVE


def load(root: Path, **options) -> object:
    return load_dataset(DatasetConfig(name="cifar10", data_root=str(root), **options))


def test_the_extracted_tree_is_found_at_data_root_or_under_cifar10(tmp_path, small_cifar10):
    small_cifar10(tmp_path / "cifar10")
    data = load(tmp_path)
    assert (len(data.train), len(data.test), data.num_classes, data.input_shape) == (30, 20, 10, (3, 32, 32))
    assert data.train.y.tolist() == [label for label in range(10) for _ in range(3)]
    assert abs(int(data.train.x[3, 0, 0, 0]) - 25) <= 2  # class 1's first image: red 25, as written
    again = load(tmp_path / "cifar10")  # data_root may be the tree itself
    assert torch.equal(again.train.x, data.train.x) and torch.equal(again.test.y, data.test.y)


def test_the_archive_is_read_without_extracting_it_and_gives_the_trees_images(tmp_path, small_cifar10):
    small_cifar10(tmp_path / "tree" / "cifar10")
    with tarfile.open(tmp_path / cifar.CIFAR10_JPEG_ARCHIVE, "w:gz") as tar:
        tar.add(tmp_path / "tree" / "cifar10" / "test", arcname="test")  # test first, as the real archive
        tar.add(tmp_path / "tree" / "cifar10" / "train", arcname="train")
    from_archive = load(tmp_path)
    from_tree = load(tmp_path / "tree")
    for split in ("train", "test"):
        assert torch.equal(getattr(from_archive, split).x, getattr(from_tree, split).x)
        assert torch.equal(getattr(from_archive, split).y, getattr(from_tree, split).y)
    assert list((tmp_path / ".kdbench-decoded").glob("cifar10-jpeg-*.pt"))  # decoded once, kept beside it


def test_a_read_only_copy_is_decoded_once_into_the_users_cache(tmp_path, small_cifar10, monkeypatch):
    small_cifar10(tmp_path / "data" / "cifar10")
    (tmp_path / "data" / "cifar10").chmod(0o555)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    try:
        load(tmp_path / "data")
    finally:
        (tmp_path / "data" / "cifar10").chmod(0o755)
    assert not (tmp_path / "data" / "cifar10" / ".kdbench-decoded").exists()
    assert len(list((tmp_path / "cache" / "kdbench" / "decoded").glob("*-cifar10-native-*.pt"))) == 1


def test_no_layout_is_one_line_naming_every_layout_and_download(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    for expected in ("cifar-10-batches-py/", "dataset.download=true", "cifar10-jpeg.tar.gz", "train/<class>/*.jpg"):
        assert expected in message


def test_a_copy_that_is_not_cifar10_is_refused(tmp_path, small_cifar10):
    small_cifar10(tmp_path)
    (tmp_path / "test" / "ship").rename(tmp_path / "test" / "boat")
    with pytest.raises(DatasetNotFoundError, match=r"classes .*boat.* in test/; CIFAR-10's are airplane"):
        load(tmp_path)
    (tmp_path / "test" / "boat").rename(tmp_path / "test" / "ship")
    (tmp_path / "train" / "cat" / "0000.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"holds 29 train images, CIFAR-10 has 30: an incomplete copy"):
        load(tmp_path)


def test_a_broken_archive_is_one_line(tmp_path):
    (tmp_path / cifar.CIFAR10_JPEG_ARCHIVE).write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DatasetNotFoundError, match=r"^dataset 'cifar10': cannot read .*cifar10-jpeg\.tar\.gz"):
        load(tmp_path)


@pytest.mark.skipif(not SHARED_ARCHIVE.is_file(), reason=f"no {SHARED_ARCHIVE} (../shared/data: CI has it)")
def test_the_shared_jpeg_copy_is_cifar10(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # ../shared is read-only: decode into a fresh cache
    data = load(SHARED_ARCHIVE.parent)
    assert not (SHARED_ARCHIVE.parent / ".kdbench-decoded").exists()  # nothing written beside the archive
    assert len(list((tmp_path / "kdbench" / "decoded").glob("*-cifar10-jpeg-*.pt"))) == 1
    assert (len(data.train), len(data.test), data.num_classes, data.input_shape) == (50_000, 10_000, 10, (3, 32, 32))
    assert np.bincount(data.train.y.numpy()).tolist() == [5_000] * 10
    assert np.bincount(data.test.y.numpy()).tolist() == [1_000] * 10
    # CIFAR-10's per-channel training statistics (0.491, 0.482, 0.447), within what JPEG moves them
    assert data.mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=0.01)
