"""kdbench: knowledge-distillation attacks against anti-distillation defenses, measured.

``kdbench.evaluate(model, dataset="digits", ...)`` runs the benchmark on a trained network from
Python (:mod:`kdbench.own_model`); ``bench run all`` from the command line.
"""

from typing import Any

__version__ = "0.1.0"


def evaluate(*args: Any, **kwargs: Any) -> Any:
    """:func:`kdbench.own_model.evaluate` (imported on first use: ``import kdbench`` stays light)."""
    from kdbench.own_model import evaluate as run

    return run(*args, **kwargs)
