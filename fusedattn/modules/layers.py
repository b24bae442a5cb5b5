"""A fused module's layers and parameters, read on the call path without nn.Module.__getattr__.

``module.fc1`` and ``fc1.weight`` are found by nn.Module.__getattr__ only after the ordinary
instance lookup has failed, that is after an AttributeError was raised and caught: about 4 us per
read inside a CPU call (measured on a 1x64x4x4 fused ECA call of about 60 us; 3 reads cost 12 us).
The fused modules read a handful of them per call, the eager blocks they replace about as many,
so these reads alone could put a fused call above the eager one. Read from the dicts instead.
"""
from torch import nn


def sublayer(module: nn.Module, path: str) -> nn.Module:
    """module.<path> for a dotted path of submodules ('channel.fc1'), as ``module.channel.fc1``
    (a swapped submodule, e.g. by convert_sync_batchnorm, is found: nothing is cached)."""
    for name in path.split("."):
        modules = module._modules
        module = modules[name] if name in modules else getattr(module, name)   # (None: no layer)
    return module


def weight_bias(layer: nn.Module) -> tuple:
    """(layer.weight, layer.bias); bias None when the layer has none. A parametrized or
    weight-normed layer (no plain entry in its parameter dict) takes the ordinary lookup."""
    params = layer._parameters
    if "weight" in params and "bias" in params:
        return params["weight"], params["bias"]
    return layer.weight, layer.bias
