"""Compile every Triton kernel variant the launchers use for a real GPU target, on a machine
without one: the interpreter accepts code the compiler rejects (non-power-of-2 blocks, control
flow on tensors, dtype mixes), so this catches what CI under TRITON_INTERPRET cannot.

Run as a script (TRITON_INTERPRET must be unset, so the kernels are real JITFunctions):
    python tests/aot_compile.py [--arch 90] [--shapes small|all]
It runs the SE / ECA / CBAM / PSA / SK launchers on CPU tensors through the cost model's
recording driver (fusedattn.costmodel.dryrun): Triton's own launch path binds and specializes
the arguments as the JIT does on a GPU (divisibility by 16, values equal to 1) and compiles
each variant for the arch; only the driver's launch is recorded instead of made. Odd small
shapes in every option; with --shapes all (the default) also the benchmarked ResNet-50 stage
shapes as an H100 plans them. One line per variant: registers, spills, the widths of its
global loads and stores. Streaming kernels (x-sized tiles) of the benchmarked shapes must load
(and, where they write activations, store) 128 bits at a time, except the known exceptions below,
and their x-sized loads (stores) must carry an L2 eviction hint (issue 11, point 5: the first read
of a chunk evict_last, the last read and the outputs evict_first). Exit status 1 if any variant
fails to compile or a streaming kernel is not vectorized or not hinted.
"""
import argparse
import os
import sys

assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0"), "run without TRITON_INTERPRET"

import torch  # noqa: E402

from fusedattn.costmodel.dryrun import dry_run, variant_report  # noqa: E402
from fusedattn.kernels import config  # noqa: E402
from fusedattn.kernels.activations import ACTIVATIONS  # noqa: E402

#: kernels that stream x-sized tiles, and those of them that write activation-sized outputs
STREAMING = {"channel_pool_kernel", "channel_scale_kernel", "channel_scale_backward_kernel", "epilogue_grad_kernel",
             "spatial_pool_kernel", "cbam_channel_grad_kernel", "cbam_input_grad_kernel", "path_pool_kernel",
             "path_combine_kernel", "path_combine_backward_kernel", "se_one_launch_kernel",
             "eca_one_launch_kernel", "se_one_launch_backward_kernel", "eca_one_launch_backward_kernel",
             "simam_forward_kernel", "simam_backward_kernel", "simam_statistics_kernel", "simam_grad_sums_kernel",
             "strip_sums_kernel", "strip_scale_kernel", "se_pool_gate_kernel", "se_pool_gate_backward_kernel",
             "se_cooperative_kernel", "se_cooperative_backward_kernel"}
WRITERS = {"se_one_launch_kernel", "eca_one_launch_kernel", "se_one_launch_backward_kernel",
           "eca_one_launch_backward_kernel", "channel_scale_kernel", "channel_scale_backward_kernel", "epilogue_grad_kernel", "cbam_input_grad_kernel",
           "path_combine_kernel", "path_combine_backward_kernel", "simam_forward_kernel", "simam_backward_kernel",
           "strip_scale_kernel", "se_cooperative_kernel", "se_cooperative_backward_kernel"}


def known_exception(kernel: str, layout: str, hw: int, row_bytes: int = 0) -> bool:
    """Streaming variants not yet at 128 bits (issue 11 removes them): contiguous NCHW whose H*W
    is not a multiple of 16 elements (14x14, 7x7: the JIT's divisibility hint is 16 elements,
    so row starts cannot be proven 16-byte aligned); and, found by this check, the backward
    scale pass in channels_last at those stages (channel_scale_backward_kernel, loads 16/32 bits).
    Coordinate Attention's strip kernels walk NCHW row by row: a row that is not a multiple of 16
    bytes (28 x bf16 = 56 bytes) starts unaligned every other row, whatever the hints (64 bits)."""
    if kernel in ("strip_sums_kernel", "strip_scale_kernel") and layout == "nchw" and row_bytes % 16:
        return True
    if hw % 16 == 0:
        return False
    return layout == "nchw" or kernel == "channel_scale_backward_kernel"


#: (B, C, H, W) cases with odd sizes (masks, tails), every dtype.
SMALL_SHAPES = ((4, 48, 7, 9), (2, 300, 3, 3))
#: The benchmarked ResNet-50 stage shapes (B kept at 2: tile sizes depend on C and H*W), so the
#: variants the GPU benchmarks launch are compiled and their spills reported too.
RESNET50_SHAPES = ((2, 256, 56, 56), (2, 512, 28, 28), (2, 1024, 14, 14), (2, 2048, 7, 7))


def exercise_launchers(launches: list, contexts: list, failures: list, shapes=SMALL_SHAPES,
                       dtypes=(torch.float32, torch.bfloat16, torch.float16, torch.float64),
                       rd_div: int = 8, variants: bool = True) -> None:
    """Drive every launcher on CPU tensors (launches recorded): each shape, dtype and layout;
    with ``variants`` also every option (bias, max pool, activation, ECA padding, P = 2, 3, 6).
    contexts gets (first launch index, dtype, layout, shape) per group; failures the errors."""
    for dtype in dtypes:
        for layout in ("nchw", "channels_last"):
            for shape in shapes:
                contexts.append((len(launches), dtype, layout, shape, shapes is RESNET50_SHAPES))
                try:
                    # the activation table once per accumulation dtype (fp16 / bf16 x accumulate in fp32 too)
                    activations = variants and shape == shapes[0] and layout == "nchw" and \
                        dtype in (torch.float32, torch.float64)
                    _exercise(dtype, layout, shape, rd_div, variants, activations)
                except Exception as e:  # noqa: BLE001 - report every failing group
                    failures.append(f"{dtype} {layout} {shape}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")


def _exercise_channel_gates(kernels, x, dy, w1, b1, w2, b2, variants, activations=()):
    """SE and ECA (with their options and the residual epilogue), forward and backward;
    ``activations``: SE with these hidden activations of the table (the gates alternating)."""
    from fusedattn.kernels.activations import GATES

    for mlp_act in activations:
        gate_fn = GATES[mlp_act % 2]
        out = kernels.se_forward(x, w1, b1, w2, b2, False, mlp_act=mlp_act, gate_fn=gate_fn)
        kernels.se_backward(dy, x, w1, w2, True, *out[1:], mlp_act=mlp_act, gate_fn=gate_fn)
    C = x.shape[1]
    for gate_fn in GATES if variants else GATES[1:]:   # the one-layer gate (ESE, ChannelAttention)
        w, b = torch.randn(C, C, 1, 1), torch.randn(C)
        out = kernels.se_forward(x, w, b, None, None, gate_fn == GATES[0], gate_fn=gate_fn)
        kernels.se_backward(dy, x, w, None, True, *out[1:], gate_fn=gate_fn)
    for maxpool in (False, True) if variants else (False,):
        for bias in (False, True) if variants else (True,):
            out = kernels.se_forward(x, w1, b1 if bias else None, w2, b2 if bias else None, maxpool)
            kernels.se_backward(dy, x, w1, w2, bias, *out[1:])
    for act in (0, 1, 2) if variants else (1,):  # the residual epilogue: none, ReLU, SiLU
        out = kernels.se_forward(x, w1, b1, w2, b2, False, shortcut=dy, act=act)
        kernels.se_backward(dy, x, w1, w2, True, *out[1:], act=act, out=out[0], shortcut=dy)
        y, pooled, gate = kernels.eca_forward(x, torch.randn(1, 1, 3), None, False, shortcut=dy, act=act)
        kernels.eca_backward(dy, x, torch.randn(1, 1, 3), False, False, pooled, gate, act, y, dy)
    for circular in (False, True) if variants else (False,):
        for bias in (None, torch.randn(1)) if variants else (None,):
            w = torch.randn(1, 1, 5)
            y, pooled, gate = kernels.eca_forward(x, w, bias, circular)
            kernels.eca_backward(dy, x, w, bias is not None, circular, pooled, gate)


def _exercise(dtype, layout, shape, rd_div, variants, activations=False):
    from fusedattn import kernels

    B, C, H, W = shape
    x = torch.randn(B, C, H, W).to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    dy = torch.randn_like(x)
    RD = max(C // rd_div, 1)
    if activations:   # the weight gradients of a batch long enough to be split over programs (256 rows)
        from fusedattn.kernels import batch_outer
        rows = [torch.randn(256, n, dtype=dtype) for n in (RD, C, C, RD)]
        batch_outer.batch_outer_pair(
            batch_outer.Outer(rows[0], rows[1], torch.empty(RD, C, dtype=dtype), torch.empty(RD, dtype=dtype)),
            batch_outer.Outer(rows[2], rows[3], torch.empty(C, RD, dtype=dtype), torch.empty(C, dtype=dtype),
                              v_act=ACTIVATIONS["relu"]))
    w1, w2 = torch.randn(RD, C, 1, 1), torch.randn(C, RD, 1, 1)
    b1, b2 = torch.randn(RD), torch.randn(C)
    # SE / ECA: the launchers' plan; the chunked pipeline; the pipeline with the parallel MLP gate, and
    # (odd shapes) with its sums over C (hidden layer) and RD (gate backward) split wherever they take
    # two steps (mlp_gate.MAX_HIDDEN_STEPS, MAX_STEPS), in 16-row tiles (tl.dot where RD >= 16)
    from fusedattn.kernels import mlp_gate
    steps = (mlp_gate.MAX_STEPS, mlp_gate.MAX_HIDDEN_STEPS)
    # and SE's cooperative forward and backward (kernels/se_cooperative.py)
    plans = ((None, None, steps, None), (False, False, steps, None), (False, True, steps, None),
             (None, None, steps, True)) + (((False, True, (1, 1), None),) if variants else ())
    for one_launch, parallel_gate, max_steps, cooperative in plans:
        config.one_launch, config.parallel_gate, config.cooperative = one_launch, parallel_gate, cooperative
        mlp_gate.MAX_STEPS, mlp_gate.MAX_HIDDEN_STEPS = max_steps
        config.mlp_block_n = 16 if max_steps == (1, 1) else None
        try:
            # the table's functions are inlined the same way in every gate kernel: the parallel kernels
            # take them all, the one-launch kernels two (SiLU, GELU: exp and erf; a float64 one-launch
            # variant compiles for seconds), the one-program-per-sample gate the default pair
            acts = {None: (ACTIVATIONS["silu"], ACTIVATIONS["gelu"]), True: tuple(ACTIVATIONS.values()), False: ()}
            _exercise_channel_gates(kernels, x, dy, w1, b1, w2, b2, variants,
                                    acts[parallel_gate] if activations and max_steps == steps else ())
            if max_steps == (1, 1):   # CBAM's paired gate over the splits too
                ca, pooled, hidden, maps = kernels.cbam_channel_forward(x, w1, b1, w2, b2)
                sa = torch.rand(B, 1, H, W, dtype=maps.dtype)
                kernels.cbam_channel_backward(dy, x, w1, w2, True, ca, pooled, hidden, maps, sa,
                                              torch.randn_like(sa), torch.randn_like(sa))
        finally:
            config.one_launch = config.parallel_gate = config.mlp_block_n = config.cooperative = None
            mlp_gate.MAX_STEPS, mlp_gate.MAX_HIDDEN_STEPS = steps
    for bias in (False, True) if variants else (True,):
        out = kernels.psa_forward([x] * 4, w1, b1 if bias else None, w2, b2 if bias else None)
        dout = torch.randn(B, 4 * C, H, W).to(dtype)
        kernels.psa_backward(dout, [x] * 4, w1, w2, bias, *out[1:])
    A = max(C // 16, 8)
    bn = [torch.rand(A) + 0.5 for _ in range(4)]  # gamma, beta, running mean, running var
    for P in (2, 3, 6) if variants else (2,):  # 6 paths: two launch groups
        for training in (True, False):
            wr, ws = torch.randn(A, C, 1, 1), torch.randn(P * C, A, 1, 1)
            out = kernels.sk_forward([x] * P, wr, ws, *bn, training, 1e-5)
            kernels.sk_backward(dy, [x] * P, wr, ws, bn[0], 1e-5, training, *out[1:])
    # CBAM's channel MLP with and without bias; Ultralytics' one-layer channel gate (fc [C, C], no max pool)
    for fc1, fc2, bias in ((w1, w2, False), (w1, w2, True), (torch.randn(C, C, 1, 1), None, True)) \
            if variants else ((w1, w2, False), (torch.randn(C, C, 1, 1), None, True)):
        ca, pooled, hidden, maps = kernels.cbam_channel_forward(
            x, fc1, torch.randn(fc1.shape[0]) if bias else None, fc2, b2 if bias and fc2 is not None else None)
        sa = torch.rand(B, 1, H, W, dtype=maps.dtype)
        kernels.cbam_apply(x, ca, sa)
        kernels.cbam_spatial_grad_inputs(dy, x, ca, maps)
        kernels.cbam_channel_backward(dy, x, fc1, fc2, bias, ca, pooled, hidden, maps, sa,
                                      torch.randn_like(sa), torch.randn_like(sa))
    # SimAM: one launch each way, and the H*W split (partials, then merge and output) at batch 1
    from fusedattn.kernels import coord_attn, simam
    for xs, dys in ((x, dy), (x[:1], dy[:1])):
        y, centre, rinv = simam.simam_forward(xs, 1e-4)
        simam.simam_backward(dys, xs, centre, rinv)
    # Coordinate Attention's strip passes: means, gated scale (with and without the skip), gradient sums, dx
    a = torch.rand_like(coord_attn.strip_means(x))
    for skip in (False, True) if variants else (True,):
        coord_attn.strip_scale(x, a, skip)
        coord_attn.strip_scale(dy, a, skip, torch.randn_like(a))
    coord_attn.strip_gate_grads(dy, x, a)
    # the spatial gate on the maps: no BN, BN with running / batch statistics; bias, affine, order
    conv_w = torch.randn(1, 2, 7, 7).to(dtype)
    one = torch.rand(1).to(dtype) + 0.5
    for use_bn, training in ((False, False), (True, False), (True, True)):
        for extra in (False, True) if variants else (True,):
            p = (conv_w, one if extra else None, one if extra else None, one if extra else None, one, one,
                 use_bn, training, 1e-5, extra)
            for plan in (None, not kernels.spatial_gate.one_program(B, H, W, 7)):  # the rule's plan, the other
                config.one_launch = plan
                try:
                    sa, mean, var = kernels.spatial_gate_forward(maps, *p)
                    kernels.spatial_gate_backward(torch.randn_like(sa), torch.ones_like(sa), maps, sa, mean, var, C,
                                                  *p)
                finally:
                    config.one_launch = None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 (H100)")
    parser.add_argument("--shapes", choices=("small", "bench", "all"), default="all",
                        help="small: odd shapes in every variant; bench: the ResNet-50 stage shapes; all: both")
    args = parser.parse_args(argv)
    contexts, failures = [], []
    with dry_run(args.arch) as launches:
        config.target_programs = 64
        if args.shapes in ("small", "all"):
            exercise_launchers(launches, contexts, failures)
        if args.shapes in ("bench", "all"):  # as an H100 plans them
            config.target_programs, config.profile = None, config.PROFILES["h100"]
            exercise_launchers(launches, contexts, failures, RESNET50_SHAPES, (torch.float32, torch.bfloat16),
                               rd_div=16, variants=False)
    reports, narrow, unhinted, total_spills, rounded = {}, [], [], 0, []
    bounds = [c[0] for c in contexts[1:]] + [len(launches)]
    for (start, dtype, layout, shape, benchmarked), end in zip(contexts, bounds):
        for launch in launches[start:end]:
            key = id(launch.metadata)
            if key not in reports:
                reports[key] = rep = variant_report(launch, args.arch)
                total_spills += rep.spill_bytes
                print(f"ok   sm_{args.arch} {launch.kernel:34s} regs={rep.registers:3d} spill_bytes={rep.spill_bytes:4d} "
                      f"ld={'/'.join(map(str, rep.load_bits)):14s} st={'/'.join(map(str, rep.store_bits)):10s} "
                      f"{str(dtype)[6:]:8s} {layout:13s} {shape}")
            rep = reports[key]
            if dtype == torch.float64 and rep.f32_scalars:
                rounded.append(f"{launch.kernel} ({rep.f32_scalars})")
            if not (benchmarked and launch.kernel in STREAMING):
                continue
            what = f"{launch.kernel} {dtype} {layout} {shape}"
            exception = known_exception(launch.kernel, layout, shape[2] * shape[3], shape[3] * dtype.itemsize)
            if not exception:
                wide = max(rep.load_bits, default=0) >= 128 and (
                    launch.kernel not in WRITERS or max(rep.store_bits, default=0) >= 128)
                if not wide:
                    narrow.append(f"{what}: ld {rep.load_bits} st {rep.store_bits}")
            # the tiles' accesses are the widest ones wherever they are vectorized (gate vectors may
            # be as wide, so hinted 128-bit accesses must exist, not only 128-bit accesses)
            need = 128 if not exception else None
            if not _hinted(rep.hinted_load_bits, need) or (
                    launch.kernel in WRITERS and not _hinted(rep.hinted_store_bits, need)):
                unhinted.append(f"{what}: hinted ld {rep.hinted_load_bits} st {rep.hinted_store_bits}")
    for f in failures:
        print(f"FAIL sm_{args.arch} {f}")
    for n in sorted(set(narrow)):
        print(f"NARROW {n}")
    for n in sorted(set(unhinted)):
        print(f"UNHINTED {n}")
    for n in sorted(set(rounded)):  # e.g. BatchNorm's eps: 1e-5 in fp32 is 1e-8 off in 1 / sqrt(var + eps)
        print(f"FP32-SCALAR {n}: a float argument reaches a float64 variant as fp32 (make it a tl.constexpr)")
    print(f"{len(reports)} compiled, {len(failures)} failed (kernel variants for sm_{args.arch}); "
          f"{total_spills} spill bytes in all; {len(set(narrow))} streaming variants without 128-bit accesses; "
          f"{len(set(unhinted))} streaming variants without eviction hints; "
          f"{len(set(rounded))} float64 variants with fp32 scalar arguments")
    return 1 if failures or narrow or unhinted or rounded else 0


def _hinted(widths: tuple, need: int | None) -> bool:
    """Some access carries an eviction hint (at ``need`` bits, if given)."""
    return need in widths if need else bool(widths)


if __name__ == "__main__":
    sys.exit(main())
