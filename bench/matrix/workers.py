"""Cells on several worker processes at once (``workers=N``; ``auto``: one per GPU, one per CPU core).

The parent schedules and each worker computes: a worker is a :class:`~kdbench.matrix.runner.Runner` of its
own (its own data, its own memo of teachers) in a spawned process with the plan's ``threads``,
on its own GPU when there are several. Teachers and scratch baselines are built first, as tasks of
their own, so that no cell waits behind another cell for the network it attacks; a cell is handed
out once both of its networks exist. Workers share those networks through the cache (a second
worker needing a teacher that is being trained waits on its lock, then loads it) and write each
record themselves the moment the cell ends, so stopping the parent loses only unfinished cells.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch

from kdbench.config.devices import worker_device
from kdbench.config.plan import Cell, RunPlan
from kdbench.data.images import ImageData
from kdbench.errors import BenchError, CannotWrite, RunStopped
from kdbench.faults import fault_point
from kdbench.matrix.lifeline import EXIT_PARENT_GONE, workers_end_with_this_process
from kdbench.matrix.pending import PendingCell, cell_title, computations, outcome, take_over
from kdbench.matrix.runner import PluginFailed, Runner
from kdbench.plugins.discovery import load_plugins
from kdbench.progress import Progress, RemoteProgress, cell_kind, network_kind, relay_events
from kdbench.store.records import Record, RecordStore
from kdbench.training.loop import TrainingDiverged


class WorkerDied(RunStopped):
    """A worker process ended abruptly (killed, out of memory): the run stops, finished cells are kept."""


@dataclass(frozen=True)
class Network:
    """A network cells depend on: a defense's teacher or a student's scratch baseline."""

    kind: str  # "teacher" | "baseline"
    arch: str
    defense: str  # "" for a baseline
    seed: int


def networks_of(cell: Cell) -> tuple[Network, Network]:
    teacher = Network("teacher", cell.teacher, cell.defense, cell.seed)
    return teacher, Network("baseline", cell.student_arch, "", cell.seed)


def build_order(cells: list[Cell]) -> list[Network]:
    """Every network the cells need, in the order to build them.

    Per (teacher, seed): the first defense's teacher, then that seed's scratch baselines, then the
    other defenses' teachers. Other defenses usually start from the first one (the nasty teacher
    trains against the normal one, logit defenses wrap it), so while one worker trains it the next
    builds the baselines, which depend on nothing, instead of waiting on its lock.
    """
    teachers = list(dict.fromkeys(networks_of(cell)[0] for cell in cells))
    baselines = list(dict.fromkeys(networks_of(cell)[1] for cell in cells))
    order: list[Network] = []
    for teacher in teachers:
        first_of_group = all((t.arch, t.seed) != (teacher.arch, teacher.seed) for t in order)
        order.append(teacher)
        if first_of_group:
            order += [b for b in baselines if b.seed == teacher.seed and b not in order]
    return order


# -- inside a worker process -------------------------------------------------------------------

_runner: Runner | None = None  # this worker's Runner, made by _start_worker


# How often a worker checks that the process that started it is still there (seconds).
PARENT_POLL_S = 0.2


def _watch_parent(parent: int) -> None:
    """End this worker the moment its parent is gone (killed with SIGKILL, which no handler sees):
    the worker is then reparented, and its cells would go on training for nobody. The kernel does
    this on Linux already (:mod:`kdbench.matrix.lifeline`); the watch covers other systems, and
    scripts whose main module imports torch before kdbench."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(EXIT_PARENT_GONE)  # mid-write temporaries are removed by the next run


def _start_worker(
    plan_bytes: bytes,
    data: ImageData | None,
    threads: int,
    slots: multiprocessing.Queue,
    events: multiprocessing.Queue,
    parent: int,
) -> None:
    import gc
    import signal

    fault_point("start/worker")
    threading.Thread(target=_watch_parent, args=(parent,), name="kdbench-parent-watch", daemon=True).start()
    # Ctrl-C reaches the whole process group: the parent alone decides what stops (it ends the workers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    load_plugins()  # before unpickling the plan: its option dataclasses come from plugin modules
    plan = pickle.loads(plan_bytes)
    slot = slots.get()
    plan = replace(plan, device=worker_device(plan.device, slot), workers=1)
    global _runner
    # what this worker trains (network, epoch) and its messages go to the parent's progress
    _runner = Runner(plan, RemoteProgress(events.put, f"worker {slot + 1}"), data)
    # What the imports made lives as long as the worker: out of the garbage collector's sight, the
    # worker's exit takes 0.3-0.5 s instead of 1.2-1.4 s (its last collection walked all of torch).
    gc.freeze()


def _build_network(network: Network) -> float:
    """Build (or load) ``network`` in this worker; the seconds it took."""
    start = time.perf_counter()
    try:
        if network.kind == "teacher":
            _runner.teacher(network.arch, network.defense, network.seed)
        else:
            _runner.baseline(network.arch, network.seed)
    except CannotWrite:
        raise  # stops the run
    except (TrainingDiverged, BenchError, PluginFailed):
        pass  # not an error of the run: each cell that needs this network records why it has no result
    return time.perf_counter() - start


def _compute_cells(cells: list[PendingCell]) -> list[tuple[Record, bool]]:
    """Each cell's record, and whether this worker computed it (not another run on the same folder)."""
    return [_runner.compute(pending) for pending in cells]


# -- in the parent -------------------------------------------------------------------------------


# A dataset up to this size is handed to the workers by the parent, which has loaded it already:
# each worker then skips the loader (on digits, importing scikit-learn: about 1 s on the 2-core
# machine). A larger one is loaded by each worker, not copied through a pipe.
SHARED_DATA_LIMIT_BYTES = 64 * 2**20


def shareable(data: ImageData | None) -> ImageData | None:
    """``data`` on the CPU if it is small enough to hand to the workers, else None."""
    if data is None:
        return None
    splits = [data.train, data.test] + ([data.heldout] if data.heldout is not None else [])
    size = sum(t.nbytes for split in splits for t in (split.x, split.y))
    return data.to("cpu") if size <= SHARED_DATA_LIMIT_BYTES else None


@contextmanager
def worker_pool(
    plan: RunPlan, workers: int, progress: Progress | None = None, data: ImageData | None = None
) -> Iterator[ProcessPoolExecutor]:
    """``workers`` spawned processes that each hold a Runner for ``plan`` (with ``data``, the plan's
    dataset, when the caller has it); what they train reaches ``progress``. On an exception in the
    block, Ctrl-C included, the workers are ended at once (the cache and records are written
    atomically)."""
    context = multiprocessing.get_context("spawn")  # fork would copy a CUDA context and held locks
    slots, events = context.Queue(), context.Queue()
    for worker in range(workers):
        slots.put(worker)
    threads = plan.threads
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(pickle.dumps(plan), shareable(data), threads, slots, events, os.getpid()),
    )
    try:
        # workers are spawned as tasks are submitted, inside the block
        with workers_end_with_this_process(), relay_events(events, progress or Progress(quiet=True)):
            yield pool
    except BaseException:
        for child in set(multiprocessing.active_children()) - before:
            child.terminate()  # mid-cell: what it had not written yet is lost, nothing else
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_in_workers(
    plan: RunPlan,
    progress: Progress,
    todo: list[PendingCell],
    measured: dict[str, Record],
    data: ImageData | None = None,
) -> list[Record]:
    """Compute ``todo`` (cells with their keys) on ``plan.workers`` processes (given ``data``, the
    plan's dataset, when the caller has loaded it); returns the records."""
    store = RecordStore(plan.dataset_dir)
    done: list[Record] = []
    taken, groups = computations(todo, measured)
    for cell, twin in taken:
        progress.log(f"{cell.name}: the same computation as {twin.cell}, measured already")
        done.append(take_over(store, cell, twin))
    cells = [group[0] for group in groups.values()]
    networks = build_order([pending.cell for pending in cells])
    # The students of one (teacher, defense, attack, seed) go to one worker together: what an attack
    # derives from the teacher alone (DeepInversion's synthesised pool) is then made once, not per worker.
    batches: dict[tuple, list[PendingCell]] = {}
    for pending in cells:
        cell = pending.cell
        batches.setdefault((cell.teacher, cell.defense, cell.attack, cell.seed), []).append(pending)
    waiting = list(batches.values())
    workers = min(plan.workers, len(waiting))
    progress.log(f"{len(cells)} cells on {workers} worker processes")

    built: set[Network] = set()
    in_flight: dict[Future, Network | list[PendingCell]] = {}
    cost = AttackCost()

    def next_task(pool: ProcessPoolExecutor) -> Future | None:
        if networks:
            network = networks.pop(0)
            return _submit(pool, in_flight, network, _build_network, network)
        ready = [i for i, batch in enumerate(waiting) if all(n in built for c, _ in batch for n in networks_of(c))]
        if not ready:
            return None
        # every cell of a batch is one (teacher, defense, attack, seed): its first names the attack
        batch = waiting.pop(ready[cost.first([waiting[i][0][0].attack for i in ready])])
        return _submit(pool, in_flight, batch, _compute_cells, batch)

    progress.matrix(
        [network_kind(n.kind, n.arch, n.defense) for n in networks]
        + [cell_kind(p.cell.attack, p.cell.student_arch) for p in cells],
        parallel=workers,
    )
    with worker_pool(plan, workers, progress, data) as pool:
        finished = 0
        while waiting or in_flight or networks:
            while len(in_flight) < workers and next_task(pool) is not None:
                pass
            progress.working([describe(task) for task in in_flight.values()])
            ready, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in ready:
                task = in_flight.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    busy = [describe(t) for t in [task, *in_flight.values()]]
                    raise WorkerDied(
                        f"a worker process died (killed or out of memory) while computing: {', '.join(busy)}; "
                        "finished cells are saved, rerun the same command to continue"
                    ) from None
                if isinstance(task, Network):
                    built.add(task)
                    progress.unit_done(network_kind(task.kind, task.arch, task.defense), result)
                    continue
                for (cell, key), (record, computed) in zip(task, result, strict=True):
                    cost.add(cell.attack, record.wall_s if computed else None)
                    finished += 1
                    progress.unit_done(cell_kind(cell.attack, cell.student_arch), record.wall_s if computed else None)
                    how = outcome(record) if computed else "computed by another run, reused"
                    progress.log(f"{cell_title(cell, finished, len(cells))}: {how}")
                    if computed:
                        done.append(record)
                    for twin in groups[key.digest][1:]:
                        done.append(take_over(store, twin.cell, record))
    return done


class AttackCost:
    """What a cell of each attack has cost so far in this run, for handing out the costliest work
    first (longest processing time first): the workers then finish together instead of one waiting
    on the last long cell. An attack not measured yet counts as the costliest, so that each attack's
    first cell is measured early."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}

    def add(self, attack: str, wall_s: float | None) -> None:
        if wall_s is not None:
            self.seconds.setdefault(attack, []).append(wall_s)

    def estimate(self, attack: str) -> float:
        times = self.seconds.get(attack)
        return sum(times) / len(times) if times else float("inf")

    def first(self, attacks: list[str]) -> int:
        """The index of the attack whose cells to hand out first: the costliest, the earliest of equals."""
        return max(range(len(attacks)), key=lambda i: (self.estimate(attacks[i]), -i))


def describe(task: Network | list[PendingCell]) -> str:
    if isinstance(task, Network):
        return f"{task.defense or 'scratch'} {task.arch} (seed {task.seed})"
    return ", ".join(cell.name for cell, _ in task)


def _submit(
    pool: ProcessPoolExecutor, in_flight: dict, task: Network | list[PendingCell], fn: Callable, *args
) -> Future:
    future = pool.submit(fn, *args)
    in_flight[future] = task
    return future
