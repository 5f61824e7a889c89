"""Run a plan: check it can run, then compute its pending cells in this process or on workers.

Both the ``bench run`` command and each multirun job come through here, so a run is validated
the same way whichever executor computes it.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import kdbench
import torch
from kdbench.api import ATTACKS, DEFENSES
from kdbench.cache import remove_stale_temporaries
from kdbench.cells import measured_records, pending_cells
from kdbench.config import RunPlan
from kdbench.datasets import load_dataset
from kdbench.errors import BenchError
from kdbench.progress import Progress
from kdbench.records import Record, RecordStore
from kdbench.registry import build
from kdbench.runner import Runner
from kdbench.workers import run_in_workers


def check_runnable(plan: RunPlan) -> None:
    """Refuse, before anything trains, a results or cache folder that cannot be written, a dataset
    that cannot be loaded (a missing folder is bad input, not a failure recorded in every cell), and
    a plugin option the dataset's shape rules out (``defense.topk.k`` above its class count)."""
    check_creatable(plan.dataset_dir, "results folder", "results_dir")
    check_creatable(plan.cache_dir, "cache folder", "cache_dir")
    data = load_dataset(plan.dataset)
    check_task(plan, data.num_classes, data.input_shape)
    check_writable(plan)  # last: it creates the results folder


def check_task(plan: RunPlan, num_classes: int, input_shape: tuple[int, int, int]) -> None:
    """Each chosen defense's and attack's :meth:`~kdbench.api.Plugin.check_task` on the dataset's shape."""
    for registry, chosen in ((DEFENSES, plan.defenses), (ATTACKS, plan.attacks)):
        for name, options in chosen.items():
            build(registry.get(name), options).check_task(num_classes, input_shape)


def check_creatable(folder: Path, what: str, key: str) -> None:
    """Refuse, creating nothing, a folder that cannot be made: one under a regular file, or under a
    folder this user cannot write."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        problem = f"{existing} is a file"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing}: permission denied"
    else:
        return
    raise BenchError(f"{what} {folder} is not writable ({problem}); set {key}=<a writable folder>")


def run_matrix(plan: RunPlan, progress: Progress) -> list[Record]:
    """Compute every cell of ``plan`` that has no final record for its configuration; returns the
    records written (cells already done are skipped)."""
    store = RecordStore(plan.dataset_dir)
    for folder in (plan.dataset_dir, store.folder, plan.cache_dir):
        for stray in remove_stale_temporaries(folder):
            progress.log(f"removed {stray}, left half-written by a run that was killed")
    todo = pending_cells(plan, store)
    skipped = len(plan.cells) - len(todo)
    if skipped:
        progress.log(f"{skipped} of {len(plan.cells)} cells already done for this configuration")
    if not todo:
        return []
    progress.log(f"{len(todo)} of {len(plan.cells)} cells to compute; records go to {plan.dataset_dir}/records/")
    measured = measured_records(plan, store)
    if plan.workers > 1 and len({key for _, key in todo if key not in measured}) > 1:
        return run_in_workers(plan, progress, todo, measured)
    previous = torch.get_num_threads()
    torch.set_num_threads(plan.threads)  # the threads the cache keys hold, as in a worker
    try:
        return Runner(plan, progress).run(todo, measured)
    finally:
        torch.set_num_threads(previous)


def check_writable(plan: RunPlan) -> None:
    folder = plan.dataset_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise BenchError(
            f"results folder {folder} is not writable ({err.strerror}); set results_dir=<a writable folder>"
        ) from None


def settings_of(plan: RunPlan) -> dict[str, Any]:
    """What a leaderboard states so that it can be reproduced from its own header."""
    settings = {
        "dataset": plan.dataset.name,
        "preset": plan.preset,
        "teacher": ", ".join(plan.teachers),
        "seeds": len(plan.seeds),
        "epochs": plan.recipe.epochs,
        "recipe": asdict(plan.recipe),
        "device": str(plan.device),
        "workers": plan.workers,
        "threads": plan.threads,
        "precision": "bf16" if plan.acceleration.bf16 else "fp32",
        "torch": torch.__version__,
        "kdbench": kdbench.__version__,
    }
    if plan.recipe_by_model:
        settings["recipe_by_model"] = {arch: asdict(recipe) for arch, recipe in plan.recipe_by_model.items()}
    if plan.paper:
        settings["paper"] = plan.paper
    return settings
