"""Fused PSA (EPSANet) attention tail and module against the float64 reference."""
import pytest
import torch

import fusedattn
from fusedattn.reference import PSAModule
from helpers import DTYPES, LAYOUTS, SAME64, check_against_reference, conv_memory_format, make_x


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_psa_matches_reference(backend, dtype, layout, device):
    fused = fusedattn.PSA(16, 64).to(device, dtype)
    x = make_x((3, 16, 6, 5), dtype, layout, device)
    y, dx = check_against_reference(fused, PSAModule(16, 64), x, dtype, f"PSA {dtype} {layout}")
    fmt = conv_memory_format(x)  # the layout of the block's convs, as in the reference
    assert y.shape == (3, 64, 6, 5) and y.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("shape", [(1, 12, 1, 1), (2, 12, 3, 7), (2, 12, 9, 2)], ids=str)
@pytest.mark.parametrize("planes,groups", [(64, (1, 4, 4, 4)), (72, (1, 2, 3, 6))])
def test_psa_odd_shapes(backend, shape, planes, groups, device):
    """HW = 1, odd H and W, split channels (18) not a multiple of any block; stride 2."""
    for stride in (1, 2):
        kw = dict(stride=stride, conv_groups=groups)
        fused = fusedattn.PSA(12, planes, **kw).to(device)
        x = make_x(shape, torch.float32, "channels_last", device)
        check_against_reference(fused, PSAModule(12, planes, **kw), x, torch.float32,
                                f"PSA {shape} {planes} {kw}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_psa_attention_gradcheck_float64(triton_backend, layout, device):
    C, RD = 4, 2
    splits = [make_x((1, C, 2, 2), torch.float64, layout, device, requires_grad=True) for _ in range(4)]
    f64 = dict(dtype=torch.float64, device=device, requires_grad=True)
    w1, b1 = torch.randn(RD, C, 1, 1, **f64), torch.randn(RD, **f64)
    w2, b2 = torch.randn(C, RD, 1, 1, **f64), torch.randn(C, **f64)
    fn = lambda *a: fusedattn.psa_attention(a[:4], *a[4:])  # noqa: E731
    assert torch.autograd.gradcheck(fn, (*splits, w1, b1, w2, b2), eps=1e-6, atol=1e-7, rtol=1e-5,
                                    fast_mode=layout == "channels_last")


def test_psa_reverse_order_and_state_dict():
    """The output is [split 4, split 3, split 2, split 1]; state_dict keys as EPSANet's."""
    ref = PSAModule(16, 64)
    fused = fusedattn.PSA(16, 64)
    assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in fused.state_dict().items()}
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(fused(x), ref(x))
    with torch.no_grad():  # zero the SE: equal softmax weights 1/4, so out = cat(x4, x3, x2, x1) / 4
        for p in fused.se.parameters():
            p.zero_()
        splits = [getattr(fused, f"conv_{i}")(x) for i in (4, 3, 2, 1)]
        torch.testing.assert_close(fused(x), torch.cat(splits, 1) / 4)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_psa_from_module(backend, mode, device):
    ref = PSAModule(16, 64, conv_kernels=(3, 3, 5, 5), conv_groups=(1, 2, 4, 8)).double().to(device)
    ref.train(mode == "train")
    fused = fusedattn.PSA.from_module(ref)
    assert fused.training == ref.training and fused.conv_4.kernel_size == (5, 5) and fused.conv_4.groups == 8
    x = make_x((2, 16, 5, 5), torch.float64, "nchw", device)
    torch.testing.assert_close(fused(x), ref(x), rtol=SAME64, atol=SAME64)


def test_psa_errors():
    with pytest.raises(ValueError, match="built for 16"):
        fusedattn.PSA(16, 64)(torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match=r"splits\[2\] is"):
        fusedattn.psa_attention([torch.randn(2, 4, 3, 3)] * 2 + [torch.randn(2, 4, 3, 2)],
                                torch.randn(2, 4, 1, 1), None, torch.randn(4, 2, 1, 1), None)
    with pytest.raises(ValueError, match="at least one"):
        fusedattn.psa_attention([], torch.randn(2, 4, 1, 1), None, torch.randn(4, 2, 1, 1), None)
    with pytest.raises(ValueError, match="lacks conv_1"):
        fusedattn.PSA.from_module(torch.nn.Conv2d(2, 2, 1))
