"""Fault injection for the reliability tests: this process signals itself at a named point.

Set ``KDBENCH_FAULT="<action>:<pattern>[#<n>]"`` and the ``n``-th time (the first by default) the
process reaches a point whose name matches the glob ``pattern``, it sends itself ``SIGKILL``
(action ``kill``: dies on the spot, no handler, no cleanup) or ``SIGSTOP`` (action ``stop``: frozen
until someone sends ``SIGCONT``), sleeps there for good (action ``hold``: a cell that never ends,
which any signal still ends as it would end a working one), or fails as the operating system
would (``full``: ``OSError`` ENOSPC, no space left on the device; ``readonly``: EROFS, a
read-only file system). The points:

- ``train/<description>`` after every optimiser step of :func:`kdbench.training.loop.fit`, e.g.
  ``train/teacher nasty digits_cnn``, ``train/scratch mlp``, ``train/kd digits_cnn/nasty→mlp``;
- ``start/worker`` where a worker process of :mod:`kdbench.matrix.workers` starts, once it has
  imported the suite and before it watches its parent;
- ``write/<path>`` in :func:`kdbench.store.atomic.atomic_write` once the temporary file is complete, just
  before it is renamed to ``path`` (records, checkpoints, tables).

Unset, as it always is outside tests, a point costs one environment lookup.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import signal
import time

from kdbench.errors import ConfigError

FAULT_ENV = "KDBENCH_FAULT"
ACTIONS = ("kill", "stop", "hold", "full", "readonly")
_SIGNALS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}
_ERRNOS = {"full": errno.ENOSPC, "readonly": errno.EROFS}

_hits: dict[str, int] = {}  # per fault spec: points reached so far that matched it, in this process


def parse_fault(spec: str) -> tuple[str, str, int]:
    """``"kill:train/kd *#3"`` → (``"kill"``, ``"train/kd *"``, 3)."""
    action, _, target = spec.partition(":")
    pattern, _, nth = target.rpartition("#") if "#" in target else (target, "", "1")
    if action not in ACTIONS or not pattern or not nth.isdigit() or int(nth) < 1:
        raise ConfigError(
            f"{FAULT_ENV}={spec!r} is malformed; expected <action>:<glob>[#<n>] with action one of "
            f"{', '.join(ACTIONS)} and n >= 1"
        )
    return action, pattern, int(nth)


def fault_point(name: str) -> None:
    """A place where a test may interrupt this process (see the module's docstring)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    action, pattern, nth = parse_fault(spec)
    if not fnmatch.fnmatchcase(name, pattern):
        return
    _hits[spec] = _hits.get(spec, 0) + 1
    if _hits[spec] != nth:
        return
    if action in _ERRNOS:
        number = _ERRNOS[action]
        raise OSError(number, os.strerror(number))
    if action == "hold":
        while True:
            time.sleep(3600)
    os.kill(os.getpid(), _SIGNALS[action])
