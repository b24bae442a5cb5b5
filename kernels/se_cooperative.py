"""SE of a small call in one launch each way, many programs per sample cooperating. Forward:

    1. every program pools its [BLOCK_C, hw_per_split] slab into [S, B, C] partials (pool_tile);
    2. the last split of a channel block to arrive reduces its partials (pooled, pool_max) and
       stores its share of the hidden layer, W1[:, block] @ pooled[block], as [n_cblocks, B, RD];
    3. the last channel block of the sample to arrive adds those shares in block order (+ b1):
       the hidden row, then raises the sample's ready flag;
    4. every program that sees the flag takes (cblock, split) tiles of its sample from a claim
       counter until none is left: the tile's gate, gate(W2[block, :] @ act(h) + b2), and its
       rescale y = act(x * gate (+ shortcut)), x read again from L2 where the pool left it.

So the pipeline's launches (pool + gate, rescale; wide gates: pool, hidden, gate, rescale) are one,
and the MLP is spread over the channel blocks (no program reads all of W1 or W2). A program waits
for the flag at most ``spins`` polls and then leaves: the program that raised it takes whatever
tiles are left, so no tile is lost and nothing waits on a program that is not running (a launch
larger than what the GPU holds at once, or Triton's interpreter, which runs programs one after
another: there the last program does every tile). The launcher picks this only where the whole
grid is resident at once (``cooperative_programs``) and x stays in L2 between the two reads. Every
sum is taken in a fixed order, so results are bitwise the same whoever does a tile.

The backward (``se_cooperative_backward_kernel``) goes the same way: pool sum_hw(dy * x) (and the
ties with the max); per channel block dz and its share of W2^T dz; per sample dh and the flag; per
tile dp = W1[:, block]^T dh and dx. A batch of one writes its weight gradients in the same launch.

Counters (kernels/arrival.py, all left at zero): [B * n_cblocks] channel-block arrivals, then
per sample: arrivals of its blocks, the ready flag, the claim counter, the programs that left.
"""
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from . import config
from .activations import RELU, SIGMOID, activation, activation_grad, gate_grad
from .arrival import arrival_counters, last_to_arrive
from .channel_pool import PoolPlan, new_partials, plan_pool, pool_tile
from .launch import fast
from .nan_math import max_along
from .layout import ChannelView, STREAM_WARPS, acc_dtype, cdiv, next_pow2, tile_shape
from .one_launch import input_grad_rows, pool_grad_coefs, scale_rows
from .se_gate import store_hidden, store_pooled, w1_times, w1t_times, w2_times, w2t_times

#: Programs of 8 warps one SM holds at once whatever their registers (ptxas gives these kernels
#: 32-216 per thread on sm_90; 256 threads x 255 registers still fit one SM's 64 K).
RESIDENT_PER_SM = 1
#: Polls of the ready flag before a program leaves its tiles to the others: a resident grid's
#: wait is its slowest pool plus the two finalizers (a few us); the cap bounds what a program
#: that is not resident (another stream's kernels on the SMs) costs the others, about 30-60 us.
SPINS = 64
#: Polls under Triton's interpreter: programs run one after another, the flag cannot rise while
#: one waits (a poll is still taken, so the waiting path runs in tests).
INTERPRETER_SPINS = 1
#: Elements of a [BLOCK_RD, BLOCK_C] weight tile.
WEIGHT_TILE = 4096


@triton.jit
def sum_rows(ptr, rows, stride, col, cmask, IS_MAX: tl.constexpr, BLOCK_ROWS: tl.constexpr, ACC: tl.constexpr):
    """Sum (max if IS_MAX) over rows 0 .. rows - 1 of ptr[row * stride + col]: [len(col)], one
    [BLOCK_ROWS, len(col)] tile loaded at once from L2 (.cg: other programs stored it) and reduced
    in the tile's fixed order."""
    k = tl.arange(0, BLOCK_ROWS)
    m = (k < rows)[:, None] & cmask[None, :]
    v = tl.load(ptr + k.to(tl.int64)[:, None] * stride + col[None, :], mask=m,
                other=float("-inf") if IS_MAX else 0.0, cache_modifier=".cg").to(ACC)
    if IS_MAX:
        return max_along(v, 0)
    return tl.sum(v, axis=0)


@triton.jit
def cblock_hidden_share(sum_ptr, max_ptr, hpart_ptr, S, B, C, RD, HW, w1_ptr, pooled_ptr, pool_max_ptr,
                        b, cblk, c, cmask, WITH_MAX: tl.constexpr, BLOCK_S: tl.constexpr,
                        BLOCK_RD: tl.constexpr, ACC: tl.constexpr):
    """Channel block cblk of sample b: pooled (and pool_max) from its S partials, stored, and its
    share of the hidden layer W1[:, c] @ pooled[c] stored as row (cblk, b) of [n_cblocks, B, RD]."""
    s = sum_rows(sum_ptr + b * C, S, B * C, c, cmask, False, BLOCK_S, ACC)
    mx = s
    if WITH_MAX:
        mx = sum_rows(max_ptr + b * C, S, B * C, c, cmask, True, BLOCK_S, ACC)
    p = store_pooled(s, mx, HW, b, c, cmask, C, pooled_ptr, pool_max_ptr, WITH_MAX)
    for r0 in range(0, RD, BLOCK_RD):
        r = r0 + tl.arange(0, BLOCK_RD)
        tl.store(hpart_ptr + (cblk * B + b) * RD + r, w1_times(w1_ptr, p, r, c, C, RD, ACC), mask=r < RD)


@triton.jit
def tile_gate(hidden_ptr, w2_ptr, b2_ptr, b, c, C, RD, HAS_BIAS: tl.constexpr, MLP_ACT: tl.constexpr,
              GATE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_RD: tl.constexpr, ACC: tl.constexpr):
    """gate(W2[c, :] @ act(hidden[b]) (+ b2[c])) [BLOCK_C]; the hidden row read from L2 (another
    program stored it)."""
    z = tl.zeros([BLOCK_C], dtype=ACC)
    for r0 in range(0, RD, BLOCK_RD):
        r = r0 + tl.arange(0, BLOCK_RD)
        h = tl.load(hidden_ptr + b * RD + r, mask=r < RD, other=0.0, cache_modifier=".cg").to(ACC)
        z += w2_times(w2_ptr, tl.where(r < RD, activation(h, MLP_ACT), 0.0), r, c, C, RD, ACC)
    if HAS_BIAS:
        z += tl.load(b2_ptr + c, mask=c < C, other=0.0).to(ACC)
    return activation(z, GATE)


@triton.jit
def program_block(count_ptr, b, B, n_cblocks, BLOCK_C: tl.constexpr):
    """This program's channel block, its channels, and the counters of its sample b: arrivals of
    its blocks, ready flag, claims, leavers (after the B * n_cblocks channel-block arrivals)."""
    cblk = tl.program_id(0) % n_cblocks
    return cblk, cblk * BLOCK_C + tl.arange(0, BLOCK_C), count_ptr + B * n_cblocks + 4 * b


@triton.jit
def raise_flag(sample_ptr):
    """The sample's results are stored (by every thread of this program): up goes its flag."""
    tl.debug_barrier()
    tl.atomic_xchg(sample_ptr + 1, 1, sem="release", scope="gpu")


@triton.jit
def wait_for_flag(sample_ptr, spins):
    """The sample's flag (nonzero: up), polled at most ``spins`` times more while it is down."""
    ready = tl.atomic_add(sample_ptr + 1, 0, sem="acquire", scope="gpu")
    polls = 0
    while (ready == 0) & (polls < spins):
        ready = tl.atomic_add(sample_ptr + 1, 0, sem="acquire", scope="gpu")
        polls += 1
    return ready


@triton.jit
def claim_tile(sample_ptr):
    """The next (channel block, split) tile of the sample nobody has taken (>= tiles: none left)."""
    return tl.atomic_add(sample_ptr + 2, 1, sem="relaxed", scope="gpu")


@triton.jit
def tile_span(t, S, C, HW, hw_per_split, BLOCK_C: tl.constexpr):
    """Tile t of a sample (channel block t // S, split t % S): its channels, their mask if it is
    the block's first tile (else all off: the tile that writes the block's [C] rows), and its H*W
    range [hw_start, hw_end)."""
    tc = (t // S) * BLOCK_C + tl.arange(0, BLOCK_C)
    hw_start = (t % S) * hw_per_split
    return tc, tc < tl.where(t % S == 0, C, 0), hw_start, tl.minimum(hw_start + hw_per_split, HW)


@triton.jit
def leave(sample_ptr, programs):
    """Called once by every program of the sample on its way out; the last sets the flag and the
    claim counter back to 0 (its own arrival counter too: last_to_arrive)."""
    if last_to_arrive(sample_ptr, 3, programs):
        tl.store(sample_ptr + 1, 0)
        tl.store(sample_ptr + 2, 0)


@triton.jit(do_not_specialize=["spins"])   # one variant whatever the poll cap
def se_cooperative_kernel(
    x_ptr, sxb, sxc, sxhw, y_ptr, syb, syc, syhw, res_ptr, srb, src, srhw,
    sum_ptr, max_ptr, hpart_ptr, count_ptr,
    C, RD, HW, hw_per_split, n_cblocks, spins,
    w1_ptr, b1_ptr, w2_ptr, b2_ptr, pooled_ptr, pool_max_ptr, hidden_ptr, gate_ptr,
    HAS_BIAS: tl.constexpr, WITH_MAX: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
    MLP_ACT: tl.constexpr, GATE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    BLOCK_RD: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_KRD: tl.constexpr,
    ACC: tl.constexpr,
):
    """Grid (B * n_cblocks, S): program (b * n_cblocks + cblock, split); see the module docstring."""
    S, B = tl.num_programs(1), tl.num_programs(0) // n_cblocks
    b = pool_tile(x_ptr, sxb, sxc, sxhw, x_ptr, sxb, sxc, sxhw, sum_ptr, sum_ptr, max_ptr, sum_ptr,
                  0, 0, B, C, HW, hw_per_split, n_cblocks, False, WITH_MAX, False, BLOCK_C, BLOCK_HW, ACC)
    cblk, c, sample_ptr = program_block(count_ptr, b, B, n_cblocks, BLOCK_C)
    if last_to_arrive(count_ptr, b * n_cblocks + cblk, S):
        cblock_hidden_share(sum_ptr, max_ptr, hpart_ptr, S, B, C, RD, HW, w1_ptr, pooled_ptr, pool_max_ptr,
                            b, cblk, c, c < C, WITH_MAX, BLOCK_S, BLOCK_RD, ACC)
        if last_to_arrive(sample_ptr, 0, n_cblocks):
            for r0 in range(0, RD, BLOCK_KRD):
                r = r0 + tl.arange(0, BLOCK_KRD)
                h = sum_rows(hpart_ptr + b * RD, n_cblocks, B * RD, r, r < RD, False, BLOCK_K, ACC)
                store_hidden(h, b1_ptr, hidden_ptr, b, r, RD, HAS_BIAS, MLP_ACT, ACC)
            raise_flag(sample_ptr)
    if wait_for_flag(sample_ptr, spins) != 0:
        x_rows, y_rows, r_rows = x_ptr + b * sxb, y_ptr + b * syb, res_ptr + b * srb
        t = claim_tile(sample_ptr)
        while t < n_cblocks * S:
            tc, first, hw_start, hw_end = tile_span(t, S, C, HW, hw_per_split, BLOCK_C)
            g = tile_gate(hidden_ptr, w2_ptr, b2_ptr, b, tc, C, RD, HAS_BIAS, MLP_ACT, GATE, BLOCK_C, BLOCK_RD, ACC)
            tl.store(gate_ptr + b * C + tc, g, mask=first)
            scale_rows(x_rows, sxc, sxhw, y_rows, syc, syhw, r_rows, src, srhw, g, tc, tc < C,
                       hw_start, hw_end, HAS_RES, ACT, BLOCK_HW, ACC)
            t = claim_tile(sample_ptr)
    leave(sample_ptr, n_cblocks * S)


@triton.jit(do_not_specialize=["spins"])
def se_cooperative_backward_kernel(
    dy_ptr, sdb, sdc, sdhw, x_ptr, sxb, sxc, sxhw, dx_ptr, sgb, sgc, sghw,
    sum_ptr, cnt_ptr, tpart_ptr, ties_ptr, count_ptr,
    C, RD, HW, hw_per_split, n_cblocks, spins,
    w1_ptr, w2_ptr, hidden_ptr, gate_ptr, pool_max_ptr, pooled_ptr, dz_ptr, dh_ptr,
    dw1_ptr, db1_ptr, dw2_ptr, db2_ptr,
    WITH_MAX: tl.constexpr, WEIGHT_GRADS: tl.constexpr, HAS_BIAS: tl.constexpr, MLP_ACT: tl.constexpr,
    GATE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_RD: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_KRD: tl.constexpr, ACC: tl.constexpr,
):
    """The forward's backward, the same way: programs pool sum_hw(dy * x) (and ties with the max);
    the last split of a channel block: dz = dgate * gate' of the block (stored; ties stored) and
    its share of W2^T dz; the last block of the sample: dh = (sum of shares) * act'(h), then the
    flag; tiles: dp = W1[:, block]^T dh and dx = dy * gate + dp / HW (+ the max pool's share at
    the ties). WEIGHT_GRADS (a batch of one: nothing to sum over samples): dW2 rows and db2 by
    the blocks, db1 by the sample, dW1 columns by each block's first tile, in the weights' dtype."""
    S, B = tl.num_programs(1), tl.num_programs(0) // n_cblocks
    b = pool_tile(x_ptr, sxb, sxc, sxhw, dy_ptr, sdb, sdc, sdhw, pool_max_ptr, sum_ptr, sum_ptr, cnt_ptr,
                  0, 0, B, C, HW, hw_per_split, n_cblocks, True, False, WITH_MAX, BLOCK_C, BLOCK_HW, ACC)
    cblk, c, sample_ptr = program_block(count_ptr, b, B, n_cblocks, BLOCK_C)
    cmask = c < C
    if last_to_arrive(count_ptr, b * n_cblocks + cblk, S):
        g = tl.load(gate_ptr + b * C + c, mask=cmask, other=0.0).to(ACC)
        dz = tl.where(cmask, gate_grad(sum_rows(sum_ptr + b * C, S, B * C, c, cmask, False, BLOCK_S, ACC), g, GATE),
                      0.0)
        tl.store(dz_ptr + b * C + c, dz, mask=cmask)
        if WITH_MAX:
            tl.store(ties_ptr + b * C + c, sum_rows(cnt_ptr + b * C, S, B * C, c, cmask, False, BLOCK_S, ACC),
                     mask=cmask)
        if WEIGHT_GRADS and HAS_BIAS:
            tl.store(db2_ptr + c, dz.to(db2_ptr.dtype.element_ty), mask=cmask)
        for r0 in range(0, RD, BLOCK_RD):
            r = r0 + tl.arange(0, BLOCK_RD)
            rmask = r < RD
            tl.store(tpart_ptr + (cblk * B + b) * RD + r, w2t_times(w2_ptr, dz, r, c, C, RD, ACC), mask=rmask)
            if WEIGHT_GRADS:
                h = tl.load(hidden_ptr + b * RD + r, mask=rmask, other=0.0).to(ACC)
                dw2 = dz[None, :] * tl.where(rmask, activation(h, MLP_ACT), 0.0)[:, None]
                tl.store(dw2_ptr + c[None, :] * RD + r[:, None], dw2.to(dw2_ptr.dtype.element_ty),
                         mask=rmask[:, None] & cmask[None, :])
        if last_to_arrive(sample_ptr, 0, n_cblocks):
            for r0 in range(0, RD, BLOCK_KRD):
                r = r0 + tl.arange(0, BLOCK_KRD)
                rmask = r < RD
                t = sum_rows(tpart_ptr + b * RD, n_cblocks, B * RD, r, rmask, False, BLOCK_K, ACC)
                h = tl.load(hidden_ptr + b * RD + r, mask=rmask, other=0.0).to(ACC)
                dh = tl.where(rmask, activation_grad(t, h, MLP_ACT), 0.0)
                tl.store(dh_ptr + b * RD + r, dh, mask=rmask)
                if WEIGHT_GRADS and HAS_BIAS:
                    tl.store(db1_ptr + r, dh.to(db1_ptr.dtype.element_ty), mask=rmask)
            raise_flag(sample_ptr)
    if wait_for_flag(sample_ptr, spins) != 0:
        dy_rows, x_rows, dx_rows = dy_ptr + b * sdb, x_ptr + b * sxb, dx_ptr + b * sgb
        t = claim_tile(sample_ptr)
        while t < n_cblocks * S:
            tc, first, hw_start, hw_end = tile_span(t, S, C, HW, hw_per_split, BLOCK_C)   # first: dW1 columns
            tcm = tc < C
            if WEIGHT_GRADS:
                p = tl.load(pooled_ptr + b * C + tc, mask=tcm, other=0.0).to(ACC)
            dp = tl.zeros([BLOCK_C], dtype=ACC)
            for r0 in range(0, RD, BLOCK_RD):
                r = r0 + tl.arange(0, BLOCK_RD)
                rmask = r < RD
                dh = tl.load(dh_ptr + b * RD + r, mask=rmask, other=0.0, cache_modifier=".cg").to(ACC)
                dp += w1t_times(w1_ptr, dh, r, tc, C, RD, ACC)
                if WEIGHT_GRADS:
                    tl.store(dw1_ptr + r[:, None] * C + tc[None, :], (dh[:, None] * p[None, :]).to(dw1_ptr.dtype.element_ty),
                             mask=rmask[:, None] & first[None, :])
            g, k, mx, mk = pool_grad_coefs(dp, gate_ptr, pool_max_ptr, ties_ptr, b, tc, tcm, C, HW, WITH_MAX, ACC)
            input_grad_rows(dy_rows, sdc, sdhw, x_rows, sxc, sxhw, dx_rows, sgc, sghw, g, k, mx, mk, tc, tcm,
                            hw_start, hw_end, WITH_MAX, BLOCK_HW, ACC)
            t = claim_tile(sample_ptr)
    leave(sample_ptr, n_cblocks * S)


def cooperative_programs(device: torch.device) -> int:
    """Programs a cooperative launch may have: what the GPU holds at once (``config.target_programs``
    when set: tests)."""
    if config.target_programs is not None:
        return config.target_programs
    p = config.device_profile(device)
    return RESIDENT_PER_SM * p.sms if p is not None else 4


def se_cooperative_plan(x: ChannelView, C: int, HW: int) -> PoolPlan:
    """The pool plan of a cooperative launch: the whole batch in ``cooperative_programs`` programs."""
    return plan_pool(x, x.tensor.shape[0], C, HW, target=cooperative_programs(x.tensor.device))


class CooperativeLaunch(NamedTuple):
    plan: PoolPlan
    counters: torch.Tensor   # B * (n_cblocks + 4) at zero
    shares: torch.Tensor     # [n_cblocks, B, RD]: the channel blocks' shares of an RD-vector
    spins: int
    tiles: dict              # BLOCK_* constexprs: slabs, weight tiles, partial and share rows


def cooperative_launch(x: ChannelView, RD: int, acc: torch.dtype) -> CooperativeLaunch:
    """Plan, counters, share buffer and tile sizes of a cooperative launch over x (SE forward or
    backward; the vectors in ``acc``)."""
    B, C, H, W = x.tensor.shape
    plan = se_cooperative_plan(x, C, H * W)
    block_k = next_pow2(plan.n_cblocks)
    tiles = dict(BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw,
                 BLOCK_RD=min(next_pow2(RD), max(WEIGHT_TILE // plan.block_c, 1)), BLOCK_S=next_pow2(plan.n_splits),
                 BLOCK_K=block_k, BLOCK_KRD=min(next_pow2(RD), max(WEIGHT_TILE // block_k, 1)))
    return CooperativeLaunch(plan, arrival_counters(x.tensor.device, B * (plan.n_cblocks + 4)),
                             config.new_buffer((plan.n_cblocks, B, RD), acc, x.tensor.device),
                             SPINS if x.tensor.is_cuda else INTERPRETER_SPINS, tiles)


def se_cooperative(x: ChannelView, y: ChannelView, shortcut: ChannelView | None, act: int,
                   w1, b1, w2, b2, pooled, pool_max, hidden, gate, mlp_act: int = RELU,
                   gate_fn: int = SIGMOID) -> None:
    """SE forward of every sample in one cooperative launch (w1 [RD, C], w2 [C, RD] contiguous,
    b1 / b2 None without bias; mlp_act, gate_fn: activation-table codes); writes y and the
    [B, C] / [B, RD] vectors se_forward returns."""
    B, C, H, W = x.tensor.shape
    RD = w1.shape[0]
    co = cooperative_launch(x, RD, pooled.dtype)
    with_max = pool_max.numel() > 0
    parts = new_partials(co.plan, B, C, x.tensor, with_max)
    r = shortcut if shortcut is not None else x
    fast(se_cooperative_kernel)[(B * co.plan.n_cblocks, co.plan.n_splits)](
        x.tensor, x.sb, x.sc, x.shw, y.tensor, y.sb, y.sc, y.shw, r.tensor, r.sb, r.sc, r.shw,
        parts.sums, parts.maxs if with_max else parts.sums, co.shares, co.counters,
        C, RD, H * W, co.plan.hw_per_split, co.plan.n_cblocks, co.spins,
        w1, b1 if b1 is not None else w1, w2, b2 if b2 is not None else w2,
        pooled, pool_max if with_max else pooled, hidden, gate,
        HAS_BIAS=b1 is not None, WITH_MAX=with_max, HAS_RES=shortcut is not None, ACT=act,
        MLP_ACT=mlp_act, GATE=gate_fn, **co.tiles, ACC=acc_dtype(x.tensor.dtype), num_warps=STREAM_WARPS,
    )


def se_cooperative_backward(dy: ChannelView, x: ChannelView, dx: ChannelView, w1, w2, hidden, gate, pool_max,
                            dz, dh, pooled=None, weight_grads=None, mlp_act: int = RELU, gate_fn: int = SIGMOID) -> None:
    """SE backward of every sample in one cooperative launch: dx, and dz [B, C] / dh [B, RD] for the
    weight gradients (w1 [RD, C], w2 [C, RD] contiguous). For B = 1, ``weight_grads`` (dw1 [RD, C],
    db1 [RD] | None, dw2 [C, RD], db2 [C] | None) are written too (from ``pooled``)."""
    B, C, H, W = x.tensor.shape
    RD = w1.shape[0]
    co = cooperative_launch(x, RD, dz.dtype)
    with_max = pool_max.numel() > 0
    parts = new_partials(co.plan, B, C, x.tensor, False, with_counts=with_max)
    ties = config.new_buffer((B, C), dz.dtype, dz.device) if with_max else dz
    dw1, db1, dw2, db2 = weight_grads if weight_grads is not None else (dz,) * 4
    has_bias = db1 is not None
    fast(se_cooperative_backward_kernel)[(B * co.plan.n_cblocks, co.plan.n_splits)](
        dy.tensor, dy.sb, dy.sc, dy.shw, x.tensor, x.sb, x.sc, x.shw, dx.tensor, dx.sb, dx.sc, dx.shw,
        parts.sums, parts.counts if with_max else parts.sums, co.shares, ties, co.counters,
        C, RD, H * W, co.plan.hw_per_split, co.plan.n_cblocks, co.spins,
        w1, w2, hidden, gate, pool_max if with_max else gate, pooled if pooled is not None else gate, dz, dh,
        dw1, db1 if has_bias else dw1, dw2, db2 if has_bias else dw2,
        WITH_MAX=with_max, WEIGHT_GRADS=weight_grads is not None, HAS_BIAS=has_bias, MLP_ACT=mlp_act,
        GATE=gate_fn, **co.tiles, ACC=acc_dtype(x.tensor.dtype), num_warps=STREAM_WARPS,
    )


def se_fits_cooperative(x: ChannelView, backward: bool = False) -> bool:
    """The cooperative launch, or the pipeline? Forced by ``config.cooperative`` (the backward by
    ``config.cooperative_backward`` where set); else when the
    whole batch pools in one resident wave with whole channel blocks per program at least
    (B * channel blocks <= ``cooperative_programs``) and x stays in L2 between its two reads
    (at most the profile's chunk share of L2): then it does the pipeline's work in one launch.
    A forced ``config.one_launch`` (``one_launch_backward``: one program per sample, or the
    chunked pipeline) rules it out."""
    t = x.tensor
    B, C, H, W = t.shape
    forced = config.cooperative_backward if backward and config.cooperative_backward is not None else \
        config.cooperative
    if B == 0 or forced is not None:
        return B > 0 and bool(forced)
    one_launch = config.one_launch_backward if backward and config.one_launch_backward is not None else \
        config.one_launch
    if one_launch is not None:   # one program per sample, or the chunked pipeline, asked for
        return False
    p = config.device_profile(t.device) or config.PROFILES["h100"]
    block_c, _ = tile_shape(x, C, H * W)
    return B * cdiv(C, block_c) <= cooperative_programs(t.device) and t.numel() * t.element_size() <= p.chunk_bytes
