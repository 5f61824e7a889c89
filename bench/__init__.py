"""kdbench: knowledge-distillation attacks against anti-distillation defenses, measured.

``kdbench.evaluate(model, dataset="digits", ...)`` runs the benchmark on a trained network from
Python (:func:`kdbench.own_model.evaluate`); ``bench run all`` from the command line. It is
imported on first use (PEP 562), so ``import kdbench`` imports nothing else of the suite.
"""

import importlib
from typing import Any

from kdbench.version import __version__

__all__ = ["__version__", "evaluate"]


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        return importlib.import_module("kdbench.own_model").evaluate
    raise AttributeError(f"module 'kdbench' has no attribute {name!r}")
