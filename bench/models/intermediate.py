"""Reading an intermediate layer of any model, for attacks that attach an auxiliary head there.

Works on every architecture the suite builds (its own and timm's) without per-model code: a
forward pass with hooks on the leaf modules lists the layers in execution order; the usable ones
are those after the first layer with parameters and before the classifier head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from kdbench.errors import ConfigError
from kdbench.models.base import Classifier
from torch import Tensor, nn


@dataclass(frozen=True)
class Layer:
    name: str
    module: nn.Module
    output_shape: tuple[int, ...]  # without the batch dimension


def usable_layers(model: Classifier, input_shape: tuple[int, int, int]) -> list[Layer]:
    """Leaf layers between the first parametrised layer and the head, in execution order. A model
    without a ``head`` (the owner's own class) counts its last leaf layer with parameters as the head."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        head = next(
            (
                m
                for m in reversed(list(model.modules()))
                if not list(m.children()) and any(True for _ in m.parameters())
            ),
            model,
        )
    head_modules = {id(m) for m in head.modules()}
    seen: list[Layer] = []
    names = {id(m): n for n, m in model.named_modules()}

    def record(module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, Tensor) and id(module) not in head_modules:
            seen.append(Layer(names[id(module)], module, tuple(output.shape[1:])))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros(2, *input_shape, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    first_learned = next(
        (i for i, layer in enumerate(seen) if any(True for _ in layer.module.parameters(recurse=False))), None
    )
    if first_learned is None:
        return []
    return seen[first_learned:]


def intermediate_layer(model: Classifier, input_shape: tuple[int, int, int], depth: float, arch: str) -> Layer:
    """The usable layer at relative ``depth`` (0: the first, 1: the last before the head)."""
    layers = usable_layers(model, input_shape)
    if not layers:
        raise ConfigError(
            f"model {arch!r} has no intermediate layer with parameters before its head, so an auxiliary "
            f"head has nowhere to attach; choose a student with at least one hidden layer"
        )
    return layers[round(depth * (len(layers) - 1))]


class AuxiliaryHead(nn.Module):
    """A classifier on an intermediate activation: global-average-pooled maps or flat features."""

    def __init__(self, feature_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels = feature_shape[0]
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()) if len(feature_shape) == 3 else nn.Flatten()
        self.fc = nn.Linear(
            channels if len(feature_shape) == 3 else int(torch.tensor(feature_shape).prod()), num_classes
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(self.pool(features))


class TappedModel(nn.Module):
    """``model`` plus an auxiliary head on ``layer``: forward returns (final logits, auxiliary logits)."""

    def __init__(self, model: Classifier, layer: Layer, num_classes: int) -> None:
        super().__init__()
        self.model = model
        self.aux_head = AuxiliaryHead(layer.output_shape, num_classes).to(next(model.parameters()).device)
        self._tapped: Tensor | None = None
        self._handle = layer.module.register_forward_hook(self._keep)

    def _keep(self, _module: nn.Module, _inputs: object, output: Tensor) -> None:
        self._tapped = output

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        final = self.model(x)
        assert self._tapped is not None
        aux, self._tapped = self.aux_head(self._tapped), None
        return final, aux

    def detach_head(self) -> Classifier:
        """Remove the hook and return the plain model (what the attacker deploys)."""
        self._handle.remove()
        return self.model
