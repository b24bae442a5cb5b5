"""Bench cases: ResNet-50 stage shapes on a GPU with --benchmark-only, tiny shapes otherwise
(a plain test run, or CPU, keeps the suite alive without the full sweep)."""
import torch

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")

# ResNet-50 stage outputs (C, H, W) at batch 64 and batch 1
GPU_SHAPES = [(b, c, s, s) for b in (64, 1) for c, s in ((256, 56), (512, 28), (1024, 14), (2048, 7))]
GPU_DTYPES = [torch.bfloat16, torch.float32]
TINY_SHAPES = [(2, 32, 8, 8), (1, 64, 4, 4)]
TINY_DTYPES = [torch.float32]
LAYOUTS = ["channels_last", "nchw"]


def full_sweep(config) -> bool:
    return CUDA and bool(config.getoption("benchmark_only", False))
