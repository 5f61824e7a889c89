"""Check config values against the annotations of the dataclass they fill, before its own checks run.

A value of the wrong type (``train.epochs=1.5``, ``train.milestones=[abc]``, ``dataset.image_size=abc``)
is refused with one line naming the field and the type it takes, instead of failing later in a
comparison or a training step. A ``float`` field takes finite numbers only: ``inf`` passes every
``> 0`` check and NaN every comparison, so this one check keeps both out of every option.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import fields
from typing import Any

from kdbench.errors import ConfigError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _accepts(hint: Any, value: Any) -> tuple[bool, str]:
    """Whether ``value`` fits ``hint``, and how to name what the hint allows."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        names = [_accepts(option, value)[1] for option in options if option is not type(None)]
        name = " or ".join(names) + (" or null" if type(None) in options else "")
        return any(value is None if o is type(None) else _accepts(o, value)[0] for o in options), name
    if hint is int:
        return _is_int(value), "an integer"
    if hint is float:
        return _is_number(value) and math.isfinite(value), "a finite number"
    if hint is bool:
        return isinstance(value, bool), "true or false"
    if hint is str:
        return isinstance(value, str), "a string"
    if origin in (list, tuple) or hint in (list, tuple):
        args = typing.get_args(hint)
        item = args[0] if args else Any
        item_name = _accepts(item, None)[1] if item is not Any else "values"
        name = f"a list of {item_name.removeprefix('an ').removeprefix('a ')}s" if item is not Any else "a list"
        if not isinstance(value, (list, tuple)):
            return False, name
        return all(item is Any or _accepts(item, v)[0] for v in value), name
    if origin is dict or hint is dict:
        return isinstance(value, dict), "a mapping"
    return True, "anything"


def check_types(cls: type, values: dict[str, Any], where: str) -> None:
    """Raise ConfigError naming ``<where>.<field>`` (``<field>`` where ``where`` is empty) for the
    first value whose type its annotation refuses."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name not in values or f.name not in hints:
            continue
        ok, allowed = _accepts(hints[f.name], values[f.name])
        if not ok:
            raise ConfigError(f"{where + '.' if where else ''}{f.name} must be {allowed}, got {values[f.name]!r}")
