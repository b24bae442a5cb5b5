"""SK's attention gate on pooled vectors (timm SelectiveKernelAttn), one program per sample:

    s     = mean_hw(sum_p x_p)                                  [C]   (pool partials)
    z     = W_r @ s                      fc_reduce, no bias     [A]      sk_reduce_kernel
    u     = gamma * (z - mean) / sqrt(var + eps) + beta         [A]   \
    logit = W_s @ relu(u)                fc_select, no bias     [P*C]  | sk_select_kernel
    att   = softmax over the P paths of logit viewed [P, C]     [P*C] /

BatchNorm2d normalises over the batch in training (mean and biased var of z over the B
samples), so the gate is two launches: every sample's z must exist before any sample
normalises. Each select program recomputes the [A] statistics from z [B, A] (a few KiB,
in L2) in the same fixed order, so all programs agree and no third launch is needed;
program 0 writes them out for the running-stat update.

Backward, given datt[b*P+p, c] = sum_hw(dy * x_p) as pooling partials:

    dlogit = att * (datt - sum_p att * datt)                    [P*C] -> dW_s
    du     = (W_s^T @ dlogit) * (u > 0)                         [A]   sk_select_backward_kernel
    dz     = BatchNorm backward (through the batch statistics in training)   -> dgamma, dbeta
    coef   = (W_r^T @ dz) / HW               (dx_p = dy * att_p + coef)    sk_bn_backward_kernel

W_r is [A, C] and W_s is [P*C, A] (row p*C + c), both contiguous: W_s's rows of path p are
the [C, A] matrix se_gate's w2 helpers walk.
"""
import triton
import triton.language as tl

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
def sk_reduce_kernel(sum_ptr, S, B, C, A, HW, wr_ptr, s_ptr, z_ptr,
                     BLOCK_C: tl.constexpr, BLOCK_A: tl.constexpr, ACC: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    r = tl.arange(0, BLOCK_A)
    z = tl.zeros([BLOCK_A], dtype=ACC)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C
        s = tl.where(cmask, reduce_partials(sum_ptr, S, B, C, b, c, cmask, False, ACC) / HW, 0.0)
        tl.store(s_ptr + b * C + c, s, mask=cmask)
        z += w1_times(wr_ptr, s, r, c, C, A, ACC)
    tl.store(z_ptr + b * A + r, z, mask=r < A)


@triton.jit
def _batch_stats(z_ptr, B, A, r, rmask, ACC: tl.constexpr):
    """Mean and biased variance over the B rows of z [B, A] at columns r (two passes)."""
    total = tl.zeros(r.shape, dtype=ACC)
    for i in range(0, B):
        total += tl.load(z_ptr + i * A + r, mask=rmask, other=0.0).to(ACC)
    mean = total / B
    sq = tl.zeros(r.shape, dtype=ACC)
    for i in range(0, B):
        d = tl.load(z_ptr + i * A + r, mask=rmask, other=0.0).to(ACC) - mean
        sq += d * d
    return mean, sq / B


@triton.jit
def sk_select_kernel(
    z_ptr, B, C, A, ws_ptr, gamma_ptr, beta_ptr, rmean_ptr, rvar_ptr, eps: tl.constexpr,
    u_ptr, att_ptr, mean_ptr, var_ptr,
    P: tl.constexpr, TRAINING: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_A: tl.constexpr, ACC: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    r = tl.arange(0, BLOCK_A)
    rmask = r < A
    if TRAINING:
        mean, var = _batch_stats(z_ptr, B, A, r, rmask, ACC)
    else:
        mean = tl.load(rmean_ptr + r, mask=rmask, other=0.0).to(ACC)
        var = tl.load(rvar_ptr + r, mask=rmask, other=1.0).to(ACC)
    if b == 0:
        tl.store(mean_ptr + r, mean, mask=rmask)
        tl.store(var_ptr + r, var, mask=rmask)
    gamma = tl.load(gamma_ptr + r, mask=rmask, other=0.0).to(ACC)
    beta = tl.load(beta_ptr + r, mask=rmask, other=0.0).to(ACC)
    z = tl.load(z_ptr + b * A + r, mask=rmask, other=0.0).to(ACC)
    u = (z - mean) * _inv_std(var, eps) * gamma + beta
    tl.store(u_ptr + b * A + r, u, mask=rmask)
    h = tl.where(rmask, activation(u, RELU_CODE), 0.0)
    att_row = att_ptr + b * P * C
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
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
    dlogit_ptr, du_ptr,
    P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_A: tl.constexpr, ACC: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    r = tl.arange(0, BLOCK_A)
    rmask = r < A
    du = tl.zeros([BLOCK_A], dtype=ACC)
    att_row = att_ptr + b * P * C
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
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
    u = tl.load(u_ptr + b * A + r, mask=rmask, other=0.0).to(ACC)
    tl.store(du_ptr + b * A + r, activation_grad(du, u, RELU_CODE), mask=rmask)


@triton.jit
def sk_bn_backward_kernel(
    du_ptr, z_ptr, mean_ptr, var_ptr, gamma_ptr, eps: tl.constexpr, B, C, A, HW, wr_ptr,
    dz_ptr, coef_ptr, dgamma_ptr, dbeta_ptr,
    TRAINING: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_A: tl.constexpr, ACC: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    r = tl.arange(0, BLOCK_A)
    rmask = r < A
    mean = tl.load(mean_ptr + r, mask=rmask, other=0.0).to(ACC)
    inv_std = _inv_std(tl.load(var_ptr + r, mask=rmask, other=1.0).to(ACC), eps)
    gamma = tl.load(gamma_ptr + r, mask=rmask, other=0.0).to(ACC)
    dbeta = tl.zeros([BLOCK_A], dtype=ACC)
    dgamma = tl.zeros([BLOCK_A], dtype=ACC)
    for i in range(0, B):  # the same fixed order in every program
        g = tl.load(du_ptr + i * A + r, mask=rmask, other=0.0).to(ACC)
        zhat = (tl.load(z_ptr + i * A + r, mask=rmask, other=0.0).to(ACC) - mean) * inv_std
        dbeta += g
        dgamma += g * zhat
    if b == 0:
        tl.store(dgamma_ptr + r, dgamma, mask=rmask)
        tl.store(dbeta_ptr + r, dbeta, mask=rmask)
    g = tl.load(du_ptr + b * A + r, mask=rmask, other=0.0).to(ACC)
    if TRAINING:
        zhat = (tl.load(z_ptr + b * A + r, mask=rmask, other=0.0).to(ACC) - mean) * inv_std
        dz = gamma * inv_std * (g - dbeta / B - zhat * dgamma / B)
    else:
        dz = gamma * inv_std * g
    dz = tl.where(rmask, dz, 0.0)
    tl.store(dz_ptr + b * A + r, dz, mask=rmask)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        tl.store(coef_ptr + b * C + c, w1t_times(wr_ptr, dz, r, c, C, A, ACC) / HW, mask=c < C)

