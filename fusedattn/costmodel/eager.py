"""What eager PyTorch launches for a reference block: every ATen op that would be a GPU kernel
and the bytes it reads and writes, counted with a TorchDispatchMode over meta tensors of the
case's real shape (no arithmetic, any size)."""
from typing import NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

#: ATen ops that launch no kernel (metadata only, or no-ops).
_FREE = {"view", "_unsafe_view", "reshape", "expand", "t", "transpose", "permute", "as_strided", "detach",
         "alias", "unsqueeze", "squeeze", "slice", "select", "split", "split_with_sizes", "unbind",
         "_reshape_alias", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
         "lift_fresh", "_to_copy_noop", "result_type", "is_same_size", "size", "stride", "numel",
         "set_", "zeros_like_noop", "ones_like_noop", "expand_as", "view_as", "clone_noop",
         "_has_compatible_shallow_copy_type", "sym_size", "sym_stride"}


class EagerOp(NamedTuple):
    name: str
    read_bytes: int
    write_bytes: int


def _bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor):
            key = (t.untyped_storage().data_ptr() if t.device.type != "meta" else id(t), t.storage_offset(),
                   tuple(t.shape), tuple(t.stride()))
            if key not in seen:
                seen.add(key)
                total += t.numel() * t.element_size()
    return total


class _Counter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[EagerOp] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name.rstrip("_") not in _FREE and name not in _FREE:
            ins, _ = tree_flatten((args, kwargs or {}))
            outs, _ = tree_flatten(out)
            self.ops.append(EagerOp(name, _bytes(ins), _bytes(outs)))
        return out


def count_eager(run) -> list[EagerOp]:
    """The kernels (ATen ops that are not views or metadata) ``run()`` dispatches."""
    with _Counter() as counter:
        run()
    return counter.ops
