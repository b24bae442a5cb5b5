"""Softmax across the P splits of PSA, per (sample, channel), on [P * B, C] row blocks
(row p * B + b holds split p of sample b):

    forward:   att[p] = exp(s[p]) / sum_q exp(s[q])
    backward:  ds[p]  = att[p] * (datt[p] - sum_q att[q] * datt[q])

datt comes as pooling partials [S, P * B, C] of sum_hw(dy_p * x_p); ds is written as a
[1, P * B, C] partial buffer so SE's gate backward (se_gate_backward_kernel, S = 1) takes it.
"""
import triton
import triton.language as tl
from .layout import next_pow2

from .channel_pool import reduce_partials
from .nan_math import maximum


@triton.jit
def split_softmax_kernel(s_ptr, att_ptr, B, C, P: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    m = tl.full([BLOCK_C], float("-inf"), dtype=ACC)
    for p in tl.static_range(P):
        m = maximum(m, tl.load(s_ptr + (p * B + b) * C + c, mask=cmask, other=0.0).to(ACC))
    total = tl.zeros([BLOCK_C], dtype=ACC)
    for p in tl.static_range(P):
        total += tl.exp(tl.load(s_ptr + (p * B + b) * C + c, mask=cmask, other=0.0).to(ACC) - m)
    for p in tl.static_range(P):
        e = tl.exp(tl.load(s_ptr + (p * B + b) * C + c, mask=cmask, other=0.0).to(ACC) - m)
        tl.store(att_ptr + (p * B + b) * C + c, e / total, mask=cmask)


@triton.jit
def split_softmax_backward_kernel(datt_ptr, S, att_ptr, ds_ptr, B, C, P: tl.constexpr,
                                  BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    dot = tl.zeros([BLOCK_C], dtype=ACC)
    for p in tl.static_range(P):
        a = tl.load(att_ptr + (p * B + b) * C + c, mask=cmask, other=0.0).to(ACC)
        dot += a * reduce_partials(datt_ptr, S, P * B, C, p * B + b, c, cmask, False, ACC)
    for p in tl.static_range(P):
        a = tl.load(att_ptr + (p * B + b) * C + c, mask=cmask, other=0.0).to(ACC)
        da = reduce_partials(datt_ptr, S, P * B, C, p * B + b, c, cmask, False, ACC)
        tl.store(ds_ptr + (p * B + b) * C + c, a * (da - dot), mask=cmask)


def softmax_block_c(C: int) -> int:
    return min(next_pow2(C), 256)
