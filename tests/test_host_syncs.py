"""No host sync and no upload inside a training step on a device, counted on the strict
simulated device ``sim`` (divenet/sim.py counts every read back and every host-to-device copy).

A step's numbers (loss, accuracy, the divergence check, the targets' range check) stay on the
device and are read at the log points only; so the count of an epoch is the same for 2 steps
as for 6, and any per-step read or upload shows as a difference.
"""
import sys

import numpy as np
import pytest

import divenet as dn
import divenet.functional as F
from divenet import nn, optim, sim
from divenet.data import ArrayDataset, DataLoader
from divenet.functional.loss import check_deferred
from divenet.models import get_model
from divenet.train import Trainer, TrainingDiverged, evaluate

SIM = dn.device("sim")
BATCH = 4


def _batches(k, size, classes=10, seed=0):
    """k batches already in device memory: the loader's uploads are not the step's."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((k * BATCH, 1, size, size)).astype(np.float32)
    y = rng.integers(0, classes, k * BATCH)
    return [[dn.tensor(x[i:i + BATCH], device=SIM), dn.tensor(y[i:i + BATCH], device=SIM)]
            for i in range(0, k * BATCH, BATCH)]


def _epoch_counts(name, size, k, **trainer_kw):
    """sync and upload counts of one training epoch of k steps (after a warm-up epoch that
    materializes lazy shapes and per-device caches), log points only at the epoch end."""
    dn.manual_seed(0)
    model = get_model(name)
    model.init(dn.zeros(2, 1, size, size))
    model.to(SIM)
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.01), _batches(1, size), epochs=1,
                      progress=False, log=lambda s: None, **trainer_kw)
    trainer.fit()
    trainer.train_loader = _batches(k, size, seed=1)
    with sim.counting() as counts:
        row = trainer.train_epoch(2)
    assert np.isfinite(row["train_loss"]) and 0 <= row["train_acc"] <= 1
    return counts["sync"], counts["upload"]


MODELS = [("lenet", 28), ("lenet-bn", 28), ("resnet18", 32)]


@pytest.mark.parametrize("name, size", MODELS)
def test_a_training_step_does_not_sync(name, size):
    two, six = _epoch_counts(name, size, 2), _epoch_counts(name, size, 6)
    assert two[0] == six[0], f"{name}: {(six[0] - two[0]) / 4:g} host syncs per step"
    # the epoch end: one transfer of the sums and the divergence record, one of the target check
    assert six[0] == 2


@pytest.mark.parametrize("name, size", MODELS)
def test_a_training_step_does_not_upload(name, size):
    two, six = _epoch_counts(name, size, 2), _epoch_counts(name, size, 6)
    assert two[1] == six[1] == 0, f"{name}: {(six[1] - two[1]) / 4:g} uploads per step"


def test_clipping_adds_no_sync_per_step():
    two, six = (_epoch_counts("lenet", 28, k, clip_grad=0.5) for k in (2, 6))
    assert two == six and six[0] == 2


def test_progress_lines_are_the_only_reads(capsys):
    """With progress lines (stderr not a terminal), each line is one log point: one read of
    the sums and one of the deferred target check; nothing in between."""
    dn.manual_seed(0)
    model = get_model("lenet")
    model.init(dn.zeros(2, 1, 28, 28))
    model.to(SIM)
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.01), _batches(20, 28), epochs=1,
                      progress=True, log=lambda s: None)
    with sim.counting() as counts:
        trainer.fit()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch 1/1  step")]
    assert 5 <= len(lines) <= 9
    assert counts["sync"] == 2 * (len(lines) + 1)


def _sim_linear_run(lr, batches, device=SIM, **kw):
    dn.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10)).to(device)
    return Trainer(model, optim.SGD(model.parameters(), lr=lr), batches, epochs=2, progress=False,
                   log=lambda s: None, **kw)


def _sim_random_labels(n=256, classes=10):
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.standard_normal((n, 1, 4, 4)).astype(np.float32), rng.integers(0, classes, n))
    return DataLoader(data, 32, device=SIM)


def test_divergence_on_a_device_is_caught_at_the_log_point_naming_its_step(tmp_path):
    # lr 1e6 on a linear model: the loss jumps from 2.6 to ~5e5 at step 2 (the CPU test's run)
    trainer = _sim_linear_run(1e6, _sim_random_labels(), out_dir=tmp_path)
    with pytest.raises(TrainingDiverged) as err:
        trainer.fit()
    msg = str(err.value)
    assert "\n" not in msg and "epoch 1, step 2 exceeds the bound" in msg
    first = trainer.first_loss
    assert first == pytest.approx(np.log(10), rel=0.3) and f"{100 * first:.4g}" in msg
    assert not list(tmp_path.glob("epoch-*"))
    history = _sim_linear_run(1e6, _sim_random_labels(), divergence_check=False).fit()
    assert len(history) == 2 and history[-1]["train_loss"] > 1e4


def test_a_non_finite_loss_on_a_device_names_its_step(tmp_path):
    class Exploding(nn.Module):
        def __init__(self):
            self.lin = nn.Linear(16, 10)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            out = self.lin(x.flatten(1))
            return out * float("nan") if self.calls == 3 else out

    model = Exploding().to(SIM)
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1), _sim_random_labels(), epochs=2,
                      out_dir=tmp_path, progress=False, log=lambda s: None)
    with pytest.raises(TrainingDiverged, match="loss is nan at epoch 1, step 3;"):
        trainer.fit()
    assert not list(tmp_path.glob("epoch-*"))


def test_device_and_cpu_epochs_report_the_same_numbers():
    cpu = _sim_linear_run(0.1, DataLoader(_sim_random_labels().dataset, 32), device="cpu").fit()
    on_sim = _sim_linear_run(0.1, _sim_random_labels()).fit()
    for a, b in zip(cpu, on_sim):
        assert a["train_acc"] == b["train_acc"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


def test_evaluate_reads_once_whatever_the_number_of_batches():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).to(SIM)
    counts = []
    for k in (2, 5):
        batches = _batches(k, 28)
        with sim.counting() as c:
            ours = evaluate(model, batches)
        counts.append(c["sync"])
        cpu_model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
        cpu_model.load_state_dict(model.state_dict())
        ref = evaluate(cpu_model, [[x.to("cpu"), y.to("cpu")] for x, y in batches])
        assert ours["acc"] == ref["acc"] and ours["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    assert counts[0] == counts[1] == 2


# ---- argument checks made without a sync ----------------------------------------------------------

def test_cross_entropy_target_check_on_a_device_is_deferred_and_then_raised():
    x = dn.tensor(np.zeros((3, 4), np.float32), device=SIM)
    good, bad = (dn.tensor(np.array(v), device=SIM) for v in ([0, 3, -100], [0, 4, 1]))
    with sim.counting() as counts:
        F.cross_entropy(x, good)
        F.cross_entropy(x, bad)  # no error yet: asking would be a sync
        F.cross_entropy(x, good)
    assert (counts["sync"], counts["upload"]) == (0, 0)
    with pytest.raises(ValueError, match=r"cross_entropy: target values must be in \[0, 4\) .* "
                                         r"ignore_index=-100\); a batch on sim had targets out of range"):
        check_deferred()
    check_deferred()  # reported once
    F.cross_entropy(x, good)
    check_deferred()  # a good batch alone raises nothing
    with pytest.raises(ValueError, match=r"target values must be in \[0, 4\)"):  # the CPU: at once
        F.cross_entropy(dn.tensor(np.zeros((3, 4), np.float32)), dn.tensor([0, 4, 1]))


def test_bad_targets_on_a_device_stop_the_trainer_at_the_epoch_end():
    batches = _batches(3, 4)
    batches[1][1] = dn.tensor(np.array([1, -3, 2, 0]), device=SIM)  # -3: neither a class nor ignored
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10)).to(SIM)
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1), batches, epochs=1, progress=False,
                      log=lambda s: None)
    with pytest.raises(ValueError, match=r"cross_entropy: target values must be in \[0, 10\)"):
        trainer.fit()


def test_all_ignored_targets_on_a_device_give_nan_as_torch():
    x = dn.tensor(np.ones((2, 3), np.float32), device=SIM, requires_grad=True)
    loss = F.cross_entropy(x, dn.tensor(np.array([-100, -100]), device=SIM))
    assert np.isnan(loss.item())
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((2, 3), np.float32))


def test_embedding_index_check_on_a_device_is_deferred():
    w = dn.tensor(np.arange(12, dtype=np.float32).reshape(6, 2), device=SIM)
    good, bad = (dn.tensor(np.array(v), device=SIM) for v in ([[0, 5], [2, 1]], [-1, 0]))
    with sim.counting() as counts:
        out = F.embedding(good, w)
        F.embedding(bad, w)  # a GPU wraps -1 (and 6) around
    assert (counts["sync"], counts["upload"]) == (0, 0)
    np.testing.assert_array_equal(out.numpy()[0, 1], [10, 11])
    with pytest.raises(ValueError, match=r"embedding: indices must be in \[0, 6\) for weight \(6, 2\); "
                                         r"a call on sim had indices out of range"):
        check_deferred()


# ---- random numbers drawn on the device -----------------------------------------------------------

def _draws(device):
    return [dn.rand(3, 4, device=device), dn.randn(5, device=device), dn.randint(0, 7, (6,), device=device),
            dn.randperm(9, device=device), dn.normal(1.0, 2.0, size=(4,), device=device)]


def test_random_tensors_are_drawn_in_device_memory_and_reproducible():
    dn.manual_seed(5)
    with sim.counting() as counts:
        first = _draws(SIM)
    assert counts["upload"] == 0
    assert all(isinstance(t.array, sim.SimArray) for t in first)
    dn.manual_seed(5)
    again = _draws(SIM)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert sorted(first[3].numpy().tolist()) == list(range(9)) and first[2].dtype == np.int64
    assert 0 <= first[0].numpy().min() and first[0].numpy().max() < 1 and first[0].dtype == np.float32
    dn.manual_seed(6)
    assert not np.array_equal(_draws(SIM)[0].numpy(), first[0].numpy())


def test_cpu_streams_are_unchanged_and_untouched_by_device_draws():
    dn.manual_seed(3)
    ref = np.random.default_rng(3)
    np.testing.assert_array_equal(dn.randn(4, 5).numpy(), ref.standard_normal((4, 5), dtype=np.float32))
    _draws(SIM)  # a device's draws do not advance the CPU generator
    np.testing.assert_array_equal(dn.rand(7).numpy(), ref.random(7, dtype=np.float32))


def test_set_state_restarts_the_device_stream_reproducibly():
    dn.manual_seed(1)
    dn.randn(3)
    state = dn.random.get_state()
    a = dn.randn(8, device=SIM).numpy()
    dn.random.set_state(state)
    np.testing.assert_array_equal(dn.randn(8, device=SIM).numpy(), a)


def test_dropout_and_init_on_a_device_draw_there():
    x = dn.ones(64, 50, device=SIM)
    dn.manual_seed(2)
    with sim.counting() as counts:
        a = F.dropout(x, 0.5)
        w = nn.init.kaiming_uniform_(dn.zeros(8, 4, device=SIM), a=5 ** 0.5)
        nn.init.normal_(w)
        nn.init.constant_(w, 0.5)
    assert counts["upload"] == 0 and counts["sync"] == 0
    assert isinstance(a.array, sim.SimArray) and isinstance(w.array, sim.SimArray)
    np.testing.assert_array_equal(w.numpy(), np.full((8, 4), 0.5, np.float32))
    kept = a.numpy() != 0
    assert 0.4 < kept.mean() < 0.6 and np.all(a.numpy()[kept] == 2.0)
    dn.manual_seed(2)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), a.numpy())


# ---- the loader's copies happen in its prefetch thread ----------------------------------------------

def test_prefetched_batches_arrive_in_device_memory_without_uploads_by_the_consumer():
    n, batch = 40, 8
    images = np.arange(n * 16, dtype=np.float32).reshape(n, 1, 4, 4)
    loader = DataLoader(ArrayDataset(images, np.arange(n)), batch, device=SIM, prefetch=n // batch)
    before = sim.counts()["upload"]
    it = iter(loader)
    it._thread.join(timeout=30)  # the queue holds every batch: the thread is done
    assert not it._thread.is_alive()
    assert sim.counts()["upload"] - before == 2 * (n // batch)  # images and labels, in the thread
    with sim.counting() as counts:
        got = list(it)
    assert counts["upload"] == 0 and counts["sync"] == 0
    assert len(got) == n // batch
    for x, y in got:
        assert isinstance(x.array, sim.SimArray) and isinstance(y.array, sim.SimArray)
        assert x.device == SIM and y.device == SIM
    np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in got]), images)


def test_the_consumer_uploads_without_a_prefetch_thread():
    """The counterpart: prefetch=0 copies in the loop (so the test above measures the thread)."""
    loader = DataLoader(ArrayDataset(np.zeros((16, 1, 2, 2), np.float32), np.arange(16)), 8, device=SIM,
                        prefetch=0)
    with sim.counting() as counts:
        list(loader)
    assert counts["upload"] == 4


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
