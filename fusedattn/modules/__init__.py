"""Drop-in nn.Modules, one file per block."""
from .cbam import CBAM
from .eca import CECA, ECA
from .psa import PSA
from .se import SE
from .sk import SelectiveKernel

__all__ = ["SE", "ECA", "CECA", "CBAM", "PSA", "SelectiveKernel"]
