"""Activations: forward and gradients vs PyTorch, float64 numerical gradients, layouts, errors."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import divenet as dn
import divenet.functional as F
from divenet.ops import activation as A
from tests.helpers import assert_raises_naming, check_against_torch, numerical_grad_check

# name -> (divenet function, torch function, kernel class)
ELEMENTWISE = {
    "relu": (F.relu, TF.relu, A.ReLU),
    "leaky_relu": (F.leaky_relu, TF.leaky_relu, A.LeakyReLU),
    "leaky_relu_0.2": (lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2), A.LeakyReLU),
    "leaky_relu_neg": (lambda x: F.leaky_relu(x, negative_slope=-0.5),
                       lambda x: TF.leaky_relu(x, negative_slope=-0.5), A.LeakyReLU),
    "leaky_relu_1.5": (lambda x: F.leaky_relu(x, 1.5), lambda x: TF.leaky_relu(x, 1.5), A.LeakyReLU),
    "hardtanh": (F.hardtanh, TF.hardtanh, A.Hardtanh),
    "hardtanh_args": (lambda x: F.hardtanh(x, -2.0, 0.5), lambda x: TF.hardtanh(x, -2.0, 0.5), A.Hardtanh),
    "relu6": (F.relu6, TF.relu6, A.Hardtanh),
    "sigmoid": (F.sigmoid, torch.sigmoid, A.Sigmoid),
    "tanh": (F.tanh, torch.tanh, A.Tanh),
    "silu": (F.silu, TF.silu, A.SiLU),
    "gelu": (F.gelu, TF.gelu, A.GELU),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh"), A.GELU),
}
NAMES = sorted(ELEMENTWISE)
SHAPES = [(7,), (4, 5), (2, 3, 4, 5)]


def _data(shape, seed=0, scale=3.0):
    # wide enough to reach the saturated parts (relu6 above 6, hardtanh beyond its bounds)
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _cnhw_view(shape, seed=0):
    """An NCHW array whose memory is laid out as CNHW (a transposed view, not contiguous)."""
    n, c = shape[:2]
    base = _data((c, n) + tuple(shape[2:]), seed)
    view = base.swapaxes(0, 1)
    assert not view.flags.c_contiguous
    return view


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES)
def test_elementwise_matches_torch(name, shape, device):
    ours, theirs, _ = ELEMENTWISE[name]
    check_against_torch(ours, theirs, [_data(shape)], device=device)


@pytest.mark.parametrize("name", NAMES)
def test_elementwise_non_contiguous_input_keeps_layout(name, device):
    ours, theirs, _ = ELEMENTWISE[name]
    x = _cnhw_view((3, 4, 5, 2))
    out = check_against_torch(ours, theirs, [x], device=device)[0]
    strides = np.asarray(out.array.strides)
    assert list(np.argsort(-strides)) == [1, 0, 2, 3], f"{name}: output strides {tuple(strides)} lost the CNHW layout"


@pytest.mark.parametrize("name", NAMES)
def test_elementwise_is_one_node(name):
    ours, _, kernel = ELEMENTWISE[name]
    x = dn.tensor(_data((3, 4)), requires_grad=True)
    out = ours(x)
    assert out._node.fn is kernel
    assert out._node.inputs[0] is x


@pytest.mark.parametrize("name", NAMES)
def test_elementwise_numerical_gradient(name, device):
    ours, _, _ = ELEMENTWISE[name]
    numerical_grad_check(ours, [_data((3, 5), seed=1).astype(np.float64)], device=device)


@pytest.mark.parametrize("name", NAMES)
def test_elementwise_float64_stays_float64(name):
    ours, _, _ = ELEMENTWISE[name]
    x = dn.tensor(_data((4,)).astype(np.float64), requires_grad=True)
    out = ours(x)
    out.sum().backward()
    assert out.dtype == np.float64 and x.grad.dtype == np.float64


@pytest.mark.parametrize("name", ["relu", "relu6", "hardtanh", "leaky_relu", "leaky_relu_neg"])
def test_gradient_at_kinks_matches_torch(name, device):
    """Exactly at 0 (and at the clip bounds) the conventions must match PyTorch's."""
    ours, theirs, _ = ELEMENTWISE[name]
    x = np.array([-6.0, -1.0, -0.5, 0.0, 0.5, 1.0, 6.0, 7.0], dtype=np.float32)
    check_against_torch(ours, theirs, [x], device=device, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "silu", "gelu", "gelu_tanh"])
def test_extreme_inputs_are_finite_and_match_torch(name, device):
    ours, theirs, _ = ELEMENTWISE[name]
    x = np.array([-1e4, -90.0, -30.0, -12.0, -5.0, 5.0, 12.0, 30.0, 90.0, 1e4], dtype=np.float32)
    out = check_against_torch(ours, theirs, [x], device=device)[0]
    assert np.isfinite(out.numpy()).all()


def test_sigmoid_absolute_error_is_float32_rounding():
    """The tanh form trades relative precision far out on the negative side (1 + tanh(x/2)
    cancels) for speed; its absolute error stays at the float32 rounding of values near 1."""
    x = np.linspace(-30, 30, 60001).astype(np.float32)
    ref = torch.sigmoid(torch.tensor(x.astype(np.float64))).numpy()
    np.testing.assert_allclose(F.sigmoid(dn.tensor(x)).numpy(), ref, rtol=0, atol=1.2e-7)


# ---- erf, the exact GELU's building block ------------------------------------------------------
def test_erf_float64_matches_torch():
    x = np.concatenate([np.linspace(-7, 7, 20001), [0.0, 1e-12, -1e-300, 26.0, -40.0, 1e5]])
    ref = torch.erf(torch.tensor(x)).numpy()
    np.testing.assert_allclose(A.erf(x), ref, rtol=0, atol=1e-13)


def test_erf_float64_matches_math_erf_relative_in_the_tails():
    z = np.linspace(0.5, 26.0, 2001)
    tail = 2 * A.normal_tail(z * math.sqrt(2.0))  # erfc(z)
    ref = np.array([math.erfc(v) for v in z])
    # erfc's condition number is about 2 z^2: one rounding of z (here z * sqrt(2)) alone moves
    # erfc(z) by 2 z^2 eps relative, so the bound grows with z^2
    bound = 1e-14 + 4 * z * z * np.finfo(np.float64).eps
    rel = np.abs(tail - ref) / ref
    assert (rel <= bound).all(), f"worst at z={z[np.argmax(rel / bound)]}: {rel.max()}"
    assert rel[z < 4].max() < 3e-14


def test_erf_float32_matches_torch():
    x = np.linspace(-8, 8, 40001).astype(np.float32)
    ours = A.erf(x)
    assert ours.dtype == np.float32
    ref = torch.erf(torch.tensor(x.astype(np.float64))).numpy()
    # float32 rounding in Horner's rule and exp leaves a few ulps of 1
    np.testing.assert_allclose(ours, ref, rtol=0, atol=5e-7)


def test_gelu_exact_float64_matches_torch_tightly():
    x = np.linspace(-12, 12, 4001)
    ours = F.gelu(dn.tensor(x)).numpy()
    ref = TF.gelu(torch.tensor(x)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)


# ---- softmax and log_softmax -------------------------------------------------------------------
SOFTMAX_CASES = [((5,), 0), ((3, 4), 0), ((3, 4), 1), ((3, 4), -1), ((2, 3, 4), 1), ((2, 3, 4, 2), -3)]


@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,dim", SOFTMAX_CASES)
def test_softmax_matches_torch(kind, shape, dim, device):
    ours, theirs = getattr(F, kind), getattr(TF, kind)
    check_against_torch(lambda x: ours(x, dim), lambda x: theirs(x, dim), [_data(shape)], device=device)


@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [0, 1, 2])
def test_softmax_non_contiguous_input(kind, dim, device):
    ours, theirs = getattr(F, kind), getattr(TF, kind)
    x = _cnhw_view((3, 4, 5))
    check_against_torch(lambda t: ours(t, dim), lambda t: theirs(t, dim), [x], device=device)


@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
def test_softmax_large_logits_are_stable(kind, device):
    ours, theirs = getattr(F, kind), getattr(TF, kind)
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1003.0, -1000.5]], dtype=np.float32)
    out = check_against_torch(lambda t: ours(t, 1), lambda t: theirs(t, 1), [x], device=device)[0]
    assert np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [0, 1])
def test_softmax_rows_far_apart(kind, dim, device):
    """Rows (or columns) hundreds apart: a shift by the global max would underflow the low
    ones, so the kernel must fall back to the per-row max; -inf entries are allowed."""
    ours, theirs = getattr(F, kind), getattr(TF, kind)
    x = _data((4, 5))
    x[1] += 300
    x[:, 2] -= 200
    x[3, 0] = -np.inf
    check_against_torch(lambda t: ours(t, dim), lambda t: theirs(t, dim), [x], device=device, grad_inputs=[])
    x[3, 0] = 0.0
    check_against_torch(lambda t: ours(t, dim), lambda t: theirs(t, dim), [x], device=device)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # NumPy notes inf - inf
@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
def test_softmax_nan_and_inf_propagate_like_torch(kind):
    x = np.array([[1.0, np.nan, 0.0], [np.inf, 1.0, 0.0], [1.0, 2.0, 3.0]], np.float32)
    ours = getattr(F, kind)(dn.tensor(x), 1).numpy()
    theirs = getattr(TF, kind)(torch.tensor(x), 1).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)  # NaN positions must agree


def test_softmax_rows_sum_to_one():
    p = F.softmax(dn.tensor(_data((6, 9))), dim=1).numpy()
    np.testing.assert_allclose(p.sum(axis=1), np.ones(6), rtol=1e-6)


@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [0, 1])
def test_softmax_numerical_gradient(kind, dim, device):
    fn = getattr(F, kind)
    numerical_grad_check(lambda x: fn(x, dim), [_data((3, 4), seed=2).astype(np.float64)], device=device)


@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
def test_softmax_dtype_argument_casts_first(kind):
    ours, theirs = getattr(F, kind), getattr(TF, kind)
    x = _data((2, 5))
    out = ours(dn.tensor(x), 1, dtype=dn.float64)
    ref = theirs(torch.tensor(x), 1, dtype=torch.float64)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-12)


@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
def test_softmax_one_node(kind):
    x = dn.tensor(_data((3, 4)), requires_grad=True)
    out = getattr(F, kind)(x, 1)
    assert out._node.fn is (A.Softmax if kind == "softmax" else A.LogSoftmax)


def test_softmax_zero_dim_and_empty():
    out = F.softmax(dn.tensor(np.float32(3.0)), 0)
    assert out.shape == () and out.item() == 1.0
    out = F.log_softmax(dn.tensor(np.zeros((0, 4), np.float32)), 1)
    assert out.shape == (0, 4)


def test_tensor_methods_route_to_functional():
    x = _data((3, 4))
    t = dn.tensor(x)
    np.testing.assert_allclose(t.relu().numpy(), np.maximum(x, 0))
    np.testing.assert_allclose(t.sigmoid().numpy(), torch.sigmoid(torch.tensor(x)).numpy(), rtol=0, atol=1e-7)
    np.testing.assert_allclose(t.softmax(0).numpy(), TF.softmax(torch.tensor(x), 0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(t.log_softmax().numpy(), TF.log_softmax(torch.tensor(x), -1).numpy(), rtol=1e-6)


def test_relu_accepts_integers_and_inplace_flag():
    out = F.relu(dn.tensor(np.array([-2, 0, 3])), inplace=True)
    assert out.dtype == np.int64 and out.tolist() == [0, 0, 3]


# ---- errors -------------------------------------------------------------------------------------
def test_softmax_dim_out_of_range_names_shape():
    x = dn.tensor(_data((3, 4)))
    assert_raises_naming(ValueError, lambda: F.softmax(x, 2), "softmax", "dim 2", "(3, 4)")
    assert_raises_naming(ValueError, lambda: F.log_softmax(x, -3), "log_softmax", "dim -3", "(3, 4)")


def test_softmax_without_dim_raises():
    assert_raises_naming(TypeError, lambda: F.softmax(dn.tensor(_data((3, 4)))), "softmax", "dim", "(3, 4)")


def test_float_only_activations_reject_integers():
    x = dn.tensor(np.arange(6).reshape(2, 3))
    for fn, name in [(F.sigmoid, "sigmoid"), (F.tanh, "tanh"), (F.gelu, "gelu"), (F.silu, "silu")]:
        assert_raises_naming(TypeError, lambda: fn(x), name, "int64", "(2, 3)")


def test_bad_arguments():
    x = dn.tensor(_data((3,)))
    assert_raises_naming(ValueError, lambda: F.gelu(x, approximate="fast"), "gelu", "'fast'")
    assert_raises_naming(ValueError, lambda: F.hardtanh(x, 1.0, -1.0), "hardtanh", "min_val", "max_val")
    assert_raises_naming(TypeError, lambda: F.leaky_relu(x, "0.1"), "leaky_relu", "negative_slope")
    assert_raises_naming(TypeError, lambda: F.relu(np.zeros(3)), "relu", "Tensor", "ndarray")
