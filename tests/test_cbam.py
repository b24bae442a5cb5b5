"""Fused CBAM (Triton path and plain-PyTorch path) against the float64 references."""
import pytest
import torch
from torch import nn

import fusedattn
from fusedattn.benchmark import saved_tensor_bytes
from fusedattn.reference import CbamModule, ConvBiasCBAM, OriginalCBAM, TutorialCBAM
from helpers import (DTYPES, LAYOUTS, ODD_SHAPES, SAME64, assert_close, assert_same_step, check_against_reference,
                     make_x, rel_err)


def _check_buffers(fused, ref64, dtype, what):
    for (name, b), (_, r) in zip(fused.named_buffers(), ref64.named_buffers()):
        if b.is_floating_point():
            assert_close(b, r, dtype if dtype != torch.float64 else torch.float64, f"{what} {name}")
        else:
            assert torch.equal(b, r), f"{what} {name}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_cbam_matches_reference(backend, pipeline, dtype, layout, mode, device):
    C = 40
    ref = CbamModule(C, rd_ratio=0.25).train(mode == "train")
    with torch.no_grad():  # non-trivial BN state, so eval mode is tested with real statistics
        ref.spatial.conv.bn.running_mean.fill_(0.3)
        ref.spatial.conv.bn.running_var.fill_(1.7)
        ref.spatial.conv.bn.weight.fill_(1.2)
        ref.spatial.conv.bn.bias.fill_(-0.1)
    fused = fusedattn.CBAM.from_module(ref).to(device, dtype)
    ref64 = CbamModule(C, rd_ratio=0.25).train(mode == "train")
    ref64.load_state_dict(fused.state_dict())
    x = make_x((3, C, 6, 5), dtype, layout, device)
    y, dx = check_against_reference(fused, ref64, x, dtype, f"CBAM {dtype} {layout} {mode}")
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt) and dx.is_contiguous(memory_format=fmt)
    _check_buffers(fused, ref64.double(), dtype, "CBAM buffers")


@pytest.mark.parametrize("shape", ODD_SHAPES + [(2, 12, 2, 9), (3, 9, 5, 1)], ids=str)
@pytest.mark.parametrize("k", [3, 7])
def test_cbam_odd_shapes(backend, pipeline, shape, k, device):
    """HW = 1, C = 1, H or W smaller than k, C not a multiple of any block."""
    C = shape[1]
    kw = dict(rd_channels=max(C // 4, 1), spatial_kernel_size=k)
    fused = fusedattn.CBAM(C, **kw).to(device)
    if shape[0] * shape[2] * shape[3] == 1:
        fused.eval()
    x = make_x(shape, torch.float32, "channels_last", device)
    ref = CbamModule(C, **kw).train(fused.training)
    check_against_reference(fused, ref, x, torch.float32, f"CBAM {shape} k={k}")


@pytest.mark.parametrize("make_ref", [lambda: TutorialCBAM(32, ratio=8, kernel_size=3),
                                      lambda: TutorialCBAM(32, ratio=8, kernel_size=7),
                                      lambda: ConvBiasCBAM(32, reduction=4),
                                      lambda: OriginalCBAM(32, reduction_ratio=8)],
                         ids=["tutorial-k3", "tutorial-k7", "conv-bias", "authors"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_cbam_layouts_from_module_and_state_dict(backend, pipeline, make_ref, mode, device):
    """from_module matches the source's outputs and gradients; its state_dict loads directly."""
    ref = make_ref().double().to(device).train(mode == "train")
    fused = fusedattn.CBAM.from_module(ref)
    x = make_x((2, 32, 5, 4), torch.float64, "nchw", device)
    assert_same_step(fused, ref, x, f"CBAM.from_module ({mode})")
    for b, r in zip(fused.buffers(), ref.buffers()):  # BN running statistics, step count
        assert torch.allclose(b.double(), r.double(), rtol=SAME64, atol=SAME64)
    again = fusedattn.CBAM(32, rd_channels=fused.channel.fc1.out_channels,
                           spatial_kernel_size=fused.spatial.conv.conv.kernel_size[0],
                           mlp_bias=fused.channel.fc1.bias is not None,
                           spatial_norm=fused.spatial.conv.bn is not None,
                           spatial_bias=fused.spatial.conv.conv.bias is not None,
                           max_first=fused.max_first).double().to(device)
    again.load_state_dict(ref.state_dict())  # the source layout's keys, strict
    again.train(mode == "train")
    assert rel_err(again(x.detach()), ref(x.detach())) < SAME64 or mode == "train"


def test_cbam_timm_state_dict_keys():
    ref, fused = CbamModule(64), fusedattn.CBAM(64)
    assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in fused.state_dict().items()}
    assert fused.channel.fc1.weight.shape == (4, 64, 1, 1)  # rd_divisor=1: 64 / 16
    back = CbamModule(64)
    back.load_state_dict(fused.state_dict())


def test_cbam_running_stats_over_steps(backend, device):
    """Several training steps, momentum and cumulative (momentum=None) averages, then eval."""
    for momentum in (0.1, None):
        ref = CbamModule(16, rd_channels=4).double().to(device)
        ref.spatial.conv.bn.momentum = momentum
        fused = fusedattn.CBAM.from_module(ref)
        for _ in range(3):
            x = make_x((2, 16, 4, 5), torch.float64, "nchw", device)
            assert rel_err(fused(x), ref(x)) < SAME64
        for b, r in zip(fused.buffers(), ref.buffers()):
            assert torch.allclose(b.double(), r.double(), rtol=SAME64, atol=1e-14)
        x = make_x((2, 16, 4, 5), torch.float64, "nchw", device)
        assert rel_err(fused.eval()(x), ref.eval()(x)) < SAME64


def test_cbam_channel_and_pixel_ties_split_like_amax(backend, device):
    C = 6
    ref = CbamModule(C, rd_channels=3)
    fused = fusedattn.CBAM.from_module(ref).to(device, torch.float64)
    x = torch.randint(-2, 3, (2, C, 4, 3), device=device).double()
    with torch.no_grad():  # integer-valued gates so that x * ca keeps ties across channels
        fused.channel.fc2.weight.zero_()
    check_against_reference(fused, CbamModule(C, rd_channels=3), x, torch.float64, "CBAM ties")


@pytest.mark.parametrize("bn", ["none", "train", "eval"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cbam_gradcheck_float64(triton_backend, bn, layout, device):
    C, RD, k = 3, 2, 3
    f64 = dict(dtype=torch.float64, device=device)
    x = make_x((2, C, 2, 3), torch.float64, layout, device, requires_grad=True)
    w1 = torch.randn(RD, C, 1, 1, **f64, requires_grad=True)
    b1 = torch.randn(RD, **f64, requires_grad=True)
    w2 = torch.randn(C, RD, 1, 1, **f64, requires_grad=True)
    b2 = torch.randn(C, **f64, requires_grad=True)
    cw = torch.randn(1, 2, k, k, **f64, requires_grad=True)
    gamma = torch.rand(1, **f64) + 0.5
    beta = torch.randn(1, **f64)
    stats = dict(running_mean=torch.randn(1, **f64), running_var=torch.rand(1, **f64) + 0.5)
    gamma.requires_grad_(True)
    beta.requires_grad_(True)

    def fn(x, w1, b1, w2, b2, cw, gamma, beta):
        return fusedattn.cbam(x, w1, b1, w2, b2, cw, None, gamma, beta, **stats, use_bn=bn != "none",
                              bn_training=bn == "train", max_first=True)

    # the full Jacobian for NCHW with batch statistics (every kernel of the backward, the BatchNorm's
    # batch terms included: the others' superset); a random projection (fast_mode) for the rest, to
    # bound CI time (a full one took 100-140 s each on the 2-core CI machine)
    assert torch.autograd.gradcheck(fn, (x, w1, b1, w2, b2, cw, gamma, beta), eps=1e-6, atol=1e-7,
                                    rtol=1e-5, fast_mode=(layout, bn) != ("nchw", "train"))


def test_cbam_saves_at_most_x_plus_small_vectors(backend, device):
    """Bytes saved for backward (saved-tensor hooks). The fused kernels: <= x + O(B*(C + HW));
    beyond x (the block's input, alive anyway), at most half of what the eager reference saves
    beyond x. The plain-PyTorch route (eager math under PyTorch's autograd, for host time) saves no more
    than the eager reference, up to a few [B, C] vectors."""
    B, C, H, W = 4, 64, 16, 16
    ref = CbamModule(C).to(device)
    fused = fusedattn.CBAM.from_module(ref)

    x = make_x((B, C, H, W), torch.float32, "channels_last", device, requires_grad=True)
    fused_bytes, eager_bytes = saved_tensor_bytes(fused, x), saved_tensor_bytes(ref, x)
    x_bytes = x.numel() * x.element_size()
    if backend == "torch":
        assert fused_bytes <= eager_bytes + 4 * 8 * B * C, (fused_bytes, eager_bytes)
        return
    small = 4 * 8 * B * (C + H * W)
    assert fused_bytes <= x_bytes + small, (fused_bytes, x_bytes)
    assert fused_bytes - x_bytes <= (eager_bytes - x_bytes) / 2, (fused_bytes, eager_bytes)


def test_cbam_non_contiguous_input(backend, device):
    ref = CbamModule(16, rd_channels=4).eval().to(device)
    fused = fusedattn.CBAM.from_module(ref)
    base = torch.randn(3, 32, 9, 10, device=device)
    for x in (base[:, ::2], base[:, :16, 1:8, ::3], base.transpose(2, 3)[:, 16:]):
        assert not x.is_contiguous()
        torch.testing.assert_close(fused(x), ref(x), rtol=1e-5, atol=1e-6)


def test_cbam_errors():
    with pytest.raises(ValueError, match="built for 16"):
        fusedattn.CBAM(16)(torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fusedattn.CBAM(16).train()(torch.randn(1, 16, 1, 1))
    with pytest.raises(ValueError, match="odd"):
        fusedattn.CBAM(16, spatial_kernel_size=4)
    with pytest.raises(ValueError, match="matches no known CBAM layout"):
        fusedattn.CBAM.from_module(nn.Conv2d(2, 2, 1))
    with pytest.raises(ValueError, match=r"conv_weight must have shape \(1, 2, 3, 3\)"):
        fusedattn.cbam(torch.randn(2, 4, 3, 3), torch.randn(2, 4, 1, 1), None, torch.randn(4, 2, 1, 1), None,
                       torch.randn(1, 3, 3, 3))
