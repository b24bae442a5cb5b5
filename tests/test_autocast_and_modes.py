"""autocast, train()/eval(), deterministic backward, and (on a GPU) index arithmetic past
2**31 elements, for every block."""
import pytest
import torch

import fusedattn
from fusedattn.reference import CbamModule, EcaModule, PSAModule, SelectiveKernel, SEModule
from helpers import make_x, rel_err


@pytest.mark.parametrize("block", ["SE", "ECA", "CBAM", "SelectiveKernel", "PSA"])
def test_autocast_matches_reference(backend, block, device):
    """Under autocast the fused block returns the reference's dtype and values (the reference
    runs its tiny layers in bf16, the fused block in float32, hence the bf16 tolerance). CUDA
    autocast runs the softmax of SK and PSA in float32, and their output is float32 there."""
    C = 64 if block == "PSA" else 32  # PSA: groups of 16 in C / 4 channels
    ref = {"SE": lambda: SEModule(C, rd_ratio=0.25), "ECA": lambda: EcaModule(kernel_size=3),
           "CBAM": lambda: CbamModule(C, rd_ratio=0.25).eval(),
           "SelectiveKernel": lambda: SelectiveKernel(C, C).eval(), "PSA": lambda: PSAModule(C, C)}[block]().to(device)
    fused = getattr(fusedattn, block).from_module(ref)
    conv = torch.nn.Conv2d(8, C, 3, padding=1).to(device)
    x = torch.randn(2, 8, 6, 6, device=device, requires_grad=True)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        h = conv(x)
        y_ref, y = ref(h), fused(h)
    softmax_fp32 = device.type == "cuda" and block in ("SelectiveKernel", "PSA")
    assert y.dtype == y_ref.dtype == (torch.float32 if softmax_fp32 else torch.bfloat16)
    assert rel_err(y, y_ref) < 2e-2
    (g_ref,) = torch.autograd.grad(y_ref.float().square().sum(), x, retain_graph=True)
    (g,) = torch.autograd.grad(y.float().square().sum(), x)
    assert rel_err(g, g_ref) < 5e-2


@pytest.mark.parametrize("block", ["SE", "ECA"])
def test_train_and_eval_modes(backend, block, device):
    fused = (fusedattn.SE(16, rd_channels=4) if block == "SE" else fusedattn.ECA(16)).to(device)
    x = make_x((2, 16, 4, 4), torch.float32, "nchw", device)
    y_train = fused.train()(x)
    with torch.no_grad():
        y_eval = fused.eval()(x)
    torch.testing.assert_close(y_train.detach(), y_eval)


@pytest.mark.parametrize("block", ["SE", "ECA", "CBAM", "PSA", "SK"])
def test_backward_is_deterministic(triton_backend, pipeline, block, device, monkeypatch):
    """Two backward passes on the same inputs give bitwise equal gradients (no atomics; PSA's and
    SK's branch convs with cuDNN's deterministic algorithms)."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    C = 24
    fused = {"SE": lambda: fusedattn.SE(C, rd_ratio=0.25), "ECA": lambda: fusedattn.ECA(C),
             "CBAM": lambda: fusedattn.CBAM(C, rd_ratio=0.25).eval(),
             "PSA": lambda: fusedattn.PSA(C, 64, conv_groups=(1, 2, 4, 8)),
             "SK": lambda: fusedattn.SelectiveKernel(C, 40, kernel_size=[3, 5, 7], split_input=False)}[block]().to(device)
    x = make_x((3, C, 5, 7), torch.float32, "nchw", device, requires_grad=True)
    dy = torch.randn_like(fused(x))
    runs = []
    for _ in range(2):
        fused.zero_grad(set_to_none=True)
        x.grad = None
        fused(x).backward(dy)
        runs.append([x.grad.clone()] + [p.grad.clone() for p in fused.parameters()])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (4 GiB tensors)")
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_more_than_2_pow_31_elements(layout):
    """Offsets past 2**31 elements: compare the last channels / pixels with the torch path."""
    x = torch.randn(2, 4, 2**14, 2**14 + 1, device="cuda", dtype=torch.bfloat16)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    assert x.numel() > 2**31
    for block in (fusedattn.SE(4, rd_channels=2), fusedattn.CBAM(4, rd_channels=2).eval()):
        block = block.to("cuda", torch.bfloat16)   # the module in x's dtype, as PyTorch's layers want
        with torch.no_grad():
            y = block(x)
            with fusedattn.use_backend("torch"):
                y_ref = block(x)
        assert rel_err(y[1, :, -64:], y_ref[1, :, -64:]) < 2e-2
        assert rel_err(y[:, :, :64], y_ref[:, :, :64]) < 2e-2
        del y, y_ref
    A = 8  # SK's tail on two paths of x's size (path pointers + 64-bit offsets)
    p = dict(fc_reduce_weight=torch.randn(A, 4, 1, 1), bn_weight=torch.rand(A) + 0.5, bn_bias=torch.randn(A),
             fc_select_weight=torch.randn(8, A, 1, 1), running_mean=torch.zeros(A), running_var=torch.ones(A))
    p = {k: v.to("cuda", torch.bfloat16) for k, v in p.items()}   # x's dtype, as the ops want
    p["bn_training"] = False
    with torch.no_grad():
        y = fusedattn.sk_attention([x, x.flip(0)], **p)
        with fusedattn.use_backend("torch"):
            y_ref = fusedattn.sk_attention([x, x.flip(0)], **p)
    assert rel_err(y[1, :, -64:], y_ref[1, :, -64:]) < 2e-2
    assert rel_err(y[:, :, :64], y_ref[:, :, :64]) < 2e-2
