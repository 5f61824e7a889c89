"""Hydra composition of the packaged config tree, and its validation into a typed :class:`RunPlan`.

Every name and value is checked here, before anything is trained, so bad input costs one clear
line instead of a traceback an hour into a run.
"""

from __future__ import annotations

import copy
import itertools
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from kdbench.api import ATTACKS, DEFENSES, Attack, DataAccess, Defense
from kdbench.config.devices import resolve_device, resolve_threads, resolve_workers
from kdbench.config.options import (
    as_dataclass,
    attack_variants_of,
    recipes_by_model,
    restarts_of,
    selected_plugins,
)
from kdbench.config.settings import check_settings
from kdbench.data.catalogue import DATASETS
from kdbench.data.images import DatasetConfig
from kdbench.errors import ConfigError, options_of
from kdbench.models import check_model_name, probe_model
from kdbench.models.weights import TeacherFile, check_weight_file
from kdbench.plugins.registry import Registry, build
from kdbench.report.paper import check_paper_table
from kdbench.store.records import cell_name
from kdbench.training.recipe import Acceleration, Recipe, resolve_acceleration

# A student named "self" is the teacher's own architecture, resolved per teacher (the paper's column).
SELF_STUDENT = "self"


@dataclass(frozen=True)
class Cell:
    teacher: str
    defense: str
    attack: str
    student: str  # a model name, or SELF_STUDENT
    seed: int

    @property
    def student_arch(self) -> str:
        """The architecture the student is built with: its name, or the teacher's for "self"."""
        return self.teacher if self.student == SELF_STUDENT else self.student

    @property
    def name(self) -> str:
        return cell_name(self.teacher, self.defense, self.attack, self.student, self.seed, self.student_arch)


@dataclass
class RunPlan:
    """A validated run: which cells, with which options, where."""

    dataset: DatasetConfig
    teachers: list[str]
    students: list[str]
    defenses: dict[str, Any]  # name → validated option dataclass instance
    attacks: dict[str, Any]
    seeds: list[int]
    device: torch.device
    acceleration: Acceleration
    recipe: Recipe
    results_dir: Path
    cache_dir: Path
    quiet: bool
    preset: str
    config: DictConfig
    recipe_by_model: dict[str, Recipe] = field(default_factory=dict)  # architectures trained otherwise
    workers: int = 1  # cells computed at once, each in its own process (1: in this process)
    threads: int = 1  # intra-op threads each network trains with, whichever process trains it
    paper: str | None = None  # the published table the leaderboard shows beside the measured figures
    # how this run's settings differ from those the paper's figures were measured with (the preset's
    # own differences, then each setting the command line changed): none, or no Δ beside the figures
    paper_differences: list[str] = field(default_factory=list)
    reference_dir: Path | None = None  # committed reference runs to compare with (never written)
    reference_name: str = ""  # the folder of reference_dir this run compares with (default: the dataset's name)
    rerun: bool = False  # recompute the selected cells, retrain their networks
    started_at: float = 0.0  # time.time() when planned: with rerun, networks older than this retrain
    command: str = ""  # the command line that asked for this run, kept in every record it writes
    # teacher_weights=PATH: the owner's trained network, loaded instead of the normal teacher
    teacher_file: TeacherFile | None = None
    attack_bases: dict[str, str] = field(default_factory=dict)  # variant column → the plugin it runs
    # attack column → students each cell trains, their mean accuracy reported (`restarts`; absent: 1)
    restarts: dict[str, int] = field(default_factory=dict)
    heartbeat_s: float = 30.0  # without a terminal, a progress line this often
    stealing_curves: bool = True  # query-budgeted attacks also measured at 1/8, 1/4 and 1/2 of their queries
    # the plugins, built once per run from ``defenses`` and ``attacks`` (a variant: its base's class)
    defense_plugins: dict[str, Defense] = field(default_factory=dict)
    attack_plugins: dict[str, Attack] = field(default_factory=dict)
    # (teacher, attack) → why that attack cannot run on that teacher: its cells are "n/a", not run
    not_applicable: dict[tuple[str, str], str] = field(default_factory=dict)

    def attack_plugin(self, name: str) -> str:
        """The registered attack that column ``name`` runs (itself, or a variant's base)."""
        return self.attack_bases.get(name, name)

    def restarts_of(self, column: str) -> int:
        """How many students each cell of attack column ``column`` trains (its mean is the cell's)."""
        return self.restarts.get(column, 1)

    def recipe_for(self, arch: str) -> Recipe:
        """How networks of architecture ``arch`` train (as teacher, baseline or attacked student)."""
        return self.recipe_by_model.get(arch, self.recipe)

    @property
    def selected_cells(self) -> list[Cell]:
        """Every cell the selection names, those of attacks that cannot run on their teacher included."""
        return [
            Cell(t, d, a, s, seed)
            for seed, t, d, a, s in itertools.product(
                self.seeds, self.teachers, self.defenses, self.attacks, self.students
            )
        ]

    @property
    def cells(self) -> list[Cell]:
        """The cells to compute."""
        return [c for c in self.selected_cells if (c.teacher, c.attack) not in self.not_applicable]

    @property
    def not_applicable_cells(self) -> list[tuple[Cell, str]]:
        """The selected cells whose attack cannot run on their teacher, with the reason."""
        return [
            (c, self.not_applicable[c.teacher, c.attack])
            for c in self.selected_cells
            if (c.teacher, c.attack) in self.not_applicable
        ]

    @property
    def dataset_dir(self) -> Path:
        return self.results_dir / self.dataset.name

    def attack(self, name: str) -> Attack:
        """Attack column ``name``'s plugin, built once with its options when the run was planned."""
        return self.attack_plugins[name]

    def defense(self, name: str) -> Defense:
        """Defense ``name``'s plugin, built once with its options when the run was planned."""
        return self.defense_plugins[name]


def _built(registry: Registry, group: str, selected: dict[str, Any], bases: dict[str, str]) -> dict[str, Any]:
    """Each selected plugin built once with its options (a variant column: its base's plugin)."""
    built = {}
    for name, options in selected.items():
        with options_of(f"{group}.{name}"):
            built[name] = build(registry.get(bases.get(name, name)), options)
    return built


def _check_attacks(
    attacks: dict[str, Attack], teachers: list[str], dataset: DatasetConfig, *, chosen: bool
) -> dict[tuple[str, str], str]:
    """Refuse, before anything trains, an attack that cannot work here: on a held-out split the
    dataset does not set aside, or on a chosen teacher (DeepInversion needs BatchNorm). The latter
    only where the attacks were ``chosen`` (``attack=`` given): otherwise that attack's cells on that
    teacher are n/a, returned as (teacher, attack) → the reason, and the rest of the matrix runs."""
    not_applicable: dict[tuple[str, str], str] = {}
    for name, attack in attacks.items():
        if attack.data_access is DataAccess.HELDOUT_INPUTS and not dataset.heldout_fraction > 0:
            raise ConfigError(
                f"attack {name!r} queries a held-out split, but dataset {dataset.name!r} sets none aside: "
                f"set dataset.heldout_fraction (e.g. 0.2)"
            )
        for arch in teachers:
            try:
                with options_of(f"attack.{name}"):
                    attack.check_teacher(arch, probe_model(arch))
            except ConfigError as err:
                if chosen:
                    raise
                not_applicable[arch, name] = str(err)
    runnable = [(t, a) for t in teachers for a in attacks if (t, a) not in not_applicable]
    if not runnable:
        first = next(iter(not_applicable.values()))
        raise ConfigError(f"no attack can run on teacher {teachers[0]!r}: {first}")
    return not_applicable


def _restarts(cfg: DictConfig, attack_plugins: dict[str, Attack]) -> dict[str, int]:
    """``restarts`` of the selected columns; refused for an attack with a query budget, whose
    queries and stealing curve are those of one run."""
    known = [*ATTACKS.names(), *(cfg.get("attack_variants") or {})]
    counts = restarts_of(known, cfg.get("restarts"))
    for name, count in counts.items():
        attack = attack_plugins.get(name)
        if attack is not None and count > 1 and attack.query_budget is not None:
            raise ConfigError(
                f"restarts.{name}={count}: attack {name!r} has a query budget ({attack.query_budget:,} queries), "
                f"whose query count and stealing curve are one run's; allowed: restarts.{name}=1"
            )
    return {name: count for name, count in counts.items() if name in attack_plugins and count > 1}


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def plan_from_config(cfg: DictConfig) -> RunPlan:
    check_settings(cfg)
    dataset = as_dataclass(DatasetConfig, cfg.dataset, "dataset")
    if cfg.get("data_root") is not None:
        dataset.data_root = str(cfg.data_root)
    DATASETS.get(dataset.name)
    teachers = _as_list(cfg.teacher)
    if not teachers:
        raise ConfigError("no teacher selected: set teacher=<model> or teacher=[a,b]")
    for name in teachers:
        check_model_name(name)
    students = _as_list(cfg.student)
    if not students:
        raise ConfigError("no student selected: set student=<model> or student=[a,b]")
    for name in students:
        if name != SELF_STUDENT:
            check_model_name(name)
    seeds = cfg.seeds
    only_seed = cfg.get("seed")
    if only_seed is not None and (not isinstance(only_seed, int) or isinstance(only_seed, bool) or only_seed < 0):
        raise ConfigError(f"seed must be a non-negative integer (one seed to run) or null, got {only_seed!r}")
    if only_seed is not None and only_seed >= seeds:
        raise ConfigError(
            f"seed={only_seed} is not one of the run's seeds=0..{seeds - 1} (seeds={seeds}); "
            f"allowed: seed 0 to {seeds - 1}, or raise seeds above {only_seed}"
        )
    given = set(cfg.get("given_keys") or [])
    recipe = as_dataclass(Recipe, cfg.train, "train")
    recipe.check_milestones()
    recipe_by_model = recipes_by_model(recipe, _epochs_everywhere(cfg, given))
    for arch, own in recipe_by_model.items():
        own.check_milestones(f"train_by_model.{arch}")
    paper = cfg.get("paper")
    if paper is not None:
        check_paper_table(str(paper))
    paper_differences = [] if paper is None else _paper_differences(cfg, given)
    results_dir = Path(str(cfg.results_dir)).expanduser()
    dataset_dir = results_dir / dataset.name
    cache_dir = Path(str(cfg.cache_dir)).expanduser() if cfg.cache_dir else dataset_dir / ".cache"
    reference_dir = Path(str(cfg.reference_dir)).expanduser() if cfg.get("reference_dir") else None
    for setting, folder in (("results_dir", dataset_dir), ("cache_dir", cache_dir)):
        if reference_dir is not None and _inside(folder, reference_dir):
            raise ConfigError(
                f"{setting}={cfg[setting]} writes into the committed reference folder reference_dir={reference_dir}, "
                f"which bench run never writes; set {setting}=<another folder>"
            )
    rerun = cfg.get("rerun", False)
    if not isinstance(rerun, bool):
        raise ConfigError(f"rerun must be true or false, got {rerun!r}")
    device = resolve_device(str(cfg.device))
    attacks = selected_plugins(ATTACKS, "attack", cfg.get("attack"))
    attack_bases = attack_variants_of(attacks, cfg.get("attack_variants"))
    attack_plugins = _built(ATTACKS, "attack", attacks, attack_bases)
    restarts = _restarts(cfg, attack_plugins)
    teacher_file = _teacher_file(cfg, teachers)  # a missing file is named before anything else
    not_applicable = _check_attacks(attack_plugins, teachers, dataset, chosen="attack" in given)
    defenses = selected_plugins(DEFENSES, "defense", cfg.get("defense"))
    from_files = [name for name, options in defenses.items() if callable(getattr(options, "weight_file", None))]
    if from_files and len(teachers) != 1:
        raise ConfigError(
            f"defense {from_files[0]!r} loads one network: choose one teacher architecture, got {teachers}"
        )
    return RunPlan(
        dataset=dataset,
        teachers=teachers,
        students=students,
        defenses=defenses,
        attacks=attacks,
        seeds=[only_seed] if only_seed is not None else list(range(seeds)),
        device=device,
        acceleration=resolve_acceleration(device, str(cfg.precision), cfg.channels_last, bool(cfg.compile)),
        recipe=recipe,
        results_dir=results_dir,
        cache_dir=cache_dir,
        quiet=bool(cfg.quiet),
        preset=str(cfg.get("preset_name", "default")),
        config=cfg,
        recipe_by_model=recipe_by_model,
        workers=(workers := resolve_workers(cfg.get("workers", 1), device)),
        threads=resolve_threads(cfg.get("threads", "auto"), workers),
        paper=None if paper is None else str(paper),
        reference_dir=reference_dir,
        reference_name=_reference_name(cfg.get("reference_name"), dataset.name),
        rerun=rerun,
        started_at=time.time(),
        attack_bases=attack_bases,
        restarts=restarts,
        heartbeat_s=float(cfg.heartbeat_s),
        stealing_curves=bool(cfg.stealing_curves),
        teacher_file=teacher_file,
        paper_differences=paper_differences,
        defense_plugins=_built(DEFENSES, "defense", defenses, {}),
        attack_plugins=attack_plugins,
        not_applicable=not_applicable,
    )


# The settings a published figure depends on: changing one makes a run another experiment.
PAPER_SETTINGS = ("dataset", "teacher", "train", "train_by_model", "precision", "defense.", "attack.")
NOT_PAPER_SETTINGS = ("dataset.data_root", "dataset.download")  # where the data is, not what it is


def _paper_differences(cfg: DictConfig, given: set[str]) -> list[str]:
    """The preset's own ``paper_differences`` and every setting given on the command line that the
    published figures depend on, as ``key=value``."""
    found = [str(d) for d in cfg.get("paper_differences") or []]
    for key in sorted(given):
        if key.startswith(PAPER_SETTINGS) and not key.startswith(NOT_PAPER_SETTINGS):
            value = cfg.dataset.name if key == "dataset" else OmegaConf.select(cfg, key)
            shown = OmegaConf.to_container(value) if isinstance(value, DictConfig | ListConfig) else value
            found.append(f"{key}={shown}")
    return found


def _epochs_everywhere(cfg: DictConfig, given: set[str]) -> DictConfig | None:
    """``train_by_model`` with ``train.epochs``, where the command line gives it, in every entry
    that sets epochs of its own, unless the command line sets that entry's epochs too: a shorter run
    shortens every network."""
    by_model = cfg.get("train_by_model")
    if "train.epochs" not in given or not by_model:
        return by_model
    by_model = copy.deepcopy(by_model)
    with open_dict(by_model):
        for arch, changes in by_model.items():
            if isinstance(changes, DictConfig) and "epochs" in changes and f"train_by_model.{arch}.epochs" not in given:
                changes.epochs = cfg.train.epochs
    return by_model


def _teacher_file(cfg: DictConfig, teachers: list[str]) -> TeacherFile | None:
    """``teacher_weights=PATH`` (with ``teacher_name=``): checked to exist, hashed."""
    weights, name = cfg.get("teacher_weights"), cfg.get("teacher_name")
    if weights is None:
        if name is not None:
            raise ConfigError("teacher_name names a teacher loaded from a file: set teacher_weights=PATH too")
        return None
    if len(teachers) != 1:
        raise ConfigError(f"teacher_weights holds one network: choose one teacher architecture, got {teachers}")
    path = Path(str(weights)).expanduser().resolve()
    sha256 = check_weight_file(path, "teacher_weights")
    label = str(name) if name is not None else path.stem
    if not re.fullmatch(r"[\w.+-]+", label):
        raise ConfigError(f"teacher_name must be letters, digits and . _ + -, got {label!r}")
    return TeacherFile(path, sha256, label)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both resolved, so links and ``..`` count)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _reference_name(setting: Any, dataset: str) -> str:
    if setting is None:
        return dataset
    name = str(setting)
    if not isinstance(setting, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(f"reference_name must be a folder name inside reference_dir (no '/'), got {setting!r}")
    return name
