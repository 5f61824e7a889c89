"""How a data-free attack trains its student: the run's ``train`` recipe, stretched to the attack's
own epoch budget, with the attack's overrides (``attack.dafl.student_recipe={lr: 0.1}``).

A data-free attack's budget (DAFL's 2000 generator epochs, DeepInversion's KD epochs on its pool)
has nothing to do with the epochs a teacher trains for, so the epochs always come from the attack;
multistep milestones are scaled to them unless the overrides set their own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kdbench.api import ConfigError, OptionError, Recipe


def check_recipe_overrides(
    overrides: dict[str, Any], option: str = "student_recipe", *, fixed: tuple[str, ...] = ("epochs",)
) -> None:
    """Refuse an unknown recipe field, one the attack's budget ``fixed``, or an invalid value, naming
    the attack's ``option`` that holds them."""
    allowed = sorted({f.name for f in dataclasses.fields(Recipe)} - set(fixed))
    bad = sorted(set(overrides) - set(allowed))
    if bad:
        raise OptionError(option, f": unknown or budget-fixed field(s) {', '.join(bad)}; allowed: {', '.join(allowed)}")
    try:
        Recipe(**overrides)
    except ConfigError as err:  # Recipe names its fields "train.<field>"; here they are the attack's
        raise OptionError(option, "." + str(err).removeprefix("train.")) from None
    except TypeError as err:
        raise OptionError(option, f": {err}") from None


def student_recipe(base: Recipe, *, epochs: int, overrides: dict[str, Any]) -> Recipe:
    """``base`` with the attack's ``epochs`` and ``overrides`` (milestones scaled unless overridden)."""
    milestones = [round(m * epochs / base.epochs) for m in base.milestones]
    return dataclasses.replace(base, **{"milestones": milestones, **overrides, "epochs": epochs})
