"""The implicit-GEMM convolution kernels (``_native.gemm_conv`` and ``gemm_conv_weight_grad``, in
both copies: AVX-512 and AVX2): taken where ``conv._implicit`` and ``conv._implicit_weight_grad``
say, equal to PyTorch (forward, input and weight gradients) on every geometry, batch tail and
channel tail, the stride-1 input gradient as the flipped-weight correlation, and any thread
count giving the same bits. Their limits are lowered to zero here so that small shapes take
them."""
import numpy as np
import pytest
import torch.nn.functional as TF

import divenet as dn
import divenet.functional as F
from divenet import _native
from divenet.ops import conv as C
from tests.helpers import check_against_torch

pytestmark = pytest.mark.skipif(_native.gemm_conv_copy() == 0,
                                reason="the implicit-GEMM kernel needs AVX2 and FMA (and a native build)")

# (C, H, W, O, kh, kw, stride, padding, dilation, groups)
GEOMETRIES = [
    (16, 10, 10, 24, 3, 3, 1, 1, 1, 1),       # 3x3 'same': two channel blocks of 12
    (3, 17, 15, 13, 7, 7, 2, 3, 1, 1),        # a ResNet stem: stride 2 (phases), 12 + 4 channels
    (8, 9, 11, 20, 3, 3, 2, 1, 1, 2),         # groups, odd map
    (16, 10, 10, 16, 3, 3, 1, 2, 2, 4),       # dilated, 4 outputs a group
    (5, 6, 7, 7, 2, 3, (2, 1), ((0, 1), (2, 0)), (1, 2), 1),  # asymmetric everything
    (32, 7, 7, 24, 1, 1, 2, 0, 1, 1),         # strided pointwise
    (12, 5, 5, 13, 3, 3, 3, 1, 1, 1),         # stride 3 skips the last rows
    (300, 4, 4, 8, 3, 3, 1, 1, 1, 1),         # more than one block of 256 taps
    (6, 8, 8, 30, 5, 5, 1, "same", 1, 1),     # 12 + 12 + 8 channels
    (4, 6, 6, 8, 4, 4, 1, "same", 1, 1),      # even kernel: asymmetric 'same' padding
]
BATCHES = [1, 3, 16, 37]  # a row of 32 columns and its tails
_implicit_weight_grad = C._implicit_weight_grad  # the fixture below replaces it


def _ids(cases):
    return ["-".join(str(v).replace(" ", "") for v in c) for c in cases]


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


@pytest.fixture(autouse=True, params=["avx512", "avx2"])
def _everywhere(request, monkeypatch):
    """Both copies where the CPU runs them (an AVX-512 CPU runs the AVX2 one too)."""
    if request.param == "avx512" and _native.gemm_conv_copy() != 4:
        pytest.skip("the AVX-512 copy needs an AVX-512 CPU")
    if request.param == "avx2":
        monkeypatch.setattr(_native, "gemm_conv_copy", lambda: 3)
    monkeypatch.setattr(C, "_IMPLICIT_MIN_ROW", 10 ** 9)  # the narrow rule below takes every layer
    monkeypatch.setattr(C, "_IMPLICIT_MAX_OUT", 10 ** 6)
    monkeypatch.setattr(C, "_IMPLICIT_MIN_TAPS", 0)
    monkeypatch.setattr(C, "_IMPLICIT_AVX2_MAX_OUT", 10 ** 6)
    monkeypatch.setattr(C, "_IMPLICIT_AVX2_MIN_ROW", 0)
    monkeypatch.setattr(C, "_IMPLICIT_MIN_WINDOW", 0)
    monkeypatch.setattr(C, "_direct", lambda *a: False)
    monkeypatch.setattr(_native, "SPLIT_MIN_MACS", 0)  # small shapes split among threads too
    monkeypatch.setattr(C, "_implicit_weight_grad", lambda p, xh: _native.gemm_conv_copy() != 0)


def _kinds(monkeypatch):
    seen = []
    real = C._choose
    monkeypatch.setattr(C, "_choose", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    return seen


def _calls(monkeypatch):
    calls = []
    real = _native.gemm_conv
    monkeypatch.setattr(_native, "gemm_conv", lambda xh, w, b, p: calls.append(p) or real(xh, w, b, p))
    return calls


def _weight_grad_calls(monkeypatch):
    calls = []
    real = _native.gemm_conv_weight_grad
    monkeypatch.setattr(_native, "gemm_conv_weight_grad", lambda xh, gh, p: calls.append(p) or real(xh, gh, p))
    return calls


def _functions(geometry):
    """(ours, PyTorch's) for a geometry; an asymmetric padding ((top, bottom), (left, right)),
    which PyTorch's conv2d does not take, goes to our op as is and to PyTorch as F.pad."""
    stride, padding, dilation, groups = geometry[6:]
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        (t, b), (l, r) = padding
        ours = lambda x, w, bias: C.Conv2d.apply(x, w, bias, stride=_pair(stride), padding=padding,
                                                 dilation=_pair(dilation), groups=groups)
        theirs = lambda x, w, bias: TF.conv2d(TF.pad(x, (l, r, t, b)), w, bias, stride=stride, dilation=dilation,
                                             groups=groups)
        return ours, theirs
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return (lambda *a: F.conv2d(*a, **kw)), (lambda *a: TF.conv2d(*a, **kw))


def _inputs(geometry, n, seed=0):
    """x scaled by 0.1 and the weights by 1/sqrt(fan-in), as initializations scale them: a weight
    gradient sums up to 3700 products here and an input gradient 750, and at unit scale their
    entries (up to 150) carry float32 rounding beyond the fixed absolute tolerance of 1e-5 in
    either path (im2col's passed by luck); scaled, the same relative check stays in range."""
    c, h, w, o, kh, kw = geometry[:6]
    rng = np.random.default_rng(seed)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((n, c, h, w), (o, c // geometry[9], kh, kw), (o,)))
    return [x * np.float32(0.1), w / np.float32(np.sqrt(w[0].size)), b]


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=_ids(GEOMETRIES))
def test_implicit_matches_torch(geometry, n, monkeypatch):
    kinds, calls, weight_grads = _kinds(monkeypatch), _calls(monkeypatch), _weight_grad_calls(monkeypatch)
    ours, theirs = _functions(geometry)
    check_against_torch(ours, theirs, _inputs(geometry, n), torch_in_float64=True)
    pointwise = geometry[4:7] == (1, 1, 1) and geometry[7] == 0
    assert kinds == ["pointwise" if pointwise else "implicit"]
    stride1 = geometry[6] == 1 or geometry[6] == (1, 1)
    # the forward, and the input gradient of a stride-1 convolution
    assert len(calls) == (0 if pointwise else 2 if stride1 else 1)
    assert len(weight_grads) == (0 if pointwise else 1)


@pytest.mark.parametrize("geometry", GEOMETRIES[:5], ids=_ids(GEOMETRIES[:5]))
def test_the_patch_matrix_weight_gradient_still_matches_torch(geometry, monkeypatch):
    """Where the dispatch keeps the weight gradient on the rebuilt patch matrix."""
    monkeypatch.setattr(C, "_implicit_weight_grad", lambda p, xh: False)
    weight_grads = _weight_grad_calls(monkeypatch)
    ours, theirs = _functions(geometry)
    check_against_torch(ours, theirs, _inputs(geometry, 3), torch_in_float64=True)
    assert weight_grads == []


# (C, H, W, O, k, stride, dilation, groups, N): output rows in several blocks of WGRAD_COLS
# columns, several ranges of 32 outputs and 24 taps, and partial tiles on both sides
WEIGHT_GRAD_SHAPES = [
    (3, 64, 20, 5, 3, 1, 1, 1, 2),     # rows of 40 columns (tails of 8), 64 rows: two row blocks
    (7, 12, 13, 37, 3, 2, 1, 1, 5),    # 63 taps, 37 outputs: two output ranges, partial tiles
    (10, 9, 9, 70, 3, 1, 2, 2, 3),     # dilated groups of 35 outputs
    (5, 30, 30, 6, 5, 3, 1, 1, 1),     # one image, rows of 10
]


@pytest.mark.parametrize("shape", WEIGHT_GRAD_SHAPES, ids=_ids(WEIGHT_GRAD_SHAPES))
def test_the_weight_gradient_kernel_equals_the_patch_matrix_product(shape):
    c, h, w, o, k, s, d, g, n = shape
    pad = d * (k - 1) // 2
    p = C._Plan((n, c, h, w), (o, c // g, k, k), (s, s), ((pad, pad), (pad, pad)), (d, d), g)
    rng = np.random.default_rng(1)
    xh = rng.standard_normal((c, h, w, n)).astype(np.float32)
    gh = rng.standard_normal((o, p.OH, p.OW, n)).astype(np.float32)
    cols = C.im2col(xh.astype(np.float64), p).reshape(g, c // g * k * k, -1)
    want = (gh.reshape(g, o // g, -1).astype(np.float64) @ cols.transpose(0, 2, 1)).reshape(o, c // g, k, k)
    got = _native.gemm_conv_weight_grad(xh, gh, p)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("need", [(0,), (1,), (1, 2), (0, 2)])
def test_implicit_computes_only_the_gradients_asked_for(need, monkeypatch):
    ours, theirs = _functions(GEOMETRIES[0])
    check_against_torch(ours, theirs, _inputs(GEOMETRIES[0], 5), grad_inputs=list(need))


def test_implicit_without_bias(monkeypatch):
    calls = _calls(monkeypatch)
    x, w, _ = _inputs(GEOMETRIES[2], 4)
    check_against_torch(lambda x, w: F.conv2d(x, w, stride=2, padding=1, groups=2),
                        lambda x, w: TF.conv2d(x, w, stride=2, padding=1, groups=2), [x, w])
    assert calls


@pytest.mark.parametrize("threads", [2, 3, 16])
def test_threads_share_the_work_without_changing_a_bit(threads, monkeypatch):
    """Each tile's sums run whole in one thread, whichever takes it."""
    geometry = GEOMETRIES[1]
    x, w, b = (dn.tensor(a, requires_grad=True) for a in _inputs(geometry, 37, seed=3))
    ours, _ = _functions(geometry)
    results = []
    for t in (1, threads):
        monkeypatch.setattr(_native, "cores", lambda t=t: t)  # the implicit kernels take every core
        for a in (x, w, b):
            a.grad = None
        y = ours(x, w, b)
        (y * y).sum().backward()
        results.append([y.numpy(), x.grad.numpy(), w.grad.numpy(), b.grad.numpy()])
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def test_padding_beyond_the_kernel_keeps_col2im_for_the_input_gradient(monkeypatch):
    """Stride 1 with more padding than the kernel reaches: the flipped correlation would crop, so
    the input gradient runs GEMM + col2im; the forward is still the kernel's."""
    calls = _calls(monkeypatch)
    geometry = (4, 6, 6, 8, 3, 3, 1, 3, 1, 1)
    ours, theirs = _functions(geometry)
    check_against_torch(ours, theirs, _inputs(geometry, 3))
    assert len(calls) == 1


@pytest.mark.parametrize("c, o, groups, side, n, sleeps, taken", [
    (32, 32, 1, 14, 8, False, True),     # 288 taps, 32 outputs
    (28, 32, 1, 14, 8, False, False),    # 252 taps
    (32, 33, 1, 14, 8, False, False),    # 33 outputs
    (128, 128, 32, 14, 8, False, True),  # grouped (ResNeXt): any taps
    (64, 8, 4, 14, 8, False, False),     # 2 outputs a group: most of a 4-channel tile empty
    (64, 64, 1, 14, 8, True, True),      # rows of 112 columns, OpenBLAS's workers asleep
    (64, 64, 1, 14, 8, False, False),    # the same, the workers spinning on the other core
    (64, 64, 1, 13, 8, True, True),      # rows of 104 columns: up to 128 outputs from 56 (below)
    (256, 256, 1, 13, 8, True, False),   # ... 256 outputs need 112
    (512, 512, 1, 7, 8, True, False),    # rows of 56
    (256, 256, 1, 7, 64, True, True),    # rows of 448
    (256, 256, 1, 7, 256, True, False),  # rows of 1792, 256 outputs: im2col (D2L's b256)
    (128, 255, 1, 7, 256, True, True),   # ... 255 outputs
])
def test_the_dispatch_takes_it_only_where_it_won(c, o, groups, side, n, sleeps, taken, monkeypatch):
    from divenet import _cpu

    monkeypatch.setattr(_native, "gemm_conv_copy", lambda: 4)
    monkeypatch.setattr(C, "_IMPLICIT_MAX_OUT", 32)
    monkeypatch.setattr(C, "_IMPLICIT_MIN_TAPS", 256)
    monkeypatch.setattr(C, "_IMPLICIT_MIN_ROW", 112)
    monkeypatch.setattr(C, "_IMPLICIT_MIN_ROW_NARROW", 56)
    monkeypatch.setattr(_cpu, "blas_sleeps_soon", lambda: sleeps)
    p = C._Plan((n, c, side, side), (o, c // groups, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), groups)
    assert C._implicit(p) == taken


@pytest.mark.parametrize("c, o, side, n, stride, sleeps, taken", [
    (64, 64, 56, 1, 1, True, True),       # rows of 56 columns at stride 1: ResNet's layer1 at b1
    (128, 128, 28, 2, 1, True, True),     # ... layer2 at b2
    (128, 129, 56, 1, 1, True, False),    # more than 128 outputs
    (128, 128, 28, 1, 1, True, False),    # rows of 28
    (64, 128, 112, 1, 2, True, False),    # stride 2 (rows of 56 outputs)
    (64, 64, 56, 1, 1, False, False),     # OpenBLAS's workers spinning on the other core
    (64, 64, 7, 8, 1, True, False),       # rows of 56 but 392 columns (GoogLeNet's 7x7 maps at b8)
])
def test_the_dispatch_takes_rows_of_56_at_stride_1_up_to_128_outputs(c, o, side, n, stride, sleeps, taken,
                                                                     monkeypatch):
    from divenet import _cpu

    monkeypatch.setattr(_native, "gemm_conv_copy", lambda: 4)
    monkeypatch.setattr(C, "_IMPLICIT_MAX_OUT", 32)
    monkeypatch.setattr(C, "_IMPLICIT_MIN_TAPS", 256)
    monkeypatch.setattr(C, "_IMPLICIT_MIN_ROW", 112)
    monkeypatch.setattr(C, "_IMPLICIT_MIN_ROW_NARROW", 56)
    monkeypatch.setattr(C, "_IMPLICIT_NARROW_MAX_OUT", 128)
    monkeypatch.setattr(C, "_IMPLICIT_NARROW_MIN_COLUMNS", 1024)
    monkeypatch.setattr(_cpu, "blas_sleeps_soon", lambda: sleeps)
    p = C._Plan((n, c, side, side), (o, c, 3, 3), (stride, stride), ((1, 1), (1, 1)), (1, 1), 1)
    assert C._implicit(p) == taken


@pytest.mark.parametrize("c, o, groups, side, n, taken", [
    (128, 128, 32, 7, 1, True),    # grouped (ResNeXt): any size
    (64, 64, 1, 56, 1, True),      # 64 outputs, rows of 56 columns
    (128, 32, 1, 7, 8, True),      # DenseNet's 128 -> 32 at b8
    (128, 32, 1, 7, 1, False),     # ... at b1: rows of 7
    (64, 65, 1, 56, 8, False),     # wider than 64 outputs
    (256, 256, 1, 14, 8, False),
])
def test_the_avx2_dispatch_takes_it_only_where_it_won(c, o, groups, side, n, taken, monkeypatch):
    monkeypatch.setattr(_native, "gemm_conv_copy", lambda: 3)
    monkeypatch.setattr(C, "_IMPLICIT_AVX2_MAX_OUT", 64)
    monkeypatch.setattr(C, "_IMPLICIT_AVX2_MIN_ROW", 56)
    p = C._Plan((n, c, side, side), (o, c // groups, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), groups)
    assert C._implicit(p) == taken


@pytest.mark.parametrize("copy, c, o, groups, side, n, taken", [
    (4, 64, 64, 1, 56, 1, True),      # 3136 columns
    (4, 64, 64, 1, 4, 64, True),      # 1024 columns
    (4, 512, 512, 1, 7, 8, False),    # 392 columns, 512 outputs
    (4, 128, 32, 1, 7, 1, True),      # 49 columns, but 32 outputs (DenseNet)
    (4, 128, 128, 32, 7, 1, True),    # 4 outputs a group (ResNeXt)
    (4, 128, 33, 1, 7, 1, False),
    (3, 64, 64, 1, 56, 8, False),     # the AVX2 copy: only few outputs a group
    (3, 128, 32, 1, 28, 8, True),
    (3, 128, 128, 32, 56, 8, True),
    (0, 128, 32, 1, 28, 8, False),    # no kernel
])
def test_the_weight_gradient_dispatch(copy, c, o, groups, side, n, taken, monkeypatch):
    monkeypatch.setattr(_native, "gemm_conv_copy", lambda: copy)
    monkeypatch.setattr(_native, "fast_here", lambda: True)
    p = C._Plan((n, c, side, side), (o, c // groups, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), groups)
    xh = np.zeros((1,), np.float32)
    assert _implicit_weight_grad(p, xh) == taken
    assert not _implicit_weight_grad(p, xh.astype(np.float64))  # float32 NumPy arrays only


@pytest.mark.parametrize("copy", [4, 3])
def test_single_tap_windows_stay_on_im2col(copy, monkeypatch):
    """ResNet's 1x1 stride-2 downsamplings: their patch matrix is a strided copy the size of
    the output, which both kernels lost to."""
    monkeypatch.setattr(_native, "gemm_conv_copy", lambda: copy)
    monkeypatch.setattr(_native, "fast_here", lambda: True)
    monkeypatch.setattr(C, "_IMPLICIT_MIN_WINDOW", 2)
    down = C._Plan((8, 64, 56, 56), (32, 64, 1, 1), (2, 2), ((0, 0), (0, 0)), (1, 1), 1)
    assert not C._implicit(down) and not _implicit_weight_grad(down, np.zeros(1, np.float32))
    # the same layer with a 3x3 window takes both
    wide = C._Plan((8, 64, 56, 56), (32, 64, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 1)
    assert C._implicit(wide) and _implicit_weight_grad(wide, np.zeros(1, np.float32))


def test_small_convolutions_stay_on_one_thread(monkeypatch):
    """Starting a thread costs about 0.1 ms: below SPLIT_MIN_MACS a call keeps to its own."""
    monkeypatch.setattr(_native, "SPLIT_MIN_MACS", 1 << 22)
    monkeypatch.setattr(_native, "cores", lambda: 4)
    small = C._Plan((1, 128, 7, 7), (32, 128, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1)  # 1.8M
    large = C._Plan((8, 64, 56, 56), (64, 64, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1)  # 925M
    assert _native._phase_buffer(np.zeros((128, 7, 7, 1), np.float32), small)[2][-1] == 1
    assert _native._phase_buffer(np.zeros((64, 56, 56, 8), np.float32), large)[2][-1] == 4
    assert _native.conv_threads(1 << 22, every_core=True) == 4 and _native.conv_threads((1 << 22) - 1) == 1


def test_threads_default_to_every_core(monkeypatch):
    monkeypatch.setattr(_native, "cores", lambda: 5)
    seen = []
    real = _native.library

    class Spy:
        def __getattr__(self, name):
            fn = getattr(real(), name)
            if name not in ("dn_gemm_conv", "dn_avx2_gemm_conv"):
                return fn
            return lambda *a: seen.append(np.ctypeslib.as_array((__import__("ctypes").c_int64 * 9)
                                                                .from_address(a[5]))[-1]) or fn(*a)

    monkeypatch.setattr(_native, "library", lambda: Spy())
    x, w, b = _inputs(GEOMETRIES[0], 2)
    F.conv2d(dn.tensor(x), dn.tensor(w), dn.tensor(b), padding=1)
    assert seen == [5]
