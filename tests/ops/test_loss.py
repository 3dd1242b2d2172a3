"""cross_entropy, nll_loss, mse_loss: vs PyTorch, numerical gradients, errors."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import divenet as dn
import divenet.functional as F
from divenet.ops import loss as L
from tests.helpers import assert_raises_naming, check_against_torch, numerical_grad_check

REDUCTIONS = ["mean", "sum", "none"]


def _logits(*shape, seed=0, scale=2.0):
    return np.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, dtype=np.float32)


def _targets(shape, n_cls, seed=1):
    return np.random.default_rng(seed).integers(0, n_cls, shape)


def _target_shape(shape):
    return () if len(shape) == 1 else (shape[0],) + shape[2:]


# ---- cross_entropy ------------------------------------------------------------------------------
CE_SHAPES = [(6, 5), (1, 3), (5,), (3, 4, 2, 2), (2, 3, 5)]


@pytest.mark.parametrize("shape", CE_SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_torch(shape, reduction, smoothing, device):
    n_cls = shape[0] if len(shape) == 1 else shape[1]
    x, y = _logits(*shape), _targets(_target_shape(shape), n_cls)
    check_against_torch(
        lambda a, b: F.cross_entropy(a, b, reduction=reduction, label_smoothing=smoothing),
        lambda a, b: TF.cross_entropy(a, b, reduction=reduction, label_smoothing=smoothing),
        [x, y], device=device)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_cross_entropy_ignore_index(reduction, smoothing, ignore_index, device):
    x = _logits(8, 4)
    y = _targets((8,), 4)
    y[[1, 5]] = ignore_index
    y[0] = 2  # class 2 is ignored too when ignore_index=2
    check_against_torch(
        lambda a, b: F.cross_entropy(a, b, ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing),
        lambda a, b: TF.cross_entropy(a, b, ignore_index=ignore_index, reduction=reduction,
                                      label_smoothing=smoothing),
        [x, y], device=device)


@pytest.mark.parametrize("shape", [(6, 5), (2, 5, 3)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_class_weights(shape, reduction, smoothing, device):
    x, y = _logits(*shape), _targets(_target_shape(shape), 5)
    y.flat[1] = -100
    w = np.random.default_rng(3).uniform(0.2, 2.0, 5).astype(np.float32)
    check_against_torch(
        lambda a, b, c: F.cross_entropy(a, b, c, reduction=reduction, label_smoothing=smoothing),
        lambda a, b, c: TF.cross_entropy(a, b, c, reduction=reduction, label_smoothing=smoothing),
        [x, y, w], grad_inputs=[0], device=device)


@pytest.mark.parametrize("shape", [(6, 5), (2, 5, 3), (4,)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_probability_targets(shape, reduction, smoothing, device):
    x = _logits(*shape)
    t = np.random.default_rng(4).uniform(0, 1, shape).astype(np.float32)
    t /= t.sum(axis=0 if len(shape) == 1 else 1, keepdims=True)
    check_against_torch(
        lambda a, b: F.cross_entropy(a, b, reduction=reduction, label_smoothing=smoothing),
        lambda a, b: TF.cross_entropy(a, b, reduction=reduction, label_smoothing=smoothing),
        [x, t], device=device)


def test_cross_entropy_probability_targets_with_weights(device):
    x = _logits(5, 4)
    t = np.random.default_rng(4).uniform(0, 1, (5, 4)).astype(np.float32)
    w = np.array([0.5, 1.0, 2.0, 1.5], np.float32)
    check_against_torch(lambda a, b, c: F.cross_entropy(a, b, c, label_smoothing=0.1),
                        lambda a, b, c: TF.cross_entropy(a, b, c, label_smoothing=0.1),
                        [x, t, w], grad_inputs=[0, 1], device=device)


def test_cross_entropy_large_logits_are_stable(device):
    x = np.array([[1000.0, -1000.0, 0.0], [50.0, 60.0, 55.0]], np.float32)
    out = check_against_torch(lambda a, b: F.cross_entropy(a, b, label_smoothing=0.1),
                              lambda a, b: TF.cross_entropy(a, b, label_smoothing=0.1),
                              [x, np.array([1, 0])], device=device)[0]
    assert np.isfinite(out.numpy())


@pytest.mark.parametrize("shape", [(4, 5), (3, 5, 4)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_rows_far_apart(shape, smoothing, device):
    """Samples hundreds apart in logit scale (the per-row max fallback of the kernel)."""
    x = _logits(*shape)
    x[1] += 300
    x[2] -= 250
    y = _targets(_target_shape(shape), 5)
    check_against_torch(lambda a, b: F.cross_entropy(a, b, label_smoothing=smoothing, reduction="none"),
                        lambda a, b: TF.cross_entropy(a, b, label_smoothing=smoothing, reduction="none"),
                        [x, y], device=device)


def test_cross_entropy_non_contiguous_logits(device):
    x = _logits(5, 6).T  # (6, 5) transposed view
    check_against_torch(F.cross_entropy, TF.cross_entropy, [x, _targets((6,), 5)], device=device)


def test_cross_entropy_k_dim_non_contiguous_logits(device):
    x = _logits(5, 2, 3, 3).transpose(1, 0, 2, 3)  # (2, 5, 3, 3) stored class-major
    y = _targets((2, 3, 3), 5)
    y[0, 1, 1] = -100
    check_against_torch(lambda a, b: F.cross_entropy(a, b, label_smoothing=0.1),
                        lambda a, b: TF.cross_entropy(a, b, label_smoothing=0.1), [x, y], device=device)
    # (PyTorch's own nll_loss backward refuses a non-contiguous input, so it gets a copy)
    check_against_torch(F.nll_loss, lambda a, b: TF.nll_loss(a.contiguous(), b), [x, y], device=device)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_cross_entropy_narrow_integer_targets(dtype, device):
    x = _logits(3, 4, 10, 10)
    y = _targets((3, 10, 10), 4).astype(dtype)
    check_against_torch(F.cross_entropy, lambda a, b: TF.cross_entropy(a, b.long()), [x, y], device=device)
    check_against_torch(F.nll_loss, lambda a, b: TF.nll_loss(a, b.long()), [x, y], device=device)


def test_cross_entropy_all_ignored_mean_is_nan_like_torch():
    x = _logits(3, 4)
    y = np.full(3, -100)
    ours = F.cross_entropy(dn.tensor(x), dn.tensor(y)).item()
    theirs = TF.cross_entropy(torch.tensor(x), torch.tensor(y)).item()
    assert np.isnan(ours) and np.isnan(theirs)


def test_cross_entropy_is_one_node_float32():
    x = dn.tensor(_logits(4, 3), requires_grad=True)
    loss = F.cross_entropy(x, dn.tensor(_targets((4,), 3)), label_smoothing=0.1)
    assert loss._node.fn is L.CrossEntropy and loss._node.inputs[0] is x
    assert loss.shape == () and loss.dtype == np.float32
    loss.backward()
    assert x.grad.dtype == np.float32


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_numerical_gradient(smoothing, reduction, device):
    x = _logits(3, 4, 2, seed=5).astype(np.float64)
    y = _targets((3, 2), 4)
    y[0, 1] = -100
    w = np.array([0.5, 1.0, 2.0, 1.5])
    numerical_grad_check(lambda a, b, c: F.cross_entropy(a, b, c, reduction=reduction, label_smoothing=smoothing),
                         [x, y, w], grad_inputs=[0], device=device)
    numerical_grad_check(lambda a, b: F.cross_entropy(a, b, reduction=reduction, label_smoothing=smoothing),
                         [x, y], device=device)


def test_cross_entropy_probability_targets_numerical_gradient(device):
    x = _logits(3, 4, seed=6).astype(np.float64)
    t = np.random.default_rng(7).uniform(0, 1, (3, 4))
    numerical_grad_check(lambda a, b: F.cross_entropy(a, b, label_smoothing=0.2), [x, t], device=device)


def test_cross_entropy_errors():
    x = dn.tensor(_logits(4, 3))
    assert_raises_naming(ValueError, lambda: F.cross_entropy(x, dn.tensor(np.array([0, 1, 3, -2]))),
                         "cross_entropy", "[0, 3)", "(4, 3)", "-2", "3")
    assert_raises_naming(ValueError, lambda: F.cross_entropy(x, dn.tensor(np.array([0, 1, 2]))),
                         "cross_entropy", "(3,)", "(4, 3)", "(4,)")
    assert_raises_naming(ValueError, lambda: F.cross_entropy(x, dn.tensor(np.zeros((4, 1), np.int64))),
                         "cross_entropy", "(4, 1)", "(4,)")
    assert_raises_naming(TypeError, lambda: F.cross_entropy(x, dn.tensor(np.array([0.0, 1.0, 2.0, 1.0], np.float32))),
                         "cross_entropy", "float32", "(4,)", "(4, 3)")
    assert_raises_naming(ValueError, lambda: F.cross_entropy(x, dn.tensor(np.array([0, 1, 2, 1])), reduction="avg"),
                         "cross_entropy", "'avg'")
    assert_raises_naming(ValueError, lambda: F.cross_entropy(x, dn.tensor(np.array([0, 1, 2, 1])),
                                                             label_smoothing=1.5), "cross_entropy", "label_smoothing")
    assert_raises_naming(ValueError, lambda: F.cross_entropy(x, dn.tensor(np.array([0, 1, 2, 1])),
                                                             dn.tensor(np.ones(4, np.float32))),
                         "cross_entropy", "weight", "(3,)", "(4,)")
    assert_raises_naming(TypeError, lambda: F.cross_entropy(dn.tensor(np.zeros((2, 3), np.int64)),
                                                            dn.tensor(np.array([0, 1]))), "cross_entropy", "int64")


# ---- nll_loss -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 5), (5,), (3, 4, 2)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_matches_torch(shape, reduction, device):
    n_cls = shape[0] if len(shape) == 1 else shape[1]
    x = _logits(*shape)
    x = (x - np.log(np.exp(x).sum(axis=0 if len(shape) == 1 else 1, keepdims=True))).astype(np.float32)
    y = _targets(_target_shape(shape), n_cls)
    check_against_torch(lambda a, b: F.nll_loss(a, b, reduction=reduction),
                        lambda a, b: TF.nll_loss(a, b, reduction=reduction), [x, y], device=device)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_weights_and_ignore_index(reduction, device):
    x, y = _logits(7, 4), _targets((7,), 4)
    y[[2, 3]] = 1
    w = np.array([0.5, 1.0, 2.0, 1.5], np.float32)
    check_against_torch(lambda a, b, c: F.nll_loss(a, b, c, ignore_index=1, reduction=reduction),
                        lambda a, b, c: TF.nll_loss(a, b, c, ignore_index=1, reduction=reduction),
                        [x, y, w], grad_inputs=[0], device=device)


def test_nll_loss_after_log_softmax_equals_cross_entropy():
    x, y = _logits(5, 4), dn.tensor(_targets((5,), 4))
    a = F.nll_loss(F.log_softmax(dn.tensor(x), 1), y).item()
    b = F.cross_entropy(dn.tensor(x), y).item()
    assert abs(a - b) <= 1e-6 * abs(b)


def test_nll_loss_numerical_gradient(device):
    x = _logits(4, 3, seed=8).astype(np.float64)
    y = np.array([0, 2, -100, 2])
    numerical_grad_check(lambda a, b: F.nll_loss(a, b), [x, y], device=device)


def test_nll_loss_errors():
    x = dn.tensor(_logits(4, 3))
    assert_raises_naming(ValueError, lambda: F.nll_loss(x, dn.tensor(np.array([0, 5, 1, 1]))),
                         "nll_loss", "[0, 3)", "(4, 3)", "5")
    assert_raises_naming(ValueError, lambda: F.nll_loss(x, dn.tensor(np.array([[0, 1, 1, 1]]))),
                         "nll_loss", "(1, 4)", "(4, 3)")
    assert_raises_naming(TypeError, lambda: F.nll_loss(x, dn.tensor(np.array([0.0, 1.0, 1.0, 1.0], np.float32))),
                         "nll_loss", "float32")


# ---- mse_loss -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 2, 2), ()])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_matches_torch(shape, reduction, device):
    a, b = _logits(*shape), _logits(*shape, seed=1)
    check_against_torch(lambda u, v: F.mse_loss(u, v, reduction=reduction),
                        lambda u, v: TF.mse_loss(u, v, reduction=reduction), [a, b], device=device)


def test_mse_loss_non_contiguous(device):
    a = _logits(4, 3).T
    check_against_torch(F.mse_loss, TF.mse_loss, [a, _logits(3, 4, seed=1)], device=device)


def test_mse_loss_broadcasting_warns_like_torch(device):
    a, b = _logits(4, 3), _logits(3, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch warns as well
        check_against_torch(F.mse_loss, TF.mse_loss, [a, b], device=device)
    with pytest.warns(UserWarning, match=r"mse_loss.*\(3,\).*\(4, 3\)"):
        F.mse_loss(dn.tensor(a), dn.tensor(b))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_numerical_gradient(reduction, device):
    a, b = _logits(3, 4, seed=2).astype(np.float64), _logits(3, 4, seed=3).astype(np.float64)
    numerical_grad_check(lambda u, v: F.mse_loss(u, v, reduction=reduction), [a, b], device=device)


def test_mse_loss_errors():
    a = dn.tensor(_logits(4, 3))
    assert_raises_naming(ValueError, lambda: F.mse_loss(a, dn.tensor(_logits(4, 2))), "mse_loss", "(4, 3)", "(4, 2)")
    assert_raises_naming(TypeError, lambda: F.mse_loss(a, dn.tensor(_logits(4, 3).astype(np.float64))),
                         "mse_loss", "float64", "float32")
    assert_raises_naming(ValueError, lambda: F.mse_loss(a, a, reduction="avg"), "mse_loss", "'avg'")
