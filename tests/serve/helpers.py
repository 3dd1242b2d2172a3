"""Helpers of the server tests: a toy engine, the real app on uvicorn in a thread of this process
(on a free port of 127.0.0.1), request bodies and images."""
from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time

import httpx
import numpy as np
import uvicorn

from divenet.serve import Engine
from divenet.serve.app import listen

CLASSES = [f"class{i}" for i in range(10)]
LENET = {"model": "lenet", "kind": "image", "num_classes": 10, "in_channels": 1, "input_size": 28,
         "classes": CLASSES}


class ToyEngine(Engine):
    """A 1x4x4 input and 3 outputs: row i of the output is 2 * the first 3 inputs of sample i. While
    ``gate`` is cleared, a batch waits on it (a slow model); ``batches`` records each batch size;
    ``fail``, when set, is raised by the next batch."""

    kind = "toy"

    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()
        self.batches = []
        self.fail = None
        super().__init__("toy", (1, 4, 4), ["a", "b", "c"])
        self.batches.clear()  # not the warm-up

    def infer(self, batch):
        self.batches.append(len(batch))
        if self.fail is not None:
            exc, self.fail = self.fail, None
            raise exc
        if not self.gate.wait(30):
            raise RuntimeError("toy gate never opened")
        return batch.reshape(len(batch), -1)[:, :3] * 2


class Served:
    def __init__(self, app):
        self.app, self.st = app, app.st
        sock = listen("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="error", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.01)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "the server did not stop"

    def metric(self, name, **labels):
        """A sample's value from /metrics (0 when absent)."""
        text = httpx.get(self.url + "/metrics").text
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        for line in text.splitlines():
            if line.split(" ")[0] == want:
                return float(line.split(" ")[1])
        return 0.0


def infer_body(x, name="input", **extra):
    return {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                        "data": np.asarray(x, np.float32).ravel().tolist()}], **extra}


def binary_body(x, name="input", binary_output=False, **extra):
    """(content, headers) of an infer request in KServe's binary tensor extension."""
    raw = np.ascontiguousarray(x, "<f4").tobytes()
    req = {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                       "parameters": {"binary_data_size": len(raw)}}], **extra}
    if binary_output:
        req["parameters"] = {"binary_data_output": True}
    header = json.dumps(req).encode()
    return header + raw, {"inference-header-content-length": str(len(header)),
                          "content-type": "application/octet-stream"}


def read_binary_reply(r):
    """(JSON header, output array) of a binary-extension reply."""
    n = int(r.headers["inference-header-content-length"])
    header = json.loads(r.content[:n])
    (o,) = header["outputs"]
    assert o["parameters"]["binary_data_size"] == len(r.content) - n and "data" not in o
    return header, np.frombuffer(r.content[n:], "<f4").reshape(o["shape"])


def png(width, height, mode="L", seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (height, width) if mode in ("L", "1") else (height, width, len(mode))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def huge_png(width, height):
    """A PNG whose header declares width x height, with a few bytes of pixel data: what a bomb
    looks like before it is decoded."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + chunk(b"IEND", b""))


@contextlib.contextmanager
def client(url, **kw):
    # without TCP_NODELAY a body sent after its headers waits for the server's delayed ACK (40 ms)
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    with httpx.Client(base_url=url, timeout=30, transport=transport, **kw) as c:
        yield c
