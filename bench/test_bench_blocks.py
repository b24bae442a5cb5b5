"""Every block in fusedattn.benchmark.BLOCKS: eager reference vs torch.compile of the reference vs fusedattn,
forward and forward+backward, per shape, dtype and memory layout.
FUSEDATTN_BENCH_BLOCKS=se,eca,cbam narrows the sweep to those blocks (a short GPU lease)."""
import functools
import os

import pytest
import torch

from cases import DEVICE, LAYOUTS
from fusedattn import benchmark as measure

SWEEP_BLOCKS = os.environ.get("FUSEDATTN_BENCH_BLOCKS", ",".join(measure.BLOCKS)).split(",")


@functools.lru_cache(maxsize=None)
def copy_ms(shape, dtype, layout):
    """Same-run time of x.clone(): one read and one write of x, the copy bound."""
    x = measure.make_input(shape, dtype, layout, DEVICE)
    return measure.time_ms(lambda: x.clone(memory_format=torch.preserve_format), DEVICE)


@functools.lru_cache(maxsize=4)
def modules(block, channels, dtype):
    providers = measure.GPU_PROVIDERS if DEVICE.type == "cuda" else measure.PROVIDERS
    return measure.make_modules(block, channels, DEVICE, dtype, providers)


@pytest.mark.parametrize("provider", measure.GPU_PROVIDERS)
@pytest.mark.parametrize("pass_", ["forward", "fwd+bwd"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("block", SWEEP_BLOCKS)
def test_block(benchmark, record, block, shape, dtype, layout, pass_, provider):
    if provider == "cuda_graph" and DEVICE.type != "cuda":
        pytest.skip("CUDA graphs need a GPU")
    module = modules(block, shape[1], dtype)[provider]
    module.train(shape[0] > 1)  # BatchNorm (CBAM, SK) takes batch statistics in train(): not at batch 1
    xs = measure.make_inputs(block, shape, dtype, layout, DEVICE, requires_grad=pass_ == "fwd+bwd")
    if provider == "cuda_graph":
        module = measure.graphed(module, xs)
    if pass_ == "forward":
        fn = measure.forward_fn(module, xs)
    else:
        fn = measure.forward_backward_fn(module, xs, measure.output_like(module, xs))
    params = list(module.parameters()) if isinstance(module, torch.nn.Module) else []
    ms = measure.time_ms(fn, DEVICE, grad_to_none=xs + params)
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)  # host clock, for the table
    in_bytes = sum(x.numel() * x.element_size() for x in xs)
    out_bytes = measure.output_like(module, xs).numel() * xs[0].element_size()
    # compulsory traffic: read the inputs, write y; backward also reads dy and the inputs, writes dx
    moved = in_bytes + out_bytes if pass_ == "forward" else 3 * in_bytes + 2 * out_bytes
    copy = copy_ms(shape, dtype, layout)
    row = dict(block=block, shape=list(shape), dtype=str(dtype)[6:], layout=layout, pass_=pass_,
               provider=provider, mode="train" if module.training else "eval", ms=ms, bandwidth_gbs=moved / ms / 1e6, copy_ms=copy,
               copy_ratio=ms / copy,
               saved_bytes=measure.saved_for_backward_bytes(module, *xs) if pass_ == "fwd+bwd" else None)
    benchmark.extra_info.update(row)
    record(**row)
