"""Fill the results matrix: for each cell, build (or reuse) the defended teacher and the student's
scratch baseline, run the attack, evaluate, and write one record.

Teachers and baselines come from the content-addressed cache, so a teacher is trained once per
configuration however many attacks use it. A cell whose record already carries the same
configuration hash is skipped, so an interrupted or repeated run only does what is missing, and a
cell that is the same computation as one already measured (a "self" student and the teacher's
architecture named outright) takes over that measurement.
"""

from __future__ import annotations

import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from kdbench.api import Attack, AttackContext, DataAccess, DefenseContext
from kdbench.config.plan import Cell, RunPlan
from kdbench.data.catalogue import load_dataset
from kdbench.data.images import ImageData
from kdbench.errors import BenchError, CannotWrite, OptionError, options_of
from kdbench.matrix.pending import PendingCell, cell_title, computations, is_current, outcome, take_over
from kdbench.models import create_model
from kdbench.progress import TAKEN_OVER, Progress, cell_kind, network_kind
from kdbench.serving.owner_cost import owner_cost, serving_ms_per_1k
from kdbench.serving.teacher import Access, Teacher, TeacherAPI
from kdbench.serving.threat_model import attacker_inputs
from kdbench.store.answer_memo import CachedAnswers
from kdbench.store.atomic import atomic_write_text
from kdbench.store.cache import ArtifactCache, file_digest
from kdbench.store.keys import CellKey, baseline_key, server_key, teacher_identity
from kdbench.store.records import STATUS_DIVERGED, STATUS_FAILED, STATUS_OK, CellDetails, Record, RecordStore
from kdbench.training.loop import Trainer, TrainingDiverged
from kdbench.training.seeds import restart_seed

TRACEBACKS = "tracebacks"  # <results>/<dataset>/tracebacks/<cell>.txt: why a plugin failed its cell


class PluginFailed(Exception):
    """An attack or a defense raised an exception that is not a :class:`BenchError`: a bug in the
    plugin. The cells that need it are recorded as failed with the exception and its traceback,
    and the matrix goes on (KeyboardInterrupt and the like are not exceptions of this kind)."""

    def __init__(self, what: str, err: Exception) -> None:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        super().__init__(f"{what} raised {type(err).__name__}" + (f": {first_line}" if first_line else ""))
        self.traceback = "".join(traceback.format_exception(err))


def network_kinds(cells: list[Cell]) -> list[str]:
    """The kind of each teacher and scratch baseline ``cells`` need (each trained once)."""
    teachers = {(c.teacher, c.defense, c.seed) for c in cells}
    baselines = {(c.student_arch, c.seed) for c in cells}
    return [network_kind("teacher", t, d) for t, d, _ in teachers] + [network_kind("baseline", a) for a, _ in baselines]


class Attacked(NamedTuple):
    """What a cell's attack measured."""

    accuracy: float  # the student's test top-1, percent; with restarts, their mean
    queries: int | None  # inputs it asked the teacher (None: white box)
    curve: dict[str, float]  # queries → accuracy, for a query-budgeted attack
    restarts: list[float] | None = None  # each restart's accuracy, where the column has several


class BuiltTeacher(NamedTuple):
    teacher: Teacher
    accuracy: float  # test top-1 of the served function, percent
    owner_cost: dict[str, float]
    serving_ms_per_1k: float
    weights: dict[str, str]  # checkpoint file name → content digest
    files: dict[str, dict[str, Any]]  # weight files from outside the cache: option → path, sha256


class Runner:
    def __init__(self, plan: RunPlan, progress: Progress, data: ImageData | None = None) -> None:
        """``data``: the plan's dataset if already loaded (on any device); otherwise loaded when needed."""
        self.plan = plan
        self.progress = progress
        self.store = RecordStore(plan.dataset_dir)
        self.cache = ArtifactCache(plan.cache_dir)
        self._data = None if data is None else data.to(plan.device)
        self._teachers: dict[tuple[str, str, int], BuiltTeacher | TrainingDiverged] = {}
        self._baselines: dict[tuple[str, int], tuple[float, dict[str, str]] | TrainingDiverged] = {}
        self.network_seconds = 0.0  # spent building teachers and baselines in this process

    @property
    def data(self) -> ImageData:
        if self._data is None:
            self._data = load_dataset(self.plan.dataset, self.plan.device)
        return self._data

    def trainer(self, seed: int, arch: str) -> Trainer:
        """The training loop for networks of architecture ``arch``, with that architecture's recipe."""
        return Trainer(self.plan.device, seed, self.plan.recipe_for(arch), self.progress, self.plan.acceleration)

    def run(self, todo: list[PendingCell], measured: dict[str, Record]) -> list[Record]:
        """The serial executor: compute ``todo`` in this process, one computation after the other; a
        cell whose key is in ``measured``, or that is the same computation as one computed here,
        takes over that record. Returns the records written."""
        taken, groups = computations(todo, measured)
        computed = [group[0].cell for group in groups.values()]
        kinds = [
            *network_kinds(computed),
            *(cell_kind(c.attack, c.student_arch) for c in computed),
            *[TAKEN_OVER] * (len(todo) - len(computed)),
        ]
        self.progress.matrix(kinds)
        done: list[Record] = []
        titles = iter(range(1, len(todo) + 1))

        def take(cell: Cell, twin: Record) -> None:
            title = cell_title(cell, next(titles), len(todo))
            self.progress.log(f"{title}: the same computation as {twin.cell}, measured already")
            done.append(take_over(self.store, cell, twin))
            self.progress.unit_done(TAKEN_OVER)

        for cell, twin in taken:
            take(cell, twin)
        for first, *twins in groups.values():
            title = cell_title(first.cell, next(titles), len(todo))
            self.progress.log(title)
            self.progress.working([first.cell.name])
            start, networks_before = time.perf_counter(), self.network_seconds
            record, computed = self.compute(first)  # written by whoever computed it
            if computed:
                self.progress.log(f"{title}: {outcome(record)}")
                done.append(record)
            # the cell's own cost: the networks it built on the way are units of their own
            seconds = time.perf_counter() - start - (self.network_seconds - networks_before)
            self.progress.unit_done(
                cell_kind(first.cell.attack, first.cell.student_arch), seconds if computed else None
            )
            for twin in twins:
                take(twin.cell, record)
        return done

    def compute(self, pending: PendingCell) -> tuple[Record, bool]:
        """The one computation of a cell, whichever executor runs it: its record and whether this
        process computed it (and wrote it). The cell is claimed under the cache's lock first: if
        another run on the same folder holds the claim, this one waits, then takes over the record
        that run wrote, if it is current (its checkpoints unchanged), instead of computing again."""
        cell, key = pending
        with self.cache.claim_cell(key.digest, cell.name, self.progress.log):
            existing = self.store.get(cell.name)
            if is_current(self.plan, existing, key.digest) and self.fresh(cell):
                self.progress.log(f"{cell.name}: computed by another run on this folder, reused")
                return existing, False
            record = self.run_cell(cell, key)
            self.store.put(record)
            return record, True

    def fresh(self, cell: Cell) -> bool:
        """Whether ``cell``'s record may be taken over: always, except that with ``rerun`` only a record
        written since this run started (by a concurrent run) counts."""
        if not self.plan.rerun:
            return True
        try:
            return self.store.path(cell.name).stat().st_mtime >= self.plan.started_at
        except FileNotFoundError:  # removed since it was read (a concurrent rerun replaces it)
            return False

    # -- the pieces every cell needs, built once per run -------------------------------------

    def teacher(self, arch: str, defense: str, seed: int) -> BuiltTeacher:
        """The ``defense``'s teacher of architecture ``arch`` at ``seed``, with its test accuracy, its
        owner's cost (:func:`kdbench.serving.owner_cost.owner_cost`) and the checkpoints it was built from."""
        memo_key = (arch, defense, seed)
        if memo_key not in self._teachers:
            start, trainings = time.perf_counter(), self.progress.tasks_started
            try:
                ctx = DefenseContext(
                    trainer=self.trainer(seed, arch),
                    data=self.data,
                    teacher_arch=arch,
                    cache=self.cache,
                    identity=teacher_identity(self.plan, arch, seed),
                    fresh_after=self.plan.started_at if self.plan.rerun else None,
                    teacher_file=self.plan.teacher_file,
                )
                with options_of(f"defense.{defense}"):
                    built = self.plan.defense(defense).build(ctx)
                for kind, seconds in ctx.trained_now:
                    if kind != defense:  # trained on the way, the nasty teacher's normal adversary say
                        self.progress.log(
                            f"network teacher {arch}/{kind} (seed {seed}): trained for {defense}, {seconds:.1f} s"
                        )
                self._teachers[memo_key] = BuiltTeacher(
                    built,
                    ctx.trainer.accuracy(built.serve, self.data),
                    owner_cost(built, self.data),
                    serving_ms_per_1k(built, self.data),
                    dict(ctx.weights),
                    dict(ctx.files),
                )
            except TrainingDiverged as err:
                self._teachers[memo_key] = err
            except BenchError:
                raise
            except Exception as err:  # a bug in the defense: its cells fail, the matrix goes on
                self._teachers[memo_key] = PluginFailed(f"defense {defense!r}", err)
            result = self._teachers[memo_key]
            accuracy = None if isinstance(result, Exception) else result.accuracy
            self._network_done(
                f"teacher {arch}/{defense} (seed {seed})",
                network_kind("teacher", arch, defense),
                result,
                accuracy,
                start,
                trainings,
            )
        result = self._teachers[memo_key]
        if isinstance(result, (TrainingDiverged, PluginFailed)):
            raise result
        return result

    def _network_done(
        self, what: str, kind: str, result: Any, accuracy: float | None, start: float, trainings: int
    ) -> None:
        """One line per network this process trained (loading one from the cache says nothing)."""
        self.network_seconds += time.perf_counter() - start
        self.progress.unit_done(kind, time.perf_counter() - start)
        if self.progress.tasks_started == trainings and accuracy is not None:
            return
        if isinstance(result, TrainingDiverged):
            status = f"diverged: {result}"
        elif isinstance(result, PluginFailed):
            status = f"failed: {result}"
        else:
            status = f"ok, acc {accuracy:.2f}"
        self.progress.log(f"network {what}: {status}, {time.perf_counter() - start:.1f} s")

    def baseline(self, student: str, seed: int) -> tuple[float, dict[str, str]]:
        """Test accuracy of ``student`` trained from scratch on the true labels (defines the drop),
        and its checkpoint (file name → content digest)."""
        memo_key = (student, seed)
        if memo_key not in self._baselines:
            start, trainings = time.perf_counter(), self.progress.tasks_started
            trainer = self.trainer(seed, student)
            generator = trainer.seeded(f"baseline/{student}")
            model = create_model(student, self.data.num_classes, self.data.input_shape).to(self.plan.device)
            key = baseline_key(self.plan, student, seed)
            try:
                path = self.cache.fill(
                    key,
                    model,
                    arch=student,
                    meta={"kind": "scratch"},
                    train=lambda: trainer.fit_scratch(
                        model, self.data, generator=generator, description=f"scratch {student}"
                    ),
                    on_wait=self.progress.log,
                    fresh_after=self.plan.started_at if self.plan.rerun else None,
                )
                model.eval()
                self._baselines[memo_key] = (trainer.accuracy(model, self.data), {path.name: file_digest(path) or ""})
            except TrainingDiverged as err:
                self._baselines[memo_key] = err
            result = self._baselines[memo_key]
            accuracy = None if isinstance(result, Exception) else result[0]
            self._network_done(
                f"scratch {student} (seed {seed})",
                network_kind("baseline", student),
                result,
                accuracy,
                start,
                trainings,
            )
        result = self._baselines[memo_key]
        if isinstance(result, TrainingDiverged):
            raise result
        return result

    # -- one cell -----------------------------------------------------------------------------

    def run_cell(self, cell: Cell, key: CellKey) -> Record:
        start = time.perf_counter()
        fields: dict[str, Any] = {"teacher_acc": None, "student_acc": None, "baseline_acc": None, "drop": None}
        status, reason = STATUS_OK, ""
        details = CellDetails(threads=torch.get_num_threads(), command=self.plan.command or None, code=key.code)
        try:
            built = self.teacher(cell.teacher, cell.defense, cell.seed)
            fields["teacher_acc"], details.owner_cost = built.accuracy, built.owner_cost
            details.serving_ms_per_1k = round(built.serving_ms_per_1k, 3)
            fields["baseline_acc"], baseline_weights = self.baseline(cell.student_arch, cell.seed)
            # the checkpoints this result came from: a record whose files were replaced is stale
            details.weights = {**built.weights, **baseline_weights}
            details.files = built.files  # the owner's files: where the weights came from
            if self.plan.teacher_file is not None:
                details.teacher_label = self.plan.teacher_file.label(cell.teacher)
            attacked = self.attack(cell, built)
            fields["student_acc"] = attacked.accuracy
            details.queries, details.stealing_curve, details.restarts = (
                attacked.queries,
                attacked.curve,
                attacked.restarts,
            )
            fields["drop"] = fields["baseline_acc"] - fields["student_acc"]
        except TrainingDiverged as err:
            status, reason = STATUS_DIVERGED, str(err)
        except CannotWrite:
            raise  # the machine's storage, not the cell: the run stops, finished cells kept
        except BenchError as err:
            status, reason = STATUS_FAILED, str(err)
        except PluginFailed as err:
            status, reason = STATUS_FAILED, str(err)
            details.traceback = str(self.write_traceback(cell, err))
        return Record(
            dataset=self.plan.dataset.name,
            defense=cell.defense,
            attack=cell.attack,
            student=cell.student,
            student_arch=cell.student_arch,
            seed=cell.seed,
            teacher=cell.teacher,
            status=status,
            reason=reason,
            wall_s=round(time.perf_counter() - start, 3),
            key=key.digest,
            details=details,
            **fields,
        )

    def write_traceback(self, cell: Cell, err: PluginFailed) -> Path:
        path = self.plan.dataset_dir / TRACEBACKS / f"{cell.name}.txt"
        atomic_write_text(path, f"{cell.name}: {err}\n\n{err.traceback}")
        return path

    def attack(self, cell: Cell, built: BuiltTeacher) -> Attacked:
        """The student's test accuracy after the attack (its restarts' mean), how many inputs it
        queried (None: white box) and, for a query-budgeted attack, its stealing curve."""
        try:
            with options_of(f"attack.{cell.attack}"):
                return self._attack(cell, built)
        except (TrainingDiverged, BenchError):
            raise
        except Exception as err:  # a bug in the attack: this cell fails, the matrix goes on
            raise PluginFailed(f"attack {cell.attack!r}", err) from err

    def _attack(self, cell: Cell, built: BuiltTeacher) -> Attacked:
        attack = self.plan.attack(cell.attack)
        if self.plan.restarts_of(cell.attack) > 1:  # planned for attacks without a query budget only
            runs = self.restarted(cell, built, attack)
            accuracies = [accuracy for accuracy, _ in runs]
            view = runs[0][1]
            queries = view.queries if isinstance(view, TeacherAPI) else None
            return Attacked(statistics.fmean(accuracies), queries, {}, accuracies)
        curve: dict[str, float] = {}
        watch = None
        if attack.curve_in_run and attack.query_budget is not None and self.plan.stealing_curves:
            watch = self.curve_watch(attack.query_budget, curve, self.trainer(cell.seed, cell.student_arch))
        accuracy, view = self.run_attack(cell, built, attack, watch)
        queries = view.queries if isinstance(view, TeacherAPI) else None
        if queries and attack.query_budget is not None and self.plan.stealing_curves:
            if not attack.curve_in_run:
                curve.update(self.stealing_curve(cell, built, attack, queries))
            curve[str(queries)] = accuracy
        return Attacked(accuracy, queries, curve)

    def curve_watch(self, budget: int, curve: dict[str, float], trainer: Trainer) -> Callable[[nn.Module, int], None]:
        """What an attack that learns as it queries calls as it spends its budget: the first time its
        queries reach each fraction of ``budget``, the student's test accuracy there goes in ``curve``."""
        pending = [budget * f for f in CURVE_FRACTIONS]

        def spent(student: nn.Module, queries: int) -> None:
            if not pending or queries < pending[0]:
                return
            while pending and queries >= pending[0]:
                pending.pop(0)
            was_training = student.training
            student.eval()
            curve[str(queries)] = trainer.accuracy(student, self.data)
            student.train(was_training)

        return spent

    def stealing_curve(self, cell: Cell, built: BuiltTeacher, attack: Attack, queries: int) -> dict[str, float]:
        """The student's accuracy had the attacker stopped after 1/8, 1/4 and 1/2 of its ``queries``:
        the same attack with that budget and the same random stream, so that its queries are the
        first ones of the full run's (the teacher answers them from the cell's answer memo where it
        has them), and a student trained on them alone."""
        curve = {}
        for fraction in CURVE_FRACTIONS:
            budget = max(1, round(queries * fraction))
            try:
                smaller = type(attack)(replace(attack.cfg, budget=budget))
            except OptionError:  # a fraction too small for one step of the attack (DFME's iteration)
                continue
            accuracy, view = self.run_attack(cell, built, smaller)
            assert isinstance(view, TeacherAPI)
            curve[str(view.queries)] = accuracy
        return curve

    def restarted(self, cell: Cell, built: BuiltTeacher, attack: Attack) -> list[tuple[float, Teacher | TeacherAPI]]:
        """Every run of the cell that its column's ``restarts`` asks for: accuracy and view of each."""
        return [self.run_attack(cell, built, attack, restart=r) for r in range(self.plan.restarts_of(cell.attack))]

    def run_attack(
        self,
        cell: Cell,
        built: BuiltTeacher,
        attack: Attack,
        queries_spent: Callable[[nn.Module, int], None] | None = None,
        *,
        restart: int = 0,
    ) -> tuple[float, Teacher | TeacherAPI]:
        """Run ``attack`` on a fresh student of the cell; its test accuracy and the view it attacked.
        ``restart`` r > 0: another run of the cell, every random stream of the attack and the
        student from a seed derived from the cell's and r, against the same teacher."""
        trainer = self.trainer(restart_seed(cell.seed, restart), cell.student_arch)
        generator = trainer.seeded(f"attack/{cell.attack}/{cell.teacher}/{cell.defense}/{cell.student_arch}")
        student = create_model(cell.student_arch, self.data.num_classes, self.data.input_shape).to(self.plan.device)
        view: Teacher | TeacherAPI = built.teacher
        if attack.access is not Access.WHITE_BOX:
            # cells asking this API the same inputs (another student, attack or KD temperature) share its answers
            server = server_key(self.plan, cell, built.weights, attack.access.value, attack.top_k)
            memo = CachedAnswers(self.cache, server, fresh_after=self.plan.started_at if self.plan.rerun else None)
            view = built.teacher.api(attack.access, attack.query_budget, top_k=attack.top_k, memo=memo)
        ctx = AttackContext(
            trainer=trainer,
            num_classes=self.data.num_classes,
            input_shape=self.data.input_shape,
            data=self.data if attack.data_access is DataAccess.TRAIN else None,
            generator=generator,
            description=f"{cell.attack} {cell.teacher}/{cell.defense}→{cell.student_arch}",
            input_format=self.data.input_format,
            inputs=attacker_inputs(attack.data_access, self.data),
        )
        if queries_spent is not None:
            ctx.queries_spent = queries_spent
        trained = attack.run(view, student, ctx)
        trained.eval()
        return trainer.accuracy(trained, self.data), view


# the fractions of an attack's queries its stealing curve is measured at, beside all of them
CURVE_FRACTIONS = (1 / 8, 1 / 4, 1 / 2)
