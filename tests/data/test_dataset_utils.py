"""Datasets, samplers and default_collate against torch.utils.data (same code on both)."""
import collections
import warnings

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import divenet as dn
import divenet.data as dd
import divenet.utils.data as dud


def as_np(x):
    if isinstance(x, torch.Tensor):
        return x.numpy()
    return x.numpy() if isinstance(x, dn.Tensor) else np.asarray(x)


# ---- datasets ---------------------------------------------------------------------------------------

def test_tensor_dataset_items_match_torch():
    x = np.arange(24, dtype=np.float32).reshape(6, 2, 2)
    y = np.arange(6) % 3
    ours = dd.TensorDataset(dn.tensor(x), dn.tensor(y))
    theirs = tud.TensorDataset(torch.tensor(x), torch.tensor(y))
    assert len(ours) == len(theirs) == 6
    for i in (0, 3, -1):
        a, b = ours[i], theirs[i]
        assert isinstance(a, tuple) and len(a) == len(b) == 2
        for u, v in zip(a, b):
            assert isinstance(u, dn.Tensor)
            np.testing.assert_array_equal(u.numpy(), v.numpy())
            assert u.dtype == v.numpy().dtype
    ones = dd.TensorDataset(np.ones((3, 2), np.float32))  # NumPy arrays too
    assert len(ones) == 3 and ones[1][0].shape == (2,)


def test_tensor_dataset_errors():
    with pytest.raises(ValueError, match=r"TensorDataset: size mismatch between tensors: first dimensions \[3, 2\]"):
        dd.TensorDataset(dn.ones(3), dn.ones(2))
    with pytest.raises(AssertionError):  # PyTorch rejects it too
        tud.TensorDataset(torch.ones(3), torch.ones(2))
    with pytest.raises(TypeError, match="TensorDataset: each argument must be a Tensor or NumPy array"):
        dd.TensorDataset([1, 2, 3])


def test_subset_and_concat_match_torch():
    base = list(range(100, 110))
    for mod in (dd, tud):
        sub = mod.Subset(base, [7, 2, 5])
        assert len(sub) == 3 and [sub[i] for i in range(3)] == [107, 102, 105] and sub[-1] == 105
    cats = [mod.ConcatDataset([list(range(3)), list(range(10, 15)), [], list(range(20, 22))])
            for mod in (dd, tud)]
    assert cats[0].cumulative_sizes == cats[1].cumulative_sizes
    assert len(cats[0]) == len(cats[1]) == 10
    for i in range(-10, 10):
        assert cats[0][i] == cats[1][i]
    for mod in (dd, tud):
        with pytest.raises(ValueError, match="absolute value of index"):
            mod.ConcatDataset([list(range(3))])[-4]
    with pytest.raises(IndexError):
        cats[0][10]
    with pytest.raises(ValueError, match="ConcatDataset: datasets should not be an empty iterable"):
        dd.ConcatDataset([])


def test_dataset_base_class_and_add():
    class Squares(dd.Dataset):
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            return i * i

    both = Squares(3) + Squares(2)
    assert isinstance(both, dd.ConcatDataset)
    assert [both[i] for i in range(len(both))] == [0, 1, 4, 0, 1]
    with pytest.raises(NotImplementedError):
        dd.Dataset()[0]


@pytest.mark.parametrize("n, lengths", [
    (10, [3, 7]), (10, [0.3, 0.7]), (10, [0.33, 0.33, 0.34]), (7, [0.5, 0.5]), (11, [0.1, 0.2, 0.7]),
    (5, [1 / 3, 1 / 3, 1 / 3]), (100, [0.8, 0.1, 0.1]), (3, [0.1, 0.9]),
])
def test_random_split_lengths_match_torch(n, lengths):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both warn about an empty split
        ours = dd.random_split(list(range(n)), lengths, generator=0)
        theirs = tud.random_split(list(range(n)), lengths, generator=torch.Generator().manual_seed(0))
    assert [len(s) for s in ours] == [len(s) for s in theirs]
    assert all(isinstance(s, dd.Subset) for s in ours)
    seen = [x for s in ours for x in (s[i] for i in range(len(s)))]
    assert sorted(seen) == list(range(n))  # disjoint, and together the whole dataset


def test_random_split_is_seeded():
    def split(gen):
        return [list(s.indices) for s in dd.random_split(range(50), [20, 30], generator=gen)]

    assert split(3) == split(3) == split(np.random.default_rng(3))
    assert split(3) != split(4)
    dn.manual_seed(9)
    a = split(None)
    dn.manual_seed(9)
    assert split(None) == a
    assert split(3) != list(map(sorted, split(3)))  # shuffled, not slices of range


@pytest.mark.parametrize("lengths", [[3, 3], [0.5, 0.6], [0.5, 0.4]])
def test_random_split_errors_like_torch(lengths):
    with pytest.raises(ValueError):
        tud.random_split(range(10), lengths)
    with pytest.raises(ValueError, match="random_split: "):
        dd.random_split(range(10), lengths)


def test_random_split_rejects_negative_lengths():  # PyTorch accepts [-1, 11] and slices oddly
    with pytest.raises(ValueError, match=r"random_split: lengths must be non-negative integers or fractions, got \[-1, 11\]"):
        dd.random_split(range(10), [-1, 11])


def test_random_split_rejects_bad_generator():
    with pytest.raises(TypeError, match="random_split: generator must be a numpy.random.Generator"):
        dd.random_split(range(4), [2, 2], generator="x")


# ---- samplers -----------------------------------------------------------------------------------------

def test_sequential_sampler_matches_torch():
    assert list(dd.SequentialSampler(range(7))) == list(tud.SequentialSampler(range(7)))
    assert len(dd.SequentialSampler(range(7))) == 7


@pytest.mark.parametrize("num_samples", [None, 3, 10, 25])
def test_random_sampler_counts_match_torch(num_samples):
    for replacement in (False, True):
        ours = list(dd.RandomSampler(range(10), replacement, num_samples, generator=1))
        theirs = list(tud.RandomSampler(range(10), replacement, num_samples))
        assert len(ours) == len(theirs) == len(dd.RandomSampler(range(10), replacement, num_samples))
        assert all(isinstance(i, int) and 0 <= i < 10 for i in ours)
        if not replacement:  # whole permutations, then part of one: the same counts as PyTorch
            assert sorted(np.bincount(ours, minlength=10)) == sorted(np.bincount(theirs, minlength=10))
            assert len(set(ours[:10])) == min(10, len(ours))


def test_random_sampler_reshuffles_and_is_seeded():
    s = dd.RandomSampler(range(30), generator=np.random.default_rng(0))
    a, b = list(s), list(s)
    assert sorted(a) == sorted(b) == list(range(30)) and a != b
    assert list(dd.RandomSampler(range(30), generator=np.random.default_rng(0))) == a


def test_subset_random_sampler():
    idx = [3, 8, 11, 20]
    s = dd.SubsetRandomSampler(idx, generator=0)
    assert len(s) == 4 and sorted(s) == idx == sorted(tud.SubsetRandomSampler(idx))


def test_weighted_random_sampler():
    w = [0.0, 1.0, 3.0, 0.0]
    draws = list(dd.WeightedRandomSampler(w, 4000, generator=0))
    counts = np.bincount(draws, minlength=4)
    assert counts[0] == counts[3] == 0 and 2.6 < counts[2] / counts[1] < 3.4
    once = list(dd.WeightedRandomSampler(w, 2, replacement=False, generator=0))
    assert sorted(once) == [1, 2]
    assert len(dd.WeightedRandomSampler(w, 7)) == len(tud.WeightedRandomSampler(w, 7)) == 7


@pytest.mark.parametrize("n, bs, drop", [(10, 3, False), (10, 3, True), (9, 3, True), (2, 5, False),
                                          (2, 5, True), (0, 2, False)])
def test_batch_sampler_matches_torch(n, bs, drop):
    ours = dd.BatchSampler(dd.SequentialSampler(range(n)), bs, drop)
    theirs = tud.BatchSampler(tud.SequentialSampler(range(n)), bs, drop)
    assert list(ours) == list(theirs) and len(ours) == len(theirs)


@pytest.mark.parametrize("make, exc", [
    (lambda m: m.RandomSampler(range(3), replacement=1), TypeError),
    (lambda m: m.RandomSampler(range(3), num_samples=0), ValueError),
    (lambda m: m.BatchSampler(range(3), 0, False), ValueError),
    (lambda m: m.BatchSampler(range(3), 2, 1), ValueError),
    (lambda m: m.WeightedRandomSampler([1.0, 2.0], 0), ValueError),
    (lambda m: m.WeightedRandomSampler([1.0, 2.0], 2, replacement=1), ValueError),
    (lambda m: m.WeightedRandomSampler([[1.0, 2.0]], 2), ValueError),
])
def test_sampler_errors_like_torch(make, exc):
    with pytest.raises(exc) as theirs:
        make(tud)
    with pytest.raises(exc) as ours:
        make(dd)
    head = str(theirs.value).split(" ")[0]  # the argument PyTorch names
    assert head in str(ours.value)


# ---- default_collate -----------------------------------------------------------------------------------

def same(ours, theirs, where="batch"):
    """The structure, types, dtypes and values of divenet's batch equal PyTorch's."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, dn.Tensor), where
        assert ours.dtype == theirs.numpy().dtype and ours.shape == tuple(theirs.shape), where
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=where)
    elif isinstance(theirs, dict):
        assert type(ours) is type(theirs) and list(ours) == list(theirs), where
        for k in theirs:
            same(ours[k], theirs[k], f"{where}[{k!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            same(a, b, f"{where}[{i}]")
    else:
        assert ours == theirs, where


Point = collections.namedtuple("Point", "x y")


@pytest.mark.parametrize("samples", [
    [1, 2, 3],
    [1.5, 2.0],
    [True, False],
    [np.float32(1), np.float32(2)],
    [np.int32(4), np.int32(5)],
    ["a", "b"],
    [np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)],
    [(np.ones(2, np.float32), 1), (np.zeros(2, np.float32), 0)],
    [[1, "x"], [2, "y"]],
    [{"img": np.ones(2, np.uint8), "label": 3, "meta": {"id": 1.5}},
     {"img": np.zeros(2, np.uint8), "label": 4, "meta": {"id": 2.5}}],
    [collections.OrderedDict(a=1), collections.OrderedDict(a=2)],
    [Point(1, 2.0), Point(3, 4.0)],
])
def test_default_collate_matches_torch(samples):
    same(dd.default_collate(samples), tud.default_collate(samples))


def test_default_collate_stacks_tensors():
    ours = dd.default_collate([dn.tensor([1.0, 2.0]), dn.tensor([3.0, 4.0])])
    theirs = tud.default_collate([torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])])
    same(ours, theirs)


@pytest.mark.parametrize("samples", [[None, None], [np.array(["a"]), np.array(["b"])], [object()]])
def test_default_collate_type_errors_like_torch(samples):
    with pytest.raises(TypeError, match="default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists"):
        tud.default_collate(samples)
    with pytest.raises(TypeError, match="default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists"):
        dd.default_collate(samples)


def test_default_collate_unequal_sequences():
    with pytest.raises(RuntimeError, match="each element in list of batch should be of equal size"):
        tud.default_collate([[1, 2], [1]])
    with pytest.raises(ValueError, match="each element in list of batch should be of equal size"):
        dd.default_collate([[1, 2], [1]])


# ---- divenet.utils.data mirrors torch.utils.data ----------------------------------------------------

def test_utils_data_has_torch_names():
    names = ["DataLoader", "Dataset", "TensorDataset", "Subset", "ConcatDataset", "random_split",
             "Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler",
             "WeightedRandomSampler", "BatchSampler", "default_collate", "get_worker_info"]
    for name in names:
        assert hasattr(tud, name)
        assert getattr(dud, name) is getattr(dd, name)
    assert set(names) <= set(dud.__all__)
    import divenet.utils

    assert divenet.utils.data is dud
