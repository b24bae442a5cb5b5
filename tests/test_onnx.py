"""ONNX export of the fused modules, a converted timm-style model and a bundled ResNet: standard
ONNX operators only (no custom domains), and onnxruntime matches PyTorch.

While torch.onnx.export traces, the functional ops run their plain-PyTorch math inline instead
of the opaque custom op (fusedattn.backend.exporting), for both exporters."""
import io
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import fusedattn
from blocks import BLOCKS, C, fused_copy
from fusedattn import models

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

EXPORTERS = [dict(dynamo=False, opset_version=11), dict(dynamo=False, opset_version=17),
             dict(dynamo=True, opset_version=18)]


def _zoo():
    from test_models_convert import Zoo
    return fusedattn.convert(Zoo().eval())[0]


#: every row of the block table (eval mode: the train rows are their eval twins here), and layouts and
#: models beyond it
MODELS = {
    **{name: (lambda name=name: fused_copy(BLOCKS[name]()), C) for name in BLOCKS if not name.endswith("-train")},
    "SqueezeExcitation-hardswish-hardsigmoid": (lambda: fusedattn.SqueezeExcitation(16, 4, nn.Hardswish, nn.Hardsigmoid),
                                                16),
    "SqueezeExcite-silu": (lambda: fusedattn.SqueezeExcite(16, act_layer=nn.SiLU), 16),
    "PSA-groups-1248": (lambda: fusedattn.PSA(16, 64, conv_groups=(1, 2, 4, 8)), 16),
    "converted-zoo": (_zoo, 3),
    "resnet18-se": (lambda: models.resnet18(attn="se", width=8, num_classes=10), 3),
}


def _export(model, x, kw) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kw["dynamo"]:
            return torch.onnx.export(model, (x,), **kw).model_proto.SerializeToString()
        f = io.BytesIO()
        torch.onnx.export(model, (x,), f, **kw)
        return f.getvalue()


@pytest.mark.parametrize("kw", EXPORTERS, ids=lambda kw: f"{'dynamo' if kw['dynamo'] else 'torchscript'}-opset{kw['opset_version']}")
@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_export_standard_ops_and_onnxruntime(name, kw):
    make, in_channels = MODELS[name]
    model = make().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.3, 0.3)
                bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, in_channels, 12, 12)
    proto = onnx.load_from_string(_export(model, x, kw))
    domains = {n.domain for n in proto.graph.node} | {f.domain for f in proto.functions}
    assert domains <= {"", "ai.onnx"}, f"non-standard ONNX domains {domains}"
    assert not any("fusedattn" in n.op_type for n in proto.graph.node)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())))


EXPORT_SCRIPT = """
import io, sys, torch
sys.path.insert(0, "tests")
import test_onnx
for name, (make, c) in test_onnx.MODELS.items():
    model, x = make().eval(), torch.randn(2, c, 12, 12)
    torch.onnx.export(model, (x,), io.BytesIO(), dynamo=False, opset_version=17)
    torch.jit.trace(model, x)
print("exported", len(test_onnx.MODELS))
"""


def test_legacy_export_and_trace_print_no_fusedattn_warnings():
    """A user's process (Python's default warning filters, not pytest's): the legacy exporter and
    jit.trace of every model above print no warning from fusedattn's code (they printed
    TracerWarnings from the argument checks in ops/validation.py)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run([sys.executable, "-c", EXPORT_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0 and f"exported {len(MODELS)}" in proc.stdout, proc.stderr[-4000:]
    ours = [line for line in proc.stderr.splitlines() if "Warning" in line and "fusedattn" in line]
    assert not ours, "\n".join(ours)
