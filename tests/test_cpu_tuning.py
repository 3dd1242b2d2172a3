"""divenet picks OpenBLAS's kernels at import, before NumPy loads, and only then."""
import os
import subprocess
import sys

SHOW = "import divenet, os; print(os.environ.get('OPENBLAS_CORETYPE', '<unset>'))"


def _run(code, **env):
    full = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
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
