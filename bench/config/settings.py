"""The root config's own settings (``bench/conf/config.yaml``): which keys exist, what each takes,
and the ranges of those that are not checked where they are used, each refused in one line.

A key given with ``+x=1`` that names no setting, a setting removed with ``~train``, a group set to
null (``attack=null``) or a value of the wrong type (``quiet=maybe``, ``train=5``,
``heartbeat_s=inf``) would otherwise be ignored, read as something else, or crash later.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kdbench.config.typecheck import check_types
from kdbench.data.images import DatasetConfig
from kdbench.errors import ConfigError
from kdbench.training.recipe import Recipe

MAX_SEEDS = 1000


@dataclass
class RootSettings:
    """Every key of the composed root config and the type it takes (the groups' own options and the
    recipe's fields are checked by their dataclasses)."""

    teacher: str | list[str]
    teacher_weights: str | None
    teacher_name: str | None
    student: str | list[str]
    data_root: str | None
    seeds: int
    seed: int | None
    device: str
    precision: str
    channels_last: bool | str
    compile: bool
    workers: int | str
    threads: int | str
    results_dir: str
    reference_dir: str | None
    reference_name: str | None
    rerun: bool
    cache_dir: str | None
    quiet: bool
    heartbeat_s: float
    stealing_curves: bool
    dataset: dict
    defense: dict
    attack: dict
    train: dict
    train_by_model: dict | None
    attack_variants: dict | None
    restarts: dict | None
    paper: str | None
    paper_differences: list[str]
    preset_name: str
    given_keys: list[str]


def check_settings(cfg: DictConfig) -> None:
    """Every root key known, present and of its type; seeds, heartbeat and folders in range."""
    names = [f.name for f in fields(RootSettings)]
    unknown = sorted(set(cfg.keys()) - set(names))
    if unknown:
        raise ConfigError(unknown_setting(str(unknown[0])))
    missing = [name for name in names if name not in cfg]
    if missing:
        raise ConfigError(f"{missing[0]} is required and was removed (~{missing[0]}); set it instead")
    values = {name: _plain(cfg, name) for name in names}
    check_types(RootSettings, values, "")
    if not 1 <= values["seeds"] <= MAX_SEEDS:
        raise ConfigError(
            f"seeds must be an integer from 1 to {MAX_SEEDS} (the number of seeds), got {values['seeds']}"
        )
    if not values["heartbeat_s"] > 0:
        raise ConfigError(f"heartbeat_s must be a positive number of seconds, got {values['heartbeat_s']!r}")
    if not values["results_dir"].strip():
        raise ConfigError("results_dir must name a folder, got ''; the default is results/runs")
    reference = values["reference_dir"]
    if reference and Path(reference).expanduser().exists() and not Path(reference).expanduser().is_dir():
        raise ConfigError(f"reference_dir={reference} is a file; give the folder of committed references, or null")


def unknown_setting(key: str) -> str:
    """The one line for a key that names no setting: the nearest that exist, and the list."""
    from kdbench.api import ATTACKS, DEFENSES  # the plugins' registries import the config's users

    head, _, rest = key.partition(".")
    if head == "restarts" and rest:  # a mapping the dataset or preset may leave without this column
        return (
            f"unknown setting {key}: no column's restarts are set there yet; add it with +{key}=<N>; "
            f"attack columns: {', '.join(ATTACKS.names())}"
        )
    schema = {"train": Recipe, "dataset": DatasetConfig}.get(head) if rest else RootSettings
    registry = {"attack": ATTACKS, "defense": DEFENSES}.get(head)
    if registry is not None and rest.count(".") == 1 and rest.split(".")[0] in registry:
        plugin, _, rest = rest.partition(".")  # attack.kd.taux: an option of the plugin kd
        head, schema = f"{head}.{plugin}", registry.get(plugin).config
    if schema is None:
        return f"unknown setting {key}"
    names = [f.name for f in fields(schema) if f.name not in ("preset_name", "given_keys")]
    name = rest if rest else head
    where = f"{head}." if rest else ""
    close = difflib.get_close_matches(name, names, n=2, cutoff=0.6)
    hint = f" (did you mean {' or '.join(where + c for c in close)}?)" if close else ""
    return f"unknown setting {key}{hint}; allowed{f' under {head}' if rest else ''}: {', '.join(names)}"


def _plain(cfg: DictConfig, name: str) -> Any:
    value = cfg[name]
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
