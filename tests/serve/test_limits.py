"""The server's limits: a full queue (503 + Retry-After), bodies over the size limit (413, with
and without Content-Length), a client that stops sending (408 after the read timeout), a
request not answered in time (504), images over the pixel limit (refused from the header), and
a failing engine (500); after each the server answers good requests."""
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .helpers import ToyEngine, client, huge_png, infer_body, png


def _x(i=0):
    return np.full((1, 1, 4, 4), i, np.float32)


def _ok(c, i=1.5):
    r = c.post("/v2/models/toy/infer", json=infer_body(_x(i)))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [2 * i] * 3


def test_full_queue_answers_503_with_retry_after(serve):
    engine = ToyEngine()
    s = serve(engine, max_batch=1, max_delay_ms=0, max_queue=3)
    engine.gate.clear()  # the model is slow: one request runs, three wait, the rest are refused
    with ThreadPoolExecutor(8) as pool:
        def one(i):
            with client(s.url) as c:
                return c.post("/v2/models/toy/infer", json=infer_body(_x(i)))

        futures = [pool.submit(one, i) for i in range(8)]
        deadline = time.monotonic() + 20
        while sum(f.done() for f in futures) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        refused = [f.result() for f in futures if f.done()]
        engine.gate.set()
        replies = [f.result() for f in futures]
    assert len(refused) == 4
    for r in refused:
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "the queue is full (3 requests waiting)" in r.json()["error"]
    answered = [(i, r) for i, r in enumerate(replies) if r.status_code == 200]
    assert len(answered) == 4
    for i, r in answered:
        assert r.json()["outputs"][0]["data"] == [2.0 * i] * 3
    with client(s.url) as c:
        _ok(c)


def test_body_over_the_limit_is_413(serve):
    s = serve(ToyEngine(), max_body_bytes=1000)
    with client(s.url) as c:
        r = c.post("/v1/predict", content=b"\0" * 5000)
        assert r.status_code == 413
        assert r.json()["error"] == "request body of 5,000 bytes is over the limit of 1,000 bytes (--max-body-mb)"

        def chunks():  # no Content-Length: counted while read
            for _ in range(10):
                yield b"\0" * 500

        r = c.post("/v2/models/toy/infer", content=chunks())
        assert r.status_code == 413 and "over the limit of 1,000 bytes" in r.json()["error"]
        _ok(c)


def test_client_that_stops_sending_gets_408_within_the_read_timeout(serve):
    s = serve(ToyEngine(), read_timeout_s=0.5)
    port = int(s.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/toy/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n{\"inp")
        t0 = time.monotonic()
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            part = sock.recv(4096)
            if not part:
                break
            reply += part
        waited = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert b"request body not received within 0.5 s (5 bytes arrived)" in reply
    assert 0.4 < waited < 5
    with client(s.url) as c:
        _ok(c)


def test_request_not_answered_in_time_is_504_and_not_computed_later(serve):
    engine = ToyEngine()
    s = serve(engine, max_batch=1, max_delay_ms=0, timeout_s=0.3)
    engine.gate.clear()
    with ThreadPoolExecutor(2) as pool:
        def one(i):
            with client(s.url) as c:
                return c.post("/v2/models/toy/infer", json=infer_body(_x(i)))

        first = pool.submit(one, 1)
        while not engine.batches:
            time.sleep(0.01)
        queued = pool.submit(one, 2)  # waits behind the stuck one, then times out
        r = queued.result(10)
        engine.gate.set()
        assert first.result(10).status_code == 504  # it was running when its time ran out
    assert r.status_code == 504
    assert r.json()["error"] == "inference did not finish within 0.3 s (--timeout-s)"
    with client(s.url) as c:
        _ok(c, 3.0)
    assert engine.batches == [1, 1]  # the timed-out queued request never ran


def test_huge_images_are_refused_before_decoding(serve, lenet):
    s = serve(lenet[0], max_pixels=1_000_000)
    with client(s.url) as c:
        t0 = time.monotonic()
        r = c.post("/v1/predict", content=huge_png(20_000, 20_000))
        assert time.monotonic() - t0 < 5  # 400 Mpixels would take far longer to decode
        assert r.status_code == 400  # Pillow's guard refuses it in open(), before the pixel limit
        assert r.json()["error"].startswith("the uploaded image: refused, too large to decode safely")
        r = c.post("/v1/predict", content=huge_png(5000, 5000))
        assert r.status_code == 400
        assert r.json()["error"] == ("the uploaded image: refused, 5000x5000 is 25,000,000 pixels, over the "
                                     "limit of 1,000,000")
        r = c.post("/v1/predict", content=huge_png(1001, 1000))
        assert r.status_code == 400 and "1001x1000 is 1,001,000 pixels" in r.json()["error"]
        assert c.post("/v1/predict", content=png(28, 28)).status_code == 200


def test_pillow_bomb_guard_applies_without_a_pixel_limit(serve, lenet):
    s = serve(lenet[0], max_pixels=None)
    with client(s.url) as c:
        # 100 Mpixels: in Pillow's warning band (MAX_IMAGE_PIXELS to twice that), refused too
        r = c.post("/v1/predict", content=huge_png(10_000, 10_000))
        assert r.status_code == 400 and "refused, too large to decode safely" in r.json()["error"]
        assert c.post("/v1/predict", content=png(28, 28)).status_code == 200


def test_engine_failure_is_500_and_the_server_goes_on(serve):
    engine = ToyEngine()
    s = serve(engine)
    engine.fail = MemoryError("out of memory")
    with client(s.url) as c:
        r = c.post("/v2/models/toy/infer", json=infer_body(_x()))
        assert r.status_code == 500 and r.json()["error"] == "inference failed: MemoryError: out of memory"
        _ok(c)
