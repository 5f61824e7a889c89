"""The layout-keeping layers compute PyTorch's numbers, and their gradients keep the input's layout."""

import pytest
import torch
from torch import nn

from kdbench.models import create_model
from kdbench.models.layout import Flatten, GlobalAvgPool, is_channels_last, with_pytorch_layers

CHANNELS_LAST = torch.channels_last

# each layer beside the PyTorch layers it stands for
AGAINST_PYTORCH = pytest.mark.parametrize(
    ("ours", "theirs"),
    [(GlobalAvgPool(), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())), (Flatten(), nn.Flatten())],
    ids=["global_avg_pool", "flatten"],
)


def values_and_gradient(layer: nn.Module, x: torch.Tensor, upstream: torch.Tensor):
    x = x.detach().clone().requires_grad_(True)
    out = layer(x)
    out.backward(upstream)
    return out.detach(), x.grad


@pytest.mark.parametrize("layout", [torch.contiguous_format, CHANNELS_LAST])
@AGAINST_PYTORCH
def test_same_numbers_as_pytorch(ours, theirs, layout):
    torch.manual_seed(0)
    x = torch.randn(5, 6, 3, 7).contiguous(memory_format=layout)  # 3 × 7: HW = 21 is not a power of two
    upstream = torch.randn_like(theirs(x))
    out, grad = values_and_gradient(ours, x, upstream)
    expected_out, expected_grad = values_and_gradient(theirs, x, upstream)
    assert torch.equal(out, expected_out)
    assert torch.equal(grad, expected_grad)


def arriving_gradient(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The gradient ``layer``'s backward hands to the op that made its input (what a ReLU's backward
    reads; a leaf's ``.grad`` would not show it: autograd copies that into the leaf's own layout)."""
    made = x.detach().requires_grad_(True) * 1.0  # keeps x's layout
    arrived: list[torch.Tensor] = []
    made.register_hook(arrived.append)
    out = layer(made)
    out.backward(torch.ones_like(out))
    return arrived[0]


@AGAINST_PYTORCH
def test_gradient_keeps_the_input_layout(ours, theirs):
    x = torch.randn(4, 8, 4, 4).contiguous(memory_format=CHANNELS_LAST)
    assert arriving_gradient(ours, x).stride(1) == 1  # channels innermost, as in the input
    # PyTorch's own: W innermost, the mismatch this module exists for (if this fails, PyTorch keeps
    # the layout itself and kdbench.models.layout can go)
    assert arriving_gradient(theirs, x).stride(1) != 1
    assert arriving_gradient(ours, x.contiguous()).stride(3) in (0, 1)  # a standard input keeps W innermost


def test_channels_last_means_only_nhwc():
    x = torch.randn(2, 3, 4, 4)
    assert not is_channels_last(x)
    assert is_channels_last(x.contiguous(memory_format=CHANNELS_LAST))
    assert not is_channels_last(torch.randn(2, 1, 4, 4).contiguous(memory_format=CHANNELS_LAST))  # both layouts
    assert not is_channels_last(torch.randn(2, 3))


@pytest.mark.parametrize("name", ["digits_cnn", "cnn1"])
def test_digits_networks_unchanged(name):
    """The networks built with these layers give PyTorch's layers' logits and input gradients, bit
    for bit, channels-last and not: swapping them in changed no result."""
    torch.manual_seed(0)
    model = create_model(name, 10, (1, 8, 8)).eval()
    stock = create_model(name, 10, (1, 8, 8)).eval()
    stock.load_state_dict(model.state_dict())
    with_pytorch_layers(stock)
    assert not any(isinstance(m, (GlobalAvgPool, Flatten)) for m in stock.modules())
    x = torch.randn(16, 1, 8, 8)
    upstream = torch.randn(16, 10)
    for layout in (torch.contiguous_format, CHANNELS_LAST):
        ours = model.to(memory_format=layout)
        theirs = stock.to(memory_format=layout)
        out, grad = values_and_gradient(ours, x.contiguous(memory_format=layout), upstream)
        expected_out, expected_grad = values_and_gradient(theirs, x.contiguous(memory_format=layout), upstream)
        assert torch.equal(out, expected_out)
        assert torch.equal(grad, expected_grad)


@pytest.mark.parametrize("name", ["digits_cnn", "cnn1"])
def test_digits_training_step_unchanged(name):
    """Training mode (batch statistics, weight gradients), channels-last as the CPU trains: every
    parameter's gradient is PyTorch's layers', bit for bit."""
    torch.manual_seed(0)
    model = create_model(name, 10, (1, 8, 8)).train().to(memory_format=CHANNELS_LAST)
    stock = create_model(name, 10, (1, 8, 8)).train()
    stock.load_state_dict(model.state_dict())
    stock = with_pytorch_layers(stock).to(memory_format=CHANNELS_LAST)
    x = torch.randn(32, 1, 8, 8).contiguous(memory_format=CHANNELS_LAST)
    labels = torch.arange(32) % 10
    for network in (model, stock):
        torch.nn.functional.cross_entropy(network(x), labels).backward()
    for (param_name, ours), theirs in zip(model.named_parameters(), stock.parameters(), strict=True):
        assert torch.equal(ours.grad, theirs.grad), param_name
