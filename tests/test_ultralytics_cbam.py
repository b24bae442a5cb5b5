"""fusedattn.UltralyticsCBAM (YOLO's CBAM: a one-layer channel gate on the mean, then a 2 -> 1
conv without bias or norm) against its float64 reference, both paths; the one-layer channel gate
of the CBAM kernels (kernels/cbam.py with w2 None, CHANNEL_MAX off in kernels/cbam_grad.py)."""
import copy

import pytest
import torch
from torch import nn

import fusedattn
from fusedattn.reference import UltralyticsCBAM
from helpers import DTYPES, LAYOUTS, ODD_SHAPES, assert_same_step, check_against_reference, make_x


def _randomized(m: nn.Module) -> nn.Module:
    """Weights that make both gates matter (default init leaves the spatial logits near 0)."""
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.5)
    return m


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_ultralytics_cbam_matches_reference(backend, pipeline, dtype, layout, device):
    C = 40
    fused = _randomized(fusedattn.UltralyticsCBAM(C, kernel_size=7)).to(device, dtype)
    x = make_x((3, C, 6, 5), dtype, layout, device)
    y, dx = check_against_reference(fused, UltralyticsCBAM(C, 7), x, dtype, f"Ultralytics CBAM {dtype} {layout}")
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt) and dx.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("shape", ODD_SHAPES + [(2, 12, 2, 9)], ids=str)
def test_ultralytics_cbam_odd_shapes(backend, pipeline, shape, device):
    """HW = 1, C = 1, H or W smaller than k, C not a multiple of any block, B = 1; k = 3."""
    fused = _randomized(fusedattn.UltralyticsCBAM(shape[1], kernel_size=3)).to(device)
    x = make_x(shape, torch.float32, "channels_last", device)
    check_against_reference(fused, UltralyticsCBAM(shape[1], 3), x, torch.float32, f"Ultralytics CBAM {shape}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ultralytics_cbam_gradcheck_float64(triton_backend, layout, device):
    """Through the functional op (fc2_weight None: the one-layer channel gate), float64 Triton path.
    The full Jacobian for NCHW on 66 inputs (it took 204 s on 168 in CI), fast_mode for channels_last."""
    C, k = 3, 3
    f64 = dict(dtype=torch.float64, device=device, requires_grad=True)
    x = make_x((2, C, 2, 3), torch.float64, layout, device, requires_grad=True)
    w, b, cw = torch.randn(C, C, 1, 1, **f64), torch.randn(C, **f64), torch.randn(1, 2, k, k, **f64)
    assert torch.autograd.gradcheck(lambda *a: fusedattn.cbam(a[0], a[1], a[2], None, None, a[3]), (x, w, b, cw),
                                    eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=layout == "channels_last")


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_convert_ultralytics_cbam(backend, mode, device):
    """convert() finds YOLO's CBAM by structure, keeps outputs and gradients; the state_dict keys are
    Ultralytics' and load back strictly; Ultralytics' ChannelAttention used alone stays an SE."""
    from fusedattn.reference import ChannelAttention

    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), _randomized(UltralyticsCBAM(16, 3)), nn.ReLU(),
                          _randomized(ChannelAttention(16))).double().to(device).train(mode == "train")
    converted, report = fusedattn.convert(model)
    assert [r[2] for r in report.replaced] == ["UltralyticsCBAM", "ChannelAttention"] and not report.left, str(report)
    assert converted.state_dict().keys() == model.state_dict().keys()
    x = make_x((2, 3, 7, 6), torch.float64, "channels_last", device)
    assert_same_step(converted, model, x, f"converted YOLO CBAM ({mode})")
    fresh = copy.deepcopy(model)
    fresh.load_state_dict(converted.state_dict())  # strict


def test_ultralytics_cbam_refusals():
    with pytest.raises(ValueError, match="kernel size must be 3 or 7"):
        fusedattn.UltralyticsCBAM(8, kernel_size=5)
    m = UltralyticsCBAM(8)
    m.spatial_attention.cv1 = nn.Conv2d(2, 1, 7, padding=3, bias=True)
    _, report = fusedattn.convert(m)
    assert report.left and "no bias" in report.left[0][2], str(report)
    m = UltralyticsCBAM(8)
    m.spatial_attention.cv1 = nn.Conv2d(2, 1, 3, padding=1, dilation=2, bias=False)   # not what the kernels compute
    _, report = fusedattn.convert(m)
    assert report.left and "2->1 k x k conv" in report.left[0][2], str(report)
    m = UltralyticsCBAM(8)
    m.spatial_attention.act = nn.Hardsigmoid()
    _, report = fusedattn.convert(m)
    assert report.left and "spatial_attention.act is not sigmoid" in report.left[0][2], str(report)
    fused = fusedattn.UltralyticsCBAM(8)
    with pytest.raises(ValueError, match="x"):
        fused(torch.randn(2, 6, 4, 4))   # channel count
    with pytest.raises(ValueError, match="fc2_bias must be None"):
        fusedattn.cbam(torch.randn(2, 8, 4, 4), torch.randn(8, 8), None, None, torch.randn(8), torch.randn(1, 2, 3, 3))
