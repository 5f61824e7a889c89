import pytest
import torch

from kdbench.serving.teacher import Access, QueryBudgetExceeded, Teacher


def linear_teacher() -> Teacher:
    torch.manual_seed(0)
    return Teacher(torch.nn.Linear(4, 3))


def test_api_outputs_are_detached_at_each_access_level():
    teacher = linear_teacher()
    x = torch.randn(5, 4)
    logits = teacher.api(Access.LOGITS)(x)
    assert not logits.requires_grad and torch.allclose(logits, teacher.model(x))
    probs = teacher.api(Access.PROBABILITIES)(x)
    assert torch.allclose(probs.sum(dim=1), torch.ones(5)) and (probs >= 0).all()
    labels = teacher.api(Access.TOP1_LABEL)(x)
    assert labels.dtype == torch.int64 and torch.equal(labels, teacher.model(x).argmax(1))


def test_api_counts_queried_inputs_and_stops_exactly_at_its_budget():
    api = linear_teacher().api(Access.LOGITS, budget=10)
    api(torch.randn(4, 4))
    api(torch.randn(6, 4))
    assert api.queries == 10
    with pytest.raises(QueryBudgetExceeded, match="query budget of 10 inputs spent"):
        api(torch.randn(1, 4))
    assert api.queries == 10


def test_api_holds_no_reference_to_the_model():
    teacher = linear_teacher()
    api = teacher.api(Access.LOGITS)
    reachable = [v for v in vars(api).values() if isinstance(v, torch.nn.Module)]
    assert reachable == []


def test_api_outputs_can_be_distillation_targets():
    api = linear_teacher().api(Access.LOGITS)
    student = torch.nn.Linear(4, 3)
    x = torch.randn(8, 4)
    target = torch.softmax(api(x), dim=1)
    loss = torch.nn.functional.kl_div(torch.log_softmax(student(x), 1), target, reduction="batchmean")
    loss.backward()  # would fail if the API returned inference-mode tensors
    assert student.weight.grad is not None


def test_a_served_perturbation_is_what_the_api_returns_and_white_box_differentiates_through():
    model = torch.nn.Linear(4, 3)
    teacher = Teacher(model, serve=lambda x: 2 * model(x), perturbed=True)
    x = torch.randn(2, 4, requires_grad=True)
    assert torch.allclose(teacher.api(Access.LOGITS)(x), 2 * model(x))
    teacher(x).sum().backward()
    assert x.grad is not None


def test_a_perturbation_of_the_clean_logits_is_served_and_reusable_from_logits_already_computed():
    model = torch.nn.Linear(4, 3)
    teacher = Teacher(model, perturb=lambda logits, x: logits.flip(1) - x.sum(1, keepdim=True))
    x = torch.randn(2, 4)
    served = model(x).flip(1) - x.sum(1, keepdim=True)
    assert teacher.perturbed
    assert torch.allclose(teacher.api(Access.LOGITS)(x), served)
    assert torch.allclose(teacher.serve_from_logits(model(x), x), served)
    assert torch.allclose(linear_teacher().serve_from_logits(torch.ones(2, 3), x), torch.ones(2, 3))
    with pytest.raises(ValueError, match="either a serve function or a perturbation"):
        Teacher(model, serve=model, perturb=lambda logits, x: logits)


def test_top_k_access_serves_a_distribution_over_k_classes_at_most():
    teacher = linear_teacher()
    x = torch.randn(6, 4)
    out = teacher.api(Access.TOP_K, top_k=2)(x)
    assert torch.allclose(out.sum(dim=1), torch.ones(6)) and ((out > 0).sum(dim=1) == 2).all()
    assert torch.equal(out.argmax(1), teacher.model(x).argmax(1))


def test_an_api_refuses_a_budget_below_one_and_a_top_k_without_top_k_access():
    from kdbench.errors import ConfigError

    with pytest.raises(ConfigError, match="a query budget must be a positive number of inputs, got 0"):
        linear_teacher().api(Access.LOGITS, budget=0)
    with pytest.raises(ValueError, match="top_k goes with top-k access"):
        linear_teacher().api(Access.LOGITS, top_k=2)
    with pytest.raises(ValueError, match="top_k goes with top-k access"):
        linear_teacher().api(Access.TOP_K)
