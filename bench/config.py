"""Hydra composition of the packaged config tree, and its validation into a typed :class:`RunPlan`.

Every name and value is checked here, before anything is trained, so bad input costs one clear
line instead of a traceback an hour into a run.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from kdbench.api import ATTACKS, DEFENSES, DataAccess
from kdbench.code_fingerprint import code_fingerprint
from kdbench.data import DatasetConfig
from kdbench.datasets import DATASETS
from kdbench.discovery import load_plugins
from kdbench.errors import ConfigError
from kdbench.models import architecture_fingerprint, check_model_name, probe_model
from kdbench.paper import check_paper_table
from kdbench.records import cell_name
from kdbench.registry import Entry, Registry, build
from kdbench.train import Acceleration, Recipe, resolve_acceleration
from kdbench.typecheck import check_types
from kdbench.weights import TeacherFile, check_weight_file
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

CONFIG_MODULE = "kdbench.conf"
# A student named "self" is the teacher's own architecture, resolved per teacher (the paper's column).
SELF_STUDENT = "self"


def store_plugin_configs() -> None:
    """Expose every plugin's option dataclass as a Hydra group option (``attack=kd``)."""
    store = ConfigStore.instance()
    for group, registry in (("defense", DEFENSES), ("attack", ATTACKS)):
        for entry in registry:
            node = entry.config if entry.config is not None else {}
            store.store(group=group, name=entry.name, node={entry.name: node})


def compose_config(overrides: list[str]) -> DictConfig:
    load_plugins()
    store_plugin_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(CONFIG_MODULE, version_base=None):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_hydra_message(err)) from None
    # Keep only what a report needs of Hydra's own node: which preset was chosen.
    with open_dict(cfg):
        cfg.preset_name = str(cfg.hydra.runtime.choices.get("preset", "default"))
        del cfg["hydra"]
    return cfg


# OmegaConf's names for the types a structured config field converts a value to
_OMEGACONF_TYPES = {"Float": "a number", "Integer": "an integer", "Boolean": "true or false", "String": "a string"}


def _hydra_message(err: BaseException) -> str:
    parts = []
    while err is not None:
        # A value a plugin's option dataclass cannot take: name the field, what it takes, and the value.
        wanted = re.search(r"could not be converted to (\w+)", str(err))
        if getattr(err, "full_key", None) and wanted:
            allowed = _OMEGACONF_TYPES.get(wanted.group(1), wanted.group(1))
            return f"{err.full_key} must be {allowed}, got {err.value!r}"
        text = str(err).split("\nConfig search path:")[0].strip()
        # OmegaConf chains its unformatted template ("Value '$VALUE' of type '$VALUE_TYPE' ..."): skip it
        text = re.sub(r"\n\s*(full_key|object_type)[:=].*", "", text)
        if text and text not in parts and "$VALUE" not in text:
            parts.append(text)
        err = err.__cause__ or err.__context__
    return re.sub(r"\n\s*", " ", "; ".join(parts))


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
    reference_dir: Path | None = None  # committed reference runs to compare with (never written)
    rerun: bool = False  # recompute the selected cells, retrain their networks
    started_at: float = 0.0  # time.time() when planned: with rerun, networks older than this retrain
    command: str = ""  # the command line that asked for this run, kept in every record it writes
    # teacher_weights=PATH: the owner's trained network, loaded instead of the normal teacher
    teacher_file: TeacherFile | None = None
    attack_bases: dict[str, str] = field(default_factory=dict)  # variant column → the plugin it runs
    heartbeat_s: float = 30.0  # without a terminal, a progress line this often

    def attack_plugin(self, name: str) -> str:
        """The registered attack that column ``name`` runs (itself, or a variant's base)."""
        return self.attack_bases.get(name, name)

    def recipe_for(self, arch: str) -> Recipe:
        """How networks of architecture ``arch`` train (as teacher, baseline or attacked student)."""
        return self.recipe_by_model.get(arch, self.recipe)

    @property
    def cells(self) -> list[Cell]:
        return [
            Cell(t, d, a, s, seed)
            for seed, t, d, a, s in itertools.product(
                self.seeds, self.teachers, self.defenses, self.attacks, self.students
            )
        ]

    @property
    def dataset_dir(self) -> Path:
        return self.results_dir / self.dataset.name

    def network_identity(self, arch: str, seed: int) -> dict[str, Any]:
        """What determines any network of architecture ``arch`` this run trains at ``seed``.

        The common part of every cache key: a teacher's adds its defense, a baseline's its kind.
        """
        return {
            "dataset": asdict(self.dataset),
            "arch": arch,
            "arch_fingerprint": architecture_fingerprint(arch),
            "bf16": self.acceleration.bf16,
            "recipe": asdict(self.recipe_for(arch)),
            "seed": seed,
            # CPU reductions are split per thread, so the same seed gives other bits with other threads
            **({"threads": self.threads} if self.device.type == "cpu" else {}),
        }

    def teacher_identity(self, arch: str, seed: int) -> dict[str, Any]:
        """The common part of a teacher's key: with teacher_weights, the file's sha256 too, so every
        network and cell built from another file is computed anew."""
        identity = self.network_identity(arch, seed)
        if self.teacher_file is not None:
            identity["teacher_weights"] = self.teacher_file.sha256
        return identity

    def cell_key(self, cell: Cell) -> dict[str, Any]:
        return {
            **self.teacher_identity(cell.teacher, cell.seed),
            "defense": {cell.defense: options_identity(self.defenses[cell.defense])},
            "attack": {cell.attack: self._attack_identity(cell.attack)},
            # the plugins' package, version and source hash: editing a plugin recomputes its cells
            "defense_code": code_fingerprint(DEFENSES.get(cell.defense).source),
            "attack_code": code_fingerprint(ATTACKS.get(self.attack_plugin(cell.attack)).source),
            # the architecture, not the name: a "self" cell is the same computation as its twin
            "student": cell.student_arch,
            "student_arch": architecture_fingerprint(cell.student_arch),
            "student_recipe": asdict(self.recipe_for(cell.student_arch)),
        }

    def _attack_identity(self, name: str) -> dict[str, Any]:
        options = asdict(self.attacks[name])
        return {"base": self.attack_bases[name], **options} if name in self.attack_bases else options


VARIANT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _variants(attacks: dict[str, Any], node: DictConfig | None) -> dict[str, str]:
    """``attack_variants.<name>: {base: <attack>, <option>: <value>, ...}``: a named column that runs
    ``base`` with the base's options (as the dataset, preset and command line set them) changed by
    the variant's. A variant joins the matrix whenever its base attack is selected; it is added to
    ``attacks`` (validated like any attack) and its base returned by name."""
    bases: dict[str, str] = {}
    for name, spec in (node or {}).items():
        name, where = str(name), f"attack_variants.{name}"
        if not VARIANT_NAME.match(name):
            raise ConfigError(f"{where}: a variant name is letters, digits and _, starting with a letter")
        if name in ATTACKS:
            raise ConfigError(f"{where}: {name!r} is already a registered attack; give the variant another name")
        if not isinstance(spec, DictConfig) or "base" not in spec:
            raise ConfigError(f"{where} must set base: <attack> and the options it changes, e.g. {{base: kd, tau: 20}}")
        values = OmegaConf.to_container(spec, resolve=True)
        base = str(values.pop("base"))
        entry = ATTACKS.get(base)
        if entry.config is None:
            raise ConfigError(f"{where}: attack {base!r} takes no options, so a variant of it would be the same attack")
        if base not in attacks:
            continue
        attacks[name] = _as_dataclass(entry.config, {**asdict(attacks[base]), **values}, where)
        bases[name] = base
    return bases


def options_identity(options: Any) -> dict[str, Any]:
    """A plugin's options as its keys hold them: ``identity()`` where the options name a file (its
    content hash then counts, not only its path), else every field."""
    identity = getattr(options, "identity", None)
    return identity() if callable(identity) else asdict(options)


def _as_dataclass(cls: type, node: Any, where: str) -> Any:
    """Build ``cls`` from a config node, turning type and range errors into one clear line."""
    try:
        values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
    except OmegaConfBaseException as err:
        raise ConfigError(f"{where}: {_hydra_message(err)}") from None
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    check_types(cls, values, where)
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None


def _selected(registry: Registry, group: str, node: DictConfig | None) -> dict[str, Any]:
    """The plugins chosen in ``group`` with their validated options.

    A group option arrives typed with the plugin's dataclass; a bare ``defense.nasty: {...}`` that a
    dataset or preset sets only tunes the plugin in case it is selected, and selects nothing.
    """
    chosen: dict[str, Any] = {}
    for name, options in (node or {}).items():
        entry: Entry = registry.get(name)
        cls = entry.config
        if cls is not None and OmegaConf.get_type(options) is not cls:
            continue
        chosen[name] = _as_dataclass(cls, options, f"{group}.{name}") if cls is not None else None
    if not chosen:
        raise ConfigError(f"no {group} selected; choose from: {', '.join(registry.names())}")
    return chosen


def _check_attacks(attacks: dict[str, Any], teachers: list[str], dataset: DatasetConfig, bases: dict[str, str]) -> None:
    """Build each chosen attack once with its options and refuse, before anything trains, one that
    cannot work here: on a chosen teacher (DeepInversion needs BatchNorm), or on a held-out split
    the dataset does not set aside."""
    for name, options in attacks.items():
        attack = build(ATTACKS.get(bases.get(name, name)), options)
        if attack.data_access is DataAccess.HELDOUT_INPUTS and not dataset.heldout_fraction > 0:
            raise ConfigError(
                f"attack {name!r} queries a held-out split, but dataset {dataset.name!r} sets none aside: "
                f"set dataset.heldout_fraction (e.g. 0.2)"
            )
        for arch in teachers:
            attack.check_teacher(arch, probe_model(arch))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    allowed = "auto, cpu, cuda, cuda:N, mps"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {name!r}; allowed: {allowed}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {name!r}; allowed: {allowed}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but this machine has no CUDA GPU; allowed here: auto, cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} asked for, but MPS is not available here; allowed here: auto, cpu")
    return device


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def plan_from_config(cfg: DictConfig) -> RunPlan:
    dataset = _as_dataclass(DatasetConfig, cfg.dataset, "dataset")
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
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds <= 0:
        raise ConfigError(f"seeds must be a positive integer (the number of seeds), got {seeds!r}")
    only_seed = cfg.get("seed")
    if only_seed is not None and (not isinstance(only_seed, int) or isinstance(only_seed, bool) or only_seed < 0):
        raise ConfigError(f"seed must be a non-negative integer (one seed to run) or null, got {only_seed!r}")
    if only_seed is not None and only_seed >= seeds:
        raise ConfigError(
            f"seed={only_seed} is not one of the run's seeds=0..{seeds - 1} (seeds={seeds}); "
            f"allowed: seed 0 to {seeds - 1}, or raise seeds above {only_seed}"
        )
    recipe = _as_dataclass(Recipe, cfg.train, "train")
    recipe.check_milestones()
    recipe_by_model = _recipes_by_model(recipe, cfg.get("train_by_model"))
    for arch, own in recipe_by_model.items():
        own.check_milestones(f"train_by_model.{arch}")
    paper = cfg.get("paper")
    if paper is not None:
        check_paper_table(str(paper))
    results_dir = Path(str(cfg.results_dir)).expanduser()
    dataset_dir = results_dir / dataset.name
    cache_dir = Path(str(cfg.cache_dir)).expanduser() if cfg.cache_dir else dataset_dir / ".cache"
    reference_dir = Path(str(cfg.reference_dir)).expanduser() if cfg.get("reference_dir") else None
    if reference_dir is not None and _inside(dataset_dir, reference_dir):
        raise ConfigError(
            f"results_dir={results_dir} writes into the committed reference folder reference_dir={reference_dir}, "
            f"which bench run never writes; set results_dir=<another folder> (default results/runs)"
        )
    rerun = cfg.get("rerun", False)
    if not isinstance(rerun, bool):
        raise ConfigError(f"rerun must be true or false, got {rerun!r}")
    device = resolve_device(str(cfg.device))
    attacks = _selected(ATTACKS, "attack", cfg.get("attack"))
    attack_bases = _variants(attacks, cfg.get("attack_variants"))
    _check_attacks(attacks, teachers, dataset, attack_bases)
    teacher_file = _teacher_file(cfg, teachers)
    defenses = _selected(DEFENSES, "defense", cfg.get("defense"))
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
        rerun=rerun,
        started_at=time.time(),
        attack_bases=attack_bases,
        heartbeat_s=_heartbeat(cfg.get("heartbeat_s", 30)),
        teacher_file=teacher_file,
    )


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


def _heartbeat(setting: Any) -> float:
    try:
        seconds = float(setting)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not seconds > 0:
        raise ConfigError(f"heartbeat_s must be a positive number of seconds, got {setting!r}")
    return seconds


# Each worker process holds its own torch and data (about half a GiB on the CPU): ``auto`` stops here.
MAX_AUTO_CPU_WORKERS = 16


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_workers(setting: Any, device: torch.device) -> int:
    """``auto``: one worker per GPU on CUDA (``device=cuda`` without an index), one per core on the
    CPU, where small networks keep one core busy each far better than two threads share one step."""
    if setting == "auto":
        if device.type == "cuda":
            return max(1, torch.cuda.device_count()) if device.index is None else 1
        if device.type == "cpu":
            return min(available_cores(), MAX_AUTO_CPU_WORKERS)
        return 1
    if isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
        return setting
    raise ConfigError(f"workers must be a positive integer or auto, got {setting!r}")


def resolve_threads(setting: Any, workers: int) -> int:
    """``auto``: the cores shared out among the workers (at least one each), whether or not a run
    ends up starting them, so that a network trains with the same threads however it is scheduled."""
    if setting == "auto":
        return max(1, available_cores() // workers)
    if isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
        return setting
    raise ConfigError(f"threads must be a positive integer or auto, got {setting!r}")


def worker_device(device: torch.device, worker: int) -> torch.device:
    """Worker k's device: with ``device=cuda`` (no index) and several GPUs, GPU k mod n."""
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    return torch.device("cuda", worker % gpus) if device.index is None and gpus > 1 else device


def _recipes_by_model(recipe: Recipe, node: DictConfig | None) -> dict[str, Recipe]:
    """``train_by_model.<arch>``: fields that replace ``train``'s for networks of that architecture."""
    recipes = {}
    for name, changes in (node or {}).items():
        where = f"train_by_model.{name}"
        check_model_name(str(name))
        if not isinstance(changes, DictConfig):
            raise ConfigError(f"{where} must map recipe fields to values (e.g. {{lr: 0.001}}), got {changes!r}")
        merged = {**asdict(recipe), **OmegaConf.to_container(changes, resolve=True)}
        try:
            recipes[str(name)] = _as_dataclass(Recipe, merged, where)
        except ConfigError as err:
            message = str(err)
            if message.startswith("train."):  # Recipe names its fields train.<field>; here they are the model's
                message = f"{where}.{message.removeprefix('train.')}"
            raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None
    return recipes
