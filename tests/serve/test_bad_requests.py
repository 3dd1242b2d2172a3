"""Over a thousand bad requests of every kind, interleaved with good ones, on one server: each bad
one is answered 4xx with a JSON error naming what was wrong, each good one gets its own correct
answer, and clients that stop sending or hang up halfway cost a bounded time and break nothing."""
import io
import json
import random
import socket
import threading
import time

import numpy as np
from PIL import Image

from .helpers import ToyEngine, client, huge_png, infer_body, png

INFER = "/v2/models/toy/infer"


def _body(**tensor):
    t = {"name": "input", "shape": [1, 1, 4, 4], "datatype": "FP32", "data": [0.5] * 16}
    t.update(tensor)
    return {"inputs": [{k: v for k, v in t.items() if v is not ...}]}


def _raw(obj):
    return json.dumps(obj).encode()


def _binary(x_bytes=64, declared=64, header_length=None, **tensor):
    """(content, headers) of a binary-extension request, with its sizes set as given."""
    t = {"name": "input", "shape": [1, 1, 4, 4], "datatype": "FP32",
         "parameters": {"binary_data_size": declared}, **tensor}
    header = _raw({"inputs": [{k: v for k, v in t.items() if v is not ...}]})
    length = str(len(header)) if header_length is None else header_length
    return header + b"\0" * x_bytes, {"inference-header-content-length": length}


def _gif():
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, "GIF")
    return buf.getvalue()


def _multipart(parts, boundary="XyZ"):
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{n}\"\r\n\r\n".encode() + v + b"\r\n"
                    for n, v in parts) + f"--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


def bad_requests(rng):
    """(method, path, content, headers, status, piece of the error) for each kind of bad request;
    the random ones differ on each call."""
    good_png = png(6, 5, seed=int(rng.integers(1 << 30)))
    # cut before the end of the pixel data (IEND is 12 bytes, IDAT's CRC and zlib's checksum 4 each)
    cut = int(rng.integers(8, len(good_png) - 24))
    junk = rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes()
    mp_nofile, mp_h = _multipart([("note", b"hello")])
    big = b"\0" * 3000
    P = "/v1/predict"
    cases = [
        # the body is not the JSON asked for
        ("POST", INFER, b"\x8f" + junk, {}, 400, "request body is not valid JSON"),
        ("POST", INFER, b'{"inputs": [', {}, 400, "request body is not valid JSON"),
        ("POST", INFER, b"", {}, 400, "request body is not valid JSON"),
        ("POST", INFER, b"[" * 2000, {}, 400, "nested too deeply"),
        ("POST", INFER, b"[1, 2]", {}, 400, "must be a JSON object with an 'inputs' list, got list"),
        ("POST", INFER, b"{}", {}, 400, "request has no 'inputs' field"),
        ("POST", INFER, _raw({"inputs": {}}), {}, 400, "'inputs' must be a list of one tensor"),
        ("POST", INFER, _raw({"inputs": _body()["inputs"] * 2}), {}, 400, "got 2 inputs"),
        ("POST", INFER, _raw({"inputs": [5]}), {}, 400, "inputs[0] must be an object"),
        # fields missing or wrong
        *[("POST", INFER, _raw(_body(**{f: ...})), {}, 400, f"inputs[0] has no '{f}' field")
          for f in ("name", "shape", "datatype", "data")],
        ("POST", INFER, _raw(_body(name="x")), {}, 400, "inputs[0].name is 'x'; the model's input is 'input'"),
        ("POST", INFER, _raw(_body(datatype="FP33")), {}, 400, "datatype 'FP33' is not a KServe v2 datatype"),
        ("POST", INFER, _raw(_body(datatype=32)), {}, 400, "datatype 32 is not a KServe v2 datatype"),
        ("POST", INFER, _raw(_body(datatype="INT8")), {}, 400, "datatype is INT8; the model's input 'input' is FP32"),
        ("POST", INFER, _raw(_body(shape=[1, 1, 4, 5])), {}, 400, "shape [1, 1, 4, 5] does not fit the model's "
                                                                  "input [-1, 1, 4, 4]"),
        ("POST", INFER, _raw(_body(shape=[1, 16])), {}, 400, "does not fit the model's input"),
        ("POST", INFER, _raw(_body(shape="1x1x4x4")), {}, 400, "shape must be a list of non-negative integers"),
        ("POST", INFER, _raw(_body(shape=[1.0, 1, 4, 4])), {}, 400, "shape must be a list of non-negative"),
        ("POST", INFER, _raw(_body(shape=[-1, 1, 4, 4])), {}, 400, "shape must be a list of non-negative"),
        ("POST", INFER, _raw(_body(shape=[True, 1, 4, 4])), {}, 400, "shape must be a list of non-negative"),
        ("POST", INFER, _raw(_body(shape=[9, 1, 4, 4], data=[0] * 144)), {}, 400, "a batch of 9; this server takes "
                                                                                   "1 to 8"),
        ("POST", INFER, _raw(_body(shape=[0, 1, 4, 4], data=[])), {}, 400, "a batch of 0"),
        ("POST", INFER, _raw(_body(data=[0.5] * 15)), {}, 400, "data holds 15 values in shape [15]; shape "
                                                               "[1, 1, 4, 4] needs 16"),
        ("POST", INFER, _raw(_body(data=[[0.5] * 16])), {}, 400, "holds 16 values in shape [1, 16]"),
        ("POST", INFER, _raw(_body(data=["0.5"] * 16)), {}, 400, "data must hold FP32 numbers, got strings"),
        ("POST", INFER, _raw(_body(data=[True] * 16)), {}, 400, "data must hold FP32 numbers, got booleans"),
        ("POST", INFER, _raw(_body(data=[1] * 15 + [None])), {}, 400, "got mixed or non-numeric values"),
        ("POST", INFER, _raw(_body(data=[[1, 2], [3]])), {}, 400, "not a flat or rectangular nested list"),
        ("POST", INFER, _raw(_body(data=None)), {}, 400, "data must be a list of numbers, got NoneType"),
        ("POST", INFER, _raw(_body(data={"a": 1})), {}, 400, "data must be a list of numbers, got dict"),
        ("POST", INFER, _raw(_body(data=[float("nan")] * 16)), {}, 400, "holds NaN, infinity"),
        ("POST", INFER, _raw(_body(data=[1e39] * 16)), {}, 400, "beyond FP32's range"),
        ("POST", INFER, _raw({**_body(), "outputs": [{"name": "probs"}]}), {}, 400,
         "'outputs' may only request the model's output 'logits'"),
        ("POST", INFER, _raw({**_body(), "id": 7}), {}, 400, "'id' must be a string, got 7"),
        # the binary tensor extension
        ("POST", INFER, *_binary(header_length="ten"), 400, "Inference-Header-Content-Length 'ten' is not a byte count"),
        ("POST", INFER, *_binary(header_length="5000"), 400, "Inference-Header-Content-Length is 5,000, but the body"),
        ("POST", INFER, *_binary(x_bytes=60), 400, "the body has 60 bytes after its JSON header; "
                                                   "inputs[0].parameters.binary_data_size says 64"),
        ("POST", INFER, *_binary(declared=60, x_bytes=60), 400, "binary_data_size is 60; shape [1, 1, 4, 4] of "
                                                                 "FP32 takes 64 bytes"),
        ("POST", INFER, *_binary(declared="64"), 400, "binary_data_size is '64'"),
        ("POST", INFER, *_binary(data=[0.5] * 16), 400, "has both 'data' and parameters.binary_data_size"),
        ("POST", INFER, *_binary(parameters=[1]), 400, "inputs[0].parameters must be an object, got list"),
        ("POST", INFER, _binary()[0], {}, 400, "request body is not valid JSON"),
        ("POST", INFER, _raw(_body(data=..., parameters={"binary_data_size": 64})), {}, 400,
         "has no Inference-Header-Content-Length header"),
        ("POST", INFER, _raw(_body()) + b"xx", {"inference-header-content-length": str(len(_raw(_body())))}, 400,
         "the body has 2 bytes after its JSON header, but no input declares them"),
        ("POST", INFER, _raw({**_body(), "parameters": {"binary_data_output": "yes"}}), {}, 400,
         "binary_data / binary_data_output must be true or false, got 'yes'"),
        ("POST", INFER, big, {}, 413, "request body of 3,000 bytes is over the limit of 2,048 bytes"),
        ("POST", INFER, iter([big[:1000]] * 3), {}, 413, "request body is over the limit of 2,048 bytes"),
        ("POST", "/v2/models/other/infer", _raw(_body()), {}, 404, "model 'other' not found; this server serves 'toy'"),
        ("GET", INFER, None, {}, 405, "GET is not allowed on /v2/models/toy/infer"),
        ("GET", "/v3/nothing", None, {}, 404, "no endpoint /v3/nothing"),
        ("GET", "/v2/models/nope", None, {}, 404, "model 'nope' not found"),
        # images
        ("POST", P, junk, {}, 400, "the uploaded image: not a readable image (not PNG or JPEG)"),
        ("POST", P, good_png[:cut], {}, 400, "the uploaded image: not a readable image"),
        ("POST", P, _gif(), {}, 400, "not a readable image (not PNG or JPEG)"),
        ("POST", P, b"", {}, 400, "empty image; send a PNG or JPEG image"),
        ("POST", P, huge_png(20_000, 20_000), {}, 400, "the uploaded image: refused, too large to decode safely"),
        ("POST", P, huge_png(101, 100), {}, 400, "refused, 101x100 is 10,100 pixels, over the limit of 10,000"),
        ("POST", P, mp_nofile, mp_h, 400, "multipart body has no file part"),
        ("POST", P, b"--x\r\n", {"content-type": "multipart/form-data"}, 400, "malformed multipart body"),
        ("POST", P + "?top=0", good_png, {}, 400, "query parameter top must be an integer from 1 to 3, got '0'"),
        ("POST", P + "?top=4", good_png, {}, 400, "query parameter top must be an integer from 1 to 3, got '4'"),
        ("POST", P + "?top=two", good_png, {}, 400, "query parameter top must be an integer"),
        ("POST", P + "?invert=maybe", good_png, {}, 400, "query parameter invert must be true or false"),
        ("POST", P, big, {}, 413, "over the limit of 2,048 bytes"),
        ("GET", P, None, {}, 405, "GET is not allowed on /v1/predict"),
    ]
    return cases


def _good(c, i, rng):
    """A good request (infer or predict, alternating); checks that its answer is its own."""
    if i % 2:
        x = rng.random((1, 1, 4, 4), dtype=np.float32)
        r = c.post(INFER, json=infer_body(x, id=f"good-{i}"))
        assert r.status_code == 200, r.text
        assert r.json()["id"] == f"good-{i}"
        np.testing.assert_allclose(r.json()["outputs"][0]["data"], 2 * x.ravel()[:3], rtol=1e-6)
    else:
        value = int(rng.integers(0, 256))
        buf = io.BytesIO()
        Image.new("L", (4, 4), value).save(buf, "PNG")
        r = c.post("/v1/predict?top=3", content=buf.getvalue())
        assert r.status_code == 200, r.text
        probs = {p["label"]: p["probability"] for p in r.json()["predictions"]}
        assert np.allclose(list(probs.values()), 1 / 3)  # the toy's three outputs are equal: 2 * value / 255


def _stalled(port, send, close):
    """A client that sends part of a body and then stops (close=False: it waits for the answer;
    close=True: it hangs up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + send)
        if close:
            return None
        reply = b""
        while not (b"\r\n\r\n" in reply and reply.rstrip().endswith(b"}")):
            part = sock.recv(4096)
            if not part:
                break
            reply += part
        return reply


def test_a_thousand_bad_requests_between_good_ones(serve):
    s = serve(ToyEngine(), max_batch=8, max_body_bytes=2048, max_pixels=10_000, read_timeout_s=0.2)
    port = int(s.url.rsplit(":", 1)[1])
    rng = np.random.default_rng(0)
    order = random.Random(0)
    bad = good = 0
    stalled_replies = []

    def stalled_clients():  # meanwhile, on another thread: one waits for its 408, one hangs up
        for _ in range(20):
            stalled_replies.append(_stalled(port, b'{"inputs": [', close=False))
            _stalled(port, b'{"inp', close=True)

    t0 = time.monotonic()
    staller = threading.Thread(target=stalled_clients)
    staller.start()
    with client(s.url) as c:
        while bad < 1000:
            cases = bad_requests(rng)
            order.shuffle(cases)
            for method, path, content, headers, status, piece in cases:
                r = c.request(method, path, content=content, headers=headers)
                assert r.status_code == status, (method, path, piece, r.status_code, r.text)
                assert r.headers["content-type"] == "application/json", (path, piece)
                error = r.json()["error"]
                assert piece in error, (piece, error)
                bad += 1
                if bad % 5 == 0:
                    _good(c, bad, rng)
                    good += 1
        staller.join(60)
        _good(c, 1, rng)  # still answering after all of it
    elapsed = time.monotonic() - t0
    assert bad >= 1000 and good >= 200 and len(stalled_replies) == 20
    for reply in stalled_replies:
        assert reply.startswith(b"HTTP/1.1 408") and b"request body not received within 0.2 s" in reply
    assert elapsed < 60, f"{bad} bad requests took {elapsed:.0f} s"
    assert s.metric("divenet_requests_total", endpoint=INFER.replace("toy", "{name}"), status="500") == 0
    # every request got a whole response from the app (those whose client hung up went nowhere);
    # the last client that hung up may still be within its read timeout on a loaded machine
    deadline = time.monotonic() + 10
    while s.st.accepted != s.st.answered and time.monotonic() < deadline:
        time.sleep(0.05)
    assert s.st.accepted == s.st.answered
