"""Worker processes end with the process that started them, even one killed with SIGKILL.

A spawned worker spends its first seconds importing (torch alone takes about 2 s here) before any
code of the worker pool runs, so a watcher started there comes too late for a parent killed during
start-up. Instead the parent names itself in the environment (:data:`PARENT_ENV`) while it starts
workers, and ``kdbench/__init__.py``, the first module a worker of ``bench`` imports, calls
:func:`end_with_parent`: on Linux the kernel then kills the worker the moment its parent ends
(``PR_SET_PDEATHSIG``). Standard library only: it runs before torch is imported.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

PARENT_ENV = "KDBENCH_WORKERS_PARENT"
EXIT_PARENT_GONE = 70  # a worker's exit status once its parent is gone (nobody is left to read it)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@contextmanager
def workers_end_with_this_process() -> Iterator[None]:
    """While the block runs, processes spawned by this one end when it ends (see the module)."""
    before = os.environ.get(PARENT_ENV)
    os.environ[PARENT_ENV] = str(os.getpid())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = before


def end_with_parent() -> None:
    """In a spawned worker: ask to be killed when the parent named in the environment ends, and end
    now if it has ended already. The name is then removed, so the worker's own children (a plugin's
    subprocess) are not tied to a process that is not their parent."""
    named = os.environ.pop(PARENT_ENV, "")
    if not named.isdigit() or int(named) == os.getpid():
        return
    if sys.platform.startswith("linux"):
        # Sent when the thread that spawned this process ends: the one that submits the pool's
        # tasks, which outlives the workers (the pool is shut down before it returns).
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != int(named):  # it ended before the kernel was asked
        os._exit(EXIT_PARENT_GONE)
