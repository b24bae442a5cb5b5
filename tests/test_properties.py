"""Property-based: any shape (B, C, H, W >= 1, primes included), any strided view (channels_last,
slices, transposes, expanded), any dtype, every block and both backends give the float64
reference's output and gradients (the rows of the block table, tests/blocks.py). Hypothesis draws the cases; CI runs a fixed budget,
derandomized (FUSEDATTN_PROPERTY_EXAMPLES raises the budget)."""
import os

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocks import BLOCKS, fused_copy
from helpers import check_against_reference

EXAMPLES = int(os.environ.get("FUSEDATTN_PROPERTY_EXAMPLES", "40"))
SIDES = [1, 2, 3, 4, 5, 7, 8, 11, 13]
CHANNELS = [1, 2, 3, 5, 8, 13, 16, 17, 31, 64]


def _block(name, C):
    """(fused, reference) of a row of the block table for C channels, eval mode (train-mode
    BatchNorm over few pooled values is the subject of its own tests)."""
    ref = BLOCKS[name](C).eval()
    return fused_copy(ref), ref


@st.composite
def strided_input(draw, dtype):
    """A [B, C, H, W] view of one of the layouts the ops meet, random values."""
    B, C = draw(st.sampled_from([1, 2, 3])), draw(st.sampled_from(CHANNELS))
    H, W = draw(st.sampled_from(SIDES)), draw(st.sampled_from(SIDES))
    layout = draw(st.sampled_from(["contiguous", "channels_last", "slice_c", "crop_w", "transpose", "expand_b"]))
    if layout == "contiguous":
        x = torch.randn(B, C, H, W)
    elif layout == "channels_last":
        x = torch.randn(B, C, H, W).to(memory_format=torch.channels_last)
    elif layout == "slice_c":
        x = torch.randn(B, C + 3, H, W)[:, 2:2 + C]
    elif layout == "crop_w":
        x = torch.randn(B, C, H, 2 * W + 1)[:, :, :, 1::2]
    elif layout == "transpose":
        x = torch.randn(B, C, W, H).transpose(2, 3)
    else:
        x = torch.randn(1, C, H, W).expand(B, C, H, W)
    return x.to(dtype), layout


BLOCK_NAMES = [name for name, row in BLOCKS.items() if not row.residual and not name.endswith("-train")]


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_shape_layout_dtype_matches_reference(backend, device, data):
    block = data.draw(st.sampled_from(BLOCK_NAMES), label="block")
    dtype = data.draw(st.sampled_from([torch.float64, torch.float32, torch.bfloat16]), label="dtype")
    x, layout = data.draw(strided_input(dtype), label="x")
    C = x.shape[1]
    fused, ref = _block(block, C)
    fused = fused.to(device, dtype)
    check_against_reference(fused, ref, x.to(device), dtype, f"{block} {tuple(x.shape)} {layout} {dtype}",
                            unfused_bound=BLOCKS[block].unfused and dtype != torch.float64)
