"""A full disk or a folder that turns read-only mid-run: one line naming the file and why, exit 1,
the cells finished before kept, and the same command, rerun, completes with the same records.

The faults are injected where the operating system would raise them (``KDBENCH_FAULT``, actions
``full``: ENOSPC and ``readonly``: EROFS), at the point where a finished temporary file is about to
be renamed into place: the tests run as root on CI, where permissions cannot make a folder
read-only, and mounting a small file system needs privileges a test does not have.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from kdbench.cli import main
from kdbench.errors import CannotWrite
from kdbench.faults import FAULT_ENV

TINY = ["preset=tiny", "quiet=true", "threads=1"]
RECORDS = "*/records/*.json"


def records_of(results: Path) -> dict[str, dict]:
    found = {}
    for path in sorted(results.glob(RECORDS)):
        record = json.loads(path.read_text())
        record.pop("wall_s")
        record["details"].pop("serving_ms_per_1k", None)  # a timing too
        record["details"].pop("command")  # names the results folder and the worker count
        found[path.name] = record
    return found


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, dict]:
    results = tmp_path_factory.mktemp("uninterrupted")
    assert main(["run", *TINY, f"results_dir={results}"]) == 0
    return records_of(results)


@pytest.mark.parametrize(
    ("fault", "workers", "why", "remedy", "kept"),
    [
        (f"full:write/{RECORDS}#2", 1, "no space left on device", "free some space", 1),
        ("readonly:write/*/.cache/*.pt#2", 1, "read-only file system", "make the folder writable", 0),
        ("full:write/*/leaderboard.md", 1, "no space left on device", "free some space", 2),
        (f"full:write/{RECORDS}", 2, "no space left on device", "free some space", None),
    ],
    ids=["second-record", "second-checkpoint", "tables", "record-in-a-worker"],
)
def test_a_write_the_machine_refuses_stops_the_run_in_one_line_and_a_rerun_completes(
    tmp_path, uninterrupted, monkeypatch, capsys, fault, workers, why, remedy, kept
):
    monkeypatch.setenv(FAULT_ENV, fault)
    assert main(["run", *TINY, f"results_dir={tmp_path}", f"workers={workers}"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"failed: cannot write {tmp_path}/")
    assert f": {why}; the cells finished before are kept" in line
    assert line.endswith(f"{remedy} and rerun the same command to continue")
    finished = records_of(tmp_path)
    if kept is not None:
        assert len(finished) == kept
    assert all(uninterrupted[name] == record for name, record in finished.items())
    assert not list(tmp_path.rglob(".*.tmp"))  # the temporary of the refused write is gone

    monkeypatch.delenv(FAULT_ENV)
    assert main(["run", *TINY, f"results_dir={tmp_path}", f"workers={workers}"]) == 0
    assert records_of(tmp_path) == uninterrupted


def test_an_os_write_error_of_the_storage_names_the_file_and_another_one_is_not_disguised(tmp_path, monkeypatch):
    from kdbench.store import atomic

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", full)
    target = tmp_path / "table.csv"
    with pytest.raises(CannotWrite, match=rf"^cannot write {target}: no space left on device$") as caught:
        atomic.atomic_write_text(target, "a,b\n")
    assert caught.value.remedy == "free some space"
    assert list(tmp_path.iterdir()) == []

    def broken(fd: int) -> None:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    monkeypatch.setattr(atomic.os, "fsync", broken)
    with pytest.raises(OSError) as caught:
        atomic.atomic_write_text(target, "a,b\n")
    assert not isinstance(caught.value, CannotWrite)


def test_cannot_write_crosses_from_a_worker_process_intact():
    import pickle

    err = CannotWrite("/r/x.json", OSError(errno.EROFS, os.strerror(errno.EROFS)))
    again = pickle.loads(pickle.dumps(err))
    assert (str(again), again.errno, again.remedy) == (str(err), errno.EROFS, "make the folder writable")
