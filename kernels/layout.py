"""Views of a [B, C, H, W] tensor as strided [B, C, HW], without copies.

Contiguous NCHW (HW stride 1) and channels_last (C stride 1) both flatten H and W
into one axis; so do slices along B or C. Only layouts where H and W cannot be
merged into one stride (e.g. a crop of W) are copied to contiguous first.
"""
from typing import NamedTuple

import torch
import triton.language as tl


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for ints (plain arithmetic: triton.cdiv costs a JIT-function call from Python)."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (n >= 1), as triton.next_power_of_2."""
    return 1 << (n - 1).bit_length() if n > 1 else 1


class ChannelView(NamedTuple):
    tensor: torch.Tensor
    sb: int
    sc: int
    shw: int


def hw_stride(t: torch.Tensor) -> int | None:
    """The single stride that walks t's H*W positions in order, or None."""
    _, _, h, w = t.shape
    _, _, sh, sw = t.stride()
    if h == 1:
        return sw
    if w == 1:
        return sh
    if sh == w * sw:
        return sw
    return None


def channel_view(t: torch.Tensor) -> ChannelView:
    """t as (tensor, stride_b, stride_c, stride_hw); copies only if H, W don't merge."""
    shw = hw_stride(t)
    if shw is None:
        t = t.contiguous(memory_format=suggested_memory_format(t))
        shw = hw_stride(t)
    sb, sc, _, _ = t.stride()
    return ChannelView(t, sb, sc, shw)


def suggested_memory_format(t: torch.Tensor) -> torch.memory_format:
    """channels_last for channels_last tensors, else contiguous: the format of outputs."""
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


#: Warps for the kernels that stream x-sized [BLOCK_C, BLOCK_HW] tiles of about 2048 elements
#: (8 elements per thread). With 4 warps, ptxas reported 183-245 registers per thread for the
#: reductions on sm_90 (tests/aot_compile.py), i.e. 2 blocks per SM; 8 warps halves that.
STREAM_WARPS = 8


def tile_shape(view: ChannelView, c: int, hw: int, elems: int = 2048) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_HW) powers of two for a [C, HW] tile of about ``elems`` elements,
    longest along the axis that is contiguous in memory (HW for NCHW, C for NHWC)."""
    pc, phw = next_pow2(c), next_pow2(hw)
    if abs(view.sc) == 1 and abs(view.shw) != 1:
        block_c = min(pc, 128)
        block_hw = min(phw, max(elems // block_c, 1))
    else:
        block_hw = min(phw, 1024)
        block_c = min(pc, max(elems // block_hw, 1))
    return block_c, block_hw


def acc_dtype(dtype: torch.dtype):
    """Triton accumulation dtype: float64 for float64 inputs, float32 otherwise."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def acc_torch_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def split_steps(K: int, step: int, max_steps: int) -> tuple[int, int]:
    """(elements per split, splits) of a sum over K taken ``step`` elements at a time, at most
    ``max_steps`` steps per program, the steps spread evenly over the splits."""
    steps = cdiv(K, step)
    per_split = cdiv(steps, cdiv(steps, max_steps)) * step
    return per_split, cdiv(K, per_split)
