"""Bench cases per device: ResNet-50 stage shapes on a GPU, tiny shapes on CPU."""
import torch

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")

if CUDA:
    # ResNet-50 stage outputs (C, H, W) at batch 64 and batch 1
    SHAPES = [(b, c, s, s) for b in (64, 1) for c, s in ((256, 56), (512, 28), (1024, 14), (2048, 7))]
    DTYPES = [torch.bfloat16, torch.float32]
else:
    SHAPES = [(2, 32, 8, 8), (1, 64, 4, 4)]
    DTYPES = [torch.float32]
LAYOUTS = ["channels_last", "nchw"]
