"""Pooling: max/avg (1-D, 2-D), adaptive avg/max, against PyTorch, numerically, and errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import divenet as dn
from divenet import _native
import divenet.functional as F
from divenet.ops import pool as P
from tests.helpers import assert_raises_naming, check_against_torch, numerical_grad_check


def _rand(shape, seed=11):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _chwn(x):
    """The same values stored batch innermost, (C, H, W, N), as convolution leaves them; the
    ops see ``.permute(3, 0, 1, 2)`` of it."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0))


@pytest.fixture(params=["batch-last", "small-batch"])
def batch_path(request, monkeypatch):
    """Batch-last inputs take the batch-last kernels from ``_BATCH_LAST_MIN`` images on (patched
    down to reach them with small test batches), and the planes path through a (C, N, H, W)
    copy below it."""
    if request.param == "batch-last":
        monkeypatch.setattr(P, "_BATCH_LAST_MIN", 1)
    else:
        monkeypatch.setattr(P, "_BATCH_LAST_MIN", 1 << 30)
    return request.param


def _batch_last_case(ours, theirs, x, device, path):
    """Check an op on the NCHW view of a (C, H, W, N) array against torch, and the layout of
    its output: batch-last on that path, (C, N, H, W) on the small-batch one."""
    out = check_against_torch(lambda t: ours(t.permute(3, 0, 1, 2)), lambda t: theirs(t.permute(3, 0, 1, 2)),
                              [_chwn(x)], device=device)
    y = out[0].array
    if path == "batch-last":
        assert y.transpose(1, 2, 3, 0).flags.c_contiguous  # (for N == 1 so is NCHW)
    else:
        assert y.transpose(1, 0, 2, 3).flags.c_contiguous


def _cnhw(x):
    """The same values stored channel-major, as convolution leaves them."""
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3))


# ---- the slides' example -----------------------------------------------------------------------
SLIDE = [[0.0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_slides_max_pooling_2x2(device):
    x = dn.tensor([[SLIDE]], device=device)
    y = F.max_pool2d(x, 2, stride=1)
    np.testing.assert_array_equal(y.numpy(), [[[[4, 5], [7, 8]]]])


def test_slides_avg_pooling_2x2(device):
    x = dn.tensor([[SLIDE]], device=device)
    y = F.avg_pool2d(x, 2, stride=1)
    np.testing.assert_array_equal(y.numpy(), [[[[2, 3], [5, 6]]]])


def test_slides_max_pooling_gradient_goes_to_the_maximum(device):
    x = dn.tensor([[SLIDE]], device=device, requires_grad=True)
    F.max_pool2d(x, 2, stride=1).sum().backward()
    np.testing.assert_array_equal(dn.tensor(x.grad).numpy()[0, 0], [[0, 0, 0], [0, 1, 1], [0, 1, 1]])


# ---- max pooling -------------------------------------------------------------------------------
# (input shape, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = [
    ((2, 3, 8, 8), 2, None, 0, 1, False),  # tiled: a reshape
    ((2, 3, 9, 9), 2, None, 0, 1, False),  # odd size: last row/col dropped
    ((2, 3, 9, 9), 2, None, 0, 1, True),  # ... or kept in ceil mode
    ((2, 3, 9, 10), 3, 2, 1, 1, False),  # AlexNet / ResNet stem
    ((2, 3, 10, 9), 3, 2, 1, 1, True),
    ((2, 2, 7, 7), 3, 1, 1, 1, False),
    ((2, 2, 7, 8), 3, 1, 0, 1, False),
    ((2, 2, 8, 8), 2, 3, 0, 1, False),  # stride > kernel: some inputs in no window
    ((2, 2, 8, 8), 2, 3, 1, 1, True),
    ((2, 2, 10, 11), (2, 3), (1, 2), (1, 1), 2, False),  # dilation
    ((2, 2, 11, 10), 3, 2, 1, (2, 1), True),
    ((1, 2, 6, 7), (1, 3), (1, 2), (0, 1), 1, False),
    ((3, 5, 6), 2, 1, 1, 1, False),  # unbatched (C, H, W)
]


@pytest.mark.parametrize("shape,k,s,p,d,ceil", MAX_CASES)
def test_max_pool2d_matches_torch(device, shape, k, s, p, d, ceil):
    check_against_torch(
        lambda x: F.max_pool2d(x, k, s, p, d, ceil_mode=ceil),
        lambda x: TF.max_pool2d(x, k, s, p, d, ceil_mode=ceil),
        [_rand(shape)], device=device)


@pytest.mark.parametrize("kind,k,s,p", [("max", 2, None, 0), ("max", 3, 2, 1), ("max", 3, 1, 1),
                                        ("avg", 2, None, 0), ("avg", 3, 2, 1)])
def test_pool2d_cnhw_view_keeps_its_layout(device, kind, k, s, p):
    ours_fn, torch_fn = (F.max_pool2d, TF.max_pool2d) if kind == "max" else (F.avg_pool2d, TF.avg_pool2d)
    x = _cnhw(_rand((4, 3, 8, 8)))
    ours = check_against_torch(lambda t: ours_fn(t.permute(1, 0, 2, 3), k, s, p),
                               lambda t: torch_fn(t.permute(1, 0, 2, 3), k, s, p), [x], device=device)
    y = ours[0].array
    assert not y.flags.c_contiguous and y.transpose(1, 0, 2, 3).flags.c_contiguous


@pytest.mark.parametrize("shape,k,s,p,d,ceil", [c for c in MAX_CASES if len(c[0]) == 4])
@pytest.mark.parametrize("values", ["distinct", "ties"])
def test_max_pool2d_batch_last_matches_torch(device, shape, k, s, p, d, ceil, values, batch_path):
    """The batch-last kernel: every geometry, and windows with several equal maxima."""
    x = _rand(shape) if values == "distinct" else \
        np.random.default_rng(3).integers(0, 3, shape).astype(np.float32)
    _batch_last_case(lambda t: F.max_pool2d(t, k, s, p, d, ceil_mode=ceil),
                     lambda t: TF.max_pool2d(t, k, s, p, d, ceil_mode=ceil), x, device, batch_path)


@pytest.mark.parametrize("k,s,p,d,ceil", [(2, None, 0, 1, False), (3, 2, 1, 1, True), (3, 1, 1, 1, False),
                                          (2, 1, 0, 2, False), ((2, 3), (2, 1), (1, 1), 1, True)])
def test_max_pool2d_ties_route_to_the_first_maximum_like_torch(device, k, s, p, d, ceil):
    # few distinct values: windows with several equal maxima everywhere (as after a ReLU)
    x = np.random.default_rng(3).integers(0, 3, (2, 3, 9, 10)).astype(np.float32)
    check_against_torch(
        lambda t: F.max_pool2d(t, k, s, p, d, ceil_mode=ceil),
        lambda t: TF.max_pool2d(t, k, s, p, d, ceil_mode=ceil),
        [x], device=device)


@pytest.mark.parametrize("k,s,p,d,ceil", [(2, None, 0, 1, False), (3, 2, 1, 1, True), (2, 1, 1, 2, False)])
def test_max_pool2d_return_indices_match_torch(device, k, s, p, d, ceil):
    x = np.random.default_rng(4).integers(0, 4, (2, 2, 7, 9)).astype(np.float32)
    y, idx = F.max_pool2d(dn.tensor(x, device=device), k, s, p, d, ceil_mode=ceil, return_indices=True)
    ty, tidx = TF.max_pool2d(torch.tensor(x), k, s, p, d, ceil_mode=ceil, return_indices=True)
    np.testing.assert_array_equal(y.numpy(), ty.numpy())
    assert idx.dtype == np.int64 and not idx.requires_grad
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())


@pytest.mark.parametrize("shape,k,s,p,d,ceil", [MAX_CASES[i] for i in (0, 4, 8, 10)])
def test_max_pool2d_numerical_gradient(device, shape, k, s, p, d, ceil):
    numerical_grad_check(lambda x: F.max_pool2d(x, k, s, p, d, ceil_mode=ceil), [_rand(shape, 1)],
                         device=device)


def test_max_pool2d_without_grad_needs_no_indices(device):
    x = dn.tensor(_rand((2, 3, 9, 9)), device=device)
    with dn.no_grad():
        y = F.max_pool2d(x, 3, 2, 1)
    np.testing.assert_array_equal(y.numpy(), TF.max_pool2d(torch.tensor(x.numpy()), 3, 2, 1).numpy())


def test_max_pool2d_large_chunked_batch_matches_torch(device):
    # enough planes for several cache-sized chunks, with a short last chunk
    x = _rand((7, 61, 12, 12))
    check_against_torch(lambda t: F.max_pool2d(t, 3, 2, 1), lambda t: TF.max_pool2d(t, 3, 2, 1),
                        [x], device=device)
    check_against_torch(lambda t: F.avg_pool2d(t, 3, 2, 1), lambda t: TF.avg_pool2d(t, 3, 2, 1),
                        [x], device=device)


@pytest.mark.parametrize("k", [2, 3])
def test_tiled_reshape_path_equals_the_general_window_path(k):
    # the two kernels must agree exactly, ties included (kernel level, no PyTorch involved)
    a = np.random.default_rng(7).integers(0, 3, (5, 3 * k, 2 * k)).astype(np.float32)
    tiled = P.Windows((3 * k, 2 * k), (3, 2), (k, k), (k, k), (0, 0), (1, 1))
    general = P.Windows((3 * k, 2 * k), (3, 2), (k, k), (k, k), (0, 0), (1, 1), tile=False)
    assert tiled.tiled and not general.tiled
    (o1, i1), (o2, i2) = P.max_pool_planes(a, tiled, True), P.max_pool_planes(a, general, True)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(i1, general.crop(i2))
    g = np.random.default_rng(8).standard_normal(o1.shape).astype(np.float32)
    np.testing.assert_array_equal(P.max_pool_planes_backward(g, i1, tiled), P.max_pool_planes_backward(g, i2, general))
    scale = np.float32(1 / k ** 2)
    np.testing.assert_allclose(P.avg_pool_planes(a, tiled, scale), P.avg_pool_planes(a, general, scale), rtol=1e-6)
    np.testing.assert_allclose(P.avg_pool_planes_backward(g, tiled, scale),
                               P.avg_pool_planes_backward(g, general, scale), rtol=1e-6)


def test_max_pool2d_float64_stays_float64(device):
    y = F.max_pool2d(dn.tensor(_rand((1, 2, 5, 5)), dtype="float64", device=device), 3, 2, 1)
    assert y.dtype == np.float64


# ---- average pooling ---------------------------------------------------------------------------
# (input shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_CASES = [
    ((4, 6, 8, 8), 2, None, 0, False, True, None),  # LeNet: tiled
    ((2, 3, 9, 9), 2, None, 0, False, True, None),
    ((2, 3, 9, 9), 2, None, 0, True, True, None),
    ((2, 3, 9, 9), 2, None, 0, True, False, None),
    ((2, 3, 9, 10), 3, 2, 1, False, True, None),
    ((2, 3, 9, 10), 3, 2, 1, False, False, None),
    ((2, 3, 10, 9), 3, 2, 1, True, True, None),  # ceil: last window clipped at n + p
    ((2, 3, 10, 9), 3, 2, 1, True, False, None),
    ((2, 2, 7, 7), 3, 1, 1, False, True, None),
    ((2, 2, 8, 8), 2, 3, 1, True, True, None),
    ((2, 2, 8, 8), 2, 3, 1, True, False, None),
    ((2, 2, 10, 9), (3, 2), (2, 1), (1, 0), False, False, None),
    ((2, 2, 8, 8), 3, 2, 1, False, True, 5),
    ((2, 2, 8, 8), 2, None, 0, False, True, 3),
    ((3, 5, 6), 3, 2, 1, True, False, None),  # unbatched
]


@pytest.mark.parametrize("shape,k,s,p,ceil,cip,div", AVG_CASES)
def test_avg_pool2d_matches_torch(device, shape, k, s, p, ceil, cip, div):
    check_against_torch(
        lambda x: F.avg_pool2d(x, k, s, p, ceil, cip, div),
        lambda x: TF.avg_pool2d(x, k, s, p, ceil, cip, div),
        [_rand(shape)], device=device)


@pytest.mark.parametrize("shape,k,s,p,ceil,cip,div", [c for c in AVG_CASES if len(c[0]) == 4])
def test_avg_pool2d_batch_last_matches_torch(device, shape, k, s, p, ceil, cip, div, batch_path):
    _batch_last_case(lambda t: F.avg_pool2d(t, k, s, p, ceil, cip, div),
                     lambda t: TF.avg_pool2d(t, k, s, p, ceil, cip, div), _rand(shape), device, batch_path)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_batch_last_pool_numerical_gradient(device, pool, batch_path):
    x = _chwn(_rand((2, 3, 7, 8), 1).astype(np.float64))
    if pool == "max":
        fn = lambda t: F.max_pool2d(t.permute(3, 0, 1, 2), 3, 2, 1, ceil_mode=True)  # noqa: E731
    else:
        fn = lambda t: F.avg_pool2d(t.permute(3, 0, 1, 2), 3, 2, 1, True, False)  # noqa: E731
    numerical_grad_check(fn, [x], device=device)


@pytest.mark.parametrize("shape,k,s,p,ceil,cip,div", [AVG_CASES[i] for i in (0, 7, 11)])
def test_avg_pool2d_numerical_gradient(device, shape, k, s, p, ceil, cip, div):
    numerical_grad_check(lambda x: F.avg_pool2d(x, k, s, p, ceil, cip, div), [_rand(shape, 1)], device=device)


def test_avg_pool2d_float32_output(device):
    y = F.avg_pool2d(dn.tensor(_rand((1, 2, 6, 6)), device=device), 3, 2, 1, count_include_pad=False)
    assert y.dtype == np.float32


# ---- 1-D ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,k,s,p,d,ceil", [((2, 3, 10), 2, None, 0, 1, False), ((2, 3, 11), 3, 2, 1, 1, True),
                                                ((2, 3, 11), 2, 1, 1, 3, False), ((3, 9), 3, 2, 1, 1, False)])
def test_max_pool1d_matches_torch(device, shape, k, s, p, d, ceil):
    check_against_torch(lambda x: F.max_pool1d(x, k, s, p, d, ceil),
                        lambda x: TF.max_pool1d(x, k, s, p, d, ceil), [_rand(shape)], device=device)


@pytest.mark.parametrize("shape,k,s,p,ceil,cip", [((2, 3, 10), 2, None, 0, False, True),
                                                  ((2, 3, 11), 3, 2, 1, True, False), ((3, 9), 3, 2, 1, True, True)])
def test_avg_pool1d_matches_torch(device, shape, k, s, p, ceil, cip):
    check_against_torch(lambda x: F.avg_pool1d(x, k, s, p, ceil, cip),
                        lambda x: TF.avg_pool1d(x, k, s, p, ceil, cip), [_rand(shape)], device=device)


def test_max_pool1d_return_indices_match_torch(device):
    x = np.random.default_rng(5).integers(0, 3, (2, 2, 11)).astype(np.float32)
    y, idx = F.max_pool1d(dn.tensor(x, device=device), 3, 2, 1, return_indices=True)
    ty, tidx = TF.max_pool1d(torch.tensor(x), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())
    np.testing.assert_array_equal(y.numpy(), ty.numpy())


def test_pool1d_numerical_gradient(device):
    numerical_grad_check(lambda x: F.max_pool1d(x, 3, 2, 1, ceil_mode=True), [_rand((2, 2, 10), 2)], device=device)
    numerical_grad_check(lambda x: F.avg_pool1d(x, 3, 2, 1, count_include_pad=False), [_rand((2, 2, 10), 2)],
                         device=device)


# ---- adaptive ----------------------------------------------------------------------------------
ADAPTIVE_CASES = [
    ((2, 3, 8, 8), 1),  # global pooling
    ((2, 3, 8, 8), (4, 2)),  # divisible: plain pooling
    ((2, 3, 6, 6), 6),  # identity windows
    ((2, 3, 10, 9), (3, 4)),  # not divisible: overlapping windows
    ((2, 3, 13, 13), 6),  # AlexNet's 13 -> 6
    ((2, 3, 4, 5), (7, None)),  # more outputs than inputs; None keeps the width
    ((2, 3, 9, 8), (None, 3)),
    ((3, 7, 5), (2, 3)),  # unbatched
]


@pytest.mark.parametrize("shape,out", ADAPTIVE_CASES)
def test_adaptive_avg_pool2d_matches_torch(device, shape, out):
    check_against_torch(lambda x: F.adaptive_avg_pool2d(x, out), lambda x: TF.adaptive_avg_pool2d(x, out),
                        [_rand(shape)], device=device)


@pytest.mark.parametrize("shape,out", ADAPTIVE_CASES)
def test_adaptive_max_pool2d_matches_torch(device, shape, out):
    check_against_torch(lambda x: F.adaptive_max_pool2d(x, out), lambda x: TF.adaptive_max_pool2d(x, out),
                        [_rand(shape)], device=device)


@pytest.mark.parametrize("out", [(3, 4), (7, None), 2])
def test_adaptive_max_pool2d_ties_and_indices_match_torch(device, out):
    x = np.random.default_rng(6).integers(0, 3, (2, 3, 10, 9)).astype(np.float32)
    check_against_torch(lambda t: F.adaptive_max_pool2d(t, out), lambda t: TF.adaptive_max_pool2d(t, out),
                        [x], device=device)
    _, idx = F.adaptive_max_pool2d(dn.tensor(x, device=device), out, return_indices=True)
    _, tidx = TF.adaptive_max_pool2d(torch.tensor(x), out, return_indices=True)
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())


@pytest.mark.parametrize("out", [(3, 4), (4, 2)])
def test_adaptive_pool2d_cnhw_view_keeps_its_layout(device, out):
    x = _cnhw(_rand((4, 3, 8, 9)))
    for ours_fn, torch_fn in ((F.adaptive_avg_pool2d, TF.adaptive_avg_pool2d),
                              (F.adaptive_max_pool2d, TF.adaptive_max_pool2d)):
        ours = check_against_torch(lambda t: ours_fn(t.permute(1, 0, 2, 3), out),
                                   lambda t: torch_fn(t.permute(1, 0, 2, 3), out), [x], device=device)
        assert ours[0].array.transpose(1, 0, 2, 3).flags.c_contiguous


@pytest.mark.parametrize("n,o", [(10, 1), (10, 3), (4, 6), (12, 12)])
def test_adaptive_pool1d_matches_torch(device, n, o):
    x = _rand((2, 3, n))
    check_against_torch(lambda t: F.adaptive_avg_pool1d(t, o), lambda t: TF.adaptive_avg_pool1d(t, o),
                        [x], device=device)
    check_against_torch(lambda t: F.adaptive_max_pool1d(t, o), lambda t: TF.adaptive_max_pool1d(t, o),
                        [x], device=device)


@pytest.mark.parametrize("shape,out", [ADAPTIVE_CASES[i] for i in (1, 3, 5)])
def test_adaptive_pool2d_numerical_gradient(device, shape, out):
    numerical_grad_check(lambda x: F.adaptive_avg_pool2d(x, out), [_rand(shape, 1)], device=device)
    numerical_grad_check(lambda x: F.adaptive_max_pool2d(x, out), [_rand(shape, 1)], device=device)


def test_adaptive_windows_follow_torch_formula():
    start, end = P.adaptive_bounds(10, 3)
    np.testing.assert_array_equal(start, [0, 3, 6])
    np.testing.assert_array_equal(end, [4, 7, 10])


# ---- errors ------------------------------------------------------------------------------------
def test_kernel_larger_than_padded_input_names_shapes(device):
    x = dn.zeros(1, 2, 3, 3, device=device)
    assert_raises_naming(ValueError, lambda: F.max_pool2d(x, 6, padding=1), "max_pool2d", "(1, 2, 3, 3)", "(6, 6)")
    assert_raises_naming(ValueError, lambda: F.avg_pool2d(x, (4, 2)), "avg_pool2d", "(1, 2, 3, 3)", "(4, 2)")
    assert_raises_naming(ValueError, lambda: F.max_pool2d(x, 2, dilation=3), "max_pool2d", "(1, 2, 3, 3)", "(4, 4)")
    assert_raises_naming(ValueError, lambda: F.max_pool1d(dn.zeros(1, 2, 3, device=device), 4),
                         "max_pool1d", "(1, 2, 3)")


def test_padding_more_than_half_the_kernel_is_rejected(device):
    x = dn.zeros(1, 1, 8, 8, device=device)
    assert_raises_naming(ValueError, lambda: F.max_pool2d(x, 3, padding=2), "max_pool2d", "padding (2, 2)",
                         "kernel_size (3, 3)")
    assert_raises_naming(ValueError, lambda: F.avg_pool2d(x, (4, 2), padding=(1, 2)), "avg_pool2d",
                         "(1, 2)", "(4, 2)")
    assert_raises_naming(ValueError, lambda: F.max_pool1d(dn.zeros(1, 1, 8, device=device), 2, padding=2),
                         "max_pool1d", "padding 2", "kernel_size 2")


@pytest.mark.parametrize("fn", [lambda x: F.max_pool2d(x, 2), lambda x: F.avg_pool2d(x, 2),
                                lambda x: F.adaptive_avg_pool2d(x, 1), lambda x: F.adaptive_max_pool2d(x, 1)])
def test_pool2d_wrong_ndim_names_shape(device, fn):
    assert_raises_naming(ValueError, lambda: fn(dn.zeros(4, 4, device=device)), "pool2d", "(4, 4)", "3-D or 4-D")
    assert_raises_naming(ValueError, lambda: fn(dn.zeros(1, 1, 1, 4, 4, device=device)), "(1, 1, 1, 4, 4)")


def test_pool1d_wrong_ndim_names_shape(device):
    assert_raises_naming(ValueError, lambda: F.max_pool1d(dn.zeros(1, 2, 4, 4, device=device), 2),
                         "max_pool1d", "(1, 2, 4, 4)")
    assert_raises_naming(ValueError, lambda: F.avg_pool1d(dn.zeros(4, device=device), 2), "avg_pool1d", "(4,)")


def test_bad_pool_arguments(device):
    x = dn.zeros(1, 1, 6, 6, device=device)
    assert_raises_naming(ValueError, lambda: F.max_pool2d(x, 2, stride=0), "max_pool2d", "stride")
    assert_raises_naming(ValueError, lambda: F.max_pool2d(x, 0), "max_pool2d", "kernel_size")
    assert_raises_naming(ValueError, lambda: F.max_pool2d(x, (2, 2, 2)), "max_pool2d", "kernel_size")
    assert_raises_naming(TypeError, lambda: F.avg_pool2d(x, 2.5), "avg_pool2d", "kernel_size")
    assert_raises_naming(TypeError, lambda: F.max_pool2d(x.numpy(), 2), "max_pool2d", "Tensor")
    assert_raises_naming(TypeError, lambda: F.max_pool2d(dn.zeros(1, 1, 4, 4, dtype="int64"), 2),
                         "max_pool2d", "int64", "(1, 1, 4, 4)")
    assert_raises_naming(ValueError, lambda: F.adaptive_avg_pool2d(x, (0, 2)), "adaptive_avg_pool2d",
                         "(0, 2)", "(1, 1, 6, 6)")
    assert_raises_naming(ValueError, lambda: F.adaptive_max_pool2d(x, (1, 2, 3)), "adaptive_max_pool2d",
                         "(1, 2, 3)")
    assert_raises_naming(ValueError, lambda: F.max_pool2d(dn.zeros(1, 0, 4, 4), 2), "max_pool2d", "(1, 0, 4, 4)")


# ---- the native average-pool kernels (divenet/_native.c) ---------------------------------------
@pytest.mark.skipif(_native.library() is None or not _native.fast_here(), reason="native kernels not taken here")
@pytest.mark.parametrize("shape,k,s,p,ceil,cip,div", [c for c in AVG_CASES if len(c[0]) == 4])
@pytest.mark.parametrize("batch", [2, 9, 40])  # (one image: NCHW, the planes path)
def test_native_avg_pool_is_taken_and_equals_the_numpy_path(monkeypatch, shape, k, s, p, ceil, cip, div, batch):
    """Batch-last float32 inputs take the kernels; their forward sums the taps in the NumPy
    path's order (the same bits), their gradient agrees to rounding; tails of 8 images too."""
    monkeypatch.setattr(P, "_BATCH_LAST_MIN", 1)
    calls = []
    for name in ("avg_pool", "avg_pool_grad"):
        real = getattr(_native, name)
        monkeypatch.setattr(_native, name, lambda *a, real=real: calls.append(1) or real(*a))
    x = _chwn(_rand((batch,) + shape[1:], 2))
    gy = None
    results = []
    for native in (True, False):
        if not native:
            monkeypatch.setattr(_native, "avg_pool", lambda *a: None)
            monkeypatch.setattr(_native, "avg_pool_grad", lambda *a: None)
        t = dn.tensor(x, requires_grad=True)
        y = F.avg_pool2d(t.permute(3, 0, 1, 2), k, s, p, ceil, cip, div)
        if gy is None:
            gy = np.random.default_rng(3).standard_normal(y.shape).astype(np.float32)
        y.backward(dn.tensor(gy))
        results.append((y.numpy(), np.asarray(t.grad)))
    assert len(calls) == 2
    (y1, g1), (y2, g2) = results
    assert np.array_equal(y1, y2)
    np.testing.assert_allclose(g1, g2, rtol=1e-6, atol=1e-7)


def _native_pool_calls(monkeypatch, names):
    calls = []
    for name in names:
        real = getattr(_native, name)
        monkeypatch.setattr(_native, name, lambda *a, real=real, **k: calls.append(1) or real(*a, **k))
    return calls


@pytest.mark.skipif(_native.library() is None or not _native.fast_here(), reason="native kernels not taken here")
@pytest.mark.parametrize("shape,k,s,p,d,ceil", [c for c in MAX_CASES if len(c[0]) == 4])
@pytest.mark.parametrize("batch", [2, 9, 40])
@pytest.mark.parametrize("values", ["distinct", "ties"])
def test_native_max_pool_is_taken_and_equals_the_numpy_path(monkeypatch, shape, k, s, p, d, ceil, batch, values):
    """The kernels give the NumPy path's maxima, first-maximum indices and gradients bit for
    bit (the gradient adds in the same tap order), on every geometry and batch tail."""
    monkeypatch.setattr(P, "_BATCH_LAST_MIN", 1)
    calls = _native_pool_calls(monkeypatch, ("max_pool", "max_pool_grad"))
    full = (batch,) + shape[1:]
    ties = np.random.default_rng(3).integers(0, 3, full).astype(np.float32)
    x = _chwn(_rand(full, 4) if values == "distinct" else ties)
    results, gy = [], None
    for native in (True, False):
        if not native:
            monkeypatch.setattr(_native, "max_pool", lambda *a: None)
            monkeypatch.setattr(_native, "max_pool_grad", lambda *a: None)
        t = dn.tensor(x, requires_grad=True)
        y = F.max_pool2d(t.permute(3, 0, 1, 2), k, s, p, d, ceil_mode=ceil)
        if gy is None:
            gy = np.random.default_rng(5).standard_normal(y.shape).astype(np.float32)
        y.backward(dn.tensor(gy))
        results.append((y.numpy(), np.asarray(t.grad)))
    assert len(calls) == 2
    for a, b in zip(*results):
        assert np.array_equal(a, b)


@pytest.mark.skipif(_native.library() is None or not _native.fast_here(), reason="native kernels not taken here")
def test_native_max_pool_nan_is_the_maximum_like_torch(monkeypatch):
    monkeypatch.setattr(P, "_BATCH_LAST_MIN", 1)
    calls = _native_pool_calls(monkeypatch, ("max_pool", "max_pool_grad"))
    x = _rand((11, 2, 6, 6), 6)
    x[0, 0, 1, 1] = x[3, 1, 4, 5] = x[10, 1, 0, 0] = np.nan
    x[3, 1, 5, 5] = np.inf
    _batch_last_case(lambda t: F.max_pool2d(t, 3, 2, 1), lambda t: TF.max_pool2d(t, 3, 2, 1), x, "cpu", "batch-last")
    assert len(calls) == 2
