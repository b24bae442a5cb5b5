"""fusedattn.PSA: drop-in for EPSANet's PSAModule (same arguments, same state_dict)."""
from torch import nn

from ..ops.psa import psa_attention
from ..ops.validation import check_activation
from ..ops.unsupported import NotScriptable
from ..reference.psa import PSAModule
from .conversion import autocast_softmax_output, copy_into, require


class PSA(NotScriptable, PSAModule):
    """Fused Pyramid Split Attention. The four branch convs stay cuDNN/PyTorch convs; the
    attention tail (four pools, shared SE, softmax across splits, weighting and the reversed
    concatenation: split 4 first, as EPSANet's published code) is one fused op.

    Arguments and state_dict as EPSANet's PSAModule (the reference's layout, which this class
    extends): conv_1..conv_4.weight, se.fc1.{weight,bias}, se.fc2.{weight,bias}.
    """

    def __init__(self, inplans, planes, conv_kernels=(3, 5, 7, 9), stride=1, conv_groups=(1, 4, 8, 16)):
        require(len(conv_kernels) == len(conv_groups) == 4, "PSA takes four conv_kernels and four conv_groups")
        super().__init__(inplans, planes, conv_kernels, stride, conv_groups)
        self.inplans = inplans

    def forward(self, x):
        check_activation(x, "x", self.inplans)
        return autocast_softmax_output(psa_attention(self.splits(x), self.se.fc1.weight, self.se.fc1.bias,
                                                     self.se.fc2.weight, self.se.fc2.bias))

    @classmethod
    def from_module(cls, m: nn.Module) -> "PSA":
        """A fused PSA with m's weights, device, dtype and mode; m has EPSANet's layout."""
        convs = [getattr(m, f"conv_{i}", None) for i in range(1, 5)]
        fc1, fc2 = getattr(getattr(m, "se", None), "fc1", None), getattr(getattr(m, "se", None), "fc2", None)
        require(all(isinstance(c, nn.Conv2d) for c in convs) and isinstance(fc1, nn.Conv2d)
                and isinstance(fc2, nn.Conv2d),
                f"PSA.from_module: {type(m).__name__} lacks conv_1..conv_4 and se.fc1/se.fc2")
        require(all(c.bias is None and c.padding == (c.kernel_size[0] // 2,) * 2 for c in convs),
                "PSA.from_module: the branch convs must be bias-free with padding k // 2")
        new = cls(convs[0].in_channels, 4 * convs[0].out_channels,
                  conv_kernels=[c.kernel_size[0] for c in convs], stride=convs[0].stride[0],
                  conv_groups=[c.groups for c in convs])
        return copy_into(new, m)
