"""The threat model in one place: what an attacker may see of the teacher and of the owner's data.

An attack declares an :class:`Access` level and a :class:`DataAccess`; the runner hands it only
that: the teacher itself (white box) or a query API at that level, and the data that access names.
"""

from __future__ import annotations

import enum

from torch import Tensor

from kdbench.data.images import ImageData
from kdbench.errors import ConfigError


class Access(enum.Enum):
    """What an attacker sees of the teacher."""

    WHITE_BOX = "white_box"  # weights, BatchNorm statistics, gradients through the served function
    LOGITS = "logits"  # the served logits, detached
    PROBABILITIES = "probabilities"  # softmax of the served logits, detached
    TOP_K = "top_k"  # the k most probable classes' probabilities, renormalised; the rest 0
    TOP1_LABEL = "top1_label"  # the served argmax only


class DataAccess(enum.Enum):
    """What an attacker holds of the owner's data."""

    TRAIN = "train"  # the teacher's training inputs and labels (vanilla KD's threat model)
    TRAIN_INPUTS = "train_inputs"  # the training inputs without their labels
    HELDOUT_INPUTS = "heldout_inputs"  # unlabelled inputs of the same distribution nobody trained on
    NONE = "none"  # nothing: data-free attacks, and attacks that bring their own inputs


def attacker_inputs(access: DataAccess, data: ImageData) -> Tensor | None:
    """The unlabelled uint8 images an attack with ``access`` may hold (None: none)."""
    if access is DataAccess.TRAIN_INPUTS:
        return data.train.x
    if access is DataAccess.HELDOUT_INPUTS:
        if data.heldout is None:
            raise ConfigError(f"dataset {data.name!r} has no held-out split: set dataset.heldout_fraction (e.g. 0.2)")
        return data.heldout.x
    return None
