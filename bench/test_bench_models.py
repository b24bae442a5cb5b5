"""Whole models: the bundled ResNet-50 (fusedattn.models) with SE, ECA, CBAM or no attention
(the floor), and timm's EfficientNet-B0 and MobileNetV3-Large with their SE blocks or without them, training step (forward + backward + SGD step) and inference (eval, no grad) in
images/s, bf16 autocast and channels_last on a GPU: reference modules vs fused vs
torch.compile of each. The attention overhead of a provider is
time(model with attention) / time(plain ResNet-50, same provider) - 1 (bench/make_table.py).

On CPU (a plain test run) a tiny ResNet-50 (width 8, 32x32 images) keeps the harness alive.
"""
import pytest
import torch
import torch.nn.functional as F

from cases import (CUDA, DEVICE, GPU_MODEL_CASE, GPU_MODEL_PROVIDERS, MODEL_ATTNS, TIMM_MODELS, TINY_MODEL_CASE,
                   TINY_MODEL_PROVIDERS, full_sweep)
import fusedattn
from fusedattn import benchmark as measure
from fusedattn import models


def pytest_generate_tests(metafunc):  # noqa: D103 - pytest hook for this module
    full = full_sweep(metafunc.config)
    if "provider" in metafunc.fixturenames:
        metafunc.parametrize("provider", GPU_MODEL_PROVIDERS if full else TINY_MODEL_PROVIDERS)
    if "timm_name" in metafunc.fixturenames:  # CPU / plain test run: one network keeps the harness alive
        metafunc.parametrize("timm_name", TIMM_MODELS if full else TIMM_MODELS[:1])


def _model(attn, provider, width):
    model = models.resnet50(attn=attn, fused="fused" in provider, width=width).to(DEVICE)
    model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if provider.startswith("compiled") else model


@pytest.mark.parametrize("task", ["train-step", "inference"])
@pytest.mark.parametrize("attn", MODEL_ATTNS, ids=lambda a: a or "plain")
def test_model(benchmark, record, request, attn, task, provider):
    batch, size, width = GPU_MODEL_CASE if full_sweep(request.config) else TINY_MODEL_CASE
    torch.manual_seed(0)
    _run(benchmark, record, _model(attn, provider, width), f"resnet50-{attn or 'plain'}", batch, size, task,
         provider, width=width)


def _timm_model(name, attn, provider):
    """timm's ``name`` with its SE blocks (attn 'se'; fusedattn.convert for the fused providers) or
    with each replaced by nn.Identity (attn None: the same network without attention, the floor)."""
    timm = pytest.importorskip("timm")
    model = timm.create_model(name, pretrained=False)
    se_class = timm.models._efficientnet_blocks.SqueezeExcite
    if attn is None:
        for parent in list(model.modules()):
            for child_name, child in parent.named_children():
                if isinstance(child, se_class):
                    setattr(parent, child_name, torch.nn.Identity())
    elif "fused" in provider:
        model, report = fusedattn.convert(model)
        assert report.replaced and not report.left, str(report)
    model = model.to(DEVICE, memory_format=torch.channels_last)
    return torch.compile(model) if provider.startswith("compiled") else model


@pytest.mark.parametrize("task", ["train-step", "inference"])
@pytest.mark.parametrize("attn", [None, "se"], ids=lambda a: a or "plain")
def test_timm_model(benchmark, record, request, timm_name, attn, task, provider):
    """timm's EfficientNet-B0 and MobileNetV3-Large: their SqueezeExcite blocks (SiLU / sigmoid,
    ReLU / hard sigmoid) eager, fused (convert) and compiled, against the same network without SE."""
    batch, size, _ = GPU_MODEL_CASE if full_sweep(request.config) else TINY_MODEL_CASE
    torch.manual_seed(0)
    _run(benchmark, record, _timm_model(timm_name, attn, provider), f"{timm_name}-{attn or 'plain'}", batch, size,
         task, provider)


def _run(benchmark, record, model, block, batch, size, task, provider, **extra):
    """Time a training step (forward + backward + SGD step) or inference of model on a batch of
    random images; record images/s."""
    x = torch.randn(batch, 3, size, size, device=DEVICE).to(memory_format=torch.channels_last)
    target = torch.randint(0, 1000, (batch,), device=DEVICE)
    autocast = torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=CUDA)
    if task == "train-step":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def fn():
            with autocast:
                loss = F.cross_entropy(model(x), target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    else:
        model.eval()

        def fn():
            with torch.no_grad(), autocast:
                return model(x)
    ms = measure.time_ms(fn, DEVICE, reps=5)
    benchmark.pedantic(fn, rounds=2, iterations=1, warmup_rounds=1)
    row = dict(block=block, kind="model", shape=[batch, 3, size, size],
               dtype="bfloat16-autocast" if CUDA else "float32", layout="channels_last", pass_=task,
               provider=provider, ms=ms, images_per_s=batch / ms * 1e3, **extra)
    benchmark.extra_info.update(row)
    record(**row)
