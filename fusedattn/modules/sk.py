"""fusedattn.SelectiveKernel: drop-in for timm's SelectiveKernel (same arguments, same state_dict)."""
import copy

import torch
from torch import nn

from ..ops.sk import sk_attention
from ..ops.validation import check_activation
from ..ops.sync_batchnorm import sk_synchronized, synchronizing
from ..ops.unsupported import NotScriptable
from ..reference.sk import SelectiveKernel as SelectiveKernelReference
from ..reference.sk import sk_paths_config
from .conversion import autocast_softmax_output, copy_into, is_relu, require, update_running_stats


def fused_sk_tail(attn: nn.Module, paths, training: bool, sync_group=False):
    """SK's fused tail with the weights of ``attn`` (timm's SelectiveKernelAttn layout): batch
    statistics and a running-stat update like nn.BatchNorm2d in training, running ones otherwise.
    ``sync_group`` (a process group, None for the default one; False: off): in training, the
    statistics of the whole group's batch (plain PyTorch, ops/sync_batchnorm.py)."""
    bn = attn.bn
    if training and sync_group is not False and synchronizing(sync_group):
        paths = list(paths.unbind(1)) if isinstance(paths, torch.Tensor) else list(paths)
        y, mean, var, count = sk_synchronized(paths, attn.fc_reduce.weight, bn.weight, bn.bias,
                                              attn.fc_select.weight, bn.eps, sync_group)
        if bn.track_running_stats:
            update_running_stats(bn, mean, var, count)
        return autocast_softmax_output(y)
    y, mean, var = sk_attention(paths, attn.fc_reduce.weight, bn.weight, bn.bias, attn.fc_select.weight,
                                bn.running_mean, bn.running_var, bn_training=training or bn.running_mean is None,
                                eps=bn.eps, return_bn_stats=True)
    if training and bn.track_running_stats:
        update_running_stats(bn, mean, var, y.shape[0])
    return autocast_softmax_output(y)


class SelectiveKernel(NotScriptable, SelectiveKernelReference):
    """Fused Selective Kernel conv. The P branch convs (ConvNormAct: conv, BatchNorm, act) stay
    cuDNN/PyTorch; the attention tail (pool of the path sum, fc_reduce, BatchNorm, ReLU,
    fc_select, softmax across paths, weighted sum of the paths) is one fused op that reads the
    paths twice and writes the output once, without stacking them.

    timm's arguments and state_dict: paths.{i}.conv.weight, paths.{i}.bn.*, attn.fc_reduce.weight,
    attn.bn.*, attn.fc_select.weight (the layout is the reference's, fusedattn.reference.sk).
    ``attn`` is timm's SelectiveKernelAttn (its own forward returns the [B, P, C, 1, 1] weights,
    unfused, as timm's). In train() the attention BatchNorm normalises with batch statistics and
    updates its running statistics like nn.BatchNorm2d.
    """

    #: synchronized mode (fusedattn.convert_sync_batchnorm): the attention BatchNorm's batch
    #: statistics over every process of ``process_group`` (None: the default group) in train()
    sync_batchnorm = False
    process_group = None

    def __init__(self, in_channels, out_channels=None, kernel_size=None, stride=1, dilation=1, groups=1,
                 rd_ratio=1.0 / 16, rd_channels=None, rd_divisor=8, keep_3x3=True, split_input=True,
                 act_layer=nn.ReLU, norm_layer=nn.BatchNorm2d, aa_layer=None, drop_layer=None):
        require(aa_layer is None and drop_layer is None,
                "SelectiveKernel builds paths without aa_layer/drop_layer; convert such a module with "
                "SelectiveKernel.from_module (it keeps the original paths)")
        require(not split_input or in_channels % len(sk_paths_config(kernel_size, dilation, keep_3x3)[0]) == 0,
                f"split_input needs in_channels ({in_channels}) divisible by the number of paths")
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, groups, rd_ratio, rd_channels,
                         rd_divisor, keep_3x3, split_input, act_layer, norm_layer)

    def forward(self, x):
        check_activation(x, "x", self.in_channels)
        return self.attention(self.path_outputs(x))

    def attention(self, paths):
        """The fused tail on the P path outputs (a list, or stacked [B, P, C, H, W])."""
        return fused_sk_tail(self.attn, paths, self.training,
                             self.process_group if self.sync_batchnorm else False)

    def extra_repr(self):
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, num_paths={self.num_paths}, "
                f"attn_channels={self.attn.fc_reduce.out_channels}, split_input={self.split_input}")

    @classmethod
    def from_module(cls, m: nn.Module) -> "SelectiveKernel":
        """A fused SelectiveKernel with m's paths (kept as they are: any conv/norm/act, aa or drop
        layers), attention weights, buffers, device, dtype and mode. m has timm's layout."""
        attn, paths = getattr(m, "attn", None), getattr(m, "paths", None)
        parts = [getattr(attn, n, None) for n in ("fc_reduce", "bn", "fc_select")]
        require(isinstance(paths, nn.ModuleList) and len(paths) > 0 and isinstance(parts[0], nn.Conv2d)
                and isinstance(parts[1], nn.BatchNorm2d) and isinstance(parts[2], nn.Conv2d)
                and all(hasattr(m, n) for n in ("in_channels", "split_input")),
                f"SelectiveKernel.from_module: {type(m).__name__} lacks timm's SelectiveKernel layout "
                "(paths, attn.fc_reduce / attn.bn / attn.fc_select, in_channels, split_input)")
        fc_reduce, bn, fc_select = parts
        require(is_relu(getattr(attn, "act", "relu")),
                "SelectiveKernel.from_module: the attention activation is not ReLU")
        require(fc_reduce.bias is None and fc_select.bias is None and fc_reduce.kernel_size == (1, 1)
                and fc_select.kernel_size == (1, 1) and fc_reduce.groups == 1 and fc_select.groups == 1,
                "SelectiveKernel.from_module: fc_reduce / fc_select must be bias-free ungrouped 1x1 convs")
        require(bn.affine, "SelectiveKernel.from_module: the attention BatchNorm must be affine")
        P, C = len(paths), fc_reduce.in_channels
        require(fc_select.out_channels == P * C, "SelectiveKernel.from_module: fc_select is not [P*C, A]")
        new = cls(m.in_channels, C, kernel_size=[3] * P, rd_channels=fc_reduce.out_channels,
                  split_input=m.split_input)
        new.attn.bn.eps, new.attn.bn.momentum = bn.eps, bn.momentum
        new.paths = copy.deepcopy(paths)
        return copy_into(new, m)
