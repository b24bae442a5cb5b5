"""Drop-in nn.Modules, one file per block."""
from .cbam import CBAM, UltralyticsCBAM
from .coord_attn import CoordAtt, CoordAttn
from .eca import CECA, ECA
from .psa import PSA
from .se import SE, ChannelAttention, EffectiveSE, SqueezeExcitation, SqueezeExcite
from .simam import SimAM
from .sk import SelectiveKernel

__all__ = ["SE", "SqueezeExcite", "SqueezeExcitation", "EffectiveSE", "ChannelAttention", "ECA", "CECA", "CBAM", "UltralyticsCBAM", "PSA", "SelectiveKernel", "SimAM", "CoordAttn", "CoordAtt"]
