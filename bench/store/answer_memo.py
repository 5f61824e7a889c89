"""Answers of a served teacher to whole pools of inputs, kept in the cache and shared between cells.

Cells that distil from the same defended teacher at the same seed ask it about the same pools (the
training split, or each epoch's augmented view of it: :mod:`kdbench.serving.answers`). The first
cell to ask computes the answers and keeps them; the others read them. A pool's answers are
computed in fixed chunks and kept under a digest of the prepared inputs the server is shown, so a
kept answer is the same bits the asking cell would have computed itself: whether a cell found
them kept never changes its result.

A file is kept under the server's key (:func:`kdbench.store.keys.server_key`: the network's
checkpoints, the defense and its code, the access level) and that digest, written atomically under
a lock like a network's checkpoint. One that is unreadable or does not fit the pool is computed
again.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from kdbench.serving.teacher import ASK_CHUNK, Prepare
from kdbench.store.atomic import atomic_write
from kdbench.store.cache import ArtifactCache
from kdbench.store.keys import config_hash

SUFFIX = ".answers"  # not .pt: a .pt file in the cache is a network's checkpoint


def pool_digest(pool: Tensor, prepare: Prepare | None) -> str:
    """A digest of what the server is shown: the pool as ``prepare`` turns it into inputs, chunk by chunk."""
    h = hashlib.blake2b(digest_size=16)
    for chunk in pool.split(ASK_CHUNK):
        shown = (prepare(chunk) if prepare is not None else chunk).detach().cpu().contiguous()
        h.update(f"{tuple(shown.shape)}{shown.dtype}".encode())
        h.update(shown.numpy().tobytes())
    return h.hexdigest()


class CachedAnswers:
    """An :data:`~kdbench.serving.teacher.AnswerMemo` for one server, in ``cache``."""

    def __init__(self, cache: ArtifactCache, server: str, *, fresh_after: float | None = None) -> None:
        self.cache = cache
        self.server = server
        self.fresh_after = fresh_after  # rerun=true: a file from before the run counts as absent

    def path(self, key: str) -> Path:
        return self.cache.root / f"{key}{SUFFIX}"

    def __call__(self, pool: Tensor, prepare: Prepare | None, compute: Callable[[], Tensor]) -> Tensor:
        key = config_hash({"server": self.server, "pool": pool_digest(pool, prepare)})
        answers = self._load(key, len(pool))
        if answers is None:
            with self.cache.lock(key, suffix=".answers.lock", waiting_for="answering the same queries"):
                answers = self._load(key, len(pool))
                if answers is None:
                    answers = compute()
                    kept = answers.detach().cpu()
                    atomic_write(self.path(key), lambda f: torch.save({"answers": kept}, f))
        return answers.to(pool.device)

    def _load(self, key: str, rows: int) -> Tensor | None:
        path = self.path(key)
        try:
            if self.fresh_after is not None and path.stat().st_mtime < self.fresh_after:
                return None
            answers = torch.load(path, map_location="cpu", weights_only=True)["answers"]
        except (OSError, RuntimeError, EOFError, KeyError, TypeError, pickle.UnpicklingError, zipfile.BadZipFile):
            return None
        if not isinstance(answers, Tensor) or answers.shape[:1] != (rows,):
            return None
        return answers
