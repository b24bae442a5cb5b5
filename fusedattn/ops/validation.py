"""Argument checks shared by the ops: clear errors instead of kernel crashes."""
import torch

from ..kernels.layout import acc_torch_dtype, suggested_memory_format

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_activation(x, name: str = "x", channels: int | None = None) -> None:
    """x must be a floating [B, C, H, W] tensor (with C == channels when given)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    shape = x.shape   # (read once: every call of a fused module runs this)
    if len(shape) != 4:
        raise ValueError(f"{name} must be a 4-D [B, C, H, W] tensor, got shape {tuple(shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {x.dtype}")
    _, C, H, W = shape
    if channels is not None and C != channels:
        raise ValueError(f"{name} has {C} channels, but the block was built for {channels}")
    if C < 1 or H < 1 or W < 1:
        raise ValueError(f"{name} needs C, H, W >= 1, got shape {tuple(shape)}")


def check_param(p, name: str, x: torch.Tensor, shape: tuple | None = None) -> None:
    """A parameter tensor: floating, on x's device, with the expected shape when given."""
    if p is None:
        return
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(p).__name__}")
    if p.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor, got {p.dtype}")
    check_params_match(x, **{name: p})
    if shape is not None and tuple(p.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(p.shape)}")


def acc_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 for float64 inputs, float32 for every other dtype (the kernels' rule)."""
    return acc_torch_dtype(x.dtype)


def as_dtype(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """t in ``dtype`` (None stays None); no call at all when it already is (host time)."""
    return t if t is None or t.dtype == dtype else t.to(dtype)


def in_layout_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """y in x's dtype and in the memory format fusedattn's outputs take for x (channels_last
    for channels_last x, else contiguous)."""
    y = as_dtype(y, x.dtype)
    if x.is_contiguous():
        return y if y.is_contiguous() else y.contiguous()   # (is_contiguous: no ATen call)
    return y.contiguous(memory_format=suggested_memory_format(x))


def check_channel_mlp(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias) -> None:
    """The channel MLP of SE / CBAM: fc1 [RD, C(,1,1)], fc2 [C, RD(,1,1)], biases both or neither;
    or (fc2_weight None) the one-layer gate: fc1 [C, C(,1,1)], fc1_bias [C] or None."""
    C = x.shape[1]
    if fc2_weight is None:
        if fc2_bias is not None:
            raise ValueError("fc2_bias must be None when fc2_weight is None (the one-layer gate)")
        if not isinstance(fc1_weight, torch.Tensor) or fc1_weight.dim() not in (2, 4):
            raise ValueError(f"fc1_weight must be [C, C] or [C, C, 1, 1], got {getattr(fc1_weight, 'shape', fc1_weight)!r}")
        check_param(fc1_weight, "fc1_weight", x, (C, C) + ((1, 1) if fc1_weight.dim() == 4 else ()))
        check_param(fc1_bias, "fc1_bias", x, (C,))
        return
    if fc1_weight.dim() not in (2, 4) or fc2_weight.dim() != fc1_weight.dim():
        raise ValueError("fc1_weight and fc2_weight must both be [out, in] or [out, in, 1, 1], got "
                         f"{tuple(fc1_weight.shape)} and {tuple(fc2_weight.shape)}")
    RD = fc1_weight.shape[0]
    tail = (1, 1) if fc1_weight.dim() == 4 else ()
    check_param(fc1_weight, "fc1_weight", x, (RD, C) + tail)
    check_param(fc2_weight, "fc2_weight", x, (C, RD) + tail)
    if (fc1_bias is None) != (fc2_bias is None):
        raise ValueError("fc1_bias and fc2_bias must both be given or both be None")
    check_param(fc1_bias, "fc1_bias", x, (RD,))
    check_param(fc2_bias, "fc2_bias", x, (C,))


def check_params_match(x: torch.Tensor, **params: torch.Tensor | None) -> None:
    """A module's parameters (shapes fixed at construction) on x's device and, outside autocast,
    in x's dtype (PyTorch's own layers refuse mixed dtypes too): the one check a fused module's
    call repeats besides x's own."""
    device, dtype = x.device, x.dtype
    for name, p in params.items():
        if p is None:
            continue
        if p.device != device:
            raise ValueError(f"{name} is on {p.device} but the input is on {device}; "
                             "move the module to the input's device")
        if p.dtype != dtype and not torch.is_autocast_enabled(device.type):
            raise RuntimeError(f"{name} is {p.dtype} but the input is {x.dtype}: cast one to the other "
                               "(module.to(dtype) or x.to(dtype)), or run under torch.autocast")


def check_branches(tensors, name: str) -> list:
    """A non-empty list of [B, C, H, W] branch tensors of one shape, dtype and device."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{name} must hold at least one tensor")
    for i, t in enumerate(tensors):
        check_activation(t, f"{name}[{i}]")
        t0 = tensors[0]
        if t.shape != t0.shape or t.dtype != t0.dtype or t.device != t0.device:
            raise ValueError(f"{name}[{i}] is {tuple(t.shape)} {t.dtype} on {t.device}, but {name}[0] is "
                             f"{tuple(t0.shape)} {t0.dtype} on {t0.device}")
    return tensors
