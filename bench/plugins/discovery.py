"""Fills the plugin registries: the suite's own plugins, then installed packages' entry points.

Kept apart from :mod:`kdbench.api`, which plugins import: the engine calls :func:`load_plugins`,
and a plugin module importing the API never imports another plugin as a side effect.
"""

from __future__ import annotations

import importlib.metadata

from kdbench.api import ATTACKS, DEFENSES
from kdbench.errors import ConfigError

ENTRY_POINT_GROUPS = {"kdbench.attacks": ATTACKS, "kdbench.defenses": DEFENSES}
MODEL_GROUP = "kdbench.models"
_loaded = False


def load_plugins() -> None:
    """Fill the registries once per process.

    A third-party package declares, in its pyproject.toml::

        [project.entry-points."kdbench.attacks"]
        my_attack = "my_package.my_module"

    Loading the entry point imports that module, whose ``@register_attack("my_attack", ...)`` does
    the registration. Architectures come from the group ``kdbench.models``: each entry point's name
    is the model's name and its value the factory (``my_net = "my_package.nets:MyNet"``), called as
    an import path is (:mod:`kdbench.models.imported`).
    """
    global _loaded
    if _loaded:
        return
    import kdbench.attacks
    import kdbench.defenses  # noqa: F401

    for group, registry in ENTRY_POINT_GROUPS.items():
        for entry_point in importlib.metadata.entry_points(group=group):
            package = entry_point.dist.name if entry_point.dist is not None else "?"
            where = f"plugin {entry_point.name!r} of package {package!r} (entry point {group}: {entry_point.value})"
            before = set(registry.names())
            try:
                entry_point.load()
            except Exception as err:
                raise ConfigError(f"{where} failed to import: {type(err).__name__}: {err}") from None
            if entry_point.name not in registry:
                # `attack=<name>` finds what the decorator registered, not the entry point's name
                made = sorted(set(registry.names()) - before)
                raise ConfigError(
                    f"{where} registered no {registry.kind} named {entry_point.name!r} (it registered "
                    f"{', '.join(repr(n) for n in made) or 'none'}): give the entry point the name its "
                    f"@register_{registry.kind} uses"
                )
    _load_models()
    _loaded = True


def _load_models() -> None:
    from kdbench.models import MODELS
    from kdbench.models.imported import create_imported

    for entry_point in importlib.metadata.entry_points(group=MODEL_GROUP):
        path = entry_point.value.replace(" ", "")

        def build(num_classes: int, input_shape: tuple[int, int, int], path: str = path):
            return create_imported(path, num_classes, input_shape)

        package = entry_point.dist.name if entry_point.dist is not None else "?"
        MODELS.add(entry_point.name, build, source=f"{package} ({MODEL_GROUP}: {path})")
