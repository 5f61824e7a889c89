"""Everything a plugin author needs, and nothing that imports a plugin.

A defense turns a :class:`DefenseContext` into a :class:`Teacher`. An attack turns a teacher, seen
at the attack's declared access level, and a fresh student into a trained student. Register either
with a decorator; its options are a dataclass, which becomes a Hydra config group option
(``attack=kd attack.kd.tau=8``) and reaches the plugin's constructor as ``cfg``.

A plugin imports from this module only (the suite's own do too; a test holds them to it): the
registries and base classes, the contexts, the teacher's views, the losses and training helpers,
the data helpers, and the errors. The suite's own plugins (:mod:`kdbench.attacks`,
:mod:`kdbench.defenses`) and installed packages' entry points are imported by
:mod:`kdbench.plugins.discovery`, never by this module.

Two optional hooks on an options dataclass are part of the interface (docs/plugins.md): a
``weight_file()`` method, for options that name a network's weights, returns ``(option, path,
sha256)`` so that the run checks and records the file; an ``identity()`` method returns what the
cache keys hold of the options instead of every field (a file's content hash, not its path).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdbench.data.catalogue import DATASETS, load_dataset
from kdbench.data.images import (
    DatasetConfig,
    ImageData,
    InputFormat,
    convert_images,
    crop_views,
    index_batches,
    random_crop_flip,
    random_views,
)
from kdbench.errors import BenchError, ConfigError, DatasetNotFoundError, OptionError
from kdbench.models import Classifier, create_model
from kdbench.models.intermediate import SelfDistillingModel
from kdbench.models.weights import TEST_SPLIT_NOTE, TeacherFile, check_weight_file, load_weights
from kdbench.plugins.registry import Registry
from kdbench.serving.answers import Answered, answered_batches, ask_in_chunks
from kdbench.serving.teacher import Perturbation, QueryBudgetExceeded, Teacher, TeacherAPI, keep_top_k
from kdbench.serving.threat_model import Access, DataAccess
from kdbench.store.cache import ArtifactCache, file_digest
from kdbench.store.keys import teacher_key
from kdbench.training.loop import Trainer, TrainingDiverged
from kdbench.training.losses import finite_logits, kd_loss, soft_kl
from kdbench.training.recipe import Recipe, adam
from kdbench.training.seeds import derive_seed


@dataclass
class AttackContext:
    """Everything an attack may use: the training loop, the task's shape and, if allowed, the data.

    ``data`` (labelled) is set only for an attack whose ``data_access`` is TRAIN; ``inputs``
    (unlabelled) only for TRAIN_INPUTS or HELDOUT_INPUTS. An attack whose ``data_access`` is NONE
    holds neither: it never sees the owner's data.
    """

    trainer: Trainer
    num_classes: int
    input_shape: tuple[int, int, int]
    data: ImageData | None
    generator: torch.Generator  # the attack's own random stream (data order, noise)
    description: str  # label for its progress bars
    # what the teacher takes (its normalisation is the owner's, public); the runner always sets it
    input_format: InputFormat | None = None
    inputs: Tensor | None = None  # unlabelled uint8 images in that format
    # a query-budgeted attack that learns as it queries (``curve_in_run``) calls this with its
    # student and the queries spent so far; the runner measures the student's test accuracy where a
    # fraction of the budget is crossed (the attack never sees the test data): its stealing curve
    queries_spent: Callable[[nn.Module, int], None] = lambda student, queries: None


@dataclass
class DefenseContext:
    """What a defense builds its teacher from, with a cache keyed by everything that made it."""

    trainer: Trainer
    data: ImageData
    teacher_arch: str
    cache: ArtifactCache
    identity: dict[str, Any]  # dataset, architecture, recipe, seed: the key's common part
    fresh_after: float | None = None  # rerun=true: a checkpoint older than this is retrained
    # every checkpoint the teacher was built from, file name → content digest (kept in the record)
    weights: dict[str, str] = field(default_factory=dict)
    # teacher_weights=PATH: the owner's network, which normal_network() loads instead of training
    teacher_file: TeacherFile | None = None
    # every weight file from outside the cache it was built from, option → path, sha256 (in the record)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    # each network trained (not loaded) while building: its kind and seconds, for the run's log
    trained_now: list[tuple[str, float]] = field(default_factory=list)
    _memo: dict[str, Classifier] = field(default_factory=dict)

    def new_model(self, purpose: str) -> tuple[Classifier, Any]:
        generator = self.trainer.seeded(purpose)
        model = create_model(self.teacher_arch, self.data.num_classes, self.data.input_shape)
        return model.to(self.trainer.device), generator

    def trained(self, kind: str, options: dict[str, Any], train: Callable[[Classifier, Any], None]) -> Classifier:
        """The teacher network ``kind`` with ``options``: from the cache, or trained now and cached.

        The key holds the fingerprint of the code that trains it (``train``'s module and the modules
        of its package that it imports), so editing a defense retrains its network.
        """
        key = teacher_key(self.identity, kind, options, getattr(train, "__module__", "") or "")
        if key in self._memo:
            return self._memo[key]
        model, generator = self.new_model(f"teacher/{kind}")

        def train_now() -> None:
            start = time.perf_counter()
            train(model, generator)
            self.trained_now.append((kind, time.perf_counter() - start))

        path = self.cache.fill(
            key,
            model,
            arch=self.teacher_arch,
            meta={"kind": kind},
            train=train_now,
            on_wait=self.trainer.progress.log,
            fresh_after=self.fresh_after,
        )
        self.weights[path.name] = file_digest(path) or ""
        # a checkpoint loads into the default layout; NHWC weights meet NHWC inputs without conversions
        self.trainer.acceleration.layout(model).eval().requires_grad_(False)
        self._memo[key] = model
        return model

    def loaded(self, path: Path, where: str, sha256: str | None = None) -> Classifier:
        """The network of ``teacher_arch`` with the weights of the file at ``path`` (``where`` names the
        option that gave it); nothing trains. Its path and sha256 go into the record."""
        sha256 = sha256 or check_weight_file(path, where)
        memo = f"file:{sha256}"
        if memo not in self._memo:
            model = create_model(self.teacher_arch, self.data.num_classes, self.data.input_shape)
            load_weights(model, path, self.teacher_arch, where, expected=sha256)
            model = model.to(self.trainer.device)
            self._memo[memo] = self.trainer.acceleration.layout(model).eval().requires_grad_(False)
        self.files[where] = {"path": str(path), "sha256": sha256, "test_split": TEST_SPLIT_NOTE}
        return self._memo[memo]


class Plugin:
    """A defense or an attack, built with its validated options ``cfg`` (None if it takes none)."""

    def __init__(self, cfg: Any = None) -> None:
        self.cfg = cfg

    def check_task(self, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        """Raise ConfigError if these options cannot work on a dataset of ``num_classes`` classes of
        images of ``input_shape`` (C×H×W), naming the option and what is allowed.

        Called while the run is checked, before anything trains, with the dataset's shape.
        """
        return  # most plugins work on any dataset


class Defense(Plugin, ABC):
    """Builds the protected teacher for one (dataset, teacher architecture, seed)."""

    @abstractmethod
    def build(self, ctx: DefenseContext) -> Teacher: ...


class Attack(Plugin, ABC):
    """Trains ``student`` to imitate the teacher within the attack's threat model.

    The threat model is read from the instance, so an attack may set it from its options:
    ``access`` (with ``top_k`` for top-k access), ``data_access``, and ``query_budget``, the
    number of inputs its API answers before refusing (None: unlimited).
    """

    access: Access = Access.LOGITS
    data_access: DataAccess = DataAccess.TRAIN
    top_k: int | None = None
    query_budget: int | None = None
    # True: the student's accuracy at fractions of the budget is measured during the one run, through
    # AttackContext.queries_spent (an attack whose student trains as the queries come, like DFME);
    # False: the attack is rerun with the smaller budgets (a fixed transfer set, like blackbox)
    curve_in_run: bool = False

    @abstractmethod
    def run(self, teacher: Teacher | TeacherAPI, student: nn.Module, ctx: AttackContext) -> nn.Module: ...

    def check_teacher(self, arch: str, model: nn.Module) -> None:
        """Raise ConfigError if this attack cannot work on teacher architecture ``arch``.

        Called while the run is planned, before anything trains, with an untrained ``model`` of
        that architecture on the meta device (its layers, no weights).
        """
        return  # most attacks work on any architecture


DEFENSES: Registry[Callable[..., Defense]] = Registry("defense")
ATTACKS: Registry[Callable[..., Attack]] = Registry("attack")
register_defense = DEFENSES.register
register_attack = ATTACKS.register


__all__ = [
    "ATTACKS",
    "DATASETS",
    "DEFENSES",
    "Access",
    "Answered",
    "Attack",
    "AttackContext",
    "BenchError",
    "Classifier",
    "ConfigError",
    "DataAccess",
    "DatasetConfig",
    "DatasetNotFoundError",
    "Defense",
    "DefenseContext",
    "ImageData",
    "InputFormat",
    "OptionError",
    "Perturbation",
    "Plugin",
    "QueryBudgetExceeded",
    "Recipe",
    "SelfDistillingModel",
    "Teacher",
    "TeacherAPI",
    "Trainer",
    "TrainingDiverged",
    "adam",
    "answered_batches",
    "ask_in_chunks",
    "check_weight_file",
    "convert_images",
    "crop_views",
    "derive_seed",
    "finite_logits",
    "index_batches",
    "kd_loss",
    "keep_top_k",
    "load_dataset",
    "random_crop_flip",
    "random_views",
    "register_attack",
    "register_defense",
    "soft_kl",
]
