"""A cached teacher that is not what kdbench wrote is refused, never executed, on the runner's path.

Decision: such a file is never silently replaced (with atomic writes a run cannot leave one, so it
was corrupted or planted from outside, and someone should look). The cells that need it are recorded
as ``failed`` with the reason, which names the file and says to delete it; the other cells go on;
``bench run`` lists the failures on stderr and exits with status 1. Deleting the file retrains it.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

from kdbench.cli import main

TINY = ["preset=tiny", "quiet=true"]
# Another attack option: both cells are recomputed and reuse the cached teachers.
NEW_CELLS = ["attack.kd.alpha=0.5"]
CELLS = ["digits_cnn__normal__kd__mlp__seed0", "digits_cnn__nasty__kd__mlp__seed0"]


class _CreatesAFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("pristine")
    assert main(["run", *TINY, f"results_dir={results}"]) == 0
    return results


def cached(folder: Path, kind: str) -> Path:
    """The cached checkpoint of one kind ("normal", "nasty", "scratch")."""
    (path,) = (p for p in (folder / ".cache").glob("*.pt") if torch.load(p, weights_only=True)["meta"]["kind"] == kind)
    return path


def records(folder: Path) -> dict[str, dict]:
    return {name: json.loads((folder / "records" / f"{name}.json").read_text()) for name in CELLS}


def truncate(teacher: Path, folder: Path) -> str:
    teacher.write_bytes(teacher.read_bytes()[:1000])
    return "cannot be loaded safely"


def swap_architecture(teacher: Path, folder: Path) -> str:
    shutil.copyfile(cached(folder, "scratch"), teacher)
    return "holds a 'mlp' network, not 'digits_cnn'"


def empty(teacher: Path, folder: Path) -> str:
    teacher.write_bytes(b"")
    return "cannot be loaded safely: the file is empty (0 bytes)"


def other_shapes(teacher: Path, folder: Path) -> str:
    """The right architecture's name over weights of other shapes, in a checkpoint of the format
    before key and digest were written (which would refuse it first): the shapes are checked too."""
    payload = torch.load(teacher, weights_only=True)
    del payload["meta"]["key"], payload["meta"]["tensors_sha256"]
    name, tensor = next(iter(payload["state_dict"].items()))
    payload["state_dict"][name] = torch.zeros(tensor.shape[0] + 1, *tensor.shape[1:])
    torch.save(payload, teacher)
    return f"does not fit the 'digits_cnn' network (size mismatch for {name}"


@pytest.mark.parametrize("corrupt", [truncate, swap_architecture, empty, other_shapes])
def test_a_corrupt_cached_teacher_fails_its_cells_with_a_clear_error(tmp_path, pristine, corrupt, capsys):
    shutil.copytree(pristine, tmp_path, dirs_exist_ok=True)
    folder = tmp_path / "synthetic"
    teacher = cached(folder, "normal")
    problem = corrupt(teacher, folder)
    capsys.readouterr()

    assert main(["run", *TINY, f"results_dir={tmp_path}", *NEW_CELLS]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    for line, cell in zip(err, CELLS, strict=True):
        assert line.startswith(f"failed: {cell}: checkpoint {teacher} ")
        assert problem in line and line.endswith("delete it to retrain")
    assert {r["status"] for r in records(folder).values()} == {"failed"}
    assert "| normal | – | 1 failed |" in (folder / "leaderboard.md").read_text()


def test_a_planted_pickle_is_never_executed_and_deleting_it_retrains(tmp_path, pristine, capsys):
    shutil.copytree(pristine, tmp_path, dirs_exist_ok=True)
    folder = tmp_path / "synthetic"
    marker = tmp_path / "pwned"
    teacher = cached(folder, "normal")
    torch.save({"state_dict": {}, "meta": {"arch": "digits_cnn"}, "payload": _CreatesAFile(marker)}, teacher)
    # the payload is live: an unrestricted load of a copy does create the file
    shutil.copyfile(teacher, tmp_path / "copy.pt")
    torch.load(tmp_path / "copy.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()

    assert main(["run", *TINY, f"results_dir={tmp_path}", *NEW_CELLS]) == 1
    assert not marker.exists()
    err = capsys.readouterr().err
    assert f"checkpoint {teacher} cannot be loaded safely: it holds pickled code or objects" in err
    assert "that weights_only loading refuses, and kdbench never runs code from a checkpoint" in err
    assert "will likely succeed" not in err and "weights_only` set to `False`" not in err  # no such advice
    assert all(line.endswith("delete it to retrain") for line in err.splitlines())

    teacher.unlink()  # as the error says
    assert main(["run", *TINY, f"results_dir={tmp_path}", *NEW_CELLS]) == 0
    assert not marker.exists()
    assert {r["status"] for r in records(folder).values()} == {"ok"}
    assert "2 cell(s) computed, 0 reused" in capsys.readouterr().out


def same_architecture_other_network(teacher: Path, folder: Path) -> str:
    """Another cached network of the same architecture copied over this one's name."""
    shutil.copyfile(cached(folder, "normal"), teacher)
    return "holds the network kdbench cached as"


def edited_in_place(teacher: Path, folder: Path) -> str:
    """The right file, its weights edited and saved again with its metadata."""
    payload = torch.load(teacher, weights_only=True)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = payload["state_dict"][name] + 1.0
    torch.save(payload, teacher)
    return "holds other weights than kdbench wrote (edited or damaged)"


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("corrupt", [truncate, swap_architecture, same_architecture_other_network, edited_in_place])
def test_the_same_command_after_a_checkpoint_is_replaced_recomputes_exactly_its_cells(
    tmp_path, pristine, corrupt, workers, capsys
):
    """The replaced file is the nasty teacher's, which only the nasty cell was computed from: that
    cell is recomputed and refused (never served from other bytes), the normal cell's record kept."""
    shutil.copytree(pristine, tmp_path, dirs_exist_ok=True)
    folder = tmp_path / "synthetic"
    before = {p.name: p.read_bytes() for p in (folder / "records").glob("*.json")}
    teacher = cached(folder, "nasty")
    problem = corrupt(teacher, folder)
    capsys.readouterr()

    nasty, normal = "digits_cnn__nasty__kd__mlp__seed0", "digits_cnn__normal__kd__mlp__seed0"
    threads = json.loads(before[f"{normal}.json"])["details"]["threads"]  # part of every key on the CPU
    assert main(["run", *TINY, f"results_dir={tmp_path}", f"workers={workers}", f"threads={threads}"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"failed: {nasty}: checkpoint {teacher} ") and problem in line
    assert line.endswith("delete it to retrain")
    assert (folder / "records" / f"{normal}.json").read_bytes() == before[f"{normal}.json"]
    assert records(folder)[nasty]["status"] == "failed"

    if workers == 1:  # deleting the file, as the line says, retrains the same network
        teacher.unlink()
        assert main(["run", *TINY, f"results_dir={tmp_path}"]) == 0
        again = json.loads((folder / "records" / f"{nasty}.json").read_text())
        first = json.loads(before[f"{nasty}.json"])
        assert (again["status"], again["teacher_acc"], again["student_acc"]) == (
            "ok",
            first["teacher_acc"],
            first["student_acc"],
        )
