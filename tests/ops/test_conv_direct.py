"""The native direct convolution kernels (divenet/_native.c): taken where they apply, equal to the
im2col path and to PyTorch on every geometry and batch tail, and checked by finite differences
in float32 (a convolution is linear in its input and in its weight, so central differences
with a unit step are exact up to rounding)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch.nn.functional as TF

import divenet as dn
import divenet.functional as F
from divenet import _native
from divenet.ops import conv as C
from tests.helpers import check_against_torch

needs_native = pytest.mark.skipif(_native.library() is None,
                                  reason="native kernels not built (no C compiler at install)")


def _avx2_here():
    lib = _native.library()
    return lib is not None and hasattr(lib, "dn_avx2_conv_forward") and lib.dn_isa() >= 3


@pytest.fixture(autouse=True, params=["clones", "avx2"])
def _kernels_on_every_cpu(request, monkeypatch):
    """The dispatch takes the kernels only on CPUs where they are fast (_native.fast_here);
    their results are checked on every CPU, in both copies: the target_clones kernels with
    16-float tiles (the copy this CPU's resolver picks) and, on CPUs with AVX2, the dn_avx2_*
    ones with 8-float tiles."""
    monkeypatch.setattr(_native, "fast_here", lambda: True)
    monkeypatch.setattr(_native, "SPLIT_MIN_MACS", 0)  # small shapes split among threads too
    monkeypatch.setattr(C, "_DIRECT_TAIL_SHARE", 0)  # every batch, its one-image tail too
    if request.param == "avx2":
        if not _avx2_here():
            pytest.skip("the AVX2 kernels need an x86 build and a CPU with AVX2 and FMA")
        monkeypatch.setattr(_native, "isa", lambda: 3)
        # the same geometries as the clones' (the dispatch takes fewer on AVX2: tested below)
        monkeypatch.setattr(C, "_DIRECT_AVX2_MAX_OUT", C._DIRECT_MAX_OUT)
        monkeypatch.setattr(C, "_DIRECT_AVX2_MIN_WINDOW", 1)
    else:
        monkeypatch.setattr(_native, "isa", lambda: 4)  # anything but 3 takes the clones


@needs_native
def test_the_kernel_copy_follows_the_cpu(request):
    """AVX2-only CPUs run the 8-float copies (the 16-float ones spill there: 5-35x slower),
    AVX-512 ones the clones, and the dispatch calls the copy ``isa()`` names."""
    real = _native.library().dn_isa()
    with open("/proc/cpuinfo") as f:
        flags = next((set(line.split()) for line in f if line.startswith("flags")), set())
    assert real in (0, 3, 4)
    assert (real == 4) == ({"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"} <= flags)
    assert real != 3 or {"avx2", "fma"} <= flags
    prefix = "dn_avx2_" if request.node.callspec.params["_kernels_on_every_cpu"] == "avx2" else "dn_"
    assert _native._kernel("conv_forward").__name__ == prefix + "conv_forward"


def test_ci_builds_the_native_kernels():
    """CI installs on a machine with a C compiler, so the kernels below must have run there."""
    if os.environ.get("CI") != "true":
        pytest.skip("checked where CI=true")
    assert _native.library() is not None, "pip install did not build divenet/_native.c"


def test_disabled_by_environment_variable():
    code = ("import numpy as np, divenet as dn, divenet.functional as F\n"
            "from divenet import _native\n"
            "assert _native.library() is None\n"
            "y = F.conv2d(dn.ones(2, 1, 6, 6), dn.ones(3, 1, 3, 3))\n"
            "assert float(y.numpy()[0, 0, 0, 0]) == 9.0\n")
    env = dict(os.environ, DIVENET_NO_NATIVE="1")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@needs_native
def test_a_library_built_from_other_sources_is_ignored(monkeypatch):
    monkeypatch.setattr(_native, "_VERSION", _native._VERSION + 1)
    _native.library.cache_clear()
    try:
        assert _native.library() is None
    finally:
        monkeypatch.undo()
        _native.library.cache_clear()
    assert _native.library() is not None


# (C, H, W, O, kh, kw, stride, padding, dilation)
GEOMETRIES = [
    (1, 12, 12, 6, 5, 5, 1, 2, 1),            # LeNet's first layer, smaller map
    (6, 10, 10, 16, 5, 5, 1, 0, 1),           # LeNet's second layer
    (9, 7, 6, 9, 3, 3, 1, 1, 1),              # channels one past a tile of 8, both ways
    (3, 9, 8, 10, 3, 2, 1, "same", 1),        # even kernel: asymmetric padding
    (3, 9, 8, 4, 3, 3, (2, 1), (1, 2), (1, 2)),  # strided and dilated
    (2, 6, 7, 3, 5, 5, 3, (3, 2), 1),         # padding wider than needed
    (3, 5, 5, 4, 1, 1, 2, 0, 1),              # strided pointwise
    (2, 7, 5, 3, 2, 2, (3, 2), 0, 1),         # the stride skips the last rows
]
BATCHES = [1, 7, 9, 16, 50]  # single images; tails of 8 + 1, 32 + 16 + 2 (6 x 8 + 2) images


def _ids(cases):
    return ["-".join(str(v).replace(" ", "") for v in c) for c in cases]


def _inputs(geometry, n, seed=0):
    c, h, w, o, kh, kw = geometry[:6]
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in ((n, c, h, w), (o, c, kh, kw), (o,))]


def _options(geometry):
    stride, padding, dilation = geometry[6:]
    return dict(stride=stride, padding=padding, dilation=dilation)


def _run(inputs, options, gy):
    ts = [dn.tensor(a, requires_grad=True) for a in inputs]
    y = F.conv2d(*ts, **options)
    y.backward(dn.tensor(gy))
    return [y.numpy()] + [np.asarray(t.grad) for t in ts]


def _count_direct_calls(monkeypatch):
    calls = []
    real = _native.conv_forward
    monkeypatch.setattr(_native, "conv_forward", lambda *a: calls.append(1) or real(*a))
    return calls


@needs_native
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=_ids(GEOMETRIES))
def test_direct_matches_torch_and_im2col(geometry, n, monkeypatch):
    inputs, options = _inputs(geometry, n), _options(geometry)
    calls = _count_direct_calls(monkeypatch)
    # against PyTorch in float64: its float32 weight gradient of LeNet's first layer at 50
    # images strays 3e-4 from the truth, ours 3e-5
    check_against_torch(lambda *a: F.conv2d(*a, **options), lambda *a: TF.conv2d(*a, **options), inputs,
                        torch_in_float64=True)
    assert calls, "the direct kernels were not taken"

    gy = np.random.default_rng(1).standard_normal(F.conv2d(*map(dn.tensor, inputs), **options).shape)
    gy = gy.astype(np.float32)
    direct = _run(inputs, options, gy)
    monkeypatch.setattr(C, "_direct", lambda *a: False)
    im2col = _run(inputs, options, gy)
    for name, a, b in zip(("output", "input grad", "weight grad", "bias grad"), direct, im2col):
        # two float32 reductions in different orders: entries that cancel down to a small value
        # keep the rounding of their large terms, so the absolute slack scales with the largest
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(np.abs(b).max()), err_msg=name)


@needs_native
@pytest.mark.parametrize("geometry", GEOMETRIES[:5], ids=_ids(GEOMETRIES[:5]))
def test_direct_gradients_by_finite_differences(geometry, monkeypatch):
    """d/dt sum(r * conv(x + t v, w + t u)) at t = 0 equals <dx, v> + <dw, u>; the function is
    quadratic in t only through the v-u cross term, which central differences cancel."""
    x, w, b = _inputs(geometry, 20, seed=2)
    options = _options(geometry)
    calls = _count_direct_calls(monkeypatch)
    rng = np.random.default_rng(3)
    tx, tw = dn.tensor(x, requires_grad=True), dn.tensor(w, requires_grad=True)
    y = F.conv2d(tx, tw, dn.tensor(b), **options)
    r = rng.standard_normal(y.shape).astype(np.float32)
    (y * dn.tensor(r)).sum().backward()
    assert calls
    v, u = (rng.standard_normal(a.shape).astype(np.float32) for a in (x, w))

    def loss(t):
        out = F.conv2d(dn.tensor(x + t * v), dn.tensor(w + t * u), dn.tensor(b), **options)
        terms = out.numpy().astype(np.float64) * r
        return float(terms.sum()), float(np.abs(terms).sum())

    (plus, plus_size), (minus, minus_size) = loss(1.0), loss(-1.0)
    numeric = (plus - minus) / 2
    exact = float((np.asarray(tx.grad, np.float64) * v).sum() + (np.asarray(tw.grad, np.float64) * u).sum())
    # float32 rounding of the outputs, relative to the size of what was summed
    assert abs(numeric - exact) <= 1e-7 * (plus_size + minus_size), f"numerical {numeric} != analytic {exact}"


@needs_native
@pytest.mark.parametrize("need", [(0,), (1,), (1, 2), (0, 2)])
def test_direct_computes_only_the_gradients_asked_for(need, monkeypatch):
    inputs = _inputs(GEOMETRIES[1], 16, seed=4)
    calls = _count_direct_calls(monkeypatch)
    check_against_torch(lambda *a: F.conv2d(*a), lambda *a: TF.conv2d(*a), inputs, grad_inputs=list(need))
    assert calls


@needs_native
@pytest.mark.parametrize("case", ["float64", "groups", "many taps", "many outputs", "pointwise"])
def test_direct_is_not_taken_where_it_does_not_apply(case, monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 6, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 6, 3, 3)).astype(np.float32)
    options = {}
    if case == "float64":
        x, w = x.astype(np.float64), w.astype(np.float64)
    elif case == "groups":
        w, options = w[:, :3], dict(groups=2)
    elif case == "many taps":
        x = rng.standard_normal((4, 30, 6, 6)).astype(np.float32)
        w = rng.standard_normal((4, 30, 3, 3)).astype(np.float32)
        assert 30 * 9 > C._DIRECT_MAX_TAPS
    elif case == "many outputs":
        w = rng.standard_normal((40, 6, 3, 3)).astype(np.float32)
        assert 40 > C._DIRECT_MAX_OUT
    else:
        w = w[:, :, :1, :1]
    calls = _count_direct_calls(monkeypatch)
    check_against_torch(lambda *a: F.conv2d(*a, **options), lambda *a: TF.conv2d(*a, **options), [x, w])
    assert not calls


@needs_native
@pytest.mark.parametrize("geometry, taken", [((6, 14, 16, 5), True), ((1, 28, 6, 5), True),
                                             ((6, 14, 24, 5), False), ((8, 14, 16, 3), False)])
def test_the_avx2_copies_take_only_where_they_win(geometry, taken, request, monkeypatch):
    """On AVX2 the direct kernels run 5x5 kernels up to 16 outputs (0.46-0.77x im2col's time
    on a Zen 3) but lose on 3x3 kernels and at 32 outputs (1.01-1.44x): conv._direct."""
    if request.node.callspec.params["_kernels_on_every_cpu"] != "avx2":
        pytest.skip("the AVX2 copies' limits")
    monkeypatch.undo()  # the real limits
    monkeypatch.setattr(_native, "fast_here", lambda: True)
    monkeypatch.setattr(_native, "isa", lambda: 3)
    c, h, o, k = geometry
    x = np.zeros((c, h, h, 16), np.float32)
    w = np.zeros((o, c, k, k), np.float32)
    p = C._Plan((16, c, h, h), w.shape, (1, 1), ((0, 0), (0, 0)), (1, 1), 1)
    assert C._direct(p, x, w, None) == taken
    monkeypatch.setattr(_native, "isa", lambda: 4)
    assert C._direct(p, x, w, None)  # the AVX-512 copies take all four


@needs_native
@pytest.mark.parametrize("isa, n, taken", [
    (4, 256, True), (4, 16, True), (4, 17, True), (4, 20, False), (4, 24, False), (4, 136, True), (4, 8, False), (4, 1, False),
    (3, 8, True), (3, 4, False), (3, 24, True), (3, 12, False), (3, 65, True),
])
def test_the_direct_kernels_need_the_batch_in_whole_vectors(isa, n, taken, monkeypatch):
    """The kernels run 16 (AVX-512) or 8 (AVX2) images to a register and the rest one by one:
    taken only where that tail is at most an eighth of the batch (MobileNet's stem at b8 ran
    3.4x slower through them than through the implicit GEMM)."""
    monkeypatch.undo()
    monkeypatch.setattr(_native, "fast_here", lambda: True)
    monkeypatch.setattr(_native, "isa", lambda: isa)
    x = np.zeros((6, 14, 14, n), np.float32)
    w = np.zeros((16, 6, 5, 5), np.float32)
    p = C._Plan((n, 6, 14, 14), w.shape, (1, 1), ((0, 0), (0, 0)), (1, 1), 1)
    assert C._direct(p, x, w, None) == taken


@needs_native
@pytest.mark.parametrize("threads", [2, 3, 7])
@pytest.mark.parametrize("geometry", GEOMETRIES[:5], ids=_ids(GEOMETRIES[:5]))
def test_threads_share_the_work_without_changing_a_bit(geometry, threads, monkeypatch):
    """Each output row (weight-gradient tile) is summed whole by one thread, whichever takes it,
    so any thread count gives bitwise the one-thread results, also with more threads than rows."""
    inputs, options = _inputs(geometry, 37, seed=3), _options(geometry)
    gy = np.random.default_rng(4).standard_normal(F.conv2d(*map(dn.tensor, inputs), **options).shape)
    gy = gy.astype(np.float32)
    calls = _count_direct_calls(monkeypatch)
    monkeypatch.setattr(_native, "threads", lambda: 1)
    one = _run(inputs, options, gy)
    monkeypatch.setattr(_native, "threads", lambda: threads)
    many = _run(inputs, options, gy)
    assert len(calls) == 2
    for a, b in zip(one, many):
        assert np.array_equal(a, b)


def test_kernel_threads_take_every_core_or_those_openblas_leaves_idle(monkeypatch):
    from divenet import _cpu

    monkeypatch.setattr(_native, "cores", lambda: 8)
    monkeypatch.setattr(_cpu, "blas_sleeps_soon", lambda: False)
    for blas, expect in ((8, 1), (1, 8), (3, 6), (None, 1)):
        monkeypatch.setattr(_cpu, "blas_threads", lambda blas=blas: blas)
        assert _native.threads() == expect
    monkeypatch.setattr(_cpu, "blas_sleeps_soon", lambda: True)  # no worker left spinning
    for blas in (8, 1, None):
        monkeypatch.setattr(_cpu, "blas_threads", lambda blas=blas: blas)
        assert _native.threads() == 8


# ---- depthwise convolutions (groups == C == O) -------------------------------------------------
# (C, H, W, kh, kw, stride, padding, dilation)
DEPTHWISE = [
    (5, 9, 8, 3, 3, 1, 1, 1),              # MobileNet's 3x3, stride 1
    (4, 9, 10, 3, 3, 2, 1, 1),             # stride 2
    (3, 8, 7, 2, 3, 1, "same", 1),         # even kernel: asymmetric padding
    (3, 11, 9, 3, 3, (2, 1), (2, 0), (2, 1)),  # strided and dilated
    (2, 9, 9, 7, 7, 1, 3, 1),              # 49 taps: the most the kernels take
    (2, 6, 7, 3, 3, 1, 3, 1),              # windows wholly in the padding
]


def _depthwise_case(geometry, n, bias):
    """(inputs, conv2d options) of a DEPTHWISE geometry with n images, batch-last."""
    c, h, w, kh, kw, stride, padding, dilation = geometry
    rng = np.random.default_rng(n)
    x = rng.standard_normal((c, h, w, n)).astype(np.float32).transpose(3, 0, 1, 2)  # batch-last
    inputs = [x, rng.standard_normal((c, 1, kh, kw)).astype(np.float32)]
    if bias:
        inputs.append(rng.standard_normal(c).astype(np.float32))
    return inputs, dict(stride=stride, padding=padding, dilation=dilation, groups=c)


def _kinds(monkeypatch):
    kinds = []
    real = C._choose
    monkeypatch.setattr(C, "_choose", lambda *a, **k: kinds.append(real(*a, **k)) or kinds[-1])
    return kinds


@needs_native
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("geometry", DEPTHWISE, ids=_ids(DEPTHWISE))
@pytest.mark.parametrize("bias", [True, False])
def test_depthwise_matches_torch(geometry, n, bias, monkeypatch):
    inputs, options = _depthwise_case(geometry, n, bias)
    monkeypatch.setattr(_native, "MIN_BATCH", 1)  # the kernels' tails too, below one vector
    kinds = _kinds(monkeypatch)
    # against PyTorch in float64, as the dense kernels: long weight-gradient sums that cancel
    # stray from the truth by more than the tolerance in either framework's float32
    check_against_torch(lambda *a: F.conv2d(*a, **options), lambda *a: TF.conv2d(*a, **options), inputs,
                        torch_in_float64=True)
    assert kinds == ["depthwise"]


@needs_native
@pytest.mark.parametrize("n,kind", [(7, "im2col"), (8, "depthwise")])
def test_depthwise_kernels_from_one_vector_of_images(n, kind, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6, 6, n)).astype(np.float32).transpose(3, 0, 1, 2)
    kinds = _kinds(monkeypatch)
    check_against_torch(lambda *a: F.conv2d(*a, padding=1, groups=4), lambda *a: TF.conv2d(*a, padding=1, groups=4),
                        [x, rng.standard_normal((4, 1, 3, 3)).astype(np.float32)])
    assert kinds == [kind]


@needs_native
@pytest.mark.parametrize("n", [1, 2, 7])  # under MIN_BATCH
@pytest.mark.parametrize("geometry", DEPTHWISE, ids=_ids(DEPTHWISE))
@pytest.mark.parametrize("bias", [True, False])
def test_depthwise_inference_of_small_batches_runs_along_rows(geometry, n, bias, monkeypatch):
    """No gradient asked for: the row kernel (``_native.depthwise_rows``), equal to PyTorch;
    with gradients, im2col."""
    inputs, options = _depthwise_case(geometry, n, bias)
    kinds = _kinds(monkeypatch)
    check_against_torch(lambda *a: F.conv2d(*a, **options), lambda *a: TF.conv2d(*a, **options), inputs,
                        grad_inputs=[])
    with dn.no_grad():  # parameters that require gradients, but no graph
        F.conv2d(*(dn.tensor(a, requires_grad=True) for a in inputs), **options)
    check_against_torch(lambda *a: F.conv2d(*a, **options), lambda *a: TF.conv2d(*a, **options), inputs)
    assert kinds == ["depthwise_rows", "depthwise_rows", "im2col"]


def test_depthwise_beyond_the_kernels_takes_im2col_and_matches_torch(monkeypatch):
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(s).astype(np.float32) for s in ((3, 2, 10, 10), (2, 1, 8, 8))]
    kinds = _kinds(monkeypatch)
    check_against_torch(lambda *a: F.conv2d(*a, padding=3, groups=2), lambda *a: TF.conv2d(*a, padding=3, groups=2),
                        inputs)
    monkeypatch.setattr(_native, "usable", lambda *a: False)  # no library, float64, CuPy
    check_against_torch(lambda *a: F.conv2d(*a, padding=1, groups=2), lambda *a: TF.conv2d(*a, padding=1, groups=2),
                        [inputs[0], inputs[1][:, :, :3, :3]])
    assert kinds == ["im2col", "im2col"]  # 64 taps > DEPTHWISE_MAX_TAPS; then not usable


@needs_native
@pytest.mark.parametrize("threads", [2, 5])
def test_depthwise_threads_change_no_bit(threads, monkeypatch):
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal(s).astype(np.float32) for s in ((9, 6, 7, 7), (6, 1, 3, 3))]
    gy = rng.standard_normal((9, 6, 4, 4)).astype(np.float32)
    options = dict(stride=2, padding=1, groups=6)
    monkeypatch.setattr(_native, "threads", lambda: 1)
    one = _run(inputs, options, gy)
    monkeypatch.setattr(_native, "threads", lambda: threads)
    for a, b in zip(one, _run(inputs, options, gy)):
        assert np.array_equal(a, b)


@needs_native
@pytest.mark.parametrize("geometry", DEPTHWISE, ids=_ids(DEPTHWISE))
def test_depthwise_gradients_by_finite_differences(geometry, monkeypatch):
    """As test_direct_gradients_by_finite_differences: exact up to float32 rounding."""
    c, h, w_, kh, kw, stride, padding, dilation = geometry
    rng = np.random.default_rng(5)
    x = rng.standard_normal((c, h, w_, 11)).astype(np.float32).transpose(3, 0, 1, 2)
    w = rng.standard_normal((c, 1, kh, kw)).astype(np.float32)
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=c)
    kinds = _kinds(monkeypatch)
    tx, tw = dn.tensor(x, requires_grad=True), dn.tensor(w, requires_grad=True)
    y = F.conv2d(tx, tw, **options)
    r = rng.standard_normal(y.shape).astype(np.float32)
    (y * dn.tensor(r)).sum().backward()
    v, u = (rng.standard_normal(a.shape).astype(np.float32) for a in (x, w))

    def loss(t):
        xt = np.ascontiguousarray((x + t * v).transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)  # batch-last
        terms = F.conv2d(dn.tensor(xt), dn.tensor(w + t * u), **options).numpy().astype(np.float64) * r
        return float(terms.sum()), float(np.abs(terms).sum())

    (plus, plus_size), (minus, minus_size) = loss(1.0), loss(-1.0)
    exact = float((np.asarray(tx.grad, np.float64) * v).sum() + (np.asarray(tw.grad, np.float64) * u).sum())
    assert abs((plus - minus) / 2 - exact) <= 1e-7 * (plus_size + minus_size)
    assert set(kinds) == {"depthwise"}
