"""Plain-PyTorch reference blocks (timm's layouts and the common tutorial layouts).

These are the spec: the fused modules load their state_dicts unchanged and the tests
check every fused path against them in float64.
"""
from .cbam import CbamModule, ConvBiasCBAM, OriginalCBAM, SpatialAttention, TutorialCBAM, UltralyticsCBAM
from .channels import eca_kernel_size, make_divisible
from .coord_attn import CoordAtt, CoordAttn
from .eca import CecaModule, EcaModule
from .psa import PSAModule, SEWeightModule, psa_attention_reference
from .se import ChannelAttention, EffectiveSEModule, LinearSE, SEModule, SqueezeExcitation, SqueezeExcite
from .simam import SimAM, simam_module
from .sk import ConvNormAct, SelectiveKernel, SelectiveKernelAttn, sk_attention_reference

__all__ = ["SEModule", "LinearSE", "SqueezeExcite", "SqueezeExcitation", "EffectiveSEModule", "ChannelAttention", "EcaModule", "CecaModule", "CbamModule", "UltralyticsCBAM", "SpatialAttention", "TutorialCBAM",
           "ConvBiasCBAM", "OriginalCBAM", "PSAModule", "SEWeightModule", "psa_attention_reference",
           "SelectiveKernel", "SelectiveKernelAttn", "ConvNormAct", "sk_attention_reference", "make_divisible", "eca_kernel_size", "SimAM", "simam_module", "CoordAttn", "CoordAtt"]
