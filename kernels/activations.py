"""The activation table of every gate and epilogue: a constexpr code per function, its value and
its derivative, with PyTorch's semantics (NaN propagation, the gradient at the kinks, the
gradient where the input is NaN), so a kernel computes what the eager module computes.

    code  name          f(z)                                   PyTorch
    0     identity      z                                      nn.Identity
    1     relu          max(z, 0)                              nn.ReLU
    2     silu          z * sigmoid(z)                         nn.SiLU (timm's 'swish')
    3     relu6         min(max(z, 0), 6)                      nn.ReLU6
    4     leaky_relu    z if z > 0 else 0.01 z                 nn.LeakyReLU() (default slope)
    5     gelu          z * Phi(z) (erf)                       nn.GELU()
    6     gelu_tanh     0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))   nn.GELU('tanh')
    7     hardswish     z * relu6(z + 3) / 6                   nn.Hardswish
    8     sigmoid       1 / (1 + exp(-z))                      nn.Sigmoid
    9     hard_sigmoid  relu6(z + 3) / 6                       nn.Hardsigmoid, timm's hard_sigmoid

The same codes name the functions in the PyTorch mirror (fusedattn/ops/activations.py). A gate
(sigmoid, hard_sigmoid) also has its derivative from its output (``gate_grad``): the kernels keep
the gate, not its logits. Derivatives follow PyTorch's backward kernels, quirks included: hard
sigmoid's slope is 1/6 rounded to float32 (also in float64; timm's HardSigmoid module, relu6(x + 3)
/ 6 under autograd, differs from it by that rounding, at most 3e-8 relative); hardswish's middle
piece is -3 < z < 3.
"""
import triton
import triton.language as tl

from .nan_math import relu, relu_grad

ACTIVATIONS = {"identity": 0, "relu": 1, "silu": 2, "relu6": 3, "leaky_relu": 4, "gelu": 5, "gelu_tanh": 6,
               "hardswish": 7, "sigmoid": 8, "hard_sigmoid": 9}
#: codes a gate may have (its derivative from the output: ``gate_grad``)
GATES = (ACTIVATIONS["sigmoid"], ACTIVATIONS["hard_sigmoid"])
RELU, SIGMOID = ACTIVATIONS["relu"], ACTIVATIONS["sigmoid"]
#: the same codes as constexpr globals, for kernels with a fixed function (CBAM's ReLU and sigmoid)
RELU_CODE, SIGMOID_CODE = tl.constexpr(RELU), tl.constexpr(SIGMOID)

#: PyTorch's hardsigmoid_backward slope: 1/6 rounded to float32, in every dtype
HARD_SIGMOID_SLOPE = 0.1666666716337204
_SIXTH = tl.constexpr(HARD_SIGMOID_SLOPE)
#: nn.LeakyReLU's default negative slope (the one fused)
LEAKY_SLOPE = 0.01
_SLOPE = tl.constexpr(LEAKY_SLOPE)


@triton.jit
def minimum(a, b):
    """Elementwise min; NaN if either is NaN (torch.clamp's semantics)."""
    return tl.minimum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def sigmoid(z):
    return 1.0 / (1.0 + tl.exp(-z))


@triton.jit
def _relu6(z):
    return minimum(relu(z), 6.0)


@triton.jit
def _tanh(u):
    """tanh(u) = 2 sigmoid(2u) - 1 (no tanh in triton.language; exp saturates to +-1)."""
    return 2.0 / (1.0 + tl.exp(-2.0 * u)) - 1.0


@triton.jit
def activation(z, CODE: tl.constexpr):
    """f(z) for the table's function ``CODE``."""
    if CODE == 1:
        z = relu(z)
    elif CODE == 2:
        z = z * sigmoid(z)
    elif CODE == 3:
        z = _relu6(z)
    elif CODE == 4:
        z = tl.where(z > 0.0, z, z * _SLOPE)
    elif CODE == 5:
        z = 0.5 * z * (1.0 + tl.erf(z * 0.7071067811865476))
    elif CODE == 6:
        z = 0.5 * z * (1.0 + _tanh(0.7978845608028654 * (z + 0.044715 * z * z * z)))
    elif CODE == 7:
        z = z * _relu6(z + 3.0) / 6.0
    elif CODE == 8:
        z = sigmoid(z)
    elif CODE == 9:
        z = _relu6(z + 3.0) / 6.0
    return z


@triton.jit
def activation_grad(grad, z, CODE: tl.constexpr):
    """grad * f'(z), as PyTorch's backward of ``CODE`` computes it from the input z."""
    if CODE == 1:
        grad = relu_grad(grad, z)
    elif CODE == 2:
        s = sigmoid(z)
        grad = grad * s * (1.0 + z * (1.0 - s))
    elif CODE == 3:
        grad = tl.where((z <= 0.0) | (z >= 6.0), 0.0, grad)
    elif CODE == 4:
        grad = tl.where(z > 0.0, grad, grad * _SLOPE)
    elif CODE == 5:
        cdf = 0.5 * (1.0 + tl.erf(z * 0.7071067811865476))
        pdf = tl.exp(-0.5 * z * z) * 0.3989422804014327
        grad = grad * (cdf + z * pdf)
    elif CODE == 6:
        t = _tanh(0.7978845608028654 * (z + 0.044715 * z * z * z))
        right = 0.5 * z * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * z * z)
        grad = grad * (0.5 * (1.0 + t) + right)
    elif CODE == 7:
        grad = tl.where(z <= -3.0, 0.0, tl.where(z < 3.0, grad * (z / 3.0 + 0.5), grad))
    elif CODE == 8:
        s = sigmoid(z)
        grad = grad * s * (1.0 - s)
    elif CODE == 9:
        grad = tl.where((z > -3.0) & (z < 3.0), grad * _SIXTH, 0.0)
    return grad


@triton.jit
def gate_grad(grad, g, CODE: tl.constexpr):
    """grad * f'(z) from the gate's output g = f(z), f sigmoid or hard_sigmoid (|z| < 3 is
    0 < g < 1 there)."""
    if CODE == 9:
        grad = tl.where((g > 0.0) & (g < 1.0), grad * _SIXTH, 0.0)
    else:
        grad = grad * g * (1.0 - g)
    return grad

