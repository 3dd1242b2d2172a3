"""Op by op: small modules whose forwards use the ops the zoo does not (indexing, split, pad,
reductions, activations, layer norm, 1-D and dilated convolution, ceil-mode pooling, stacked
and bidirectional recurrent layers with initial states, cells, casts), exported, checked, run
in ONNX Runtime at two batch sizes and reloaded; then what export and load refuse, and how."""
from __future__ import annotations

import threading

import numpy as np
import onnx
import pytest

import divenet as dn
import divenet.functional as F
from divenet import nn
from divenet.autograd import Function
from divenet.onnx import ExportError
from tests.onnx.helpers import BATCHES, assert_close, run_dn, run_ort, session

ORIGINAL_APPLY = Function.__dict__["apply"]


class Fn(nn.Module):
    """A module whose forward is ``fn(self, *inputs)``; keyword arguments become attributes
    (layers and parameters)."""

    def __init__(self, fn, **parts):
        self.fn = fn
        for k, v in parts.items():
            setattr(self, k, v)

    def forward(self, *xs):
        return self.fn(self, *xs)


def _randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def roundtrip(model, make, tmp_path, opset=17, name="m"):
    """Export ``model`` at batch 1; check it; compare ORT and the reloaded module with divenet
    at each batch size (``make(batch)`` gives the inputs). Returns the ModelProto."""
    path = tmp_path / f"{name}.onnx"
    model.eval()
    proto = dn.onnx.export(model, tuple(dn.tensor(a) for a in make(1)), path, opset=opset)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    sess, back = session(path), dn.onnx.load(path)
    for batch in BATCHES:
        xs = make(batch)
        refs = run_dn(model, *xs)
        for k, (ours, again, ref) in enumerate(zip(run_ort(sess, *xs), run_dn(back, *xs), refs)):
            assert_close(ours, ref, f"{name}: ONNX Runtime, output {k}, batch {batch}")
            assert_close(again, ref, f"{name}: dn.onnx.load, output {k}, batch {batch}")
    return proto


def _ops(proto):
    return {n.op_type for n in proto.graph.node}


# ---- ops the zoo does not use -------------------------------------------------------------------
def _flat(*ts):
    """The tensors flattened to (N, -1) and concatenated: one output that shows every part."""
    return dn.cat([t.reshape(t.shape[0], -1) for t in ts], dim=1)


def _indexing(m, x):  # x (N, 4, 6, 5)
    n = x.shape[0]
    picked = x[:, [2, 0], 0, 0].unsqueeze(2).expand(n, 2, 3)  # Gather, Unsqueeze, Expand
    return _flat(x[:, 1:3, ::2, -1], x[:, None, 0, :, 1], x[..., ::-1][:, 0, :3], x[:, -1:, 4:1:-2], picked)


def _split_stack_pad(m, x):  # x (N, 6, 5)
    a, b, c = dn.split(dn.pad(x, (1, 2), value=1.5), [3, 1, 2], dim=1)
    return _flat(dn.stack([a[:, :1], c[:, 1:]], dim=1), dn.chunk(b, 2, dim=2)[1].sum(2, keepdim=True))


def _reductions(m, x):  # x (N, 3, 4, 5)
    return _flat(x.mean(dim=(2, 3)), x.amax(dim=-1).sum(-1), x.amin(dim=1).prod(-1),
                 x.sum(dim=1).mean(dim=1, keepdim=True) / x.abs().sum())


def _activations(m, x):  # x (N, 3, 4)
    return _flat(F.leaky_relu(x, 0.2), F.relu6(x * 4), F.silu(x), F.softmax(x, dim=1),
                 F.log_softmax(x, dim=-1), x.exp().sqrt(), -x.tanh(), x.clamp(-0.5, 0.3),
                 dn.maximum(x, x * 0.5), dn.minimum(x, 1 - x), x ** 2, F.hardtanh(x, -0.2, 0.4))


def _norms_and_dense(m, x):  # x (N, 3, 4)
    return m.bn1(m.fc(m.ln(x).reshape(x.shape[0], -1))) + m.bn2(m.fc3(x).permute(0, 2, 1)).sum(2)


def _convolutions(m, x):  # x (N, 4, 9, 9)
    return _flat(m.dil(x), m.same(x), m.grouped(x), m.c1(x.mean(dim=2)))


def _pooling(m, x):  # x (N, 2, 8, 8)
    return _flat(F.max_pool2d(x, 3, 2, ceil_mode=True), F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
                 F.avg_pool2d(x, 3, 2, 1), F.max_pool2d(x, 2, 1, 0, dilation=2),
                 F.adaptive_avg_pool2d(x, (3, 2)), F.local_response_norm(x, 3, 1e-2, 0.75, 1.5),
                 F.avg_pool1d(x.flatten(2), 4), F.max_pool1d(x.flatten(2), 3, 2, 1))


def _cast(m, x):  # x (N, 5)
    return (x.astype(dn.float64) * 2).sum(dim=1).astype(dn.float32)


CASES = {  # name: (forward, input shape without batch, ONNX ops the graph must hold)
    "indexing": (_indexing, (4, 6, 5), {"Slice", "Gather", "Unsqueeze", "Expand"}),
    "split-stack-pad": (_split_stack_pad, (6, 5), {"Split", "Pad", "Concat", "ReduceSum"}),
    "reductions": (_reductions, (3, 4, 5), {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"}),
    "activations": (_activations, (3, 4), {"LeakyRelu", "Clip", "Softmax", "LogSoftmax", "Max", "Min", "Pow"}),
    "norms-and-dense": (_norms_and_dense, (3, 4),
                        {"LayerNormalization", "BatchNormalization", "MatMul", "Gemm", "Transpose"}),
    "convolutions": (_convolutions, (4, 9, 9), {"Conv"}),
    "pooling": (_pooling, (2, 8, 8), {"MaxPool", "AveragePool", "LRN", "MatMul"}),
    "cast": (_cast, (5,), {"Cast"}),
}


def _case_model(name):
    rng = np.random.default_rng(3)
    parts = {}
    if name == "norms-and-dense":
        parts = {"ln": nn.LayerNorm(4), "fc": nn.Linear(12, 5), "bn1": nn.BatchNorm1d(5),
                 "fc3": nn.Linear(4, 5), "bn2": nn.BatchNorm1d(5)}
    if name == "convolutions":
        parts = {"dil": nn.Conv2d(4, 3, 3, dilation=2, padding=1), "same": nn.Conv2d(4, 2, 4, padding="same"),
                 "grouped": nn.Conv2d(4, 4, 3, stride=2, groups=2, bias=False), "c1": nn.Conv1d(4, 9, 3)}
    model = Fn(CASES[name][0], **parts)
    for m in model.modules():
        if getattr(m, "running_mean", None) is not None:
            c = m.running_mean.shape[0]
            m.running_mean.array[...] = rng.standard_normal(c).astype(np.float32)
            m.running_var.array[...] = rng.uniform(0.5, 2.0, c).astype(np.float32)
    return model


@pytest.mark.parametrize("name", CASES)
def test_op_exports(name, tmp_path):
    shape, expected = CASES[name][1], CASES[name][2]
    proto = roundtrip(_case_model(name), lambda b: [_randn(b, *shape, seed=b)], tmp_path, name=name)
    assert expected <= _ops(proto), f"{name}: {sorted(_ops(proto))}"


@pytest.mark.parametrize("opset", [13, 18, 20])
def test_reductions_and_squeezes_at_other_opsets(opset, tmp_path):
    # axes are attributes of ReduceMean/Max before opset 18 and inputs from 18 on
    model = Fn(CASES["reductions"][0])
    roundtrip(model, lambda b: [_randn(b, 3, 4, 5, seed=b)], tmp_path, opset=opset, name=f"r{opset}")
    if opset >= 20:
        proto = roundtrip(Fn(lambda m, x: F.gelu(x) + F.gelu(x, approximate="tanh")),
                          lambda b: [_randn(b, 6, seed=b)], tmp_path, opset=opset, name="gelu")
        assert "Gelu" in _ops(proto)


def _states(m, x, layers):
    h = m.proj(x[0])  # (N, H) from the first step: initial states that follow the batch
    return dn.stack([h * (k + 1) / layers for k in range(layers)], 0)


RNN_CASES = {
    "lstm-2-layers-bidirectional": (
        lambda m, x: dn.cat([y.sum(0) for y in (lambda out: [out[0], *out[1]])(
            m.rnn(x, (_states(m, x, 4), -_states(m, x, 4))))], dim=1),
        lambda: nn.LSTM(5, 6, num_layers=2, bidirectional=True)),
    "gru-with-h0": (lambda m, x: dn.cat([t.sum(0) for t in m.rnn(x, _states(m, x, 1))], dim=1),
                    lambda: nn.GRU(5, 6)),
    "gru-bidirectional": (lambda m, x: m.rnn(x)[0].sum(0), lambda: nn.GRU(5, 6, bidirectional=True)),
    "rnn-relu-batch-first": (lambda m, x: m.rnn(x.permute(1, 0, 2))[0].sum(1),
                             lambda: nn.RNN(5, 6, nonlinearity="relu", batch_first=True)),
    "cells": (lambda m, x: dn.cat([*m.lstm(x[0]), m.gru(x[1], m.proj(x[0])), m.rnn(x[2])], dim=1),
              lambda: None),
}


@pytest.mark.parametrize("name", RNN_CASES)
def test_recurrent_exports(name, tmp_path):
    fn, layer = RNN_CASES[name]
    parts = {"proj": nn.Linear(5, 6)}
    if name == "cells":
        parts.update(lstm=nn.LSTMCell(5, 6), gru=nn.GRUCell(5, 6), rnn=nn.RNNCell(5, 6, bias=False))
    else:
        parts["rnn"] = layer()
    # batch-first inputs (dynamic_batch grows axis 0), read time-major by the layers
    model = Fn(lambda m, x: fn(m, x.permute(1, 0, 2)), **parts)
    proto = roundtrip(model, lambda b: [_randn(b, 7, 5, seed=b)], tmp_path, name=name)
    assert _ops(proto) & {"LSTM", "GRU", "RNN"}


def test_embedding_multiple_inputs_outputs_and_names(tmp_path):
    model = Fn(lambda m, ids, x: (m.emb(ids).sum(1) * x, m.emb(ids)[:, -1]), emb=nn.Embedding(7, 4))
    proto = dn.onnx.export(model, (dn.tensor(np.array([[1, 2, 6]])), dn.tensor(_randn(1, 4))),
                           tmp_path / "e.onnx", input_names=["ids", "scale"], output_names=["a", "b"])
    assert [i.name for i in proto.graph.input] == ["ids", "scale"]
    assert [o.name for o in proto.graph.output] == ["a", "b"]
    sess = session(tmp_path / "e.onnx")
    ids, x = np.array([[0, 3, 3], [6, 5, 4], [1, 1, 2]]), _randn(3, 4)
    for ours, ref in zip(run_ort(sess, ids, x), run_dn(model, ids, x)):
        assert_close(ours, ref, "embedding")


def test_static_batch_and_metadata(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    meta = {"classes": ["a", "b", "c"], "input_size": 4, "mean": [0.5]}
    path = tmp_path / "s.onnx"
    dn.onnx.export(model, dn.tensor(_randn(2, 1, 4, 4)), path, dynamic_batch=False, metadata=meta)
    sess = session(path)
    assert [d for d in sess.get_inputs()[0].shape] == [2, 1, 4, 4]
    assert sess.get_modelmeta().custom_metadata_map["classes"] == '["a", "b", "c"]'
    back = dn.onnx.load(path)
    assert back.metadata == meta
    (ours,), (ref,) = run_ort(sess, _randn(2, 1, 4, 4)), run_dn(model, _randn(2, 1, 4, 4))
    assert_close(ours, ref, "static batch")
    with pytest.raises(ValueError, match=r"input 'input' must have shape \(2x1x4x4\), got \(3, 1, 4, 4\)"):
        back(dn.tensor(_randn(3, 1, 4, 4)))


def test_parameters_keep_their_names_and_reloaded_weights_train(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    proto = dn.onnx.export(model, dn.tensor(_randn(1, 3)), tmp_path / "p.onnx")
    assert {i.name for i in proto.graph.initializer} == set(model.state_dict())
    back = dn.onnx.load(tmp_path / "p.onnx")
    loss = back(dn.tensor(_randn(5, 3))).sum()
    loss.backward()
    grads = [p.grad for p in back.parameters()]
    assert len(grads) == 4 and all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)


def test_tracing_records_only_the_exporting_thread(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    other = nn.Sequential(nn.Linear(3, 3), nn.Sigmoid(), nn.Linear(3, 3), nn.Tanh())
    alone = dn.onnx.export(model, dn.tensor(_randn(1, 3)), tmp_path / "a.onnx")
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            with dn.no_grad():
                other(dn.tensor(_randn(2, 3)))

    t = threading.Thread(target=busy)
    t.start()
    try:
        together = [dn.onnx.export(model, dn.tensor(_randn(1, 3)), tmp_path / "b.onnx") for _ in range(5)]
    finally:
        stop.set()
        t.join()
    for proto in together:
        assert [n.op_type for n in proto.graph.node] == [n.op_type for n in alone.graph.node]
    assert Function.__dict__["apply"] is ORIGINAL_APPLY  # the tracing wrapper is gone


# ---- what export refuses --------------------------------------------------------------------------
def _refused(model, x, match, **kw):
    with pytest.raises((ExportError, ValueError, TypeError), match=match):
        dn.onnx.build(model, x, **kw)


def test_export_refusals():
    x = dn.tensor(_randn(1, 4, 6, 6))

    def inplace(m, x):
        y = x * 2
        y += 1
        return y

    _refused(Fn(inplace), x, r"changes a tensor in place \(\+=\)")
    _refused(Fn(lambda m, x: dn.where(x > 0, x, x * 0.1)), x, r"made outside the traced ops")
    _refused(Fn(lambda m, x: F.cross_entropy(x.flatten(1), dn.tensor(np.array([0])))), x,
             r"divenet op CrossEntropy has no ONNX export", dynamic_batch=False)
    _refused(nn.Sequential(nn.Identity(), nn.LocalResponseNorm(4)), x, r"^1: LocalResponseNorm with an even size")
    _refused(Fn(lambda m, x: F.adaptive_max_pool2d(x, 4)), x, r"ONNX has no adaptive max pooling")
    _refused(Fn(lambda m, x: m.bn(x), bn=nn.BatchNorm2d(4, track_running_stats=False)), x,
             r"bn: BatchNorm normalizes with the batch's statistics")
    _refused(Fn(lambda m, x: F.gelu(x)), x, r"GELU needs opset 20")
    _refused(Fn(lambda m, x: x[:1] * 2), x, r"slicing the batch axis is not exported")
    _refused(Fn(lambda m, x: x[:, [0, 1], :, 0]), x, r"an integer array and ints apart from it")
    _refused(Fn(lambda m, x: x * 2), x, r"opset must be an int from 13", opset=12)
    _refused(Fn(lambda m, x: x * 2), [1, 2], r"example_input must be a Tensor")
    _refused(lambda x: x, x, r"model must be a divenet Module")
    _refused(Fn(lambda m, x: x * 2), x, r"output_names must be 1 distinct", output_names=["a", "b"])


def test_batch_dependent_forward_is_refused_unless_static():
    model = Fn(lambda m, x: x * 2 if x.shape[0] == 1 else x.exp())
    x = dn.tensor(_randn(1, 3))
    _refused(model, x, r"runs different ops at batch sizes 1 and 2 .*dynamic_batch=False")
    proto = dn.onnx.build(model, x, dynamic_batch=False)
    assert [n.op_type for n in proto.graph.node] == ["Mul"]


# ---- what load refuses ----------------------------------------------------------------------------
def test_load_names_unsupported_operators_and_their_nodes(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="first"),
         helper.make_node("Erf", ["r"], ["y"], name="the_erf"),
         helper.make_node("Celu", ["y"], ["z"], name="celu_1")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2])])
    path = tmp_path / "u.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ValueError, match=r"not supported by divenet.onnx.load: Erf \(node 'the_erf'\), "
                                         r"Celu \(node 'celu_1'\)"):
        dn.onnx.load(path)


def test_load_refuses_missing_and_damaged_files(tmp_path):
    with pytest.raises(ValueError, match="no such ONNX file"):
        dn.onnx.load(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 this is not protobuf \xff\xff\xff")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        dn.onnx.load(bad)
    with pytest.raises(TypeError, match="expected a path, bytes or an onnx.ModelProto"):
        dn.onnx.load(3)


def test_load_runtime_errors_name_the_node(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4))
    dn.onnx.export(model, dn.tensor(_randn(1, 3)), tmp_path / "l.onnx", dynamic_batch=False)
    proto = onnx.load(str(tmp_path / "l.onnx"))
    proto.graph.input[0].type.tensor_type.ClearField("shape")  # no declared shape: the node sees it
    back = dn.onnx.load(proto)
    with pytest.raises(ValueError, match=r"node '0/Gemm_\d+' \(Gemm\): linear: input \(1, 5\) has 5 features"):
        back(dn.tensor(_randn(1, 5)))


def test_export_and_load_on_a_device(device, tmp_path):
    # a model on the device exports (constants come to the host) and a loaded one runs there,
    # shape arithmetic included (PyTorch's LSTM export computes its initial states with it)
    model = Fn(lambda m, x: dn.cat([m.rnn(x.flatten(2).permute(1, 0, 2))[1][0][-1],
                                    m.shuffle(x).amax(dim=(2, 3))], dim=1),
               rnn=nn.LSTM(16, 3), shuffle=nn.ChannelShuffle(2)).to(device).eval()
    x = _randn(2, 4, 4, 4)
    dn.onnx.export(model, dn.tensor(x[:1], device=device), tmp_path / "d.onnx")
    back = dn.onnx.load(tmp_path / "d.onnx").to(device)
    with dn.no_grad():
        ref = model(dn.tensor(x, device=device))
        out = back(dn.tensor(x, device=device))
    assert out.device == ref.device
    assert_close(out.numpy(), ref.numpy(), f"on {device}")
    (ours,) = run_ort(session(tmp_path / "d.onnx"), x)
    assert_close(ours, ref.numpy(), f"exported on {device}")
