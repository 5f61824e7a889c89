"""The root config's own settings (``bench/conf/config.yaml``): which keys exist, what each takes,
and the ranges of those that are not checked where they are used, each refused in one line.

A key given with ``+x=1`` that names no setting, a setting removed with ``~train``, a group set to
null (``attack=null``) or a value of the wrong type (``quiet=maybe``, ``train=5``,
``heartbeat_s=inf``) would otherwise be ignored, read as something else, or crash later.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kdbench.config.typecheck import check_types
from kdbench.errors import ConfigError

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
    dataset: dict
    defense: dict
    attack: dict
    train: dict
    train_by_model: dict | None
    attack_variants: dict | None
    paper: str | None
    paper_differences: list[str]
    preset_name: str
    given_keys: list[str]


def check_settings(cfg: DictConfig) -> None:
    """Every root key known, present and of its type; seeds, heartbeat and folders in range."""
    names = [f.name for f in fields(RootSettings)]
    unknown = sorted(set(cfg.keys()) - set(names))
    if unknown:
        allowed = ", ".join(name for name in names if name not in ("preset_name", "given_keys"))
        raise ConfigError(f"unknown setting(s) {', '.join(map(str, unknown))}; allowed: {allowed}")
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


def _plain(cfg: DictConfig, name: str) -> Any:
    value = cfg[name]
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
