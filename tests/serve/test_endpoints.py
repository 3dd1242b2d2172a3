"""Every endpoint of the server, on an untrained LeNet: health, metadata, KServe v2 infer (the
model's own outputs), /v1/predict (raw and multipart PNG/JPEG, as `divenet predict` reads the
file), metrics, and concurrent requests served in fewer batches than requests."""
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import divenet as dn
import divenet.functional as F
from divenet.data.images import read_image

from .helpers import CLASSES, binary_body, client, infer_body, png, read_binary_reply


def _direct(model, x):
    with dn.no_grad():
        return model(dn.tensor(np.asarray(x, np.float32))).numpy()


def test_health_ping_and_server_metadata(serve, lenet):
    s = serve(lenet[0])
    with client(s.url) as c:
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get("/v2/health/ready").json() == {"ready": True}
        assert c.get("/v2/models/lenet/ready").json() == {"name": "lenet", "ready": True}
        assert c.get("/ping").json() == {"status": "Healthy"}
        meta = c.get("/v2").json()
        assert meta["name"] == "divenet" and meta["version"] == dn.__version__


def test_model_metadata(serve, lenet):
    s = serve(lenet[0], name="fashion", max_batch=8)
    with client(s.url) as c:
        r = c.get("/v2/models/fashion")
        assert r.status_code == 200
        m = r.json()
        assert m["name"] == "fashion" and m["platform"] == "divenet"
        assert m["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
        assert m["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
        assert m["parameters"]["classes"] == CLASSES and m["parameters"]["max_batch_size"] == 8
        r = c.get("/v2/models/lenet")
        assert r.status_code == 404 and "not found; this server serves 'fashion'" in r.json()["error"]


def test_infer_returns_the_models_outputs(serve, lenet):
    engine, model = lenet
    s = serve(engine)
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    with client(s.url) as c:
        r = c.post("/v2/models/lenet/infer", json=infer_body(x, id="req-7"))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_name"] == "lenet" and out["id"] == "req-7"
    (o,) = out["outputs"]
    assert o["name"] == "logits" and o["datatype"] == "FP32" and o["shape"] == [3, 10]
    np.testing.assert_allclose(np.array(o["data"]).reshape(3, 10), _direct(model, x), rtol=1e-5, atol=1e-6)


def test_infer_takes_nested_data_and_requested_outputs(serve, lenet):
    engine, model = lenet
    s = serve(engine)
    x = np.random.default_rng(1).random((1, 1, 28, 28), dtype=np.float32)
    body = {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": x.tolist()}],
            "outputs": [{"name": "logits"}]}
    with client(s.url) as c:
        r = c.post("/v2/models/lenet/infer", json=body)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["outputs"][0]["data"]), _direct(model, x)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("binary_output", [False, True])
def test_infer_in_the_binary_tensor_extension_equals_json(serve, lenet, binary_output):
    engine, model = lenet
    s = serve(engine)
    x = np.random.default_rng(2).random((2, 1, 28, 28), dtype=np.float32)
    content, headers = binary_body(x, binary_output=binary_output, id="bin-1")
    with client(s.url) as c:
        assert "binary_tensor_data" in c.get("/v2").json()["extensions"]
        r = c.post("/v2/models/lenet/infer", content=content, headers=headers)
        as_json = c.post("/v2/models/lenet/infer", json=infer_body(x)).json()["outputs"][0]["data"]
    assert r.status_code == 200, r.text
    if binary_output:
        assert r.headers["content-type"] == "application/octet-stream"
        header, out = read_binary_reply(r)
    else:
        header = r.json()
        out = np.array(header["outputs"][0]["data"]).reshape(header["outputs"][0]["shape"])
    assert header["id"] == "bin-1" and header["outputs"][0]["shape"] == [2, 10]
    np.testing.assert_allclose(out, _direct(model, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out.ravel(), np.float32(as_json))


@pytest.mark.parametrize("multipart", [False, True])
def test_predict_png_as_divenet_predict_reads_it(serve, lenet, multipart):
    engine, model = lenet
    s = serve(engine)
    data = png(40, 30, "RGB", seed=3)
    with client(s.url) as c:
        if multipart:
            r = c.post("/v1/predict?top=10", files={"file": ("x.png", data, "image/png")})
        else:
            r = c.post("/v1/predict?top=10", content=data, headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["note"] == "RGB converted to greyscale; resized from 40x30 to the model's 28x28"
    image, _ = read_image(io.BytesIO(data), 1, 28)
    with dn.no_grad():
        want = F.softmax(model(dn.tensor(image[None])), dim=1).numpy()[0]
    order = np.argsort(-want, kind="stable")
    assert [p["index"] for p in out["predictions"]] == order.tolist()
    assert [p["label"] for p in out["predictions"]] == [CLASSES[i] for i in order]
    np.testing.assert_allclose([p["probability"] for p in out["predictions"]], want[order], rtol=1e-5)


def test_predict_jpeg_top_and_invert(serve, lenet):
    from PIL import Image

    engine, model = lenet
    s = serve(engine)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (28, 28), dtype=np.uint8)).save(buf, "JPEG")
    data = buf.getvalue()
    with client(s.url) as c:
        plain = c.post("/v1/predict", content=data).json()
        inverted = c.post("/v1/predict?top=1&invert=true", content=data).json()
    assert len(plain["predictions"]) == 3 and "note" not in plain  # 28x28 greyscale: nothing changed
    image, _ = read_image(io.BytesIO(data), 1, 28)
    want = int(np.argmax(_direct(model, (1 - image)[None])[0]))
    assert [p["index"] for p in inverted["predictions"]] == [want]


def test_metrics_count_requests_latency_batches_and_queue(serve, lenet):
    s = serve(lenet[0])
    with client(s.url) as c:
        x = np.zeros((2, 1, 28, 28), np.float32)
        assert c.post("/v2/models/lenet/infer", json=infer_body(x)).status_code == 200
        assert c.post("/v2/models/lenet/infer", content=b"{").status_code == 400
        c.get("/nowhere")
        text = c.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain")
    assert s.metric("divenet_requests_total", endpoint="/v2/models/{name}/infer", status="200") == 1
    assert s.metric("divenet_requests_total", endpoint="/v2/models/{name}/infer", status="400") == 1
    assert s.metric("divenet_requests_total", endpoint="other", status="404") == 1
    assert s.metric("divenet_request_seconds_count", endpoint="/v2/models/{name}/infer") == 2
    assert s.metric("divenet_batch_size_count") == 1 and s.metric("divenet_batch_size_sum") == 2
    assert s.metric("divenet_inference_seconds_count") == 1
    assert "divenet_queue_depth 0.0" in text.text


def test_concurrent_requests_share_batches(serve, lenet):
    engine, model = lenet
    s = serve(engine, max_batch=32, max_delay_ms=300)
    xs = np.random.default_rng(5).random((24, 1, 1, 28, 28), dtype=np.float32)

    def one(x):
        with client(s.url) as c:
            return c.post("/v2/models/lenet/infer", json=infer_body(x)).json()

    with ThreadPoolExecutor(24) as pool:
        replies = list(pool.map(one, xs))
    for x, r in zip(xs, replies):  # each answer is its own request's
        np.testing.assert_allclose(r["outputs"][0]["data"], _direct(model, x)[0], rtol=1e-4, atol=1e-5)
    batches = s.metric("divenet_batch_size_count")
    assert s.metric("divenet_batch_size_sum") == 24
    assert batches < 24 / 2, f"24 concurrent requests ran in {batches:g} batches"


def test_batch_of_one_serves_one_request_per_batch(serve, lenet):
    s = serve(lenet[0], max_batch=1, max_delay_ms=50)
    x = np.zeros((1, 1, 28, 28), np.float32)

    def one(_):
        with client(s.url) as c:
            return c.post("/v2/models/lenet/infer", json=infer_body(x)).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(8))) == [200] * 8
    assert s.metric("divenet_batch_size_count") == 8
    assert s.metric("divenet_batch_size_bucket", le="1.0") == 8
