"""The table: every zoo model exports, passes ONNX's full check, runs in ONNX Runtime with
divenet's outputs at two batch sizes (through the dynamic batch axis), and comes back through
``dn.onnx.load`` with the same outputs. Small configurations (tests/models/test_zoo.py's) at
each model's smallest input size from the registry; random batch-norm statistics, so that
BatchNormalization is not the identity."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import divenet as dn
from divenet.models import get_model, get_spec, list_models
from tests.models.test_zoo import SMALL
from tests.onnx.helpers import BATCHES, assert_close, run_dn, run_ort, session

CONFIGS = {**SMALL, "charlm": ({"embed_dim": 8, "hidden_size": 16}, 1, 12, 11, None)}
# what each family must put in the graph (the ops the issue names)
EXPECTED_OPS = {
    "alexnet": {"Conv", "MaxPool", "MatMul"},  # adaptive pool 1x1 -> 5x5: two averaging MatMuls
    "lenet": {"Conv", "Sigmoid", "AveragePool", "Gemm"},
    "lenet-bn": {"BatchNormalization"},
    "googlenet": {"Concat", "GlobalAveragePool"},
    "densenet": {"Concat", "AveragePool", "BatchNormalization"},
    "resnet18": {"Add", "BatchNormalization", "GlobalAveragePool"},
    "se-resnet18": {"Mul", "Sigmoid"},
    "mobilenet": {"Conv"},
    "shufflenet": {"Reshape", "Transpose", "Concat", "Add"},
    "lstm": {"LSTM"}, "gru": {"GRU"}, "charlm": {"LSTM", "Gather"},
}


def test_every_zoo_model_is_in_the_table():
    assert set(list_models()) <= set(CONFIGS), sorted(set(list_models()) - set(CONFIGS))


def _model(name, extra=None):
    kwargs, channels, _, classes, _ = CONFIGS[name]
    spec = get_spec(name)
    model = get_model(name, num_classes=classes, in_channels=channels, **{**kwargs, **(extra or {})})
    rng = np.random.default_rng(1)
    text = spec.kind == "text"
    seq = CONFIGS[name][2]

    def sample(batch):
        if text:
            return rng.integers(0, classes, (batch, seq)).astype(np.int64)
        side = spec.input_size
        return rng.standard_normal((batch, channels, side, side)).astype(np.float32)

    model.init(dn.tensor(sample(1)))
    for m in model.modules():
        if getattr(m, "running_mean", None) is not None:
            c = m.running_mean.shape[0]
            m.running_mean.array[...] = rng.standard_normal(c).astype(np.float32) * 0.2
            m.running_var.array[...] = rng.uniform(0.5, 2.0, c).astype(np.float32)
    return model.eval(), sample


@pytest.mark.parametrize("name", list_models())
def test_zoo_model_exports_checks_runs_and_reloads(name, tmp_path):
    _check(name, None, tmp_path, EXPECTED_OPS.get(name, set()))


# the zoo's options that change the graph: the paper's LRN and dropout, stacked and
# bidirectional recurrent layers, ShuffleNet's other group counts
VARIANTS = [
    ("alexnet", {"lrn": True}, {"LRN"}),
    ("googlenet", {"lrn": True, "dropout": 0.4}, {"LRN"}),
    ("lstm", {"num_layers": 2, "bidirectional": True}, {"LSTM", "Concat"}),
    ("gru", {"num_layers": 2, "dropout": 0.3}, {"GRU"}),
    ("shufflenet", {"groups": 8, "width": 0.25}, {"Transpose"}),
    ("vgg11", {"batch_norm": True}, {"BatchNormalization"}),
]


@pytest.mark.parametrize("name, extra, ops", VARIANTS, ids=[f"{n}-{'-'.join(map(str, e.values()))}"
                                                           for n, e, _ in VARIANTS])
def test_zoo_variant_exports_checks_runs_and_reloads(name, extra, ops, tmp_path):
    _check(name, extra, tmp_path, ops)


def _check(name, extra, tmp_path, expected):
    model, sample = _model(name, extra)
    path = tmp_path / f"{name}.onnx"
    proto = dn.onnx.export(model, dn.tensor(sample(1)), path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    ops = {n.op_type for n in proto.graph.node}
    assert expected <= ops, f"{name}: graph ops {sorted(ops)}"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    sess = session(path)
    back = dn.onnx.load(path)
    for batch in BATCHES:
        x = sample(batch)
        (ref,) = run_dn(model, x)
        assert ref.shape[0] == batch
        (ours,) = run_ort(sess, x)
        assert_close(ours, ref, f"{name}: ONNX Runtime at batch {batch}")
        (again,) = run_dn(back, x)
        assert_close(again, ref, f"{name}: dn.onnx.load at batch {batch}")
