"""B = 0: every block returns an empty output and zero weight gradients on both backends, and its
BatchNorm buffers do what nn.BatchNorm2d's do (running statistics kept, num_batches_tracked + 1).
Was: NaN running statistics (CPU path, train()), ZeroDivisionError in the Triton launchers."""
import pytest
import torch

from blocks import BLOCKS, C, fused_copy
from helpers import randomize_batchnorm


def _run(module, x):
    x = x.detach().requires_grad_(True)
    y = module(x)
    y.sum().backward()
    return y, x.grad


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("block", BLOCKS)
def test_empty_batch(backend, block, layout, device):
    ref = randomize_batchnorm(BLOCKS[block]()).double().to(device)
    fused = fused_copy(ref)
    x = torch.randn(0, C, 5, 5, dtype=torch.float64, device=device)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    y, dx = _run(fused, x)
    assert y.shape[0] == 0 and y.shape[2:] == x.shape[2:] and y.dtype == x.dtype
    assert dx.shape == x.shape
    for name, p in fused.named_parameters():
        assert p.grad is not None and torch.equal(p.grad, torch.zeros_like(p)), f"{block}: d{name}"
    try:
        y_ref, _ = _run(ref, x)
    except RuntimeError as e:  # timm's EcaModule cannot view an empty batch; the fused one can
        assert "eca" in block and "reshape tensor of 0 elements" in str(e)
        return
    assert y.shape == y_ref.shape
    buffers = dict(ref.named_buffers())
    for name, b in fused.named_buffers():
        assert torch.equal(b, buffers[name]), f"{block}: {name} {b} != {buffers[name]}"


@pytest.mark.parametrize("block", ["cbam-train", "sk-train"])
def test_empty_batch_then_eval(backend, block, device):
    """An empty training batch, then eval(): the output is the reference's (it was all NaN)."""
    ref = randomize_batchnorm(BLOCKS[block]()).double().to(device)
    fused = fused_copy(ref)
    empty = torch.randn(0, C, 5, 5, dtype=torch.float64, device=device)
    fused(empty), ref(empty)
    x = torch.randn(2, C, 5, 5, dtype=torch.float64, device=device)
    torch.testing.assert_close(fused.eval()(x), ref.eval()(x), rtol=1e-10, atol=1e-12)
