"""``kdbench.evaluate(model, ...)``: the whole benchmark on a trained ``nn.Module``, from Python.

The model's state_dict is saved under the results folder (``<results_dir>/<dataset>/owned/``,
named after its sha256) and the run goes through ``teacher_weights=`` exactly as the CLI's does:
the same validation, records, caching and tables. The architecture is the model's class as an
import path (``package.module:Class``) where that imports and builds the same network; a class
defined in a notebook or script (``__main__``) is registered in this process instead, and the run
then computes in this process (``workers=1``).
"""

from __future__ import annotations

import ast
import copy
import importlib
import io
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from kdbench.errors import ConfigError
from kdbench.store.atomic import atomic_write

IN_MEMORY_PREFIX = "python/"


def evaluate(
    model: nn.Module,
    dataset: str = "digits",
    attacks: Iterable[str] = ("kd", "blackbox"),
    students: Iterable[str] = ("mlp",),
    normalize: Any = None,
    *,
    defenses: Iterable[str] | None = None,
    name: str | None = None,
    results_dir: str | Path = "results/runs",
    overrides: Mapping[str, Any] | Iterable[str] = (),
    console: Any = None,
    quiet: bool = False,
    **options: Any,
) -> pd.DataFrame:
    """Attack ``model`` (trained, in eval mode or not) on ``dataset``; one row per record, the
    columns of records.csv.

    ``normalize`` is ``dataset.normalize`` (what the network expects: ``"[0,1]"``, ``"imagenet"``,
    ``{"mean": [...], "std": [...]}``; None: the dataset's own statistics). ``defenses``: the
    defenses built on it (default: all of the dataset's). Further settings are keyword arguments
    with ``__`` for dots (``train__epochs=2``) or ``overrides={"train.epochs": 2}``, set as the
    Python values they are (no text is parsed), or a list of Hydra override strings.
    Bad input raises :class:`kdbench.errors.ConfigError` before anything trains.

    While it runs it prints what trains and the time left, then the run's summary (the ranking, the
    drop per attack, the finding), as ``bench run`` does, on ``console`` (default: standard error);
    ``quiet=True`` prints nothing.
    """
    from rich.console import Console

    from kdbench.config.compose import GROUPS
    from kdbench.matrix.run import run_command
    from kdbench.report.leaderboard import records_frame
    from kdbench.store.records import RecordStore

    if not isinstance(model, nn.Module):
        raise ConfigError(f"evaluate() takes a torch.nn.Module, got {type(model).__name__}")
    results = Path(results_dir).expanduser()
    weights = save_weights(model, results / dataset / "owned")
    arch, in_process = model_name(model)
    # the groups are chosen by name; every other setting goes in as the Python value it is
    groups = [f"dataset={dataset}", f"attack=[{','.join(attacks)}]"]
    if defenses is not None:
        groups.append(f"defense=[{','.join(defenses)}]")
    values: dict[str, Any] = {
        "teacher": arch,
        "teacher_weights": str(weights),
        "teacher_name": name or type(model).__name__,
        # the attacks named are the columns: a config's variants (digits' kd_t20) join only when asked
        # for with overrides={"attack_variants": {...}}
        "attack_variants": None,
        "student": list(students),
        "results_dir": str(results),
        "quiet": quiet,
    }
    if normalize is not None:
        values["dataset.normalize"] = normalize
    if in_process or called_outside_a_main_guard():
        values["workers"] = 1
    values.update({key.replace("__", "."): value for key, value in options.items()})
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            if key in GROUPS:  # a group given in the mapping is chosen by name like the others
                groups.append(f"{key}={value}")
            else:
                values[key] = value
    else:
        groups += list(overrides)  # Hydra override strings, as on the command line
    plan, _ = run_command(groups, console or Console(stderr=True, quiet=quiet), values)
    store = RecordStore(plan.dataset_dir)
    records = [r for r in (store.get(cell.name) for cell in plan.selected_cells) if r is not None]
    return records_frame(records)


def called_outside_a_main_guard() -> bool:
    """Whether this call comes from a script's top level outside ``if __name__ == "__main__":``.

    A spawned worker process imports the script it was started from, so it would run that top level,
    and this call with it, while it starts (and fail). Such a run stays in this process: the same
    records, one core. Interactive sessions and notebooks have no script and are not affected.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None:
        return False
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals is not vars(main):
        frame = frame.f_back
    while frame is not None and frame.f_back is not None and frame.f_back.f_globals is vars(main):
        frame = frame.f_back  # the script's top-level frame, under its own functions
    if frame is None or frame.f_code.co_name != "<module>":
        return False
    try:
        tree = ast.parse(Path(path).read_text(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return True  # cannot tell: stay in this process
    return not any(
        _is_main_guard(node) and node.lineno <= frame.f_lineno <= (node.end_lineno or 0) for node in tree.body
    )


def _is_main_guard(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":`` (either way round)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare) or len(node.test.comparators) != 1:
        return False
    sides = {ast.unparse(node.test.left), ast.unparse(node.test.comparators[0])}
    return isinstance(node.test.ops[0], ast.Eq) and sides in ({"__name__", "'__main__'"}, {"__name__", '"__main__"'})


def save_weights(model: nn.Module, folder: Path) -> Path:
    """``model``'s state_dict as ``folder/<sha256 of its tensors>.pt`` (the same weights, the same
    file, and the same identity as the CLI gives a file of them: :func:`~kdbench.models.weights.weights_sha256`)."""
    from kdbench.models.weights import weights_sha256

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    blob = buffer.getvalue()
    path = folder / f"{weights_sha256(state)}.pt"
    if not path.exists():
        atomic_write(path, lambda f: f.write(blob))
    return path


def model_name(model: nn.Module) -> tuple[str, bool]:
    """The name ``model``'s architecture runs under, and whether it exists only in this process."""
    cls = type(model)
    path = f"{cls.__module__}:{cls.__qualname__}"
    if cls.__module__ != "__main__" and "<locals>" not in cls.__qualname__:
        try:
            from kdbench.models.imported import create_imported

            target = importlib.import_module(cls.__module__)
            for part in cls.__qualname__.split("."):
                target = getattr(target, part)
            probe = create_imported(path, 10, (3, 32, 32))
            if target is cls and _layout(probe) == _layout(model):
                return path, False
        except (ConfigError, ImportError, AttributeError):
            pass
    return register_in_memory(model), True


def _layout(model: nn.Module) -> list[str]:
    return list(model.state_dict())


def register_in_memory(model: nn.Module) -> str:
    """Register ``model``'s architecture (copies of it) under ``python/<Class>`` in this process."""
    from kdbench.models import MODELS, architecture_fingerprint

    name = f"{IN_MEMORY_PREFIX}{type(model).__qualname__.replace('<locals>.', '')}"
    template = copy.deepcopy(model).cpu()

    def build(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
        return copy.deepcopy(template)

    MODELS.unregister(name)
    MODELS.add(name, build, source="kdbench.evaluate (this process)")
    architecture_fingerprint.cache_clear()
    return name
