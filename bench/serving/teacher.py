"""What a defense hands out (a :class:`Teacher`) and what an attacker may see of it.

An attack declares an :class:`~kdbench.serving.threat_model.Access` level and receives either the teacher
itself (white box) or a :class:`TeacherAPI` that returns detached outputs at that level and counts
every queried input against a budget.

A defense that perturbs what the owner serves (``Teacher.serve``) acts on every access level at
once: the API derives probabilities, top-k and labels from the served logits, and a white-box
attack differentiates through the same served function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.errors import BenchError, ConfigError
from kdbench.serving.threat_model import Access

ServeFn = Callable[[Tensor], Tensor]
Perturbation = Callable[[Tensor, Tensor], Tensor]  # (clean logits, inputs) → served logits
Prepare = Callable[[Tensor], Tensor]  # stored inputs → what the network takes (normalisation)
# (a pool of inputs, its preparation, a function computing the answers to it) → the answers, possibly
# kept from an earlier computation of the same prepared pool by the same server (kdbench.store.answer_memo)
AnswerMemo = Callable[[Tensor, Prepare | None, Callable[[], Tensor]], Tensor]

ASK_CHUNK = 1024  # inputs per teacher call when a whole pool is asked at once


def answer_in_chunks(ask: ServeFn, inputs: Tensor, prepare: Prepare | None = None) -> Tensor:
    """``ask``'s answers to every row of ``inputs``, :data:`ASK_CHUNK` rows at a time (``prepare``
    applied to each chunk first). Always the same chunks, so a pool's answers are the same bits
    whoever asks it."""
    with torch.inference_mode():
        answers = torch.cat([ask(prepare(x) if prepare else x) for x in inputs.split(ASK_CHUNK)])
    return answers.clone()  # a normal tensor, usable in autograd outside inference mode


class Teacher:
    """A trained network plus the function its owner serves (logits after any perturbation).

    ``model`` is the clean network; ``serve(x)`` is what the API computes, differentiable, so a
    white-box attack differentiates through a defense's perturbation as the threat model says. A
    defense gives either an opaque ``serve`` function or a ``perturb`` of the clean logits; with the
    latter an attack that also reads the network's features runs the network once
    (:meth:`serve_from_logits`).
    """

    def __init__(
        self,
        model: nn.Module,
        serve: ServeFn | None = None,
        *,
        perturbed: bool = False,
        perturb: Perturbation | None = None,
    ) -> None:
        if serve is not None and perturb is not None:
            raise ValueError("a teacher serves through either a serve function or a perturbation, not both")
        self.model = model.eval().requires_grad_(False)
        self._serve = serve
        self._perturb = perturb
        self.perturbed = perturbed or perturb is not None  # the served logits differ from the model's

    def serve(self, x: Tensor) -> Tensor:
        if self._serve is not None:
            return self._serve(x)
        return self.serve_from_logits(self.model(x), x)

    def serve_from_logits(self, clean_logits: Tensor, x: Tensor) -> Tensor:
        """The served logits for inputs ``x``, given the clean network's logits on them."""
        if self._perturb is not None:
            return self._perturb(clean_logits, x)
        return self._serve(x) if self._serve is not None else clean_logits

    def __call__(self, x: Tensor) -> Tensor:
        return self.serve(x)

    def api(
        self, access: Access, budget: int | None = None, *, top_k: int | None = None, memo: AnswerMemo | None = None
    ) -> TeacherAPI:
        if access is Access.WHITE_BOX:
            raise ValueError("a white-box attack gets the Teacher itself, not an API")
        return TeacherAPI(self.serve, access, budget, top_k=top_k, memo=memo)


class QueryBudgetExceeded(BenchError):
    pass


class TeacherAPI:
    """A deployed model: returns detached outputs at one access level, within a query budget.

    It holds only the serving function, never the module, so an attacker holding it cannot reach
    the parameters through it. With a ``memo`` (set by the runner), a whole pool asked at once
    (:meth:`ask_pool`) is answered from an earlier run of the same server on the same pool, if
    any: the answers are the same bits either way, and the queries are counted either way.
    """

    def __init__(
        self,
        serve: ServeFn,
        access: Access,
        budget: int | None,
        *,
        top_k: int | None = None,
        memo: AnswerMemo | None = None,
    ) -> None:
        if budget is not None and budget <= 0:
            raise ConfigError(f"a query budget must be a positive number of inputs, got {budget}")
        if (access is Access.TOP_K) != (top_k is not None):
            raise ValueError(f"top_k goes with top-k access and only with it (access {access.value}, top_k {top_k})")
        if top_k is not None and top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        self.__serve = serve
        self.access = access
        self.budget = budget
        self.top_k = top_k
        self.queries = 0
        self._memo = memo

    def __call__(self, x: Tensor) -> Tensor:
        self._spend(x.shape[0])
        return self._answer(x)

    def ask_pool(self, inputs: Tensor, prepare: Prepare | None = None) -> Tensor:
        """The answers to every row of ``inputs`` (``prepare``, e.g. normalisation, applied first),
        asked in fixed chunks: one query per row."""
        self._spend(inputs.shape[0])
        if self._memo is None:
            return answer_in_chunks(self._answer, inputs, prepare)
        return self._memo(inputs, prepare, lambda: answer_in_chunks(self._answer, inputs, prepare))

    def _spend(self, n: int) -> None:
        if self.budget is not None and self.queries + n > self.budget:
            raise QueryBudgetExceeded(
                f"query budget of {self.budget} inputs spent ({self.queries} used, {n} more asked)"
            )
        self.queries += n

    def _answer(self, x: Tensor) -> Tensor:
        with torch.inference_mode():
            logits = self.__serve(x)
            if self.access is Access.PROBABILITIES:
                out = F.softmax(logits.float(), dim=1)
            elif self.access is Access.TOP_K:
                out = F.softmax(keep_top_k(logits.float(), self.top_k), dim=1)
            elif self.access is Access.TOP1_LABEL:
                out = logits.argmax(dim=1)
            else:
                out = logits.float()
        return out.clone()  # a normal tensor, usable as a target in autograd outside inference mode


def keep_top_k(logits: Tensor, k: int) -> Tensor:
    """``logits`` with all but each row's k largest set to −inf (differentiable through the kept ones).

    Ties are broken towards the lower class index, as ``argmax`` does, so the top-1 class is always
    kept and stays the argmax. With k at least the number of classes nothing changes.
    """
    if k >= logits.shape[1]:
        return logits
    kept = torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :k]
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, kept, True)
    return logits.masked_fill(~mask, float("-inf"))
