"""Bad input gives a clear Python error that names the problem."""
import pytest
import torch
from torch import nn

import fusedattn
from blocks import BLOCKS, fused_copy
from conftest import DEVICE
from fusedattn.reference import CbamModule, EcaModule, SEModule


@pytest.fixture(params=[name for name, row in BLOCKS.items() if not row.residual])
def block(request, backend):
    """Each fused module of the block table (tests/blocks.py), built for 16 channels."""
    module = fused_copy(BLOCKS[request.param]()).to(DEVICE)
    module.row, module.row_name = BLOCKS[request.param], request.param
    return module


def test_wrong_rank(block):
    with pytest.raises(ValueError, match=r"4-D \[B, C, H, W\]"):
        block(torch.randn(2, 16, 5))


def test_wrong_channel_count(block):
    if block.row.any_channels:   # ECA's weight has no channel axis: any C, as timm's EcaModule
        assert block(torch.randn(2, 12, 4, 4, device=DEVICE)).shape == (2, 12, 4, 4)
        return
    with pytest.raises(ValueError, match="12 channels, but the block was built for 16"):
        block(torch.randn(2, 12, 4, 4, device=DEVICE))


def test_integer_dtype(block):
    with pytest.raises(TypeError, match="float16, bfloat16, float32 or float64"):
        block(torch.randint(0, 5, (2, 16, 4, 4)))


def test_not_a_tensor(block):
    with pytest.raises(TypeError, match="torch.Tensor"):
        block([[1.0]])


def test_empty_spatial(block):
    with pytest.raises(ValueError, match="C, H, W >= 1"):
        block(torch.randn(2, 16, 0, 4))


@pytest.mark.parametrize("x_dtype, module_dtype", [(torch.float16, torch.float32), (torch.float32, torch.float64)])
def test_dtype_mismatch_raises_like_the_reference(block, x_dtype, module_dtype):
    """x in one dtype, the module in another: an error naming both, as PyTorch's layers give
    (was: silently computed); under autocast it runs."""
    block = block.to(module_dtype).eval()
    x = torch.randn(2, 16, 4, 4, dtype=x_dtype, device=DEVICE)
    if not any(True for _ in block.parameters()):   # SimAM: nothing to mismatch, x's dtype it is
        assert block(x).dtype == x_dtype == BLOCKS[block.row_name]().to(DEVICE, module_dtype)(x).dtype
        return
    # SK's and PSA's branch convs meet x first: PyTorch's own error there, as in the reference
    match = "should be the same|expected scalar type" if block.row.unfused else \
        f"is {module_dtype} but the input is {x_dtype}"
    with pytest.raises(RuntimeError, match=match):
        block(x)
    expected = BLOCKS[block.row_name]().to(DEVICE, module_dtype).eval()(x.to(module_dtype)).shape
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        if block.row.unfused and module_dtype == torch.float64:
            # SK's / PSA's branch convs: autocast leaves float64 weights as they are and the conv
            # refuses the bfloat16 input, in the reference too (oneDNN's message or the native conv's,
            # by what the CPU supports)
            with pytest.raises(RuntimeError, match="should be the same|expected scalar type"):
                block(x.to(torch.bfloat16))
        else:
            assert block(x.to(torch.bfloat16)).shape == expected


@pytest.mark.parametrize("make_ref", [lambda: SEModule(16, rd_channels=4), lambda: EcaModule(16),
                                      lambda: CbamModule(16, rd_channels=4)], ids=["se", "eca", "cbam"])
def test_the_references_refuse_mixed_dtypes_too(make_ref):
    """The behaviour the fused blocks copy."""
    with pytest.raises(RuntimeError):
        make_ref().double().eval()(torch.randn(2, 16, 4, 4))


def test_functional_weights_in_another_dtype():
    x = torch.randn(2, 16, 3, 3, dtype=torch.float64)
    w1, w2 = torch.randn(4, 16), torch.randn(16, 4)
    with pytest.raises(RuntimeError, match="fc1_weight is torch.float32 but the input is torch.float64"):
        fusedattn.se(x, w1, None, w2, None)
    assert fusedattn.se(x, w1.double(), None, w2.double(), None).dtype == torch.float64


def test_parameters_on_other_device():
    x = torch.randn(2, 16, 4, 4)
    w = torch.randn(4, 16, 1, 1, device="meta")
    with pytest.raises(ValueError, match="fc1_weight is on meta but the input is on cpu"):
        fusedattn.se(x, w, None, torch.randn(16, 4, 1, 1), None)
    with pytest.raises(ValueError, match="weight is on meta"):
        fusedattn.eca(x, torch.randn(1, 1, 3, device="meta"))
    cbam = fusedattn.CBAM(16, rd_channels=4)
    cbam.spatial.conv.conv.to("meta")
    with pytest.raises(ValueError, match="conv_weight is on meta but the input is on cpu"):
        cbam(x)


def test_se_weight_shapes_and_bias_pairs():
    x = torch.randn(2, 16, 4, 4)
    with pytest.raises(ValueError, match=r"fc2_weight must have shape \(16, 4, 1, 1\)"):
        fusedattn.se(x, torch.randn(4, 16, 1, 1), None, torch.randn(16, 5, 1, 1), None)
    with pytest.raises(ValueError, match="both be given or both be None"):
        fusedattn.se(x, torch.randn(4, 16, 1, 1), torch.randn(4), torch.randn(16, 4, 1, 1), None)
    with pytest.raises(TypeError, match="fc1_weight must be a floating tensor"):
        fusedattn.se(x, torch.ones(4, 16, 1, 1, dtype=torch.int32), None, torch.randn(16, 4, 1, 1), None)


def test_eca_weight_shape():
    x = torch.randn(2, 16, 4, 4)
    with pytest.raises(ValueError, match="odd"):
        fusedattn.eca(x, torch.randn(1, 1, 4))
    with pytest.raises(ValueError, match=r"\[1, 1, k\]"):
        fusedattn.eca(x, torch.randn(3))
    with pytest.raises(ValueError, match="circular padding 3 is larger than the 2 channels"):
        fusedattn.eca(torch.randn(1, 2, 3, 3), torch.randn(1, 1, 7), circular=True)


def test_unsupported_variants_are_refused():
    with pytest.raises(ValueError, match="act_layer=.*Tanh.* is not a fused activation"):
        fusedattn.SE(16, act_layer=nn.Tanh)
    with pytest.raises(ValueError, match="norm_layer=None"):
        fusedattn.SE(16, norm_layer=nn.BatchNorm2d)
    with pytest.raises(ValueError, match="gate_layer='sigmoid'"):
        fusedattn.ECA(16, gate_layer="hard_sigmoid")
    with pytest.raises(ValueError, match="use_mlp=False"):
        fusedattn.ECA(16, use_mlp=True)
    with pytest.raises(ValueError, match="neither timm's SEModule layout"):
        fusedattn.SE.from_module(nn.Conv2d(3, 3, 1))


def test_bad_backend_name():
    with pytest.raises(ValueError, match="backend must be one of"):
        fusedattn.set_backend("cuda")
