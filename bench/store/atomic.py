"""Files written whole or not at all: a temporary beside the target, renamed over it, and the
sweep of temporaries that killed runs left behind."""

from __future__ import annotations

import io
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from kdbench.errors import writing
from kdbench.faults import fault_point


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates its files readable by their owner only; results and caches shared between users
# of one machine get the permissions an ordinary open() would give them.
FILE_MODE = 0o666 & ~_current_umask()


HOST = socket.gethostname().replace(".", "_").replace("/", "_")


# A temporary of a writer on another machine (a shared cluster filesystem) cannot be asked about its
# process: it is judged stale by age alone, long after any write could still be going on.
FOREIGN_TEMPORARY_AGE_S = 24 * 3600


_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp$")


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` whole or not at all with ``write``, which fills a file object. A full disk or a
    folder without write permission raises :class:`~kdbench.errors.CannotWrite` naming ``path``."""
    # Serialised in memory first: a failing OS write then surfaces as OSError with its errno, not
    # as torch's "unexpected pos 4352 vs 4248" from inside its zip writer.
    buffer = io.BytesIO()
    write(buffer)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # the writer's host and pid in the name: a later run can tell a dead writer's leftover from a live write
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{HOST}-{os.getpid()}.", suffix=".tmp")
        try:
            os.fchmod(fd, FILE_MODE)
            with os.fdopen(fd, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            fault_point(f"write/{path}")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the ``.*.tmp`` files in ``folder`` left by writers that died mid-write (killed runs);
    returns them. A temporary of a live process on this machine is never touched; one from another
    machine, or without a writer in its name (older kdbench), only once it is a day old."""
    removed = []
    now = time.time()
    for tmp in folder.glob(".*.tmp") if folder.is_dir() else []:
        match = _TEMPORARY.match(tmp.name)
        try:
            if match and match["host"] == HOST:
                stale = not _alive(int(match["pid"]))
            else:
                stale = now - tmp.stat().st_mtime > FOREIGN_TEMPORARY_AGE_S
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:
            continue  # renamed into place or removed by its writer meanwhile
    return removed


def sweep_results(dataset_dir: Path, cache_dir: Path | None = None) -> list[Path]:
    """Remove what killed runs left half-written in a dataset's results folder, its records and its
    cache; the paths removed. Once per command, before it reads or writes anything there."""
    folders = [dataset_dir, dataset_dir / "records", *([cache_dir] if cache_dir is not None else [])]
    return [stray for folder in folders for stray in remove_stale_temporaries(folder)]


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))
