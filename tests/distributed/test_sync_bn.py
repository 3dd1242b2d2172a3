"""SyncBatchNorm.convert_sync_batchnorm and the one-rank behaviour (the two-rank statistics
are checked against PyTorch in test_ranks.py)."""
import numpy as np
import pytest

import divenet as dn
from divenet import nn
from divenet.distributed import Communicator, SyncBatchNorm
from divenet.models import get_model
from divenet.nn.layers import _BatchNorm


def _bns(model, cls):
    return [m for m in model.modules() if isinstance(m, cls)]


def test_convert_replaces_every_batchnorm_keeping_its_tensors():
    dn.manual_seed(0)
    model = get_model("resnet18", num_classes=10, in_channels=1)
    model.init(dn.zeros(1, 1, 28, 28))
    before = _bns(model, _BatchNorm)
    tensors = [(m.weight, m.bias, m.running_mean, m.running_var) for m in before]
    x = dn.randn(4, 1, 28, 28)
    want = model(x).numpy()
    comm = Communicator()  # a group of one: SyncBatchNorm is BatchNorm
    assert SyncBatchNorm.convert_sync_batchnorm(model, comm) is model
    after = _bns(model, _BatchNorm)
    assert len(after) == len(before) > 10 and all(type(m) is SyncBatchNorm for m in after)
    assert [(m.weight, m.bias, m.running_mean, m.running_var) for m in after] == tensors
    assert all(m.process_group is comm for m in after)
    np.testing.assert_array_equal(model(x).numpy(), want)  # same weights; running stats moved once more


def test_convert_a_bare_layer_and_containers():
    bn = nn.BatchNorm1d(4, momentum=0.2)
    new = SyncBatchNorm.convert_sync_batchnorm(bn)
    assert type(new) is SyncBatchNorm and new.weight is bn.weight and new.momentum == 0.2
    seq = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ModuleList([nn.BatchNorm1d(4)]))
    SyncBatchNorm.convert_sync_batchnorm(seq)
    assert type(seq[1]) is SyncBatchNorm and type(seq[2][0]) is SyncBatchNorm
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias",
                                                      "2.0.weight", "2.0.bias"]
    with pytest.raises(TypeError, match="must be a divenet Module"):
        SyncBatchNorm.convert_sync_batchnorm("bn")


def test_one_rank_equals_batchnorm2d():
    dn.manual_seed(1)
    x = dn.randn(6, 3, 5, 5) * 3 + 2
    ref, ours = nn.BatchNorm2d(3), SyncBatchNorm(3, process_group=Communicator())
    np.testing.assert_array_equal(ours(x).numpy(), ref(x).numpy())
    np.testing.assert_array_equal(ours.running_var.numpy(), ref.running_var.numpy())
