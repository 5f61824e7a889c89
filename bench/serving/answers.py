"""Batches that carry the teacher's answers, for every attack that distils on the training inputs.

The teacher is asked about whole pools of inputs at once, never batch by batch:

- Without augmentation the inputs are the same every epoch, so the teacher is asked once per input
  and its answers are kept, as a real attacker with a query bill would do.
- With augmentation, each epoch is one augmented view of the whole training split, asked at once.
  With a ``seed`` (the trainer's), epoch e's view depends on that seed and e alone, not on who
  asks: every cell that distils from the same served teacher at the same seed asks the same
  questions, and an API with a memo (:class:`~kdbench.serving.teacher.TeacherAPI`) computes their
  answers once for all of them. A student still sees its own shuffled order of each view.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from kdbench.data.images import CROP_PADDING, ImageData, index_batches, random_crop_flip
from kdbench.serving.teacher import TeacherAPI, answer_in_chunks
from kdbench.training.losses import finite_logits
from kdbench.training.seeds import derive_seed

Ask = Callable[[Tensor], Tensor]  # inputs → the teacher's answers (an API, or a frozen network)

VIEW_CHUNK = 8192  # images augmented at once: bounds the index tensors of a 50,000-image view


class Answered(NamedTuple):
    """What a distillation batch carries besides its inputs."""

    labels: Tensor
    teacher: Tensor  # the teacher's answer to each input


def ask_in_chunks(ask: Ask, inputs: Tensor, *, prepare: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """The teacher's answers to every row of ``inputs``, asked in fixed chunks
    (``prepare``, e.g. normalisation, applied to each chunk first); usable outside inference mode."""
    if isinstance(ask, TeacherAPI):
        return finite_logits(ask.ask_pool(inputs, prepare))
    return finite_logits(answer_in_chunks(ask, inputs, prepare))


def augmented_view(images: Tensor, generator: torch.Generator) -> Tensor:
    """The training augmentation (random crop and horizontal flip) of every image, drawn from ``generator``."""
    views = [random_crop_flip(chunk, padding=CROP_PADDING, generator=generator) for chunk in images.split(VIEW_CHUNK)]
    return torch.cat(views)


def answered_batches(
    data: ImageData, ask: Ask, batch_size: int, generator: torch.Generator, *, seed: int | None = None
) -> tuple[Callable[[int], Iterator[tuple[Tensor, Answered]]], int]:
    """``(batches(epoch), steps_per_epoch)`` over the shuffled training split, with the teacher's answers.

    ``generator`` shuffles; with augmentation, ``seed`` draws the views (the same for every caller
    with that seed), or without it ``generator`` draws them too.
    """
    train = data.train
    fixed = None if data.augment else ask_in_chunks(ask, train.x, prepare=data.normalize)
    views_seed = seed if seed is not None or not data.augment else int(torch.randint(2**62, (1,), generator=generator))

    def view(epoch: int) -> tuple[Tensor, Tensor]:
        if fixed is not None:
            return train.x, fixed
        drawn = augmented_view(train.x, torch.Generator().manual_seed(derive_seed(views_seed, f"views/{epoch}")))
        return drawn, ask_in_chunks(ask, drawn, prepare=data.normalize)

    def batches(epoch: int) -> Iterator[tuple[Tensor, Answered]]:
        images, answers = view(epoch)
        for idx in index_batches(len(train), batch_size, shuffle=True, generator=generator, device=train.x.device):
            yield data.normalize(images[idx]), Answered(train.y[idx], answers[idx])

    return batches, math.ceil(len(train) / batch_size)
