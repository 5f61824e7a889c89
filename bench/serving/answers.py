"""Batches that carry the teacher's answers, for every attack that distils on the training inputs.

When the inputs are the same every epoch (no augmentation), the teacher is asked once per input and
its answers are stored, as a real attacker with a query bill would do: one query per input instead
of one per input per epoch, and no teacher forward in the training step. With augmentation every
epoch shows new inputs, so the teacher is asked batch by batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from kdbench.data.images import ImageData, index_batches
from kdbench.training.losses import finite_logits

Ask = Callable[[Tensor], Tensor]  # inputs → the teacher's answers (an API, or a frozen network)


class Answered(NamedTuple):
    """What a distillation batch carries besides its inputs."""

    labels: Tensor
    teacher: Tensor  # the teacher's answer to each input


ASK_CHUNK = 1024  # inputs per teacher call when a whole pool is asked at once


def ask_in_chunks(ask: Ask, inputs: Tensor, *, prepare: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """The teacher's answers to every row of ``inputs``, asked :data:`ASK_CHUNK` rows at a time
    (``prepare``, e.g. normalisation, applied to each chunk first); usable outside inference mode."""
    with torch.inference_mode():
        answers = torch.cat([ask(prepare(x) if prepare else x) for x in inputs.split(ASK_CHUNK)])
    return finite_logits(answers.clone())


def answered_batches(
    data: ImageData, ask: Ask, batch_size: int, generator: torch.Generator
) -> tuple[Callable[[int], Iterator[tuple[Tensor, Answered]]], int]:
    """``(batches(epoch), steps_per_epoch)`` over the shuffled training split, with the teacher's answers."""
    train = data.train
    stored = None if data.augment else ask_in_chunks(ask, train.x, prepare=data.normalize)

    def batches(epoch: int) -> Iterator[tuple[Tensor, Answered]]:
        for idx in index_batches(len(train), batch_size, shuffle=True, generator=generator, device=train.x.device):
            x = data.inputs(train, idx, augment=data.augment, generator=generator)
            if stored is not None:
                yield x, Answered(train.y[idx], stored[idx])
                continue
            with torch.inference_mode():
                answers = ask(x)
            yield x, Answered(train.y[idx], finite_logits(answers.clone()))

    return batches, math.ceil(len(train) / batch_size)
