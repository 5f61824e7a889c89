import pytest
import torch

from kdbench.data.arrays import PHOTO_CROP_SIDES, PHOTO_TEST_STRIP, photo_patch_boxes
from kdbench.data.catalogue import load_dataset
from kdbench.data.images import DatasetConfig, random_crop_flip
from kdbench.errors import ConfigError, DatasetNotFoundError


def test_digits_is_a_fixed_stratified_split_of_the_real_images():
    data = load_dataset(DatasetConfig(name="digits"))
    assert data.input_shape == (1, 8, 8)
    assert (len(data.train), len(data.test)) == (1437, 360)
    assert data.train.x.dtype == torch.uint8 and int(data.train.x.max()) == 16
    # stratified: every class holds the same share of both splits (within one image)
    train_share = torch.bincount(data.train.y, minlength=10) / len(data.train)
    test_share = torch.bincount(data.test.y, minlength=10) / len(data.test)
    assert torch.allclose(train_share, test_share, atol=1 / 360 + 1e-6)
    # fixed: a second load gives the same split
    again = load_dataset(DatasetConfig(name="digits"))
    assert torch.equal(again.test.x, data.test.x) and torch.equal(again.test.y, data.test.y)


def test_normalised_training_batches_have_zero_mean_and_unit_std():
    data = load_dataset(DatasetConfig(name="digits"))
    x, _ = next(data.batches(data.train, len(data.train)))
    assert x.dtype == torch.float32
    assert x.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert x.std().item() == pytest.approx(1.0, abs=1e-3)


def test_batches_cover_the_split_once_per_epoch_in_a_seeded_order():
    data = load_dataset(DatasetConfig(name="digits"))
    labels = [y for _, y in data.batches(data.train, 100, shuffle=True, generator=torch.Generator().manual_seed(1))]
    assert sum(len(y) for y in labels) == len(data.train)
    assert torch.equal(torch.sort(torch.cat(labels)).values, torch.sort(data.train.y).values)
    again = [y for _, y in data.batches(data.train, 100, shuffle=True, generator=torch.Generator().manual_seed(1))]
    assert all(torch.equal(a, b) for a, b in zip(labels, again, strict=True))


@pytest.mark.parametrize("kind,num_classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_loads_through_torchvision_from_the_official_layout(tmp_path, write_cifar, kind, num_classes):
    written = write_cifar(tmp_path, kind, n_train=20, n_test=10)
    data = load_dataset(DatasetConfig(name=kind, data_root=str(tmp_path)))
    assert data.num_classes == num_classes
    assert data.input_shape == (3, 32, 32)
    assert (len(data.train), len(data.test)) == (20, 10)
    images, labels = written["test"]
    assert torch.equal(data.test.x, torch.from_numpy(images.transpose(0, 3, 1, 2)))
    assert data.test.y.tolist() == labels
    assert data.train.y.tolist() == written["train"][1]


@pytest.mark.parametrize("kind,folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_missing_cifar_folder_is_a_clear_error(tmp_path, kind, folder):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(DatasetConfig(name=kind, data_root=str(tmp_path)))
    assert all(part in str(err.value) for part in (folder, str(tmp_path), "download=true"))


def test_cifar_without_data_root_says_how_to_set_it():
    with pytest.raises(DatasetNotFoundError, match="data_root="):
        load_dataset(DatasetConfig(name="cifar10", data_root=None))


def test_synthetic_data_has_the_asked_shape_and_classes():
    data = load_dataset(DatasetConfig(name="synthetic", num_classes=7, shape=[3, 16, 12], train_size=70, test_size=14))
    assert data.input_shape == (3, 16, 12)
    assert data.num_classes == 7
    assert sorted(set(data.train.y.tolist())) == list(range(7))


def test_photos_are_fixed_patches_of_the_two_bundled_photographs_from_disjoint_strips():
    a, b = (load_dataset(DatasetConfig(name="photos")) for _ in range(2))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x)  # no randomness left
    assert a.train.x.shape == (4096, 3, 32, 32) and a.test.x.shape == (1024, 3, 32, 32)
    assert a.num_classes == 2 and a.train.y.bincount().tolist() == [2048, 2048]
    assert a.test.y.bincount().tolist() == [512, 512]
    # no test patch repeats a training one: they come from separate strips of each photograph
    train_rows = {tuple(row) for row in a.train.x.flatten(1).tolist()}
    assert not any(tuple(row) in train_rows for row in a.test.x.flatten(1).tolist())


@pytest.mark.parametrize("seed", range(3))
def test_photo_patches_lie_inside_their_splits_strip_of_the_photograph(seed):
    sizes = [(427, 640), (300, 520)]  # the bundled photographs' size; a smaller one whose test strip is 130 wide
    for test in (False, True):
        boxes = photo_patch_boxes(sizes, 300, test, torch.Generator().manual_seed(seed))
        assert [photo for photo, *_ in boxes] == [0] * 300 + [1] * 300
        for photo, top, left, side in boxes:
            height, width = sizes[photo]
            split_at = int(width * (1 - PHOTO_TEST_STRIP))
            assert PHOTO_CROP_SIDES[0] <= side <= min(PHOTO_CROP_SIDES[1], height)
            assert top >= 0 and top + side <= height
            # a test patch lies wholly in the right strip, a training patch wholly left of it
            assert (split_at <= left and left + side <= width) if test else (left >= 0 and left + side <= split_at)


def test_synthetic_rejects_impossible_shapes():
    with pytest.raises(ConfigError, match=r"dataset.shape must be \[channels, height, width\]"):
        load_dataset(DatasetConfig(name="synthetic", shape=[32, 32]))


def test_random_crop_flip_returns_padded_crops_and_mirror_images():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4) + 1
    out = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, dy : dy + 4, dx : dx + 4] for dy in range(5) for dx in range(5)]
        candidates = windows + [w.flip(-1) for w in windows]
        assert any(torch.equal(out[i], w) for w in candidates)


def test_random_crop_flip_moves_and_flips_some_images():
    x = torch.randint(1, 255, (256, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(x, padding=4, generator=torch.Generator().manual_seed(0))
    unchanged = sum(torch.equal(out[i], x[i]) for i in range(256))
    flipped_only = sum(torch.equal(out[i], x[i].flip(-1)) for i in range(256))
    # 1 of 81 offsets is the identity, times a 1/2 chance of no flip: about 1.6 of 256 images each
    assert unchanged < 16 and flipped_only < 16


def test_a_held_out_split_is_a_stratified_share_of_the_training_split_that_nobody_trains_on():
    full = load_dataset(DatasetConfig(name="digits"))
    data = load_dataset(DatasetConfig(name="digits", heldout_fraction=0.2))
    assert len(data.train) + len(data.heldout) == len(full.train) and len(data.heldout) == 288
    assert torch.equal(data.test.x, full.test.x)  # the test split is untouched
    assert (data.mean, data.std) == (full.mean, full.std)  # so is the owner's normalisation
    held_share = torch.bincount(data.heldout.y, minlength=10) / len(data.heldout)
    train_share = torch.bincount(data.train.y, minlength=10) / len(data.train)
    assert torch.allclose(held_share, train_share, atol=1 / 288 + 1e-6)
    # together they are the original training split, image for image
    together = torch.cat([data.train.x, data.heldout.x]).flatten(1)
    assert torch.equal(together.unique(dim=0), full.train.x.flatten(1).unique(dim=0))
    assert full.heldout is None


def test_a_held_out_fraction_outside_0_1_is_refused():
    with pytest.raises(ConfigError, match=r"dataset.heldout_fraction must be from 0 to 0.9, got 1.0"):
        DatasetConfig(heldout_fraction=1.0)


def test_images_convert_to_another_input_format():
    from kdbench.data.images import InputFormat, convert_images

    grey = InputFormat((1, 2, 2), 16.0, (0.5,), (0.25,))
    red = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    red[:, 0] = 255
    # luminance 0.299·255 = 76.245, rescaled to 0..16: 4.784 → 5, constant under resizing
    assert convert_images(red, 255.0, grey).tolist() == [[[[5, 5], [5, 5]]]]
    colour = InputFormat((3, 4, 4), 255.0, (0.5,) * 3, (0.25,) * 3)
    digit = torch.full((2, 1, 4, 4), 8, dtype=torch.uint8)  # half of digits' 0..16
    out = convert_images(digit, 16.0, colour)
    assert out.shape == (2, 3, 4, 4) and (out == 128).all()  # 8·255/16 = 127.5 → 128
    with pytest.raises(ConfigError, match="cannot convert 2-channel images to 3 channels"):
        convert_images(torch.zeros(1, 2, 4, 4, dtype=torch.uint8), 255.0, colour)
