"""Bench cases: ResNet-50 stage shapes on a GPU with --benchmark-only, tiny shapes otherwise
(a plain test run, or CPU, keeps the suite alive without the full sweep).

FUSEDATTN_BENCH=quick narrows the GPU sweep to the goal cases (batch 64, bfloat16,
channels_last), for a device session with little time."""
import os

import torch

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")

# ResNet-50 stage outputs (C, H, W) at batch 64 and batch 1
GPU_SHAPES = [(b, c, s, s) for b in (64, 1) for c, s in ((256, 56), (512, 28), (1024, 14), (2048, 7))]
GPU_DTYPES = [torch.bfloat16, torch.float32]
TINY_SHAPES = [(2, 64, 8, 8), (1, 64, 4, 4)]  # PSA needs C % 64 == 0 (groups 16 of C / 4)
TINY_DTYPES = [torch.float32]
LAYOUTS = ["channels_last", "nchw"]

if os.environ.get("FUSEDATTN_BENCH") == "quick":
    GPU_SHAPES = [s for s in GPU_SHAPES if s[0] == 64]
    GPU_DTYPES = [torch.bfloat16]
    LAYOUTS = ["channels_last"]


def full_sweep(config) -> bool:
    return CUDA and bool(config.getoption("benchmark_only", False))


# whole models (bench/test_bench_models.py): (batch, image size, ResNet width) and the providers
GPU_MODEL_CASE = (64, 224, 64)
TINY_MODEL_CASE = (2, 32, 8)
MODEL_ATTNS = [None, "se", "eca", "cbam"]
#: timm networks whose own SE blocks are benchmarked (bench/test_bench_models.py)
TIMM_MODELS = ["efficientnet_b0", "mobilenetv3_large_100"]
GPU_MODEL_PROVIDERS = ["reference", "fused", "compiled-reference", "compiled-fused"]
TINY_MODEL_PROVIDERS = ["reference", "fused"]  # torch.compile of a whole ResNet is minutes on CPU
