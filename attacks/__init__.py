"""The suite's own attacks; importing this package registers them."""

from kdbench.attacks import blackbox, dafl, deepinversion, htc, kd, skeptical  # noqa: F401
