"""Training through ``dn.compile``: ``divenet train --compile [--recompute sqrt|N]
[--memory-budget BYTES]`` and ``Trainer(compile=...)``. A compiled run is eager's run bit for
bit (the replay runs eager's kernels in eager's order): losses, accuracies, weights and
optimizer state; it resumes without ``--compile`` and an eager run resumes with it; the
epoch's smaller last batch is traced once, without a warning; DistributedDataParallel's
reducer still fires under the compiled backward (in one process, and under mpirun); bad values
are one-line errors."""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import divenet as dn
from divenet import nn, optim
from divenet.cli import byte_size, main
from divenet.compile import CompiledModule, RecompileWarning
from divenet.data import ArrayDataset, DataLoader
from divenet.distributed import Communicator, DistributedDataParallel
from divenet.distributed.comm import Work
from divenet.io import load_checkpoint
from divenet.train import Trainer
from tests.distributed.mpi import divenet_cmd, mpirun, needs_mpi

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_data = pytest.mark.skipif(not FMNIST.exists(), reason="apt-get install dataset-fashion-mnist")
TIMED = ("epoch_seconds", "examples_per_sec")


def _train(out, *extra):
    # 300 examples in batches of 64: the last batch (44) is a second signature every epoch
    return main(["train", "lenet", "--limit", "300", "--batch-size", "64", "--quiet", "--out", str(out), *extra])


def _rows(out):
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMED} for r in rows]


def _assert_same_checkpoint(a, b):
    """The same state_dict keys and bit-equal weights, optimizer slots and saved settings."""
    meta_a, model_a, optim_a = load_checkpoint(a)
    meta_b, model_b, optim_b = load_checkpoint(b)
    assert sorted(model_a) == sorted(model_b)
    for key in model_a:
        np.testing.assert_array_equal(model_a[key], model_b[key], err_msg=key)
    assert sorted(optim_a["state"]) == sorted(optim_b["state"])
    for key in optim_a["state"]:
        np.testing.assert_array_equal(optim_a["state"][key], optim_b["state"][key], err_msg=key)
    assert meta_a["args"] == meta_b["args"]


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    """The reference: an eager run of 3 epochs (keeps the checkpoints of epochs 2 and 3)."""
    out = tmp_path_factory.mktemp("eager") / "run"
    assert _train(out, "--epochs", "3") == 0
    return out


@needs_data
def test_compiled_run_with_recompute_is_eager_bit_for_bit_and_resumes_eagerly(eager, tmp_path, capsys):
    out = tmp_path / "compiled"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _train(out, "--epochs", "2", "--compile", "--recompute", "2") == 0
    # the last batch's retrace is expected: not reported (each epoch would repeat nothing, but
    # even the first is noise the user cannot act on)
    assert not [w for w in caught if issubclass(w.category, RecompileWarning)]
    assert "compiled" in capsys.readouterr().out
    ref = _rows(eager)
    assert _rows(out) == ref[:2]  # measured: bitwise, so compared with ==
    _assert_same_checkpoint(out / "epoch-002.json", eager / "epoch-002.json")
    # evaluate reads the compiled run's checkpoint as any other
    assert main(["evaluate", str(out / "epoch-002.json"), "--limit", "300"]) == 0
    assert json.loads(capsys.readouterr().out)["test_loss"] == round(ref[1]["test_loss"], 6)
    # --compile is not a saved setting: the run continues eagerly, ending where eager ends
    assert _train(out, "--epochs", "3", "--resume") == 0
    assert _rows(out) == ref
    _assert_same_checkpoint(out / "epoch-003.json", eager / "epoch-003.json")


@needs_data
def test_eager_run_resumes_compiled_under_a_memory_budget(eager, tmp_path, monkeypatch):
    import divenet.compile

    seen = []
    real = divenet.compile.compile

    def spy(model, **options):
        seen.append(options)
        return real(model, **options)

    monkeypatch.setattr(divenet.compile, "compile", spy)
    out = tmp_path / "run"
    assert _train(out, "--epochs", "1") == 0
    assert seen == []
    # --memory-budget alone implies --compile; 0 bytes: every segment but the last recomputed
    assert _train(out, "--epochs", "3", "--resume", "--memory-budget", "0") == 0
    assert seen == [{"recompute": None, "memory_budget": 0}]
    assert _rows(out) == _rows(eager)
    _assert_same_checkpoint(out / "epoch-003.json", eager / "epoch-003.json")


@needs_data
@needs_mpi
def test_distributed_compiled_run_trains_as_one_process(eager, tmp_path):
    out = tmp_path / "run"
    argv = [*divenet_cmd(), "train", "lenet", "--limit", "300", "--batch-size", "64", "--quiet", "--out", str(out),
            "--epochs", "1", "--distributed", "--compile", "--recompute", "2"]
    proc, _ = mpirun(2, argv, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ", compiled" in proc.stdout and "RecompileWarning" not in proc.stderr
    # each rank's batches are halves of the one process's (32 of 64, the last 22 of 44): the
    # same steps up to float32 rounding (test_train.py in tests/distributed measures this)
    (row,), ref = _rows(out), _rows(eager)[0]
    for key in ("train_loss", "test_loss"):
        assert row[key] == pytest.approx(ref[key], rel=2e-5), key
    for key in ("train_acc", "test_acc"):
        assert abs(row[key] - ref[key]) <= 1 / 300, key


# ---- the Trainer ----------------------------------------------------------------------------------
def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.standard_normal((n, 1, 6, 6)) + y[:, None, None, None]).astype(np.float32)
    return x, y


def _model():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(36, 3))


def _fit(device, loader, compile=None, test=None, make=_model, wrap=None):
    """Two epochs from the same initial weights; (trainer, history without timings, the plain
    model, the RecompileWarnings' messages)."""
    dn.manual_seed(0)
    model = make().to(device)
    trainer = Trainer(model if wrap is None else wrap(model), optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                      loader, test, epochs=2, progress=False, log=lambda s: None, compile=compile)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = trainer.fit()
    recompiles = [str(w.message) for w in caught if issubclass(w.category, RecompileWarning)]
    return trainer, [{k: v for k, v in r.items() if k not in TIMED} for r in history], model, recompiles


def test_trainer_compiled_equals_eager_and_traces_the_last_batch_once(device):
    loader = DataLoader(ArrayDataset(*_data(40)), 16, shuffle=True, seed=1, device=device)  # 16, 16, 8
    test = DataLoader(ArrayDataset(*_data(20, 1)), 16, device=device)
    _, ref, ref_model, _ = _fit(device, loader, test=test)
    for option in (True, {"recompute": "sqrt"}):
        trainer, rows, model, recompiles = _fit(device, loader, compile=option, test=test)
        assert isinstance(trainer.model, CompiledModule) and trainer._plain_model() is model
        assert rows == ref
        for (name, p), q in zip(model.state_dict().items(), ref_model.state_dict().values()):
            np.testing.assert_array_equal(p, q, err_msg=name)
        # two training signatures (16 and the last 8), each traced once over both epochs; the
        # plain model evaluates, so no eval graphs; the expected last-batch retrace is silent
        assert trainer.model.traces == 2 and len(trainer.model.graphs) == 2
        assert recompiles == []


def test_trainer_warns_once_for_an_unexpected_signature():
    x, y = _data(21)
    batches = [[dn.tensor(x[i:j]), dn.tensor(y[i:j])] for i, j in ((0, 8), (8, 13), (13, 21))]
    trainer, rows, _, recompiles = _fit("cpu", batches, compile=True)  # 8, 5, 8: a change mid-epoch
    _, ref, _, _ = _fit("cpu", batches)
    assert rows == ref
    assert trainer.model.traces == 2
    assert len(recompiles) == 1 and "input 0 shape (8, 1, 6, 6) -> (5, 1, 6, 6)" in recompiles[0]


def test_trainer_compile_option_is_checked():
    model = _model()
    with pytest.raises(TypeError, match="compile must be True or a dict of dn.compile options, got 'sqrt'"):
        Trainer(model, optim.SGD(model.parameters(), lr=0.1), [], compile="sqrt")
    with pytest.raises(ValueError, match="recompute must be None, 'sqrt' or a number of segments"):
        Trainer(model, optim.SGD(model.parameters(), lr=0.1), [], compile={"recompute": 0})


class _TwoSameRanks(Communicator):
    """Two ranks holding the same data, in one process: a sum is twice the local value, so
    DistributedDataParallel's average is the local gradient."""
    size = 2

    def iallreduce(self, array, op="sum"):
        array *= 2
        return Work(None, self, "allreduce")


class _Reused(nn.Module):
    """Each weight used twice in a forward: two gradient contributions per parameter."""

    def __init__(self):
        self.a, self.b = nn.Linear(36, 8), nn.Linear(8, 3)

    def forward(self, x):
        x = x.reshape(x.shape[0], -1)
        return self.b(dn.relu(self.a(x))) + self.b(dn.tanh(self.a(x * 0.5)))


@pytest.mark.parametrize("make", [_model, _Reused])
def test_distributed_data_parallel_reduces_under_the_compiled_backward(make):
    loader = DataLoader(ArrayDataset(*_data(40)), 16, shuffle=True, seed=1)
    _, ref, ref_model, _ = _fit("cpu", loader, make=make)
    trainer, rows, model, _ = _fit("cpu", loader, compile=True, make=make,
                                   wrap=lambda m: DistributedDataParallel(m, _TwoSameRanks()))
    ddp = trainer.model
    assert isinstance(ddp, DistributedDataParallel) and isinstance(ddp.module, CompiledModule) and trainer._plain_model() is model
    assert ddp.module.traces == 2
    # every step's buckets were reduced (a hook that did not fire leaves a bucket pending, and
    # the next forward raises), and the averaged gradients are the local ones: eager's run
    assert ddp.comm_stats()["steps"] == 2 * len(loader)
    assert rows == ref
    for (name, p), q in zip(model.state_dict().items(), ref_model.state_dict().values()):
        np.testing.assert_array_equal(p, q, err_msg=name)


# ---- the command line -----------------------------------------------------------------------------
@pytest.mark.parametrize("argv, option, message", [
    *[(["--recompute", v], "--recompute", f'must be "sqrt" or a positive number of segments, got {v}')
      for v in ("0", "-1", "foo", "1.5", "SQRT")],
    *[(["--memory-budget", v], "--memory-budget", f"must be a number of bytes >= 0, optionally with a K, M, G "
       f"or T suffix (powers of 1024), got {v}") for v in ("-1", "2X", "nan", "inf", "G")],
    # argparse takes -5M for an option, as it does -inf (test_cli_validation): written with =
    (["--memory-budget=-5M"], "--memory-budget", "must be a number of bytes >= 0"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_values_are_one_line_exit_2(argv, option, message, tmp_path, capsys, monkeypatch):
    from divenet.data import datasets

    monkeypatch.setattr(datasets, "search_dirs", lambda *a, **k: pytest.fail("loaded a data set"))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "lenet", "--compile", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"divenet train: error: argument {option}: {message}"), err
    assert not (tmp_path / "runs").exists()


def test_sizes_take_binary_suffixes():
    assert [byte_size(t) for t in ("1000", "0", "512M", "2G", "1.5GiB", "64kb", "1e9")] == \
        [1000, 0, 512 << 20, 2 << 30, 3 << 29, 64 << 10, 10 ** 9]


def test_help_lists_the_options(capsys):
    assert main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--compile" in out and "--recompute sqrt|N" in out and "--memory-budget BYTES" in out
    assert "implies --compile" in out
