"""SE's (and CBAM's) channel MLP gate spread over many programs (for wide layers, where one program per sample
reading all of W1 and W2 would be the slowest kernel of the block):

    forward, from the pooling partials [S, N, C]:
      mlp_hidden_kernel  grid (row tiles, RD tiles,   p = pool (stored by RD tile 0),
                           C splits):                 h = W1 @ p + b1            [N, RD]
      mlp_gate_kernel    grid (row tiles, C tiles):   g = gate(W2 act(h) + b2)   [N, C]
    backward, from the partials of sum_hw(dy * x) (and the max ties):
      mlp_hidden_backward_kernel  grid (row tiles, RD tiles, dz = dgate gate' (stored by RD
                                  C splits):                 tile 0), dh = (W2^T dz) * act'(h)  [N, RD]
      mlp_gate_backward_kernel    grid (row tiles, C tiles): dp = W1^T dh -> mean_coef, max_coef

A one-layer gate (timm's EffectiveSEModule, Ultralytics' ChannelAttention: g = gate(W1 p + b1),
W1 [C, C]; ONE_LAYER) is the hidden kernel writing the gate itself (no mlp_gate_kernel), and in
backward the hidden kernel's dh = dgate gate' with no W2 product.

Each program reads its rows' partials and one slice of a weight matrix: W1 once per row tile,
not once per sample. Products go through tl.dot (fp32 inputs at full precision) when every
dimension is at least 16, else they are [BLOCK_N, BLOCK_R, BLOCK_C] broadcasts summed over one
axis (FMA: few rows, and float64). Rows are samples [n0, n_end) of a chunk. A long sum (over C
in the hidden kernels, over RD in the gate backward: more than MAX_HIDDEN_STEPS / MAX_STEPS steps)
is split over programs along grid axis 2; the last program of a tile adds the shares in split
order (kernels.arrival), so results do not depend on which program finished last.
"""
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from . import config
from .layout import cdiv, next_pow2, split_steps
from .activations import RELU, SIGMOID, activation, activation_grad, gate_grad
from .nan_math import maximum
from .arrival import arrival_counters, last_to_arrive, split_sum
from .launch import fast

#: Steps along RD (BLOCK_R each) one program of mlp_gate_backward_kernel takes at most before the
#: sum over RD is split over programs (a one-layer gate's RD is C: 2048 channels are 128 steps)
MAX_STEPS = 16
#: The same for the hidden kernels' steps along C (BLOCK_C each, forward and backward): their
#: partials are [B, RD] per split, small next to the gate backward's [B, C], so they split finer
MAX_HIDDEN_STEPS = 4

#: Elements of a program's [BLOCK_N, BLOCK_R, BLOCK_C] FMA product (4 warps: 32 per thread).
PRODUCT_ELEMS = 4096


@triton.jit
def row_partials(ptr, S, N, C, n, c, mask, IS_MAX: tl.constexpr, ACC: tl.constexpr):
    """[BLOCK_N, BLOCK_C] sums (or maxima) of the [S, N, C] partials at rows n [BLOCK_N, 1] and
    channels c [1, BLOCK_C]."""
    idx = n * C + c
    if IS_MAX:
        r = tl.full(idx.shape, float("-inf"), dtype=ACC)
    else:
        r = tl.zeros(idx.shape, dtype=ACC)
    for s in range(0, S):
        v = tl.load(ptr + s * N * C + idx, mask=mask, other=0.0).to(ACC)
        if IS_MAX:
            r = maximum(r, v)
        else:
            r += v
    return r


@triton.jit
def program_tile(n0, n_end, W, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr):
    """This program's rows n ([BLOCK_N, 1], samples of [n0, n_end), by grid axis 0) and its slice w
    ([BLOCK_W] of a width-W dimension, by grid axis 1), with their masks."""
    n = (n0 + tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)[:, None]
    w = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    return n, w, n < n_end, w < W


@triton.jit
def times(a, b, USE_DOT: tl.constexpr):
    """a [N, K] @ b [K, M]: tl.dot in full fp32 precision (every dimension >= 16), else FMA."""
    if USE_DOT:
        return tl.dot(a, b, input_precision="ieee")
    return tl.sum(a[:, :, None] * b[None, :, :], axis=1)


@triton.jit
def times_t(a, b, USE_DOT: tl.constexpr):
    """a [N, K] @ b[M, K]^T."""
    if USE_DOT:
        return tl.dot(a, tl.trans(b), input_precision="ieee")
    return tl.sum(a[:, None, :] * b[None, :, :], axis=2)


@triton.jit
def mlp_hidden_kernel(
    sum_ptr, max_ptr, S, N, C, RD, HW, w1_ptr, b1_ptr, pooled_ptr, pool_max_ptr, hidden_ptr, n0, n_end,
    part_ptr, count_ptr, C_PER_SPLIT,
    HAS_BIAS: tl.constexpr, WITH_MAX: tl.constexpr, PAIRED: tl.constexpr, ONE_LAYER: tl.constexpr,
    GATE: tl.constexpr, SPLIT: tl.constexpr, USE_DOT: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr,
):
    """PAIRED (CBAM): the branch (grid axis 2 // splits) 0 gives the mean rows, 1 the max rows of
    pooled and hidden ([2N, .]); else SE's pool, 0.5 (mean + max) WITH_MAX. ONE_LAYER: hidden_ptr is
    the gate [N, C], written as gate(W1 p + b1). SPLIT: grid axis 2 % splits splits the sum over C
    (C_PER_SPLIT each); each program stores its share in the [splits, (1 + PAIRED) N, RD] partials
    and the tile's last program adds the shares in split order (kernels.arrival), then the bias
    and the gate."""
    pr = tl.program_id(1)
    splits = tl.num_programs(2) // (2 if PAIRED else 1)
    branch = tl.program_id(2) // splits
    split = tl.program_id(2) % splits
    n, r, nmask, rmask = program_tile(n0, n_end, RD, BLOCK_N, BLOCK_R)
    acc = tl.zeros([BLOCK_N, BLOCK_R], dtype=ACC)
    c_end = tl.minimum(split * C_PER_SPLIT + C_PER_SPLIT, C)
    for c0 in range(split * C_PER_SPLIT, c_end, BLOCK_C):
        c = (c0 + tl.arange(0, BLOCK_C))[None, :]
        m = nmask & (c < c_end)
        if PAIRED:
            if branch == 0:
                p = row_partials(sum_ptr, S, N, C, n, c, m, False, ACC) / HW
            else:
                p = row_partials(max_ptr, S, N, C, n, c, m, True, ACC)
        else:
            p = row_partials(sum_ptr, S, N, C, n, c, m, False, ACC) / HW
            if WITH_MAX:
                mx = row_partials(max_ptr, S, N, C, n, c, m, True, ACC)
                if pr == 0:
                    tl.store(pool_max_ptr + n * C + c, mx, mask=m)
                p = 0.5 * p + 0.5 * mx
        p = tl.where(m, p, 0.0)
        if pr == 0:
            tl.store(pooled_ptr + (branch * N + n) * C + c, p, mask=m)
        w = tl.load(w1_ptr + r[:, None] * C + c, mask=rmask[:, None] & (c < c_end), other=0.0).to(ACC)  # [R, C]
        acc += times_t(p, w, USE_DOT)
    out = (branch * N + n) * RD + r[None, :]
    m = nmask & rmask[None, :]
    if SPLIT:
        plane = split.to(tl.int64) * 0 + (2 if PAIRED else 1) * N * RD    # one split's [(1 + PAIRED) N, RD]
        tl.store(part_ptr + split * plane + out, acc, mask=m)
        tile = tl.program_id(0) * tl.num_programs(1) + pr
        if last_to_arrive(count_ptr, tile * (2 if PAIRED else 1) + branch, splits):
            acc = split_sum(part_ptr + out, plane, m, splits)
            _store_hidden(acc, b1_ptr, r, rmask, hidden_ptr, out, m, HAS_BIAS, ONE_LAYER, GATE, ACC)
    else:
        _store_hidden(acc, b1_ptr, r, rmask, hidden_ptr, out, m, HAS_BIAS, ONE_LAYER, GATE, ACC)


@triton.jit
def _store_hidden(acc, b1_ptr, r, rmask, hidden_ptr, out, m, HAS_BIAS: tl.constexpr, ONE_LAYER: tl.constexpr,
                  GATE: tl.constexpr, ACC: tl.constexpr):
    """hidden = W1 p (+ b1), or with ONE_LAYER the gate of it."""
    if HAS_BIAS:
        acc += tl.load(b1_ptr + r, mask=rmask, other=0.0).to(ACC)[None, :]
    if ONE_LAYER:
        acc = activation(acc, GATE)
    tl.store(hidden_ptr + out, acc, mask=m)


@triton.jit
def mlp_gate_kernel(
    hidden_ptr, N, C, RD, w2_ptr, b2_ptr, gate_ptr, n0, n_end,
    HAS_BIAS: tl.constexpr, PAIRED: tl.constexpr, MLP_ACT: tl.constexpr, GATE: tl.constexpr,
    USE_DOT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr,
):
    """PAIRED (CBAM): g = gate(W2 (act(h[n]) + act(h[N + n])) + 2 b2)."""
    n, c, nmask, cmask = program_tile(n0, n_end, C, BLOCK_N, BLOCK_C)
    acc = tl.zeros([BLOCK_N, BLOCK_C], dtype=ACC)
    for r0 in range(0, RD, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        h = tl.load(hidden_ptr + n * RD + r[None, :], mask=nmask & (r < RD)[None, :], other=0.0).to(ACC)  # [N, R]
        h = activation(h, MLP_ACT)
        if PAIRED:
            hm = tl.load(hidden_ptr + (N + n) * RD + r[None, :], mask=nmask & (r < RD)[None, :], other=0.0).to(ACC)
            h += activation(hm, MLP_ACT)
        w = tl.load(w2_ptr + c[None, :] * RD + r[:, None], mask=cmask[None, :] & (r < RD)[:, None],
                    other=0.0).to(ACC)                                                                 # [R, C]
        acc += times(h, w, USE_DOT)
    if HAS_BIAS:
        b2 = tl.load(b2_ptr + c, mask=cmask, other=0.0).to(ACC)[None, :]
        if PAIRED:
            b2 = 2.0 * b2
        acc += b2
    tl.store(gate_ptr + n * C + c[None, :], activation(acc, GATE), mask=nmask & cmask[None, :])


@triton.jit
def mlp_hidden_backward_kernel(
    dsum_ptr, S, N, C, RD, w2_ptr, hidden_ptr, gate_ptr, dz_ptr, dh_ptr, n0, n_end,
    part_ptr, count_ptr, C_PER_SPLIT,
    PAIRED: tl.constexpr, ONE_LAYER: tl.constexpr, MLP_ACT: tl.constexpr, GATE: tl.constexpr, SPLIT: tl.constexpr,
    USE_DOT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr,
):
    """PAIRED (CBAM): dh rows n (mean branch) and N + n (max branch) from one W2^T dz. ONE_LAYER
    (RD = C): dh = dgate gate' at this program's channels, nothing else. SPLIT: grid axis 2 splits
    the sum over C (C_PER_SPLIT each; each split stores dz at its channels); each program stores its
    W2^T dz share in the [splits, N, RD] partials and the tile's last program adds the shares in
    split order (kernels.arrival), then act'(h)."""
    pr = tl.program_id(1)
    n, r, nmask, rmask = program_tile(n0, n_end, RD, BLOCK_N, BLOCK_R)
    if ONE_LAYER:
        m = nmask & rmask[None, :]
        dg = row_partials(dsum_ptr, S, N, C, n, r[None, :], m, False, ACC)
        g = tl.load(gate_ptr + n * C + r[None, :], mask=m, other=0.0).to(ACC)
        tl.store(dh_ptr + n * RD + r[None, :], gate_grad(dg, g, GATE), mask=m)
    else:
        split = tl.program_id(2)
        c_end = tl.minimum(split * C_PER_SPLIT + C_PER_SPLIT, C)
        t = tl.zeros([BLOCK_N, BLOCK_R], dtype=ACC)
        for c0 in range(split * C_PER_SPLIT, c_end, BLOCK_C):
            c = (c0 + tl.arange(0, BLOCK_C))[None, :]
            m = nmask & (c < c_end)
            dg = row_partials(dsum_ptr, S, N, C, n, c, m, False, ACC)
            g = tl.load(gate_ptr + n * C + c, mask=m, other=0.0).to(ACC)
            dz = tl.where(m, gate_grad(dg, g, GATE), 0.0)
            if pr == 0:
                tl.store(dz_ptr + n * C + c, dz, mask=m)
            w = tl.load(w2_ptr + c * RD + r[:, None], mask=rmask[:, None] & (c < c_end), other=0.0).to(ACC)  # [R, C]
            t += times_t(dz, w, USE_DOT)
        out = n * RD + r[None, :]
        m = nmask & rmask[None, :]
        if SPLIT:
            plane = split.to(tl.int64) * 0 + N * RD                     # one split's [N, RD]
            tl.store(part_ptr + split * plane + out, t, mask=m)
            splits = tl.num_programs(2)
            if last_to_arrive(count_ptr, tl.program_id(0) * tl.num_programs(1) + pr, splits):
                t = split_sum(part_ptr + out, plane, m, splits)
                _store_dh(t, hidden_ptr, dh_ptr, N, RD, out, m, PAIRED, MLP_ACT, ACC)
        else:
            _store_dh(t, hidden_ptr, dh_ptr, N, RD, out, m, PAIRED, MLP_ACT, ACC)


@triton.jit
def _store_dh(t, hidden_ptr, dh_ptr, N, RD, out, m, PAIRED: tl.constexpr, MLP_ACT: tl.constexpr, ACC: tl.constexpr):
    """dh = (W2^T dz) act'(h) at ``out`` (and, PAIRED, at the max branch's rows, N rows further)."""
    h = tl.load(hidden_ptr + out, mask=m, other=0.0).to(ACC)
    tl.store(dh_ptr + out, activation_grad(t, h, MLP_ACT), mask=m)
    if PAIRED:
        hm = tl.load(hidden_ptr + N * RD + out, mask=m, other=0.0).to(ACC)
        tl.store(dh_ptr + N * RD + out, activation_grad(t, hm, MLP_ACT), mask=m)


@triton.jit
def mlp_gate_backward_kernel(
    cnt_ptr, S, N, C, RD, HW, w1_ptr, dh_ptr, mean_coef_ptr, max_coef_ptr, n0, n_end,
    part_ptr, count_ptr, R_PER_SPLIT,
    WITH_MAX: tl.constexpr, PAIRED: tl.constexpr, SPLIT: tl.constexpr, USE_DOT: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr,
):
    """PAIRED (CBAM): mean_coef = (W1^T dh[n]) / HW, max_coef = (W1^T dh[N + n]) / ties; else SE's
    halves WITH_MAX. SPLIT: grid axis 2 splits the sum over RD (R_PER_SPLIT each); each program
    stores its [BLOCK_N, BLOCK_C] share in the [splits, 1 + PAIRED, N, C] partials and the last
    program of the tile adds the shares in split order (kernels.arrival) and writes the outputs."""
    n, c, nmask, cmask = program_tile(n0, n_end, C, BLOCK_N, BLOCK_C)
    split = tl.program_id(2)
    r_end = tl.minimum(split * R_PER_SPLIT + R_PER_SPLIT, RD)
    dp = tl.zeros([BLOCK_N, BLOCK_C], dtype=ACC)
    dpm = tl.zeros([BLOCK_N, BLOCK_C], dtype=ACC)
    for r0 in range(split * R_PER_SPLIT, r_end, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        rm = nmask & (r < r_end)[None, :]
        dh = tl.load(dh_ptr + n * RD + r[None, :], mask=rm, other=0.0).to(ACC)                      # [N, R]
        w = tl.load(w1_ptr + r[:, None] * C + c[None, :], mask=(r < r_end)[:, None] & cmask[None, :],
                    other=0.0).to(ACC)                                                              # [R, C]
        dp += times(dh, w, USE_DOT)
        if PAIRED:
            dpm += times(tl.load(dh_ptr + (N + n) * RD + r[None, :], mask=rm, other=0.0).to(ACC), w, USE_DOT)
    m = nmask & cmask[None, :]
    out = n * C + c[None, :]
    if SPLIT:
        parts = 2 if PAIRED else 1
        splits = tl.num_programs(2)
        plane = split.to(tl.int64) * 0 + parts * N * C                # [splits, parts, N, C]: one split's
        at = part_ptr + split * plane + out
        tl.store(at, dp, mask=m)
        if PAIRED:
            tl.store(at + N * C, dpm, mask=m)
        if last_to_arrive(count_ptr, tl.program_id(0) * tl.num_programs(1) + tl.program_id(1), splits):
            dp = split_sum(part_ptr + out, plane, m, splits)
            if PAIRED:
                dpm = split_sum(part_ptr + out + N * C, plane, m, splits)
            _store_coefs(dp, dpm, cnt_ptr, S, N, C, HW, n, c, m, out, mean_coef_ptr, max_coef_ptr,
                         WITH_MAX, PAIRED, ACC)
    else:
        _store_coefs(dp, dpm, cnt_ptr, S, N, C, HW, n, c, m, out, mean_coef_ptr, max_coef_ptr, WITH_MAX, PAIRED, ACC)


@triton.jit
def _store_coefs(dp, dpm, cnt_ptr, S, N, C, HW, n, c, m, out, mean_coef_ptr, max_coef_ptr,
                 WITH_MAX: tl.constexpr, PAIRED: tl.constexpr, ACC: tl.constexpr):
    """mean_coef (and max_coef, over the ties) from W1^T dh of the mean (max) rows."""
    if PAIRED:
        ties = tl.where(m, row_partials(cnt_ptr, S, N, C, n, c[None, :], m, False, ACC), 1.0)
        tl.store(max_coef_ptr + out, dpm / ties, mask=m)
    elif WITH_MAX:
        ties = row_partials(cnt_ptr, S, N, C, n, c[None, :], m, False, ACC)
        ties = tl.where(m, ties, 1.0)
        tl.store(max_coef_ptr + out, 0.5 * dp / ties, mask=m)
        dp = 0.5 * dp
    tl.store(mean_coef_ptr + out, dp / HW, mask=m)


# ---- launch plans -------------------------------------------------------------------------

def use_mlp_gate(x, w1) -> bool:
    """These kernels, or the one-program-per-sample gate (se_gate)? Forced by
    ``config.parallel_gate``; else when one program's weights (W1 and W2) take one SM longer than
    a kernel's fixed cost (2 us at the profile's ``sm_bytes_per_s``: 200 KB), the price of the
    extra launch."""
    if config.parallel_gate is not None:
        return config.parallel_gate
    p = config.device_profile(x.device) or config.PROFILES["h100"]
    return 2 * w1.numel() * w1.element_size() > 2e-6 * p.sm_bytes_per_s


class MLPTiles(NamedTuple):
    """Tiles of the four kernels: rows per program, the spread dimension's tile (RD for the
    hidden kernels, C for the gate kernels) and the inner step."""
    block_n: int
    hidden: tuple[int, int]    # (BLOCK_R, BLOCK_C) of mlp_hidden(_backward)_kernel
    gate: tuple[int, int]      # (BLOCK_R, BLOCK_C) of mlp_gate(_backward)_kernel
    use_dot: bool


def mlp_tiles(nb: int, C: int, RD: int, dtype: torch.dtype) -> MLPTiles:
    """Few rows (a chunk of fewer than 16 samples): FMA products, RD in tiles of 4 (more programs)
    and long steps along C (fewer serial loads). Many rows: 16-row tiles through tl.dot (steps of 128
    channels in the hidden kernels, of 16 hidden units in the gate kernels: with 64, bf16 weights
    took 255 registers there and spilled); float64 keeps FMA, 16 x 16 x 16. ``config.mlp_block_n`` overrides the
    row count (the cost model counts a smaller batch with the real case's tiles)."""
    block_n = config.mlp_block_n or min(next_pow2(nb), 16)
    pc, pr = next_pow2(C), next_pow2(RD)
    if block_n < 16:
        br = min(pr, 4)
        hidden = (br, min(pc, max(PRODUCT_ELEMS // (block_n * br), 16)))
        bc = min(pc, 64)
        gate = (min(pr, max(PRODUCT_ELEMS // (block_n * bc), 1)), bc)
        return MLPTiles(block_n, hidden, gate, False)
    use_dot = dtype != torch.float64 and RD >= 16 and C >= 16
    if use_dot:
        return MLPTiles(block_n, (16, min(pc, 128)), (16, min(pc, 64)), True)
    return MLPTiles(block_n, (16, min(pc, 16)), (min(pr, 16), min(pc, 16)), False)


def mlp_gate_forward(parts, B, C, RD, HW, w1, b1, w2, b2, pooled, pool_max, hidden, gate, b0, nb, acc,
                     paired: bool = False, mlp_act: int = RELU, gate_fn: int = SIGMOID) -> None:
    """pooled, pool_max (when partials of the maximum are given), hidden, gate of samples
    [b0, b0 + nb) from their pooling partials; w1 [RD, C], w2 [C, RD] contiguous. ``paired``:
    CBAM's gate (pooled and hidden [2B, .]: mean rows, then max rows; pool_max unused).
    mlp_act, gate_fn: activation-table codes of the hidden activation and the gate. w2 None: the
    one-layer gate, gate = gate_fn(W1 p + b1) (hidden not written)."""
    with_max, has_bias, one_layer = parts.maxs is not None, b1 is not None, w2 is None
    t = mlp_tiles(nb, C, RD, pooled.dtype)
    (hr, hc), (gr, gc) = t.hidden, t.gate
    tiles = (cdiv(nb, t.block_n), cdiv(RD, hr))
    c_per_split, splits = split_steps(C, hc, MAX_HIDDEN_STEPS)
    out = gate if one_layer else hidden
    part = config.new_buffer((splits, *out.shape), out.dtype, out.device) if splits > 1 else out
    counters = arrival_counters(out.device, tiles[0] * tiles[1] * (1 + paired)) if splits > 1 else out
    fast(mlp_hidden_kernel)[(*tiles, (1 + paired) * splits)](
        parts.sums, parts.maxs if with_max else parts.sums, parts.sums.shape[0], B, C, RD, HW,
        w1, b1 if has_bias else w1, pooled, pool_max if with_max and not paired else pooled,
        out, b0, b0 + nb, part, counters, c_per_split,
        HAS_BIAS=has_bias, WITH_MAX=with_max, PAIRED=paired, ONE_LAYER=one_layer,
        GATE=gate_fn if one_layer else SIGMOID,   # read with ONE_LAYER only: one variant for the others
        SPLIT=splits > 1, USE_DOT=t.use_dot, BLOCK_N=t.block_n, BLOCK_R=hr, BLOCK_C=hc, ACC=acc, num_warps=4,
    )
    if one_layer:
        return
    fast(mlp_gate_kernel)[(cdiv(nb, t.block_n), cdiv(C, gc))](
        hidden, B, C, RD, w2, b2 if has_bias else w2, gate, b0, b0 + nb,
        HAS_BIAS=has_bias, PAIRED=paired, MLP_ACT=mlp_act, GATE=gate_fn, USE_DOT=t.use_dot, BLOCK_N=t.block_n,
        BLOCK_R=gr, BLOCK_C=gc, ACC=acc, num_warps=4,
    )


def mlp_gate_backward(parts, B, C, RD, HW, w1, w2, hidden, gate, dz, dh, mean_coef, max_coef, b0, nb, acc,
                      paired: bool = False, mlp_act: int = RELU, gate_fn: int = SIGMOID) -> None:
    """dz, dh, mean_coef (and max_coef, from the ties partials) of samples [b0, b0 + nb) from the
    partials of sum_hw(dy * x). ``paired``: CBAM's gate (dh [2B, RD]; max_coef = dp_max / ties).
    w2 None: the one-layer gate (dh = dgate gate', dz not written)."""
    with_max, one_layer = parts.counts is not None, w2 is None
    t = mlp_tiles(nb, C, RD, dh.dtype)
    (hr, hc), (gr, gc) = t.hidden, t.gate
    tiles = (cdiv(nb, t.block_n), cdiv(RD, hr))
    c_per_split, splits = split_steps(C, hc, MAX_HIDDEN_STEPS) if not one_layer else (C, 1)
    part = config.new_buffer((splits, B, RD), dh.dtype, dh.device) if splits > 1 else dh
    fast(mlp_hidden_backward_kernel)[(*tiles, splits)](
        parts.sums, parts.sums.shape[0], B, C, RD, w1 if one_layer else w2, gate if one_layer else hidden, gate,
        dh if one_layer else dz, dh, b0, b0 + nb,
        part, arrival_counters(dh.device, tiles[0] * tiles[1]) if splits > 1 else dh, c_per_split,
        PAIRED=paired, ONE_LAYER=one_layer, MLP_ACT=RELU if one_layer else mlp_act, GATE=gate_fn, SPLIT=splits > 1,
        USE_DOT=t.use_dot, BLOCK_N=t.block_n, BLOCK_R=hr, BLOCK_C=hc, ACC=acc, num_warps=4,
    )
    tiles = (cdiv(nb, t.block_n), cdiv(C, gc))
    r_per_split, splits = split_steps(RD, gr, MAX_STEPS)
    part = config.new_buffer((splits, 1 + paired, B, C), dh.dtype, dh.device) if splits > 1 else dh
    fast(mlp_gate_backward_kernel)[(*tiles, splits)](
        parts.counts if with_max else parts.sums, parts.sums.shape[0], B, C, RD, HW, w1, dh, mean_coef,
        max_coef if with_max else mean_coef, b0, b0 + nb,
        part, arrival_counters(dh.device, tiles[0] * tiles[1]) if splits > 1 else dh, r_per_split,
        WITH_MAX=with_max, PAIRED=paired, SPLIT=splits > 1, USE_DOT=t.use_dot, BLOCK_N=t.block_n, BLOCK_R=gr,
        BLOCK_C=gc, ACC=acc, num_warps=4,
    )
