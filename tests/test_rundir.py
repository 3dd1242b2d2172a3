"""The run directory's state machine (docs/rundir.md): kills at every write, damaged
checkpoints, orphans, restarts. A kill is simulated at the operating-system calls (open for
writing, write, rename, unlink) inside the run directory, so no write path can dodge it; one
test kills a real training process with SIGKILL."""
import builtins
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import divenet as dn
import divenet.train as train
from divenet import nn, optim
from divenet.data import ArrayDataset, DataLoader
from divenet.io import CheckpointError, CheckpointWarning
from divenet.optim.lr_scheduler import StepLR
from divenet.train import Trainer, run_state

TIMING = ("epoch_seconds", "examples_per_sec")


class Killed(BaseException):
    """A simulated kill: the code under test catches no BaseException."""


def _blobs(n=96, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.standard_normal((n, 1, 4, 4)) + y[:, None, None, None] * 0.7).astype(np.float32)
    return ArrayDataset(x, y)


def _trainer(out, epochs=3, log=None, **kw):
    """A tiny run that uses every piece of resumable state: weights, momentum, a schedule, the
    loader's epoch and the RNG (dropout)."""
    dn.manual_seed(0)
    data = _blobs()
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, 3))
    opt = optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    return Trainer(model, opt, DataLoader(data, 16, shuffle=True, seed=1), DataLoader(_blobs(48, 1), 48),
                   epochs=epochs, out_dir=out, scheduler=StepLR(opt, 2, 0.5), progress=False,
                   log=log if log is not None else (lambda s: None), **kw)


def _weights(trainer):
    return trainer.model.state_dict()


def _rows(out):
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _assert_same_run(trainer, out, ref_weights, ref_rows):
    for k, v in ref_weights.items():
        np.testing.assert_array_equal(_weights(trainer)[k], v, err_msg=k)
    assert _rows(out) == ref_rows
    names = {p.name for p in Path(out).iterdir()}
    assert not [n for n in names if n.endswith(".tmp")]
    assert all(n[:-len(".safetensors")] + ".json" in names for n in names if n.endswith(".safetensors"))


def _quick_curves(metrics, png):
    """curves.png without matplotlib's second per plot: same file, written as the real one is
    (a temporary file renamed into place)."""
    tmp = Path(png).with_name(Path(png).name + ".tmp")
    tmp.write_bytes(Path(metrics).read_bytes())
    os.replace(tmp, png)


@pytest.fixture
def no_plots(monkeypatch):
    """Quick curves, and no fsync: a killed process loses nothing the kernel holds (fsync is for
    power loss), and a thousand fsyncs would be most of these tests' time."""
    monkeypatch.setattr(train, "plot_curves", _quick_curves)
    monkeypatch.setattr(os, "fsync", lambda fd: None)


class _DyingFile:
    def __init__(self, f, die):
        self._f, self._die = f, die

    def write(self, data):
        if self._die():  # half the data reaches the disk, then the process is gone
            self._f.write(data[:len(data) // 2])
            self._f.flush()
            raise Killed
        return self._f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


def _arm(monkeypatch, root, when):
    """Kill at a change to a file under ``root``: opening it for writing ("open"), a write to it
    ("write": half the data lands), a rename ("rename") or a removal ("unlink"). A kill just
    after one of them is the state before the next. ``when`` is the change's index or a
    predicate ``when(kind, path)``. Returns the list of changes seen so far."""
    root = str(root)
    seen = []

    def ours(path):
        return not isinstance(path, int) and os.fspath(path).startswith(root)

    def step(kind, path):
        seen.append((kind, os.fspath(path)))
        return when(kind, Path(path)) if callable(when) else len(seen) - 1 == when

    real_open, real_replace, real_rename, real_unlink = builtins.open, os.replace, os.rename, os.unlink

    def fake_open(file, mode="r", *a, **kw):
        if not ours(file) or not any(c in mode for c in "wax+"):
            return real_open(file, mode, *a, **kw)
        if step("open", file):
            raise Killed
        return _DyingFile(real_open(file, mode, *a, **kw), lambda: step("write", file))

    def checked(kind, real):
        def fake(src, *a, **kw):
            if ours(src) and step(kind, src):
                raise Killed
            return real(src, *a, **kw)
        return fake

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "replace", checked("rename", real_replace))
    monkeypatch.setattr(os, "rename", checked("rename", real_rename))
    monkeypatch.setattr(os, "unlink", checked("unlink", real_unlink))
    monkeypatch.setattr(os, "remove", checked("unlink", real_unlink))
    return seen


@pytest.mark.parametrize("config", [dict(), dict(keep=1, keep_best=True)], ids=["default", "keep1-best"])
def test_a_kill_at_every_write_resumes_bit_identically(tmp_path, monkeypatch, no_plots, config):
    ref = _trainer(tmp_path / "ref", **config)
    ref.fit()
    ref_weights, ref_rows = _weights(ref), _rows(tmp_path / "ref")
    ref_files = sorted(p.name for p in (tmp_path / "ref").iterdir())
    with monkeypatch.context() as m:  # count the changes an uninterrupted run makes
        seen = _arm(m, tmp_path / "count", -1)
        _trainer(tmp_path / "count", **config).fit()
        steps = len(seen)
    assert steps >= 3 * 9  # three epochs of weights, JSON and metrics at least
    survived = 0
    for k in range(steps):
        out = tmp_path / f"k{k}"
        with monkeypatch.context() as m:
            _arm(m, out, k)
            with pytest.raises(Killed):
                _trainer(out, **config).fit()
        state = run_state(out)
        logs = []
        if state.state == "fresh":  # (b) a plain restart takes the directory over
            plain = tmp_path / f"p{k}"
            shutil.copytree(out, plain) if out.exists() else None
            t = _trainer(plain, log=logs.append, **config)
            t.fit()
            _assert_same_run(t, plain, ref_weights, ref_rows)
        else:
            assert state.state in ("resumable", "finished") and state.epoch in (1, 2, 3)
            with pytest.raises(CheckpointError, match="already holds a run"):
                _trainer(out, **config).fit()
        # (a) resume continues (from epoch 1 when nothing was complete)
        t = _trainer(out, **config)
        t.fit(resume=True)
        _assert_same_run(t, out, ref_weights, ref_rows)
        assert sorted(p.name for p in out.iterdir()) == ref_files
        survived += 1
    assert survived == steps


def _named(kind, prefix):
    return lambda k, path: k == kind and path.name.startswith(prefix)


def _reference(tmp_path, epochs=3, **kw):
    ref = _trainer(tmp_path / "ref", epochs=epochs, **kw)
    ref.fit()
    return _weights(ref), _rows(tmp_path / "ref")


def test_a_kill_before_the_first_checkpoint_is_complete_leaves_a_restartable_directory(
        tmp_path, monkeypatch, no_plots):
    ref_weights, ref_rows = _reference(tmp_path)
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _arm(m, out, _named("open", "epoch-001.json"))
        with pytest.raises(Killed):
            _trainer(out).fit()
    assert run_state(out).state == "fresh"
    shutil.copytree(out, tmp_path / "plain")
    logs = []
    t = _trainer(tmp_path / "plain", log=logs.append)
    t.fit()  # a plain restart takes it over, saying what it removed
    _assert_same_run(t, tmp_path / "plain", ref_weights, ref_rows)
    assert any("epoch-001.safetensors" in line and "removed" in line for line in logs)
    logs.clear()
    t = _trainer(out, log=logs.append)
    t.fit(resume=True)  # and so does --resume, starting at epoch 1
    _assert_same_run(t, out, ref_weights, ref_rows)
    assert any("starting at epoch 1" in line for line in logs)


def test_a_kill_while_resume_rewrites_the_metrics_keeps_the_earlier_rows(tmp_path, monkeypatch, no_plots):
    ref_weights, ref_rows = _reference(tmp_path)
    out = tmp_path / "run"
    _trainer(out, epochs=2).fit()
    with monkeypatch.context() as m:
        _arm(m, out, _named("write", "metrics.jsonl"))
        with pytest.raises(Killed):
            _trainer(out).fit(resume=True)
    assert _rows(out) == ref_rows[:2]
    t = _trainer(out)
    t.fit(resume=True)
    _assert_same_run(t, out, ref_weights, ref_rows)


def test_a_kill_while_pruning_leaves_no_orphan_weights(tmp_path, monkeypatch, no_plots):
    ref_weights, ref_rows = _reference(tmp_path)
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _arm(m, out, _named("unlink", "epoch-001.safetensors"))
        with pytest.raises(Killed):
            _trainer(out).fit()
    assert (out / "epoch-001.safetensors").exists() and not (out / "epoch-001.json").exists()
    t = _trainer(out)
    t.fit(resume=True)
    _assert_same_run(t, out, ref_weights, ref_rows)
    assert sorted(p.name for p in out.glob("epoch-*")) == [
        "epoch-002.json", "epoch-002.safetensors", "epoch-003.json", "epoch-003.safetensors"]


def _resave(weights_path, json_path, arrays):
    """Rewrite a checkpoint's weights and the hash its JSON holds: damage no hash can catch."""
    import hashlib

    from safetensors.numpy import save

    blob = save(arrays)
    weights_path.write_bytes(blob)
    meta = json.loads(json_path.read_text())
    meta["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    json_path.write_text(json.dumps(meta))


def _damage(out, kind):
    w, j = out / "epoch-003.safetensors", out / "epoch-003.json"
    if kind == "bit flip":
        data = bytearray(w.read_bytes())
        data[len(data) // 2] ^= 0x10
        w.write_bytes(bytes(data))
    elif kind == "truncated weights":
        w.write_bytes(w.read_bytes()[:100])
    elif kind == "truncated json":
        j.write_text(j.read_text()[:50])
    elif kind == "epoch edited":
        j.write_text(j.read_text().replace('"epoch": 3', '"epoch": 5'))
    elif kind in ("nan weights", "int32 weights"):
        from safetensors.numpy import load

        arrays = load(w.read_bytes())
        name = "model.1.weight"
        arrays[name] = (np.full_like(arrays[name], np.nan) if kind == "nan weights"
                        else arrays[name].view(np.int32))
        _resave(w, j, arrays)
    elif kind == "missing weights":
        w.unlink()


DAMAGES = ["bit flip", "truncated weights", "truncated json", "epoch edited", "nan weights",
           "int32 weights", "missing weights"]


@pytest.mark.parametrize("kind", DAMAGES)
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, no_plots, kind):
    ref_weights, ref_rows = _reference(tmp_path)
    out = tmp_path / "run"
    _trainer(out).fit()
    _damage(out, kind)
    t = _trainer(out)
    with pytest.warns(CheckpointWarning, match=r"epoch-003\..*resuming from epoch-002.json"):
        t.fit(resume=True)
    _assert_same_run(t, out, ref_weights, ref_rows)  # epoch 3 trained again, identically
    assert (out / "epoch-003.json.damaged").exists()


def test_no_intact_checkpoint_is_one_error_naming_the_directory(tmp_path, no_plots):
    out = tmp_path / "run"
    _trainer(out, epochs=1).fit()
    (out / "epoch-001.json").write_text("{")
    assert run_state(out).state == "damaged"
    with pytest.raises(CheckpointError, match=r"no intact checkpoint.*epoch-001.json"):
        _trainer(out).fit(resume=True)


def test_run_state_tells_fresh_resumable_and_finished(tmp_path, no_plots):
    out = tmp_path / "run"
    assert run_state(out) == ("fresh", None, None, None, ())
    out.mkdir()
    (out / "metrics.jsonl").write_text("{}\n")
    assert run_state(out).state == "fresh" and run_state(out).leftovers == ("metrics.jsonl",)
    _trainer(out, epochs=2).fit()
    s = run_state(out)
    assert (s.state, s.epoch, s.checkpoint.name, s.epochs) == ("finished", 2, "epoch-002.json", 2)
    assert run_state(out, epochs=4).state == "resumable"
    t = _trainer(out, epochs=2)
    with pytest.raises(CheckpointError, match="already holds a run"):
        t.fit()
    assert len(t.fit(resume=True)) == 2  # a finished run resumes to nothing left to do


CHILD = r"""
import sys, numpy as np
sys.path.insert(0, {root!r})
import os, tests.test_rundir as r
r.train.plot_curves, os.fsync = r._quick_curves, lambda fd: None  # as the no_plots fixture
t = r._trainer(sys.argv[1], epochs=60)
print("ready", flush=True)
t.fit(resume=sys.argv[2] == "resume")
np.savez(sys.argv[1] + ".npz", **t.model.state_dict())
"""


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    """A real training process, killed with SIGKILL at random moments of its training (after
    its imports), resumed each time; it ends where an uninterrupted run ends."""
    root = str(Path(__file__).resolve().parents[1])
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=root))
    rng = random.Random(0)
    duration = None  # of the uninterrupted run's training: kills land at fractions of it

    def run(out, mode, kill=False):
        nonlocal duration
        p = subprocess.Popen([sys.executable, str(script), str(out), mode], cwd=root,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdout.readline()  # "ready": imported, about to train
        start = time.perf_counter()
        if kill:  # three kills within the first 30% each: at least two land on any machine
            time.sleep(rng.uniform(0.05, 0.3) * duration)
            p.send_signal(signal.SIGKILL)
        err = p.communicate()[1].decode()
        duration = duration or time.perf_counter() - start
        return p.returncode, err

    rc, err = run(tmp_path / "ref", "fresh")
    assert rc == 0, err
    ref = np.load(str(tmp_path / "ref") + ".npz")
    out = tmp_path / "run"
    kills = 0
    for i in range(3):
        rc, err = run(out, "resume" if i else "fresh", kill=True)
        assert rc in (0, -signal.SIGKILL), err
        kills += rc == -signal.SIGKILL
    rc, err = run(out, "resume")
    assert rc == 0, err
    assert kills >= 2
    got = np.load(str(out) + ".npz")
    for k in ref.files:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def test_every_damage_to_the_only_checkpoint_is_one_error_at_resume_or_a_sane_resume(tmp_path, no_plots):
    from tests.io.test_checkpoint import mutations

    out = tmp_path / "run"
    _trainer(out, epochs=1).fit()
    j, w = out / "epoch-001.json", out / "epoch-001.safetensors"
    json_bytes, weights = j.read_bytes(), w.read_bytes()
    errors = accepted = 0
    for label, jb, wb in mutations(json_bytes, weights, seed=1):
        j.write_bytes(jb)
        w.write_bytes(wb)
        try:
            _trainer(out, epochs=1).restore()
            accepted += 1
        except CheckpointError as exc:
            assert "epoch-001" in str(exc) and "\n" not in str(exc), label
            errors += 1
    assert errors > 150 and accepted > 10, (errors, accepted)
