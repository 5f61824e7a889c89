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
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
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
from rich.table import Column
from rich.text import Text

DEFAULT_HEARTBEAT_S = 30.0
HEARTBEAT_WIDTH = 150  # with its time stamp, a heartbeat fits a 160-column log line
LOG_WIDTH = 160  # a longer message goes on several lines of a log, the next ones indented
HERE = "this process"  # the slot of what trains in this process (workers are "worker <n>")


def network_kind(role: str, arch: str, defense: str = "") -> str:
    """The kind of a network unit, for the time-left estimate: ``network teacher digits_cnn nasty``."""
    return f"network {role} {arch} {defense}".rstrip()


def cell_kind(attack: str, student_arch: str) -> str:
    """The kind of a cell unit, for the time-left estimate: ``cell deepinversion mlp``."""
    return f"cell {attack} {student_arch}"


TAKEN_OVER = "cell taken over"  # a cell that is the same computation as one measured: it costs nothing


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

    def __init__(self, table_column: Column | None = None) -> None:
        super().__init__(table_column)
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
        self._left: Counter[str] = Counter()  # kinds of the units not finished yet
        self._done: Counter[str] = Counter()  # kinds of the units finished
        self._seconds: dict[str, list[float]] = {}  # kind → the seconds each finished one took
        self._priors: dict[str, float] = {}  # kind → what it cost in earlier runs (records), any machine
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
        # one line per bar at any width: the description gives way (cut with …), the figures do not
        self._bars = RichProgress(
            TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
            BarColumn(bar_width=12),
            MofNCompleteColumn(table_column=Column(no_wrap=True)),
            TimeElapsedColumn(),
            _LeftColumn(table_column=Column(no_wrap=True)),
            console=self.console,
            transient=True,
            expand=True,
        )
        with self._bars:
            yield self
        self._bars = None
        self._matrix_bar = None
        self._worker_bars = {}

    def matrix(self, kinds: Sequence[str], *, parallel: int = 1) -> None:
        """The matrix needs one network or cell of each of ``kinds`` (see :func:`network_kind`,
        :func:`cell_kind`), computed ``parallel`` at a time."""
        self.units_total, self.units_done, self.parallel = len(kinds), 0, parallel
        self._left = Counter(kinds)
        self._done = Counter()
        self._seconds = {}
        self._matrix_start = time.perf_counter()
        if self._bars is not None:
            self._matrix_bar = self._bars.add_task("matrix", total=self.units_total, left=self.left_text())

    def expect(self, priors: dict[str, float]) -> None:
        """What each kind of unit cost in earlier runs (the records' wall times, maybe of another
        machine): a kind not measured in this run yet counts at that cost, scaled by how this run's
        measured kinds compare with theirs."""
        self._priors = dict(priors)

    def working(self, what: list[str]) -> None:
        """The cells or networks being computed now (named by the heartbeat)."""
        self.working_on = list(what)

    def unit_done(self, kind: str, seconds: float | None = None) -> None:
        """One network or cell of the matrix, of ``kind``, is finished; it took ``seconds`` to compute
        (None: not computed here, taken over)."""
        self.units_done += 1
        if self._left[kind] > 0:
            self._left[kind] -= 1
        self._done[kind] += 1
        if seconds is not None:
            self._seconds.setdefault(kind, []).append(seconds)
        if self._bars is not None and self._matrix_bar is not None:
            self._bars.update(self._matrix_bar, completed=self.units_done, left=self.left_text())

    def _cost(self, kind: str) -> float | None:
        """What a unit of ``kind`` costs: the mean of those measured, else its cost in earlier runs
        (:meth:`expect`) at this run's pace, else the mean of the measured units of its attack (another
        student) or its role (another network), else of its class (networks or cells), else of every
        measured unit."""
        mine = self._seconds.get(kind)
        if mine:
            return sum(mine) / len(mine)
        if kind in self._priors:
            return self._priors[kind] * self._machine_factor()
        words = kind.split(" ")
        for matches in (
            lambda k: k == kind,
            lambda k: k.split(" ")[:2] == words[:2],
            lambda k: k.split(" ")[0] == words[0],
            lambda k: True,
        ):
            seconds = [s for k, measured in self._seconds.items() if matches(k) for s in measured]
            if seconds:
                return sum(seconds) / len(seconds)
        return None

    def _machine_factor(self) -> float:
        """This run's cost of the kinds measured both here and in earlier runs, over theirs (1 before any)."""
        both = [k for k in self._seconds if k in self._priors and self._priors[k] > 0]
        if not both:
            return 1.0
        here = sum(sum(self._seconds[k]) / len(self._seconds[k]) for k in both)
        return here / sum(self._priors[k] for k in both)

    def time_left(self) -> float | None:
        """Seconds left for the matrix (None before the first cell ends): the cost of the units left
        at the measured cost of their kind, at the pace the finished units were computed (the wall
        time so far over their cost, which covers the workers' parallelism and their idle time)."""
        if self._matrix_start is None or self.units_done == 0:
            return None
        if any(kind.startswith("cell ") for kind in self._left) and not any(
            k.startswith("cell ") for k in self._seconds
        ):
            return None  # networks alone, with the workers' start-up, say little of the cells' pace
        elapsed = time.perf_counter() - self._matrix_start
        done = sum((self._cost(kind) or 0.0) * n for kind, n in self._done.items())
        left = sum((self._cost(kind) or 0.0) * n for kind, n in self._left.items() if n > 0)
        if done <= 0:  # nothing measured yet, or only units that cost nothing: count units
            return elapsed / self.units_done * max(0, self.units_total - self.units_done)
        return elapsed * left / done

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
            lines = textwrap.wrap(
                f"{stamp} {message}",
                LOG_WIDTH,
                subsequent_indent=" " * 9,
                break_on_hyphens=False,
                break_long_words=False,
            )
            self.console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
            self.console.file.flush()

    def heartbeat_line(self) -> str:
        """How far the matrix is, the time left, then what trains where, in at most
        :data:`HEARTBEAT_WIDTH` characters (what trains is cut with … past that)."""
        with self._lock:
            training = sorted(self.training.items())
        if training:
            parts = []
            for slot, (description, epoch, epochs) in training:
                where = "" if slot == HERE else f"{slot}: "
                parts.append(f"{where}{self._label(description, epoch, epochs)}")
            what = "training " + "; ".join(parts)
        elif self.working_on:
            what = f"loading or evaluating {', '.join(self.working_on)}"
        else:
            what = "training nothing right now (loading, evaluating or starting)"
        matrix = f"{self.units_done}/{self.units_total} networks and cells done, " if self.units_total else ""
        line = f"heartbeat: {matrix}{self.left_text()}; {what}"
        return line if len(line) <= HEARTBEAT_WIDTH else line[: HEARTBEAT_WIDTH - 1] + "…"

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

    def unit_done(self, kind: str, seconds: float | None = None) -> None:
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
