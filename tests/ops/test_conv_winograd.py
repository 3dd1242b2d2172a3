"""Winograd F(2x2, 3x3) convolutions (``conv._winograd``: the native transforms of
``_native.winograd_input`` / ``winograd_output`` around OpenBLAS's GEMM): taken where
``conv._winograd_takes`` says, equal to PyTorch (forward, input and weight gradients, PyTorch in
float64) over paddings, odd maps, channel counts and batches, the transforms' scalar tail, the
chunking of tile rows and any thread count; refused where it does not apply."""
import numpy as np
import pytest
import torch.nn.functional as TF

import divenet as dn
import divenet.functional as F
from divenet import _native
from divenet.ops import conv as C
from tests.helpers import check_against_torch

pytestmark = pytest.mark.skipif(not _native.usable(np.zeros(1, np.float32)),
                                reason="the Winograd transforms need the native build on an AVX2 or AVX-512 CPU")

# (N, C, O, H, W, padding, bias)
CASES = [
    (8, 128, 128, 14, 14, 1, True),          # 'same', even map
    (8, 128, 130, 13, 15, 1, False),         # odd map: the last tiles' outputs cut
    (16, 129, 128, 10, 11, 0, True),         # no padding, odd channel count
    (8, 128, 128, 12, 12, 2, True),          # padding beyond 'same'
    (24, 128, 136, 11, 6, ((0, 1), (2, 0)), True),  # asymmetric padding, three vectors of images
    (8, 96, 96, 12, 12, 1, True),            # the fewest channels it takes
]


def _ids(cases):
    return ["-".join(str(v).replace(" ", "") for v in c) for c in cases]


def _kinds(monkeypatch):
    seen = []
    real = C._choose
    monkeypatch.setattr(C, "_choose", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    return seen


def _inputs(n, c, o, h, w, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32) * np.float32(0.1)
    wt = (rng.standard_normal((o, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    return x, wt, rng.standard_normal(o).astype(np.float32)


def _functions(padding):
    """(ours, PyTorch's); an asymmetric padding goes to PyTorch as F.pad."""
    if isinstance(padding, tuple):
        (t, b), (l, r) = padding
        return (lambda x, w, *bias: C.Conv2d.apply(x, w, *bias, padding=padding),
                lambda x, w, *bias: TF.conv2d(TF.pad(x, (l, r, t, b)), w, *bias))
    return (lambda *a: F.conv2d(*a, padding=padding)), (lambda *a: TF.conv2d(*a, padding=padding))


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_winograd_matches_torch(case, monkeypatch):
    n, c, o, h, w, padding, bias = case
    kinds = _kinds(monkeypatch)
    x, wt, b = _inputs(n, c, o, h, w)
    ours, theirs = _functions(padding)
    check_against_torch(ours, theirs, [x, wt, b] if bias else [x, wt], torch_in_float64=True)
    assert kinds == ["winograd"]


@pytest.mark.parametrize("need", [(0,), (1,), (1, 2), (0, 2)])
def test_winograd_computes_only_the_gradients_asked_for(need):
    x, wt, b = _inputs(8, 128, 128, 12, 12)
    check_against_torch(lambda *a: F.conv2d(*a, padding=1), lambda *a: TF.conv2d(*a, padding=1), [x, wt, b],
                        grad_inputs=list(need), torch_in_float64=True)


def test_winograd_under_no_grad_and_in_eval_mode(monkeypatch):
    kinds = _kinds(monkeypatch)
    x, wt, b = _inputs(8, 128, 128, 12, 12)
    with dn.no_grad():
        y = F.conv2d(dn.tensor(x), dn.tensor(wt), dn.tensor(b), padding=1).numpy()
    want = TF.conv2d(*(__import__("torch").tensor(a.astype(np.float64)) for a in (x, wt, b)), padding=1)
    np.testing.assert_allclose(y, want.numpy().astype(np.float32), rtol=1e-4, atol=1e-5)
    assert kinds == ["winograd"]


@pytest.mark.parametrize("n", [1, 3, 13])
def test_the_transforms_scalar_tail_matches_the_definition(n):
    """Batches that are not whole vectors (the dispatch never sends them; the kernels take them,
    image by image) against the float64 correlation."""
    x, wt, b = _inputs(n, 5, 7, 7, 6)
    xh = np.ascontiguousarray(x.transpose(1, 2, 3, 0))
    y = C._winograd(xh, C._winograd_weight(wt), b, (1, 1), (7, 6))
    import torch
    want = TF.conv2d(*(torch.tensor(a.astype(np.float64)) for a in (x, wt, b)), padding=1).numpy()
    np.testing.assert_allclose(y.transpose(3, 0, 1, 2), want, rtol=1e-5, atol=1e-5)


def test_chunks_of_tile_rows_give_the_whole_map(monkeypatch):
    """One tile row a chunk (a small budget) against one chunk for the whole map."""
    x, wt, b = _inputs(8, 16, 24, 13, 10)
    xh = np.ascontiguousarray(x.transpose(1, 2, 3, 0))
    u = C._winograd_weight(wt)
    whole = C._winograd(xh, u, b, (1, 1), (13, 10))
    monkeypatch.setattr(C, "_WINOGRAD_CHUNK_BYTES", 1)
    rows = C._winograd(xh, u, b, (1, 1), (13, 10))
    np.testing.assert_allclose(rows, whole, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("threads", [2, 3, 16])
def test_threads_share_the_transforms_without_changing_a_bit(threads, monkeypatch):
    """Each channel's transforms run whole in one thread, whichever takes it."""
    x, wt, b = _inputs(8, 128, 128, 12, 12, seed=3)
    monkeypatch.setattr(_native, "SPLIT_MIN_VALUES", 0)
    results = []
    for t in (1, threads):
        monkeypatch.setattr(_native, "threads", lambda t=t: t)
        xs, ws, bs = (dn.tensor(a, requires_grad=True) for a in (x, wt, b))
        y = F.conv2d(xs, ws, bs, padding=1)
        (y * y).sum().backward()
        results.append([y.numpy(), xs.grad.numpy(), ws.grad.numpy(), bs.grad.numpy()])
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def test_the_flipped_weight_transform_is_that_of_the_flipped_weights():
    """The input gradient's U: the taps reversed in the product, not a copy of the flipped
    weights."""
    _, wt, _ = _inputs(1, 6, 5, 3, 3)
    p = C._Plan((1, 6, 3, 3), wt.shape, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    flipped = np.ascontiguousarray(C._flipped_weight(wt, p))
    got = C._winograd_weight(wt, flipped=True)
    assert got.shape == (16, 6, 5)
    np.testing.assert_allclose(got, C._winograd_weight(flipped), rtol=1e-6, atol=1e-7)


def test_the_input_gradient_is_the_adjoint_of_the_forward():
    """<conv(x), g> = <x, conv^T(g)>, both through Winograd, in float64 sums of float32 results."""
    x, wt, _ = _inputs(8, 128, 128, 13, 11, seed=5)
    xs, ws = dn.tensor(x, requires_grad=True), dn.tensor(wt)
    y = F.conv2d(xs, ws, padding=1)
    g = np.random.default_rng(6).standard_normal(y.shape).astype(np.float32)
    y.backward(dn.tensor(g))
    lhs = float((y.numpy().astype(np.float64) * g).sum())
    rhs = float((x.astype(np.float64) * xs.grad.numpy()).sum())
    assert abs(lhs - rhs) <= 1e-5 * max(abs(lhs), 1.0)


# (N, C, O, H, stride, dilation, groups): one thing each that Winograd F(2x2, 3x3) does not take
REFUSED = [
    (8, 128, 128, 14, 2, 1, 1),    # stride 2
    (8, 128, 128, 14, 1, 2, 1),    # dilation
    (8, 128, 128, 14, 1, 1, 2),    # groups
    (8, 64, 128, 14, 1, 1, 1),     # too few input channels to pay
    (8, 128, 64, 14, 1, 1, 1),     # too few outputs
    (8, 95, 96, 14, 1, 1, 1),      # one channel short
    (32, 128, 128, 3, 1, 1, 1),    # a 3x3 map: 2x2 tiles waste 7 of 16 outputs
    (4, 128, 128, 14, 1, 1, 1),    # half a vector of images
    (12, 128, 128, 14, 1, 1, 1),   # a vector and a half
]


@pytest.mark.parametrize("case", REFUSED, ids=_ids(REFUSED))
def test_winograd_is_not_taken_where_it_does_not_apply(case, monkeypatch):
    n, c, o, h, s, d, g = case
    kinds = _kinds(monkeypatch)
    x, wt, b = _inputs(n, c, o, h, h)
    wt = wt[:, :c // g]
    check_against_torch(lambda *a: F.conv2d(*a, stride=s, padding=d, dilation=d, groups=g),
                        lambda *a: TF.conv2d(*a, stride=s, padding=d, dilation=d, groups=g), [x, wt, b],
                        torch_in_float64=True)
    assert kinds and "winograd" not in kinds


def test_a_5x5_kernel_or_float64_never_takes_winograd(monkeypatch):
    kinds = _kinds(monkeypatch)
    rng = np.random.default_rng(0)
    F.conv2d(dn.tensor(rng.standard_normal((8, 128, 8, 8)).astype(np.float32)),
             dn.tensor(rng.standard_normal((128, 128, 5, 5)).astype(np.float32)), padding=2)
    F.conv2d(dn.tensor(rng.standard_normal((8, 128, 8, 8))), dn.tensor(rng.standard_normal((128, 128, 3, 3))),
             padding=1)
    assert len(kinds) == 2 and "winograd" not in kinds


def test_without_the_fast_native_kernels_the_numpy_path_runs(monkeypatch):
    """A CPU the kernels are not fast on (or no build): im2col, with the same results."""
    monkeypatch.setattr(_native, "fast_here", lambda: False)
    kinds = _kinds(monkeypatch)
    x, wt, b = _inputs(8, 128, 128, 12, 12)
    check_against_torch(lambda *a: F.conv2d(*a, padding=1), lambda *a: TF.conv2d(*a, padding=1), [x, wt, b],
                        torch_in_float64=True)
    assert kinds == ["im2col"]


def _transform_calls(monkeypatch):
    calls = []
    real = C._winograd_weight
    monkeypatch.setattr(C, "_winograd_weight", lambda w, flipped=False: calls.append(flipped) or real(w, flipped))
    return calls


def test_a_read_only_weight_is_transformed_once_while_it_lives(monkeypatch):
    """A read-only weight that owns its memory (graph mode's folded weights) keeps its transform;
    the entry goes with the array."""
    calls = _transform_calls(monkeypatch)
    _, wt, _ = _inputs(1, 96, 96, 3, 3)
    frozen = wt.copy()
    frozen.flags.writeable = False
    first, again = C._winograd_weight_of(frozen), C._winograd_weight_of(frozen)
    assert calls == [False] and again is first
    np.testing.assert_array_equal(first, C._winograd_weight(wt))
    key = id(frozen)
    assert key in C._frozen_transforms
    del frozen
    import gc
    gc.collect()
    assert key not in C._frozen_transforms


def test_a_weight_that_can_change_is_transformed_every_call(monkeypatch):
    """A parameter (writeable: an optimizer updates it in place) and a read-only view of one
    (its base can change) get a fresh transform each call, and see the change."""
    calls = _transform_calls(monkeypatch)
    x, wt, b = _inputs(8, 96, 96, 12, 12)
    view = wt[:]
    view.flags.writeable = False
    w = dn.tensor(wt)
    with dn.no_grad():
        F.conv2d(dn.tensor(x), w, padding=1)
        w.mul_(2.0)
        doubled = F.conv2d(dn.tensor(x), w, padding=1).numpy()
        F.conv2d(dn.tensor(x), dn.tensor(view), padding=1)
        F.conv2d(dn.tensor(x), dn.tensor(view), padding=1)
    assert calls == [False] * 4
    import torch
    want = TF.conv2d(torch.tensor(x.astype(np.float64)), torch.tensor(2.0 * wt.astype(np.float64)), padding=1)
    np.testing.assert_allclose(doubled, want.numpy().astype(np.float32), rtol=1e-4, atol=1e-5)
