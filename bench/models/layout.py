"""Pooling and flattening layers whose gradient keeps a channels-last input's memory layout.

PyTorch's ``AdaptiveAvgPool2d(1)`` and ``Flatten`` return a gradient in the standard (NCHW) layout
even when their input is channels-last (NHWC). The backward of the ReLU (or max-pool) that produced
that input then reads two tensors of different layouts, and on the CPU that elementwise pass is
about 40 times slower than on matching layouts (256 × 128 × 4 × 4, one thread: 2.8 ms against
0.07 ms). These layers compute the same values, and their gradients hold the same numbers, in the
input's layout. Side by side (``tests/benchmarks/test_layout_bench.py``, two runs, medians): the
digits teacher's forward and input-gradient backward take 14-23 % less time at batch 256 and 20-21 %
less at 128 (DeepInversion's and DAFL's batches), a cnn1 training step 14-17 % less at batch 256;
at batch 64 the difference is within noise. The digits matrix's cells took 196 s instead of 212 s,
every result bit for bit the same.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def is_channels_last(x: Tensor) -> bool:
    """A 4-D tensor laid out NHWC, and not also NCHW (one channel or a 1 × 1 image is both)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class _GlobalAvgPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.shape = x.shape
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        n, c, h, w = ctx.shape
        # PyTorch pools to 1 × 1 as a mean over H and W, whose gradient is grad ÷ HW everywhere: the
        # same numbers, as a broadcast view whose channel stride is 1, which an NHWC neighbour's
        # backward reads without a layout conversion
        return (grad / (h * w)).view(n, c, 1, 1).expand(n, c, h, w)


class GlobalAvgPool(nn.Module):
    """``AdaptiveAvgPool2d(1)`` then ``Flatten()``: N×C×H×W → N×C."""

    def forward(self, x: Tensor) -> Tensor:
        return _GlobalAvgPool.apply(x)


class _Flatten(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.shape, ctx.channels_last = x.shape, is_channels_last(x)
        return x.flatten(1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.reshape(ctx.shape)
        return grad.contiguous(memory_format=torch.channels_last) if ctx.channels_last else grad


class Flatten(nn.Module):
    """``Flatten()`` (N×C×H×W → N×CHW, in C, H, W order whatever the layout)."""

    def forward(self, x: Tensor) -> Tensor:
        return _Flatten.apply(x)


def with_pytorch_layers(model: nn.Module) -> nn.Module:
    """``model`` with PyTorch's own layers in place of these, in place (what they are measured and
    checked against)."""
    for name, child in model.named_children():
        if isinstance(child, GlobalAvgPool):
            setattr(model, name, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        elif isinstance(child, Flatten):
            setattr(model, name, nn.Flatten())
        else:
            with_pytorch_layers(child)
    return model
