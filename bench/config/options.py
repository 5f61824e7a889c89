"""Config nodes into validated option dataclasses: the selected plugins, attack variants and
per-architecture recipes, each error naming the option and what is allowed."""

from __future__ import annotations

import re
from dataclasses import asdict, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kdbench.api import ATTACKS
from kdbench.config.compose import hydra_message
from kdbench.config.typecheck import check_types
from kdbench.errors import ConfigError, options_of
from kdbench.models import check_model_name
from kdbench.plugins.registry import Entry, Registry
from kdbench.training.recipe import Recipe

VARIANT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def attack_variants_of(attacks: dict[str, Any], node: DictConfig | None) -> dict[str, str]:
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
        attacks[name] = as_dataclass(entry.config, {**asdict(attacks[base]), **values}, where)
        bases[name] = base
    return bases


MAX_RESTARTS = 100


def restarts_of(known: list[str], node: DictConfig | None) -> dict[str, int]:
    """``restarts.<column>: N``: each cell of that attack column trains N students, the first with
    the cell's seed, and reports their mean accuracy. Any known column may be named (a dataset sets
    it whether or not the column is selected); N is an integer from 1 to :data:`MAX_RESTARTS`."""
    counts: dict[str, int] = {}
    for name, count in (node or {}).items():
        name, where = str(name), f"restarts.{name}"
        if name not in known:
            raise ConfigError(f"{where}: no attack column {name!r}; allowed: {', '.join(sorted(known))}")
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_RESTARTS:
            raise ConfigError(
                f"{where} must be an integer from 1 to {MAX_RESTARTS} (students a cell trains), got {count!r}"
            )
        counts[name] = count
    return counts


def as_dataclass(cls: type, node: Any, where: str) -> Any:
    """Build ``cls`` from a config node, turning type and range errors into one clear line."""
    try:
        values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
    except OmegaConfBaseException as err:
        raise ConfigError(f"{where}: {hydra_message(err)}") from None
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    check_types(cls, values, where)
    try:
        with options_of(where):
            return cls(**values)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None


def selected_plugins(registry: Registry, group: str, node: DictConfig | None) -> dict[str, Any]:
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
        chosen[name] = as_dataclass(cls, options, f"{group}.{name}") if cls is not None else None
    if not chosen:
        raise ConfigError(f"no {group} selected; choose from: {', '.join(registry.names())}")
    return chosen


def recipes_by_model(recipe: Recipe, node: DictConfig | None) -> dict[str, Recipe]:
    """``train_by_model.<arch>``: fields that replace ``train``'s for networks of that architecture."""
    recipes = {}
    for name, changes in (node or {}).items():
        where = f"train_by_model.{name}"
        check_model_name(str(name))
        if not isinstance(changes, DictConfig):
            raise ConfigError(f"{where} must map recipe fields to values (e.g. {{lr: 0.001}}), got {changes!r}")
        merged = {**asdict(recipe), **OmegaConf.to_container(changes, resolve=True)}
        try:
            recipes[str(name)] = as_dataclass(Recipe, merged, where)
        except ConfigError as err:
            message = str(err)
            if message.startswith("train."):  # Recipe names its fields train.<field>; here they are the model's
                message = f"{where}.{message.removeprefix('train.')}"
            raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None
    return recipes
