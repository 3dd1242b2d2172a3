"""divenet picks OpenBLAS's kernels at import, before NumPy loads, and only then."""
import os
import subprocess
import sys

SHOW = "import divenet, os; print(os.environ.get('OPENBLAS_CORETYPE', '<unset>'))"


def _run(code, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_THREAD_TIMEOUT")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full,
                          check=True).stdout.strip()


def test_opt_out_leaves_the_environment_alone():
    assert _run(SHOW, DIVENET_NO_CPU_TUNING="1", OPENBLAS_CORETYPE="Haswell") == "Haswell"
    assert _run(SHOW, DIVENET_NO_CPU_TUNING="1") == "<unset>"


def test_avx512_cpus_get_the_skylakex_kernels_unless_numpy_was_loaded_first():
    from divenet._cpu import _has_avx512

    expected = "SkylakeX" if _has_avx512() else "Haswell"
    assert _run(SHOW, OPENBLAS_CORETYPE="Haswell") == expected
    # NumPy already chose its kernels: changing the variable then would only mislead
    assert _run("import numpy; " + SHOW, OPENBLAS_CORETYPE="Haswell") == "Haswell"
    # a core type the user chose that is not an AVX2 one is kept
    assert _run(SHOW, OPENBLAS_CORETYPE="Zen5Custom") == "Zen5Custom"


def test_openblas_workers_sleep_soon_unless_told_otherwise():
    show = ("import divenet, os; from divenet import _cpu; "
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT', '<unset>'), _cpu.blas_sleeps_soon())")
    assert _run(show) == "20 True"
    assert _run(show, OPENBLAS_THREAD_TIMEOUT="25") == "25 False"  # the user's value is kept
    assert _run(show, OPENBLAS_THREAD_TIMEOUT="8") == "8 True"
    assert _run(show, OPENBLAS_THREAD_TIMEOUT="soon") == "soon False"
    assert _run("import numpy; " + show) == "<unset> False"  # OpenBLAS read its settings already
    assert _run(show, DIVENET_NO_CPU_TUNING="1") == "<unset> False"


def test_blas_threads_can_be_set_and_read_back():
    import pytest

    import divenet as dn

    before = dn.blas_threads()
    if before is None:
        pytest.skip("NumPy's BLAS here is not OpenBLAS")
    try:
        assert dn.set_blas_threads(1) is True
        assert dn.blas_threads() == 1
    finally:
        dn.set_blas_threads(before)
    assert dn.blas_threads() == before
    with pytest.raises(ValueError, match="at least 1"):
        dn.set_blas_threads(0)


def test_axpy_updates_in_place_like_numpy():
    """y += a x: through OpenBLAS for contiguous float32/float64, through NumPy otherwise
    (strided views, mixed dtypes); the result and y's identity are the same either way."""
    import numpy as np

    from divenet._cpu import _axpy_fns, axpy

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        x, y = rng.standard_normal((3, 1000)).astype(dtype), rng.standard_normal((3, 1000)).astype(dtype)
        expected = y + dtype(-0.25) * x
        assert axpy(-0.25, x, y) is y
        np.testing.assert_allclose(y, expected, rtol=1e-6)
        assert np.dtype(dtype) in _axpy_fns() or not _axpy_fns()
    base = rng.standard_normal((4, 6)).astype(np.float32)
    y = base.copy()
    view = y[:, ::2]  # strided: the NumPy path
    x = rng.standard_normal(view.shape).astype(np.float32)
    axpy(2.0, x, view)
    expected = base.copy()
    expected[:, ::2] += 2 * x
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_conv_weight_gradients_are_c_contiguous():
    """So that the optimizer's one-pass update applies (see divenet._cpu.axpy)."""
    import numpy as np

    import divenet as dn
    import divenet.functional as F

    cases = (((2, 3, 8, 8), (4, 3, 3, 3), 1), ((2, 3, 1, 1), (4, 3, 3, 3), 1),
             ((4, 1, 60, 60), (4, 1, 3, 3), 1), ((2, 4, 8, 8), (4, 2, 3, 3), 2))
    for shape, w_shape, groups in cases:  # im2col, dense small map, chunked, grouped
        x = dn.tensor(np.ones(shape, np.float32))
        w = dn.tensor(np.ones(w_shape, np.float32), requires_grad=True)
        F.conv2d(x, w, padding=1, groups=groups).sum().backward()
        assert w.grad.array.flags.c_contiguous
