"""Weight gradients as sums over the batch, in a fixed order (deterministic):

    out[m, n] = sum_b a[b, m] * f(v[b, n])        f = identity or relu
    a_sum[m]  = sum_b a[b, m]                     (bias gradients)

a is [B, M], v is [B, N], both contiguous in the accumulation dtype; out is [M, N]
and a_sum is [M], written in their own dtype (the parameter's).
"""
import torch
import triton
import triton.language as tl
from .layout import cdiv, next_pow2

from . import config


@triton.jit
def batch_outer_kernel(
    a_ptr, v_ptr, out_ptr, asum_ptr, B, M, N,
    RELU_V: tl.constexpr, WITH_SUM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr,
):
    pm = tl.program_id(0)
    pn = tl.program_id(1)
    m = pm * BLOCK_M + tl.arange(0, BLOCK_M)
    n = pn * BLOCK_N + tl.arange(0, BLOCK_N)
    mm, nm = m < M, n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    asum = tl.zeros([BLOCK_M], dtype=ACC)
    for b in range(0, B):
        a = tl.load(a_ptr + b * M + m, mask=mm, other=0.0).to(ACC)
        v = tl.load(v_ptr + b * N + n, mask=nm, other=0.0).to(ACC)
        if RELU_V:
            v = tl.maximum(v, 0.0)
        acc += a[:, None] * v[None, :]
        asum += a
    tl.store(out_ptr + m[:, None] * N + n[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=mm[:, None] & nm[None, :])
    if WITH_SUM:
        if pn == 0:
            tl.store(asum_ptr + m, asum.to(asum_ptr.dtype.element_ty), mask=mm)


def batch_outer(a: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                a_sum: torch.Tensor | None = None, relu_v: bool = False) -> None:
    """out = a^T @ f(v) (and a_sum = a.sum(0)) for a [B, M], v [B, N], out [M, N]."""
    B, M = a.shape
    N = v.shape[1]
    block_m = min(next_pow2(M), 64)
    block_n = min(next_pow2(N), 64)
    grid = (cdiv(M, block_m), cdiv(N, block_n))
    acc = tl.float64 if a.dtype == torch.float64 else tl.float32
    batch_outer_kernel[grid](
        a, v, out, a_sum if a_sum is not None else out, B, M, N,
        RELU_V=relu_v, WITH_SUM=a_sum is not None,
        BLOCK_M=block_m, BLOCK_N=block_n, ACC=acc, num_warps=4,
    )


def mlp_weight_grads(dz, hidden, dh, pooled, w1, w2, has_bias: bool):
    """Gradients of the channel MLP  z = W2 relu(W1 p + b1) + b2  summed over rows:
    dz [N, C] (at z), hidden [N, RD] (pre-ReLU), dh [N, RD] (at W1 p + b1), pooled [N, C] (p).

    Returns (dw1, db1 | None, dw2, db2 | None) in the weights' shapes and dtypes.
    """
    C, RD = dz.shape[1], dh.shape[1]
    dw2 = config.new_buffer((C, RD), w2.dtype, dz.device)
    dw1 = config.new_buffer((RD, C), w1.dtype, dz.device)
    db2 = config.new_buffer((C,), w2.dtype, dz.device) if has_bias else None
    db1 = config.new_buffer((RD,), w1.dtype, dz.device) if has_bias else None
    batch_outer(dz, hidden, dw2, db2, relu_v=True)
    batch_outer(dh, pooled, dw1, db1)
    return dw1.reshape(w1.shape), db1, dw2.reshape(w2.shape), db2
