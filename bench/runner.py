"""Fill the results matrix: for each cell, build (or reuse) the defended teacher and the student's
scratch baseline, run the attack, evaluate, and write one record.

Teachers and baselines come from the content-addressed cache, so a teacher is trained once per
configuration however many attacks use it. A cell whose record already carries the same
configuration hash is skipped, so an interrupted or repeated run only does what is missing, and a
cell that is the same computation as one already measured (a "self" student and the teacher's
architecture named outright) takes over that measurement.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from kdbench.api import ATTACKS, DEFENSES, AttackContext, DataAccess, DefenseContext
from kdbench.cache import ArtifactCache, config_hash
from kdbench.cells import FINAL_STATUSES, cell_title, twin_record
from kdbench.config import Cell, RunPlan
from kdbench.data import ImageData
from kdbench.datasets import load_dataset
from kdbench.errors import BenchError
from kdbench.models import create_model
from kdbench.owner_cost import owner_cost
from kdbench.progress import Progress
from kdbench.records import STATUS_DIVERGED, STATUS_FAILED, STATUS_OK, Record, RecordStore
from kdbench.teacher import Access, Teacher, TeacherAPI
from kdbench.threat_model import attacker_inputs
from kdbench.train import Trainer, TrainingDiverged


class Runner:
    def __init__(self, plan: RunPlan, progress: Progress) -> None:
        self.plan = plan
        self.progress = progress
        self.store = RecordStore(plan.dataset_dir)
        self.cache = ArtifactCache(plan.cache_dir)
        self._data: ImageData | None = None
        self._teachers: dict[tuple[str, str, int], tuple[Teacher, float, dict[str, float]] | TrainingDiverged] = {}
        self._baselines: dict[tuple[str, int], float | TrainingDiverged] = {}

    @property
    def data(self) -> ImageData:
        if self._data is None:
            self._data = load_dataset(self.plan.dataset, self.plan.device)
        return self._data

    def trainer(self, seed: int, arch: str) -> Trainer:
        """The training loop for networks of architecture ``arch``, with that architecture's recipe."""
        return Trainer(self.plan.device, seed, self.plan.recipe_for(arch), self.progress, self.plan.acceleration)

    def run(self, todo: list[tuple[Cell, str]], measured: dict[str, Record]) -> list[Record]:
        """Compute ``todo`` (cells with their keys) in this process, one after the other; a cell
        whose key is in ``measured`` takes over that record. Returns the records written."""
        done = []
        for i, (cell, key) in enumerate(todo, 1):
            title = cell_title(cell, i, len(todo))
            twin = measured.get(key)
            if twin is not None:
                self.progress.log(f"{title}: the same computation as {twin.cell}, measured already")
                record = twin_record(cell, twin)
            else:
                self.progress.log(title)
                record, computed = self.claimed_cell(cell, key)
                if not computed:  # another run on this folder computed it meanwhile
                    measured[key] = record
                    continue
            self.store.put(record)
            if record.status in FINAL_STATUSES:
                measured[key] = record
            done.append(record)
        return done

    def claimed_cell(self, cell: Cell, key: str) -> tuple[Record, bool]:
        """``cell``'s record and whether this process computed it (and wrote it). The cell is claimed
        under the cache's lock first: if another run on the same folder holds the claim, this one
        waits, then takes over the final record that run wrote instead of computing the cell again."""
        with self.cache.claim_cell(key, cell.name, self.progress.log):
            existing = self.store.get(cell.name)
            if existing is not None and existing.key == key and existing.status in FINAL_STATUSES:
                self.progress.log(f"{cell.name}: computed by another run on this folder, reused")
                return existing, False
            record = self.run_cell(cell, key)
            self.store.put(record)
            return record, True

    # -- the pieces every cell needs, built once per run -------------------------------------

    def teacher(self, arch: str, defense: str, seed: int) -> tuple[Teacher, float, dict[str, float]]:
        """The ``defense``'s teacher of architecture ``arch`` at ``seed``, its test accuracy and its
        owner's cost (:func:`kdbench.owner_cost.owner_cost`)."""
        memo_key = (arch, defense, seed)
        if memo_key not in self._teachers:
            try:
                ctx = DefenseContext(
                    trainer=self.trainer(seed, arch),
                    data=self.data,
                    teacher_arch=arch,
                    cache=self.cache,
                    identity=self.plan.network_identity(arch, seed),
                )
                built = DEFENSES.get(defense).factory(self.plan.defenses[defense]).build(ctx)
                self._teachers[memo_key] = (
                    built,
                    ctx.trainer.accuracy(built.serve, self.data),
                    owner_cost(built, self.data),
                )
            except TrainingDiverged as err:
                self._teachers[memo_key] = err
        result = self._teachers[memo_key]
        if isinstance(result, TrainingDiverged):
            raise result
        return result

    def baseline(self, student: str, seed: int) -> float:
        """Test accuracy of ``student`` trained from scratch on the true labels (defines the drop)."""
        memo_key = (student, seed)
        if memo_key not in self._baselines:
            trainer = self.trainer(seed, student)
            generator = trainer.seeded(f"baseline/{student}")
            model = create_model(student, self.data.num_classes, self.data.input_shape).to(self.plan.device)
            key = config_hash({**self.plan.network_identity(student, seed), "kind": "scratch"})
            try:
                self.cache.fill(
                    key,
                    model,
                    arch=student,
                    meta={"kind": "scratch"},
                    train=lambda: trainer.fit_scratch(
                        model, self.data, generator=generator, description=f"scratch {student}"
                    ),
                    on_wait=self.progress.log,
                )
                model.eval()
                self._baselines[memo_key] = trainer.accuracy(model, self.data)
            except TrainingDiverged as err:
                self._baselines[memo_key] = err
        result = self._baselines[memo_key]
        if isinstance(result, TrainingDiverged):
            raise result
        return result

    # -- one cell -----------------------------------------------------------------------------

    def run_cell(self, cell: Cell, key: str) -> Record:
        start = time.perf_counter()
        fields: dict[str, Any] = {"teacher_acc": None, "student_acc": None, "baseline_acc": None, "drop": None}
        status, reason = STATUS_OK, ""
        extra: dict[str, Any] = {"threads": torch.get_num_threads()}  # the intra-op threads it trained with
        try:
            teacher, fields["teacher_acc"], extra["owner_cost"] = self.teacher(cell.teacher, cell.defense, cell.seed)
            fields["baseline_acc"] = self.baseline(cell.student_arch, cell.seed)
            fields["student_acc"], extra["queries"] = self.attack(cell, teacher)
            fields["drop"] = fields["baseline_acc"] - fields["student_acc"]
        except TrainingDiverged as err:
            status, reason = STATUS_DIVERGED, str(err)
        except BenchError as err:
            status, reason = STATUS_FAILED, str(err)
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
            key=key,
            extra=extra,
            **fields,
        )

    def attack(self, cell: Cell, teacher: Teacher) -> tuple[float, int | None]:
        """The student's test accuracy after the attack, and how many inputs it queried (None: white box)."""
        trainer = self.trainer(cell.seed, cell.student_arch)
        generator = trainer.seeded(f"attack/{cell.attack}/{cell.teacher}/{cell.defense}/{cell.student_arch}")
        student = create_model(cell.student_arch, self.data.num_classes, self.data.input_shape).to(self.plan.device)
        attack = ATTACKS.get(cell.attack).factory(self.plan.attacks[cell.attack])
        view: Teacher | TeacherAPI = (
            teacher
            if attack.access is Access.WHITE_BOX
            else teacher.api(attack.access, attack.query_budget, top_k=attack.top_k)
        )
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
        trained = attack.run(view, student, ctx)
        trained.eval()
        queries = view.queries if isinstance(view, TeacherAPI) else None
        return trainer.accuracy(trained, self.data), queries
