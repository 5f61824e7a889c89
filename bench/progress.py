"""Progress reporting, for a person at a terminal and for a log file.

- On a terminal: rich progress bars, one per network training in this process (with its epoch) or,
  with workers, one per worker naming what it trains; above them the matrix's bar with the time
  left, estimated from the networks and cells already timed.
- Anywhere else (stdout redirected to a file, a Hydra job's log): one timestamped line per message
  (each finished network and cell: what, status, accuracy, seconds), and every ``heartbeat_s``
  seconds a line naming what trains, at which epoch, and the time left for the matrix.
- ``quiet``: nothing at all.

Worker processes report through :class:`RemoteProgress`, which sends the same events to the parent
over a multiprocessing queue (:func:`relay_events` drains it into the parent's :class:`Progress`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

DEFAULT_HEARTBEAT_S = 30.0
HERE = "this process"  # the slot of what trains in this process (workers are "worker <n>")


def duration(seconds: float) -> str:
    """``75`` → ``1 min 15 s``; ``4000`` → ``1 h 06 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class _LeftColumn(ProgressColumn):
    """The matrix's own estimate where a task carries one (``left``), rich's elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self._rich = TimeRemainingColumn()

    def render(self, task: Task) -> Text:
        if "left" in task.fields:
            return Text(task.fields["left"], style="progress.remaining")
        return self._rich.render(task)


class Progress:
    """Reports what a run is doing; see the module docstring for the three modes.

    ``live``: bars (default: when the console is a terminal); ``logger``: send log-mode lines to this
    logger instead of the console (a Hydra job's log file).
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        quiet: bool = False,
        live: bool | None = None,
        logger: logging.Logger | None = None,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    ) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.live = (self.console.is_terminal if live is None else live) and logger is None and not quiet
        self.logger = logger
        self.heartbeat_s = heartbeat_s
        self._bars: RichProgress | None = None
        self._lock = threading.Lock()
        # slot → [description, epoch, epochs]: what trains now, here or on each worker
        self.training: dict[str, list[Any]] = {}
        self._worker_bars: dict[str, Any] = {}
        self._matrix_bar: Any = None
        self.units_total = 0  # networks and cells the matrix needs; the time left is estimated from them
        self.units_done = 0
        self.parallel = 1
        self._matrix_start: float | None = None
        self.working_on: list[str] = []  # the cells or networks the executor has in hand now
        self.tasks_started = 0  # trainings begun in this process (a network that trained nothing was cached)

    # -- the run as a whole --------------------------------------------------------------------

    @contextmanager
    def session(self) -> Iterator[Progress]:
        if self.quiet:
            yield self
            return
        if not self.live:
            stop = threading.Event()
            beat = threading.Thread(target=self._heartbeats, args=(stop,), name="kdbench-heartbeat", daemon=True)
            beat.start()
            try:
                yield self
            finally:
                stop.set()
                beat.join()
            return
        self._bars = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            _LeftColumn(),
            console=self.console,
            transient=True,
        )
        with self._bars:
            yield self
        self._bars = None
        self._matrix_bar = None
        self._worker_bars = {}

    def matrix(self, units: int, *, parallel: int = 1) -> None:
        """The matrix needs ``units`` networks and cells, computed ``parallel`` at a time."""
        self.units_total, self.units_done, self.parallel = units, 0, parallel
        self._matrix_start = time.perf_counter()
        if self._bars is not None:
            self._matrix_bar = self._bars.add_task("matrix", total=units, left=self.left_text())

    def working(self, what: list[str]) -> None:
        """The cells or networks being computed now (named by the heartbeat)."""
        self.working_on = list(what)

    def unit_done(self) -> None:
        """One network or cell of the matrix is finished."""
        self.units_done += 1
        if self._bars is not None and self._matrix_bar is not None:
            self._bars.update(self._matrix_bar, completed=self.units_done, left=self.left_text())

    def time_left(self) -> float | None:
        """Seconds left for the matrix: the mean wall time per finished network or cell so far
        times those left (None before the first one ends)."""
        if self._matrix_start is None or self.units_done == 0:
            return None
        elapsed = time.perf_counter() - self._matrix_start
        return elapsed / self.units_done * max(0, self.units_total - self.units_done)

    def left_text(self) -> str:
        left = self.time_left()
        if left is None:
            return "time left: estimating"
        return f"about {duration(left)} left"

    # -- one training ------------------------------------------------------------------------

    @contextmanager
    def task(self, description: str, total: int, *, epochs: int | None = None) -> Iterator[Callable[[int], None]]:
        """A training of ``total`` steps (``epochs`` epochs of equal length, if given)."""
        self.tasks_started += 1
        if self.quiet and not self._relays():
            yield lambda n: None
            return
        per_epoch = max(1, total // epochs) if epochs else None
        state = {"done": 0, "epoch": 1 if epochs else None}
        self._training(HERE, description, state["epoch"], epochs)
        bars = self._bars
        task_id = bars.add_task(self._label(description, state["epoch"], epochs), total=total) if bars else None

        def advance(n: int) -> None:
            state["done"] += n
            if per_epoch is not None:
                epoch = min(epochs, state["done"] // per_epoch + 1)
                if epoch != state["epoch"]:
                    state["epoch"] = epoch
                    self._training(HERE, description, epoch, epochs)
                    if bars is not None:
                        bars.update(task_id, description=self._label(description, epoch, epochs))
            if bars is not None:
                bars.advance(task_id, n)

        try:
            yield advance
        finally:
            self._idle(HERE)
            if bars is not None:
                bars.remove_task(task_id)

    @staticmethod
    def _label(description: str, epoch: int | None, epochs: int | None) -> str:
        return f"{description} · epoch {epoch}/{epochs}" if epochs else description

    def _relays(self) -> bool:
        return False  # RemoteProgress: a quiet worker still tells its parent what it trains

    def _training(self, slot: str, description: str, epoch: int | None, epochs: int | None) -> None:
        with self._lock:
            self.training[slot] = [description, epoch, epochs]

    def _idle(self, slot: str) -> None:
        with self._lock:
            self.training.pop(slot, None)

    # -- what workers report -----------------------------------------------------------------

    def worker_event(self, event: tuple) -> None:
        """An event a worker's :class:`RemoteProgress` sent: ("train", slot, description, epoch,
        epochs), ("idle", slot) or ("log", message)."""
        kind = event[0]
        if kind == "log":
            self.log(event[1])
            return
        slot = event[1]
        if kind == "train":
            _, _, description, epoch, epochs = event
            self._training(slot, description, epoch, epochs)
            if self._bars is not None:
                label = f"{slot}: {self._label(description, epoch, epochs)}"
                done = (epoch - 1) if epochs else 0
                if slot in self._worker_bars:
                    self._bars.update(self._worker_bars[slot], description=label, completed=done, total=epochs or 1)
                else:
                    self._worker_bars[slot] = self._bars.add_task(label, total=epochs or 1, completed=done)
        elif kind == "idle":
            self._idle(slot)
            if self._bars is not None and slot in self._worker_bars:
                self._bars.update(self._worker_bars[slot], description=f"{slot}: waiting for work", completed=0)

    # -- messages ----------------------------------------------------------------------------

    def log(self, message: str) -> None:
        if self.quiet:
            return
        if self.live:
            self.console.print(message, markup=False, highlight=False)
        elif self.logger is not None:
            self.logger.info(message)
        else:
            stamp = datetime.now().strftime("%H:%M:%S")
            self.console.print(f"{stamp} {message}", markup=False, highlight=False, soft_wrap=True)
            self.console.file.flush()

    def heartbeat_line(self) -> str:
        with self._lock:
            training = sorted(self.training.items())
        if training:
            parts = []
            for slot, (description, epoch, epochs) in training:
                where = "" if slot == HERE else f"{slot}: "
                parts.append(f"{where}{self._label(description, epoch, epochs)}")
            what = "training " + "; ".join(parts)
        else:
            what = "training nothing right now (loading, evaluating or starting)"
        if self.working_on:
            what = f"working on {', '.join(self.working_on)}; {what}"
        matrix = f"{self.units_done}/{self.units_total} networks and cells done, " if self.units_total else ""
        return f"heartbeat: {what}; {matrix}{self.left_text()}"

    def _heartbeats(self, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_s):
            self.log(self.heartbeat_line())


class RemoteProgress(Progress):
    """A worker's reporter: no output of its own; what trains and every message go to the parent."""

    def __init__(self, send: Callable[[tuple], None], slot: str) -> None:
        super().__init__(Console(stderr=True), quiet=True)
        self.send = send
        self.slot = slot

    def _relays(self) -> bool:
        return True

    def _training(self, slot: str, description: str, epoch: int | None, epochs: int | None) -> None:
        self.send(("train", self.slot, description, epoch, epochs))

    def _idle(self, slot: str) -> None:
        self.send(("idle", self.slot))

    def log(self, message: str) -> None:
        self.send(("log", message))

    def working(self, what: list[str]) -> None:
        """The cells or networks being computed now (named by the heartbeat)."""
        self.working_on = list(what)

    def unit_done(self) -> None:
        pass  # the parent counts each task when its result arrives


@contextmanager
def relay_events(queue: Any, progress: Progress) -> Iterator[None]:
    """Hand every event on ``queue`` (from the workers' :class:`RemoteProgress`) to ``progress``
    on a thread of the parent, while the block runs."""
    import queue as queues

    stop = threading.Event()

    def drain() -> None:
        while True:
            try:
                event = queue.get(timeout=0.2)
            except queues.Empty:
                if stop.is_set():
                    return
                continue
            except (EOFError, OSError):
                return
            progress.worker_event(event)

    thread = threading.Thread(target=drain, name="kdbench-worker-events", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
