"""PSA's attention tail (after the four branch convs) as one opaque op:

    s_p = sigmoid(fc2(relu(fc1(mean_hw x_p))));  a = softmax_p(s);  out = cat(x_3 a_3, ..., x_0 a_0)

``fusedattn::psa_forward`` / ``fusedattn::psa_backward``: torch.library custom ops over the list
of split tensors, with fake impls and registered autograd. CUDA tensors run the Triton kernels
(fusedattn.kernels.psa); CPU tensors the plain-PyTorch math below.
"""
import torch
from torch import Tensor

from .. import kernels
from ..backend import uses_triton
from ..kernels.layout import suggested_memory_format
from .registration import define_block
from .validation import acc_dtype, check_branches, check_channel_mlp


# ---- plain-PyTorch path (CPU) -------------------------------------------------------

def psa_forward_torch(xs, w1, b1, w2, b2):
    P = len(xs)
    B, C = xs[0].shape[:2]
    RD = w1.shape[0]
    dt = acc_dtype(xs[0])
    pooled = torch.cat([x.mean((2, 3), dtype=dt) for x in xs])
    hidden = pooled @ w1.reshape(RD, C).to(dt).t() + (b1.to(dt) if b1 is not None else 0)
    se = torch.sigmoid(hidden.relu() @ w2.reshape(C, RD).to(dt).t() + (b2.to(dt) if b2 is not None else 0))
    att = torch.softmax(se.view(P, B, C), dim=0).reshape(P * B, C)
    out = torch.cat([xs[p] * att[p * B:(p + 1) * B, :, None, None] for p in reversed(range(P))], dim=1)
    return (out.to(xs[0].dtype).contiguous(memory_format=suggested_memory_format(xs[0])),
            pooled, hidden, se, att)


def psa_backward_torch(dout, xs, w1, w2, has_bias, pooled, hidden, se, att):
    P = len(xs)
    B, C, H, W = xs[0].shape
    RD = w1.shape[0]
    dt = se.dtype
    dys = [dout[:, (P - 1 - p) * C:(P - p) * C].to(dt) for p in range(P)]
    datt = torch.cat([(dys[p] * xs[p].to(dt)).sum((2, 3)) for p in range(P)]).view(P, B, C)
    a = att.view(P, B, C)
    ds = (a * (datt - (a * datt).sum(0, keepdim=True))).reshape(P * B, C)
    dz = ds * se * (1 - se)
    dh = (dz @ w2.reshape(C, RD).to(dt)) * (hidden > 0)
    dp = dh @ w1.reshape(RD, C).to(dt) / (H * W)
    fmt = suggested_memory_format(xs[0])
    dxs = [(dys[p] * att[p * B:(p + 1) * B, :, None, None] + dp[p * B:(p + 1) * B, :, None, None])
           .to(xs[p].dtype).contiguous(memory_format=fmt) for p in range(P)]
    dw2 = (dz.t() @ hidden.relu()).to(w2.dtype).reshape(w2.shape)
    dw1 = (dh.t() @ pooled).to(w1.dtype).reshape(w1.shape)
    db2 = dz.sum(0).to(w2.dtype) if has_bias else None
    db1 = dh.sum(0).to(w1.dtype) if has_bias else None
    return dxs, dw1, db1, dw2, db2


# ---- custom ops ----------------------------------------------------------------------

def psa_forward_impl(xs: list[Tensor], w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(out [B, P*C, H, W], pooled [P*B, C], hidden [P*B, RD], se [P*B, C], att [P*B, C])."""
    impl = kernels.psa_forward if uses_triton(xs[0]) else psa_forward_torch
    return impl(xs, w1, b1, w2, b2)


def psa_backward_impl(dout: Tensor, xs: list[Tensor], w1: Tensor, w2: Tensor, has_bias: bool,
                      pooled: Tensor, hidden: Tensor, se: Tensor, att: Tensor) -> list[Tensor]:
    """[dx_0, ..., dx_{P-1}, dw1, db1, dw2, db2]; db1/db2 None without bias."""
    impl = kernels.psa_backward if uses_triton(xs[0]) else psa_backward_torch
    dxs, dw1, db1, dw2, db2 = impl(dout, xs, w1, w2, has_bias, pooled, hidden, se, att)
    return [*dxs, dw1, db1, dw2, db2]


def _setup_context(ctx, inputs, output):
    xs, w1, b1, w2, b2 = inputs
    _, pooled, hidden, se, att = output
    ctx.has_bias, ctx.n_splits = b1 is not None, len(xs)
    ctx.save_for_backward(*xs, w1, w2, pooled, hidden, se, att)


def _gradients(ctx, run, dout, *_unused):
    saved = ctx.saved_tensors
    P = ctx.n_splits
    xs, (w1, w2, pooled, hidden, se, att) = list(saved[:P]), saved[P:]
    grads = run(dout, xs, w1, w2, ctx.has_bias, pooled, hidden, se, att)
    return list(grads[:P]), *grads[P:]


psa_block = define_block("psa", psa_forward_impl, psa_backward_impl, _setup_context, _gradients, psa_forward_torch)


# ---- functional API ------------------------------------------------------------------

def psa_attention(splits, fc1_weight: Tensor, fc1_bias: Tensor | None, fc2_weight: Tensor,
                  fc2_bias: Tensor | None) -> Tensor:
    """PSA's attention tail on the branch outputs ``splits`` (P tensors [B, C, H, W], same shape,
    dtype and device): shared SE weights, softmax across splits, weighted splits concatenated
    in reverse order (last split first, EPSANet's layout) -> [B, P*C, H, W]."""
    splits = check_branches(splits, "splits")
    check_channel_mlp(splits[0], fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    return psa_block(splits, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
