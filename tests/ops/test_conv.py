"""Convolution: the slides' worked examples, PyTorch comparisons (forward and every gradient),
numerical gradient checks in float64, and the error paths."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import divenet as dn
import divenet.functional as F
from divenet.autograd import Context
from divenet.ops import conv as C
from tests.helpers import assert_raises_naming, check_against_torch, numerical_grad_check

torch.set_num_threads(1)

X3 = np.arange(9, dtype=np.float32).reshape(3, 3)  # [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
K2 = np.arange(4, dtype=np.float32).reshape(2, 2)  # [[0, 1], [2, 3]]


def _t(a, device, **kw):
    return dn.tensor(np.asarray(a, dtype=np.float32), device=device, **kw)


def _rand(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# ---- the slides' worked examples --------------------------------------------------------------

def test_slides_cross_correlation(device):
    y = F.conv2d(_t(X3[None, None], device), _t(K2[None, None], device))
    assert y.shape == (1, 1, 2, 2) and y.dtype == dn.float32
    np.testing.assert_array_equal(y.numpy()[0, 0], [[19, 25], [37, 43]])


def test_slides_padding(device):
    y = F.conv2d(_t(X3[None, None], device), _t(K2[None, None], device), padding=1)
    assert y.shape == (1, 1, 4, 4)
    expected = [[0, 3, 8, 4], [9, 19, 25, 10], [21, 37, 43, 16], [6, 7, 8, 0]]
    np.testing.assert_array_equal(y.numpy()[0, 0], expected)
    # top-left: 0*0 + 0*1 + 0*2 + 0*3 = 0 (only padding); bottom-right: 8*0 + 0 + 0 + 0 = 0
    theirs = TF.conv2d(torch.tensor(X3[None, None]), torch.tensor(K2[None, None]), padding=1)
    np.testing.assert_array_equal(y.numpy(), theirs.numpy())


def test_slides_padding_and_stride(device):
    y = F.conv2d(_t(X3[None, None], device), _t(K2[None, None], device), padding=1, stride=(3, 2))
    np.testing.assert_array_equal(y.numpy()[0, 0], [[0, 8], [6, 8]])


def test_slides_two_input_channels(device):
    x = np.stack([X3, X3 + 1])[None]  # channel 1 = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    k = np.stack([K2, K2 + 1])[None]  # kernel 1 = [[1, 2], [3, 4]]
    y = F.conv2d(_t(x, device), _t(k, device)).numpy()[0, 0]
    assert y[0, 0] == 56  # (1*1 + 2*2 + 4*3 + 5*4) + (0*0 + 1*1 + 3*2 + 4*3)
    np.testing.assert_array_equal(y, [[56, 72], [104, 120]])


def test_slides_vertical_edge_detector(device):
    x = np.ones((6, 8), np.float32)
    x[:, 2:6] = 0
    k = np.array([[1, -1]], np.float32)
    y = F.conv2d(_t(x[None, None], device), _t(k[None, None], device)).numpy()[0, 0]
    np.testing.assert_array_equal(y, np.tile([0, 1, 0, 0, 0, -1, 0], (6, 1)))
    # the same kernel sees no edge in the transposed image (its edges are horizontal)
    yt = F.conv2d(_t(x.T[None, None], device), _t(k[None, None], device)).numpy()[0, 0]
    np.testing.assert_array_equal(yt, np.zeros((8, 5)))


def test_multiple_output_channels_and_bias(device):
    x = np.stack([X3, X3 + 1])[None]
    k = np.stack([np.stack([K2, K2 + 1]), np.stack([K2 + 1, K2 + 2])])  # (2, 2, 2, 2)
    y = F.conv2d(_t(x, device), _t(k, device), _t([0.5, -1], device)).numpy()[0]
    np.testing.assert_array_equal(y[0], np.array([[56, 72], [104, 120]]) + 0.5)
    # kernel 1 is kernel 0 + 1 everywhere: adds the 2x2 window sums of both channels
    win = np.array([[8, 12], [20, 24]]) + np.array([[12, 16], [24, 28]])
    np.testing.assert_array_equal(y[1], np.array([[56, 72], [104, 120]]) + win - 1)


def test_conv_output_size():
    assert F.conv_output_size(3, 2) == 2
    assert F.conv_output_size(3, 2, 1, 1) == 4
    assert F.conv_output_size(3, 2, 3, 1) == 2 and F.conv_output_size(3, 2, 2, 1) == 2
    assert F.conv_output_size(224, 11, 4, 2) == 55  # AlexNet's first layer
    assert F.conv_output_size(7, 3, 1, 0, 2) == 3
    assert F.conv_output_size(7, 4, 1, (1, 2)) == 7


# ---- conv2d against PyTorch -------------------------------------------------------------------

# (N, C, H, W, O, kh, kw, stride, padding, dilation, groups, bias)
CASES_2D = [
    (2, 3, 7, 7, 4, 3, 3, 1, 0, 1, 1, True),
    (2, 3, 8, 6, 5, 3, 2, (2, 1), (1, 2), 1, 1, True),
    (1, 4, 9, 9, 6, 3, 3, 2, 1, 2, 2, False),            # grouped, strided, dilated
    (2, 4, 6, 6, 4, 3, 3, 1, "same", 1, 4, True),         # depthwise
    (2, 8, 5, 5, 16, 3, 3, 1, 1, 1, 8, False),            # depthwise, channel multiplier 2
    (2, 4, 6, 7, 8, 4, 2, 1, "same", 1, 1, True),         # even kernel: asymmetric 'same'
    (2, 3, 7, 7, 3, 2, 3, 1, "same", (2, 1), 1, True),    # 'same' with dilation
    (2, 3, 9, 8, 2, 4, 4, 1, "same", 1, 1, False),
    (2, 3, 5, 5, 4, 3, 3, 1, "valid", 1, 1, True),
    (2, 6, 5, 5, 4, 1, 1, 1, 0, 1, 2, True),              # pointwise, grouped
    (2, 3, 5, 5, 4, 1, 1, 2, 0, 1, 1, True),              # strided pointwise
    (1, 2, 4, 4, 3, 5, 5, 3, (3, 2), 1, 1, True),         # padding wider than needed
    (2, 2, 7, 5, 3, 2, 2, (3, 2), 0, 1, 1, True),         # stride skips the last rows
    (3, 5, 6, 9, 4, 3, 3, (3, 2), (4, 3), (2, 1), 1, True),
    (4, 1, 12, 12, 6, 5, 5, 1, 2, 1, 1, True),            # LeNet's first layer, small
    (2, 6, 8, 8, 4, 5, 5, 1, 0, 1, 1, True),              # LeNet's second layer, small
    # maps with fewer pixels than kernel taps: the dense small-map product
    (3, 5, 1, 1, 4, 3, 3, 1, 1, 1, 1, True),              # ResNet's 1x1 stage
    (3, 4, 2, 2, 6, 3, 3, 1, 1, 1, 1, True),              # ResNet's 2x2 stage
    (2, 4, 2, 2, 6, 3, 3, 2, 1, 1, 1, False),             # 2x2 -> 1x1, stride 2
    (2, 3, 2, 3, 4, 3, 3, (1, 2), (2, 1), (1, 2), 1, True),  # strided, dilated, uneven pads
    (2, 3, 1, 4, 2, 2, 5, 1, "same", 1, 1, True),         # even kernel, asymmetric 'same'
]


def _ids(cases):
    return ["-".join(str(v).replace(" ", "") for v in c) for c in cases]


@pytest.mark.parametrize("case", CASES_2D, ids=_ids(CASES_2D))
def test_conv2d_matches_torch(case, device):
    N, Cin, H, W, O, kh, kw, stride, padding, dilation, groups, bias = case
    rng = np.random.default_rng(1)
    inputs = [_rand(rng, N, Cin, H, W), _rand(rng, O, Cin // groups, kh, kw)]
    if bias:
        inputs.append(_rand(rng, O))
    kw_ = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = check_against_torch(lambda *a: F.conv2d(*a, **kw_), lambda *a: TF.conv2d(*a, **kw_),
                                inputs, device=device)
    assert y[0].dtype == dn.float32


@pytest.mark.parametrize("need", [(0,), (1,), (1, 2), (0, 2)])
def test_conv2d_partial_gradients(need, device):
    """Only the gradients someone needs are computed; the others stay None."""
    rng = np.random.default_rng(2)
    inputs = [_rand(rng, 2, 4, 6, 6), _rand(rng, 6, 2, 3, 3), _rand(rng, 6)]
    kw_ = dict(stride=2, padding=1, groups=2)
    check_against_torch(lambda *a: F.conv2d(*a, **kw_), lambda *a: TF.conv2d(*a, **kw_),
                        inputs, grad_inputs=list(need), device=device)


def test_conv2d_float64(device):
    rng = np.random.default_rng(3)
    inputs = [_rand(rng, 2, 4, 7, 6, dtype=np.float64), _rand(rng, 6, 2, 3, 2, dtype=np.float64),
              _rand(rng, 6, dtype=np.float64)]
    kw_ = dict(stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2)
    y = check_against_torch(lambda *a: F.conv2d(*a, **kw_), lambda *a: TF.conv2d(*a, **kw_),
                                inputs, device=device)
    assert y[0].dtype == dn.float64


def test_conv2d_unbatched_input(device):
    rng = np.random.default_rng(4)
    inputs = [_rand(rng, 3, 6, 5), _rand(rng, 4, 3, 3, 3), _rand(rng, 4)]
    y = check_against_torch(lambda *a: F.conv2d(*a, padding=1), lambda *a: TF.conv2d(*a, padding=1),
                                inputs, device=device)
    assert y[0].shape == (4, 6, 5)


# ---- memory layouts ---------------------------------------------------------------------------

@pytest.mark.parametrize("side", [6, 1], ids=["im2col", "dense-small-map"])
def test_output_is_a_batch_last_view(side, device):
    """The result has the NCHW shape but (C, H, W, N) memory, so the next conv reads it as is."""
    rng = np.random.default_rng(5)
    y = F.conv2d(_t(_rand(rng, 3, 2, side, side), device), _t(_rand(rng, 4, 2, 3, 3), device), padding=1)
    assert y.shape == (3, 4, side, side)
    assert y.array.transpose(1, 2, 3, 0).flags.c_contiguous
    assert not y.array.flags.c_contiguous


@pytest.mark.parametrize("perm", [(1, 0, 2, 3), (3, 0, 1, 2), (0, 2, 3, 1)],
                         ids=["CNHW", "CHWN", "NHWC"])
def test_other_memory_layouts_of_the_input(perm, device):
    """An input whose memory is (C, N, H, W), (C, H, W, N) (what a previous conv hands over)
    or (N, H, W, C), seen through NCHW views."""
    rng = np.random.default_rng(6)
    stored = np.argsort(perm)  # memory axes: stored.transpose(perm) is NCHW (3, 2, 7, 6)
    shape = tuple(np.array((3, 2, 7, 6))[list(stored)])
    inputs = [_rand(rng, *shape), _rand(rng, 4, 2, 3, 3), _rand(rng, 4)]

    def ours(a, w, b):
        return F.conv2d(a.permute(*perm), w, b, stride=(2, 1), padding=1)

    def theirs(a, w, b):
        return TF.conv2d(a.permute(*perm), w, b, stride=(2, 1), padding=1)

    check_against_torch(ours, theirs, inputs, device=device)


def test_sliced_view_inputs(device):
    """Arbitrary strides, negative ones included, reach the kernel unchanged."""
    rng = np.random.default_rng(7)
    big = _rand(rng, 2, 6, 9, 11)
    view = big[:, 1::2, :, 2::2]  # a positive-stride view handed straight to the op
    inputs = [view, _rand(rng, 4, 3, 3, 2)]
    assert not view.flags.c_contiguous
    check_against_torch(lambda x, w: F.conv2d(x, w, padding=(1, 0)),
                        lambda x, w: TF.conv2d(x, w, padding=(1, 0)), inputs, device=device)
    # flipped and cropped inside the graph: the kernel sees negative strides
    inputs = [big, _rand(rng, 4, 6, 3, 3), _rand(rng, 4)]
    check_against_torch(lambda x, w, b: F.conv2d(x[:, :, ::-1, 1:], w, b, padding=1),
                        lambda x, w, b: TF.conv2d(x.flip(2)[:, :, :, 1:], w, b, padding=1),
                        inputs, device=device)


def test_two_convs_in_a_row(device):
    """The second conv's input and the first conv's output gradient are channels-first views."""
    rng = np.random.default_rng(8)
    inputs = [_rand(rng, 3, 2, 8, 8), _rand(rng, 4, 2, 3, 3), _rand(rng, 4),
              _rand(rng, 6, 4, 3, 3), _rand(rng, 6)]

    def ours(x, w1, b1, w2, b2):
        return F.conv2d(F.conv2d(x, w1, b1, padding=1), w2, b2, stride=2)

    def theirs(x, w1, b1, w2, b2):
        return TF.conv2d(TF.conv2d(x, w1, b1, padding=1), w2, b2, stride=2)

    check_against_torch(ours, theirs, inputs, device=device)


def _naive_im2col(x, plan):
    """cols[c, i, j, oh, ow, n] straight from the definition, on an explicitly padded input."""
    p = plan
    (ph1, pw1) = (p.sh * (p.OH - 1) + p.dh * (p.kh - 1) + 1, p.sw * (p.OW - 1) + p.dw * (p.kw - 1) + 1)
    xpad = np.zeros((p.C, max(ph1, p.H + p.ph0), max(pw1, p.W + p.pw0), p.N), x.dtype)
    xpad[:, p.ph0:p.ph0 + p.H, p.pw0:p.pw0 + p.W] = x.transpose(1, 2, 3, 0)
    cols = np.empty((p.C, p.kh, p.kw, p.OH, p.OW, p.N), x.dtype)
    for i in range(p.kh):
        for j in range(p.kw):
            for oh in range(p.OH):
                for ow in range(p.OW):
                    cols[:, i, j, oh, ow] = xpad[:, i * p.dh + oh * p.sh, j * p.dw + ow * p.sw]
    return cols


@pytest.mark.parametrize("geometry", [
    ((2, 4, 9, 8), (6, 2, 3, 4), (2, 1), ((2, 1), (1, 3)), (1, 2)),
    ((3, 2, 5, 6), (2, 2, 5, 5), (1, 1), ((4, 0), (0, 4)), (1, 1)),  # taps reading only padding
    ((1, 3, 7, 7), (3, 3, 2, 3), (3, 2), ((0, 0), (2, 2)), (2, 1)),
    ((1, 3, 11, 13), (4, 3, 7, 7), (2, 2), ((3, 3), (3, 3)), (1, 1)),  # a ResNet stem, batch 1
    ((65, 2, 9, 7), (2, 2, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),  # batch above the phase limit
    ((3, 2, 10, 9), (2, 2, 3, 3), (2, 3), ((1, 2), (0, 1)), (2, 2)),
], ids=["strided-dilated", "wide-padding", "stride-skips-rows", "stem", "large-batch", "odd-phases"])
@pytest.mark.parametrize("split", ["default", "always", "never"])
def test_im2col_is_the_definition_and_col2im_its_adjoint(geometry, split, monkeypatch):
    """im2col equals a gather straight from the definition; col2im satisfies
    <im2col(x), y> == <x, col2im(y)> for random x, y (the input gradient is its adjoint); with
    and without the stride-phase split (``_phase_split``)."""
    if split != "default":
        strided = lambda p, adjoint: (p.sh > 1 or p.sw > 1) and p.kh * p.kw > 1
        monkeypatch.setattr(C, "_phase_split", strided if split == "always" else lambda p, adjoint: False)
    x_shape, w_shape, stride, padding, dilation = geometry
    rng = np.random.default_rng(14)
    plan = C._Plan(x_shape, w_shape, stride, padding, dilation, 1)
    x = rng.standard_normal(x_shape)
    cols = C.im2col(np.ascontiguousarray(x.transpose(1, 2, 3, 0)), plan)
    np.testing.assert_array_equal(cols, _naive_im2col(x, plan))
    y = rng.standard_normal(cols.shape)
    dx = C.col2im(y, plan)
    assert dx.shape == (plan.C, plan.H, plan.W, plan.N)
    np.testing.assert_allclose((cols * y).sum(), (x.transpose(1, 2, 3, 0) * dx).sum(), rtol=1e-12)


def test_kernel_handles_any_gradient_layout():
    """Backward on the raw kernel with an NCHW, a CNHW, a CHWN and a sliced gradient array."""
    rng = np.random.default_rng(9)
    x, w, b = _rand(rng, 2, 3, 6, 5), _rand(rng, 4, 3, 3, 3), _rand(rng, 4)
    kw_ = dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1)
    g = _rand(rng, 2, 4, 6, 5)
    X, Wt, B = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    TF.conv2d(X, Wt, B, padding=1).backward(torch.tensor(g))
    spread = np.zeros((2, 4, 6, 10), np.float32)
    spread[..., ::2] = g
    layouts = [g, np.ascontiguousarray(g.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3),
               np.ascontiguousarray(g.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2),
               spread[..., ::2], g[:, ::-1].copy()[:, ::-1]]
    for gl in layouts:
        np.testing.assert_array_equal(gl, g)  # same values, other strides
        ctx = Context((True, True, True))
        C.Conv2d.forward(ctx, x, w, b, **kw_)
        gx, gw, gb = C.Conv2d.backward(ctx, gl)
        for ours, theirs in ((gx, X), (gw, Wt), (gb, B)):
            np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-4, atol=1e-5)
            assert ours.dtype == np.float32


# ---- conv1d -----------------------------------------------------------------------------------

# (N, C, L, O, k, stride, padding, dilation, groups, bias)
CASES_1D = [
    (2, 3, 10, 4, 3, 1, 0, 1, 1, True),
    (2, 4, 11, 6, 3, 2, 2, 2, 2, False),
    (2, 4, 9, 4, 4, 1, "same", 1, 4, True),     # depthwise, even kernel
    (2, 3, 9, 5, 2, 1, "same", 3, 1, True),
    (2, 3, 8, 5, 3, 3, "valid", 1, 1, True),
    (3, 4, 7, 2, 1, 1, 0, 1, 2, True),          # pointwise, grouped
    (1, 2, 5, 3, 4, 2, (3,), 1, 1, True),
]


@pytest.mark.parametrize("case", CASES_1D, ids=_ids(CASES_1D))
def test_conv1d_matches_torch(case, device):
    N, Cin, L, O, k, stride, padding, dilation, groups, bias = case
    rng = np.random.default_rng(10)
    inputs = [_rand(rng, N, Cin, L), _rand(rng, O, Cin // groups, k)]
    if bias:
        inputs.append(_rand(rng, O))
    kw_ = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    check_against_torch(lambda *a: F.conv1d(*a, **kw_), lambda *a: TF.conv1d(*a, **kw_),
                        inputs, device=device)


def test_conv1d_views_float64_and_unbatched(device):
    rng = np.random.default_rng(11)
    inputs = [_rand(rng, 5, 2, 12), _rand(rng, 4, 5, 3), _rand(rng, 4)]  # input given as (C, N, L)
    check_against_torch(lambda x, w, b: F.conv1d(x.permute(1, 0, 2)[:, :, ::-1], w, b, padding=1),
                        lambda x, w, b: TF.conv1d(x.permute(1, 0, 2).flip(2), w, b, padding=1),
                        inputs, device=device)
    inputs = [_rand(rng, 2, 3, 9, dtype=np.float64), _rand(rng, 4, 3, 2, dtype=np.float64)]
    y = check_against_torch(lambda *a: F.conv1d(*a, stride=2), lambda *a: TF.conv1d(*a, stride=2),
                                inputs, device=device)
    assert y[0].dtype == dn.float64
    inputs = [_rand(rng, 3, 9), _rand(rng, 4, 3, 3), _rand(rng, 4)]
    y = check_against_torch(lambda *a: F.conv1d(*a, padding="same"),
                                lambda *a: TF.conv1d(*a, padding="same"), inputs, device=device)
    assert y[0].shape == (4, 9)


def test_weight_gradient_in_chunks_matches_torch():
    """A tiny O*K with a long reduction (LeNet's first layer) sums cache-sized chunks, with a
    remainder: 10 x 60 x 60 = 36000 positions = 17 chunks of 2048 + 1184."""
    rng = np.random.default_rng(5)
    x, w, b = _rand(rng, 10, 1, 60, 60), _rand(rng, 4, 1, 3, 3), _rand(rng, 4)
    assert 4 * 9 <= 1024 and 36000 // C._WGRAD_CHUNK == 17
    check_against_torch(lambda *a: F.conv2d(*a, padding=1), lambda *a: TF.conv2d(*a, padding=1),
                        [x, w, b])


SMALL_MAPS = [c for c in CASES_2D if c[2] * c[3] < c[5] * c[6] and c[10] == 1]


@pytest.fixture(autouse=True)
def _dense_from_one_image(monkeypatch):
    """The dense small-map product takes the small batches of these tests too."""
    monkeypatch.setattr(C, "_DENSE_MIN_BATCH", 1)


@pytest.mark.parametrize("n, side, dense", [(64, 2, True), (63, 2, False), (64, 1, True), (256, 3, False)])
def test_the_dense_product_needs_a_large_batch_and_fewer_pixels_than_taps(n, side, dense, monkeypatch):
    monkeypatch.setattr(C, "_DENSE_MIN_BATCH", 64)
    p = C._Plan((n, 8, side, side), (8, 8, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    assert (C._dense_pairs(p, np.zeros(1, np.float32)) is not None) == dense


@pytest.mark.parametrize("case", SMALL_MAPS, ids=_ids(SMALL_MAPS))
def test_small_maps_take_the_dense_product_and_match_im2col(case, monkeypatch):
    """The dense small-map path is chosen for these shapes and gives what im2col gives."""
    N, Cin, H, W, O, kh, kw, stride, padding, dilation, groups, bias = case
    rng = np.random.default_rng(4)
    x, w, b = _rand(rng, N, Cin, H, W), _rand(rng, O, Cin, kh, kw), _rand(rng, O)
    kw_ = dict(stride=stride, padding=padding, dilation=dilation)
    results, gy = [], None
    for dense in (True, False):
        if not dense:
            monkeypatch.setattr(C, "_dense_pairs", lambda *a: None)
        chosen = []
        real = C._dense_forward
        monkeypatch.setattr(C, "_dense_forward", lambda *a: chosen.append(1) or real(*a))
        tx, tw, tb = (dn.tensor(a, requires_grad=True) for a in (x, w, b))
        y = F.conv2d(tx, tw, tb if bias else None, **kw_)
        if gy is None:
            gy = rng.standard_normal(y.shape).astype(np.float32)
        (y * dn.tensor(gy)).sum().backward()
        assert bool(chosen) == dense
        results.append([y.numpy(), tx.grad, tw.grad, tb.grad if bias else np.zeros(1)])
    for ours, ref in zip(*results):
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


# ---- the dispatch and the patch-matrix memory -------------------------------------------------

def _conv_ctx(x, w, need=(True, True, False), **kw_):
    """Run Conv2d.forward on raw arrays with a fresh Context; returns (ctx, output)."""
    ctx = Context(need)
    stride, dilation = kw_.get("stride", (1, 1)), kw_.get("dilation", (1, 1))
    padding = kw_.get("padding", ((0, 0), (0, 0)))
    return ctx, C.Conv2d.forward(ctx, x, w, None, stride, padding, dilation, kw_.get("groups", 1))


@pytest.mark.parametrize("shape, kw_, kind", [
    ((2, 3, 1, 1, 4, 3, 3), dict(padding=((1, 1), (1, 1))), "dense"),
    ((2, 3, 5, 5, 4, 1, 1), {}, "pointwise"),
    ((2, 3, 5, 5, 4, 1, 1), dict(stride=(2, 2)), "im2col"),
    ((2, 3, 6, 6, 4, 3, 3), dict(padding=((1, 1), (1, 1))), "im2col"),
    ((2, 4, 6, 6, 4, 3, 3), dict(groups=2), "im2col"),
])
def test_dispatch_names_the_implementation(shape, kw_, kind, monkeypatch):
    from divenet import _native
    monkeypatch.setattr(_native, "library", lambda: None)  # what DIVENET_NO_NATIVE=1 does
    N, Cin, H, W, O, kh, kw = shape
    rng = np.random.default_rng(11)
    ctx, _ = _conv_ctx(_rand(rng, N, Cin, H, W), _rand(rng, O, Cin // kw_.get("groups", 1), kh, kw), **kw_)
    assert ctx.kind == kind


# conv2d cases (CASES_2D's format) that exercise each weight-gradient formulation
WGRAD_CASES = [
    (2, 4, 9, 9, 12, 1, 1, 2, 0, 1, 1, True),     # K < O: a ResNet downsample (1x1, stride 2)
    (1, 3, 8, 7, 16, 1, 1, 1, 0, 1, 1, False),     # K < O, pointwise, batch 1
    (2, 6, 7, 7, 4, 3, 3, 1, 1, 1, 1, True),       # K >= O: cols @ g.T and a copy
    (3, 5, 6, 9, 4, 3, 3, (3, 2), (4, 3), (2, 1), 1, True),
    (2, 8, 5, 5, 16, 3, 3, 1, 1, 1, 2, False),     # grouped
]


@pytest.mark.parametrize("copy_max", [C._WGRAD_COPY_MAX, 0], ids=["default", "no-copy"])
@pytest.mark.parametrize("case", WGRAD_CASES, ids=_ids(WGRAD_CASES))
def test_weight_gradient_formulations_match_torch(case, copy_max, monkeypatch):
    """Every formulation ``_weight_grad`` picks (by K < O, and with the transposed copy off
    above ``_WGRAD_COPY_MAX``) gives PyTorch's gradients, in C order."""
    monkeypatch.setattr(C, "_WGRAD_COPY_MAX", copy_max)
    test_conv2d_matches_torch(case, "cpu")
    N, Cin, H, W, O, kh, kw, stride, padding, dilation, groups, bias = case
    rng = np.random.default_rng(2)
    tw = dn.tensor(_rand(rng, O, Cin // groups, kh, kw), requires_grad=True)
    F.conv2d(dn.tensor(_rand(rng, N, Cin, H, W)), tw, stride=stride, padding=padding,
             dilation=dilation, groups=groups).sum().backward()
    assert tw.grad.array.flags.c_contiguous


def test_weight_gradient_formulations_are_the_same_product():
    rng = np.random.default_rng(12)
    for O, K, P in ((8, 3, 300), (3, 8, 300), (5, 5, 64)):
        cols, g2 = _rand(rng, K, P), _rand(rng, O, P)
        gw = C._weight_grad(cols, g2)
        assert gw.shape == (O, K) and gw.flags.c_contiguous
        np.testing.assert_allclose(gw, g2.astype(np.float64) @ cols.T.astype(np.float64), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", CASES_2D, ids=_ids(CASES_2D))
def test_patch_matrix_rebuilt_in_backward_matches_torch(case, monkeypatch):
    """With every patch matrix rebuilt in backward from the saved input (resnet18's large
    ones are), forward and both gradients are PyTorch's, on every geometry."""
    monkeypatch.setattr(C, "_RECOMPUTE_MIN_BYTES", 0)
    test_conv2d_matches_torch(case, "cpu")


@pytest.mark.parametrize("case", CASES_2D, ids=_ids(CASES_2D))
def test_patch_matrix_rebuilt_a_channel_slice_at_a_time_matches_torch(case, monkeypatch):
    """The weight gradient from a rebuilt patch matrix, one input channel per slice (the
    smallest workspace), on every geometry."""
    monkeypatch.setattr(C, "_RECOMPUTE_MIN_BYTES", 0)
    monkeypatch.setattr(C, "_PATCH_SLICE_BYTES", 1)
    monkeypatch.setattr(C, "_implicit_weight_grad", lambda p, xh: False)  # the path that rebuilds it
    calls = []
    real = C.im2col
    monkeypatch.setattr(C, "im2col", lambda xh, plan, into=None: calls.append(plan.C) or real(xh, plan, into))
    test_conv2d_matches_torch(case, "cpu")
    if case[10] == 1 and calls:  # grouped ones rebuild it whole (their GEMM runs per group)
        assert 1 in calls, "the patch matrix was not rebuilt in slices"


def test_large_patch_matrices_are_rebuilt_and_the_input_saved(monkeypatch):
    monkeypatch.setattr(C, "_direct", lambda *a: False)  # the im2col path, on every CPU
    monkeypatch.setattr(C, "_implicit_weight_grad", lambda p, xh: False)  # its weight gradient too
    rng = np.random.default_rng(13)
    x, w = _rand(rng, 2, 3, 8, 8), _rand(rng, 4, 3, 3, 3)
    for limit, rebuilt in ((0, True), (1 << 62, False)):
        monkeypatch.setattr(C, "_RECOMPUTE_MIN_BYTES", limit)
        ctx, _ = _conv_ctx(x, w, padding=((1, 1), (1, 1)))
        assert ctx.recompute == rebuilt
        saved = ctx.saved[0]
        assert saved.shape == ((3, 8, 8, 2) if rebuilt else (27, 128))
    with C.rebuilt_patches():  # graph mode's policy: rebuilt whatever the size
        ctx, _ = _conv_ctx(x, w, padding=((1, 1), (1, 1)))
    assert ctx.recompute and ctx.saved[0].shape == (3, 8, 8, 2)
    ctx, _ = _conv_ctx(x, w, padding=((1, 1), (1, 1)))
    assert not ctx.recompute  # the policy ended with the block
    ctx, _ = _conv_ctx(x, w, need=(True, False, False), padding=((1, 1), (1, 1)))
    assert not ctx.recompute and ctx.saved[0] is None  # no weight gradient: nothing kept
    # where the implicit GEMM takes the weight gradient, it reads the input: no patch matrix kept
    monkeypatch.setattr(C, "_implicit_weight_grad", lambda p, xh: True)
    ctx, _ = _conv_ctx(x, w, padding=((1, 1), (1, 1)))
    assert ctx.recompute and ctx.saved[0].shape == (3, 8, 8, 2)


@pytest.mark.parametrize("limit", [0, 1 << 62], ids=["rebuilt", "kept"])
def test_workspaces_are_never_handed_out(limit, monkeypatch):
    """Temporary patch matrices live in per-thread workspaces: a second convolution (larger,
    then smaller, so the workspace grows and is reused) leaves earlier outputs, gradients and
    saved inputs intact."""
    monkeypatch.setattr(C, "_direct", lambda *a: False)  # the im2col path, on every CPU
    monkeypatch.setattr(C, "_RECOMPUTE_MIN_BYTES", limit)
    rng = np.random.default_rng(14)
    xs = [_rand(rng, 2, 3, 6, 6), _rand(rng, 3, 3, 9, 9), _rand(rng, 2, 3, 5, 5)]
    w = _rand(rng, 4, 3, 3, 3)
    tw = dn.tensor(w, requires_grad=True)
    outs = []
    with dn.no_grad():
        for x in xs:
            outs.append(F.conv2d(dn.tensor(x), tw, padding=1))
    for x, y in zip(xs, outs):
        np.testing.assert_allclose(y.numpy(), TF.conv2d(torch.tensor(x), torch.tensor(w), padding=1).numpy(),
                                   rtol=1e-4, atol=1e-5)
    # two graphs alive at once, their backward runs after both forwards
    txs = [dn.tensor(x, requires_grad=True) for x in xs[:2]]
    ys = [F.conv2d(t, tw, padding=1) for t in txs]
    (ys[0].sum() + ys[1].sum()).backward()
    ref_w = torch.tensor(w, requires_grad=True)
    ref_x = [torch.tensor(x, requires_grad=True) for x in xs[:2]]
    (TF.conv2d(ref_x[0], ref_w, padding=1).sum() + TF.conv2d(ref_x[1], ref_w, padding=1).sum()).backward()
    np.testing.assert_allclose(tw.grad.numpy(), ref_w.grad.numpy(), rtol=1e-4, atol=1e-4)
    for t, r in zip(txs, ref_x):
        np.testing.assert_allclose(t.grad.numpy(), r.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_workspaces_are_per_thread(monkeypatch):
    """Threads running convolutions at once (each reusing its own workspace) get PyTorch's
    gradients."""
    import threading

    monkeypatch.setattr(C, "_RECOMPUTE_MIN_BYTES", 0)
    rng = np.random.default_rng(15)
    jobs = [(_rand(rng, 2, 3, 7 + i, 7 + i), _rand(rng, 4, 3, 3, 3)) for i in range(4)]
    results, errors = [None] * len(jobs), []

    def run(i):
        try:
            x, w = (dn.tensor(a, requires_grad=True) for a in jobs[i])
            for _ in range(5):
                x.grad = w.grad = None
                (F.conv2d(x, w, padding=1) ** 2).sum().backward()
            results[i] = (x.grad.numpy(), w.grad.numpy())
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (x, w), (gx, gw) in zip(jobs, results):
        tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        (TF.conv2d(tx, tw, padding=1) ** 2).sum().backward()
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-4, atol=1e-3)


def test_new_paths_without_the_native_kernels():
    """The dispatch, weight-gradient and rebuilt-patch tests pass with DIVENET_NO_NATIVE=1."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, DIVENET_NO_NATIVE="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                        "dispatch or formulations or rebuilt or workspaces"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


# ---- numerical gradients in float64 -----------------------------------------------------------

@pytest.mark.parametrize("kw_", [
    dict(),
    dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
    dict(padding="same", groups=2),
    dict(stride=3, padding=2, groups=4),
], ids=["plain", "strided-dilated", "same-grouped", "depthwise-strided"])
def test_conv2d_numerical_gradients(kw_, device):
    rng = np.random.default_rng(12)
    groups = kw_.get("groups", 1)
    inputs = [rng.standard_normal((2, 4, 6, 7)), rng.standard_normal((4, 4 // groups, 3, 2)),
              rng.standard_normal(4)]
    numerical_grad_check(lambda *a: F.conv2d(*a, **kw_), inputs, device=device)


@pytest.mark.parametrize("shape, kw_", [
    ((2, 3, 2, 2), dict(padding=1)),
    ((2, 3, 2, 3), dict(stride=2, padding=(2, 1), dilation=(1, 2))),
    ((3, 2, 1, 1), dict(padding=1)),
], ids=["2x2", "strided-dilated", "1x1"])
def test_conv2d_small_map_numerical_gradients(shape, kw_, device):
    rng = np.random.default_rng(14)
    inputs = [rng.standard_normal(shape), rng.standard_normal((4, shape[1], 3, 3)),
              rng.standard_normal(4)]
    numerical_grad_check(lambda *a: F.conv2d(*a, **kw_), inputs, device=device)


def test_conv1d_numerical_gradients(device):
    rng = np.random.default_rng(13)
    inputs = [rng.standard_normal((2, 4, 9)), rng.standard_normal((6, 2, 4)), rng.standard_normal(6)]
    numerical_grad_check(lambda *a: F.conv1d(*a, stride=2, padding=2, dilation=2, groups=2),
                         inputs, device=device)


# ---- errors -----------------------------------------------------------------------------------

def _z(*shape, dtype="float32"):
    return dn.zeros(*shape, dtype=dtype)


def test_error_channel_mismatch():
    assert_raises_naming(ValueError, lambda: F.conv2d(_z(2, 3, 8, 8), _z(8, 4, 3, 3)),
                         "conv2d", "(2, 3, 8, 8)", "3 channels", "(8, 4, 3, 3)", "groups=1", "expects 4")
    assert_raises_naming(ValueError, lambda: F.conv2d(_z(2, 6, 8, 8), _z(8, 2, 3, 3), groups=2),
                         "conv2d", "(2, 6, 8, 8)", "(8, 2, 3, 3)", "groups=2", "expects 4")
    assert_raises_naming(ValueError, lambda: F.conv1d(_z(2, 3, 8), _z(8, 4, 3)),
                         "conv1d", "(2, 3, 8)", "(8, 4, 3)", "expects 4")


def test_error_kernel_larger_than_padded_input():
    assert_raises_naming(ValueError, lambda: F.conv2d(_z(1, 1, 2, 2), _z(1, 1, 5, 5), padding=1),
                         "conv2d", "(1, 1, 2, 2)", "(1, 1, 5, 5)", "4x4", "larger")
    assert_raises_naming(ValueError, lambda: F.conv2d(_z(1, 1, 5, 5), _z(1, 1, 3, 3), dilation=3),
                         "conv2d", "(1, 1, 5, 5)", "(1, 1, 3, 3)", "7x7")
    assert_raises_naming(ValueError, lambda: F.conv1d(_z(1, 2, 3), _z(1, 2, 4)),
                         "conv1d", "(1, 2, 3)", "(1, 2, 4)")


def test_error_groups_do_not_divide_channels():
    assert_raises_naming(ValueError, lambda: F.conv2d(_z(1, 6, 5, 5), _z(4, 2, 3, 3), groups=4),
                         "conv2d", "groups=4", "6 input channels", "(1, 6, 5, 5)", "(4, 2, 3, 3)")
    assert_raises_naming(ValueError, lambda: F.conv2d(_z(1, 4, 5, 5), _z(6, 1, 3, 3), groups=4),
                         "conv2d", "groups=4", "6 output channels", "(6, 1, 3, 3)")
    assert_raises_naming(ValueError, lambda: F.conv2d(_z(1, 4, 5, 5), _z(4, 4, 3, 3), groups=0),
                         "conv2d", "groups")


def test_error_same_padding_with_stride():
    assert_raises_naming(ValueError,
                         lambda: F.conv2d(_z(1, 3, 8, 8), _z(4, 3, 3, 3), stride=2, padding="same"),
                         "conv2d", "'same'", "stride (2, 2)", "(1, 3, 8, 8)", "(4, 3, 3, 3)")
    assert_raises_naming(ValueError, lambda: F.conv1d(_z(1, 3, 8), _z(4, 3, 3), stride=2, padding="same"),
                         "conv1d", "'same'", "(1, 3, 8)", "(4, 3, 3)")
    assert_raises_naming(ValueError, lambda: F.conv2d(_z(1, 3, 8, 8), _z(4, 3, 3, 3), padding="full"),
                         "conv2d", "'full'")


def test_error_wrong_ndim():
    assert_raises_naming(ValueError, lambda: F.conv2d(_z(8, 8), _z(4, 1, 3, 3)), "conv2d", "(8, 8)", "4-D")
    assert_raises_naming(ValueError, lambda: F.conv2d(_z(1, 1, 1, 8, 8), _z(4, 1, 3, 3)),
                         "conv2d", "(1, 1, 1, 8, 8)")
    assert_raises_naming(ValueError, lambda: F.conv2d(_z(1, 1, 8, 8), _z(4, 1, 3)), "conv2d", "(4, 1, 3)")
    assert_raises_naming(ValueError, lambda: F.conv1d(_z(1, 1, 8, 8), _z(4, 1, 3)), "conv1d", "(1, 1, 8, 8)")
    assert_raises_naming(ValueError, lambda: F.conv1d(_z(1, 2, 8), _z(4, 2, 3, 3)), "conv1d", "(4, 2, 3, 3)")


def test_error_bias_shape():
    assert_raises_naming(ValueError, lambda: F.conv2d(_z(1, 3, 8, 8), _z(4, 3, 3, 3), _z(3)),
                         "conv2d", "bias", "(3,)", "(4,)", "(4, 3, 3, 3)")
    assert_raises_naming(ValueError, lambda: F.conv1d(_z(1, 3, 8), _z(4, 3, 3), _z(1, 4)),
                         "conv1d", "bias", "(1, 4)", "(4,)")


def test_error_bad_arguments():
    x, w = _z(1, 3, 8, 8), _z(4, 3, 3, 3)
    assert_raises_naming(TypeError, lambda: F.conv2d(x, _z(4, 3, 3, 3, dtype="float64")),
                         "conv2d", "float64", "float32", "(4, 3, 3, 3)", "(1, 3, 8, 8)")
    assert_raises_naming(TypeError, lambda: F.conv2d(np.zeros((1, 3, 8, 8)), w), "conv2d", "Tensor")
    assert_raises_naming(ValueError, lambda: F.conv2d(x, w, stride=0), "conv2d", "stride")
    assert_raises_naming(ValueError, lambda: F.conv2d(x, w, padding=-1), "conv2d", "padding")
    assert_raises_naming(ValueError, lambda: F.conv2d(x, w, dilation=(1, 0)), "conv2d", "dilation")
    assert_raises_naming(ValueError, lambda: F.conv2d(x, w, stride=(1, 1, 1)), "conv2d", "stride")
