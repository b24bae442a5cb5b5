"""CBAM's spatial gate kernels (fusedattn.kernels.spatial_gate) against the plain-PyTorch spatial
gate (fusedattn.ops.spatial_gate, itself checked against the reference modules in test_cbam.py),
in both plans: one program per pass (small maps) and many programs whose rows are summed after.
The whole block's gradcheck through these kernels is in test_cbam.py."""
import pytest
import torch

from fusedattn.kernels import config, spatial_gate as kernel
from fusedattn.ops.spatial_gate import spatial_gate_backward, spatial_gate_forward

from helpers import assert_close, rel_err

#: (use_bn, bn_training): no BN, running statistics, batch statistics
MODES = [(False, False), (True, False), (True, True)]


@pytest.fixture(autouse=True)
def _on_device(device):
    """The kernels take tensors where they run: the GPU, or the CPU under the interpreter."""
    with torch.device(device):
        yield


def _params(k, dtype, use_bn, training, extras):
    """SpatialParams' fields; extras: conv bias, BN affine, max_first."""
    one = lambda lo: (torch.rand(1, dtype=dtype) + lo)  # noqa: E731
    return (torch.randn(1, 2, k, k, dtype=dtype) / k, one(-0.5) if extras else None,
            one(0.5) if extras else None, one(-0.5) if extras else None, one(-0.5), one(0.5),
            use_bn, training, 1e-5, extras)


@pytest.fixture(params=["one-program", "many-programs"])
def plan(request, monkeypatch):
    """one-program: forced; many-programs: blocks of 16 pixels (several rows, blocks that span
    two samples at 5x7); both plans with 4 tap values per thread (many programs: 8 float32 taps per
    step, a 5 x 5 conv's 50 taps in 7 steps, the last one partial; one program: 4 taps)."""
    monkeypatch.setattr(config, "one_launch", request.param == "one-program")
    monkeypatch.setattr(kernel, "BLOCK_PIXELS", 16)
    monkeypatch.setattr(kernel, "TAP_TILE_PER_THREAD", 4)
    monkeypatch.setattr(kernel, "BLOCK_ROWS", 4)
    return request.param


@pytest.mark.parametrize("dtype, extras", [(torch.float64, False), (torch.float64, True), (torch.float32, True)],
                         ids=["f64-plain", "f64-bias-affine-maxfirst", "f32-bias-affine-maxfirst"])
@pytest.mark.parametrize("mode", MODES, ids=["no-bn", "bn-eval", "bn-train"])
@pytest.mark.parametrize("shape_k", [((3, 5, 7), 5), ((2, 1, 1), 3), ((1, 9, 4), 3)], ids=str)
def test_spatial_gate_matches_torch(plan, dtype, mode, extras, shape_k):
    (B, H, W), k = shape_k
    use_bn, training = mode
    if training and B * H * W == 1:
        pytest.skip("BatchNorm over one value")
    p = _params(k, dtype, use_bn, training, extras)
    maps = torch.randn(B, 2, H, W, dtype=dtype)
    maps[:, 1] = maps[:, 1].abs() + 0.5   # a max map is at least the mean map
    C = 6
    sa, mean, var = kernel.spatial_gate_forward(maps, *p)
    ref = spatial_gate_forward(maps.double(), *[t.double() if isinstance(t, torch.Tensor) else t for t in p])
    for got, want, what in zip((sa, mean, var), ref, ("sa", "bn mean", "bn var")):
        assert got.dtype == dtype
        assert_close(got, want, dtype, what, floor=1.0)
    dsa = torch.randn_like(sa)
    ties = torch.randint(1, 4, sa.shape).to(dtype)
    got = kernel.spatial_gate_backward(dsa, ties, maps, sa, mean, var, C, *p)
    ref = spatial_gate_backward(dsa.double(), ties.double(), maps.double(), sa.double(), mean.double(),
                                var.double(), C, *[t.double() if isinstance(t, torch.Tensor) else t for t in p])
    # BatchNorm over a few pixels amplifies rounding (2 pixels, float32: 5.7e-5 in dconv_weight for
    # seed 391590987): below float64 the kernels may be off by twice the spec's own error in dtype
    spec = spatial_gate_backward(dsa, ties, maps, sa, mean, var, C, *p) if dtype != torch.float64 else ref
    names = ("k_mean", "k_max", "dconv_weight", "dconv_bias", "dbn_weight", "dbn_bias")
    for g, r, same, what in zip(got, ref, spec, names):
        assert (g is None) == (r is None), what
        if g is not None:
            assert g.dtype == dtype and g.shape == r.shape, what
            # floor 1: dconv_bias is 0 up to rounding under batch statistics
            assert_close(g, r, dtype, what, floor=1.0, tol=2 * rel_err(same, r, 1.0))


def test_spatial_gate_deterministic(plan):
    """The rows are summed in a fixed order: the same call twice gives the same bits."""
    p = _params(3, torch.float32, True, True, True)
    maps = torch.randn(3, 2, 5, 6)
    runs = []
    for _ in range(2):
        sa, mean, var = kernel.spatial_gate_forward(maps, *p)
        grads = kernel.spatial_gate_backward(torch.ones_like(sa), torch.ones_like(sa), maps, sa, mean, var, 5, *p)
        runs.append([sa, mean, var, *grads])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_one_program_rule():
    """Small maps (ResNet's late stages at small batch) take one program per pass; large ones many."""
    assert config.one_launch is None
    assert kernel.one_program(8, 14, 14, 7) and kernel.one_program(1, 28, 28, 7)
    assert not kernel.one_program(64, 56, 56, 7) and not kernel.one_program(64, 14, 14, 7)


def test_batch_statistics_stable_with_offset(plan):
    """Mean and variance come from per-block (count, mean, M2) rows: a large common offset does not
    cancel the variance away in float32."""
    dtype = torch.float32
    maps = torch.randn(3, 2, 6, 5, dtype=dtype)
    p = list(_params(3, dtype, True, True, True))
    p[1] = torch.tensor([1e4], dtype=dtype)   # conv bias: z = conv + 1e4
    _, mean, var = kernel.spatial_gate_forward(maps, *p)
    _, mean_ref, var_ref = spatial_gate_forward(maps.double(), *[t.double() if isinstance(t, torch.Tensor) else t
                                                                 for t in p])
    assert abs(mean.item() - mean_ref.item()) <= 1e-6 * 1e4
    # z itself is rounded to float32 near 1e4 (half an ulp: 5e-4); sum(z^2) - n mean^2 would lose
    # the variance entirely (z^2 near 1e8, whose ulp is 8)
    assert abs(var.item() - var_ref.item()) <= 2e-2 * var_ref.item(), (var.item(), var_ref.item())
