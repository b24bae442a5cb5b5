"""fusedattn: fused Triton kernels for CNN attention blocks, as drop-in nn.Modules.

    import fusedattn
    se = fusedattn.SE(256)                       # timm SEModule arguments and state_dict
    se = fusedattn.SE.from_module(timm_se)       # or convert an existing block
    y = se(x)                                    # Triton on CUDA, plain PyTorch on CPU

Layers: ``fusedattn.kernels`` (Triton kernels and launchers) -> ``fusedattn.ops``
(torch.library custom ops with autograd) -> ``fusedattn.modules`` (nn.Modules).
``fusedattn.reference`` holds the plain-PyTorch blocks they are tested against.
"""
from . import models, ops, reference
from .backend import get_backend, set_backend, use_backend
from .convert import ConversionReport, convert, convert_sync_batchnorm
from .modules import (CBAM, CECA, CoordAtt, CoordAttn, ECA, PSA, SE, ChannelAttention, EffectiveSE, SelectiveKernel, SqueezeExcitation,
                      SimAM, SqueezeExcite, UltralyticsCBAM)
from .ops import cbam, coord_attention, eca, psa_attention, se, simam, sk_attention

SEModule, EcaModule, CecaModule, CbamModule = SE, ECA, CECA, CBAM  # timm's names
EffectiveSEModule = EffectiveSE
PSAModule = PSA  # EPSANet's name
simam_module = SimAM  # the SimAM authors' name

__version__ = "0.1.0"
__all__ = ["SE", "SqueezeExcite", "SqueezeExcitation", "EffectiveSE", "EffectiveSEModule", "ChannelAttention", "ECA", "CECA", "CBAM", "UltralyticsCBAM", "PSA", "SEModule", "EcaModule", "CecaModule", "CbamModule",
           "PSAModule", "SelectiveKernel", "SimAM", "simam_module", "simam", "CoordAttn", "CoordAtt", "coord_attention", "se", "eca", "cbam", "psa_attention", "sk_attention",
           "get_backend", "set_backend", "use_backend", "ops", "reference", "models", "convert",
           "convert_sync_batchnorm", "ConversionReport"]
