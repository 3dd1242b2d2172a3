"""DistributedSampler against torch.utils.data.DistributedSampler: the same lengths, padding,
drop_last and rank layout (exactly the same indices without shuffling; with shuffling the
permutations come from different generators, so the structure is compared)."""
from collections import Counter

import numpy as np
import pytest

from divenet.data import ArrayDataset, DataLoader
from divenet.distributed import DistributedSampler
from tests.helpers import assert_raises_naming

torch = pytest.importorskip("torch")
TorchSampler = torch.utils.data.DistributedSampler

CASES = [(n, k, drop) for n in (0, 1, 5, 10, 11, 12, 100) for k in (1, 2, 3, 4, 7) for drop in (False, True)]


def _both(n, k, r, shuffle, drop, seed=0):
    data = list(range(n))
    return (DistributedSampler(data, k, r, shuffle=shuffle, seed=seed, drop_last=drop),
            TorchSampler(data, k, r, shuffle=shuffle, seed=seed, drop_last=drop))


@pytest.mark.parametrize("n,k,drop", CASES)
def test_unshuffled_indices_are_torchs(n, k, drop):
    for r in range(k):
        ours, theirs = _both(n, k, r, False, drop)
        assert list(ours) == list(theirs)
        assert len(ours) == len(theirs) and ours.total_size == theirs.total_size


@pytest.mark.parametrize("n,k,drop", CASES)
def test_shuffled_structure_is_torchs(n, k, drop):
    ours = [_both(n, k, r, True, drop)[0] for r in range(k)]
    theirs = [_both(n, k, r, True, drop)[1] for r in range(k)]
    for o, t in zip(ours, theirs):
        o.set_epoch(3)
        t.set_epoch(3)
    got = [list(o) for o in ours]
    want = [list(t) for t in theirs]
    assert [len(g) for g in got] == [len(w) for w in want]
    counts, tcounts = Counter(i for g in got for i in g), Counter(i for w in want for i in w)
    assert sorted(counts.values()) == sorted(tcounts.values())  # padding repeats as torch's does
    assert set(counts) <= set(range(n))
    if drop:  # disjoint shares
        assert max(counts.values(), default=1) == 1
    else:  # every sample visited; only padding repeats
        assert set(counts) == set(range(n)) and sum(counts.values()) - n == ours[0].total_size - n


def test_epochs_reshuffle_and_repeat():
    s = DistributedSampler(list(range(50)), 2, 0, seed=4)
    s.set_epoch(1)
    first = list(s)
    s.set_epoch(2)
    assert list(s) != first
    s.set_epoch(1)
    assert list(s) == first
    other = DistributedSampler(list(range(50)), 2, 0, seed=5)
    other.set_epoch(1)
    assert list(other) != first


def test_one_replica_is_the_shuffled_loaders_order():
    """So rank r of R at step k trains on the samples of one process's batch k (docs)."""
    ds = ArrayDataset(np.zeros((40, 1, 2, 2), np.float32), np.arange(40))
    plain = DataLoader(ds, batch_size=8, shuffle=True, seed=9)
    for epoch in (1, 2):
        s = DistributedSampler(ds, 1, 0, seed=9)
        s.set_epoch(epoch)
        np.testing.assert_array_equal(s.indices(), plain.order(epoch))
        # two ranks with batch 4: step k's union is the plain loader's batch k
        shares = [DistributedSampler(ds, 2, r, seed=9) for r in range(2)]
        for sh in shares:
            sh.set_epoch(epoch)
        whole = plain.order(epoch)
        for k in range(5):
            union = set(shares[0].indices()[4 * k:4 * k + 4]) | set(shares[1].indices()[4 * k:4 * k + 4])
            assert union == set(whole[8 * k:8 * k + 8].tolist())


def test_dataloader_passes_set_epoch_on():
    ds = ArrayDataset(np.zeros((30, 1, 2, 2), np.float32), np.arange(30))
    sampler = DistributedSampler(ds, 3, 2, seed=1)
    loader = DataLoader(ds, batch_size=4, sampler=sampler)
    assert len(loader) == 3
    loader.set_epoch(5)
    assert sampler.epoch == 5
    labels = np.concatenate([y.numpy() for _, y in loader])
    np.testing.assert_array_equal(labels, sampler.indices())


def test_bad_arguments():
    data = list(range(10))
    assert_raises_naming(ValueError, lambda: DistributedSampler(data, 2, 2), "Invalid rank 2",
                         "[0, 1]")
    assert_raises_naming(ValueError, lambda: DistributedSampler(data, 2, -1), "Invalid rank -1")
    assert_raises_naming(ValueError, lambda: DistributedSampler(data, 0, 0), "num_replicas", "got 0")
    assert_raises_naming(TypeError, lambda: DistributedSampler(data, 2.0, 0), "num_replicas", "2.0")
    assert_raises_naming(TypeError, lambda: DistributedSampler(data, 2, 0, shuffle="yes"), "shuffle")
    assert_raises_naming(ValueError, lambda: DistributedSampler(data, 2, 0, seed=-1), "seed", "-1")
    assert_raises_naming(ValueError, lambda: DistributedSampler(data, 2, 0).set_epoch(-1), "epoch", "-1")
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedSampler(data)
