"""ECA launchers: fused forward and backward of  y = x * sigmoid(conv1d_k(pool(x)))."""

from . import config
from .channel_gate import Epilogue, channel_gate_backward, channel_gate_forward
from .eca_gate import eca_block_c, eca_gate_backward_kernel, eca_gate_forward_kernel, eca_weight_grad
from .layout import acc_dtype, acc_torch_dtype, channel_view
from .one_launch import eca_fits_one_launch, eca_one_launch, eca_one_launch_backward
from .launch import fast


def eca_forward(x, weight, bias, circular: bool, shortcut=None, act: int = 0):
    """x [B, C, H, W]; weight [1, 1, K] (K odd); bias [1] | None; circular padding or zeros;
    optional epilogue: y = act(x * gate + shortcut) (act: an activation-table code).

    Returns (y [B, C, H, W] in x's dtype and memory format, pooled [B, C], gate [B, C]).
    """
    B, C, H, W = x.shape
    K = weight.shape[-1]
    dt, dev = acc_torch_dtype(x.dtype), x.device
    w = weight if weight.is_contiguous() else weight.contiguous()   # read as [K]
    pooled = config.new_buffer((B, C), dt, dev)
    gate = config.new_buffer((B, C), dt, dev)
    if eca_fits_one_launch(x):
        xv = channel_view(x)
        y = config.new_like(xv.tensor)
        eca_one_launch(xv, channel_view(y), channel_view(shortcut) if shortcut is not None else None, act,
                       w, bias, circular, pooled, gate)
        return y, pooled, gate
    block_c = eca_block_c(C)

    def launch_gate(parts, b0, nb):
        fast(eca_gate_forward_kernel)[(nb, -(-C // block_c))](
            parts.sums, parts.sums.shape[0], B, C, H * W, w,
            bias if bias is not None else w, pooled, gate, b0,
            K=K, CIRCULAR=circular, HAS_BIAS=bias is not None,
            BLOCK_C=block_c, ACC=acc_dtype(x.dtype), num_warps=4,
        )

    y = channel_gate_forward(x, gate, launch_gate, epilogue=Epilogue(act, shortcut))
    return y, pooled, gate


def eca_backward(dy, x, weight, has_bias: bool, circular: bool, pooled, gate, act: int = 0, out=None,
                 shortcut=None):
    """Gradients of eca_forward: (dx, dweight [1, 1, K], dbias [1] | None, dshortcut | None)."""
    B, C, H, W = x.shape
    K = weight.shape[-1]
    dt, dev = acc_torch_dtype(x.dtype), x.device
    w = weight if weight.is_contiguous() else weight.contiguous()   # read as [K]
    dz = config.new_buffer((B, C), dt, dev)
    dw = config.new_buffer(weight.shape, weight.dtype, dev)   # written as [K]
    db = config.new_buffer((1,), weight.dtype, dev) if has_bias else None
    block_c = eca_block_c(C)
    epilogue = Epilogue(act, shortcut, out)
    weight_grads_done = False
    if not epilogue.active and eca_fits_one_launch(x):
        xv = channel_view(x)
        dx, dres = config.new_like(xv.tensor), None
        weight_grads_done = eca_one_launch_backward(channel_view(dy), xv, channel_view(dx), w, circular, gate, dz,
                                                    pooled, dw, db)
    else:
        mean_coef = config.new_buffer((B, C), dt, dev)

        def launch_gate_backward(parts, b0, nb):
            fast(eca_gate_backward_kernel)[(nb, -(-C // block_c))](
                parts.sums, parts.sums.shape[0], B, C, H * W, w, gate, dz, mean_coef, b0,
                K=K, CIRCULAR=circular, BLOCK_C=block_c, ACC=acc_dtype(x.dtype), num_warps=4,
            )

        dx, dres = channel_gate_backward(dy, x, gate, launch_gate_backward, mean_coef, epilogue=epilogue)
    if not weight_grads_done:
        eca_weight_grad(dz, pooled, dw, db, K, circular, acc_dtype(x.dtype))
    return dx, dw, db, dres
