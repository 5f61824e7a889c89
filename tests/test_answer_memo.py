"""Answers kept between cells (kdbench.store.answer_memo): the same bits as asking, queries counted
either way, and nothing kept is trusted that does not fit."""

import torch

from kdbench.serving.answers import answered_batches, ask_in_chunks
from kdbench.serving.teacher import Access, Teacher
from kdbench.store.answer_memo import SUFFIX, CachedAnswers
from kdbench.store.cache import ArtifactCache


class CountingNetwork(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
        self.asked = 0

    def forward(self, x):
        self.asked += x.shape[0]
        return self.body(x)


def pool(n: int = 3000) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def normalize(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255 - 0.5


def test_a_second_api_with_the_same_memo_reads_the_answers_the_first_computed(tmp_path):
    network = CountingNetwork()
    memo = CachedAnswers(ArtifactCache(tmp_path), "server")
    first, second = (Teacher(network).api(Access.PROBABILITIES, memo=memo) for _ in range(2))
    asked_plainly = ask_in_chunks(Teacher(network).api(Access.PROBABILITIES), pool(), prepare=normalize)
    network.asked = 0
    a = ask_in_chunks(first, pool(), prepare=normalize)
    assert network.asked == 3000 and len(list(tmp_path.glob(f"*{SUFFIX}"))) == 1
    b = ask_in_chunks(second, pool(), prepare=normalize)
    assert network.asked == 3000  # not asked again
    assert torch.equal(a, asked_plainly) and torch.equal(b, asked_plainly)  # the same bits as asking
    assert first.queries == second.queries == 3000  # the attacker's bill does not depend on the memo


def test_another_pool_or_another_server_is_computed_anew(tmp_path):
    network = CountingNetwork()
    cache = ArtifactCache(tmp_path)
    ask_in_chunks(Teacher(network).api(Access.LOGITS, memo=CachedAnswers(cache, "a")), pool(), prepare=normalize)
    ask_in_chunks(Teacher(network).api(Access.LOGITS, memo=CachedAnswers(cache, "b")), pool(), prepare=normalize)
    ask_in_chunks(Teacher(network).api(Access.LOGITS, memo=CachedAnswers(cache, "a")), pool(2999), prepare=normalize)
    assert network.asked == 3 * 3000 - 1
    assert len(list(tmp_path.glob(f"*{SUFFIX}"))) == 3


def test_a_kept_file_that_is_damaged_or_does_not_fit_is_computed_again(tmp_path):
    network = CountingNetwork()
    memo = CachedAnswers(ArtifactCache(tmp_path), "server")
    expected = ask_in_chunks(Teacher(network).api(Access.LOGITS, memo=memo), pool(), prepare=normalize)
    (kept,) = tmp_path.glob(f"*{SUFFIX}")
    for damage in (b"", b"not a checkpoint", None):
        if damage is None:
            torch.save({"answers": torch.zeros(5, 10)}, kept)  # another pool's shape
        else:
            kept.write_bytes(damage)
        network.asked = 0
        again = ask_in_chunks(Teacher(network).api(Access.LOGITS, memo=memo), pool(), prepare=normalize)
        assert network.asked == 3000 and torch.equal(again, expected)


def test_with_rerun_a_file_from_before_the_run_counts_as_absent(tmp_path):
    network = CountingNetwork()
    cache = ArtifactCache(tmp_path)
    ask_in_chunks(Teacher(network).api(Access.LOGITS, memo=CachedAnswers(cache, "s")), pool(), prepare=normalize)
    (kept,) = tmp_path.glob(f"*{SUFFIX}")
    started = kept.stat().st_mtime + 1
    memo = CachedAnswers(cache, "s", fresh_after=started)
    ask_in_chunks(Teacher(network).api(Access.LOGITS, memo=memo), pool(), prepare=normalize)
    assert network.asked == 2 * 3000


def test_distillation_batches_are_the_same_with_and_without_kept_answers(tmp_path):
    from kdbench.data.catalogue import load_dataset
    from kdbench.data.images import DatasetConfig

    data = load_dataset(DatasetConfig(name="synthetic", shape=[3, 8, 8], train_size=300, augment=True))
    network = CountingNetwork()

    def epochs(api):
        batches, _ = answered_batches(data, api, 64, torch.Generator().manual_seed(3), seed=5)
        return [(x, batch.teacher) for epoch in range(2) for x, batch in batches(epoch)]

    plain = epochs(Teacher(network).api(Access.LOGITS))
    memo = CachedAnswers(ArtifactCache(tmp_path), "server")
    computed = epochs(Teacher(network).api(Access.LOGITS, memo=memo))
    network.asked = 0
    read = epochs(Teacher(network).api(Access.LOGITS, memo=memo))
    assert network.asked == 0
    for (x0, t0), (x1, t1), (x2, t2) in zip(plain, computed, read, strict=True):
        assert torch.equal(x0, x1) and torch.equal(x1, x2)
        assert torch.equal(t0, t1) and torch.equal(t1, t2)


def test_the_cells_of_a_run_that_distil_from_one_teacher_share_its_answers(tmp_path):
    """kd, its τ = 20 variant and htc from one served teacher at one seed ask about the same views:
    the answers are computed once per defense and epoch, and each record is the one its cell gives
    when it runs alone and computes its own answers."""
    from kdbench.config.compose import compose_config
    from kdbench.config.plan import plan_from_config
    from kdbench.matrix.run import run_matrix
    from kdbench.progress import Progress

    def run(results, attacks, defenses, *extra):
        overrides = ["preset=tiny", "+dataset.augment=true", f"attack=[{attacks}]", f"defense=[{defenses}]", *extra]
        plan = plan_from_config(compose_config([*overrides, f"results_dir={results}", "quiet=true"]))
        return plan, {(r.attack, r.defense): r.student_acc for r in run_matrix(plan, Progress(quiet=True))}

    variant = "+attack_variants.kd_t20={base: kd, tau: 20}"
    plan, shared = run(tmp_path / "shared", "kd,htc", "normal,logit_noise", variant)
    assert len(shared) == 6
    assert len(list(plan.cache_dir.glob(f"*{SUFFIX}"))) == 2 * plan.recipe_for("mlp").epochs  # defenses × views
    for attack in ("kd", "htc"):
        for defense in ("normal", "logit_noise"):
            _, alone = run(tmp_path / f"{attack}-{defense}", attack, defense)
            assert alone == {(attack, defense): shared[attack, defense]}
