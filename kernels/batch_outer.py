"""Weight gradients as sums over the batch, in a fixed order (deterministic):

    out[m, n] = sum_b a[b, m] * f(v[b, n])        f: an activation-table function
    a_sum[m]  = sum_b a[b, m]                     (bias gradients)

a is [B, M], v is [B, N], both contiguous in the accumulation dtype; out is [M, N] and a_sum
is [M], written in their own dtype (the parameter's). Two such products (an MLP's two layers)
run in one launch.
"""
import functools
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from .layout import cdiv, next_pow2

from . import config
from .activations import RELU, activation
from .launch import fast


@triton.jit
def outer_tile(a_ptr, v_ptr, out_ptr, asum_ptr, B, M, N, tile, V_ACT: tl.constexpr, WITH_SUM: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    """Tile ``tile`` (row-major over [cdiv(M, BLOCK_M), cdiv(N, BLOCK_N)]) of out = a^T @ f(v),
    summed over b = 0 .. B-1 in order; the tiles of the first column also write a_sum."""
    n_tiles_n = tl.cdiv(N, BLOCK_N)
    pm = tile // n_tiles_n
    pn = tile % n_tiles_n
    m = pm * BLOCK_M + tl.arange(0, BLOCK_M)
    n = pn * BLOCK_N + tl.arange(0, BLOCK_N)
    mm, nm = m < M, n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    asum = tl.zeros([BLOCK_M], dtype=ACC)
    for b in range(0, B):
        a = tl.load(a_ptr + b * M + m, mask=mm, other=0.0).to(ACC)
        v = tl.load(v_ptr + b * N + n, mask=nm, other=0.0).to(ACC)
        v = activation(v, V_ACT)
        acc += a[:, None] * v[None, :]
        asum += a
    tl.store(out_ptr + m[:, None] * N + n[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=mm[:, None] & nm[None, :])
    if WITH_SUM:
        if pn == 0:
            tl.store(asum_ptr + m, asum.to(asum_ptr.dtype.element_ty), mask=mm)


@triton.jit
def batch_outer_pair_kernel(
    a1_ptr, v1_ptr, out1_ptr, asum1_ptr, M1, N1, tiles1,
    a2_ptr, v2_ptr, out2_ptr, asum2_ptr, M2, N2, B,
    V_ACT1: tl.constexpr, V_ACT2: tl.constexpr, WITH_SUM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr,
):
    """Programs [0, tiles1): tiles of the first product; the rest: tiles of the second."""
    pid = tl.program_id(0)
    if pid < tiles1:
        outer_tile(a1_ptr, v1_ptr, out1_ptr, asum1_ptr, B, M1, N1, pid, V_ACT1, WITH_SUM, BLOCK_M, BLOCK_N, ACC)
    else:
        outer_tile(a2_ptr, v2_ptr, out2_ptr, asum2_ptr, B, M2, N2, pid - tiles1, V_ACT2, WITH_SUM,
                   BLOCK_M, BLOCK_N, ACC)


class Outer(NamedTuple):
    """out [M, N] = a^T @ f(v) for a [B, M], v [B, N] (f: the activation table's ``v_act``, 0 =
    identity), and a_sum [M] = sum_b a when given."""
    a: torch.Tensor
    v: torch.Tensor
    out: torch.Tensor
    a_sum: torch.Tensor | None = None
    v_act: int = 0


def batch_outer_pair(first: Outer, second: Outer | None) -> None:
    """Both products in one launch (a_sum for both or for neither); second None: the first alone."""
    B, m1 = first.a.shape
    n1 = first.v.shape[1]
    m2, n2 = (second.a.shape[1], second.v.shape[1]) if second is not None else (m1, n1)
    block_m, block_n, tiles1, tiles2 = _outer_plan(m1, n1, m2, n2, second is not None)
    second = second or first
    with_sum = first.a_sum is not None
    fast(batch_outer_pair_kernel)[(tiles1 + tiles2,)](
        first.a, first.v, first.out, first.a_sum if with_sum else first.out, m1, n1, tiles1,
        second.a, second.v, second.out, second.a_sum if with_sum else second.out, m2, n2, B,
        V_ACT1=first.v_act, V_ACT2=second.v_act, WITH_SUM=with_sum,
        BLOCK_M=block_m, BLOCK_N=block_n, ACC=tl.float64 if first.a.dtype == torch.float64 else tl.float32,
        num_warps=4,
    )


@functools.lru_cache(maxsize=4096)
def _outer_plan(m1: int, n1: int, m2: int, n2: int, two: bool) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, tiles of the first product, of the second (0 without one)): one tile
    shape for both, at most 64 x 64 (cached: a pure function of the sizes)."""
    block_m = min(next_pow2(max(m1, m2)), 64)
    block_n = min(next_pow2(max(n1, n2)), 64)
    return (block_m, block_n, cdiv(m1, block_m) * cdiv(n1, block_n),
            cdiv(m2, block_m) * cdiv(n2, block_n) if two else 0)


def new_weight_grads(w1, w2, has_bias: bool):
    """Buffers (dw1, db1 [RD] | None, dw2, db2 [C] | None) for the gradients of a channel MLP with
    weights w1 [RD, C(, 1, 1)] and w2 [C, RD(, 1, 1)], in their shapes and dtypes (contiguous, so
    the kernels write them as [RD, C] and [C, RD]); w2 None (one layer): dw2, db2 None."""
    RD = w1.shape[0]
    dw1 = config.new_buffer(w1.shape, w1.dtype, w1.device)
    db1 = config.new_buffer((RD,), w1.dtype, w1.device) if has_bias else None
    if w2 is None:
        return dw1, db1, None, None
    return (dw1, db1, config.new_buffer(w2.shape, w2.dtype, w2.device),
            config.new_buffer((w2.shape[0],), w2.dtype, w2.device) if has_bias else None)


def mlp_weight_grads(dz, hidden, dh, pooled, w1, w2, has_bias: bool, mlp_act: int = RELU):
    """Gradients of the channel MLP  z = W2 act(W1 p + b1) + b2  summed over rows:
    dz [N, C] (at z), hidden [N, RD] (pre-activation), dh [N, RD] (at W1 p + b1), pooled [N, C] (p).

    Returns (dw1, db1 | None, dw2, db2 | None) in the weights' shapes and dtypes. w2 None: the
    one-layer gate z = W1 p + b1 (dh at z; dz and hidden unused; dw2, db2 None).
    """
    dw1, db1, dw2, db2 = new_weight_grads(w1, w2, has_bias)
    first = Outer(dh, pooled, dw1, db1)
    batch_outer_pair(first, Outer(dz, hidden, dw2, db2, v_act=mlp_act) if w2 is not None else None)
    return dw1, db1, dw2, db2
