"""The owner's own architecture, named by an import path ``package.module:factory``.

The factory is a class (an ``nn.Module`` subclass) or a function returning an ``nn.Module``. It is
called with the keyword arguments ``num_classes`` and ``input_shape`` (C, H, W) *that it accepts*:
``Net()`` takes none, ``Net(num_classes)`` only the first, ``**kwargs`` both. The current folder is
importable, as for ``python -m``. A model without ``forward_features`` and ``head`` works for every
attack that needs only its outputs.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from kdbench.errors import ConfigError

IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_import_path(name: str) -> bool:
    return ":" in name


def resolve_factory(name: str) -> Callable[..., Any]:
    """The callable that ``package.module:factory`` names, or one clear ConfigError."""
    if not IMPORT_PATH.match(name):
        raise ConfigError(f"model {name!r}: an import path must read package.module:factory (e.g. mynets:Net)")
    module_name, attribute = name.split(":", 1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or the owner's module failing at import
        raise ConfigError(
            f"model {name!r}: module {module_name!r} does not import ({type(err).__name__}: {err}); "
            f"it must be importable from here (the current folder or PYTHONPATH)"
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"model {name!r}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    # Only what can be a model's constructor: a class of torch.nn.Module, or a function written in
    # Python. A built-in such as sys:exit or os:abort is never called.
    is_module_class = inspect.isclass(target) and issubclass(target, nn.Module)
    if not (is_module_class or inspect.isfunction(target)):
        what = "a class that is not a torch.nn.Module" if inspect.isclass(target) else f"a {type(target).__name__}"
        raise ConfigError(
            f"model {name!r}: {attribute!r} is {what}; "
            "allowed: a torch.nn.Module class or a Python function returning one"
        )
    return target


def _accepted(factory: Callable[..., Any]) -> set[str] | None:
    """The names among num_classes, input_shape that ``factory`` accepts (None: all, via **kwargs)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return set()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def create_imported(name: str, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    factory = resolve_factory(name)
    offered = {"num_classes": num_classes, "input_shape": tuple(input_shape)}
    accepted = _accepted(factory)
    kwargs = offered if accepted is None else {k: v for k, v in offered.items() if k in accepted}
    try:
        model = factory(**kwargs)
    except (Exception, SystemExit) as err:  # SystemExit: a factory that calls sys.exit is not a model
        raise ConfigError(
            f"model {name!r}: calling it with {', '.join(kwargs) or 'no arguments'} failed "
            f"({type(err).__name__}: {err}); a factory takes num_classes and/or input_shape, or nothing"
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {name!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def source_digest(name: str) -> str:
    """A hash of the source of the module that defines ``name``: editing the owner's class recomputes."""
    module = sys.modules.get(name.split(":", 1)[0])
    try:
        text = inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):
        text = ""
    return hashlib.sha256(text.encode()).hexdigest()[:12]
