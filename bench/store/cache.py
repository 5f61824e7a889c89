"""Content-addressed storage: artifacts are keyed by a hash of everything that produced them.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so a
run killed at any moment leaves either the old file, the new one, or a stray ``.tmp`` that nothing
reads. Checkpoints are loaded with ``weights_only=True``: a pickle that would run code is refused.
Each checkpoint names its key and a digest of its tensors, both checked on load, so a file copied
over another's name or edited in place is refused instead of serving another network's results.

Several ``bench run`` processes may share one cache (one results folder, or a shared filesystem on
a cluster): each artifact is built under an exclusive ``flock`` on ``<key>.pt.lock``, so a second
process that needs an artifact being built waits for it and then loads it instead of training it
again. The kernel drops the lock when its holder exits, even on SIGKILL, so no lock goes stale;
the empty ``.lock`` files stay (removing one could split two processes onto different locks).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdbench.errors import BenchError, writing
from kdbench.store.atomic import atomic_write


class CorruptArtifactError(BenchError):
    pass


class ArtifactCache:
    """Trained weights by key, under ``root`` (``<results>/<dataset>/.cache`` by default)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def save(self, key: str, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        tensors = {k: v.detach().cpu() for k, v in state_dict.items()}
        payload = {"state_dict": tensors, "meta": {**meta, "key": key, "tensors_sha256": tensors_digest(tensors)}}
        atomic_write(self.path(key), lambda f: torch.save(payload, f))

    def load(self, key: str, expected_arch: str) -> dict[str, torch.Tensor] | None:
        path = self.path(key)
        if not path.exists():
            return None
        state, meta = load_checkpoint(path, expected_arch)
        # Checkpoints written before these fields existed carry neither and are trusted as before.
        written_as = meta.get("key", key)
        if written_as != key:
            raise CorruptArtifactError(
                f"checkpoint {path} holds the network kdbench cached as {written_as}, not {key} "
                f"(a copy of another checkpoint); delete it to retrain"
            )
        if "tensors_sha256" in meta and meta["tensors_sha256"] != tensors_digest(state):
            raise CorruptArtifactError(
                f"checkpoint {path} holds other weights than kdbench wrote (edited or damaged); delete it to retrain"
            )
        return state

    @contextmanager
    def claim_cell(self, key: str, cell: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the claim on the cell computation ``key`` (named ``cell``), like a network's lock: of
        several runs on one folder that need it, one computes it and the others then reuse its record."""
        with self.lock(key, on_wait, suffix=".cell.lock", waiting_for=f"computing cell {cell}"):
            yield

    @contextmanager
    def lock(
        self,
        key: str,
        on_wait: Callable[[str], None] | None = None,
        *,
        suffix: str = ".pt.lock",
        waiting_for: str | None = None,
    ) -> Iterator[None]:
        """Hold the exclusive lock of ``key``'s artifact (waiting for another process that holds it)."""
        lock_path = self.root / f"{key}{suffix}"
        with writing(lock_path):
            self.root.mkdir(parents=True, exist_ok=True)
            # Read-only is enough for flock, and works on a lock file another user of a shared cache made.
            fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait(f"waiting for another process to finish {waiting_for or f'building {self.path(key)}'}")
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as err:  # a filesystem without flock (some network mounts)
                raise BenchError(
                    f"cannot lock {lock_path} ({err.strerror}); set cache_dir=<a folder on a filesystem with flock>"
                ) from None
            yield
        finally:
            os.close(fd)  # releases the lock

    def fill(
        self,
        key: str,
        model: nn.Module,
        *,
        arch: str,
        meta: dict[str, Any],
        train: Callable[[], None],
        on_wait: Callable[[str], None] | None = None,
        fresh_after: float | None = None,
    ) -> Path:
        """Give ``model`` the weights cached under ``key``, or ``train()`` it in place and cache them;
        returns the checkpoint's path.

        Training runs under ``key``'s lock, and the cache is read again once the lock is held, so
        of several processes that need the same artifact one trains it and the others load it.
        With ``fresh_after`` (a ``time.time()``), a checkpoint written before then counts as absent:
        ``rerun=true`` retrains each network once, however many cells and processes need it.
        """
        state = self._load_fresh(key, arch, fresh_after)
        if state is None:
            with self.lock(key, on_wait):
                state = self._load_fresh(key, arch, fresh_after)
                if state is None:
                    self._remove_stray_temporaries(key)
                    train()
                    self.save(key, model.state_dict(), meta={**meta, "arch": arch})
                    return self.path(key)
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, ValueError) as err:  # the right architecture's name, other shapes
            details = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
            raise CorruptArtifactError(
                f"checkpoint {self.path(key)} does not fit the {arch!r} network "
                f"({details[0] if details else type(err).__name__}); delete it to retrain"
            ) from None
        return self.path(key)

    def _load_fresh(self, key: str, arch: str, fresh_after: float | None) -> dict[str, torch.Tensor] | None:
        path = self.path(key)
        if fresh_after is not None and path.exists() and path.stat().st_mtime < fresh_after:
            return None
        return self.load(key, arch)

    def _remove_stray_temporaries(self, key: str) -> None:
        """Half-written copies of ``key`` left by a killed run (only the lock holder writes them)."""
        for stray in self.root.glob(f".{key}.pt.*.tmp"):
            stray.unlink(missing_ok=True)


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    """The sha256 (16 hex digits) of a state dict's names, dtypes, shapes and values, independent of
    how the file holding it was serialised."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def load_checkpoint(path: Path, expected_arch: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and metadata from a kdbench checkpoint, refusing anything that is not plain tensors
    and metadata."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt bytes or a pickle that asks for code: never executed
        raise CorruptArtifactError(
            f"checkpoint {path} cannot be loaded safely: {why_refused(path, err)}; delete it to retrain"
        ) from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CorruptArtifactError(f"checkpoint {path} is not a kdbench checkpoint; delete it to retrain")
    meta = payload.get("meta")
    arch = meta.get("arch") if isinstance(meta, dict) else None
    if arch != expected_arch:
        raise CorruptArtifactError(
            f"checkpoint {path} holds a {arch!r} network, not {expected_arch!r}; delete it to retrain"
        )
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CorruptArtifactError(f"checkpoint {path} is not a kdbench checkpoint; delete it to retrain")
    return state, meta


@functools.cache
def _digest(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def file_digest(path: Path) -> str | None:
    """The sha256 (16 hex digits) of the file at ``path``, None if there is none; hashed once per
    process for each (path, mtime, size)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return _digest(str(path), stat.st_mtime_ns, stat.st_size)


def why_refused(path: Path, err: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``, in kdbench's words.

    Never torch's own advice for a refused pickle (re-running with ``weights_only=False`` "will
    likely succeed"): for a file of unknown origin that would run whatever code it holds.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    if "Weights only load failed" in text:
        found = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", text)
        named = f" (it asks for {', '.join(dict.fromkeys(found))})" if found else ""
        return (
            f"it holds pickled code or objects{named} that weights_only loading refuses, "
            "and kdbench never runs code from a checkpoint"
        )
    try:
        if path.stat().st_size == 0:
            return "the file is empty (0 bytes)"
    except OSError:
        pass
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {first}" if first else f"{type(err).__name__} (truncated or not a checkpoint)"
