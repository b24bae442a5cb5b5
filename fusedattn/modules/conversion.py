"""Helpers the fused modules share for building themselves from existing modules."""
import torch
from torch import nn

from ..ops.activations import FORWARD, code_arg, code_of_name


def require(condition: bool, message: str) -> None:
    """Raise ValueError(message) unless condition holds."""
    if not condition:
        raise ValueError(message)


_PROBE = torch.linspace(-8.0, 8.0, 65, dtype=torch.float64)


def _probe(fn) -> torch.Tensor | None:
    """fn's values on [-8, 8] in float64 (fn a module class, module instance or plain function
    without parameters), or None if it cannot be probed."""
    try:
        if isinstance(fn, type):
            if not issubclass(fn, nn.Module):
                return None
            fn = fn()
        if isinstance(fn, nn.Module) and any(True for _ in fn.parameters()):
            return None
        with torch.no_grad():
            out = fn(_PROBE.clone())
        ok = isinstance(out, torch.Tensor) and out.shape == _PROBE.shape
        return out.double() if ok else None
    except Exception:  # noqa: BLE001 - anything that cannot be probed is not the function
        return None


def _same(out: torch.Tensor | None, reference) -> bool:
    return out is not None and bool(torch.allclose(out, reference(_PROBE), rtol=0.0, atol=1e-12))


def computes(fn, name: str, reference) -> bool:
    """True if ``fn`` is the elementwise function ``reference`` (torch.sigmoid, torch.relu) in any
    spelling a model may use: its name, or a module class (nn.Sigmoid, timm's own Sigmoid), module
    instance or plain function that, without parameters, gives ``reference``'s values on [-8, 8]
    (probed in float64, so hard sigmoid, ReLU6, leaky ReLU, GELU ... do not pass)."""
    if isinstance(fn, str):
        return fn.lower() == name
    return _same(_probe(fn), reference)


def activation_code_of(fn) -> int | None:
    """The activation table's code (kernels/activations.py) of ``fn``, recognised by what it
    computes as ``computes`` does (a name: timm's and PyTorch's spellings), or None."""
    if isinstance(fn, str):
        return code_of_name(fn)
    out = _probe(fn)
    return next((code for code, f in FORWARD.items() if _same(out, f)), None)


def activation_arg(fn, arg: str, gate: bool = False) -> int:
    """The code of ``fn`` (a code, a name, a module class, a module or a function) for the argument
    ``arg``; ValueError naming it otherwise (ops.activations.code_arg)."""
    return code_arg(fn, arg, gate, recognise=activation_code_of)


def is_sigmoid(gate) -> bool:
    """True for the sigmoid gate in any spelling ('sigmoid', nn.Sigmoid, timm's Sigmoid, ...)."""
    return computes(gate, "sigmoid", torch.sigmoid)


def is_relu(act) -> bool:
    """True for ReLU in any spelling ('relu', nn.ReLU, nn.ReLU(inplace=True), F.relu, ...)."""
    return computes(act, "relu", torch.relu)


class KeyAliases:
    """Mixin for fused modules that also load other layouts' state_dicts: ``KEY_ALIASES`` lists
    (other layout's key prefix, this module's key prefix); nn.Linear weights [out, in] become
    1x1 conv weights [out, in, 1, 1]. A module made by from_module from such a layout also
    saves in it (see copy_into), so the source's class loads the converted model's state_dict."""

    KEY_ALIASES: list = []

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix):]
            for old, new in self.KEY_ALIASES:
                if rest.startswith(old) and prefix + new + rest[len(old):] not in state_dict:
                    value = state_dict.pop(key)
                    if rest.endswith("weight") and value.dim() == 2:
                        value = value[:, :, None, None]  # Linear -> 1x1 conv
                    state_dict[prefix + new + rest[len(old):]] = value
                    break
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class SaveInLayout:
    """state_dict hook: this module's keys -> the source layout's keys (and Linear shapes). A
    class at module level, not a closure, so a converted model pickles (torch.save, deepcopy)."""

    def __init__(self, mapping: dict):
        self.mapping = dict(mapping)

    def __call__(self, module, state_dict, prefix, local_metadata):
        for key, (source_key, dim) in self.mapping.items():
            value = state_dict.pop(prefix + key)
            # state_dict(keep_vars=True) (tracers, optimizers' bookkeeping) keeps the Parameter itself
            reshape = dim == 2 and not isinstance(value, nn.Parameter)
            state_dict[prefix + source_key] = value.reshape(value.shape[:2]) if reshape else value


def copy_into(new: nn.Module, source: nn.Module) -> nn.Module:
    """Load source's state_dict into new (key remapping is new's business) and give new
    source's device, dtype and train/eval mode. If source has another layout (KeyAliases),
    new keeps saving its state_dict in source's keys and shapes."""
    tensors = list(source.parameters()) + list(source.buffers())
    if tensors:
        new = new.to(device=tensors[0].device, dtype=tensors[0].dtype)
    source_state = source.state_dict()
    own = set(new.state_dict())
    mapping = {}
    for key, value in source_state.items():
        for old, alias in getattr(new, "KEY_ALIASES", []):
            if key.startswith(old) and key not in own:
                mapping[alias + key[len(old):]] = (key, value.dim())
                break
    new.load_state_dict(source_state)
    if mapping:
        new._register_state_dict_hook(SaveInLayout(mapping))
    return new.train(source.training)


def autocast_softmax_output(y: torch.Tensor) -> torch.Tensor:
    """y in the dtype the references return under autocast: they weight their branches with
    torch.softmax, which CUDA autocast runs in float32, so there the half-precision branches times
    the float32 weights give float32 (CPU autocast keeps softmax in the lower dtype)."""
    if y.is_cuda and y.dtype in (torch.float16, torch.bfloat16) and torch.is_autocast_enabled("cuda"):
        return y.float()
    return y


def update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
    """What nn.BatchNorm2d does to its buffers in training, from the batch ``mean`` and biased
    ``var`` over ``n`` values per channel: unbiased variance, momentum or cumulative average.
    An empty batch (n = 0) counts as a batch and leaves the statistics as they were."""
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        if n == 0:
            return
        momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)   # (1 - m) r + m mean: one op
        bn.running_var.lerp_((var * (n / (n - 1))).to(bn.running_var.dtype), momentum)


def one_layer_fc(m: nn.Module, who: str) -> nn.Conv2d:
    """m.fc, checked to be a one-layer gate's C -> C 1x1 conv with a bias."""
    fc = getattr(m, "fc", None)
    require(isinstance(fc, nn.Conv2d) and fc.kernel_size == (1, 1) and fc.groups == 1
            and fc.in_channels == fc.out_channels, f"{who}: {type(m).__name__}.fc is not an ungrouped C -> C 1x1 conv")
    require(fc.bias is not None, f"{who}: fc without bias")
    return fc
