"""The engines: ONNX Runtime on files from divenet.onnx.export (outputs equal to the divenet
model's, classes and preprocessing from the file's metadata) and on hand-made graphs (a fixed
batch axis, unusable inputs, garbage); open_engine's choice; preprocessing from metadata."""
import io
import json

import numpy as np
import pytest

import divenet as dn
from divenet.data.images import normalize, read_image
from divenet.serve import DivenetEngine, OnnxEngine, open_engine

from .helpers import CLASSES, LENET, client, infer_body, png

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _direct(model, x):
    with dn.no_grad():
        return model(dn.tensor(x)).numpy()


@pytest.fixture(scope="module")
def lenet_onnx(tmp_path_factory, lenet):
    path = tmp_path_factory.mktemp("onnx") / "lenet.onnx"
    dn.onnx.export(lenet[1], dn.zeros(1, 1, 28, 28), path,
                   metadata={"model": "lenet", "classes": CLASSES, "invert": True})
    return path


def _linear(path, batch="N", dtype=onnx.TensorProto.FLOAT, inputs=1):
    """y = flatten(x) @ W for x (batch, 1, 2, 2), W (4, 3) = arange: a graph made by hand."""
    from onnx import helper, numpy_helper

    np_type = onnx.helper.tensor_dtype_to_np_dtype(dtype)
    w = numpy_helper.from_array(np.arange(12, dtype=np_type).reshape(4, 3), "W")
    ins = [helper.make_tensor_value_info(f"x{i}", dtype, [batch, 1, 2, 2]) for i in range(inputs)]
    nodes = [helper.make_node("Flatten", ["x0"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["y"])]
    graph = helper.make_graph(nodes, "linear", ins, [helper.make_tensor_value_info("y", dtype, [batch, 3])],
                              [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnxruntime_engine_serves_an_exported_model(serve, lenet, lenet_onnx):
    engine = OnnxEngine(lenet_onnx)
    assert engine.classes == CLASSES and engine.input_shape == (1, 28, 28) and engine.meta["invert"] is True
    s = serve(engine)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    with client(s.url) as c:
        meta = c.get("/v2/models/lenet").json()
        r = c.post("/v2/models/lenet/infer", json=infer_body(x, name=engine.input_name))
        data = png(28, 28, seed=2)
        pred = c.post("/v1/predict?top=1", content=data).json()
    assert meta["platform"] == "onnxruntime" and meta["inputs"][0]["shape"] == [-1, 1, 28, 28]
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["outputs"][0]["data"]).reshape(4, 10), _direct(lenet[1], x),
                               rtol=1e-4, atol=1e-5)
    image, _ = read_image(io.BytesIO(data), 1, 28)
    want = int(np.argmax(_direct(lenet[1], (1 - image)[None])))  # the file's metadata says invert
    assert pred["predictions"][0]["index"] == want and pred["predictions"][0]["label"] == CLASSES[want]


def test_a_hand_made_graph_and_its_fixed_batch(tmp_path, serve):
    engine = OnnxEngine(_linear(tmp_path / "dyn.onnx"))
    assert engine.input_name == "x0" and engine.output_name == "y" and engine.classes == ["0", "1", "2"]
    x = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    np.testing.assert_array_equal(engine.infer(x), x.reshape(2, 4) @ np.arange(12, dtype=np.float32).reshape(4, 3))
    fixed = OnnxEngine(_linear(tmp_path / "fixed.onnx", batch=1))
    assert fixed.max_batch == 1
    from divenet.serve.app import create_app

    with pytest.raises(ValueError, match="--max-batch 32: the model takes batches of at most 1"):
        create_app(fixed)
    s = serve(fixed, max_batch=1)
    with client(s.url) as c:
        r = c.post("/v2/models/fixed/infer", json=infer_body(x[:1], name="x0"))
    assert r.json()["outputs"][0]["data"] == (x[:1].reshape(1, 4) @ np.arange(12.0).reshape(4, 3)).ravel().tolist()


def test_unusable_onnx_files_are_one_line_errors(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"junk.onnx: not a loadable ONNX model \(") as info:
        OnnxEngine(junk)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="one input, this one has 2"):
        OnnxEngine(_linear(tmp_path / "two.onnx", inputs=2))
    with pytest.raises(ValueError, match=r"input 'x0' is tensor\(double\)"):
        OnnxEngine(_linear(tmp_path / "f64.onnx", dtype=onnx.TensorProto.DOUBLE))


def test_open_engine_picks_by_file_and_exports_checkpoints(tmp_path, lenet, lenet_onnx):
    model = lenet[1]
    load = lambda p: (LENET, model)  # noqa: E731 - the CLI passes its checkpoint loader
    assert isinstance(open_engine(lenet_onnx), OnnxEngine)
    assert isinstance(open_engine("run/epoch-001.json", load_checkpoint=load), DivenetEngine)
    with pytest.raises(ValueError, match="the divenet engine serves checkpoints"):
        open_engine(lenet_onnx, "divenet")
    exported = open_engine("run/epoch-001.json", "onnxruntime", load_checkpoint=load)
    assert isinstance(exported, OnnxEngine) and exported.classes == CLASSES
    x = np.random.default_rng(1).random((3, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(exported.infer(x), _direct(model, x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="language model"):
        open_engine("run/epoch-001.json", load_checkpoint=lambda p: ({"model": "charlm", "kind": "text"}, None))


def test_predict_applies_the_metadata_normalization(serve, lenet):
    meta = {**LENET, "mean": [0.25], "std": [0.5]}
    s = serve(DivenetEngine(lenet[1], meta))
    data = png(28, 28, seed=9)
    with client(s.url) as c:
        got = c.post("/v1/predict?top=10", content=data).json()["predictions"]
    image, _ = read_image(io.BytesIO(data), 1, 28)
    x = normalize(image, meta)
    np.testing.assert_allclose(x, (image - 0.25) / 0.5, rtol=1e-6)
    logits = _direct(lenet[1], x[None])[0]
    assert [p["index"] for p in got] == np.argsort(-logits, kind="stable").tolist()
    assert json.dumps(got)  # plain JSON
