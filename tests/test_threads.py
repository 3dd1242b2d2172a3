"""Concurrent inference, as a server runs it: many threads calling one model under no_grad.

Each test compares every thread's output bit for bit with the single-threaded one. Before the
native calls kept their pointers alive (divenet/_native.py), these runs aborted with heap
corruption or returned NaN; before lazy layers took a lock, threads making the first call got
different weights.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import divenet as dn
from divenet import _native, nn
from divenet.models import get_model
from divenet.ops import conv as conv_ops

THREADS, CALLS = 20, 10


def _run_threads(fn, n=THREADS):
    """Run ``fn(i)`` on ``n`` threads released together; return the results in thread order."""
    start = threading.Barrier(n)
    results, errors = [None] * n, []

    def worker(i):
        try:
            start.wait()
            results[i] = fn(i)
        except BaseException as exc:  # noqa: BLE001 - reported below, with the thread's number
            errors.append((i, exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, f"thread {errors[0][0]} raised {errors[0][1]!r}"
    return results


def _forward(model, x):
    with dn.no_grad():
        return model(x).numpy()


@pytest.mark.parametrize("name,side", [("lenet", 28), ("lenet-bn", 28)])
def test_threaded_forward_is_bit_equal_to_single_threaded(name, side):
    dn.manual_seed(0)
    model = get_model(name).eval()
    model.init(dn.zeros(1, 1, side, side))
    xs = [dn.randn(16, 1, side, side) for _ in range(CALLS)]
    expected = [_forward(model, x) for x in xs]

    def calls(_):
        return [_forward(model, x) for x in xs]

    for outputs in _run_threads(calls):
        for got, want in zip(outputs, expected):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name,side", [
    ("alexnet", 65), ("vgg11-slim", 32), ("nin", 67), ("googlenet", 32), ("resnet18-small", 8),
    ("densenet", 32), ("mobilenet", 32), ("shufflenet", 32), ("se-resnet18", 32), ("lstm", 28),
    ("gru", 28),
])
def test_every_model_family_infers_safely_from_threads(name, side):
    dn.manual_seed(0)
    model = get_model(name).eval()
    model.init(dn.zeros(1, 1, side, side))
    x = dn.randn(2, 1, side, side)
    expected = _forward(model, x)
    for got in _run_threads(lambda _: [_forward(model, x) for _ in range(2)], n=4):
        for out in got:
            np.testing.assert_array_equal(out, expected)


@pytest.mark.skipif(_native.library() is None, reason="the native kernels are not built here")
def test_native_kernels_from_many_threads():
    """Forward, input gradient and weight gradient of the direct kernels, called directly."""
    rng = np.random.default_rng(0)
    n, c, o, h, k = 16, 6, 16, 14, 5
    x = rng.standard_normal((n, c, h, h), dtype=np.float32)
    w = rng.standard_normal((o, c, k, k), dtype=np.float32)
    b = rng.standard_normal(o, dtype=np.float32)
    p = conv_ops._Plan(x.shape, w.shape, (1, 1), ((2, 2), (2, 2)), (1, 1), 1)
    xh = np.ascontiguousarray(x.transpose(1, 2, 3, 0))
    gh = rng.standard_normal((o, p.OH, p.OW, n), dtype=np.float32)

    def all_three(_):
        return [(_native.conv_forward(xh, w, b, p), _native.conv_input_grad(gh, w, p),
                 _native.conv_weight_grad(xh, gh, p)) for _ in range(CALLS)]

    want = all_three(None)[0]
    for per_thread in _run_threads(all_three):
        for got in per_thread:
            for g, e in zip(got, want):
                np.testing.assert_array_equal(g, e)


@pytest.mark.skipif(_native.gemm_conv_copy() == 0, reason="the implicit-GEMM kernel needs AVX2 and FMA (and a native build)")
def test_implicit_gemm_kernel_from_many_threads():
    """The implicit-GEMM convolution (its own worker threads inside each call) from 20 threads
    at once: strided and grouped, every result bitwise the single-threaded one."""
    rng = np.random.default_rng(1)
    cases = []
    for (c, o, g, s) in ((8, 20, 1, 2), (16, 16, 4, 1)):
        x = rng.standard_normal((5, c, 11, 11), dtype=np.float32)
        w = rng.standard_normal((o, c // g, 3, 3), dtype=np.float32)
        p = conv_ops._Plan(x.shape, w.shape, (s, s), ((1, 1), (1, 1)), (1, 1), g)
        cases.append((np.ascontiguousarray(x.transpose(1, 2, 3, 0)), w, rng.standard_normal(o, dtype=np.float32), p))

    def run(_):
        return [[_native.gemm_conv(*case) for case in cases] for _ in range(CALLS)]

    want = run(None)[0]
    for per_thread in _run_threads(run):
        for got in per_thread:
            for g, e in zip(got, want):
                np.testing.assert_array_equal(g, e)


@pytest.mark.skipif(not _native.usable(np.zeros(1, np.float32)), reason="the Winograd transforms need the native build")
def test_winograd_convolution_from_many_threads():
    """Winograd F(2x2, 3x3) (native transforms and per-thread workspaces around OpenBLAS) from
    20 threads at once: every result bitwise the single-threaded one."""
    rng = np.random.default_rng(2)
    x = dn.tensor(rng.standard_normal((8, 96, 12, 12), dtype=np.float32))
    w = dn.tensor(rng.standard_normal((112, 96, 3, 3), dtype=np.float32) / 30)
    b = dn.tensor(rng.standard_normal(112, dtype=np.float32))
    kinds = []
    real = conv_ops._choose
    conv_ops._choose = lambda *a, **k: kinds.append(real(*a, **k)) or kinds[-1]
    try:
        want = _forward(lambda t: dn.functional.conv2d(t, w, b, padding=1), x)
    finally:
        conv_ops._choose = real
    assert kinds == ["winograd"]

    def run(_):
        return [_forward(lambda t: dn.functional.conv2d(t, w, b, padding=1), x) for _ in range(CALLS)]

    for per_thread in _run_threads(run):
        for got in per_thread:
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("make", [
    lambda: nn.Linear(None, 10),
    lambda: nn.Sequential(nn.Conv2d(None, 4, 3), nn.BatchNorm2d(None), nn.Flatten(), nn.LazyLinear(10))
    if hasattr(nn, "LazyLinear") else nn.Sequential(nn.Conv2d(None, 4, 3), nn.BatchNorm2d(None),
                                                    nn.Flatten(), nn.Linear(None, 10)),
])
def test_lazy_layers_are_made_once_when_threads_race_to_the_first_call(make):
    for trial in range(3):
        dn.manual_seed(trial)
        model = make().eval()
        x = dn.randn(2, 3, 6, 6) if isinstance(model, nn.Sequential) else dn.randn(4, 7)
        outputs = _run_threads(lambda _: _forward(model, x))
        for out in outputs[1:]:
            np.testing.assert_array_equal(out, outputs[0])
        np.testing.assert_array_equal(_forward(model, x), outputs[0])  # the weights kept
