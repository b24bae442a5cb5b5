"""Against timm and torchvision themselves (test dependencies; tests/conftest.py lets the CUDA
build of torchvision import on a CPU torch).

Checks the claims the rest of the suite makes against fusedattn.reference (timm's layouts,
written out): the fused modules take timm's constructor arguments, load timm's state_dict
unchanged (strict), and give timm's outputs and gradients; the reference blocks are timm's;
``fusedattn.convert`` on timm's own SE-, ECA-, SK- and CBAM-ResNets replaces every attention
block, keeps outputs and gradients, and saves a state_dict that a fresh timm model loads.
"""
import copy
import importlib

import pytest
import torch
from torch import nn

import fusedattn
from fusedattn import reference
from helpers import assert_close, grads_of, make_x, randomize_batchnorm, rel_err, rounding_gap

timm = pytest.importorskip("timm")

#: name -> (timm block class as module.Class under timm.layers, fused class, reference class,
#: constructor args, input channels)
BLOCKS = {
    "se": ("squeeze_excite.SEModule", fusedattn.SE, reference.SEModule, dict(channels=32), 32),
    "se-maxpool-rd": ("squeeze_excite.SEModule", fusedattn.SE, reference.SEModule,
                      dict(channels=40, rd_channels=12, add_maxpool=True), 40),
    "se-swish-hardsigmoid": ("squeeze_excite.SEModule", fusedattn.SE, reference.SEModule,
                             dict(channels=24, rd_ratio=0.25, act_layer="swish", gate_layer="hard_sigmoid"), 24),
    "squeeze-excite-silu": ("timm.models._efficientnet_blocks.SqueezeExcite", fusedattn.SqueezeExcite,
                            reference.SqueezeExcite, dict(in_chs=32, rd_ratio=0.25, act_layer=nn.SiLU), 32),
    "squeeze-excite-hardsigmoid": ("timm.models._efficientnet_blocks.SqueezeExcite", fusedattn.SqueezeExcite,
                                   reference.SqueezeExcite,
                                   dict(in_chs=40, rd_channels=12, act_layer=nn.GELU, gate_layer=nn.Hardsigmoid), 40),
    "torchvision-se": ("torchvision.ops.SqueezeExcitation", fusedattn.SqueezeExcitation, reference.SqueezeExcitation,
                       dict(input_channels=32, squeeze_channels=8, activation=nn.Hardswish,
                            scale_activation=nn.Hardsigmoid), 32),
    "ese": ("squeeze_excite.EffectiveSEModule", fusedattn.EffectiveSE, reference.EffectiveSEModule,
            dict(channels=32), 32),
    "ese-maxpool-sigmoid": ("squeeze_excite.EffectiveSEModule", fusedattn.EffectiveSE, reference.EffectiveSEModule,
                            dict(channels=24, add_maxpool=True, gate_layer="sigmoid"), 24),
    "eca-adaptive": ("eca.EcaModule", fusedattn.ECA, reference.EcaModule, dict(channels=96), 96),
    "eca-k5": ("eca.EcaModule", fusedattn.ECA, reference.EcaModule, dict(kernel_size=5), 24),
    "ceca": ("eca.CecaModule", fusedattn.CECA, reference.CecaModule, dict(channels=64), 64),
    "cbam": ("cbam.CbamModule", fusedattn.CBAM, reference.CbamModule, dict(channels=32), 32),
    "cbam-k3": ("cbam.CbamModule", fusedattn.CBAM, reference.CbamModule,
                dict(channels=24, rd_ratio=1 / 4, spatial_kernel_size=3), 24),
    "coord": ("coord_attn.CoordAttn", fusedattn.CoordAttn, reference.CoordAttn, dict(channels=48), 48),
    "coord-skip-bias-hardsigmoid": ("coord_attn.CoordAttn", fusedattn.CoordAttn, reference.CoordAttn,
                                    dict(channels=32, rd_ratio=1 / 4, bias=True, act_layer=nn.SiLU,
                                         gate_layer="hardsigmoid", has_skip=True), 32),
    "coord-no-norm": ("coord_attn.CoordAttn", fusedattn.CoordAttn, reference.CoordAttn,
                      dict(channels=24, rd_channels=8, norm_layer=None, act_layer=nn.ReLU), 24),
    "sk": ("selective_kernel.SelectiveKernel", fusedattn.SelectiveKernel, reference.SelectiveKernel,
           dict(in_channels=16, out_channels=32), 16),
}


def timm_class(path: str) -> type:
    """timm.layers.<module>.<Class> (not every block is exported from timm.layers itself), or a
    class under its full module path (timm.models...., torchvision....)."""
    module, name = path.rsplit(".", 1)
    if not module.startswith(("timm.", "torchvision.")):
        module = f"timm.layers.{module}"
    return getattr(importlib.import_module(module), name)


def _same_step(a: nn.Module, b: nn.Module, x: torch.Tensor, what: str, tol: float = 1e-10):
    """a and b (float64) agree in output, input gradient, every parameter gradient and, after
    the step, every buffer (BatchNorm running statistics in train mode), to tol or 10x how far
    rounding carries through b on this draw (rounding_gap)."""
    drawn = {}

    def dy(y):
        drawn.setdefault("dy", torch.randn_like(y))
        return drawn["dy"]

    before = copy.deepcopy(b)
    ya, dxa, ga = grads_of(a, x, dy)
    yb, dxb, gb = grads_of(b, x, dy)
    tol = max(tol, 10 * rounding_gap(lambda m, x: grads_of(m, x, lambda y: drawn["dy"].to(y.device)), before, x,
                                     (yb, dxb, gb)))
    # a rounding tolerance, not a vacuous one: a model that draws random masks in train mode
    # (dropout, stochastic depth) differs from itself by O(1) between runs (torchvision's
    # EfficientNet-B0: 1.4), and so would this. Plain rounding stays under 1e-5 at model_input's
    # sizes (it reached 2.8e-3 on the CPU and 2e-2 on an H200 at 32x32 in train mode).
    assert tol < 1e-2, f"{what}: b is not deterministic or not well conditioned (rounding gap {tol / 10:.1e})"
    assert_close(ya, yb, torch.float64, f"{what} y", tol=tol)
    assert_close(dxa, dxb, torch.float64, f"{what} dx", tol=tol)
    assert ga.keys() == gb.keys()
    for n in ga:
        assert_close(ga[n], gb[n], torch.float64, f"{what} d{n}", floor=1.0, tol=tol)
    saved = a.state_dict()  # a fused block saves its buffers under the original's keys
    for n, bb in b.named_buffers():
        assert_close(saved[n].double(), bb.double(), torch.float64, f"{what} buffer {n}", floor=1.0, tol=tol)


def _same_eval(converted: nn.Module, fresh: nn.Module, x: torch.Tensor, what: str, tol: float = 1e-7):
    """converted and fresh (float64) agree in eval mode to tol or, off the CPU, 10x how far fresh
    differs from its own CPU copy: PyTorch's CUDA hard sigmoid multiplies by a float32 1/6 (3e-8 a
    gate, helpers.CUDA_HARDSIGMOID64), which the network carries further (H200, seed 975628791:
    timm's mobilenetv3_large_100 reloaded 1.04e-7 off the converted model, whose kernels divide by 6)."""
    with torch.no_grad():
        y_fresh = fresh.eval()(x)
        if x.device.type != "cpu":
            tol = max(tol, 10 * rel_err(y_fresh.cpu(), copy.deepcopy(fresh).cpu()(x.cpu())))
        assert tol < 1e-4, f"{what}: the model is not well conditioned here (CPU gap {tol / 10:.1e})"
        assert_close(converted.eval()(x), y_fresh, torch.float64, what, tol=tol)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", list(BLOCKS))
def test_fused_block_is_timms_block(backend, name, mode, device):
    timm_name, fused_cls, ref_cls, args, channels = BLOCKS[name]
    ours = randomize_batchnorm(timm_class(timm_name)(**args)).double().to(device).train(mode == "train")
    sd = ours.state_dict()

    fused = fused_cls(**args).double().to(device).train(mode == "train")
    assert {k: v.shape for k, v in fused.state_dict().items()} == {k: v.shape for k, v in sd.items()}
    fused.load_state_dict(sd)  # strict
    ref = ref_cls(**args).double().to(device).train(mode == "train")
    assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in sd.items()}
    ref.load_state_dict(sd)
    converted = fused_cls.from_module(ours)
    assert isinstance(converted, fused_cls) and converted.training == ours.training

    x = make_x((3, channels, 9, 7), torch.float64, "channels_last", device)
    for other, what in ((fused, "constructor + load_state_dict"), (converted, "from_module"),
                        (ref, "fusedattn.reference")):
        _same_step(other, copy.deepcopy(ours), x, f"{name} {mode} {what}")
    assert converted.state_dict().keys() == sd.keys()  # the fused block saves timm's keys


#: timm model name, extra create_model arguments, the timm class of its attention blocks
TIMM_SQUEEZE_EXCITE = "timm.models._efficientnet_blocks.SqueezeExcite"
MODELS = [("seresnet18", {}, "squeeze_excite.SEModule"), ("ecaresnet26t", {}, "eca.EcaModule"),
          ("skresnet18", {}, "selective_kernel.SelectiveKernel"),
          ("resnet18", {"block_args": {"attn_layer": "cbam"}}, "cbam.CbamModule"),
          # the SE family: SiLU / sigmoid (EfficientNet), ReLU / hard sigmoid (MobileNetV3), rd from the
          # block's input (RegNetY), grouped ResNeXt
          ("efficientnet_b0", {}, TIMM_SQUEEZE_EXCITE), ("mobilenetv3_large_100", {}, TIMM_SQUEEZE_EXCITE),
          ("regnety_002", {}, "squeeze_excite.SEModule"), ("seresnext26d_32x4d", {}, "squeeze_excite.SEModule"),
          ("ese_vovnet19b_dw", {}, "squeeze_excite.EffectiveSEModule")]
#: attention blocks whose fused path depends on train/eval (a BatchNorm inside the block)
MODE_DEPENDENT = {"selective_kernel.SelectiveKernel", "cbam.CbamModule"}


def _model_cases(models, block_of):
    """(backend, model, mode) cases: the torch backend in both modes; the Triton backend (the
    interpreter: 15-80 s a model in CI) in train mode only where the fused blocks run the same
    kernels in both modes (the SE family and ECA have no mode-dependent part; the mode changes only
    the model's own BatchNorms around them, which the torch backend covers in both)."""
    return [pytest.param(backend, *m, mode, id=f"{backend}-{m[0]}{'-cbam' if len(m) > 1 and m[1] else ''}-{mode}")
            for m in models for mode in ("train", "eval") for backend in ("triton", "torch")
            if backend == "torch" or mode == "train" or block_of(m) in MODE_DEPENDENT]


def model_input(mode: str) -> tuple:
    """A whole network's test input. Training mode: 64x64, so that the last stage's maps are 2x2
    and its BatchNorms normalize over 8 values; at 32x32 (1x1 maps, 2 values each) the 18-26
    train-mode BatchNorms amplify a change of x by 1e7 to 1e15 (measured on the CPU: a 3e-8 change
    moved timm efficientnet_b0's gradients by 6.5e6, torchvision's by 3.5; at 64x64 by 6.5e-6 and
    4.3e-6), and the comparison on a GPU, where PyTorch's float64 hardsigmoid multiplies by a
    float32 1/6, could not be tight."""
    return (2, 3, 64, 64) if mode == "train" else (2, 3, 32, 32)


@pytest.mark.parametrize("backend,model_name,kwargs,block,mode", _model_cases(MODELS, lambda m: m[2]),
                         indirect=["backend"])
def test_convert_timm_model(backend, model_name, kwargs, block, mode, device):
    model = randomize_batchnorm(timm.create_model(model_name, pretrained=False, num_classes=10, **kwargs))
    model = model.double().to(device).train(mode == "train")
    block = timm_class(block)
    n_blocks = sum(isinstance(m, block) for m in model.modules())
    assert n_blocks > 0
    original = copy.deepcopy(model)
    converted, report = fusedattn.convert(model)
    assert len(report.replaced) == n_blocks and report.left == [], str(report)
    assert not any(isinstance(m, block) for m in converted.modules())
    x = make_x(model_input(mode), torch.float64, "channels_last", device)
    _same_step(converted, original, x, f"converted {model_name} ({mode})", tol=1e-7)

    # float64 before loading: the train step left float64 running statistics that a float32 model
    # would round (CI seed 428932309: mobilenetv3_large_100 reloaded 2.3e-7 off the converted model)
    fresh = timm.create_model(model_name, pretrained=False, num_classes=10, **kwargs).double()
    fresh.load_state_dict(converted.state_dict())  # strict: timm loads what the converted model saves
    fresh = fresh.to(device).train(mode == "train")
    _same_eval(converted, fresh, x, f"{model_name} reloaded")


#: torchvision model -> its SE blocks' activation / gate (torchvision.ops.SqueezeExcitation)
TORCHVISION_MODELS = ["efficientnet_b0", "mobilenet_v3_large", "regnet_y_400mf"]
#: their random layers off (torchvision's defaults: dropout 0.2, EfficientNet's stochastic depth 0.2)
TORCHVISION_DETERMINISTIC = {"efficientnet_b0": dict(dropout=0.0, stochastic_depth_prob=0.0),
                             "mobilenet_v3_large": dict(dropout=0.0)}


@pytest.mark.parametrize("backend,model_name,mode", _model_cases([(m,) for m in TORCHVISION_MODELS], lambda m: None),
                         indirect=["backend"])
def test_convert_torchvision_model(backend, model_name, mode, device):
    torchvision = pytest.importorskip("torchvision")
    block = torchvision.ops.SqueezeExcitation

    def build():   # without dropout and stochastic depth: a train-mode step must be deterministic to compare
        torch.manual_seed(0)
        return getattr(torchvision.models, model_name)(num_classes=10, **TORCHVISION_DETERMINISTIC.get(model_name, {}))

    model = randomize_batchnorm(build()).double().to(device).train(mode == "train")
    n_blocks = sum(isinstance(m, block) for m in model.modules())
    assert n_blocks > 0
    original = copy.deepcopy(model)
    converted, report = fusedattn.convert(model)
    assert len(report.replaced) == n_blocks and report.left == [], str(report)
    assert all(new == "SqueezeExcitation" for _, _, new in report.replaced)
    assert not any(type(m) is block for m in converted.modules())
    x = make_x(model_input(mode), torch.float64, "channels_last", device)
    _same_step(converted, original, x, f"converted torchvision {model_name} ({mode})", tol=1e-7)

    fresh = build().double()   # float64 before loading (float64 running statistics: see above)
    fresh.load_state_dict(converted.state_dict())  # strict
    fresh = fresh.to(device).train(mode == "train")
    _same_eval(converted, fresh, x, f"{model_name} reloaded")
