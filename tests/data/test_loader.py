import threading
import time

import numpy as np
import pytest

import divenet as dn
from divenet.data import ArrayDataset, DataLoader, Normalize, RandomHorizontalFlip, Resize


def indexed(n, size=4):
    """Images whose every pixel is the sample's index; labels are the index too."""
    images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, 1, size, size)).copy()
    return ArrayDataset(images, np.arange(n))


class Generic:
    """A dataset with only __len__ and __getitem__."""

    def __init__(self, n, fail_at=None):
        self.n, self.fail_at = n, fail_at

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.fail_at:
            raise RuntimeError(f"boom at {i}")
        return np.full((1, 3, 3), i, np.float32), i


def loader_threads():
    return [t for t in threading.enumerate() if t.name == "divenet-DataLoader"]


def wait_for_no_loader_threads(baseline):
    deadline = time.monotonic() + 5
    while (loader_threads() or threading.active_count() != baseline) and time.monotonic() < deadline:
        time.sleep(0.01)
    return threading.active_count()


def collect(loader):
    return [(x.numpy(), y.numpy()) for x, y in loader]


@pytest.mark.parametrize("prefetch", [0, 2])
def test_every_index_once_per_epoch(prefetch, device):
    loader = DataLoader(indexed(103), batch_size=10, shuffle=True, seed=1, prefetch=prefetch, device=device)
    assert len(loader) == 11
    batches = [(x, y) for x, y in loader]
    assert len(batches) == 11
    assert [len(y) for _, y in batches] == [10] * 10 + [3]
    x, y = batches[0]
    assert isinstance(x, dn.Tensor) and x.dtype == np.float32 and x.shape == (10, 1, 4, 4)
    assert y.dtype == np.int64 and y.shape == (10,)
    assert x.device == dn.device(device) and y.device == dn.device(device)
    labels = np.concatenate([y.numpy() for _, y in batches])
    np.testing.assert_array_equal(np.sort(labels), np.arange(103))
    assert not np.array_equal(labels, np.arange(103))  # shuffled
    for x, y in batches:  # images travel with their labels
        np.testing.assert_array_equal(x.numpy()[:, 0, 0, 0], y.numpy().astype(np.float32))


def test_drop_last():
    loader = DataLoader(indexed(103), batch_size=10, shuffle=True, drop_last=True, seed=2)
    assert len(loader) == 10
    labels = np.concatenate([y for _, y in collect(loader)])
    assert len(labels) == 100 and len(np.unique(labels)) == 100
    assert len(DataLoader(indexed(9), batch_size=10, drop_last=True)) == 0
    assert collect(DataLoader(indexed(9), batch_size=10, drop_last=True)) == []


def test_no_shuffle_keeps_order():
    labels = np.concatenate([y for _, y in collect(DataLoader(indexed(25), batch_size=7))])
    np.testing.assert_array_equal(labels, np.arange(25))


def test_order_depends_on_seed_and_epoch_only():
    def order(seed, epoch):
        loader = DataLoader(indexed(50), batch_size=8, shuffle=True, seed=seed)
        loader.set_epoch(epoch)
        return np.concatenate([y for _, y in collect(loader)])

    np.testing.assert_array_equal(order(5, 3), order(5, 3))
    assert not np.array_equal(order(5, 3), order(5, 4))
    assert not np.array_equal(order(5, 3), order(6, 3))
    # each iteration advances the epoch; set_epoch resumes at any epoch
    loader = DataLoader(indexed(50), batch_size=8, shuffle=True, seed=5)
    first = np.concatenate([y for _, y in collect(loader)])
    second = np.concatenate([y for _, y in collect(loader)])
    np.testing.assert_array_equal(first, order(5, 0))
    np.testing.assert_array_equal(second, order(5, 1))
    assert loader.epoch == 2
    np.testing.assert_array_equal(loader.order(1), second)


def test_seed_drawn_from_manual_seed():
    dn.manual_seed(42)
    a = DataLoader(indexed(10), shuffle=True).seed
    dn.manual_seed(42)
    b = DataLoader(indexed(10), shuffle=True).seed
    c = DataLoader(indexed(10), shuffle=True).seed
    assert a == b != c


@pytest.mark.parametrize("prefetch", [0, 3])
def test_random_transform_reproducible(prefetch):
    rng = np.random.default_rng(0)
    ds = ArrayDataset(rng.random((40, 1, 4, 4)).astype(np.float32), np.zeros(40, np.int64))

    def run(seed, pf):
        return collect(DataLoader(ds, batch_size=16, shuffle=True, seed=seed, prefetch=pf,
                                  transform=RandomHorizontalFlip()))

    a, b = run(3, prefetch), run(3, 0)
    for (xa, _), (xb, _) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
    assert any(not np.array_equal(xa, xb) for (xa, _), (xb, _) in zip(a, run(4, prefetch)))


def test_dataset_transform_applied_batchwise_and_loader_transform():
    ds = indexed(12, size=6)
    ds.transform = Normalize(1.0, 2.0)
    loader = DataLoader(ds, batch_size=5, transform=Resize(3))
    x, y = next(iter(loader))
    assert x.shape == (5, 1, 3, 3)
    np.testing.assert_allclose(x.numpy()[:, 0, 1, 1], (np.arange(5) - 1.0) / 2.0)


def test_non_batchable_dataset_transform_uses_generic_path():
    ds = indexed(6)
    calls = []

    def tf(img):
        assert img.shape == (1, 4, 4)  # one sample at a time
        calls.append(1)
        return img + 100

    ds.transform = tf
    x, y = next(iter(DataLoader(ds, batch_size=4, prefetch=0)))
    assert len(calls) == 4
    np.testing.assert_array_equal(x.numpy()[:, 0, 0, 0], np.arange(4) + 100)


def test_generic_dataset():
    loader = DataLoader(Generic(11), batch_size=4, shuffle=True, seed=0)
    batches = collect(loader)
    assert [x.shape for x, _ in batches] == [(4, 1, 3, 3)] * 2 + [(3, 1, 3, 3)]
    labels = np.concatenate([y for _, y in batches])
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(np.sort(labels), np.arange(11))
    for x, y in batches:
        np.testing.assert_array_equal(x[:, 0, 0, 0], y)


def test_early_break_stops_thread():
    baseline = threading.active_count()
    loader = DataLoader(indexed(200), batch_size=2, prefetch=2)
    for i, _ in enumerate(loader):
        if i == 0:
            assert len(loader_threads()) == 1
        if i == 2:
            break
    assert wait_for_no_loader_threads(baseline) == baseline
    assert not loader_threads()


def test_close_and_context_manager():
    baseline = threading.active_count()
    with iter(DataLoader(indexed(100), batch_size=1)) as it:
        next(it)
    assert wait_for_no_loader_threads(baseline) == baseline
    with pytest.raises(StopIteration):
        next(it)


def test_finished_epoch_leaves_no_thread():
    baseline = threading.active_count()
    it = iter(DataLoader(indexed(10), batch_size=3))
    assert len(list(it)) == 4
    assert threading.active_count() == baseline  # joined at StopIteration, `it` still alive


@pytest.mark.parametrize("prefetch", [0, 2])
def test_worker_exception_propagates(prefetch):
    baseline = threading.active_count()
    loader = DataLoader(Generic(20, fail_at=9), batch_size=4, prefetch=prefetch)
    seen = []
    with pytest.raises(RuntimeError, match="boom at 9") as e:
        for _, y in loader:
            seen.append(y.numpy())
    assert len(seen) == 2  # batches 0 and 1 arrived; batch 2 holds index 9
    if prefetch:
        assert any("prefetch thread, batch 2" in n for n in getattr(e.value, "__notes__", []))
    assert wait_for_no_loader_threads(baseline) == baseline


def test_transform_exception_in_fast_path_propagates():
    def bad(x):
        raise ValueError("bad transform")

    with pytest.raises(ValueError, match="bad transform"):
        next(iter(DataLoader(indexed(8), batch_size=4, transform=bad)))


def test_unstackable_samples():
    class Ragged(Generic):
        def __getitem__(self, i):
            return np.zeros((1, i + 1, 2), np.float32), i

    with pytest.raises(ValueError, match="DataLoader: cannot stack the samples of Ragged"):
        next(iter(DataLoader(Ragged(4), batch_size=4, prefetch=0)))


def test_argument_errors():
    with pytest.raises(ValueError, match="DataLoader: batch_size must be a positive integer, got 0"):
        DataLoader(indexed(4), batch_size=0)
    with pytest.raises(ValueError, match="DataLoader: prefetch must be a non-negative integer, got -1"):
        DataLoader(indexed(4), prefetch=-1)
    with pytest.raises(TypeError, match="DataLoader: dataset must have __len__ and __getitem__, got int"):
        DataLoader(3)
    with pytest.raises(ValueError, match="DataLoader.set_epoch: epoch must be a non-negative integer"):
        DataLoader(indexed(4)).set_epoch(-1)
