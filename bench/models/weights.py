"""The owner's weight file: read safely, matched to an architecture, identified by the sha256 of its
tensors (names, dtypes, shapes, values): the same weights have the same identity whichever way they
were saved (``torch.save`` of a state_dict from a script or from :func:`kdbench.evaluate`, safetensors).

Formats: a state_dict saved with ``torch.save`` (``.pt``, ``.pth``; read with
``torch.load(weights_only=True)``, so a pickle that would run code is refused), a ``.safetensors``
file, and checkpoints of the Nasty-Teacher paper's official code (``best_model.tar`` holding
``state_dict``, with or without DataParallel's ``module.`` prefix), whose parameter names are
mapped onto kdbench's ``resnet18``, ``resnetc20``/``resnetc32`` and ``cnn``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdbench.errors import ConfigError
from kdbench.store.cache import tensors_digest, why_refused

TEST_SPLIT_NOTE = (
    "loaded from a file: the suite cannot know whether that file saw the test split; "
    "its accuracy counts only if the test split was held out from its training"
)


@dataclass(frozen=True)
class TeacherFile:
    """A network the owner trained elsewhere: where its weights are, their sha256 (of the tensors,
    :func:`weights_sha256`), the row's name."""

    path: Path
    sha256: str
    name: str

    def label(self, arch: str) -> str:
        """The leaderboard's name of its rows."""
        return f"{self.name} ({arch}, weights sha256 {self.sha256[:12]})"

    def describe(self) -> dict[str, Any]:
        """What every record built from it keeps."""
        return {"path": str(self.path), "sha256": self.sha256, "name": self.name, "test_split": TEST_SPLIT_NOTE}


def weights_sha256(state: dict[str, Tensor]) -> str:
    """The identity of a state dict: the sha256 (16 hex digits) of its names, dtypes, shapes and values."""
    return tensors_digest(state)


def check_weight_file(path: Path, where: str) -> str:
    """The sha256 of the weights in file ``path`` (``where`` names the option), or one clear ConfigError."""
    if not path.is_file():
        raise ConfigError(f"{where}={path}: no such file")
    try:
        open(path, "rb").close()  # only whether it can be read: the next line reads it
    except OSError as err:  # unreadable: permission denied, say
        raise ConfigError(f"{where}={path} cannot be read ({err.strerror})") from None
    return weights_sha256(read_state_dict(path, where))


def read_state_dict(path: Path, where: str) -> dict[str, Tensor]:
    """The tensors of ``path``, never running code from it."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:
            raise ConfigError(f"{where}={path} is not a readable safetensors file ({err})") from None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle asking for code, or corrupt bytes: never executed
        raise ConfigError(
            f"{where}={path} is not plain tensors: {why_refused(path, err)}; "
            f"save model.state_dict(), not the model or a pickle"
        ) from None
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]  # the official best_model.tar, and kdbench's own checkpoints
    if not isinstance(payload, dict) or not all(isinstance(v, Tensor) for v in payload.values()):
        raise ConfigError(f"{where}={path} holds no state_dict (a mapping of parameter names to tensors)")
    state = dict(payload)
    if state and all(k.startswith("module.") for k in state):  # saved from nn.DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


# -- the official Nasty-Teacher code's parameter names (VITA-Group/Nasty-Teacher, model/) ----------


def _official_resnet(blocks_per_stage: list[int]) -> Callable[[str], str | None]:
    """model/resnet.py: conv1, bn1, layer{i}.{j}.…, linear → stem.0, stem.1, stages.{k}.…, head."""
    offsets = [sum(blocks_per_stage[:i]) for i in range(len(blocks_per_stage))]

    def rename(key: str) -> str | None:
        if m := re.match(r"^conv1\.(.+)$", key):
            return f"stem.0.{m[1]}"
        if m := re.match(r"^bn1\.(.+)$", key):
            return f"stem.1.{m[1]}"
        if m := re.match(r"^layer(\d)\.(\d+)\.(.+)$", key):
            return f"stages.{offsets[int(m[1]) - 1] + int(m[2])}.{m[3]}"
        if m := re.match(r"^linear\.(.+)$", key):
            return f"head.{m[1]}"
        return None

    return rename


def _official_preresnet(depth: int) -> Callable[[str], str | None]:
    """model/preresnet.py: conv1, layer{i}.{j}.{bn1,conv1,bn2,conv2,downsample.0}, bn, fc."""
    n = (depth - 2) // 6

    def rename(key: str) -> str | None:
        if m := re.match(r"^conv1\.(.+)$", key):
            return f"stem.{m[1]}"
        if m := re.match(r"^layer(\d)\.(\d+)\.downsample\.0\.(.+)$", key):
            return f"blocks.{(int(m[1]) - 1) * n + int(m[2])}.shortcut.{m[3]}"
        if m := re.match(r"^layer(\d)\.(\d+)\.(.+)$", key):
            return f"blocks.{(int(m[1]) - 1) * n + int(m[2])}.{m[3]}"
        if m := re.match(r"^bn\.(.+)$", key):
            return f"final.0.{m[1]}"
        if m := re.match(r"^fc\.(.+)$", key):
            return f"head.{m[1]}"
        return None

    return rename


# model/net.py (the CS230 CNN): each layer's place in kdbench's PlainCNN.body, fc2 the head
_OFFICIAL_CNN = {
    "conv1": "body.0",
    "bn1": "body.1",
    "conv2": "body.4",
    "bn2": "body.5",
    "conv3": "body.8",
    "bn3": "body.9",
    "fc1": "body.13",
    "fcbn1": "body.14",
    "fc2": "head",
}


def _official_cnn(key: str) -> str | None:
    layer, _, rest = key.partition(".")
    return f"{_OFFICIAL_CNN[layer]}.{rest}" if layer in _OFFICIAL_CNN and rest else None


OFFICIAL_NAMES: dict[str, Callable[[str], str | None]] = {
    "resnet18": _official_resnet([2, 2, 2, 2]),
    "resnet34": _official_resnet([3, 4, 6, 3]),
    "resnet50": _official_resnet([3, 4, 6, 3]),
    "resnetc20": _official_preresnet(20),
    "resnetc32": _official_preresnet(32),
    "cnn": _official_cnn,
}


def _from_official(arch: str, state: dict[str, Tensor], expected: set[str]) -> dict[str, Tensor] | None:
    """``state`` renamed from the official code's names, if that is what it holds."""
    rename = OFFICIAL_NAMES.get(arch)
    if rename is None or set(state) == expected:
        return None
    renamed = {rename(k): v for k, v in state.items()}
    if None in renamed or set(renamed) != expected:
        return None
    return renamed  # type: ignore[return-value]


def fit_state_dict(model: nn.Module, state: dict[str, Tensor], arch: str, where: str) -> dict[str, Tensor]:
    """``state`` as ``model`` names it, or a ConfigError naming the first parameter that does not fit."""
    own = model.state_dict()
    state = _from_official(arch, state, set(own)) or state
    for name, value in own.items():
        if name not in state:
            raise ConfigError(
                f"{where} does not fit architecture {arch!r}: parameter {name!r} {list(value.shape)} is not in "
                f"the file (its first names: {', '.join(list(state)[:3]) or 'none'})"
            )
        if tuple(state[name].shape) != tuple(value.shape):
            raise ConfigError(
                f"{where} does not fit architecture {arch!r}: parameter {name!r} is {list(state[name].shape)} "
                f"in the file, {list(value.shape)} in {arch} (another architecture, number of classes or input shape?)"
            )
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise ConfigError(f"{where} does not fit architecture {arch!r}: the file has parameter {unexpected[0]!r}")
    return state


def load_weights(
    model: nn.Module, path: Path, arch: str, where: str = "teacher_weights", expected: str | None = None
) -> str:
    """Give ``model`` (of architecture ``arch``) the weights of the file at ``path``; their sha256.
    ``expected``: the sha256 the run was planned with; other weights in the file now are refused."""
    state = read_state_dict(path, where)
    sha256 = weights_sha256(state)
    if expected is not None and sha256 != expected:
        raise ConfigError(
            f"{where}={path} holds other weights (sha256 {sha256}) than when the run started ({expected}): "
            "it was replaced during the run; rerun to use the new weights"
        )
    model.load_state_dict(fit_state_dict(model, state, arch, f"{where}={path}"))
    return sha256
