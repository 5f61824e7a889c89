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
    """The right architecture's name over weights of other shapes."""
    payload = torch.load(teacher, weights_only=True)
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
