"""Autograd-aware ops, one torch.library custom op pair (forward, backward) per block."""
from .cbam import cbam
from .coord_attn import coord_attention
from .eca import eca
from .psa import psa_attention
from .se import se
from .simam import simam
from .sk import sk_attention

__all__ = ["se", "eca", "cbam", "psa_attention", "sk_attention", "simam", "coord_attention"]
