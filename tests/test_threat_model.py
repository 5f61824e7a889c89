"""The runner hands every attack exactly what its threat model allows: the Teacher only to white-box
attacks, labelled data only to TRAIN, unlabelled inputs only to TRAIN_INPUTS / HELDOUT_INPUTS, and
nothing of the owner's data to a data-free attack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from kdbench.api import ATTACKS, Attack, DataAccess
from kdbench.cli import main
from kdbench.serving.teacher import Access, Teacher, TeacherAPI


@dataclass
class SpyConfig:
    access: str = "logits"
    data_access: str = "none"


class SpyAttack(Attack):
    seen: ClassVar[list] = []

    def __init__(self, cfg: SpyConfig) -> None:
        self.access = Access(cfg.access)
        self.data_access = DataAccess(cfg.data_access)

    def run(self, teacher, student, ctx):
        SpyAttack.seen.append((teacher, ctx))
        return student


@pytest.fixture
def spy():
    ATTACKS.add("spy", SpyAttack, config=SpyConfig, source=__name__)
    SpyAttack.seen = []
    yield SpyAttack.seen
    ATTACKS.unregister("spy")


def run_spy(tmp_path, *overrides: str) -> tuple[object, object]:
    args = ["run", "preset=tiny", "quiet=true", f"results_dir={tmp_path}", "defense=normal", "attack=spy"]
    assert main([*args, *overrides]) == 0
    return SpyAttack.seen[-1]


def test_a_data_free_attack_holds_nothing_of_the_owners_data(tmp_path, spy):
    _, ctx = run_spy(tmp_path, "attack.spy.data_access=none")
    assert ctx.data is None and ctx.inputs is None
    assert ctx.input_format is not None and ctx.input_format.shape == (1, 8, 8)


def test_train_access_gets_the_labelled_data_and_no_separate_inputs(tmp_path, spy):
    _, ctx = run_spy(tmp_path, "attack.spy.data_access=train")
    assert ctx.data is not None and len(ctx.data.train) == 128 and ctx.inputs is None


def test_unlabelled_access_gets_inputs_only(tmp_path, spy):
    _, ctx = run_spy(tmp_path, "attack.spy.data_access=train_inputs")
    assert ctx.data is None and ctx.inputs.shape == (128, 1, 8, 8)
    _, ctx = run_spy(tmp_path / "h", "attack.spy.data_access=heldout_inputs", "dataset.heldout_fraction=0.25")
    assert ctx.data is None and ctx.inputs.shape == (32, 1, 8, 8)


def test_only_a_white_box_attack_gets_the_teacher(tmp_path, spy):
    view, _ = run_spy(tmp_path, "attack.spy.access=white_box")
    assert isinstance(view, Teacher)
    view, _ = run_spy(tmp_path / "b", "attack.spy.access=top1_label")
    assert isinstance(view, TeacherAPI) and view.budget is None
    assert view(torch.zeros(3, 1, 8, 8)).dtype == torch.int64
