"""Tiny-ImageNet and ImageFolder datasets, read from tiny trees written here in the real layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdbench.cli import main
from kdbench.data import folders as image_folders
from kdbench.data.catalogue import load_dataset
from kdbench.data.images import DatasetConfig
from kdbench.errors import ConfigError, DatasetNotFoundError

# class ids as in wnids.txt, which is not sorted; ImageFolder (and the suite) number them sorted
WNIDS = ["n09246464", "n01443537", "n02124075"]
TRAIN_PER_CLASS = 3
VAL_CLASSES = ["n02124075", "n09246464", "n01443537", "n02124075", "n01443537"]  # in annotation order


def colour(label: int) -> tuple[int, int, int]:
    return (40 + 80 * label, 200 - 60 * label, 30 + 90 * label)


def label_of(wnid: str) -> int:
    return sorted(WNIDS).index(wnid)


def write_tiny_imagenet(root: Path) -> Path:
    """tiny-imagenet-200/ as the official zip extracts it, with solid-colour images (one colour per class).

    One training image is greyscale, as some of the real ones are.
    """
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\tthing {i}\n" for i, w in enumerate(sorted(WNIDS))))
    for wnid in WNIDS:
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i in range(TRAIN_PER_CLASS):
            Image.new("RGB", (64, 64), colour(label_of(wnid))).save(images / f"{wnid}_{i}.JPEG", format="JPEG")
        boxes = "".join(f"{wnid}_{i}.JPEG\t0\t0\t63\t63\n" for i in range(TRAIN_PER_CLASS))
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(boxes)
    Image.new("L", (64, 64), 128).save(base / "train" / WNIDS[0] / "images" / f"{WNIDS[0]}_grey.JPEG", format="JPEG")
    (base / "val" / "images").mkdir(parents=True)
    lines = []
    for k, wnid in enumerate(VAL_CLASSES):
        Image.new("RGB", (64, 64), colour(label_of(wnid))).save(base / "val" / "images" / f"val_{k}.JPEG", "JPEG")
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63\n")
    (base / "val" / "val_annotations.txt").write_text("".join(lines))
    (base / "test" / "images").mkdir(parents=True)  # unlabelled: never read
    Image.new("RGB", (64, 64), (0, 0, 0)).save(base / "test" / "images" / "test_0.JPEG", "JPEG")
    return base


def mean_colours(x: torch.Tensor) -> np.ndarray:
    return x.float().mean(dim=(2, 3)).numpy()


def test_tiny_imagenet_reads_the_download_layout(tmp_path):
    write_tiny_imagenet(tmp_path)
    data = load_dataset(DatasetConfig(name="tinyimagenet", data_root=str(tmp_path)))
    assert data.num_classes == 3
    assert data.input_shape == (3, 64, 64)
    assert (len(data.train), len(data.test)) == (3 * TRAIN_PER_CLASS + 1, len(VAL_CLASSES))
    # classes numbered by sorted class id; every image carries its class's colour
    assert torch.bincount(data.train.y).tolist() == [3, 3, 4]  # the grey image is WNIDS[0]'s, class 2
    grey = data.train.x.float().std(dim=1).amax(dim=(1, 2)) < 2  # R = G = B
    assert grey.sum() == 1 and data.train.y[grey].item() == label_of(WNIDS[0])
    colours = np.array([colour(int(y)) for y in data.train.y])
    assert np.abs(mean_colours(data.train.x) - colours)[~grey.numpy()].max() < 3
    # the validation split is the test split, labelled from val_annotations.txt, in its order
    assert data.test.y.tolist() == [label_of(w) for w in VAL_CLASSES]
    assert np.abs(mean_colours(data.test.x) - np.array([colour(label_of(w)) for w in VAL_CLASSES])).max() < 3


def test_tiny_imagenet_data_root_may_be_the_extracted_folder_itself(tmp_path):
    base = write_tiny_imagenet(tmp_path)
    data = load_dataset(DatasetConfig(name="tinyimagenet", data_root=str(base)))
    assert len(data.test) == len(VAL_CLASSES)


def test_tiny_imagenet_validation_folder_reorganised_by_class_is_read_too(tmp_path):
    base = write_tiny_imagenet(tmp_path)
    for k, wnid in enumerate(VAL_CLASSES):
        (base / "val" / wnid / "images").mkdir(parents=True, exist_ok=True)
        (base / "val" / "images" / f"val_{k}.JPEG").rename(base / "val" / wnid / "images" / f"val_{k}.JPEG")
    (base / "val" / "val_annotations.txt").unlink()
    data = load_dataset(DatasetConfig(name="tinyimagenet", data_root=str(tmp_path)))
    assert sorted(data.test.y.tolist()) == sorted(label_of(w) for w in VAL_CLASSES)


def test_missing_tiny_imagenet_says_where_it_looked_and_how_to_fetch_it(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=rf"no tiny-imagenet-200/.*under {tmp_path}.*download=true"):
        load_dataset(DatasetConfig(name="tinyimagenet", data_root=str(tmp_path)))


def test_an_annotation_naming_an_unknown_class_is_a_clear_error(tmp_path):
    base = write_tiny_imagenet(tmp_path)
    with open(base / "val" / "val_annotations.txt", "a") as f:
        f.write("val_0.JPEG\tn99999999\t0\t0\t63\t63\n")
    with pytest.raises(DatasetNotFoundError, match=r"line 6: class 'n99999999' is not in wnids.txt"):
        load_dataset(DatasetConfig(name="tinyimagenet", data_root=str(tmp_path)))


def test_images_are_decoded_once_and_again_only_when_the_files_change(tmp_path, monkeypatch):
    base = write_tiny_imagenet(tmp_path)
    cfg = DatasetConfig(name="tinyimagenet", data_root=str(tmp_path))
    first = load_dataset(cfg)
    kept = list((base / ".kdbench-decoded").glob("*.pt"))
    assert len(kept) == 1

    def no_decoding(path, size):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(image_folders, "decode_image", no_decoding)
    again = load_dataset(cfg)
    assert torch.equal(again.train.x, first.train.x) and torch.equal(again.test.y, first.test.y)

    extra = base / "train" / WNIDS[1] / "images" / f"{WNIDS[1]}_new.JPEG"
    Image.new("RGB", (64, 64), colour(label_of(WNIDS[1]))).save(extra, "JPEG")
    with pytest.raises(AssertionError, match=r"decoded .* again"):
        load_dataset(cfg)
    monkeypatch.undo()
    assert len(load_dataset(cfg).train) == len(first.train) + 1
    assert [p.name for p in (base / ".kdbench-decoded").glob("*.pt")] != [kept[0].name]  # stale one replaced
    assert len(list((base / ".kdbench-decoded").glob("*.pt"))) == 1


# -- ImageFolder layout --------------------------------------------------------------------------


def write_folder(root: Path, test_name: str = "test", size: tuple[int, int] = (8, 8)) -> None:
    """train/<class>/ and <test_name>/<class>/ of lossless PNGs, class k filled with colour(k)."""
    for split, per_class in (("train", 4), (test_name, 2)):
        for label, name in enumerate(["cat", "dog"]):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", size, colour(label)).save(folder / f"{i}.png")


def test_folder_reads_train_and_test_class_folders(tmp_path):
    write_folder(tmp_path)
    data = load_dataset(DatasetConfig(name="folder", data_root=str(tmp_path)))
    assert data.num_classes == 2 and data.input_shape == (3, 8, 8)
    assert data.train.y.tolist() == [0] * 4 + [1] * 4 and data.test.y.tolist() == [0, 0, 1, 1]
    expected = torch.tensor([colour(int(y)) for y in data.test.y], dtype=torch.uint8)
    assert torch.equal(data.test.x, expected[:, :, None, None].expand(-1, -1, 8, 8))


def test_folder_falls_back_to_val_for_the_test_split(tmp_path):
    write_folder(tmp_path, test_name="val")
    assert len(load_dataset(DatasetConfig(name="folder", data_root=str(tmp_path))).test) == 4


def test_folder_images_of_several_sizes_need_image_size(tmp_path):
    write_folder(tmp_path)
    Image.new("RGB", (12, 10), colour(0)).save(tmp_path / "train" / "cat" / "big.png")
    with pytest.raises(ConfigError, match=r"big.png is 12×10.*set dataset.image_size=N"):
        load_dataset(DatasetConfig(name="folder", data_root=str(tmp_path)))


def test_image_size_resizes_the_shorter_side_and_crops_the_centre(tmp_path):
    write_folder(tmp_path)
    # 16×8: red quarter, green half, blue quarter; resized to 16×8 (no change) and cropped to the green middle
    stripes = np.zeros((8, 16, 3), dtype=np.uint8)
    stripes[:, :4] = (255, 0, 0)
    stripes[:, 4:12] = (0, 255, 0)
    stripes[:, 12:] = (0, 0, 255)
    Image.fromarray(stripes).save(tmp_path / "train" / "cat" / "wide.png")
    data = load_dataset(DatasetConfig(name="folder", data_root=str(tmp_path), image_size=8))
    assert data.input_shape == (3, 8, 8)
    wide = data.train.x[4]  # cat's images in sorted order: 0..3.png, then wide.png
    assert torch.equal(wide, torch.tensor([0, 255, 0], dtype=torch.uint8)[:, None, None].expand(3, 8, 8))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda root: (root / "test" / "bird").mkdir(), r"test has classes that train/ lacks: bird"),
        (lambda root: (root / "train" / "cat").rename(root / "cat"), r"has 1 class folder\(s\), needs 2"),
        (lambda root: (root / "test").rename(root / "elsewhere"), r"must hold train/<class>/\* and test/<class>/\*"),
    ],
)
def test_folder_layout_mistakes_are_clear_errors(tmp_path, change, message):
    write_folder(tmp_path)
    change(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=message):
        load_dataset(DatasetConfig(name="folder", data_root=str(tmp_path)))


def test_the_whole_suite_runs_on_a_folder_of_images(tmp_path):
    write_folder(tmp_path / "images")
    results = tmp_path / "results"
    # one epoch reaches none of the default multistep milestones (80, 120): a constant rate instead
    args = [f"data_root={tmp_path / 'images'}", "teacher=digits_cnn", "student=[mlp]", "train.epochs=1"]
    args.append("train.schedule=constant")
    # every attack runs; the data-free ones at a token budget (their budgets are tested on digits)
    args += ["attack.deepinversion.pool_size=256", "attack.deepinversion.steps=5", "attack.deepinversion.kd_epochs=2"]
    args += ["attack.dafl.epochs=1", "attack.dafl.iters_per_epoch=10"]
    args += ["attack.fast_dfkd.epochs=1", "attack.fast_dfkd.warmup=1", "attack.fast_dfkd.kd_steps=2"]
    args += ["attack.dfme.budget=3584", "attack.dfme.generator_width=8"]  # 2 iterations of 1,792 queries
    assert main(["run", "all", "dataset=folder", *args, "quiet=true", f"results_dir={results}"]) == 0
    assert "| normal |" in (results / "folder" / "leaderboard.md").read_text()
