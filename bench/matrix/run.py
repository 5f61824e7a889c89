"""Run a plan: check it can run, then compute its pending cells in this process or on workers.

Both the ``bench run`` command and each multirun job come through here, so a run is validated
the same way whichever executor computes it.
"""

from __future__ import annotations

import os
import shlex
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from kdbench.api import DefenseContext
from kdbench.config.plan import RunPlan
from kdbench.data.catalogue import load_dataset
from kdbench.data.images import (
    NORMALIZE_HELP,
    DatasetConfig,
    ImageData,
    Split,
    channel_stats,
    with_normalization,
)
from kdbench.errors import BenchError, ConfigError, DatasetNotFoundError, options_of
from kdbench.matrix.pending import measured_records, pending_cells
from kdbench.matrix.runner import Runner
from kdbench.matrix.workers import run_in_workers
from kdbench.models.weights import TEST_SPLIT_NOTE
from kdbench.progress import Progress, cell_kind, duration
from kdbench.store.atomic import sweep_results
from kdbench.store.cache import ArtifactCache
from kdbench.store.records import STATUS_NA, STATUS_OK, CellDetails, Record, RecordStore
from kdbench.training.loop import Trainer
from kdbench.version import __version__


def check_runnable(plan: RunPlan) -> ImageData:
    """Refuse, before anything trains, a results or cache folder that cannot be written, a dataset
    that cannot be loaded (a missing folder is bad input, not a failure recorded in every cell), a
    plugin option the dataset's shape rules out (``defense.topk.k`` above its class count), and an
    owner's weight file that does not load or scores near chance on the test split (inputs it does
    not expect). Returns the dataset, loaded on the CPU."""
    check_creatable(plan.dataset_dir, "results folder", "results_dir")
    check_creatable(plan.cache_dir, "cache folder", "cache_dir")
    data = load_dataset(plan.dataset)
    check_task(plan, data.num_classes, data.input_shape)
    check_surrogate_data(plan)
    for name, path, sha256 in owned_files(plan):
        check_owned_network(plan, data, path, sha256, name)
    check_writable(plan)  # last: it creates the results folder
    return data


def check_task(plan: RunPlan, num_classes: int, input_shape: tuple[int, int, int]) -> None:
    """Each chosen defense's and attack's :meth:`~kdbench.api.Plugin.check_task` on the dataset's shape."""
    for name in plan.defenses:
        with options_of(f"defense.{name}"):
            plan.defense(name).check_task(num_classes, input_shape)
    for name in plan.attacks:
        with options_of(f"attack.{name}"):
            plan.attack(name).check_task(num_classes, input_shape)


def check_surrogate_data(plan: RunPlan) -> None:
    """Find now, not after the teachers have trained, the files of a dataset that an attack's options
    name as its queries (``source=surrogate``, ``surrogate``, ``surrogate_root``: the black-box
    attack's options and its variants'). Here rather than in the attack's ``check_task``, whose
    module's source is part of every key of its cells."""
    for name, options in plan.attacks.items():
        surrogate = getattr(options, "surrogate", None)
        if getattr(options, "source", None) != "surrogate" or not surrogate:
            continue
        try:
            load_dataset(DatasetConfig(name=surrogate, data_root=getattr(options, "surrogate_root", None)))
        except DatasetNotFoundError as err:
            raise ConfigError(
                f"attack.{name}.surrogate_root must locate the surrogate dataset {surrogate!r}: {err}"
            ) from None


def check_creatable(folder: Path, what: str, key: str) -> None:
    """Refuse, creating nothing, a folder that cannot be made: one under a regular file, or under a
    folder this user cannot write."""
    existing = folder
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
    except OSError as err:  # a name longer than the file system allows, say
        raise BenchError(f"{what} {folder} is not writable ({err.strerror}); set {key}=<a writable folder>") from None
    if not existing.is_dir():
        problem = f"{existing} is a file"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing}: permission denied"
    else:
        return
    raise BenchError(f"{what} {folder} is not writable ({problem}); set {key}=<a writable folder>")


def owned_files(plan: RunPlan) -> list[tuple[str, Path, str]]:
    """The owner's weight files the run loads: (option, path, sha256)."""
    files = []
    if plan.teacher_file is not None:
        files.append(("teacher_weights", plan.teacher_file.path, plan.teacher_file.sha256))
    for options in plan.defenses.values():
        file = getattr(options, "weight_file", None)
        if callable(file):
            files.append(file())
    return files


def check_owned_network(plan: RunPlan, data: ImageData, path: Path, sha256: str, where: str) -> float:
    """Load the owner's network once on the CPU and measure it on the test split; a score within
    twice chance means it sees inputs other than those it was trained on: stop, saying so."""
    arch = plan.teachers[0]
    ctx = DefenseContext(
        trainer=Trainer(torch.device("cpu"), 0, plan.recipe_for(arch), Progress(quiet=True)),
        data=data,
        teacher_arch=arch,
        cache=ArtifactCache(plan.cache_dir),
        identity={},
    )
    model = ctx.loaded(path, where, sha256)
    declared = plan.dataset.normalize
    scores = input_format_scores(ctx.trainer, model, data, declared)
    best = max(scores, key=lambda fmt: scores[fmt])
    if scores[best] - scores[format_name(declared)] >= BETTER_FORMAT_POINTS:
        raise ConfigError(
            f"{where}={path} scores {scores[format_name(declared)]:.1f} % with dataset.normalize="
            f"{format_name(declared)} but {scores[best]:.1f} % with dataset.normalize={best} (the first "
            f"{FORMAT_PROBE_IMAGES} test images): it was likely trained on other inputs; set dataset.normalize to "
            f"what it was trained with ({NORMALIZE_HELP})"
        )
    # the probe is the whole test split when that is small (digits): its score is the accuracy
    whole = len(data.test) <= FORMAT_PROBE_IMAGES
    accuracy = scores[format_name(declared)] if whole else ctx.trainer.accuracy(model, data)
    chance = 100.0 / data.num_classes
    if accuracy < NEAR_CHANCE * chance:
        raise ConfigError(
            f"{where}={path} scores {accuracy:.1f} % on the test split of {data.name} (chance: {chance:.1f} %): "
            f"the network is untrained or expects other inputs; set dataset.normalize to what it was trained "
            f"with ({NORMALIZE_HELP}; now {plan.dataset.normalize!r}, inputs {list(data.input_shape)})"
        )
    return accuracy


# A loaded network scoring below this multiple of chance is refused before any attack runs.
NEAR_CHANCE = 2.0

# A loaded network that scores this many points more under another common input format than under
# the declared one was trained on that other format: refused before any attack runs. Measured on
# the first FORMAT_PROBE_IMAGES test images, the same for every format (a paired comparison).
BETTER_FORMAT_POINTS = 2.0
FORMAT_PROBE_IMAGES = 2000
COMMON_FORMATS = (None, "[0,1]", "[-1,1]", "[0,255]", "imagenet", "cifar")


def input_format_scores(trainer: Trainer, model: torch.nn.Module, data: ImageData, declared: Any) -> dict[str, float]:
    """The accuracy (%) of ``model`` on the first test images under the declared ``dataset.normalize``
    and each common format that fits the images' channels, by :func:`format_name`."""
    probe = replace(data, test=Split(data.test.x[:FORMAT_PROBE_IMAGES], data.test.y[:FORMAT_PROBE_IMAGES]))
    own_mean, own_std = channel_stats(data.train.x, data.pixel_max)
    scores = {format_name(declared): trainer.accuracy(model, probe)}  # the data come normalised as declared
    for fmt in COMMON_FORMATS:
        if format_name(fmt) in scores:
            continue
        if fmt is None:
            served = replace(probe, mean=own_mean, std=own_std)
        else:
            try:
                served = with_normalization(probe, fmt)
            except ConfigError:  # a three-channel convention for one-channel images
                continue
        scores[format_name(fmt)] = trainer.accuracy(model, served)
    return scores


def format_name(fmt: Any) -> str:
    """``dataset.normalize`` as typed on the command line (null: the dataset's own statistics)."""
    return "null" if fmt is None else str(fmt).replace(" ", "")


def run_command(
    overrides: list[str], console: Console, values: Mapping[str, Any] | None = None
) -> tuple[RunPlan, list[Record]]:
    """``bench run all OVERRIDES``: validate, compute what is pending, write and print the tables.
    ``values``: settings given as Python values (:func:`kdbench.evaluate`'s), applied after the
    overrides. Returns the plan and the records written (the CLI and ``evaluate`` share it)."""
    from kdbench.config.compose import compose_config
    from kdbench.config.plan import plan_from_config
    from kdbench.report.files import write_reports
    from kdbench.report.reference import compare_with_reference
    from kdbench.report.terminal import print_summary

    command = command_line([*overrides, *(f"{key}={as_override(value)}" for key, value in (values or {}).items())])
    plan = replace(plan_from_config(compose_config(overrides, values)), command=command)
    data = check_runnable(plan)
    progress = Progress(console, quiet=plan.quiet, heartbeat_s=plan.heartbeat_s)
    if plan.paper_differences:
        progress.log(
            f"preset {plan.preset} runs with settings other than the paper's ({'; '.join(plan.paper_differences)}): "
            "its published figures are shown beside the results without a difference"
        )
    if data.caveat:
        progress.log(data.caveat)
    start = time.perf_counter()
    with progress.session():
        done = run_matrix(plan, progress, data)
    elapsed = time.perf_counter() - start
    settings = settings_of(plan, data)
    settings["command"] = command
    # the board of this run's cells; `bench report` shows every record of the folder
    board = write_reports(plan.dataset_dir, settings, cells={cell.name for cell in plan.selected_cells})
    notes = []
    for option, path, _ in owned_files(plan):  # the leaderboard's header says it too
        name = (
            f" as {plan.teacher_file.label(plan.teachers[0])}"
            if option == "teacher_weights" and plan.teacher_file
            else ""
        )
        notes.append(f"{option}={path}{name}: {TEST_SPLIT_NOTE}")
    for teacher in plan.teachers:
        cannot = [attack for (arch, attack) in plan.not_applicable if arch == teacher]
        if cannot:
            notes.append(
                f"n/a: {', '.join(cannot)} cannot run on teacher {teacher} (the reasons: leaderboard.md, records.csv)."
            )
    took = f"{len(done)} cell(s) computed, {len(plan.cells) - len(done)} reused, in {duration(elapsed)}."
    comparison = (
        None
        if plan.reference_dir is None
        else compare_with_reference(plan.dataset_dir, plan.reference_dir / plan.reference_name)
    )
    notes.append(took if comparison is None else f"{took} {comparison.summary()}")  # one paragraph: a line less
    console.print()
    print_summary(board, console, f"kdbench: {plan.dataset.name}", plan.dataset_dir, notes)
    return plan, done


def as_override(value: Any) -> str:
    """A Python value as it would be typed in an override, for the command a record names."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{as_override(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(as_override(v) for v in value) + "]"
    return str(value)


def command_line(overrides: list[str], *, multirun: bool = False) -> str:
    """The ``bench`` command that asks for this run, quoted for a shell (kept in records and tables)."""
    return shlex.join(["bench", "run", "all", *(["-m"] if multirun else []), *overrides])


def run_matrix(plan: RunPlan, progress: Progress, data: ImageData | None = None) -> list[Record]:
    """Compute every cell of ``plan`` that has no final record for its configuration; returns the
    records written (cells already done are skipped). ``data``: the plan's dataset, when the caller
    has loaded it already (on any device)."""
    store = RecordStore(plan.dataset_dir)
    for stray in sweep_results(plan.dataset_dir, plan.cache_dir):
        progress.log(f"removed {stray}, left half-written by a run that was killed")
    record_not_applicable(plan, store, progress)
    todo = pending_cells(plan, store)
    skipped = len(plan.cells) - len(todo)
    if skipped:
        progress.log(f"{skipped} of {len(plan.cells)} cells already done for this configuration")
    if not todo:
        return []
    progress.log(f"{len(todo)} of {len(plan.cells)} cells to compute; records go to {plan.dataset_dir}/records/")
    measured = measured_records(plan, store)
    progress.expect(cell_cost_priors(plan, store))
    if plan.workers > 1 and len({key.digest for _, key in todo if key.digest not in measured}) > 1:
        return run_in_workers(plan, progress, todo, measured, data)
    previous = torch.get_num_threads()
    torch.set_num_threads(plan.threads)  # the threads the cache keys hold, as in a worker
    try:
        return Runner(plan, progress, data).run(todo, measured)
    finally:
        torch.set_num_threads(previous)


def cell_cost_priors(plan: RunPlan, store: RecordStore) -> dict[str, float]:
    """What a cell of each kind (attack × student architecture) cost in earlier runs: the median wall
    time of the ok records of this results folder and of the committed reference, for the time-left
    estimate (:meth:`kdbench.progress.Progress.expect`)."""
    records = store.all()
    if plan.reference_dir is not None:
        records += RecordStore(plan.reference_dir / plan.reference_name).all()
    seconds: dict[str, list[float]] = {}
    for record in records:
        if record.status == STATUS_OK and record.wall_s > 0:
            kind = cell_kind(record.attack, record.student_arch or record.student)
            seconds.setdefault(kind, []).append(record.wall_s)
    return {kind: statistics.median(values) for kind, values in seconds.items()}


def record_not_applicable(plan: RunPlan, store: RecordStore, progress: Progress) -> None:
    """Write an "n/a" record, with the reason, for each cell whose attack cannot run on its teacher
    (one line per attack and teacher says so), so that the tables show it as such."""
    said: set[tuple[str, str]] = set()
    for cell, reason in plan.not_applicable_cells:
        if (cell.teacher, cell.attack) not in said:
            said.add((cell.teacher, cell.attack))
            progress.log(f"n/a: attack {cell.attack} on teacher {cell.teacher}, not run: {reason}")
        record = Record(
            dataset=plan.dataset.name,
            defense=cell.defense,
            attack=cell.attack,
            student=cell.student,
            seed=cell.seed,
            teacher=cell.teacher,
            teacher_acc=None,
            student_acc=None,
            baseline_acc=None,
            drop=None,
            status=STATUS_NA,
            wall_s=0.0,
            key="",
            reason=reason,
            student_arch=cell.student_arch,
            details=CellDetails(
                command=plan.command or None,
                # the row of the owner's network, where the teacher came from a file
                teacher_label=plan.teacher_file.label(cell.teacher) if plan.teacher_file else None,
            ),
        )
        known = store.get(cell.name)
        if known is None or (known.status, known.reason) != (STATUS_NA, reason):
            store.put(record)


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


def settings_of(plan: RunPlan, data: ImageData | None = None) -> dict[str, Any]:
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
        "kdbench": __version__,
    }
    if plan.recipe_by_model:
        settings["recipe_by_model"] = {arch: asdict(recipe) for arch, recipe in plan.recipe_by_model.items()}
    if plan.paper:
        settings["paper"] = plan.paper
        if plan.paper_differences:
            settings["paper_differences"] = plan.paper_differences
    if data is not None and data.caveat:
        settings["data"] = data.caveat
    if plan.teacher_file is not None:
        settings["teacher_weights"] = plan.teacher_file.describe()
    return settings
