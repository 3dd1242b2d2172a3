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


# ---- PyTorch's arguments and semantics -----------------------------------------------------------

import multiprocessing  # noqa: E402

import torch  # noqa: E402
import torch.utils.data as tud  # noqa: E402

from divenet.data import (  # noqa: E402
    BatchSampler, RandomSampler, SequentialSampler, Subset, SubsetRandomSampler, TensorDataset,
    get_worker_info, random_split,
)


def both_loaders(n, **kw):
    x = np.arange(n * 6, dtype=np.float32).reshape(n, 1, 2, 3)
    y = np.arange(n) * 10
    ours = DataLoader(TensorDataset(dn.tensor(x), dn.tensor(y)), **kw)
    theirs = tud.DataLoader(tud.TensorDataset(torch.tensor(x), torch.tensor(y)), **kw)
    return ours, theirs


def assert_same_batches(ours, theirs):
    a, b = list(ours), list(theirs)
    assert len(a) == len(b) == len(ours) == len(theirs)
    for u, v in zip(a, b):
        assert type(u) is type(v) and len(u) == len(v)  # a list of (images, labels), as PyTorch's
        for s, t in zip(u, v):
            assert isinstance(s, dn.Tensor) and s.shape == tuple(t.shape) and s.dtype == t.numpy().dtype
            np.testing.assert_array_equal(s.numpy(), t.numpy())


@pytest.mark.parametrize("n, bs, drop", [(10, 3, False), (10, 3, True), (9, 3, False), (9, 3, True),
                                          (2, 5, False), (2, 5, True), (7, 1, False)])
def test_batches_match_torch_without_shuffle(n, bs, drop):
    assert_same_batches(*both_loaders(n, batch_size=bs, drop_last=drop))


def test_generic_path_matches_torch():
    class Samples:
        def __len__(self):
            return 7

        def __getitem__(self, i):
            return {"image": np.full((2, 2), i, np.float32), "label": i, "weight": i / 2,
                    "name": f"s{i}"}

    ours = DataLoader(Samples(), batch_size=3, prefetch=0)
    theirs = tud.DataLoader(Samples(), batch_size=3)
    for a, b in zip(ours, theirs):
        assert list(a) == list(b) and a["name"] == list(b["name"])
        for k in ("image", "label", "weight"):
            assert a[k].dtype == b[k].numpy().dtype
            np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())


def test_sampler_and_batch_sampler_match_torch():
    idx = [5, 1, 8, 2, 2]

    class Fixed(tud.Sampler):  # a plain iterable of indices works for both
        def __iter__(self):
            return iter(idx)

        def __len__(self):
            return len(idx)

    assert_same_batches(*both_loaders(10, batch_size=2, sampler=Fixed()))
    ours, _ = both_loaders(10, batch_size=2, sampler=Fixed())
    np.testing.assert_array_equal(ours.order(), idx)
    batches = [[0, 3], [9], [4, 4, 1]]
    assert_same_batches(*both_loaders(10, batch_sampler=batches))
    ours = DataLoader(indexed(10), batch_sampler=BatchSampler(SequentialSampler(range(10)), 4, True))
    assert len(ours) == 2 and [y.tolist() for _, y in collect(ours)] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_subset_random_sampler_visits_only_its_indices():
    keep = [1, 4, 6, 9]
    loader = DataLoader(indexed(12), batch_size=3, sampler=SubsetRandomSampler(keep, generator=0))
    assert len(loader) == 2
    assert sorted(np.concatenate([y for _, y in collect(loader)]).tolist()) == keep


def test_random_sampler_with_replacement_sizes():
    loader = DataLoader(indexed(5), batch_size=4, sampler=RandomSampler(range(5), True, 10, generator=1))
    assert [len(y) for _, y in collect(loader)] == [4, 4, 2]


def test_set_epoch_reaches_the_sampler():
    class Epochs(SequentialSampler):
        epochs = []

        def set_epoch(self, e):
            self.epochs.append(e)

    loader = DataLoader(indexed(4), sampler=Epochs(range(4)))
    loader.set_epoch(3)
    assert Epochs.epochs == [3]


@pytest.mark.parametrize("kwargs", [
    dict(num_workers=-1), dict(timeout=-1), dict(prefetch_factor=2), dict(persistent_workers=True),
    dict(sampler=SequentialSampler(range(4)), shuffle=True),
    dict(batch_sampler=[[0, 1]], batch_size=2), dict(batch_sampler=[[0, 1]], shuffle=True),
    dict(batch_sampler=[[0, 1]], sampler=SequentialSampler(range(4))),
    dict(batch_sampler=[[0, 1]], drop_last=True),
])
def test_nonsense_arguments_raise_like_torch(kwargs):
    with pytest.raises(ValueError) as theirs:
        tud.DataLoader(list(range(4)), **kwargs)
    with pytest.raises(ValueError) as ours:
        DataLoader(indexed(4), **kwargs)
    option = str(theirs.value).split(" option")[0]  # the option PyTorch names
    assert str(ours.value).startswith(f"DataLoader: {option} option")


def test_custom_collate_fn_and_its_errors():
    seen = []

    def collate(samples):
        seen.append(len(samples))
        return {"n": len(samples), "x": dn.tensor(np.stack([s[0] for s in samples]))}

    out = list(DataLoader(Generic(5), batch_size=2, collate_fn=collate, prefetch=0))
    assert seen == [2, 2, 1] and [b["n"] for b in out] == [2, 2, 1]
    assert out[0]["x"].shape == (2, 1, 3, 3)
    with pytest.raises(ValueError, match="DataLoader: transform= works with the default collate_fn"):
        DataLoader(Generic(5), collate_fn=collate, transform=Normalize(0.0, 1.0))
    with pytest.raises(TypeError, match="DataLoader: collate_fn 3 is not callable"):
        DataLoader(Generic(5), collate_fn=3)


def test_pin_memory_on_cpu_is_a_no_op():
    plain = collect(DataLoader(indexed(9), batch_size=4))
    pinned = collect(DataLoader(indexed(9), batch_size=4, pin_memory=True))
    for (a, b), (c, d) in zip(plain, pinned):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_subset_takes_the_fast_path():
    class NoItems(ArrayDataset):
        def __getitem__(self, i):
            raise AssertionError("the fast path takes batches from arrays()")

    images = np.arange(20, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 2, 2), np.float32)
    train, _ = random_split(NoItems(images, np.arange(20)), [0.6, 0.4], generator=0)
    inner = Subset(train, [5, 0, 3])
    for ds, want in ((train, train.indices), (inner, [train.indices[i] for i in (5, 0, 3)])):
        batches = collect(DataLoader(ds, batch_size=4))
        np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), want)
        np.testing.assert_array_equal(np.concatenate([x[:, 0, 0, 0] for x, _ in batches]), want)


# ---- worker processes ----------------------------------------------------------------------------

class Augmented(Generic):
    """A generic-path dataset with a random per-item transform drawn from divenet's generator."""

    def __getitem__(self, i):
        noise = dn.random.generator().random()
        return np.full((1, 2, 2), i + noise, np.float32), i


def no_worker_processes():
    deadline = time.monotonic() + 5
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.02)
    return not multiprocessing.active_children()


@pytest.mark.parametrize("shuffle", [False, True])
def test_workers_give_the_same_batches_in_order(shuffle):
    serial = collect(DataLoader(Generic(23), batch_size=4, shuffle=shuffle, seed=7))
    parallel = collect(DataLoader(Generic(23), batch_size=4, shuffle=shuffle, seed=7, num_workers=2))
    assert len(parallel) == len(serial) == 6
    for (a, b), (c, d) in zip(serial, parallel):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert no_worker_processes()


def test_workers_are_seeded_per_worker_and_epoch():
    def run(seed, epoch):
        loader = DataLoader(Augmented(12), batch_size=2, seed=seed, num_workers=2)
        loader.set_epoch(epoch)
        return np.concatenate([x[:, 0, 0, 0] for x, _ in collect(loader)])

    a = run(1, 0)
    np.testing.assert_array_equal(a, run(1, 0))
    assert not np.array_equal(a, run(1, 1)) and not np.array_equal(a, run(2, 0))
    frac = a - np.floor(a)
    assert len(np.unique(frac[0::4])) == 3  # worker 0's draws differ from batch to batch
    assert not np.allclose(frac[0::4], frac[2::4])  # and from worker 1's


def test_worker_init_fn_and_worker_info():
    assert get_worker_info() is None

    class Who(Generic):
        def __getitem__(self, i):
            info = get_worker_info()
            return np.zeros((1, 1, 1), np.float32), info.id * 100 + info.num_workers + getattr(info.dataset, "tag", 0)

    def init(wid):
        get_worker_info().dataset.tag = 10 * (wid + 1)

    labels = [y.tolist() for _, y in collect(DataLoader(Who(6), batch_size=2, num_workers=3, worker_init_fn=init))]
    assert labels == [[13, 13], [123, 123], [233, 233]]


def test_worker_exception_keeps_type_and_names_worker():
    loader = DataLoader(Generic(20, fail_at=9), batch_size=4, num_workers=2)
    seen = []
    with pytest.raises(RuntimeError, match="boom at 9") as e:
        for _, y in loader:
            seen.append(y.numpy())
    assert len(seen) == 2
    assert any("DataLoader worker process 0, batch 2" in n for n in e.value.__notes__)
    assert no_worker_processes()


def test_early_break_ends_workers():
    for i, _ in enumerate(DataLoader(Generic(200), batch_size=2, num_workers=2)):
        if i == 1:
            assert len(multiprocessing.active_children()) == 2
            break
    assert no_worker_processes()


def test_persistent_workers_serve_every_epoch():
    loader = DataLoader(Generic(10), batch_size=3, shuffle=True, seed=4, num_workers=2,
                        persistent_workers=True)
    first = collect(loader)
    pids = [p.pid for p in multiprocessing.active_children()]
    second = collect(loader)
    assert [p.pid for p in multiprocessing.active_children()] == pids and len(pids) == 2
    for got, epoch in ((first, 0), (second, 1)):
        np.testing.assert_array_equal(np.concatenate([y for _, y in got]), loader.order(epoch))
    old = iter(loader)
    next(iter(loader))
    with pytest.raises(RuntimeError, match="a newer iter\\(loader\\) took over the persistent workers"):
        next(old)
    del loader, old
    assert no_worker_processes()


def test_timeout_with_a_slow_worker():
    class Slow(Generic):
        def __getitem__(self, i):
            time.sleep(1)
            return super().__getitem__(i)

    with pytest.raises(RuntimeError, match="DataLoader: timed out after 0.2 seconds waiting for batch 0 from the worker processes"):
        next(iter(DataLoader(Slow(2), num_workers=1, timeout=0.2)))
    with pytest.raises(RuntimeError, match="DataLoader: timed out after 0.2 seconds waiting for batch 0 from the prefetch thread"):
        next(iter(DataLoader(Slow(2), timeout=0.2)))
    assert no_worker_processes()


def test_dead_worker_is_reported():
    import os

    class Dies(Generic):
        def __getitem__(self, i):
            os._exit(3)

    with pytest.raises(RuntimeError, match=r"DataLoader worker 0 \(pid \d+\) exited unexpectedly with exit code 3"):
        next(iter(DataLoader(Dies(4), batch_size=2, num_workers=1)))
