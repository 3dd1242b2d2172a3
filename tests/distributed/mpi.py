"""Launching test ranks with mpirun on this machine (shared memory only, no network)."""
import os
import shutil
import subprocess
import sys
import time

import pytest

try:
    import mpi4py  # noqa: F401
    _MPI4PY = True
except ImportError:
    _MPI4PY = False

MPIRUN = shutil.which("mpirun")
needs_mpi = pytest.mark.skipif(
    MPIRUN is None or not _MPI4PY,
    reason="needs Open MPI and mpi4py: apt-get install openmpi-bin libopenmpi-dev && "
           "pip install -e '.[dist]'")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RANKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ranks.py")


def mpi_env(**extra):
    env = dict(os.environ)
    # CI runs as root; Open MPI refuses that unless told; loopback and shared memory only
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl="self,vader", OMPI_MCA_oob_tcp_if_include="lo",
               OMPI_MCA_rmaps_base_oversubscribe="1", PYTHONPATH=ROOT, **extra)
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def mpirun(n, argv, timeout=120, env=None, **popen):
    """``mpirun -np n argv...``; returns the CompletedProcess (text) and the seconds it took."""
    cmd = [MPIRUN, "-np", str(n), "--oversubscribe", *argv]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or mpi_env(),
                          cwd=ROOT, **popen)
    return proc, time.perf_counter() - start


def ranks(n, mode, out, timeout=120, **env):
    """Run tests/distributed/ranks.py MODE OUT on ``n`` ranks."""
    return mpirun(n, [sys.executable, RANKS, mode, str(out)], timeout=timeout, env=mpi_env(**env))


def divenet_cmd():
    return [sys.executable, "-m", "divenet"]
