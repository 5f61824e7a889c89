"""The bad inputs of issue 33, each once: exit 2, one line on stderr naming the option (or file) and
what is allowed, no traceback, nothing trained or written. Numeric options refuse inf and NaN
through one shared check (kdbench.config.typecheck), not per option."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from kdbench.cli import main

TINY = ["run", "preset=tiny", "quiet=true"]

# Every option that "> 0" once let inf through, with the attack or defense that reads it.
INFINITE = [
    ("train.lr", []),
    ("attack.kd.tau", []),
    ("defense.nasty.tau", []),
    ("defense.nasty.omega", []),
    ("defense.logit_noise.scale", ["defense=logit_noise"]),
    ("defense.reverse_sigmoid.beta", ["defense=reverse_sigmoid"]),
    ("defense.reverse_sigmoid.gamma", ["defense=reverse_sigmoid"]),
    ("attack.htc.teacher_tau", ["attack=htc"]),
    ("attack.skeptical.tau", ["attack=skeptical"]),
    ("attack.blackbox.tau", ["attack=blackbox"]),
    ("attack.dafl.generator_lr", ["attack=dafl"]),
    ("attack.dafl.w_entropy", ["attack=dafl"]),
    ("attack.deepinversion.lr", ["attack=deepinversion"]),
    ("attack.deepinversion.tau", ["attack=deepinversion"]),
]

CASES = [
    (["seeds=100000000"], "seeds must be an integer from 1 to 1000"),
    (
        ["defense=rounding", "defense.rounding.decimals=0"],
        "defense.rounding.decimals must be an integer from 1 to 8, got 0",
    ),
    (["defense=rounding", "defense.rounding.decimals=2.5"], "defense.rounding.decimals must be an integer, got 2.5"),
    (["threads=100000"], "threads must be an integer from 1 to 256, or auto, got 100000"),
    (["workers=100000"], "workers must be an integer from 1 to 256, or auto, got 100000"),
    (["heartbeat_s=inf"], "heartbeat_s must be a finite number, got inf"),
    (["heartbeat_s=0"], "heartbeat_s must be a positive number of seconds, got 0"),
    (["attack=null"], "attack=null: attack is chosen by name (attack=<name>, or attack=[a,b] for several)"),
    (["defense=null"], "defense=null: defense is chosen by name"),
    (["dataset=null"], "dataset=null: dataset is chosen by name"),
    (["=5"], "override '=5' names no setting; write <setting>=<value>"),
    (["~train"], "train is required and was removed (~train)"),
    (["train=5"], "train must be a mapping, got 5"),
    (["train=null"], "train must be a mapping, got None"),
    (["attack_variants=5"], "attack_variants must be a mapping or null, got 5"),
    (["+restarts.dafll=2"], "restarts.dafll: no attack column 'dafll'; allowed: blackbox,"),
    (["restarts.kd=2"], "unknown setting restarts.kd: no column's restarts are set there yet; add it with +restarts"),
    (["+restarts.kd=0"], "restarts.kd must be an integer from 1 to 100 (students a cell trains), got 0"),
    (["+restarts.kd=true"], "restarts.kd must be an integer from 1 to 100 (students a cell trains), got True"),
    (["attack=dfme", "+restarts.dfme=2"], "restarts.dfme=2: attack 'dfme' has a query budget"),
    (["results_dir={tmp}/" + "a" * 300], "is not writable (File name too long); set results_dir=<a writable folder>"),
    (["dataset.train_size=-1"], "dataset.train_size must be an integer from 1 to 10000000, got -1"),
    (["dataset.test_size=-5"], "dataset.test_size must be an integer from 1 to 10000000, got -5"),
    (["dataset.test_size=0"], "dataset.test_size must be an integer from 1 to 10000000, got 0"),
    (["dataset.shape=[1,100000,100000]"], "dataset.shape must be [channels, height, width] with 1 to 4 channels"),
    (["dataset=digits", "dataset.heldout_fraction=0.999"], "dataset.heldout_fraction must be from 0 to 0.9, got 0.999"),
    (["dataset=digits", "++dataset.test_fraction=0"], "dataset.test_fraction must be from 0.05 to 0.95, got 0"),
    (["dataset=digits", "++dataset.test_fraction=1.5"], "dataset.test_fraction must be from 0.05 to 0.95, got 1.5"),
    (["dataset=digits", "++dataset.test_fraction=-0.1"], "dataset.test_fraction must be from 0.05 to 0.95, got -0.1"),
    (["dataset.normalize={mean:[abc],std:[1]}"], "mean and std must be finite numbers"),
    (["dataset.normalize={mean:[nan],std:[1]}"], "mean and std must be finite numbers"),
    (["dataset.normalize={mean:[0],std:[inf]}"], "mean and std must be finite numbers"),
    (["dataset.normalize=[0,inf]"], "dataset.normalize=[0, inf]: a range is [lo, hi] with lo < hi"),
    (
        ["dataset=folder", "dataset.data_root={tmp}", "dataset.image_size=100000"],
        "dataset.image_size must be an integer",
    ),
    (["+x=1"], "unknown setting x; allowed: teacher,"),
    (["++x=1"], "unknown setting x; allowed: teacher,"),
    (["attak=kd"], "unknown setting attak (did you mean attack?); allowed: teacher,"),
    (["+attak=kd"], "unknown setting attak (did you mean attack?); allowed: teacher,"),
    (["train.epoch=3"], "unknown setting train.epoch (did you mean train.epochs?); allowed under train: epochs,"),
    (["dataset.normalise=cifar"], "unknown setting dataset.normalise (did you mean dataset.normalize?)"),
    (["attack.kd.taux=3"], "unknown setting attack.kd.taux (did you mean attack.kd.tau?); allowed under attack.kd:"),
    (["quiet=maybe"], "quiet must be true or false, got 'maybe'"),
    (["compile=maybe"], "compile must be true or false, got 'maybe'"),
    (["results_dir=null"], "results_dir must be a string, got None"),
    (["results_dir=''"], "results_dir must name a folder, got ''"),
    (["reference_dir={tmp}/ref", "cache_dir={tmp}/ref/x"], "cache_dir={tmp}/ref/x writes into the committed reference"),
    (["reference_dir={tmp}/a-file"], "reference_dir={tmp}/a-file is a file"),
    (
        ["attack=blackbox", "attack.blackbox.source=surrogate", "attack.blackbox.surrogate=cifar10"],
        "attack.blackbox.surrogate_root must locate the surrogate dataset 'cifar10'",
    ),
    (["teacher=sys:exit"], "model 'sys:exit': 'exit' is a builtin_function_or_method; allowed: a torch.nn.Module"),
    (["teacher=os:abort"], "model 'os:abort': 'abort' is a builtin_function_or_method"),
    *[
        ([*extra, f"{option}={value}"], f"{option} must be a finite number, got {value}")
        for option, extra in INFINITE
        for value in ("inf",)
    ],
    (["attack.kd.tau=nan"], "attack.kd.tau must be a finite number, got nan"),
    (["train.lr=-inf"], "train.lr must be a finite number, got -inf"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_a_bad_input_is_refused_in_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)  # a relative folder (results_dir='') would land here
    (tmp_path / "ref").mkdir()
    (tmp_path / "a-file").write_text("")
    before = sorted(tmp_path.rglob("*"))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if not any(a.startswith("results_dir=") for a in args):
        args.append(f"results_dir={tmp_path}/results")
    capsys.readouterr()
    assert main([*TINY, *args]) == 2
    out = capsys.readouterr()
    assert out.err.startswith("error: ") and out.err.count("\n") == 1, out.err
    assert message.replace("{tmp}", str(tmp_path)) in out.err
    assert "Traceback" not in out.err + out.out
    assert sorted(tmp_path.rglob("*")) == before  # nothing trained or written


def test_an_unknown_flag_is_one_line_not_the_usage(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["run", "--foo"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: unrecognized arguments: --foo; usage: bench run|report|list [KEY=VALUE ...] (bench help)\n"


def image_folder(root: Path) -> Path:
    for split in ("train", "test"):
        for label, colour in (("cat", (200, 10, 10)), ("dog", (10, 10, 200))):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), colour).save(folder / f"{i}.png")
    return root


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` × ``height`` pixels (and holds none)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def dangling_link(root: Path) -> str:
    (root / "train" / "cat" / "gone.png").symlink_to(root / "nowhere.png")
    return f"image file {root}/train/cat/gone.png is a link to nothing"


def fifo(root: Path) -> str:
    os.mkfifo(root / "train" / "dog" / "pipe.png")  # reading it would wait forever
    return f"{root}/train/dog/pipe.png is not a regular file (a FIFO, socket or device)"


def decompression_bomb(root: Path) -> str:
    (root / "test" / "cat" / "bomb.png").write_bytes(png_header_claiming(30000, 30000))
    return f"cannot decode image {root}/test/cat/bomb.png: Image size (900000000 pixels) exceeds limit"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and symbolic links")
@pytest.mark.parametrize("plant", [dangling_link, fifo, decompression_bomb])
def test_a_folder_dataset_with_a_file_that_is_no_image_is_refused_in_one_line(tmp_path, capsys, plant):
    root = image_folder(tmp_path / "images")
    message = plant(root)
    capsys.readouterr()
    assert main([*TINY, "dataset=folder", f"data_root={root}", f"results_dir={tmp_path}/results"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("option", ["teacher_weights", "defense.file.path"])
def test_an_unreadable_weight_file_is_one_line(tmp_path, monkeypatch, capsys, option):
    """As root (CI) a permission cannot be taken away: the read itself is refused, as for another user."""
    import builtins

    weights = tmp_path / "net.pt"
    weights.write_bytes(b"not read")
    real_open = builtins.open

    def refusing(path, *args, **kwargs):
        if str(path) == str(weights):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing)
    extra = (
        ["defense=file", f"defense.file.path={weights}"]
        if option == "defense.file.path"
        else [f"teacher_weights={weights}"]
    )
    capsys.readouterr()
    assert main([*TINY, *extra, f"results_dir={tmp_path}/results"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {option}={weights} cannot be read (Permission denied)\n"
    assert not (tmp_path / "results").exists()
