"""kdbench: knowledge-distillation attacks against anti-distillation defenses, measured.

``kdbench.evaluate(model, dataset="digits", ...)`` runs the benchmark on a trained network from
Python (:func:`kdbench.own_model.evaluate`); ``bench run all`` from the command line. It is
imported on first use (PEP 562), so ``import kdbench`` imports nothing else of the suite.
"""

import importlib
import os
from typing import Any

from kdbench.version import __version__

# OpenMP threads waiting for work sleep instead of spinning (the PASSIVE policy): on a machine that
# other work shares, two spinning threads trained resnetc20 at a quarter of the speed, while on an
# idle one sleeping costs a few per cent (docs/performance.md, "Threads"). Set before torch loads
# its OpenMP runtime, so in every process that imports kdbench first (the bench command and its
# worker processes, which inherit it); a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# In a worker process just spawned by a run: end with the run even if it is killed while this
# worker is still importing (kdbench.matrix.lifeline).
if os.environ.get("KDBENCH_WORKERS_PARENT"):
    from kdbench.matrix.lifeline import end_with_parent

    end_with_parent()

__all__ = ["__version__", "evaluate"]


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        return importlib.import_module("kdbench.own_model").evaluate
    raise AttributeError(f"module 'kdbench' has no attribute {name!r}")
