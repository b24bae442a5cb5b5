"""SE launchers: fused forward and backward of  y = x * gate(W2 act(W1 pool(x) + b1) + b2)
(act and gate: activation-table codes, kernels/activations.py)."""

from . import config
from .activations import RELU, SIGMOID
from .batch_outer import mlp_weight_grads, new_weight_grads
from .channel_gate import Epilogue, channel_gate_backward, channel_gate_forward
from .layout import acc_dtype, acc_torch_dtype, channel_view
from .mlp_gate import mlp_gate_backward, mlp_gate_forward, use_mlp_gate
from .one_launch import se_fits_one_launch, se_one_launch, se_one_launch_backward
from .se_gate import gate_tiles
from .se_cooperative import se_cooperative, se_cooperative_backward, se_fits_cooperative
from .se_pool_gate import se_pool_gate, se_pool_gate_backward
from .arrival import arrival_counters


def se_forward(x, w1, b1, w2, b2, add_maxpool: bool, shortcut=None, act: int = 0, mlp_act: int = RELU,
               gate_fn: int = SIGMOID):
    """x [B, C, H, W]; w1 [RD, C(,1,1)], b1 [RD] | None; w2 [C, RD(,1,1)], b2 [C] | None;
    mlp_act, gate_fn: the hidden activation and the gate (activation-table codes). w2 None: the
    one-layer gate gate_fn(W1 p + b1), W1 [C, C] (timm's EffectiveSEModule, Ultralytics'
    ChannelAttention; always the parallel gate kernels, hidden [B, 0]);
    optional epilogue: y = act(x * gate + shortcut) (act: an activation-table code).

    Returns (y [B, C, H, W] in x's dtype and memory format, pooled [B, C] (fc1's input),
    pool_max [B, C] (or [0] without add_maxpool), hidden [B, RD] (pre-activation), gate [B, C]);
    the vectors are float32 (float64 for float64 x).
    """
    B, C, H, W = x.shape
    RD = w1.shape[0]
    dt, dev = acc_torch_dtype(x.dtype), x.device
    one_layer = w2 is None
    w1, w2 = w1.contiguous(), _contiguous(w2)   # read as [RD, C] and [C, RD] by pointer arithmetic
    b1, b2 = _contiguous(b1), _contiguous(b2)
    pooled = config.new_buffer((B, C), dt, dev)
    pool_max = config.new_buffer((B, C) if add_maxpool else (0,), dt, dev)
    hidden = config.new_buffer((B, 0 if one_layer else RD), dt, dev)
    gate = config.new_buffer((B, C), dt, dev)
    xv = channel_view(x)   # x itself unless H, W do not merge (then the one copy every path reads)
    x = xv.tensor
    plan = "pipeline" if one_layer else se_plan(xv, w1)
    if plan != "pipeline":   # one launch: one program per sample, or many cooperating (a small call)
        y = config.new_like(xv.tensor)
        launch = se_one_launch if plan == "one-program" else se_cooperative
        launch(xv, channel_view(y), channel_view(shortcut) if shortcut is not None else None, act,
               w1, b1, w2, b2, pooled, pool_max, hidden, gate, mlp_act, gate_fn)
        return y, pooled, pool_max, hidden, gate
    epilogue = Epilogue(act, shortcut)
    if one_layer or use_mlp_gate(x, w1):   # wide weights: the gate spread over many programs

        def launch_gate(parts, b0, nb):
            mlp_gate_forward(parts, B, C, RD, H * W, w1, b1, w2, b2, pooled, pool_max, hidden, gate, b0, nb,
                             acc_dtype(x.dtype), mlp_act=mlp_act, gate_fn=gate_fn)

        return channel_gate_forward(x, gate, launch_gate, add_maxpool, epilogue), pooled, pool_max, hidden, gate
    counters, tiles = arrival_counters(dev, B), gate_tiles(C, RD)

    def pool_with_gate(xv, plan, parts, b0, nb):   # one program per sample's gate, at the pool's end
        se_pool_gate(xv, plan, parts, counters, b0, nb, w1, b1, w2, b2, pooled, pool_max, hidden, gate, tiles,
                     mlp_act, gate_fn)

    y = channel_gate_forward(x, gate, None, add_maxpool, epilogue, pool_with_gate=pool_with_gate)
    return y, pooled, pool_max, hidden, gate


def se_plan(xv, w1, backward: bool = False) -> str:
    """SE's plan for x (a ChannelView) and W1, forward or backward: "cooperative"
    (kernels/se_cooperative.py) where forced or where one program per sample does not fit and the
    call is small, "one-program" (kernels/one_launch.py), else "pipeline" (chunked pool + gate,
    rescale)."""
    forced = config.cooperative_backward if backward and config.cooperative_backward is not None else \
        config.cooperative
    if forced:
        return "cooperative"
    if se_fits_one_launch(xv.tensor, w1, passes=4 if backward else 3):
        return "one-program"
    return "cooperative" if se_fits_cooperative(xv, backward) else "pipeline"


def se_backward(dy, x, w1, w2, has_bias: bool, pooled, pool_max, hidden, gate,
                act: int = 0, out=None, shortcut=None, mlp_act: int = RELU, gate_fn: int = SIGMOID):
    """Gradients of se_forward from dy [B, C, H, W] and its saved vectors (with an epilogue:
    its act, the forward's output ``out`` for ReLU, the shortcut for the other activations).

    Returns (dx, dw1, db1, dw2, db2, dshortcut); weight gradients have the weights' shapes and
    dtypes; db1/db2 are None without bias, dshortcut None without an epilogue; w2 None (the
    one-layer gate): dw2, db2 None. Deterministic.
    """
    B, C, H, W = x.shape
    RD = w1.shape[0]
    dt, dev = acc_torch_dtype(x.dtype), x.device
    one_layer = w2 is None
    w1f, w2f = w1.contiguous(), _contiguous(w2)   # read as [RD, C] and [C, RD]
    with_max = pool_max.numel() > 0
    dz = None if one_layer else config.new_buffer((B, C), dt, dev)
    dh = config.new_buffer((B, RD), dt, dev)
    epilogue = Epilogue(act, shortcut, out)
    xv = channel_view(x)   # x itself unless H, W do not merge (then the one copy every path reads)
    x = xv.tensor
    plan = "pipeline" if one_layer or epilogue.active else se_plan(xv, w1, backward=True)
    if plan != "pipeline":   # one launch: one program per sample, or many cooperating (a small call)
        dx = config.new_like(xv.tensor)
        launch = se_one_launch_backward if plan == "one-program" else se_cooperative_backward
        if B > 1:
            launch(channel_view(dy), xv, channel_view(dx), w1f, w2f, hidden, gate, pool_max, dz, dh,
                   mlp_act=mlp_act, gate_fn=gate_fn)
            return (dx, *mlp_weight_grads(dz, hidden, dh, pooled, w1, w2, has_bias, mlp_act), None)
        grads = new_weight_grads(w1, w2, has_bias)   # a batch of one: written by the same launch
        launch(channel_view(dy), xv, channel_view(dx), w1f, w2f, hidden, gate, pool_max, dz, dh, pooled, grads,
               mlp_act=mlp_act, gate_fn=gate_fn)
        dw1, db1, dw2, db2 = grads
        return dx, dw1, db1, dw2, db2, None
    mean_coef = config.new_buffer((B, C), dt, dev)
    max_coef = config.new_buffer((B, C), dt, dev) if with_max else None
    ref_max = pool_max if with_max else None
    if one_layer or use_mlp_gate(x, w1):   # wide weights: the gate backward spread over many programs

        def launch_gate_backward(parts, b0, nb):
            mlp_gate_backward(parts, B, C, RD, H * W, w1f, w2f, hidden, gate, dz, dh, mean_coef, max_coef, b0, nb,
                              acc_dtype(x.dtype), mlp_act=mlp_act, gate_fn=gate_fn)

        dx, dres = channel_gate_backward(dy, x, gate, launch_gate_backward, mean_coef, ref_max, max_coef, epilogue)
    else:   # one program per sample's gate backward, at the end of the pool launch
        counters, tiles = arrival_counters(dev, B), gate_tiles(C, RD)

        def pool_with_gate(xv, g, plan, parts, b0, nb):
            se_pool_gate_backward(xv, g, ref_max, plan, parts, counters, b0, nb, w1f, w2f, hidden, gate, dz, dh,
                                  mean_coef, max_coef, tiles, mlp_act, gate_fn)

        dx, dres = channel_gate_backward(dy, x, gate, None, mean_coef, ref_max, max_coef, epilogue,
                                         pool_with_gate=pool_with_gate)
    return (dx, *mlp_weight_grads(dz, hidden, dh, pooled, w1, w2, has_bias, mlp_act), dres)


def _contiguous(t):
    return t.contiguous() if t is not None else None
