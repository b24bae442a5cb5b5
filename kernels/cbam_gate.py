"""CBAM's channel gate on pooled vectors, one program per sample:

    a = mean_hw(x), m = max_hw(x)                                     [C] each
    ha = W1 a + b1, hm = W1 m + b1        (saved pre-activations)     [RD] each
    ca = sigmoid(W2 relu(ha) + W2 relu(hm) + 2 b2)                    [C]

Backward, from dca[c] = sum_hw(dx1 * x) (as pooling partials, dx1 = dL/d(x * ca)):

    dv = dca * ca * (1 - ca)                                          -> dW2, db2 (both branches)
    dha = (W2^T dv) * (ha > 0),  dhm = (W2^T dv) * (hm > 0)           -> dW1, db1
    mean_coef = (W1^T dha) / HW,  max_coef = (W1^T dhm) / #ties with m

Pooled vectors and hidden vectors are stored as [2B, .]: rows [0, B) for the average
branch, [B, 2B) for the max branch, so one batch_outer call covers both in the
weight gradients.
"""
import triton
import triton.language as tl

from .channel_pool import reduce_partials
from .activations import RELU_CODE, SIGMOID_CODE, activation, activation_grad, sigmoid
from .se_gate import gate_logit_grad, w1_times, w1t_times, w2_times


@triton.jit
def cbam_channel_gate_forward_kernel(
    sum_ptr, max_ptr, S, B, C, RD, HW,
    w1_ptr, b1_ptr, w2_ptr, b2_ptr,
    pooled_ptr, hidden_ptr, gate_ptr, b0,
    HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_RD: tl.constexpr, ACC: tl.constexpr,
):
    b = (b0 + tl.program_id(0)).to(tl.int64)
    r = tl.arange(0, BLOCK_RD)
    rmask = r < RD
    ha = tl.zeros([BLOCK_RD], dtype=ACC)
    hm = tl.zeros([BLOCK_RD], dtype=ACC)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C
        a = tl.where(cmask, reduce_partials(sum_ptr, S, B, C, b, c, cmask, False, ACC) / HW, 0.0)
        m = tl.where(cmask, reduce_partials(max_ptr, S, B, C, b, c, cmask, True, ACC), 0.0)
        tl.store(pooled_ptr + b * C + c, a, mask=cmask)
        tl.store(pooled_ptr + (B + b) * C + c, m, mask=cmask)
        ha += w1_times(w1_ptr, a, r, c, C, RD, ACC)
        hm += w1_times(w1_ptr, m, r, c, C, RD, ACC)
    if HAS_BIAS:
        bias1 = tl.load(b1_ptr + r, mask=rmask, other=0.0).to(ACC)
        ha += bias1
        hm += bias1
    tl.store(hidden_ptr + b * RD + r, ha, mask=rmask)
    tl.store(hidden_ptr + (B + b) * RD + r, hm, mask=rmask)
    hsum = tl.where(rmask, activation(ha, RELU_CODE) + activation(hm, RELU_CODE), 0.0)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C
        z = w2_times(w2_ptr, hsum, r, c, C, RD, ACC)
        if HAS_BIAS:
            z += 2.0 * tl.load(b2_ptr + c, mask=cmask, other=0.0).to(ACC)
        tl.store(gate_ptr + b * C + c, sigmoid(z), mask=cmask)


@triton.jit
def cbam_channel_gate_backward_kernel(
    dsum_ptr, cnt_ptr, S, B, C, RD, HW,
    w1_ptr, w2_ptr, hidden_ptr, gate_ptr,
    dv_ptr, dh_ptr, mean_coef_ptr, max_coef_ptr, b0,
    BLOCK_C: tl.constexpr, BLOCK_RD: tl.constexpr, ACC: tl.constexpr,
):
    b = (b0 + tl.program_id(0)).to(tl.int64)
    r = tl.arange(0, BLOCK_RD)
    rmask = r < RD
    t = gate_logit_grad(dsum_ptr, S, B, C, RD, b, r, gate_ptr, dv_ptr, w2_ptr, SIGMOID_CODE, BLOCK_C, BLOCK_RD, ACC)
    ha = tl.load(hidden_ptr + b * RD + r, mask=rmask, other=0.0).to(ACC)
    hm = tl.load(hidden_ptr + (B + b) * RD + r, mask=rmask, other=0.0).to(ACC)
    dha = tl.where(rmask, activation_grad(t, ha, RELU_CODE), 0.0)
    dhm = tl.where(rmask, activation_grad(t, hm, RELU_CODE), 0.0)
    tl.store(dh_ptr + b * RD + r, dha, mask=rmask)
    tl.store(dh_ptr + (B + b) * RD + r, dhm, mask=rmask)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C
        ties = tl.where(cmask, reduce_partials(cnt_ptr, S, B, C, b, c, cmask, False, ACC), 1.0)
        tl.store(mean_coef_ptr + b * C + c, w1t_times(w1_ptr, dha, r, c, C, RD, ACC) / HW, mask=cmask)
        tl.store(max_coef_ptr + b * C + c, w1t_times(w1_ptr, dhm, r, c, C, RD, ACC) / ties, mask=cmask)
