"""fusedattn: fused Triton kernels for CNN attention blocks, as drop-in nn.Modules.

    import fusedattn
    se = fusedattn.SE(256)                       # timm SEModule arguments and state_dict
    se = fusedattn.SE.from_module(timm_se)       # or convert an existing block
    y = se(x)                                    # Triton on CUDA, plain PyTorch on CPU

Layers: ``fusedattn.kernels`` (Triton kernels and launchers) -> ``fusedattn.ops``
(torch.library custom ops with autograd) -> ``fusedattn.modules`` (nn.Modules).
``fusedattn.reference`` holds the plain-PyTorch blocks they are tested against.
"""
from . import ops, reference
from .backend import get_backend, set_backend, use_backend
from .modules import CBAM, CECA, ECA, SE
from .ops import cbam, eca, se

SEModule, EcaModule, CecaModule, CbamModule = SE, ECA, CECA, CBAM  # timm's names

__version__ = "0.1.0"
__all__ = ["SE", "ECA", "CECA", "CBAM", "SEModule", "EcaModule", "CecaModule", "CbamModule",
           "se", "eca", "cbam",
           "get_backend", "set_backend", "use_backend", "ops", "reference"]
