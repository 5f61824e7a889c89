"""Stage boundaries of any model, and the skeptical student's auxiliary heads on them.

The reference (ksouvik52/Skeptical2021) builds two self-distilling students. ``resnet_self.py``
puts a head after each of ResNet's first three stages (``layer1``-``layer3``, after their last
block's ReLU): an attention gate (a stride-2 separable convolution, BatchNorm, ReLU, ×2 upsampling
and a sigmoid, multiplied into the features), one stride-2 separable convolution per remaining
stage up to the last stage's width, pooling and a linear layer. ``mobilenetv2_self.py`` puts heads
after its stages 2, 4 and 6 (24×17×17, 64×5×5 and 160×5×5 at 32×32 inputs) whose gate and
separable convolutions keep the resolution (stride 1; the head after stage 2 starts with one
stride-2 convolution) and widen to 1280, the width the network's own head reads. Either network
returns ``[final, deepest head, ..., shallowest head]``.

The suite's own networks name these places themselves (:class:`PinnedHeads`: ResNet-18/34/50,
MobileNetV2, and ShuffleNetV2, which the reference has no student of and which takes
``resnet_self.py``'s rule), so the heads read exactly the reference's features and stack its layers.

Every other model (an owner's, timm's, the digits networks) takes a generic rule that finds stage
boundaries without per-model code. A forward pass with hooks on every module lists the modules in
the order they finish, with their output shapes. From the first module with parameters on, modules
with 4-D outputs are grouped by spatial resolution; a resolution is a **stage**, and its
**boundary** is the last module to finish at that resolution (the stage's outermost container, so
residual sums are included). 1×1 maps (global pooling) are not stages. Every stage but the last,
which feeds the model's own head, gets an auxiliary head with ``resnet_self.py``'s layers. The rule
is approximate where a block's first layers run at the previous resolution (a bottleneck's 1×1
reduction, an inverted residual's 1×1 expansion, before their strided convolution): the last
module at that resolution is then a layer of the next stage's first block, which is why the suite's
own networks pin their heads instead. On the digits networks (digits_cnn: 8×8 then 4×4; cnn1: 8×8,
then its pooled 4×4) it gives one head after the first stage. A model with fewer than two stages
(an MLP) gets one head on the features its own head reads, the only intermediate place it has: flat
features get a sigmoid gate (linear) and a linear layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.errors import ConfigError
from kdbench.models.base import Classifier


@dataclass(frozen=True)
class Layer:
    name: str
    module: nn.Module
    output_shape: tuple[int, ...]  # without the batch dimension


@dataclass(frozen=True)
class HeadPlan:
    """One auxiliary head as a network pins it: where it reads and which layers it stacks."""

    tap: str  # the module (a name in ``named_modules()``) whose output the head reads
    convs: tuple[tuple[int, int], ...]  # (output channels, stride) of each separable convolution, in order
    gate_stride: int = 2  # the attention gate's separable convolution; a stride-2 gate is upsampled back


@runtime_checkable
class PinnedHeads(Protocol):
    """A network that names where its auxiliary heads attach (the suite's, after the reference)."""

    def self_distillation_heads(self) -> list[HeadPlan]:
        """One plan per auxiliary head, shallowest first."""
        ...


def resnet_self_heads(taps: Sequence[str], widths: Sequence[int]) -> list[HeadPlan]:
    """``resnet_self.py``'s heads: after stage ``i`` (``taps[i]``; every stage but the last has one),
    one stride-2 separable convolution per later stage, each to that stage's width (``widths``: the
    second stage's on; the last is the width of the features the model's own head reads, as on both
    reference students), and a stride-2 gate."""
    assert len(taps) == len(widths), "a head after every stage but the last"
    return [HeadPlan(tap, tuple((width, 2) for width in widths[i:])) for i, tap in enumerate(taps)]


def model_head(model: nn.Module) -> nn.Module:
    """The model's ``head``; for a model without one (the owner's own class), its last leaf layer
    with parameters."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module):
        return head
    leaves = [m for m in model.modules() if not list(m.children()) and any(True for _ in m.parameters())]
    return leaves[-1] if leaves else model


def _finished_modules(model: Classifier, input_shape: tuple[int, int, int]) -> list[Layer]:
    """Every module but the model and its head, in the order their forward passes finish."""
    head_modules = {id(m) for m in model_head(model).modules()}
    names = {id(m): n for n, m in model.named_modules()}
    seen: list[Layer] = []

    def record(module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, Tensor) and id(module) not in head_modules and module is not model:
            seen.append(Layer(names[id(module)], module, tuple(output.shape[1:])))

    handles = [m.register_forward_hook(record) for m in model.modules()]
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
    return seen


def stage_boundaries(model: Classifier, input_shape: tuple[int, int, int]) -> list[tuple[Layer, int]]:
    """Per stage but the last, its boundary layer and the number of stages after it; shallowest first.

    Also returns, for each boundary, how many resolution halvings lead to the last stage (the
    number of stride-2 separable convolutions its head stacks).
    """
    seen = _finished_modules(model, input_shape)
    first = next((i for i, s in enumerate(seen) if any(True for _ in s.module.parameters(recurse=False))), None)
    if first is None:
        raise ConfigError(
            f"model {type(model).__name__!r} has no layer with parameters before its head, so an auxiliary "
            f"head has nowhere to attach; choose a student with at least one hidden layer"
        )
    last_at: dict[tuple[int, int], Layer] = {}
    for layer in seen[first:]:
        shape = layer.output_shape
        if len(shape) == 3 and shape[1] * shape[2] > 1:
            last_at.pop(shape[1:], None)  # re-inserted: dicts keep insertion order, last finisher last
            last_at[shape[1:]] = layer
    stages = sorted(last_at.values(), key=lambda layer: -layer.output_shape[1] * layer.output_shape[2])
    return [(layer, len(stages) - 1 - i) for i, layer in enumerate(stages[:-1])]


def pinned_heads(model: Classifier, input_shape: tuple[int, int, int]) -> list[tuple[Layer, HeadPlan]] | None:
    """The heads ``model`` pins (:class:`PinnedHeads`) with the layers they read, or None."""
    if not isinstance(model, PinnedHeads):
        return None
    plans = model.self_distillation_heads()
    seen = {layer.name: layer for layer in _finished_modules(model, input_shape)}
    missing = [plan.tap for plan in plans if plan.tap not in seen]
    if missing:  # a renamed module: fail here, not with a head that never receives features
        raise ConfigError(
            f"model {type(model).__name__!r} pins auxiliary heads on {missing}, which its forward never runs"
        )
    return [(seen[plan.tap], plan) for plan in plans]


class SepConv(nn.Module):
    """The reference's separable convolution: two depthwise + pointwise pairs, BatchNorm, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, bias=False),
            nn.BatchNorm2d(c_in),
            nn.ReLU(),
            nn.Conv2d(c_in, c_in, 3, 1, 1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class AuxiliaryHead(nn.Module):
    """Attention gate, one separable convolution per width (stride 2 unless ``strides`` says
    otherwise), global pooling, linear.

    Global average pooling stands for the reference's fixed ``AvgPool2d`` (4×4 on ResNet, 5×5 on
    MobileNetV2), which is global on the maps it was sized for; on MobileNetV2's head after stage 2
    (9×9 maps) it averages only the top-left 5×5 window, an artefact not reproduced here.

    For flat features (no stage boundary): a sigmoid gate of a linear layer, then linear.
    """

    def __init__(
        self,
        feature_shape: tuple[int, ...],
        widths: Sequence[int],
        num_classes: int,
        strides: Sequence[int] | None = None,
        gate_stride: int = 2,
    ) -> None:
        super().__init__()
        self.spatial = len(feature_shape) == 3
        channels = feature_shape[0]
        if self.spatial:
            self.attention = nn.Sequential(
                SepConv(channels, channels, gate_stride), nn.BatchNorm2d(channels), nn.ReLU()
            )
            convs, c = [], channels
            for width, stride in zip(widths, [2] * len(widths) if strides is None else strides, strict=True):
                convs.append(SepConv(c, width, stride))
                c = width
            self.body = nn.Sequential(*convs, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        else:
            c = int(torch.tensor(feature_shape).prod())
            self.attention = nn.Linear(c, c)
            self.body = nn.Flatten()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        if self.spatial:
            gate = self.attention(features)
            if gate.shape[2:] != features.shape[2:]:
                # resnet_self.py upsamples its stride-2 gate ×2 back; interpolating to the size takes odd sizes too
                gate = F.interpolate(gate, size=features.shape[2:], mode="bilinear")
            gate = torch.sigmoid(gate)
        else:
            features = features.flatten(1)
            gate = torch.sigmoid(self.attention(features))
        return self.fc(self.body(gate * features))


class SelfDistillingModel(nn.Module):
    """``model`` plus auxiliary heads: forward returns [final, deepest auxiliary, ..., shallowest]."""

    def __init__(self, model: Classifier, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        self.model = model
        device = next(model.parameters()).device
        head = model_head(model)
        pinned = pinned_heads(model, input_shape)
        if pinned is not None:  # the reference's places and layers (the suite's own networks)
            taps = [layer for layer, _ in pinned]
            heads = [
                AuxiliaryHead(
                    layer.output_shape,
                    [width for width, _ in plan.convs],
                    num_classes,
                    strides=[stride for _, stride in plan.convs],
                    gate_stride=plan.gate_stride,
                )
                for layer, plan in pinned
            ]
        else:
            taps, heads = self._generic_heads(model, input_shape, num_classes, head)
        self.aux_heads = nn.ModuleList(heads).to(device)
        # the modules the heads read, shallowest first (the model's head where it reads its input)
        names = {id(m): n for n, m in model.named_modules()}
        self.tap_names: list[str] = [layer.name for layer in taps] or [names[id(head)]]
        self._tapped: list[Tensor | None] = [None] * len(heads)
        if taps:
            self._handles = [layer.module.register_forward_hook(self._keeper(i)) for i, layer in enumerate(taps)]
        else:  # the features the model's own head reads
            self._handles = [head.register_forward_pre_hook(lambda _m, inputs: self._keep(0, inputs[0]))]

    @staticmethod
    def _generic_heads(
        model: Classifier, input_shape: tuple[int, int, int], num_classes: int, head: nn.Module
    ) -> tuple[list[Layer], list[AuxiliaryHead]]:
        """The generic rule's taps and heads (see the module), for models that pin none."""
        boundaries = stage_boundaries(model, input_shape)
        if boundaries:
            channels = [layer.output_shape[0] for layer, _ in boundaries]
            last = _last_stage_channels(model, input_shape, boundaries)
            widths = [[*channels[i + 1 :], last][:after] for i, (_, after) in enumerate(boundaries)]
            taps = [layer for layer, _ in boundaries]
        else:
            widths, taps = [[]], []
        if not taps and not isinstance(head, nn.Linear):
            raise ConfigError(
                f"model {type(model).__name__!r} has no stages and its last layer is not nn.Linear: the skeptical "
                f"student's auxiliary head has nowhere to attach"
            )
        shapes = [layer.output_shape for layer in taps] or [(head.in_features,)]
        return taps, [AuxiliaryHead(shape, w, num_classes) for shape, w in zip(shapes, widths, strict=True)]

    def _keeper(self, i: int):
        return lambda _module, _inputs, output: self._keep(i, output)

    def _keep(self, i: int, output: Tensor) -> None:
        self._tapped[i] = output

    @property
    def num_aux(self) -> int:
        return len(self.aux_heads)

    def forward(self, x: Tensor) -> list[Tensor]:
        final = self.model(x)
        aux = [head(features) for head, features in zip(self.aux_heads, self._tapped, strict=True)]
        self._tapped = [None] * len(aux)
        return [final, *reversed(aux)]

    def detach_heads(self) -> Classifier:
        """Remove the hooks and return the plain model (what the attacker deploys and is evaluated)."""
        for handle in self._handles:
            handle.remove()
        return self.model


def _last_stage_channels(model: Classifier, input_shape: tuple[int, int, int], boundaries: list) -> int:
    """Channels of the last stage (the widest-strided 4-D output before the head)."""
    seen = [s for s in _finished_modules(model, input_shape) if len(s.output_shape) == 3]
    smallest = min(s.output_shape[1] * s.output_shape[2] for s in seen if s.output_shape[1] * s.output_shape[2] > 1)
    return [s for s in seen if s.output_shape[1] * s.output_shape[2] == smallest][-1].output_shape[0]
