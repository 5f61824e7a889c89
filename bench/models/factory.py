"""Build any model by name: a registered one (the suite's, or an installed package's through the
``kdbench.models`` entry-point group), ``timm/<name>`` for any timm model (random init, sized for
the dataset), or the owner's own ``package.module:factory`` (:mod:`kdbench.models.imported`); and
the architecture fingerprint that is part of every cache key."""

from __future__ import annotations

import functools
import hashlib

import torch

from kdbench.models.base import Classifier
from kdbench.models.imported import create_imported, is_import_path, resolve_factory, source_digest
from kdbench.models.registry import MODELS

TIMM_PREFIX = "timm/"


def create_model(name: str, num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    if is_import_path(name):
        return create_imported(name, num_classes, input_shape)  # type: ignore[return-value]
    if name.startswith(TIMM_PREFIX):
        from kdbench.models.timm_models import create_timm_model

        return create_timm_model(name.removeprefix(TIMM_PREFIX), num_classes, input_shape)
    return MODELS.get(name).factory(num_classes, input_shape)


@functools.cache
def architecture_fingerprint(name: str) -> str:
    """A hash of the network's parameter and buffer names and shapes, part of every cache key.

    Editing an architecture (a wider layer, another block) changes it, so weights and records made
    with the old definition are never reused for the new one. Built on the meta device at a fixed
    probe shape: no memory, no data needed.
    """
    layout: list = [(key, list(value.shape)) for key, value in probe_model(name).state_dict().items()]
    if is_import_path(name):  # the owner's class: its module's source too
        layout.append(("source", source_digest(name)))
    return hashlib.sha256(repr(layout).encode()).hexdigest()[:12]


def probe_model(name: str) -> Classifier:
    """The network ``name`` on the meta device at a fixed probe shape: its layers, no memory, no data."""
    with torch.device("meta"):
        return create_model(name, 10, (3, 32, 32))


def check_model_name(name: str) -> None:
    """Fail before any training if ``name`` names no model."""
    if is_import_path(name):
        resolve_factory(name)
        probe_model(name)  # builds it (on the meta device): a factory returning no nn.Module stops here
    elif name.startswith(TIMM_PREFIX):
        from kdbench.models.timm_models import check_timm_name

        check_timm_name(name.removeprefix(TIMM_PREFIX))
    elif name not in MODELS:
        MODELS.get(name)  # raises with the list of known names
