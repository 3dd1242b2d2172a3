"""The native sigmoid and tanh kernels (divenet/_native.c, ``_native.elementwise``): equal to
PyTorch to float32 rounding over the whole float32 range (tiny, huge, infinite, NaN, the
polynomial's edge at |x| = 0.625), on every length's tail, in place and on batch-last views;
they hand back None (NumPy runs) for what they do not take."""
import numpy as np
import pytest
import torch

import divenet as dn
import divenet.functional as F
from divenet import _native
from tests.helpers import check_against_torch

needs_native = pytest.mark.skipif(_native.library() is None or not _native.fast_here(),
                                  reason="native kernels not built or not taken on this CPU")

EDGES = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 1e-3, 0.6249999, 0.625, 0.6250001, -0.625,
                  1.0, -1.0, 9.0, -9.0, 17.0, -17.0, 44.0, -44.0, 87.0, -87.0, 88.5, -88.5, 89.0,
                  -89.0, 104.0, -104.0, 1e30, -1e30, np.inf, -np.inf], dtype=np.float32)
TORCH = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}


def _wide(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * np.exp(rng.uniform(-12, 5, n))  # magnitudes 1e-5 .. 150
    return x.astype(np.float32)


@needs_native
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_matches_torch_over_the_float32_range(name):
    x = np.concatenate([EDGES, _wide(100_003)])
    ours = _native.elementwise(name, x)
    theirs = TORCH[name](torch.from_numpy(x)).numpy()
    assert ours is not None and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=4e-7, atol=1e-37)
    assert np.array_equal(np.signbit(ours[:2]), np.signbit(theirs[:2])) or name == "sigmoid"


@needs_native
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_nan_stays_nan(name):
    x = np.array([np.nan, 1.0, np.nan], dtype=np.float32)
    out = _native.elementwise(name, x)
    assert np.isnan(out[0]) and np.isnan(out[2]) and not np.isnan(out[1])


@needs_native
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
@pytest.mark.parametrize("n", list(range(0, 34)) + [1023])  # the tails of 8- and 16-float vectors
def test_every_tail_length_and_nothing_written_beyond(n, name):
    buf = np.full(n + 16, 7.0, dtype=np.float32)
    x = _wide(n, seed=n)
    out = _native.elementwise(name, x, out=buf[:n])
    x64 = x.astype(np.float64)
    expect = np.tanh(x64) if name == "tanh" else 1 / (1 + np.exp(-x64))
    np.testing.assert_allclose(out, expect, rtol=4e-7, atol=1e-37)
    assert np.all(buf[n:] == 7.0)


@needs_native
def test_in_place_and_batch_last_views():
    base = _wide(2 * 3 * 4 * 5).reshape(3, 4, 5, 2)  # (C, H, W, N) memory, seen as NCHW
    x = base.transpose(3, 0, 1, 2)
    expect = torch.sigmoid(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    out = _native.elementwise("sigmoid", x)
    assert out.strides == x.strides  # the input's layout kept
    np.testing.assert_allclose(out, expect, rtol=4e-7, atol=1e-37)
    _native.elementwise("sigmoid", x, out=x)  # in place
    np.testing.assert_allclose(x, expect, rtol=4e-7, atol=1e-37)


@needs_native
@pytest.mark.parametrize("name", ["sigmoid_grad", "tanh_grad"])
def test_gradients_match_the_formula(name):
    y = np.random.default_rng(1).uniform(-1, 1, 1001).astype(np.float32)
    g = np.random.default_rng(2).standard_normal(1001).astype(np.float32)
    ours = _native.elementwise(name, y, g)
    y64, g64 = y.astype(np.float64), g.astype(np.float64)
    expect = (1 - y64) * y64 * g64 if name == "sigmoid_grad" else (1 - y64 * y64) * g64
    np.testing.assert_allclose(ours, expect, rtol=2e-6, atol=1e-7)


def test_what_the_kernels_do_not_take_is_handed_back():
    x = np.ones((4, 6), dtype=np.float32)
    assert _native.elementwise("tanh", x.astype(np.float64)) is None  # float64: NumPy's
    assert _native.elementwise("tanh", x[:, ::2]) is None  # strided: not one block
    assert _native.elementwise("tanh", x[::-1]) is None  # negative strides
    assert _native.elementwise("sigmoid_grad", x, np.ones((6, 4), np.float32).T) is None  # layouts differ
    assert _native.elementwise("tanh", x, out=np.empty((4, 6), np.float64)) is None


@pytest.mark.parametrize("fn,tfn", [(F.sigmoid, torch.sigmoid), (F.tanh, torch.tanh),
                                     (F.silu, torch.nn.functional.silu)])
def test_ops_on_strided_inputs_fall_back_and_match(fn, tfn, device):
    x = _wide(4 * 10).reshape(4, 10)[:, ::2] / 10  # not dense: NumPy's path
    check_against_torch(fn, tfn, [x], device=device)


def test_lstm_with_native_tanh_matches_torch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    ours = dn.nn.LSTM(4, 6)
    theirs = torch.nn.LSTM(4, 6)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.from_numpy(getattr(ours, name).numpy()))
    out, _ = ours(dn.tensor(x))
    expect, _ = theirs(torch.from_numpy(x))
    np.testing.assert_allclose(out.numpy(), expect.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_relu_gradient_is_zero_where_the_output_is_not_positive_even_for_nan_like_torch(device):
    x = np.array([[-1.0, 0.0, 2.0, 3.0, -0.0, 5.0, -7.0, 8.0, 1.0]], dtype=np.float32)
    g = np.array([[np.nan, np.nan, 1.5, np.nan, 2.0, -3.0, np.inf, 4.0, 0.5]], dtype=np.float32)
    t = dn.tensor(x, device=device, requires_grad=True)
    F.relu(t).backward(dn.tensor(g, device=device))
    tt = torch.tensor(x, requires_grad=True)
    torch.relu(tt).backward(torch.tensor(g))
    np.testing.assert_array_equal(t.grad.numpy(), tt.grad.numpy())


@needs_native
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 31, 1023, 32768 * 2 + 5])  # tails; several threads' runs
def test_relu_is_numpys_maximum_bit_for_bit(n):
    x = np.concatenate([EDGES, -EDGES, np.array([np.nan, -np.nan], np.float32), _wide(n, seed=n)])
    ours = _native.elementwise("relu", x)
    theirs = np.maximum(x, np.float32(0))
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours.view(np.int32), theirs.view(np.int32))  # NaN and -0 as NumPy
    _native.elementwise("relu", x, out=x)  # in place
    np.testing.assert_array_equal(x.view(np.int32), theirs.view(np.int32))


@needs_native
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "relu_grad", "tanh_grad"])
def test_threads_split_the_runs_without_changing_a_bit(name, monkeypatch):
    arrays = [_wide(32768 * 5 + 11, seed=s) for s in range(1 if name in ("relu", "sigmoid", "tanh") else 2)]
    monkeypatch.setattr(_native, "SPLIT_MIN_VALUES", 0)  # split this small array all the same
    results = []
    for t in (1, 2, 5):
        monkeypatch.setattr(_native, "threads", lambda t=t: t)
        results.append(_native.elementwise(name, *arrays))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_only_large_arrays_are_split_among_threads(monkeypatch):
    monkeypatch.setattr(_native, "threads", lambda: 2)
    assert _native.split_threads(_native.SPLIT_MIN_VALUES) == 2
    assert _native.split_threads(_native.SPLIT_MIN_VALUES - 1) == 1
    assert _native.conv_threads(_native.SPLIT_MIN_MACS) == 2
    assert _native.conv_threads(_native.SPLIT_MIN_MACS - 1) == 1
