"""The lean launch path (kernels/launch.py) launches exactly what Triton's JIT launches.

Run as a script without TRITON_INTERPRET (the kernels must be real JITFunctions):
    python tests/fast_launch_check.py
Every block of the cost model, forward and backward, on small CPU tensors through the recording
driver (fusedattn.costmodel.dryrun): one call with config.fast_launch off (every launch through
JITFunction.run), one with it on that fills its variant tables, then one more that must launch
without the JIT at all. The last and the first must record the same launches: kernel, grid, the
compiled variant (the same object), and every argument in order (tensors by dtype, shape,
strides, offset and identity within the call; other arguments by value). Exit status 1 otherwise.
"""
import os
import sys

assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0"), "run without TRITON_INTERPRET"

import torch  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from fusedattn.costmodel import dryrun  # noqa: E402
from fusedattn.costmodel.cases import BLOCKS, Case, make_inputs, make_pair, runner  # noqa: E402
from fusedattn.kernels import config  # noqa: E402

CASES = [Case(block, B, 32, H, H, dtype, layout, "fwd+bwd")
         for block in BLOCKS
         for B, H, dtype, layout in ((2, 6, "fp32", "channels_last"), (1, 5, "bf16", "nchw"))]


class Recording:
    """What the recording driver's launcher is called with, arguments included."""

    def __init__(self):
        self.calls = []
        self.jit_runs = 0

    def launcher(self, recorder, gx, gy, gz, stream, function, packed_metadata, launch_metadata, enter_hook,
                 exit_hook, *args):
        ids = {}

        def norm(a):
            if isinstance(a, torch.Tensor):
                return ("tensor", a.dtype, tuple(a.shape), a.stride(), a.storage_offset(),
                        ids.setdefault(a.data_ptr(), len(ids)))
            return a
        self.calls.append((getattr(recorder.fn, "__name__", "?"), (gx, gy, gz), id(recorder.metadata),
                           function, packed_metadata, tuple(map(norm, args))))


def main() -> int:
    from fusedattn.kernels import launch

    assert launch._convention_holds(), "this Triton's JIT calls its launcher otherwise: no fast path"
    recording = Recording()
    original_call, original_run = dryrun._Recorder.__call__, JITFunction.run
    dryrun._Recorder.__call__ = lambda self, *a: recording.launcher(self, *a)

    def counting_run(self, *args, **kwargs):
        recording.jit_runs += 1
        return original_run(self, *args, **kwargs)
    JITFunction.run = counting_run
    failures, launches = [], 0
    try:
        with dryrun.dry_run():
            for case in CASES:
                torch.manual_seed(0)
                _, fused = make_pair(case)
                run = runner(fused, make_inputs(case), case.pass_)
                config.fast_launch = False
                recording.calls.clear()
                run()
                via_jit = list(recording.calls)
                config.fast_launch = True
                run()   # fills the variant tables
                recording.calls.clear()
                recording.jit_runs = 0
                run()
                launches += len(via_jit)
                what = f"{case.block} {case.B}x{case.C}x{case.H}x{case.W} {case.dtype} {case.layout}"
                if recording.calls != via_jit:
                    failures.append(f"{what}: the fast path launched otherwise than the JIT")
                    for a, b in zip(via_jit, recording.calls):
                        if a != b:
                            failures.append(f"  first difference: JIT {a}\n  fast {b}")
                            break
                if recording.jit_runs:
                    failures.append(f"{what}: {recording.jit_runs} launches still went through the JIT")
                print(f"ok   {what}: {len(via_jit)} launches")
    finally:
        dryrun._Recorder.__call__, JITFunction.run = original_call, original_run
        config.fast_launch = True
    for f in failures:
        print(f"FAIL {f}")
    print(f"{len(CASES)} cases, {launches} launches compared, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
