"""Fast-DFKD and DFME: every loss term and the gradient estimator against transcriptions of their
reference code (zju-vipa/Fast-Datafree, cake-lab/datafree-model-extraction) on fixed tensors, the
schedule and the query accounting, and a run of each on a tiny teacher."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdbench.api import ATTACKS, AttackContext, DataAccess, InputFormat, OptionError
from kdbench.attacks.dfme import (
    DFME,
    PROBABILITY_FLOOR,
    DFMEConfig,
    DFMEGenerator,
    estimate_gradient,
    recovered_logits,
    student_loss,
    unit_directions,
)
from kdbench.attacks.fast_dfkd import (
    FastDFKD,
    FastDFKDConfig,
    FastGenerator,
    MomentumBatchNormStatistics,
    ViewAnswers,
    accumulate_gradients,
    adversarial_loss,
    synthesis_loss,
    to_bytes,
    view_count,
    view_index,
)
from kdbench.data.images import crop_views, random_crop_flip, random_views
from kdbench.models import create_model
from kdbench.progress import Progress
from kdbench.serving.teacher import Access, QueryBudgetExceeded, Teacher
from kdbench.training.loop import Trainer
from kdbench.training.losses import soft_kl
from kdbench.training.recipe import Recipe, make_optimizer, make_schedule

# -- transcriptions of the reference code (the expected values) ------------------------------------


def reference_kldiv(logits, targets, T=1.0, reduction="batchmean"):
    """Fast-Datafree datafree/criterions.py ``kldiv``."""
    q = F.log_softmax(logits / T, dim=1)
    p = F.softmax(targets / T, dim=1)
    return F.kl_div(q, p, reduction=reduction) * (T * T)


class ReferenceDeepInversionHook:
    """Fast-Datafree's ``DeepInversionHook`` (hook_fn and update_mmt), called by hand."""

    def __init__(self, module, mmt_rate):
        self.module, self.mmt_rate, self.mmt, self.tmp_val = module, mmt_rate, None, None

    def hook_fn(self, x):
        module, nch = self.module, x.shape[1]
        mean = x.mean([0, 2, 3])
        var = x.permute(1, 0, 2, 3).contiguous().view([nch, -1]).var(1, unbiased=False)
        if self.mmt is None:
            r_feature = torch.norm(module.running_var.data - var, 2) + torch.norm(module.running_mean.data - mean, 2)
        else:
            mean_mmt, var_mmt = self.mmt
            r_feature = torch.norm(
                module.running_var.data - (1 - self.mmt_rate) * var - self.mmt_rate * var_mmt, 2
            ) + torch.norm(module.running_mean.data - (1 - self.mmt_rate) * mean - self.mmt_rate * mean_mmt, 2)
        self.tmp_val = (mean, var)
        return r_feature

    def update_mmt(self):
        mean, var = self.tmp_val
        if self.mmt is None:
            self.mmt = (mean.data, var.data)
        else:
            mean_mmt, var_mmt = self.mmt
            self.mmt = (
                self.mmt_rate * mean_mmt + (1 - self.mmt_rate) * mean.data,
                self.mmt_rate * var_mmt + (1 - self.mmt_rate) * var.data,
            )


def reference_estimate_gradient(victim, clone, x, u_unit, epsilon, m, num_classes, loss, logit_correction="mean"):
    """DFME dfme/approximate_gradients.py ``estimate_gradient_objective`` (pre_x=True, tanh,
    forward_differences=1, no_logits=1), with its random unit directions passed in instead of drawn."""
    N, C, S = x.size(0), x.size(1), x.size(2)
    dim = S**2 * C
    with torch.no_grad():
        u = torch.cat((u_unit.view(-1, m, C, S, S), torch.zeros(N, 1, C, S, S, dtype=x.dtype)), dim=1)
        u = u.view(-1, m + 1, C, S, S)
        evaluation_points = (x.view(-1, 1, C, S, S) + epsilon * u).view(-1, C, S, S)
        evaluation_points = torch.tanh(evaluation_points)
        pred_victim = victim(evaluation_points).detach()
        pred_clone = clone(evaluation_points)
        if loss == "l1":
            loss_fn = F.l1_loss
            pred_victim = F.log_softmax(pred_victim, dim=1).detach()
            if logit_correction == "mean":
                pred_victim -= pred_victim.mean(dim=1).view(-1, 1).detach()
            loss_values = -loss_fn(pred_clone, pred_victim, reduction="none").mean(dim=1).view(-1, m + 1)
        else:
            pred_clone = F.log_softmax(pred_clone, dim=1)
            pred_victim = F.softmax(pred_victim.detach(), dim=1)
            loss_values = -F.kl_div(pred_clone, pred_victim, reduction="none").sum(dim=1).view(-1, m + 1)
        differences = (loss_values[:, :-1] - loss_values[:, -1].view(-1, 1)).view(-1, m, 1, 1, 1)
        gradient_estimates = 1 / epsilon * differences * u[:, :-1]
        gradient_estimates *= dim
        if loss == "kl":
            gradient_estimates = gradient_estimates.mean(dim=1).view(-1, C, S, S)
        else:
            gradient_estimates = gradient_estimates.mean(dim=1).view(-1, C, S, S) / (num_classes * N)
        return gradient_estimates.detach(), loss_values[:, -1].mean()


def reference_student_loss(s_logit, t_logit, loss):
    """DFME train.py ``student_loss`` (with the train loop's logit correction applied to t_logit)."""
    if loss == "l1":
        t = F.log_softmax(t_logit, dim=1)
        t = t - t.mean(dim=1).view(-1, 1)
        return F.l1_loss(s_logit, t)
    return F.kl_div(F.log_softmax(s_logit, dim=1), F.softmax(t_logit, dim=1), reduction="batchmean")


def fixed(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# -- Fast-DFKD ------------------------------------------------------------------------------------


def test_the_batchnorm_term_with_momentum_matches_the_reference_hook_over_three_rounds():
    layer = nn.BatchNorm2d(3).double()
    layer.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
    layer.running_var.copy_(torch.tensor([1.5, 0.25, 4.0]))
    ours, reference = MomentumBatchNormStatistics(layer, 0.9), ReferenceDeepInversionHook(layer, 0.9)
    ours.attach()
    for round_ in range(3):  # the first without an average, then two with it
        x = fixed(8, 3, 5, 5, seed=round_) * (1 + round_)
        layer.train()
        layer(x)
        expected = reference.hook_fn(x)
        assert ours.loss is not None
        torch.testing.assert_close(ours.loss, expected, rtol=1e-9, atol=1e-9)
        ours.update_average()
        reference.update_mmt()
    ours.remove()


def test_the_adversarial_term_and_its_gradients_match_the_reference():
    s = fixed(6, 5, seed=1).requires_grad_(True)
    t = fixed(6, 5, seed=2).requires_grad_(True)
    with torch.no_grad():  # make three rows agree on their top class
        s[:3] = t[:3] + 0.3 * fixed(3, 5, seed=3)
    s_ref, t_ref = s.detach().clone().requires_grad_(True), t.detach().clone().requires_grad_(True)
    mask = (s_ref.max(1)[1] == t_ref.max(1)[1]).float()
    assert 0 < mask.sum() < len(mask)  # both kinds of rows are exercised
    expected = -(reference_kldiv(s_ref, t_ref, reduction="none").sum(1) * mask).mean()
    ours = adversarial_loss(s, t)
    torch.testing.assert_close(ours, expected)
    ours.backward()
    expected.backward()
    torch.testing.assert_close(s.grad, s_ref.grad)
    torch.testing.assert_close(t.grad, t_ref.grad)  # the teacher's side is not detached, as in the reference


def test_the_synthesis_loss_weights_its_terms_as_the_reference():
    cfg = FastDFKDConfig(w_bn=10.0, w_oh=0.5, w_adv=1.33)
    t, s = fixed(6, 5, seed=4), fixed(6, 5, seed=5)
    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    bn = [torch.tensor(0.7, dtype=torch.float64), torch.tensor(1.1, dtype=torch.float64)]
    terms = synthesis_loss(t, targets, bn, cfg, s)
    mask = (s.max(1)[1] == t.max(1)[1]).float()
    loss_adv = -(reference_kldiv(s, t, reduction="none").sum(1) * mask).mean()
    expected = cfg.w_bn * (0.7 + 1.1) + cfg.w_oh * F.cross_entropy(t, targets) + cfg.w_adv * loss_adv
    torch.testing.assert_close(sum(terms.values()), expected)
    assert set(synthesis_loss(t, targets, bn, cfg, None)) == {"bn", "oh"}  # warm-up: no adversarial term


def test_the_students_objective_is_the_references_kldiv_at_tau_20():
    s, t = fixed(7, 10, seed=6), fixed(7, 10, seed=7) * 5
    torch.testing.assert_close(20.0**2 * soft_kl(t, s, 20.0), reference_kldiv(s, t, T=20.0))


def test_the_meta_gradient_is_the_sum_of_the_fast_generators_gradients():
    meta, fast = nn.Linear(3, 2), nn.Linear(3, 2)
    grads = []
    for step in range(3):
        fast.zero_grad()
        fast(fixed(4, 3, seed=step, dtype=torch.float32)).pow(2).sum().backward()
        grads.append([p.grad.clone() for p in fast.parameters()])
        accumulate_gradients(meta, fast)
    for p, *per_step in zip(meta.parameters(), *grads, strict=True):
        torch.testing.assert_close(p.grad, sum(per_step))


def test_the_bank_stores_images_as_the_references_pngs():
    x = torch.tensor([-0.2, 0.0, 0.5, 0.999, 1.0, 1.7])
    expected = (np.clip(x.numpy(), 0, 1) * 255).astype("uint8")
    assert to_bytes(x).numpy().tolist() == expected.tolist()


def reference_generator_parameters(nz=256, ngf=64, img_size=32, nc=3):
    """Fast-Datafree datafree/models/generator.py ``Generator``, built to count its parameters."""
    init_size = img_size // 4
    layers = [
        nn.Linear(nz, ngf * 2 * init_size**2),
        nn.BatchNorm2d(ngf * 2),
        nn.Conv2d(ngf * 2, ngf * 2, 3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(ngf * 2),
        nn.Conv2d(ngf * 2, ngf, 3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(ngf),
        nn.Conv2d(ngf, nc, 3, stride=1, padding=1),
    ]
    return sum(p.numel() for layer in layers for p in layer.parameters())


def reference_dfme_generator_parameters(nz=256, ngf=64, img_size=32, nc=3):
    """DFME dfme/network/gan.py ``GeneratorA`` (final_bn=True), built to count its parameters."""
    init_size = img_size // 4
    layers = [
        nn.Linear(nz, ngf * 2 * init_size**2),
        nn.BatchNorm2d(ngf * 2),
        nn.Conv2d(ngf * 2, ngf * 2, 3, stride=1, padding=1),
        nn.BatchNorm2d(ngf * 2),
        nn.Conv2d(ngf * 2, ngf, 3, stride=1, padding=1),
        nn.BatchNorm2d(ngf),
        nn.Conv2d(ngf, nc, 3, stride=1, padding=1),
        nn.BatchNorm2d(nc, affine=False),
    ]
    return sum(p.numel() for layer in layers for p in layer.parameters())


def test_both_generators_have_the_references_layers_at_the_cifar_size():
    fast = FastGenerator(256, (3, 32, 32), 64)
    assert sum(p.numel() for p in fast.parameters()) == reference_generator_parameters()
    images = fast(torch.randn(4, 256))
    assert images.shape == (4, 3, 32, 32) and images.min() >= 0 and images.max() <= 1  # sigmoid
    dfme = DFMEGenerator(256, (3, 32, 32), 64)
    assert sum(p.numel() for p in dfme.parameters()) == reference_dfme_generator_parameters()
    assert dfme(torch.randn(4, 256)).shape == (4, 3, 32, 32)
    for shape in [(1, 8, 8), (3, 28, 20)]:  # any input size
        assert FastGenerator(16, shape, 8)(torch.randn(2, 16)).shape == (2, *shape)
        assert DFMEGenerator(16, shape, 8)(torch.randn(2, 16)).shape == (2, *shape)


# -- DFME -----------------------------------------------------------------------------------------


def small_networks(seed=0):
    torch.manual_seed(seed)
    victim = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 5)).double()
    clone = nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).double()
    return victim, clone


@pytest.mark.parametrize("loss", ["l1", "kl"])
def test_the_gradient_estimate_matches_the_reference_on_fixed_directions(loss):
    victim, clone = small_networks()
    cfg = DFMEConfig(budget=10**6, loss=loss, grad_epsilon=1e-3, grad_m=3)
    x = fixed(4, 1, 4, 4, seed=8)
    u = unit_directions(4, 3, (1, 4, 4), torch.Generator().manual_seed(0)).double()
    assert torch.allclose(torch.linalg.vector_norm(u.view(4, 3, -1), dim=2), torch.ones(4, 3, dtype=torch.float64))

    def ask(points):  # the API serves probabilities
        return F.softmax(victim(points), dim=1)

    ours, ours_loss = estimate_gradient(ask, clone, x, u, cfg, num_classes=5)
    expected, expected_loss = reference_estimate_gradient(victim, clone, x, u, 1e-3, 3, 5, loss)
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(ours_loss, expected_loss)


def test_the_gradient_estimate_points_along_the_true_gradient():
    """With many directions the forward differences recover the direction of ∂L/∂x (reference
    ``compute_gradient``: the true gradient of −ℓ with reduction 'mean')."""
    victim, clone = small_networks(seed=1)
    cfg = DFMEConfig(budget=10**7, grad_epsilon=1e-5, grad_m=4000)
    x = fixed(2, 1, 4, 4, seed=9)
    u = unit_directions(2, 4000, (1, 4, 4), torch.Generator().manual_seed(1)).double()
    estimate, _ = estimate_gradient(lambda p: F.softmax(victim(p), 1), clone, x, u, cfg, num_classes=5)
    x_true = x.clone().requires_grad_(True)
    pre = torch.tanh(x_true)
    target = F.log_softmax(victim(pre), 1)
    (-F.l1_loss(clone(pre), target - target.mean(1, keepdim=True), reduction="mean")).backward()
    cosine = F.cosine_similarity(estimate.flatten(), x_true.grad.flatten(), dim=0)
    assert cosine > 0.9, cosine


def test_logits_recovered_from_probabilities_are_the_references_corrected_log_softmax():
    logits = fixed(5, 6, seed=10, dtype=torch.float32) * 3
    expected = F.log_softmax(logits, 1) - F.log_softmax(logits, 1).mean(1, keepdim=True)
    torch.testing.assert_close(recovered_logits(F.softmax(logits, 1), "mean"), expected, rtol=1e-5, atol=1e-5)
    # a probability of 0 (a top-k answer) reads as the smallest normal float32, not −∞
    zero = recovered_logits(torch.tensor([[1.0, 0.0]]), "none")
    assert zero[0, 1] == math.log(PROBABILITY_FLOOR) and torch.isfinite(zero).all()


@pytest.mark.parametrize("loss", ["l1", "kl"])
def test_the_students_loss_matches_the_reference(loss):
    s, t = fixed(6, 5, seed=11), fixed(6, 5, seed=12) * 2
    cfg = DFMEConfig(loss=loss)
    torch.testing.assert_close(student_loss(s, F.softmax(t, 1), cfg), reference_student_loss(s, t, loss))


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
@pytest.mark.parametrize("budget", [500_000, 1_000_000, 3_000_000, 20_000_000])
def test_both_rates_drop_at_the_references_epochs(budget):
    """The reference steps MultiStepLR at the start of each epoch, milestones at 10/30/50 % of its
    epoch count; the student's recipe and the generator's schedule give each epoch the same rate."""
    cfg = DFMEConfig(budget=budget)
    reference_epochs = budget // (cfg.queries_per_iteration * cfg.epoch_itrs) + 1
    steps = sorted(int(f * reference_epochs) for f in (0.1, 0.3, 0.5))
    p = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([p], lr=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, steps, 0.3)
    expected = []
    for _ in range(cfg.epochs):  # the reference's loop: step, then train the epoch
        scheduler.step()
        expected.append(optimizer.param_groups[0]["lr"])
    attack = DFME(cfg)
    ctx = context()
    recipe = attack.student_recipe(ctx)
    ours_optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(1))], recipe)
    ours_schedule = make_schedule(ours_optimizer, recipe)
    ours = []
    for _ in range(cfg.epochs):
        ours.append(ours_optimizer.param_groups[0]["lr"])
        ours_schedule.step()
    assert ours == pytest.approx(expected)


def test_a_budget_below_one_iteration_is_refused_with_what_one_costs():
    with pytest.raises(OptionError, match=r"budget.*allowed: at least 1792"):
        DFMEConfig(budget=1000)


# -- both attacks on a tiny teacher ---------------------------------------------------------------


def tiny_teacher(classes=4, shape=(1, 8, 8)) -> Teacher:
    torch.manual_seed(0)
    model = create_model("digits_cnn", classes, shape)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, *shape) * 2 + 0.5)
        model.head.weight.mul_(20)
    return Teacher(model)


def context(classes=4, shape=(1, 8, 8)) -> AttackContext:
    trainer = Trainer(torch.device("cpu"), 0, Recipe(epochs=1, batch_size=16), Progress(quiet=True))
    fmt = InputFormat(shape, 16.0, (0.3,) * shape[0], (0.4,) * shape[0])
    return AttackContext(trainer, classes, shape, None, torch.Generator().manual_seed(0), "test", input_format=fmt)


def test_fast_dfkd_trains_the_student_from_a_growing_bank_and_leaves_the_teacher_untouched():
    teacher = tiny_teacher()
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    torch.manual_seed(1)
    student = create_model("mlp", 4, (1, 8, 8))
    start = [p.clone() for p in student.parameters()]
    cfg = FastDFKDConfig(epochs=2, warmup=1, kd_steps=3, batch_size=8, latent_dim=16, generator_width=8)
    FastDFKD(cfg).run(teacher, student, context())
    assert all(not torch.equal(a, b) for a, b in zip(start, student.parameters(), strict=True))
    assert all(torch.equal(v, teacher.model.state_dict()[k]) for k, v in before.items())
    assert not any(layer._forward_hooks for layer in teacher.model.modules())  # the hooks are gone


@pytest.mark.parametrize("flip", [False, True])
def test_the_kd_batches_answers_kept_per_view_train_the_same_student_with_fewer_teacher_passes(flip, monkeypatch):
    """Asking the teacher once per (bank image, view) must change nothing the student sees."""
    cfg = FastDFKDConfig(
        epochs=3, warmup=1, kd_steps=6, batch_size=8, latent_dim=16, generator_width=8, crop_padding=1, flip=flip
    )
    students, asked = [], []
    for keep_answers in (True, False):
        if not keep_answers:
            monkeypatch.setattr("kdbench.attacks.fast_dfkd.VIEW_ANSWERS_MAX_BYTES", 0)
        teacher = tiny_teacher()
        rows = []
        serve = teacher.serve
        monkeypatch.setattr(teacher, "serve", lambda x, serve=serve, rows=rows: rows.append(len(x)) or serve(x))
        torch.manual_seed(1)
        student = create_model("mlp", 4, (1, 8, 8))
        FastDFKD(cfg).run(teacher, student, context())
        students.append(student)
        asked.append(sum(rows))
    for kept, asked_afresh in zip(students[0].parameters(), students[1].parameters(), strict=True):
        torch.testing.assert_close(kept, asked_afresh, rtol=1e-5, atol=1e-6)
    # synthesis: (warmup + epochs) rounds of g_steps passes of a batch; KD: epochs × kd_steps batches
    synthesis = (cfg.warmup + cfg.epochs) * cfg.g_steps * cfg.batch_size
    assert asked[1] == synthesis + cfg.epochs * cfg.kd_steps * cfg.batch_size
    # a bank of 32 images has at most 32 × 9 (× 2) distinct views; 18 batches of 8 draw 144 views
    assert asked[0] - synthesis < asked[1] - synthesis


def test_every_view_of_an_image_has_its_own_number():
    for padding, flip in [(0, False), (1, False), (1, True), (4, True)]:
        side = 2 * padding + 1
        dy, dx, mirror = torch.meshgrid(
            torch.arange(side), torch.arange(side), torch.tensor([0, 1] if flip else [0]), indexing="ij"
        )
        numbers = view_index(dy.flatten(), dx.flatten(), mirror.flatten().bool(), padding, flip)
        assert sorted(numbers.tolist()) == list(range(view_count(padding, flip)))


def test_named_views_are_the_random_crops_and_flips_bit_for_bit():
    x = torch.randn(64, 3, 8, 8)
    expected = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(5))
    views = random_views(64, 2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(crop_views(x, 2, *views), expected)


def test_view_answers_ask_only_about_views_not_yet_asked_and_serve_repeats_from_the_table():
    answers = ViewAnswers(images=4, views=3, num_classes=2, device=torch.device("cpu"))
    asked: list[list[float]] = []

    def ask(images):  # the answer is a function of the pixels, as a frozen teacher's
        asked.append(images.flatten(1)[:, 0].tolist())
        return torch.stack([images.flatten(1).sum(1), -images.flatten(1).sum(1)], dim=1)

    bank = torch.arange(4.0).view(4, 1, 1, 1)
    idx, view = torch.tensor([0, 1, 1, 0]), torch.tensor([2, 0, 0, 2])  # one pair drawn twice in a batch
    first = answers.lookup(idx, view, bank[idx] + view.view(-1, 1, 1, 1), ask)
    again = answers.lookup(torch.tensor([1, 3]), torch.tensor([0, 0]), bank[[1, 3]], ask)
    assert first[:, 0].tolist() == [2.0, 1.0, 1.0, 2.0]
    assert again[:, 0].tolist() == [1.0, 3.0]
    assert asked == [[2.0, 1.0, 1.0, 2.0], [3.0]]  # the second batch asked only about the new pair


def test_view_answers_are_not_kept_where_the_table_would_be_too_large():
    digits = FastDFKDConfig(epochs=160, warmup=2, batch_size=256, crop_padding=1, flip=False)
    published_cifar100 = FastDFKDConfig(epochs=200, warmup=20, batch_size=256, crop_padding=4, flip=True)
    assert ViewAnswers.for_run(digits, 10, torch.device("cpu")) is not None
    assert ViewAnswers.for_run(published_cifar100, 100, torch.device("cpu")) is None


def test_dfme_spends_exactly_its_iterations_queries_through_the_api():
    teacher = tiny_teacher()
    cfg = DFMEConfig(budget=1000, batch_size=8, epoch_itrs=2, latent_dim=16, generator_width=8)
    assert cfg.queries_per_iteration == 8 * (1 * 2 + 5) and cfg.iterations == 17
    api = teacher.api(Access.PROBABILITIES, cfg.budget)
    torch.manual_seed(1)
    student = create_model("mlp", 4, (1, 8, 8))
    DFME(cfg).run(api, student, context())
    assert api.queries == 17 * 56 <= cfg.budget
    with pytest.raises(QueryBudgetExceeded):
        api(torch.zeros(cfg.budget - api.queries + 1, 1, 8, 8))


def test_the_threat_models():
    fast, dfme = ATTACKS.get("fast_dfkd").factory, DFME(DFMEConfig(budget=5000))
    assert fast.access is Access.WHITE_BOX and fast.data_access is DataAccess.NONE
    assert dfme.access is Access.PROBABILITIES and dfme.data_access is DataAccess.NONE
    assert dfme.query_budget == 5000


def test_the_runner_hands_dfme_the_api_alone_and_records_its_queries_and_curve(tmp_path, monkeypatch):
    from kdbench.config.compose import compose_config
    from kdbench.config.plan import plan_from_config
    from kdbench.matrix.run import run_matrix
    from kdbench.serving.teacher import TeacherAPI

    seen = {}
    original = DFME.run

    def spy(self, teacher, student, ctx):
        seen.setdefault("views", []).append(teacher)
        seen["ctx"] = ctx
        return original(self, teacher, student, ctx)

    monkeypatch.setattr(DFME, "run", spy)
    overrides = ["preset=tiny", "attack=dfme", "defense=normal", f"results_dir={tmp_path}", "quiet=true"]
    [record] = run_matrix(plan_from_config(compose_config(overrides)), Progress(quiet=True))
    assert record.status == "ok", record.reason
    assert all(isinstance(view, TeacherAPI) for view in seen["views"])
    assert seen["ctx"].data is None and seen["ctx"].inputs is None
    assert record.details.queries == 4 * 112  # the tiny preset's 448 queries: 4 iterations of 16·(2 + 5)
    # its stealing curve, read off the one run (no rerun with smaller budgets) after each iteration
    # (112 queries) that crosses 1/8, 1/4 or 1/2 of the budget: 56 and 112 are crossed together
    assert len(seen["views"]) == 1
    assert sorted(int(q) for q in record.details.stealing_curve) == [112, 224, 448]
