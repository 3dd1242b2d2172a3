"""linear, dropout, embedding, channel_shuffle: vs PyTorch, numerical gradients, errors."""
import numpy as np
import pytest
import torch.nn.functional as TF

import divenet as dn
import divenet.functional as F
from divenet.ops import layers as L
from tests.helpers import assert_raises_naming, check_against_torch, numerical_grad_check


def _randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---- linear -------------------------------------------------------------------------------------
@pytest.mark.parametrize("x_shape", [(4, 3), (2, 5, 3), (3,), (2, 1, 2, 3), (0, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(x_shape, bias, device):
    inputs = [_randn(*x_shape), _randn(6, 3, seed=1)] + ([_randn(6, seed=2)] if bias else [])
    check_against_torch(F.linear, TF.linear, inputs, device=device)


@pytest.mark.parametrize("rows,shape", [(3, (3, 50)), (12, (2, 6, 50)), (300, (300, 50))])
def test_linear_takes_the_product_with_the_long_side_as_rows(rows, shape, device):
    """Fewer rows than outputs: (W @ x.T).T, a column-major result (OpenBLAS ran the other
    form 4-13x slower); more rows: x @ W.T. Both equal PyTorch's."""
    out = check_against_torch(F.linear, TF.linear, [_randn(*shape), _randn(200, 50, seed=1), _randn(200, seed=2)],
                              device=device)[0]
    if device == "cpu":
        y = out.array.reshape(-1, 200)
        assert y.flags.f_contiguous == (rows < 200) and y.flags.c_contiguous == (rows >= 200)


def test_linear_non_contiguous_input(device):
    x = _randn(3, 4).T  # (4, 3) as a transposed view
    check_against_torch(F.linear, TF.linear, [x, _randn(5, 3, seed=1), _randn(5, seed=2)], device=device)


@pytest.mark.parametrize("grad_inputs", [[0], [1], [2], [1, 2]])
def test_linear_partial_gradients(grad_inputs, device):
    inputs = [_randn(4, 3), _randn(6, 3, seed=1), _randn(6, seed=2)]
    check_against_torch(F.linear, TF.linear, inputs, grad_inputs=grad_inputs, device=device)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_numerical_gradient(bias, device):
    inputs = [_randn(2, 3, 4, seed=3), _randn(5, 4, seed=4)] + ([_randn(5, seed=5)] if bias else [])
    numerical_grad_check(F.linear, [a.astype(np.float64) for a in inputs], device=device)


def test_linear_is_one_node():
    x, w, b = (dn.tensor(a, requires_grad=True) for a in (_randn(4, 3), _randn(6, 3), _randn(6)))
    out = F.linear(x, w, b)
    assert out._node.fn is L.Linear and out._node.inputs == [x, w, b]


def test_linear_errors():
    x, w = dn.tensor(_randn(4, 3)), dn.tensor(_randn(6, 5))
    assert_raises_naming(ValueError, lambda: F.linear(x, w), "linear", "(4, 3)", "(6, 5)", "in_features=5")
    w = dn.tensor(_randn(6, 3))
    assert_raises_naming(ValueError, lambda: F.linear(x, w, dn.tensor(_randn(5))), "linear", "bias", "(6,)", "(5,)")
    assert_raises_naming(ValueError, lambda: F.linear(x, dn.tensor(_randn(3))), "linear", "weight", "(3,)")
    assert_raises_naming(TypeError, lambda: F.linear(x.double(), w), "linear", "float64", "float32")


# ---- dropout ------------------------------------------------------------------------------------
def _dropout_out(p, seed, shape=(64, 50), x=None):
    dn.manual_seed(seed)
    x = dn.tensor(np.ones(shape, np.float32) if x is None else x, requires_grad=True)
    return x, F.dropout(x, p)


def test_dropout_reproducible_under_manual_seed():
    _, a = _dropout_out(0.5, 123)
    _, b = _dropout_out(0.5, 123)
    _, c = _dropout_out(0.5, 124)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_zero_fraction_and_scale(p):
    n = 200_000
    x = np.random.default_rng(0).uniform(0.5, 2.0, n).astype(np.float32)  # never 0
    _, out = _dropout_out(p, 7, x=x)
    out = out.numpy()
    zeroed = out == 0
    # binomial: the fraction's standard deviation is sqrt(p (1 - p) / n) < 0.0012; allow 5 sigma
    assert abs(zeroed.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    kept = ~zeroed
    np.testing.assert_allclose(out[kept], x[kept] / np.float32(1 - p), rtol=1e-6)
    assert out.dtype == np.float32


@pytest.mark.parametrize("p", [0.3, 0.6])
def test_dropout_gradient_is_mask_times_scale(p):
    x, out = _dropout_out(p, 3, x=_randn(40, 30) + np.float32(10))  # nonzero inputs
    w = _randn(40, 30, seed=9)
    (out * dn.tensor(w)).sum().backward()
    keep = out.numpy() != 0
    np.testing.assert_allclose(x.grad.numpy(), w * keep / np.float32(1 - p), rtol=1e-6)


def test_dropout_identity_in_eval_and_for_p0():
    x = dn.tensor(_randn(5, 4), requires_grad=True)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x


def test_dropout_p1_gives_zeros_and_zero_gradient():
    x, out = _dropout_out(1.0, 0, x=_randn(6, 5))
    assert (out.numpy() == 0).all()
    out.sum().backward()
    assert (x.grad == 0).all()


def test_dropout_float64_and_layout():
    x = _randn(6, 4, 5, 3).astype(np.float64).transpose(1, 0, 2, 3)  # NCHW stored as CNHW
    out = F.dropout(dn.tensor(x), 0.5)
    assert out.dtype == np.float64
    assert list(np.argsort(-np.asarray(out.array.strides))) == [1, 0, 2, 3]
    keep = out.numpy() != 0
    np.testing.assert_allclose(out.numpy()[keep], 2 * x[keep])


@pytest.mark.parametrize("p", [-0.1, 1.5, "0.5", True])
def test_dropout_p_out_of_range(p):
    assert_raises_naming(ValueError, lambda: F.dropout(dn.tensor(_randn(2, 3)), p), "dropout", "between 0 and 1",
                         repr(p), "(2, 3)")


# ---- embedding ----------------------------------------------------------------------------------
@pytest.mark.parametrize("idx_shape", [(5,), (2, 3), (2, 3, 4), ()])
@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_embedding_matches_torch(idx_shape, padding_idx, device):
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 10, idx_shape)
    if idx.size > 3:
        idx.flat[:3] = [2, 2, 9]  # repeated indices and padding rows are present
    check_against_torch(lambda i, w: F.embedding(i, w, padding_idx),
                        lambda i, w: TF.embedding(i, w, padding_idx), [idx, _randn(10, 4)], device=device)


def test_embedding_repeated_indices_accumulate():
    w = dn.tensor(_randn(4, 3), requires_grad=True)
    F.embedding(dn.tensor(np.array([[1, 1], [1, 3]])), w).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), np.array([[0] * 3, [3] * 3, [0] * 3, [1] * 3], np.float32))


def test_embedding_int32_indices(device):
    idx = np.array([[0, 3], [3, 1]], dtype=np.int32)
    check_against_torch(F.embedding, TF.embedding, [idx, _randn(5, 2)], device=device)


def test_embedding_numerical_gradient(device):
    # (padding_idx is left out: its row deliberately gets no gradient though the output uses it)
    idx = np.array([[0, 4, 4], [2, 0, 1]])
    numerical_grad_check(F.embedding, [idx, _randn(5, 3).astype(np.float64)], device=device)


def test_embedding_errors():
    w = dn.tensor(_randn(10, 4))
    assert_raises_naming(ValueError, lambda: F.embedding(dn.tensor(np.array([1, 10])), w), "embedding", "[0, 10)",
                         "(10, 4)", "10")
    assert_raises_naming(ValueError, lambda: F.embedding(dn.tensor(np.array([-1, 2])), w), "embedding", "-1")
    assert_raises_naming(TypeError, lambda: F.embedding(dn.tensor(np.array([1.0])), w), "embedding", "float64", "(1,)")
    assert_raises_naming(ValueError, lambda: F.embedding(dn.tensor(np.array([1])), w, padding_idx=10),
                         "embedding", "padding_idx", "(10, 4)")
    assert_raises_naming(ValueError, lambda: F.embedding(dn.tensor(np.array([1])), dn.tensor(_randn(10))),
                         "embedding", "weight", "(10,)")


# ---- channel_shuffle ----------------------------------------------------------------------------
def _torch_shuffle(groups):
    return lambda x: TF.channel_shuffle(x, groups)


@pytest.mark.parametrize("shape,groups", [((2, 6, 3, 3), 2), ((2, 6, 3, 3), 3), ((2, 6, 3, 3), 1),
                                          ((2, 6, 3, 3), 6), ((2, 4, 5), 2), ((1, 6, 2, 2, 2), 3)])
def test_channel_shuffle_matches_torch(shape, groups, device):
    check_against_torch(lambda x: F.channel_shuffle(x, groups), _torch_shuffle(groups), [_randn(*shape)],
                        device=device, rtol=0, atol=0)


@pytest.mark.parametrize("groups", [2, 3])
def test_channel_shuffle_non_contiguous_keeps_layout(groups, device):
    x = _randn(6, 2, 3, 3).transpose(1, 0, 2, 3)  # (2, 6, 3, 3) stored as CNHW
    out = check_against_torch(lambda t: F.channel_shuffle(t, groups), _torch_shuffle(groups), [x], device=device,
                              rtol=0, atol=0)[0]
    assert list(np.argsort(-np.asarray(out.array.strides))) == [1, 0, 2, 3]


def test_channel_shuffle_order():
    x = dn.tensor(np.arange(6, dtype=np.float32).reshape(1, 6, 1))
    assert F.channel_shuffle(x, 2).numpy().ravel().tolist() == [0, 3, 1, 4, 2, 5]


def test_channel_shuffle_numerical_gradient(device):
    numerical_grad_check(lambda x: F.channel_shuffle(x, 2), [_randn(2, 4, 2, 3).astype(np.float64)], device=device)


def test_channel_shuffle_errors():
    assert_raises_naming(ValueError, lambda: F.channel_shuffle(dn.tensor(_randn(2, 5, 3, 3)), 2),
                         "channel_shuffle", "5 channels", "(2, 5, 3, 3)", "groups=2")
    assert_raises_naming(ValueError, lambda: F.channel_shuffle(dn.tensor(_randn(2, 6)), 2), "channel_shuffle", "(2, 6)")
    assert_raises_naming(ValueError, lambda: F.channel_shuffle(dn.tensor(_randn(2, 6, 3)), 0), "channel_shuffle",
                         "groups")
