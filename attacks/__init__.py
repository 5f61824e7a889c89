"""The suite's own attacks; importing this package registers them."""

from kdbench.attacks import blackbox, dafl, deepinversion, dfme, fast_dfkd, htc, kd, skeptical  # noqa: F401
