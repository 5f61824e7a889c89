"""Hydra composition of the packaged config tree (``kdbench.conf``) with every plugin's options
as a config group option, and Hydra's and OmegaConf's errors turned into one line."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from kdbench.api import ATTACKS, DEFENSES
from kdbench.config.settings import unknown_setting
from kdbench.errors import ConfigError
from kdbench.plugins.discovery import load_plugins

CONFIG_MODULE = "kdbench.conf"


def store_plugin_configs() -> None:
    """Expose every plugin's option dataclass as a Hydra group option (``attack=kd``)."""
    store = ConfigStore.instance()
    for group, registry in (("defense", DEFENSES), ("attack", ATTACKS)):
        for entry in registry:
            node = entry.config if entry.config is not None else {}
            store.store(group=group, name=entry.name, node={entry.name: node})


# Config groups: chosen by name in an override (``attack=[kd,htc]``), not set as values.
GROUPS = ("preset", "dataset", "defense", "attack")


def compose_config(overrides: list[str], values: Mapping[str, Any] | None = None) -> DictConfig:
    """The run's config: the packaged tree with ``overrides`` (Hydra's grammar, as typed on the
    command line), then ``values`` set as Python values at their dotted keys (``{"dataset.normalize":
    [0, 1]}``) with the same checks as an override, and nothing parsed from text."""
    check_overrides(overrides)
    load_plugins()
    store_plugin_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(CONFIG_MODULE, version_base=None):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        # not Hydra's advice to append it with +key, which would only be refused later
        unknown = re.match(r"Could not override '([^']+)'", str(err))
        if unknown and re.search(r"Key '[^']+' (is )?not in", hydra_message(err)):
            raise ConfigError(unknown_setting(unknown.group(1))) from None
        raise ConfigError(hydra_message(err)) from None
    for key, value in (values or {}).items():
        if key in GROUPS:
            raise ConfigError(f"{key} is a config group: choose it as an override ({key}=<name>), not a value")
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except OmegaConfBaseException as err:
            raise ConfigError(f"{key}: {hydra_message(err)}") from None
    # Keep only what the plan needs of Hydra's own node: which preset was chosen, and which keys the
    # command line (or evaluate's values) set, over the preset's.
    with open_dict(cfg):
        cfg.preset_name = str(cfg.hydra.runtime.choices.get("preset", "default"))
        cfg.given_keys = sorted({override_key(o) for o in overrides} | set(values or {}))
        del cfg["hydra"]
    return cfg


def check_overrides(overrides: list[str]) -> None:
    """Refuse, before Hydra reads them, overrides that name no setting or set a group to nothing."""
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if not key and not override.startswith("-"):
            raise ConfigError(f"override {override!r} names no setting; write <setting>=<value>, e.g. seeds=2")
        if key in GROUPS and value.strip() in ("null", "None", "~"):
            raise ConfigError(
                f"{key}={value}: {key} is chosen by name ({key}=<name>, or {key}=[a,b] for several); "
                f"`bench list` shows the names"
            )


def override_key(override: str) -> str:
    """The key an override sets: ``train.epochs`` of ``train.epochs=3``, ``dataset`` of ``+dataset=x``."""
    return override.split("=", 1)[0].lstrip("+~")


# OmegaConf's names for the types a structured config field converts a value to
_OMEGACONF_TYPES = {
    "Float": "a finite number",
    "Integer": "an integer",
    "Boolean": "true or false",
    "String": "a string",
}


def hydra_message(err: BaseException) -> str:
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
