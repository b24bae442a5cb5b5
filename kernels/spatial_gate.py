"""CBAM's spatial gate on the [B, 2, H, W] maps (mean_c and max_c of x * ca), in Triton:

    z  = conv_kxk(maps) (+ bias)                                  [B, HW]
    u  = BatchNorm(z)   (NORM: 0 none, 1 running statistics, 2 batch statistics)
    sa = sigmoid(u)

The B * H * W pixels are cut into blocks; the k x k taps read the maps (1/C of x's size, from
L1/L2). Batch statistics and weight gradients are sums over all blocks: each block writes its
partials (a row of ``partials``), and whoever needs the total adds the rows in the same fixed
order (results are bitwise the same run to run; no atomics).

Many programs (one block each):
  forward   spatial_gate_forward_kernel   sa (NORM 0/1); z and (count, mean, M2) rows (NORM 2)
            spatial_norm_kernel           NORM 2: batch mean / var from the rows -> sa
  backward  spatial_backward_stats_kernel NORM 2: du, zhat and rows of sum(du), sum(du * zhat)
            spatial_backward_kernel       dz, the transposed conv -> k_mean = dmean / C and
                                          k_max = dmax / ties; rows of the conv / BN gradients
            partial_sums_kernel           the rows' fixed-order sum -> parameter gradients
One program (small maps, ``one_program``): spatial_gate_forward_small_kernel and
spatial_gate_backward_small_kernel do the same blocks in turn, with a barrier wherever a step
reads what other threads wrote: one launch per pass.
"""
import torch
import triton
import triton.language as tl

from . import config
from .layout import acc_dtype, cdiv, next_pow2
from .activations import sigmoid
from .sk_gate import _inv_std
from .launch import fast

#: rows of partials added per step when a program reduces them.
BLOCK_ROWS = 256


@triton.jit
def _pixels(pid, HW, W, N, BLOCK: tl.constexpr):
    """(b, p, h, w, mask) of block ``pid`` of the N = B * HW pixels taken in order (a block may
    span samples): sample, pixel in the sample, its row and column."""
    i = pid * BLOCK + tl.arange(0, BLOCK)
    b = i // HW
    p = i % HW
    return b, p, p // W, p % W, i < N


@triton.jit
def _window(s, h, w, H, W, K: tl.constexpr):
    """Tap s = (i, j) of the k x k window at (h + i - k//2, w + j - k//2): its pixel index, or the
    window's own pixel where it falls outside the map (always an address inside the sample: the
    loads are masked by the block's pixel mask only, so a block loads the same number of values
    whatever the map's size, and the padding is applied by tl.where), and whether it is inside.
    Any broadcastable shapes: [BLOCK, 1] pixels with [1, TAPS] taps give the block's windows."""
    hh = h + s // K - K // 2
    ww = w + s % K - K // 2
    inside = (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
    return tl.where(inside, hh * W + ww, h * W + w), inside


@triton.jit
def _map_taps(maps_b, t, h, w, H, W, pm, wm_off, wx_off, K: tl.constexpr, ACC: tl.constexpr):
    """[BLOCK, TAPS] values of the [2, H, W] maps at ``maps_b`` ([BLOCK, 1] pointers: each pixel's
    sample) under taps t ([TAPS] indices into the conv's 2 k^2 taps: the mean map's k^2, then the max
    map's), zero outside the map and past the last tap; and each tap's index in the [1, 2, k, k]
    weight (the mean map's taps start at wm_off, the max map's at wx_off). One gather load."""
    KK: tl.constexpr = K * K
    HW = H * W
    q, inside = _window((t % KK)[None, :], h[:, None], w[:, None], H, W, K)
    is_tap = t < 2 * KK
    v = tl.load(maps_b + (t // KK)[None, :] * HW + q, mask=pm[:, None] & is_tap[None, :], other=0.0).to(ACC)
    return tl.where(inside, v, 0.0), tl.where(t < KK, wm_off, wx_off) + t % KK


@triton.jit
def _conv(maps_ptr, b, h, w, H, W, pm, w_ptr, wm_off, wx_off, bias_ptr,
          HAS_BIAS: tl.constexpr, K: tl.constexpr, BLOCK: tl.constexpr, TAPS: tl.constexpr, ACC: tl.constexpr):
    """z at the block's pixels: sum over taps of w_mean * mean map + w_max * max map (zero padding),
    the 2 k^2 taps TAPS at a time: one [BLOCK, TAPS] gather (independent loads, issued together)
    and one weight load per step."""
    KK: tl.constexpr = K * K
    maps_b = (maps_ptr + b * 2 * (H * W))[:, None]
    z = tl.zeros([BLOCK], dtype=ACC)
    for t0 in range(0, 2 * KK, TAPS):
        t = t0 + tl.arange(0, TAPS)
        v, widx = _map_taps(maps_b, t, h, w, H, W, pm, wm_off, wx_off, K, ACC)
        wt = tl.load(w_ptr + widx, mask=t < 2 * KK, other=0.0).to(ACC)
        z += tl.sum(v * wt[None, :], axis=1)
    if HAS_BIAS:
        z += tl.load(bias_ptr).to(ACC)
    return z


@triton.jit
def _affine(gamma_ptr, beta_ptr, HAS_AFFINE: tl.constexpr, ACC: tl.constexpr):
    if HAS_AFFINE:
        return tl.load(gamma_ptr).to(ACC), tl.load(beta_ptr).to(ACC)
    return tl.full([], 1.0, ACC), tl.full([], 0.0, ACC)


@triton.jit
def _normalize(z, mean, var, eps, gamma, beta):
    """BatchNorm of z with the given statistics and affine parameters. eps is a constexpr in the
    kernels: an exact float64 constant (the JIT passes a float argument as fp32)."""
    return (z - mean) * _inv_std(var, eps) * gamma + beta


@triton.jit
def _row_sum(part_ptr, col, P, NCOL, BLOCK_R: tl.constexpr, ACC: tl.constexpr):
    """Sum of column ``col`` over the P rows, in a fixed order."""
    acc = tl.zeros([BLOCK_R], dtype=ACC)
    for r0 in range(0, P, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        acc += tl.load(part_ptr + r * NCOL + col, mask=r < P, other=0.0)
    return tl.sum(acc, axis=0)


@triton.jit
def _forward_block(pid, maps_ptr, w_ptr, bias_ptr, gamma_ptr, beta_ptr, rmean_ptr, rvar_ptr, out_ptr, part_ptr,
                   H, W, N, wm_off, wx_off, eps, NORM: tl.constexpr, HAS_BIAS: tl.constexpr,
                   HAS_AFFINE: tl.constexpr, K: tl.constexpr, BLOCK: tl.constexpr, TAPS: tl.constexpr,
                   ACC: tl.constexpr):
    """Block ``pid``: out = sa (NORM 0, 1), or z and the block's (count, mean, M2) row (NORM 2)."""
    HW = H * W
    b, p, h, w, pm = _pixels(pid, HW, W, N, BLOCK)
    z = _conv(maps_ptr, b, h, w, H, W, pm, w_ptr, wm_off, wx_off, bias_ptr, HAS_BIAS, K, BLOCK, TAPS, ACC)
    if NORM == 2:
        tl.store(out_ptr + b * HW + p, z, mask=pm)
        n = tl.sum(pm.to(ACC), axis=0)
        mu = tl.sum(tl.where(pm, z, 0.0), axis=0) / n
        d = tl.where(pm, z - mu, 0.0)
        tl.store(part_ptr + pid * 3, n)
        tl.store(part_ptr + pid * 3 + 1, mu)
        tl.store(part_ptr + pid * 3 + 2, tl.sum(d * d, axis=0))
    else:
        if NORM == 1:
            gamma, beta = _affine(gamma_ptr, beta_ptr, HAS_AFFINE, ACC)
            z = _normalize(z, tl.load(rmean_ptr).to(ACC), tl.load(rvar_ptr).to(ACC), eps, gamma, beta)
        tl.store(out_ptr + b * HW + p, sigmoid(z), mask=pm)


@triton.jit
def _store_stats(mean_ptr, var_ptr, rmean_ptr, rvar_ptr, NORM: tl.constexpr, ACC: tl.constexpr):
    """What BN normalised with, NORM 0 / 1: zeros / the running statistics."""
    if NORM == 1:
        tl.store(mean_ptr, tl.load(rmean_ptr).to(ACC))
        tl.store(var_ptr, tl.load(rvar_ptr).to(ACC))
    else:
        tl.store(mean_ptr, tl.full([], 0.0, ACC))
        tl.store(var_ptr, tl.full([], 0.0, ACC))


@triton.jit
def _batch_stats(part_ptr, P, BLOCK_R: tl.constexpr, ACC: tl.constexpr):
    """Batch mean and biased variance merged from P (count, mean, M2) rows in a fixed order
    (Chan et al.'s pairwise form: no cancellation of sum(z^2) - n mean^2)."""
    n_acc = tl.zeros([BLOCK_R], dtype=ACC)
    s_acc = tl.zeros([BLOCK_R], dtype=ACC)
    for r0 in range(0, P, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        n = tl.load(part_ptr + r * 3, mask=r < P, other=0.0)
        n_acc += n
        s_acc += n * tl.load(part_ptr + r * 3 + 1, mask=r < P, other=0.0)
    total = tl.sum(n_acc, axis=0)
    mean = tl.sum(s_acc, axis=0) / total
    m2 = tl.zeros([BLOCK_R], dtype=ACC)
    for r0 in range(0, P, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        n = tl.load(part_ptr + r * 3, mask=r < P, other=0.0)
        d = tl.load(part_ptr + r * 3 + 1, mask=r < P, other=0.0) - mean
        m2 += tl.load(part_ptr + r * 3 + 2, mask=r < P, other=0.0) + n * d * d
    return mean, tl.sum(m2, axis=0) / total


@triton.jit
def _norm_block(pid, z_ptr, gamma_ptr, beta_ptr, mean, var, eps, HW, W, N,
                HAS_AFFINE: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """Block ``pid``: sa = sigmoid(BN(z)) in place."""
    b, p, h, w, pm = _pixels(pid, HW, W, N, BLOCK)
    gamma, beta = _affine(gamma_ptr, beta_ptr, HAS_AFFINE, ACC)
    z = tl.load(z_ptr + b * HW + p, mask=pm, other=mean)
    u = _normalize(z, mean, var, eps, gamma, beta)
    tl.store(z_ptr + b * HW + p, sigmoid(u), mask=pm)


@triton.jit
def spatial_gate_forward_kernel(
    maps_ptr, w_ptr, bias_ptr, gamma_ptr, beta_ptr, rmean_ptr, rvar_ptr,
    out_ptr, mean_ptr, var_ptr, part_ptr,
    H, W, N, wm_off, wx_off, eps: tl.constexpr,
    NORM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_AFFINE: tl.constexpr,
    K: tl.constexpr, BLOCK: tl.constexpr, TAPS: tl.constexpr, ACC: tl.constexpr,
):
    """One block per program: out [B, HW] = sa (NORM 0, 1; program 0 writes mean / var), or z and
    the (count, mean, M2) rows (NORM 2; spatial_norm_kernel finishes)."""
    pid = tl.program_id(0)
    _forward_block(pid, maps_ptr, w_ptr, bias_ptr, gamma_ptr, beta_ptr, rmean_ptr, rvar_ptr, out_ptr, part_ptr,
                   H, W, N, wm_off, wx_off, eps, NORM, HAS_BIAS, HAS_AFFINE, K, BLOCK, TAPS, ACC)
    if NORM != 2:
        if pid == 0:
            _store_stats(mean_ptr, var_ptr, rmean_ptr, rvar_ptr, NORM, ACC)


@triton.jit
def spatial_norm_kernel(
    z_ptr, gamma_ptr, beta_ptr, part_ptr, mean_ptr, var_ptr,
    HW, W, N, P, eps: tl.constexpr,
    HAS_AFFINE: tl.constexpr, BLOCK: tl.constexpr, BLOCK_R: tl.constexpr, ACC: tl.constexpr,
):
    """NORM 2, one block per program: sa = sigmoid(BN(z)) in place with the batch statistics."""
    pid = tl.program_id(0)
    mean, var = _batch_stats(part_ptr, P, BLOCK_R, ACC)
    _norm_block(pid, z_ptr, gamma_ptr, beta_ptr, mean, var, eps, HW, W, N, HAS_AFFINE, BLOCK, ACC)
    if pid == 0:
        tl.store(mean_ptr, mean)
        tl.store(var_ptr, var)


@triton.jit
def spatial_gate_forward_small_kernel(
    maps_ptr, w_ptr, bias_ptr, gamma_ptr, beta_ptr, rmean_ptr, rvar_ptr,
    out_ptr, mean_ptr, var_ptr, part_ptr,
    H, W, N, P, wm_off, wx_off, eps: tl.constexpr,
    NORM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_AFFINE: tl.constexpr,
    K: tl.constexpr, BLOCK: tl.constexpr, TAPS: tl.constexpr, BLOCK_R: tl.constexpr, ACC: tl.constexpr,
):
    """The whole forward in one program (small maps): the P blocks in turn, then for NORM 2 the
    statistics and the normalisation (the rows and z come from this program's other threads)."""
    for pid in range(P):
        _forward_block(pid, maps_ptr, w_ptr, bias_ptr, gamma_ptr, beta_ptr, rmean_ptr, rvar_ptr, out_ptr,
                       part_ptr, H, W, N, wm_off, wx_off, eps, NORM, HAS_BIAS, HAS_AFFINE, K, BLOCK, TAPS, ACC)
    if NORM == 2:
        tl.debug_barrier()
        mean, var = _batch_stats(part_ptr, P, BLOCK_R, ACC)
        for pid in range(P):
            _norm_block(pid, out_ptr, gamma_ptr, beta_ptr, mean, var, eps, H * W, W, N, HAS_AFFINE,
                        BLOCK, ACC)
        tl.store(mean_ptr, mean)
        tl.store(var_ptr, var)
    else:
        _store_stats(mean_ptr, var_ptr, rmean_ptr, rvar_ptr, NORM, ACC)


@triton.jit
def _backward_stats_block(pid, dsa_ptr, sa_ptr, maps_ptr, w_ptr, bias_ptr, mean_ptr, var_ptr, du_ptr, zhat_ptr,
                          part_ptr, H, W, N, wm_off, wx_off, eps, NCOL, COL_BN,
                          HAS_BIAS: tl.constexpr, K: tl.constexpr, BLOCK: tl.constexpr, TAPS: tl.constexpr,
                          ACC: tl.constexpr):
    """NORM 2, block ``pid``: du = dsa * sa * (1 - sa) and zhat = (z - mean) * rstd stored; the
    block's sum(du * zhat) and sum(du) in columns COL_BN, COL_BN + 1 of its row."""
    HW = H * W
    b, p, h, w, pm = _pixels(pid, HW, W, N, BLOCK)
    sa = tl.load(sa_ptr + b * HW + p, mask=pm, other=0.0)
    du = tl.load(dsa_ptr + b * HW + p, mask=pm, other=0.0) * sa * (1.0 - sa)
    z = _conv(maps_ptr, b, h, w, H, W, pm, w_ptr, wm_off, wx_off, bias_ptr, HAS_BIAS, K, BLOCK, TAPS, ACC)
    zhat = (z - tl.load(mean_ptr)) * _inv_std(tl.load(var_ptr), eps)
    tl.store(du_ptr + b * HW + p, du, mask=pm)
    tl.store(zhat_ptr + b * HW + p, zhat, mask=pm)
    tl.store(part_ptr + pid * NCOL + COL_BN, tl.sum(tl.where(pm, du * zhat, 0.0), axis=0))
    tl.store(part_ptr + pid * NCOL + COL_BN + 1, tl.sum(tl.where(pm, du, 0.0), axis=0))


@triton.jit
def _dz(q, inside, pm, dsa_ptr, sa_ptr, du_ptr, zhat_ptr, scale, shift, slope, NORM: tl.constexpr):
    """dL/dz at pixels q (zero where not inside the map; loads masked by the block's pixels pm):
    NORM 0/1 from dsa and sa (scale = gamma * rstd, 1 without BN); NORM 2 from the stored du,
    zhat: scale * (du - shift - zhat * slope)."""
    if NORM == 2:
        du = tl.load(du_ptr + q, mask=pm, other=0.0)
        zh = tl.load(zhat_ptr + q, mask=pm, other=0.0)
        return tl.where(inside, scale * (du - shift - zh * slope), 0.0)
    sa = tl.load(sa_ptr + q, mask=pm, other=0.0)
    return tl.where(inside, tl.load(dsa_ptr + q, mask=pm, other=0.0) * sa * (1.0 - sa) * scale, 0.0)


@triton.jit
def _dz_coefs(gamma_ptr, var_ptr, part_ptr, P, NCOL, COL_BN, N, eps, NORM: tl.constexpr,
              HAS_AFFINE: tl.constexpr, BLOCK_R: tl.constexpr, ACC: tl.constexpr):
    """(scale, shift, slope) of _dz: gamma * rstd (1 without BN) and, NORM 2, mean(du), mean(du * zhat)
    over the batch from the rows' columns COL_BN + 1, COL_BN."""
    scale = tl.full([], 1.0, ACC)
    shift = tl.full([], 0.0, ACC)
    slope = tl.full([], 0.0, ACC)
    if NORM != 0:
        gamma, _ = _affine(gamma_ptr, gamma_ptr, HAS_AFFINE, ACC)
        scale = gamma / tl.sqrt(tl.load(var_ptr).to(ACC) + eps)
    if NORM == 2:
        inv_count = tl.full([], 1.0, ACC) / N
        slope = _row_sum(part_ptr, COL_BN, P, NCOL, BLOCK_R, ACC) * inv_count
        shift = _row_sum(part_ptr, COL_BN + 1, P, NCOL, BLOCK_R, ACC) * inv_count
    return scale, shift, slope


@triton.jit
def _backward_block(pid, dsa_ptr, sa_ptr, ties_ptr, maps_ptr, w_ptr, bias_ptr, mean_ptr, var_ptr, du_ptr,
                    zhat_ptr, kmean_ptr, kmax_ptr, part_ptr, scale, shift, slope,
                    C, H, W, N, wm_off, wx_off, eps, NCOL, NORM: tl.constexpr, HAS_BIAS: tl.constexpr,
                    K: tl.constexpr, BLOCK: tl.constexpr, TAPS: tl.constexpr, ACC: tl.constexpr):
    """Block ``pid``: k_mean = dmean / C, k_max = dmax / ties (dmaps = the conv's transpose applied
    to dz); its row: the conv weight gradient (columns in the weight's [2, k, k] order), the conv
    bias gradient (column 2k^2) and, NORM 1, BN's (2k^2 + 1: sum(du * zhat), 2k^2 + 2: sum(du))."""
    HW = H * W
    b, p, h, w, pm = _pixels(pid, HW, W, N, BLOCK)
    KK: tl.constexpr = K * K
    base = b * HW
    dz = _dz(base + p, pm, pm, dsa_ptr, sa_ptr, du_ptr, zhat_ptr, scale, shift, slope, NORM)
    if NORM == 1:
        sa = tl.load(sa_ptr + base + p, mask=pm, other=0.0)
        du = tl.load(dsa_ptr + base + p, mask=pm, other=0.0) * sa * (1.0 - sa)
        z = _conv(maps_ptr, b, h, w, H, W, pm, w_ptr, wm_off, wx_off, bias_ptr, HAS_BIAS, K, BLOCK, TAPS, ACC)
        zhat = (z - tl.load(mean_ptr).to(ACC)) * _inv_std(tl.load(var_ptr).to(ACC), eps)
        tl.store(part_ptr + pid * NCOL + 2 * KK + 1, tl.sum(tl.where(pm, du * zhat, 0.0), axis=0))
        tl.store(part_ptr + pid * NCOL + 2 * KK + 2, tl.sum(du, axis=0))
    d_mean = tl.zeros([BLOCK], dtype=ACC)
    d_max = tl.zeros([BLOCK], dtype=ACC)
    for t0 in range(0, KK, TAPS):
        # transpose: the pixel whose tap t lands here sits at (h - i + k//2, w - j + k//2), the
        # window's tap k^2 - 1 - t
        t = t0 + tl.arange(0, TAPS)
        q, inside = _window((KK - 1 - t)[None, :], h[:, None], w[:, None], H, W, K)
        dzq = _dz(base[:, None] + q, inside, pm[:, None] & (t < KK)[None, :], dsa_ptr, sa_ptr, du_ptr, zhat_ptr,
                  scale, shift, slope, NORM)
        d_mean += tl.sum(dzq * tl.load(w_ptr + wm_off + t, mask=t < KK, other=0.0).to(ACC)[None, :], axis=1)
        d_max += tl.sum(dzq * tl.load(w_ptr + wx_off + t, mask=t < KK, other=0.0).to(ACC)[None, :], axis=1)
    maps_b = (maps_ptr + b * 2 * HW)[:, None]
    for t0 in range(0, 2 * KK, TAPS):
        t = t0 + tl.arange(0, TAPS)
        v, widx = _map_taps(maps_b, t, h, w, H, W, pm, wm_off, wx_off, K, ACC)
        tl.store(part_ptr + pid * NCOL + widx, tl.sum(dz[:, None] * v, axis=0), mask=t < 2 * KK)
    tl.store(part_ptr + pid * NCOL + 2 * KK, tl.sum(dz, axis=0))
    tl.store(kmean_ptr + base + p, d_mean / C, mask=pm)
    tl.store(kmax_ptr + base + p, d_max / tl.load(ties_ptr + base + p, mask=pm, other=1.0), mask=pm)


@triton.jit
def _sum_rows(part_ptr, P, NCOL, dw_ptr, db_ptr, dgamma_ptr, dbeta_ptr, KK2,
              HAS_BIAS: tl.constexpr, HAS_AFFINE: tl.constexpr,
              BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    """Columns of the P rows summed in a fixed order: [0, KK2) -> dw, KK2 -> db,
    KK2 + 1 -> dgamma, KK2 + 2 -> dbeta, each cast to its output's dtype."""
    col = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_R, BLOCK_N], dtype=ACC)
    for r0 in range(0, P, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        acc += tl.load(part_ptr + r[:, None] * NCOL + col[None, :], mask=(r < P)[:, None] & (col < NCOL)[None, :],
                       other=0.0)
    total = tl.sum(acc, axis=0)
    tl.store(dw_ptr + col, total.to(dw_ptr.dtype.element_ty), mask=col < KK2)
    if HAS_BIAS:
        tl.store(db_ptr + (col - KK2), total.to(db_ptr.dtype.element_ty), mask=col == KK2)
    if HAS_AFFINE:
        tl.store(dgamma_ptr + (col - KK2 - 1), total.to(dgamma_ptr.dtype.element_ty), mask=col == KK2 + 1)
        tl.store(dbeta_ptr + (col - KK2 - 2), total.to(dbeta_ptr.dtype.element_ty), mask=col == KK2 + 2)


@triton.jit
def spatial_backward_stats_kernel(
    dsa_ptr, sa_ptr, maps_ptr, w_ptr, bias_ptr, mean_ptr, var_ptr, du_ptr, zhat_ptr, part_ptr,
    H, W, N, wm_off, wx_off, eps: tl.constexpr, NCOL, COL_BN,
    HAS_BIAS: tl.constexpr, K: tl.constexpr, BLOCK: tl.constexpr, TAPS: tl.constexpr, ACC: tl.constexpr,
):
    """NORM 2, one block per program: du, zhat and their sums (before spatial_backward_kernel)."""
    _backward_stats_block(tl.program_id(0), dsa_ptr, sa_ptr, maps_ptr, w_ptr, bias_ptr, mean_ptr, var_ptr, du_ptr,
                          zhat_ptr, part_ptr, H, W, N, wm_off, wx_off, eps, NCOL, COL_BN, HAS_BIAS, K,
                          BLOCK, TAPS, ACC)


@triton.jit
def spatial_backward_kernel(
    dsa_ptr, sa_ptr, ties_ptr, maps_ptr, w_ptr, bias_ptr, gamma_ptr, mean_ptr, var_ptr,
    du_ptr, zhat_ptr, kmean_ptr, kmax_ptr, part_ptr,
    C, H, W, N, P, wm_off, wx_off, eps: tl.constexpr, NCOL,
    NORM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_AFFINE: tl.constexpr,
    K: tl.constexpr, BLOCK: tl.constexpr, TAPS: tl.constexpr, BLOCK_R: tl.constexpr, ACC: tl.constexpr,
):
    """One block per program: k_mean, k_max and the block's row (partial_sums_kernel finishes)."""
    scale, shift, slope = _dz_coefs(gamma_ptr, var_ptr, part_ptr, P, NCOL, 2 * K * K + 1, N, eps, NORM,
                                    HAS_AFFINE, BLOCK_R, ACC)
    _backward_block(tl.program_id(0), dsa_ptr, sa_ptr, ties_ptr, maps_ptr, w_ptr, bias_ptr, mean_ptr, var_ptr,
                    du_ptr, zhat_ptr, kmean_ptr, kmax_ptr, part_ptr, scale, shift, slope, C, H, W, N,
                    wm_off, wx_off, eps, NCOL, NORM, HAS_BIAS, K, BLOCK, TAPS, ACC)


@triton.jit
def partial_sums_kernel(
    part_ptr, P, NCOL, dw_ptr, db_ptr, dgamma_ptr, dbeta_ptr, KK2,
    HAS_BIAS: tl.constexpr, HAS_AFFINE: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr,
):
    """One program: the parameter gradients from the rows."""
    _sum_rows(part_ptr, P, NCOL, dw_ptr, db_ptr, dgamma_ptr, dbeta_ptr, KK2, HAS_BIAS, HAS_AFFINE,
              BLOCK_R, BLOCK_N, ACC)


@triton.jit
def spatial_gate_backward_small_kernel(
    dsa_ptr, sa_ptr, ties_ptr, maps_ptr, w_ptr, bias_ptr, gamma_ptr, mean_ptr, var_ptr,
    du_ptr, zhat_ptr, kmean_ptr, kmax_ptr, part_ptr, dw_ptr, db_ptr, dgamma_ptr, dbeta_ptr,
    C, H, W, N, P, wm_off, wx_off, eps: tl.constexpr, NCOL,
    NORM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_AFFINE: tl.constexpr, K: tl.constexpr,
    BLOCK: tl.constexpr, TAPS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr,
):
    """The whole backward in one program (small maps): the three kernels' work in turn, with a
    barrier wherever a step reads what other threads wrote."""
    KK2: tl.constexpr = 2 * K * K
    if NORM == 2:
        for pid in range(P):
            _backward_stats_block(pid, dsa_ptr, sa_ptr, maps_ptr, w_ptr, bias_ptr, mean_ptr, var_ptr, du_ptr,
                                  zhat_ptr, part_ptr, H, W, N, wm_off, wx_off, eps, NCOL, KK2 + 1, HAS_BIAS,
                                  K, BLOCK, TAPS, ACC)
        tl.debug_barrier()
    scale, shift, slope = _dz_coefs(gamma_ptr, var_ptr, part_ptr, P, NCOL, KK2 + 1, N, eps, NORM,
                                    HAS_AFFINE, BLOCK_R, ACC)
    for pid in range(P):
        _backward_block(pid, dsa_ptr, sa_ptr, ties_ptr, maps_ptr, w_ptr, bias_ptr, mean_ptr, var_ptr,
                        du_ptr, zhat_ptr, kmean_ptr, kmax_ptr, part_ptr, scale, shift, slope, C, H, W, N,
                        wm_off, wx_off, eps, NCOL, NORM, HAS_BIAS, K, BLOCK, TAPS, ACC)
    tl.debug_barrier()
    _sum_rows(part_ptr, P, NCOL, dw_ptr, db_ptr, dgamma_ptr, dbeta_ptr, KK2, HAS_BIAS, HAS_AFFINE,
              BLOCK_R, BLOCK_N, ACC)


# ---- launchers -----------------------------------------------------------------------

#: pixels per program of the many-program kernels, and per step of the one-program ones.
BLOCK_PIXELS = 256
SMALL_BLOCK_PIXELS = 1024
#: Largest B * H * W * k * k (conv taps over the maps) done by one program. About 12 lane
#: operations per tap (two map loads from L1, two FMAs, the window's index and bounds), so
#: 2^17 taps are about 50k warp instructions: 4 to 8 us of one SM (8 warps), which is what
#: the launches it saves (one forward, two backward in training) cost on the host alone. Above
#: it the many-program kernels run, with their rows summed by the next launch.
SMALL_MAP_TAPS = 1 << 17


def one_program(B: int, H: int, W: int, k: int) -> bool:
    """The spatial gate of these maps in one program per pass (``config.one_launch`` forces it
    either way, as for the one-launch blocks)."""
    if config.one_launch is not None:
        return config.one_launch
    return B * H * W * k * k <= SMALL_MAP_TAPS


#: Elements of a [BLOCK, TAPS] tap tile per thread. Each costs about 10 registers in sm_90 code
#: (window index, bounds, address, value): 16 compiled to 168-218 registers without spills (32
#: spilled at 255 registers; 8 took 87-128 registers and twice the steps).
TAP_TILE_PER_THREAD = 16


def _block(N: int, small: bool, k: int, itemsize: int) -> tuple[int, int, int]:
    """(pixels per block, warps, taps per step): at most the N pixels there are, up to
    SMALL_BLOCK_PIXELS (one program) or BLOCK_PIXELS (many programs), 8 warps, at least 32 pixels
    per warp; the taps of a step fill TAP_TILE_PER_THREAD values per thread (16 taps of 256 pixels
    on 8 warps: 7 steps for the 98 taps of a 7 x 7 conv; half as many float64 values), at most all
    2 k^2 of them."""
    block = min(SMALL_BLOCK_PIXELS if small else BLOCK_PIXELS, next_pow2(N))
    warps = max(1, min(8, block // 32))
    per_thread = TAP_TILE_PER_THREAD * 4 // max(itemsize, 4)
    taps = min(next_pow2(2 * k * k), max(1, per_thread * 32 * warps // block))
    return block, warps, taps


def _norm_mode(use_bn: bool, bn_training: bool) -> int:
    return 0 if not use_bn else (2 if bn_training else 1)


def _tap_offsets(k: int, max_first: bool) -> tuple[int, int]:
    """Offsets into the [1, 2, k, k] conv weight of the taps applied to the mean and max maps."""
    return (k * k, 0) if max_first else (0, k * k)


def spatial_gate_forward(maps, conv_weight, conv_bias, bn_weight, bn_bias, running_mean, running_var,
                         use_bn: bool, bn_training: bool, eps: float, max_first: bool):
    """maps [B, 2, H, W] (float32/64) -> (sa [B, 1, H, W], mean [1], var [1]): the statistics BN
    normalised with (batch mean and biased variance in training, the running ones in eval,
    zeros without BN). One launch; two for batch statistics of large maps."""
    B, _, H, W = maps.shape
    k = conv_weight.shape[-1]
    dt, dev = maps.dtype, maps.device
    N = B * H * W
    norm = _norm_mode(use_bn, bn_training)
    small = norm == 2 and one_program(B, H, W, k)
    block, warps, taps = _block(N, small, k, maps.element_size())
    P = cdiv(N, block)
    sa = config.new_buffer((B, 1, H, W), dt, dev)
    mean, var = config.new_buffer((1,), dt, dev), config.new_buffer((1,), dt, dev)
    part = torch.empty((P, 3), dtype=dt, device=dev) if norm == 2 else sa
    wm_off, wx_off = _tap_offsets(k, max_first)
    has_affine = bn_weight is not None
    gamma, beta = (bn_weight, bn_bias) if has_affine else (maps, maps)
    rmean, rvar = (running_mean, running_var) if norm == 1 else (maps, maps)
    bias = conv_bias if conv_bias is not None else maps
    acc = acc_dtype(dt)
    block_r = min(BLOCK_ROWS, next_pow2(P))
    if small:
        fast(spatial_gate_forward_small_kernel)[(1,)](
            maps, conv_weight, bias, gamma, beta, rmean, rvar, sa, mean, var, part, H, W, N, P, wm_off, wx_off, eps,
            NORM=norm, HAS_BIAS=conv_bias is not None, HAS_AFFINE=has_affine, K=k, BLOCK=block, TAPS=taps,
            BLOCK_R=block_r, ACC=acc, num_warps=warps)
        return sa, mean, var
    fast(spatial_gate_forward_kernel)[(P,)](
        maps, conv_weight, bias, gamma, beta, rmean, rvar, sa, mean, var, part, H, W, N, wm_off, wx_off, eps,
        NORM=norm, HAS_BIAS=conv_bias is not None, HAS_AFFINE=has_affine, K=k, BLOCK=block, TAPS=taps, ACC=acc,
        num_warps=warps)
    if norm == 2:
        fast(spatial_norm_kernel)[(P,)](
            sa, gamma, beta, part, mean, var, H * W, W, N, P, eps,
            HAS_AFFINE=has_affine, BLOCK=block, BLOCK_R=block_r, ACC=acc, num_warps=warps)
    return sa, mean, var


def spatial_gate_backward(dsa, ties, maps, sa, mean, var, C: int, conv_weight, conv_bias, bn_weight, bn_bias,
                          running_mean, running_var, use_bn: bool, bn_training: bool, eps: float, max_first: bool):
    """dsa = dL/dsa, ties = #channels at the max map ([B, 1, H, W] each) -> (k_mean = dL/dmean_map / C,
    k_max = dL/dmax_map / ties ([B, 1, H, W]), dconv_weight, dconv_bias | None, dbn_weight | None,
    dbn_bias | None) for the forward that normalised with ``mean``, ``var`` (the running statistics
    are not read: in eval they are ``mean`` and ``var``). One launch for small maps; else two,
    three for batch statistics."""
    B, _, H, W = maps.shape
    k = conv_weight.shape[-1]
    dt, dev = maps.dtype, maps.device
    N = B * H * W
    norm = _norm_mode(use_bn, bn_training)
    small = one_program(B, H, W, k)
    block, warps, taps = _block(N, small, k, maps.element_size())
    P = cdiv(N, block)
    ncol = 2 * k * k + 3
    part = torch.empty((P, ncol), dtype=dt, device=dev)
    wm_off, wx_off = _tap_offsets(k, max_first)
    has_bias, has_affine = conv_bias is not None, use_bn and bn_weight is not None
    bias = conv_bias if has_bias else maps
    gamma = bn_weight if has_affine else maps
    acc = acc_dtype(dt)
    block_r = min(BLOCK_ROWS, next_pow2(P))
    du, zhat = torch.empty((2, B, H * W), dtype=dt, device=dev) if norm == 2 else (sa, sa)
    k_mean = config.new_buffer((B, 1, H, W), dt, dev)
    k_max = config.new_buffer((B, 1, H, W), dt, dev)
    dw = config.new_buffer(conv_weight.shape, conv_weight.dtype, dev)
    db = config.new_buffer((1,), conv_bias.dtype, dev) if has_bias else None
    dgamma = config.new_buffer((1,), bn_weight.dtype, dev) if has_affine else None
    dbeta = config.new_buffer((1,), bn_bias.dtype, dev) if has_affine else None
    grads = (dw, db if has_bias else dw, dgamma if has_affine else dw, dbeta if has_affine else dw)
    if small:
        fast(spatial_gate_backward_small_kernel)[(1,)](
            dsa, sa, ties, maps, conv_weight, bias, gamma, mean, var, du, zhat, k_mean, k_max, part, *grads,
            C, H, W, N, P, wm_off, wx_off, eps, ncol,
            NORM=norm, HAS_BIAS=has_bias, HAS_AFFINE=has_affine, K=k, BLOCK=block, TAPS=taps, BLOCK_R=block_r,
            BLOCK_N=next_pow2(ncol), ACC=acc, num_warps=warps)
        return k_mean, k_max, dw, db, dgamma, dbeta
    if norm == 2:
        fast(spatial_backward_stats_kernel)[(P,)](
            dsa, sa, maps, conv_weight, bias, mean, var, du, zhat, part,
            H, W, N, wm_off, wx_off, eps, ncol, 2 * k * k + 1,
            HAS_BIAS=has_bias, K=k, BLOCK=block, TAPS=taps, ACC=acc, num_warps=warps)
    fast(spatial_backward_kernel)[(P,)](
        dsa, sa, ties, maps, conv_weight, bias, gamma, mean, var, du, zhat, k_mean, k_max, part,
        C, H, W, N, P, wm_off, wx_off, eps, ncol,
        NORM=norm, HAS_BIAS=has_bias, HAS_AFFINE=has_affine, K=k, BLOCK=block, TAPS=taps, BLOCK_R=block_r, ACC=acc,
        num_warps=warps)
    fast(partial_sums_kernel)[(1,)](
        part, P, ncol, *grads, 2 * k * k,
        HAS_BIAS=has_bias, HAS_AFFINE=has_affine, BLOCK_R=min(64, block_r), BLOCK_N=next_pow2(ncol), ACC=acc,
        num_warps=4)
    return k_mean, k_max, dw, db, dgamma, dbeta
