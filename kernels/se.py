"""SE launchers: fused forward and backward of  y = x * sigmoid(W2 relu(W1 pool(x) + b1) + b2)."""

from . import config
from .batch_outer import mlp_weight_grads
from .channel_gate import Epilogue, channel_gate_backward, channel_gate_forward
from .layout import acc_dtype, acc_torch_dtype
from .se_gate import gate_tiles, se_gate_backward_kernel, se_gate_forward_kernel


def se_forward(x, w1, b1, w2, b2, add_maxpool: bool, shortcut=None, act: int = 0):
    """x [B, C, H, W]; w1 [RD, C(,1,1)], b1 [RD] | None; w2 [C, RD(,1,1)], b2 [C] | None;
    optional epilogue: y = act(x * gate + shortcut) (act: channel_scale.ACTIVATIONS code).

    Returns (y [B, C, H, W] in x's dtype and memory format, pooled [B, C] (fc1's input),
    pool_max [B, C] (or [0] without add_maxpool), hidden [B, RD] (pre-ReLU), gate [B, C]);
    the vectors are float32 (float64 for float64 x).
    """
    B, C, H, W = x.shape
    RD = w1.shape[0]
    dt, dev = acc_torch_dtype(x.dtype), x.device
    w1, w2 = w1.reshape(RD, C).contiguous(), w2.reshape(C, RD).contiguous()
    has_bias = b1 is not None
    pooled = config.new_buffer((B, C), dt, dev)
    pool_max = config.new_buffer((B, C) if add_maxpool else (0,), dt, dev)
    hidden = config.new_buffer((B, RD), dt, dev)
    gate = config.new_buffer((B, C), dt, dev)
    block_c, block_rd = gate_tiles(C, RD)

    def launch_gate(parts, b0, nb):
        se_gate_forward_kernel[(nb,)](
            parts.sums, parts.maxs if add_maxpool else parts.sums, parts.sums.shape[0],
            B, C, RD, H * W,
            w1, b1.contiguous() if has_bias else w1, w2, b2.contiguous() if has_bias else w2,
            pooled, pool_max if add_maxpool else pooled, hidden, gate, b0,
            HAS_BIAS=has_bias, WITH_MAX=add_maxpool,
            BLOCK_C=block_c, BLOCK_RD=block_rd, ACC=acc_dtype(x.dtype), num_warps=4,
        )

    y = channel_gate_forward(x, gate, launch_gate, with_max=add_maxpool, epilogue=Epilogue(act, shortcut))
    return y, pooled, pool_max, hidden, gate


def se_backward(dy, x, w1, w2, has_bias: bool, pooled, pool_max, hidden, gate,
                act: int = 0, out=None, shortcut=None):
    """Gradients of se_forward from dy [B, C, H, W] and its saved vectors (with an epilogue:
    its act, the forward's output ``out`` for ReLU, the shortcut for SiLU).

    Returns (dx, dw1, db1, dw2, db2, dshortcut); weight gradients have the weights' shapes and
    dtypes; db1/db2 are None without bias, dshortcut None without an epilogue. Deterministic.
    """
    B, C, H, W = x.shape
    RD = w1.shape[0]
    dt, dev = acc_torch_dtype(x.dtype), x.device
    w1f, w2f = w1.reshape(RD, C).contiguous(), w2.reshape(C, RD).contiguous()
    with_max = pool_max.numel() > 0
    dz = config.new_buffer((B, C), dt, dev)
    dh = config.new_buffer((B, RD), dt, dev)
    mean_coef = config.new_buffer((B, C), dt, dev)
    max_coef = config.new_buffer((B, C), dt, dev) if with_max else None
    block_c, block_rd = gate_tiles(C, RD)

    def launch_gate_backward(parts, b0, nb):
        se_gate_backward_kernel[(nb,)](
            parts.sums, parts.counts if with_max else parts.sums, parts.sums.shape[0],
            B, C, RD, H * W, w1f, w2f, hidden, gate,
            dz, dh, mean_coef, max_coef if with_max else mean_coef, b0,
            WITH_MAX=with_max,
            BLOCK_C=block_c, BLOCK_RD=block_rd, ACC=acc_dtype(x.dtype), num_warps=4,
        )

    dx, dres = channel_gate_backward(dy, x, gate, launch_gate_backward, mean_coef,
                                     pool_max if with_max else None, max_coef, Epilogue(act, shortcut, out))
    return (dx, *mlp_weight_grads(dz, hidden, dh, pooled, w1, w2, has_bias), dres)
