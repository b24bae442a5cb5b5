"""Weight gradients as sums over the batch, in a fixed order (deterministic):

    out[m, n] = sum_b a[b, m] * f(v[b, n])        f: an activation-table function
    a_sum[m]  = sum_b a[b, m]                     (bias gradients)

a is [B, M], v is [B, N], both contiguous in the accumulation dtype; out is [M, N] and a_sum
is [M], written in their own dtype (the parameter's). Two such products (an MLP's two layers)
run in one launch. Each program takes one [BLOCK_M, BLOCK_N] tile over a run of samples, BLOCK_B
at a time; a long batch is split over programs whose shares the last one adds in split order.
"""
import functools
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from . import config
from .activations import RELU, activation
from .arrival import arrival_counters, last_to_arrive, split_sum
from .launch import fast
from .layout import cdiv, next_pow2, split_steps


@triton.jit
def outer_tile(a_ptr, v_ptr, out_ptr, asum_ptr, part_ptr, count_ptr, B, M, N, tile, slot, B_PER_SPLIT,
               V_ACT: tl.constexpr, WITH_SUM: tl.constexpr, SPLIT: tl.constexpr,
               BLOCK_B: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    """Tile ``tile`` (row-major over [cdiv(M, BLOCK_M), cdiv(N, BLOCK_N)]) of out = a^T @ f(v) over
    this program's samples (grid axis 1: B_PER_SPLIT of them), BLOCK_B rows per step (one
    [BLOCK_B, BLOCK_M, BLOCK_N] FMA product); the tiles of the first column also write a_sum.
    SPLIT: each split stores its share at ``slot`` of the [splits, slots, BLOCK_M * (BLOCK_N + 1)]
    partials and the tile's last split to arrive adds them in split order (kernels.arrival)."""
    n_tiles_n = tl.cdiv(N, BLOCK_N)
    pm = tile // n_tiles_n
    pn = tile % n_tiles_n
    ml = tl.arange(0, BLOCK_M)
    nl = tl.arange(0, BLOCK_N)
    m = pm * BLOCK_M + ml
    n = pn * BLOCK_N + nl
    mm, nm = m < M, n < N
    split = tl.program_id(1)
    b_end = tl.minimum(split * B_PER_SPLIT + B_PER_SPLIT, B)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    asum = tl.zeros([BLOCK_M], dtype=ACC)
    for b0 in range(split * B_PER_SPLIT, b_end, BLOCK_B):
        b = (b0 + tl.arange(0, BLOCK_B))[:, None]
        a = tl.load(a_ptr + b * M + m[None, :], mask=(b < b_end) & mm[None, :], other=0.0).to(ACC)    # [B, M]
        v = tl.load(v_ptr + b * N + n[None, :], mask=(b < b_end) & nm[None, :], other=0.0).to(ACC)    # [B, N]
        v = activation(v, V_ACT)   # f(0) where masked: multiplied by a's zeros
        acc += tl.sum(a[:, :, None] * v[:, None, :], axis=0)
        asum += tl.sum(a, axis=0)
    if SPLIT:
        per: tl.constexpr = BLOCK_M * (BLOCK_N + 1)
        plane = split.to(tl.int64) * 0 + tl.num_programs(0) * per     # one split's partials
        at = part_ptr + slot * per
        tile_idx = ml[:, None] * BLOCK_N + nl[None, :]
        tl.store(at + split * plane + tile_idx, acc)
        tl.store(at + split * plane + BLOCK_M * BLOCK_N + ml, asum)
        splits = tl.num_programs(1)
        if last_to_arrive(count_ptr, slot, splits):
            acc = split_sum(at + tile_idx, plane, mm[:, None] & nm[None, :], splits)
            asum = split_sum(at + BLOCK_M * BLOCK_N + ml, plane, mm, splits)
            _store_tile(acc, asum, out_ptr, asum_ptr, m, n, mm, nm, N, pn, WITH_SUM)
    else:
        _store_tile(acc, asum, out_ptr, asum_ptr, m, n, mm, nm, N, pn, WITH_SUM)


@triton.jit
def _store_tile(acc, asum, out_ptr, asum_ptr, m, n, mm, nm, N, pn, WITH_SUM: tl.constexpr):
    """The tile of out (and, first column of tiles, a_sum) in the outputs' dtypes."""
    tl.store(out_ptr + m[:, None] * N + n[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=mm[:, None] & nm[None, :])
    if WITH_SUM:
        if pn == 0:
            tl.store(asum_ptr + m, asum.to(asum_ptr.dtype.element_ty), mask=mm)


@triton.jit
def batch_outer_pair_kernel(
    a1_ptr, v1_ptr, out1_ptr, asum1_ptr, M1, N1, tiles1,
    a2_ptr, v2_ptr, out2_ptr, asum2_ptr, M2, N2, B, part_ptr, count_ptr, B_PER_SPLIT,
    V_ACT1: tl.constexpr, V_ACT2: tl.constexpr, WITH_SUM: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ACC: tl.constexpr,
):
    """Grid (tiles, batch splits): programs [0, tiles1) along axis 0 take tiles of the first
    product; the rest tiles of the second."""
    pid = tl.program_id(0)
    if pid < tiles1:
        outer_tile(a1_ptr, v1_ptr, out1_ptr, asum1_ptr, part_ptr, count_ptr, B, M1, N1, pid, pid, B_PER_SPLIT,
                   V_ACT1, WITH_SUM, SPLIT, BLOCK_B, BLOCK_M, BLOCK_N, ACC)
    else:
        outer_tile(a2_ptr, v2_ptr, out2_ptr, asum2_ptr, part_ptr, count_ptr, B, M2, N2, pid - tiles1, pid,
                   B_PER_SPLIT, V_ACT2, WITH_SUM, SPLIT, BLOCK_B, BLOCK_M, BLOCK_N, ACC)


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
    fp64 = first.a.dtype == torch.float64
    p = _outer_plan(B, m1, n1, m2, n2, second is not None)
    second = second or first
    with_sum = first.a_sum is not None
    tiles = p.tiles1 + p.tiles2
    dev = first.a.device
    part = (config.new_buffer((p.splits, tiles, p.block_m * (p.block_n + 1)), first.a.dtype, dev)
            if p.splits > 1 else first.out)
    fast(batch_outer_pair_kernel)[(tiles, p.splits)](
        first.a, first.v, first.out, first.a_sum if with_sum else first.out, m1, n1, p.tiles1,
        second.a, second.v, second.out, second.a_sum if with_sum else second.out, m2, n2, B,
        part, arrival_counters(dev, tiles) if p.splits > 1 else first.out, p.b_per_split,
        V_ACT1=first.v_act, V_ACT2=second.v_act, WITH_SUM=with_sum, SPLIT=p.splits > 1,
        BLOCK_B=p.block_b, BLOCK_M=p.block_m, BLOCK_N=p.block_n, ACC=tl.float64 if fp64 else tl.float32,
        num_warps=4,
    )


#: Sides of an output tile at most, and the elements of a program's [BLOCK_B, BLOCK_M, BLOCK_N]
#: FMA product (4 warps: 32 per thread; 16 x 16 tiles take 16 samples a step). fp32 tl.dot at full
#: precision (64 x 64 tiles, 32 samples a step) took 255 registers on sm_90 and spilled 1.3-2 KB.
TILE = 16
PRODUCT_ELEMS = 4096
#: Steps one program takes at most before the batch is split over programs.
MAX_STEPS = 4


class OuterPlan(NamedTuple):
    block_b: int
    block_m: int
    block_n: int
    tiles1: int
    tiles2: int
    b_per_split: int
    splits: int


@functools.lru_cache(maxsize=4096)
def _outer_plan(B: int, m1: int, n1: int, m2: int, n2: int, two: bool) -> OuterPlan:
    """One tile shape for both products, at most TILE x TILE; BLOCK_B samples per step, at most
    MAX_STEPS steps per program, the batch split over programs beyond (cached: a pure function of
    the sizes)."""
    block_m = min(next_pow2(max(m1, m2)), TILE)
    block_n = min(next_pow2(max(n1, n2)), TILE)
    block_b = min(next_pow2(B), max(1, PRODUCT_ELEMS // (block_m * block_n)))
    b_per_split, splits = split_steps(B, block_b, MAX_STEPS)
    return OuterPlan(block_b, block_m, block_n, cdiv(m1, block_m) * cdiv(n1, block_n),
                     cdiv(m2, block_m) * cdiv(n2, block_n) if two else 0, b_per_split, splits)


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
