"""Every dataset the suite knows, by name: importing this module registers the built-in ones.

:func:`load_dataset` is the one way to get an :class:`~kdbench.data.images.ImageData` from a
:class:`~kdbench.data.images.DatasetConfig`; :mod:`kdbench.data.images` holds the types and the shared helpers
the loaders use, and imports no loader.
"""

from __future__ import annotations

import torch

from kdbench.data import arrays, cifar, folders  # noqa: F401  (register digits, synthetic, cifar*, folders)
from kdbench.data.images import DATASETS, DatasetConfig, ImageData, set_aside_heldout, with_normalization


def load_dataset(cfg: DatasetConfig, device: torch.device | str = "cpu") -> ImageData:
    data = with_normalization(DATASETS.get(cfg.name).factory(cfg), cfg.normalize)
    if cfg.heldout_fraction > 0:
        data = set_aside_heldout(data, cfg.heldout_fraction)
    return data.to(device)


__all__ = ["DATASETS", "load_dataset"]
