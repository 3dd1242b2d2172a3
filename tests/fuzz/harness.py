"""The fuzzers' shared pieces: seeded cases run under a time and a memory bound, byte
mutations, and a tally of outcomes per mutation kind.

Every case draws its randomness from ``numpy.random.default_rng([SEED, target, case])``, so a
case is the same whatever ``--fuzz-cases`` says and a failure reproduces by its number.
A case ends in one of the OUTCOMES; the test fails on any of FAILURES.
"""
from __future__ import annotations

import contextlib
import io
import resource
import signal
import time
import tracemalloc
import warnings
from collections import Counter, defaultdict

import numpy as np

SEED = 20240611

#: how a case can end
OUTCOMES = (
    "unchanged",      # success, same result as the unmutated file (e.g. gzip's mtime flipped)
    "payload",        # success with other values: a payload change nothing can detect
    "accepted",       # success although structure changed (a still self-consistent file)
    "clear-error",    # one of divenet's errors, one line, naming the file
    "unclear-error",  # an error of an allowed type, but multi-line or not naming the file
    "crash",          # any other exception: a traceback for the user
    "hang",           # ran past the case's time bound
    "memory",         # allocated past the case's memory bound
)
FAILURES = ("unclear-error", "crash", "hang", "memory")


class _Hang(BaseException):
    """Raised by the alarm; a BaseException so that no ``except Exception`` swallows it."""


def _on_alarm(signum, frame):
    raise _Hang()


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


class Run:
    """What one bounded call did: ``exc`` (None on success), ``value``, ``seconds``, ``peak``."""

    def __init__(self, exc, value, seconds, peak, warned):
        self.exc, self.value, self.seconds, self.peak, self.warned = exc, value, seconds, peak, warned


class Fuzz:
    """Runs the cases of one target and tallies them.

    ``time_limit`` (seconds) and ``mem_limit`` (bytes of traced allocations, NumPy's included)
    bound each call. While the fuzzer runs, the address space is also capped a few GB above
    its size, so that an allocation that escapes tracemalloc (a C library's) fails with a
    MemoryError instead of taking the machine.
    """

    def __init__(self, target: str, target_id: int, time_limit=5.0, mem_limit=64 << 20):
        self.target, self.target_id = target, target_id
        self.time_limit, self.mem_limit = time_limit, mem_limit
        self.table = defaultdict(Counter)  # kind -> outcome -> count
        self.failures = []
        self.warnings = Counter()          # warning text (first line) -> cases
        self.slowest = self.largest = 0.0

    def rng(self, case: int):
        return np.random.default_rng([SEED, self.target_id, case])

    @contextlib.contextmanager
    def session(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = _vm_size() + (3 << 30)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        old_handler = signal.signal(signal.SIGALRM, _on_alarm)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
        tracemalloc.start()
        try:
            yield self
        finally:
            tracemalloc.stop()
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
            signal.signal(signal.SIGALRM, old_handler)

    def call(self, fn) -> Run:
        """``fn()`` under the bounds (inside ``session()``)."""
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        exc = value = None
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            signal.setitimer(signal.ITIMER_REAL, self.time_limit)
            try:
                value = fn()
            except _Hang as e:
                exc = e
            except Exception as e:  # noqa: BLE001 - classified by the caller
                exc = e
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] - base
        warned = [str(w.message).splitlines()[0][:120] for w in caught]
        return Run(exc, value, seconds, peak, warned)

    def bounds_broken(self, run: Run):
        """"hang" / "memory" when the call broke a bound, else None."""
        if isinstance(run.exc, _Hang):
            return "hang"
        if isinstance(run.exc, MemoryError) or run.peak > self.mem_limit:
            return "memory"
        return None

    def error_outcome(self, exc, allowed, names) -> str:
        """How an exception counts: clear only when its type is allowed, its message is one
        line and it names one of ``names`` (file names)."""
        if not isinstance(exc, allowed):
            return "crash"
        msg = str(exc)
        if "\n" in msg.strip() or not any(n in msg for n in names):
            return "unclear-error"
        return "clear-error"

    def record(self, case: int, kind: str, outcome: str, detail: str, run: Run | None = None):
        assert outcome in OUTCOMES, outcome
        self.table[kind][outcome] += 1
        if run is not None:
            self.slowest = max(self.slowest, run.seconds)
            self.largest = max(self.largest, run.peak)
            for w in run.warned:
                self.warnings[w] += 1
        if outcome in FAILURES:
            extra = ""
            if run is not None:
                extra = f" [{run.seconds:.2f} s, peak {run.peak / 2**20:.1f} MB]"
                if run.exc is not None and not isinstance(run.exc, _Hang):
                    first = str(run.exc).splitlines()[0] if str(run.exc) else ""
                    extra += f" {type(run.exc).__module__}.{type(run.exc).__name__}: {first[:300]}"
            self.failures.append(f"case {case} ({kind}: {detail}): {outcome}{extra}")

    def report(self) -> str:
        cols = [o for o in OUTCOMES if any(self.table[k][o] for k in self.table)]
        width = max([len(k) for k in self.table] + [4])
        lines = [f"{self.target}: seed {SEED}, {sum(sum(c.values()) for c in self.table.values())} cases; "
                 f"slowest {self.slowest:.2f} s, largest peak {self.largest / 2**20:.1f} MB",
                 f"  {'kind':<{width}} {'cases':>6} " + " ".join(f"{c:>13}" for c in cols)]
        for kind in sorted(self.table):
            c = self.table[kind]
            lines.append(f"  {kind:<{width}} {sum(c.values()):>6} " + " ".join(f"{c[o]:>13}" for o in cols))
        total = Counter()
        for c in self.table.values():
            total.update(c)
        lines.append(f"  {'all':<{width}} {sum(total.values()):>6} " + " ".join(f"{total[o]:>13}" for o in cols))
        for w, n in self.warnings.most_common(5):
            lines.append(f"  warning in {n} cases: {w}")
        return "\n".join(lines)

    def check(self, test_file: str):
        """Print the tally; fail listing every failing case and how to rerun it."""
        print("\n" + self.report())
        if self.failures:
            last = max(int(f.split()[1]) for f in self.failures)
            shown = "\n".join(self.failures[:60])
            more = f"\n... and {len(self.failures) - 60} more" if len(self.failures) > 60 else ""
            raise AssertionError(
                f"{len(self.failures)} {self.target} fuzz cases failed (seed {SEED}; a case "
                f"reproduces with: python -m pytest {test_file} --fuzz-cases {last + 1})\n"
                f"{shown}{more}\n{self.report()}")


# ---- byte mutations: each returns (new bytes, a description) -----------------------------------

def truncate(rng, data: bytes, lo=0):
    n = int(rng.integers(lo, max(lo + 1, len(data))))
    return data[:n], f"cut to {n} of {len(data)} bytes"


def bitflip(rng, data: bytes, lo=0, hi=None):
    hi = len(data) if hi is None else min(hi, len(data))
    if hi <= lo:
        return data, "no byte to flip"
    b = bytearray(data)
    where = []
    for _ in range(int(rng.integers(1, 4))):
        i, bit = int(rng.integers(lo, hi)), int(rng.integers(0, 8))
        b[i] ^= 1 << bit
        where.append(f"{i}.{bit}")
    return bytes(b), "bits flipped at " + ", ".join(where)


def insert(rng, data: bytes):
    i = int(rng.integers(0, len(data) + 1))
    new = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    return data[:i] + new + data[i:], f"{len(new)} bytes inserted at {i}"


def delete(rng, data: bytes):
    if not data:
        return data, "nothing to delete"
    i = int(rng.integers(0, len(data)))
    n = int(rng.integers(1, 17))
    return data[:i] + data[i + n:], f"{min(n, len(data) - i)} bytes deleted at {i}"


def garbage(rng, prefix=b""):
    n = int(rng.integers(0, 2048))
    return prefix + rng.integers(0, 256, n, dtype=np.uint8).tobytes(), f"{n} random bytes after {prefix!r}"


def run_cli(argv):
    """``divenet ARGV`` in this process: (exit status, stdout, stderr). An exception that
    escapes ``main`` is what the user would see as a traceback: it propagates."""
    from divenet.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse's errors
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def cli_outcome(rc, out, err, command, files) -> str:
    """A CLI run is fine when it succeeded, or failed with one-line errors on stderr
    (``divenet CMD: error: ...`` or a per-file ``FILE: ...`` line) and no traceback."""
    lines = [l for l in err.splitlines() if l.strip()]
    if "Traceback" in err:
        return "crash"
    if rc == 0:
        return "ok"
    if not lines or len(lines) > 2:
        return "unclear-error"
    for line in lines:
        if not (line.startswith(f"divenet {command}:") or any(line.startswith(f) for f in files)):
            return "unclear-error"
    return "clear-error"
