"""Triton kernels and their launchers (no autograd, no nn.Module).

Installed as ``fusedattn.kernels``. Every launcher takes and returns plain tensors;
the autograd wiring lives in ``fusedattn.ops``.

Files, one concept each:
  config        tunables (L2 chunk budget, program targets) and output poisoning
  layout        [B, C, H, W] -> strided [B, C, HW] views without copies
  channel_pool  per-(b, c) sums / maxima / tie counts over H*W, split over HW
  channel_scale y = act(x * gate[b, c] + shortcut) and the input gradient of x * gate
  batch_outer   deterministic sums over the batch for weight gradients
  se_gate       SE's two tiny layers + sigmoid, forward and backward
  arrival       arrival counters: the last program of a group does the group's follow-up
  se_pool_gate  SE's pool pass with the gate in its last program per sample, both ways
  eca_gate      ECA's k-tap channel conv + sigmoid, forward and backward
  channel_gate  the chunked pool -> gate -> scale pipeline shared by SE and ECA
  cbam_gate     CBAM's two-branch channel MLP gate, forward and backward
  spatial_pool  per-pixel mean / max / sum(dy * .) over channels of x * ca (CBAM's maps)
  spatial_gate  CBAM's k x k conv + BatchNorm + sigmoid on those maps, forward and backward
  cbam_grad     CBAM's backward passes over x after the spatial gate
  split_softmax softmax across PSA's splits, forward and backward
  path_sum      branch-tensor setup (PSA, SK); pool / weighted sum over SK's paths and their gradients
  epilogue      residual epilogue act(x * gate + shortcut): the activation's gradient pass
  coord_attn    Coordinate Attention: strip means / strip gradient sums, the strip-gated scale
  simam         SimAM: per-(b, c) statistics and the energy gate, one launch each way
  sk_gate       SK's fc_reduce, BatchNorm, fc_select and path softmax, forward and backward
  se, eca, cbam, psa, sk   block launchers
"""
from .cbam import cbam_apply, cbam_channel_backward, cbam_channel_forward, cbam_spatial_grad_inputs
from .eca import eca_backward, eca_forward
from .psa import psa_backward, psa_forward
from .se import se_backward, se_forward
from .sk import sk_backward, sk_forward
from .spatial_gate import spatial_gate_backward, spatial_gate_forward

__all__ = ["se_forward", "se_backward", "eca_forward", "eca_backward", "cbam_channel_forward",
           "cbam_apply", "cbam_spatial_grad_inputs", "cbam_channel_backward", "psa_forward", "psa_backward",
           "sk_forward", "sk_backward", "spatial_gate_forward", "spatial_gate_backward"]
