"""SK's attention gate on pooled vectors (timm SelectiveKernelAttn):

    s     = mean_hw(sum_p x_p)                                  [C]   (pool partials)
    z     = W_r @ s                      fc_reduce, no bias     [A]      sk_reduce_kernel
    u     = gamma * (z - mean) / sqrt(var + eps) + beta         [A]   \
    logit = W_s @ relu(u)                fc_select, no bias     [P*C]  | sk_select_kernel
    att   = softmax over the P paths of logit viewed [P, C]     [P*C] /

BatchNorm2d normalises over the batch in training (mean and biased var of z over the B
samples), so the gate is two launches: every sample's z must exist before any sample
normalises. Every gate kernel runs one program per (sample, channel tile), so that no program
walks all of C (2048 channels: 64 to 128 programs per sample, not one). sk_reduce's programs
store their tile's share of W_r @ s; the last of a sample's programs to finish (kernels.arrival)
sums the shares in tile order into z, and the last sample to finish takes the [A] statistics
over z [B, A], in a fixed order, for every select program and the running-stat update. The
softmax of channel c needs the logits of channel c only: sk_select's tiles are independent.

Backward, given datt[b*P+p, c] = sum_hw(dy * x_p) as pooling partials:

    dlogit = att * (datt - sum_p att * datt)                    [P*C] -> dW_s
    du     = (W_s^T @ dlogit) * (u > 0)                         [A]   sk_select_backward_kernel
    dz     = BatchNorm backward (through the batch statistics in training)   -> dgamma, dbeta
    coef   = (W_r^T @ dz) / HW               (dx_p = dy * att_p + coef)    sk_bn_backward_kernel

sk_select_backward's programs store their tile's share of W_s^T @ dlogit as a row of [T, B, A]
partials; the last program of a sample sums its T rows in tile order into du, and the last sample
to finish takes dgamma and dbeta (sums over B); so nothing depends on which program finished
last. sk_bn_backward's programs then each take dz of their sample and coef of their channel tile.

W_r is [A, C] and W_s is [P*C, A] (row p*C + c), both contiguous: W_s's rows of path p are
the [C, A] matrix se_gate's w2 helpers walk.
"""
import triton
import triton.language as tl

from .arrival import last_to_arrive
from .channel_pool import reduce_partials
from .se_gate import w1_times, w1t_times, w2_times, w2t_times
from .activations import RELU_CODE, activation, activation_grad
from .nan_math import maximum


@triton.jit
def _inv_std(var, eps):
    """eps is a constexpr in the kernels: the JIT passes a float argument as fp32, and 1e-5 in fp32
    is 1e-8 off in 1 / sqrt(var + eps) at var ~ 0, amplified by float64 networks to 1e-4."""
    return 1.0 / tl.sqrt(var + eps)


@triton.jit
def sk_reduce_kernel(sum_ptr, S, B, C, A, HW, wr_ptr, s_ptr, z_part_ptr, count_ptr, z_ptr, mean_ptr, var_ptr,
                     TRAINING: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_A: tl.constexpr,
                     BLOCK_T: tl.constexpr, BLOCK_B: tl.constexpr, ACC: tl.constexpr):
    """Program (b, t): s = pooled mean of channel tile t of sample b, and W_r[:, tile] @ s as row
    (t, b) of the [T, B, A] partials; the sample's last program sums its T rows in tile order into
    z [B, A], and in training the last of those (counter B) writes the batch statistics of z."""
    b = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1)
    T = tl.num_programs(1)
    r = tl.arange(0, BLOCK_A)
    c = t * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    s = tl.where(cmask, reduce_partials(sum_ptr, S, B, C, b, c, cmask, False, ACC) / HW, 0.0)
    tl.store(s_ptr + b * C + c, s, mask=cmask)
    tl.store(z_part_ptr + (t * B + b) * A + r, w1_times(wr_ptr, s, r, c, C, A, ACC), mask=r < A)
    if last_to_arrive(count_ptr, b, T):
        z = _rows_sum(z_part_ptr + b * A, T, B * A, A, r, r, False, BLOCK_T, ACC)
        tl.store(z_ptr + b * A + r, z, mask=r < A)
        if TRAINING:
            if last_to_arrive(count_ptr, B, B):
                mean, var = _batch_stats(z_ptr, B, A, r, BLOCK_B, ACC)
                tl.store(mean_ptr + r, mean, mask=r < A)
                tl.store(var_ptr + r, var, mask=r < A)


@triton.jit
def _rows_sum(ptr, ROWS, stride, A, r, shift, SQUARES: tl.constexpr, BLOCK_ROWS: tl.constexpr,
              ACC: tl.constexpr):
    """sum_i rows[i, r] (or, with SQUARES, sum_i (rows[i, r] - shift) ** 2) over the ROWS rows
    (``stride`` apart) of a matrix A wide that other programs of the launch wrote (read from L2),
    in row-tile order."""
    acc = tl.zeros([BLOCK_ROWS, r.shape[0]], dtype=ACC)
    for i0 in range(0, ROWS, BLOCK_ROWS):
        i = i0 + tl.arange(0, BLOCK_ROWS)
        m = (i < ROWS)[:, None] & (r < A)[None, :]
        v = tl.load(ptr + i.to(tl.int64)[:, None] * stride + r[None, :], mask=m, other=0.0,
                    cache_modifier=".cg").to(ACC)
        if SQUARES:
            v = tl.where(m, v - shift[None, :], 0.0)
            v = v * v
        acc += v
    return tl.sum(acc, axis=0)


@triton.jit
def _batch_stats(z_ptr, B, A, r, BLOCK_B: tl.constexpr, ACC: tl.constexpr):
    """Mean and biased variance over the B rows of z [B, A] at columns r (two passes)."""
    mean = _rows_sum(z_ptr, B, A, A, r, r, False, BLOCK_B, ACC) / B
    return mean, _rows_sum(z_ptr, B, A, A, r, mean, True, BLOCK_B, ACC) / B


@triton.jit
def sk_select_kernel(
    z_ptr, C, A, ws_ptr, gamma_ptr, beta_ptr, stat_mean_ptr, stat_var_ptr, eps: tl.constexpr,
    u_ptr, att_ptr, mean_ptr, var_ptr,
    P: tl.constexpr, COPY_STATS: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_A: tl.constexpr, ACC: tl.constexpr,
):
    """Program (b, t): u of sample b (stored by t = 0), att of its channel tile t. The statistics
    come from stat_mean / stat_var (the batch's, or the running ones: copied to mean / var by
    program (0, 0) with COPY_STATS)."""
    b = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1)
    r = tl.arange(0, BLOCK_A)
    rmask = r < A
    mean = tl.load(stat_mean_ptr + r, mask=rmask, other=0.0).to(ACC)
    var = tl.load(stat_var_ptr + r, mask=rmask, other=1.0).to(ACC)
    if COPY_STATS:
        if (b == 0) & (t == 0):
            tl.store(mean_ptr + r, mean, mask=rmask)
            tl.store(var_ptr + r, var, mask=rmask)
    gamma = tl.load(gamma_ptr + r, mask=rmask, other=0.0).to(ACC)
    beta = tl.load(beta_ptr + r, mask=rmask, other=0.0).to(ACC)
    z = tl.load(z_ptr + b * A + r, mask=rmask, other=0.0).to(ACC)
    u = (z - mean) * _inv_std(var, eps) * gamma + beta
    if t == 0:
        tl.store(u_ptr + b * A + r, u, mask=rmask)
    h = tl.where(rmask, activation(u, RELU_CODE), 0.0)
    att_row = att_ptr + b * P * C
    c = t * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    m = tl.full([BLOCK_C], float("-inf"), dtype=ACC)
    total = tl.zeros([BLOCK_C], dtype=ACC)
    for p in tl.static_range(P):  # online softmax over the paths
        logit = w2_times(ws_ptr + p * C * A, h, r, c, C, A, ACC)
        m_new = maximum(m, logit)
        total = total * tl.exp(m - m_new) + tl.exp(logit - m_new)
        m = m_new
    for p in tl.static_range(P):
        logit = w2_times(ws_ptr + p * C * A, h, r, c, C, A, ACC)
        tl.store(att_row + p * C + c, tl.exp(logit - m) / total, mask=cmask)


@triton.jit
def sk_select_backward_kernel(
    datt_ptr, S, B, C, A, ws_ptr, u_ptr, att_ptr,
    dlogit_ptr, du_part_ptr, count_ptr, du_ptr,
    z_ptr, mean_ptr, var_ptr, eps: tl.constexpr, dgamma_ptr, dbeta_ptr,
    P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_B: tl.constexpr, ACC: tl.constexpr,
):
    """Program (b, t): dlogit of channel tile t of sample b, and its share of W_s^T @ dlogit as
    row (t, b) of the [T, B, A] partials; the sample's last program writes du = (sum over t) * relu',
    and the last of those (counter B) the BatchNorm weight gradients dgamma, dbeta (sums over B)."""
    b = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1)
    r = tl.arange(0, BLOCK_A)
    rmask = r < A
    du = tl.zeros([BLOCK_A], dtype=ACC)
    att_row = att_ptr + b * P * C
    c = t * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    dot = tl.zeros([BLOCK_C], dtype=ACC)
    for p in tl.static_range(P):
        a = tl.load(att_row + p * C + c, mask=cmask, other=0.0).to(ACC)
        dot += a * reduce_partials(datt_ptr, S, B * P, C, b * P + p, c, cmask, False, ACC)
    for p in tl.static_range(P):
        a = tl.load(att_row + p * C + c, mask=cmask, other=0.0).to(ACC)
        da = reduce_partials(datt_ptr, S, B * P, C, b * P + p, c, cmask, False, ACC)
        dl = tl.where(cmask, a * (da - dot), 0.0)
        tl.store(dlogit_ptr + b * P * C + p * C + c, dl, mask=cmask)
        du += w2t_times(ws_ptr + p * C * A, dl, r, c, C, A, ACC)
    T = tl.num_programs(1)
    tl.store(du_part_ptr + (t * B + b) * A + r, du, mask=rmask)
    if last_to_arrive(count_ptr, b, T):
        # rows t * B + b of the partials: a [T, A] matrix with row stride B * A, summed in t order
        total = _rows_sum(du_part_ptr + b * A, T, B * A, A, r, r, False, BLOCK_T, ACC)
        u = tl.load(u_ptr + b * A + r, mask=rmask, other=0.0).to(ACC)
        tl.store(du_ptr + b * A + r, activation_grad(total, u, RELU_CODE), mask=rmask)
        if last_to_arrive(count_ptr, B, B):
            mean = tl.load(mean_ptr + r, mask=rmask, other=0.0).to(ACC)
            inv_std = _inv_std(tl.load(var_ptr + r, mask=rmask, other=1.0).to(ACC), eps)
            dbeta, dgamma = _bn_grad_sums(du_ptr, z_ptr, B, A, r, mean, inv_std, BLOCK_B, ACC)
            tl.store(dgamma_ptr + r, dgamma, mask=rmask)
            tl.store(dbeta_ptr + r, dbeta, mask=rmask)


@triton.jit
def _bn_grad_sums(du_ptr, z_ptr, B, A, r, mean, inv_std, BLOCK_B: tl.constexpr, ACC: tl.constexpr):
    """(sum_b du[b], sum_b du[b] * zhat[b]) over the B rows of du [B, A] (other programs of the
    launch wrote them: read from L2) and z, in row-tile order."""
    dbeta = tl.zeros([BLOCK_B, r.shape[0]], dtype=ACC)
    dgamma = tl.zeros([BLOCK_B, r.shape[0]], dtype=ACC)
    for i0 in range(0, B, BLOCK_B):
        i = i0 + tl.arange(0, BLOCK_B)
        m = (i < B)[:, None] & (r < A)[None, :]
        at = i.to(tl.int64)[:, None] * A + r[None, :]
        g = tl.load(du_ptr + at, mask=m, other=0.0, cache_modifier=".cg").to(ACC)
        zhat = (tl.load(z_ptr + at, mask=m, other=0.0).to(ACC) - mean[None, :]) * inv_std[None, :]
        dbeta += g
        dgamma += g * zhat
    return tl.sum(dbeta, axis=0), tl.sum(dgamma, axis=0)


@triton.jit
def sk_bn_backward_kernel(
    du_ptr, z_ptr, mean_ptr, var_ptr, gamma_ptr, eps: tl.constexpr, B, C, A, HW, wr_ptr,
    dz_ptr, coef_ptr, dgamma_ptr, dbeta_ptr,
    TRAINING: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_A: tl.constexpr, ACC: tl.constexpr,
):
    """Program (b, t): dz of sample b through the BatchNorm (stored by t = 0; dgamma and dbeta come
    from sk_select_backward), coef = W_r^T @ dz / HW for channel tile t."""
    b = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1)
    r = tl.arange(0, BLOCK_A)
    rmask = r < A
    inv_std = _inv_std(tl.load(var_ptr + r, mask=rmask, other=1.0).to(ACC), eps)
    gamma = tl.load(gamma_ptr + r, mask=rmask, other=0.0).to(ACC)
    g = tl.load(du_ptr + b * A + r, mask=rmask, other=0.0).to(ACC)
    if TRAINING:
        mean = tl.load(mean_ptr + r, mask=rmask, other=0.0).to(ACC)
        dgamma = tl.load(dgamma_ptr + r, mask=rmask, other=0.0).to(ACC)
        dbeta = tl.load(dbeta_ptr + r, mask=rmask, other=0.0).to(ACC)
        zhat = (tl.load(z_ptr + b * A + r, mask=rmask, other=0.0).to(ACC) - mean) * inv_std
        dz = gamma * inv_std * (g - dbeta / B - zhat * dgamma / B)
    else:
        dz = gamma * inv_std * g
    dz = tl.where(rmask, dz, 0.0)
    if t == 0:
        tl.store(dz_ptr + b * A + r, dz, mask=rmask)
    c = t * BLOCK_C + tl.arange(0, BLOCK_C)
    tl.store(coef_ptr + b * C + c, w1t_times(wr_ptr, dz, r, c, C, A, ACC) / HW, mask=c < C)
