"""Loss modules (divenet/nn/loss.py) and the functional losses they use, against torch running
the same calls: values and gradients for every reduction, weights, ignore_index, label
smoothing, pos_weight; F.one_hot; errors."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import divenet as dn
import divenet.functional as F
from divenet import nn
from tests.helpers import assert_raises_naming, check_against_torch, numerical_grad_check

REDUCTIONS = ["mean", "sum", "none"]


def _randn(*shape, seed=0, scale=1.5):
    return np.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, dtype=np.float32)


def _uniform(*shape, seed=1, lo=0.0, hi=1.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


# ---- regression losses ---------------------------------------------------------------------------
PAIR_LOSSES = [
    ("mse_loss", {}), ("l1_loss", {}), ("huber_loss", {}), ("huber_loss", {"delta": 0.3}),
    ("smooth_l1_loss", {}), ("smooth_l1_loss", {"beta": 0.25}), ("smooth_l1_loss", {"beta": 0.0}),
]


@pytest.mark.parametrize("name,kw", PAIR_LOSSES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4), ()])
def test_pair_losses_match_torch(name, kw, reduction, shape, device):
    a, b = _randn(*shape), _randn(*shape, seed=2)
    check_against_torch(lambda x, y: getattr(F, name)(x, y, reduction=reduction, **kw),
                        lambda x, y: getattr(TF, name)(x, y, reduction=reduction, **kw),
                        [a, b], device=device)


@pytest.mark.parametrize("name,kw", PAIR_LOSSES[1:])
def test_pair_losses_broadcast_with_a_warning_like_torch(name, kw):
    a, b = _randn(3, 4), _randn(4, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_against_torch(lambda x, y: getattr(F, name)(x, y, **kw),
                            lambda x, y: getattr(TF, name)(x, y, **kw), [a, b])
    with pytest.warns(UserWarning, match="broadcast"):
        getattr(F, name)(dn.tensor(a), dn.tensor(b), **kw)


@pytest.mark.parametrize("name,kw", [("l1_loss", {}), ("huber_loss", {"delta": 0.7}),
                                     ("smooth_l1_loss", {"beta": 0.5})])
def test_pair_losses_numerical_gradient(name, kw):
    # values away from the kinks at |d| = 0 and |d| = delta, where the loss is not smooth
    a = np.array([[-2.0, -0.4, 0.3], [1.5, 0.9, -0.2]])
    b = np.array([[0.1, 0.2, -0.1], [0.05, 0.15, 0.6]])
    numerical_grad_check(lambda x, y: getattr(F, name)(x, y, reduction="none", **kw), [a, b])


def test_pair_loss_errors():
    x = dn.tensor(_randn(3, 4))
    assert_raises_naming(ValueError, lambda: F.l1_loss(x, dn.tensor(_randn(5))), "l1_loss", "(3, 4)", "(5,)")
    assert_raises_naming(TypeError, lambda: F.l1_loss(x, x.double()), "l1_loss", "float64")
    assert_raises_naming(ValueError, lambda: F.huber_loss(x, x, delta=0), "huber_loss", "delta", "0")
    assert_raises_naming(ValueError, lambda: F.smooth_l1_loss(x, x, beta=-1), "smooth_l1_loss", "beta", "-1")
    assert_raises_naming(ValueError, lambda: F.l1_loss(x, x, reduction="avg"), "l1_loss", "'avg'")


# ---- binary cross-entropy ------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pos_weighted", [False, True])
def test_bce_with_logits_matches_torch(reduction, weighted, pos_weighted, device):
    x, y = _randn(6, 4, scale=4.0), _uniform(6, 4)
    w = _uniform(4, seed=3, lo=0.5, hi=2.0) if weighted else None
    pw = _uniform(4, seed=4, lo=0.5, hi=3.0) if pos_weighted else None

    def run(lib, fn, x, y):
        t = (lambda a: dn.tensor(a, device=device)) if lib is dn else torch.tensor
        return fn(x, y, weight=None if w is None else t(w), reduction=reduction,
                  pos_weight=None if pw is None else t(pw))

    check_against_torch(lambda x, y: run(dn, F.binary_cross_entropy_with_logits, x, y),
                        lambda x, y: run(torch, TF.binary_cross_entropy_with_logits, x, y),
                        [x, y], device=device)


def test_bce_with_logits_is_stable_for_large_logits():
    x = np.array([-200.0, -50.0, 0.0, 50.0, 200.0], np.float32)
    y = np.array([1.0, 0.0, 0.5, 1.0, 0.0], np.float32)
    check_against_torch(lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction="none"),
                        lambda a, b: TF.binary_cross_entropy_with_logits(a, b, reduction="none"), [x, y])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_matches_torch(reduction, weighted, device):
    x, y = _uniform(5, 3, seed=5, lo=0.02, hi=0.98), _uniform(5, 3)
    w = _uniform(5, 1, seed=3, lo=0.5, hi=2.0) if weighted else None

    def run(lib, fn, x, y):
        t = (lambda a: dn.tensor(a, device=device)) if lib is dn else torch.tensor
        return fn(x, y, weight=None if w is None else t(w), reduction=reduction)

    check_against_torch(lambda x, y: run(dn, F.binary_cross_entropy, x, y),
                        lambda x, y: run(torch, TF.binary_cross_entropy, x, y), [x, y], device=device)


def test_bce_clamps_the_log_at_the_ends_like_torch():
    x = np.array([0.0, 1.0, 0.0, 1.0, 0.5], np.float32)
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0], np.float32)
    check_against_torch(lambda a, b: F.binary_cross_entropy(a, b, reduction="none"),
                        lambda a, b: TF.binary_cross_entropy(a, b, reduction="none"), [x, y],
                        grad_inputs=[])


def test_bce_numerical_gradients():
    x, y = _uniform(4, 3, seed=6, lo=0.1, hi=0.9).astype(np.float64), _uniform(4, 3).astype(np.float64)
    numerical_grad_check(lambda a, b: F.binary_cross_entropy(a, b, reduction="none"), [x, y])
    numerical_grad_check(lambda a, b: F.binary_cross_entropy_with_logits(
        a, b, pos_weight=dn.tensor(np.array([0.5, 2.0, 3.0]))), [x * 6 - 3, y])


def test_bce_errors():
    x, y = dn.tensor(_uniform(4, 3)), dn.tensor(_uniform(4, 3))
    assert_raises_naming(ValueError, lambda: F.binary_cross_entropy(x * 3, y),
                         "binary_cross_entropy", "between 0 and 1")
    assert_raises_naming(ValueError, lambda: F.binary_cross_entropy(x, y.reshape(12)),
                         "binary_cross_entropy", "(12,)", "(4, 3)")
    assert_raises_naming(ValueError, lambda: F.binary_cross_entropy_with_logits(x, y.reshape(3, 4)),
                         "binary_cross_entropy_with_logits", "(3, 4)", "(4, 3)")
    assert_raises_naming(ValueError, lambda: F.binary_cross_entropy_with_logits(
        x, y, pos_weight=dn.ones(5)), "pos_weight", "(5,)", "(4, 3)")
    assert_raises_naming(TypeError, lambda: F.binary_cross_entropy_with_logits(
        x, y, weight=dn.ones(3, dtype="float64")), "weight", "float64")


# ---- loss modules: the same code under torch.nn and divenet.nn -----------------------------------
def _class_case(seed=0):
    rng = np.random.default_rng(seed)
    x = _randn(7, 5, 3, seed=seed, scale=2.0)
    y = rng.integers(0, 5, (7, 3))
    y[0, 0] = y[3, 2] = 2  # some targets hit the ignored class
    w = _uniform(5, seed=seed + 1, lo=0.2, hi=2.0)
    return x, y, w


MODULES = [
    ("CrossEntropyLoss", {}), ("CrossEntropyLoss", {"ignore_index": 2}),
    ("CrossEntropyLoss", {"weight": "w", "label_smoothing": 0.15}),
    ("CrossEntropyLoss", {"weight": "w", "ignore_index": 2, "label_smoothing": 0.1}),
    ("NLLLoss", {"weight": "w"}), ("NLLLoss", {"ignore_index": 2}),
]


@pytest.mark.parametrize("name,kw", MODULES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_class_loss_modules_match_torch(name, kw, reduction, device):
    x, y, w = _class_case()

    def make(lib, t):
        args = {k: (t(w) if v == "w" else v) for k, v in kw.items()}
        return getattr(lib.nn, name)(reduction=reduction, **args)

    ours = make(dn, lambda a: dn.tensor(a, device=device))
    theirs = make(torch, torch.tensor)
    if name == "NLLLoss":
        x = np.asarray(torch.log_softmax(torch.tensor(x), 1).numpy())
    check_against_torch(lambda a: ours(a, dn.tensor(y, device=device)),
                        lambda a: theirs(a, torch.tensor(y)), [x], device=device)


@pytest.mark.parametrize("name,kw", [("MSELoss", {}), ("L1Loss", {}), ("HuberLoss", {"delta": 0.5}),
                                     ("SmoothL1Loss", {"beta": 0.5}), ("BCEWithLogitsLoss", {})])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_pair_loss_modules_match_torch(name, kw, reduction, device):
    a, b = _randn(4, 6), _uniform(4, 6)
    ours, theirs = getattr(nn, name)(reduction=reduction, **kw), getattr(torch.nn, name)(reduction=reduction, **kw)
    check_against_torch(ours, theirs, [a, b], device=device)


def test_bce_modules_with_weights_match_torch():
    x, y = _uniform(4, 3, lo=0.05, hi=0.95), _uniform(4, 3, seed=2)
    w, pw = _uniform(3, seed=3, lo=0.5, hi=2.0), _uniform(3, seed=4, lo=0.5, hi=3.0)
    check_against_torch(nn.BCELoss(weight=dn.tensor(w)), torch.nn.BCELoss(weight=torch.tensor(w)), [x, y])
    ours = nn.BCEWithLogitsLoss(weight=dn.tensor(w), pos_weight=dn.tensor(pw))
    theirs = torch.nn.BCEWithLogitsLoss(weight=torch.tensor(w), pos_weight=torch.tensor(pw))
    check_against_torch(ours, theirs, [x * 8 - 4, y])


def test_loss_weights_are_buffers_like_torch():
    w = _uniform(5)
    for name in ("CrossEntropyLoss", "NLLLoss", "BCELoss"):
        ours, theirs = getattr(nn, name)(weight=dn.tensor(w)), getattr(torch.nn, name)(weight=torch.tensor(w))
        assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
        np.testing.assert_array_equal(ours.state_dict()["weight"], w)
    ours = nn.BCEWithLogitsLoss(pos_weight=dn.tensor(w))
    theirs = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(w))
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()] == ["pos_weight"]
    assert list(nn.CrossEntropyLoss().state_dict()) == list(torch.nn.CrossEntropyLoss().state_dict()) == []
    assert repr(nn.MSELoss(reduction="sum")) == "MSELoss(reduction='sum')"


def test_loss_module_errors():
    assert_raises_naming(ValueError, lambda: nn.CrossEntropyLoss(reduction="avg"), "CrossEntropyLoss", "'avg'")
    assert_raises_naming(ValueError, lambda: nn.CrossEntropyLoss(label_smoothing=1.5),
                         "CrossEntropyLoss", "label_smoothing", "1.5")
    assert_raises_naming(TypeError, lambda: nn.NLLLoss(weight=[1.0, 2.0]), "NLLLoss", "weight", "list")
    assert_raises_naming(ValueError, lambda: nn.MSELoss(size_average=True), "MSELoss", "reduction")
    assert_raises_naming(ValueError, lambda: nn.HuberLoss(delta=0), "HuberLoss", "delta", "0")


# ---- one_hot -------------------------------------------------------------------------------------
@pytest.mark.parametrize("values,num_classes", [([0, 2, 1, 2], -1), ([[1, 0], [3, 3]], 5), (3, 4), ([], 3)])
def test_one_hot_matches_torch(values, num_classes):
    y = np.array(values, dtype=np.int64)
    ours = F.one_hot(dn.tensor(y), num_classes)
    theirs = TF.one_hot(torch.tensor(y), num_classes)
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_one_hot_errors():
    assert_raises_naming(ValueError, lambda: F.one_hot(dn.tensor(np.array([1, -1]))), "one_hot", "non-negative", "-1")
    assert_raises_naming(ValueError, lambda: F.one_hot(dn.tensor(np.array([1, 3])), 2),
                         "one_hot", "num_classes=2", "3")
    assert_raises_naming(TypeError, lambda: F.one_hot(dn.tensor([1.0, 2.0])), "one_hot", "float32")
