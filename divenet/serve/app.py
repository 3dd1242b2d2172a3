"""The HTTP API (a Starlette app) and :func:`run`, which serves it with uvicorn.

Every request is checked before it reaches the batcher; a bad one is answered 4xx with
``{"error": "..."}`` naming what was wrong (KServe's error body), and never reaches the engine.
Infer takes JSON tensors or, in Triton's binary tensor extension, a JSON header followed by the
raw FP32 bytes (``Inference-Header-Content-Length``), and answers in the same way when asked.
Bodies are read with a size limit (413) and a time limit (408), so a client that stops sending
halfway holds its connection for at most ``read_timeout_s``. JSON parsing, tensor checks and
image decoding run on worker threads, inference on the batcher's thread: the event loop only
moves bytes.
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import re
import socket
import time

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from ..data.images import ImageError, normalize, read_image
from .batcher import Batcher, Closed, QueueFull
from .metrics import Metrics

# KServe v2's tensor datatypes; the models served here take FP32
DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
             "FP32", "FP64", "BYTES", "BF16")
IMAGE_FORMATS = ("PNG", "JPEG")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a model name is one URL path segment


class APIError(Exception):
    """A request the server answers with ``status`` and ``{"error": message}``."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class ServerState:
    """The engine, the limits, the batcher (while running), the metrics and the request counts."""

    def __init__(self, engine, name, max_batch, max_delay_ms, max_queue, timeout_s, read_timeout_s,
                 max_body_bytes, max_pixels):
        if engine.max_batch is not None and max_batch > engine.max_batch:
            raise ValueError(f"--max-batch {max_batch}: the model takes batches of at most "
                             f"{engine.max_batch} (its input has a fixed batch axis)")
        if not NAME.match(name):
            raise ValueError(f"model name {name!r}: use letters, digits, '_', '.' and '-'")
        self.engine, self.name = engine, name
        self.max_batch, self.max_delay_s, self.max_queue = max_batch, max_delay_ms / 1000, max_queue
        self.timeout_s, self.read_timeout_s = timeout_s, read_timeout_s
        self.max_body_bytes, self.max_pixels = max_body_bytes, max_pixels
        self.batcher = None
        self.draining = False
        self.accepted = self.answered = 0  # requests that reached the app / got a whole response
        self.metrics = Metrics(max_batch, lambda: self.batcher.depth if self.batcher else 0)

    @property
    def ready(self):
        return self.batcher is not None and not self.draining

    def start(self):
        self.batcher = Batcher(self.engine.infer, self.max_batch, self.max_delay_s, self.max_queue,
                               on_batch=self.metrics.observe_batch)

    def stop(self):
        self.draining = True
        if self.batcher is not None:
            self.batcher.close()  # answers every queued request first


# ---- reading and checking requests ---------------------------------------------------------------
async def _read_body(request, st):
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise APIError(400, f"Content-Length {length!r} is not a byte count")
        if int(length) > st.max_body_bytes:
            raise APIError(413, f"request body of {int(length):,} bytes is over the limit of "
                                f"{st.max_body_bytes:,} bytes (--max-body-mb)")
    chunks, size = [], 0
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(loop.time() + st.read_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > st.max_body_bytes:
                    raise APIError(413, f"request body is over the limit of {st.max_body_bytes:,} bytes "
                                        "(--max-body-mb)")
                chunks.append(chunk)
    except TimeoutError:
        raise APIError(408, f"request body not received within {st.read_timeout_s:g} s "
                            f"({size:,} bytes arrived)") from None
    except ClientDisconnect:
        raise APIError(400, f"client disconnected after {size:,} bytes of the body") from None
    return b"".join(chunks)


def _json(body):
    try:
        return json.loads(body)
    except RecursionError:
        raise APIError(400, "request body is not usable JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise APIError(400, f"request body is not valid JSON ({exc})") from None


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _split_binary(body, headers):
    """The JSON header and the binary tail of a request in KServe's binary tensor extension
    (Triton's ``Inference-Header-Content-Length``: that many bytes of JSON, then the raw
    tensor bytes); a plain JSON request has no tail (None)."""
    length = headers.get("inference-header-content-length")
    if length is None:
        return body, None
    if not length.isdigit():
        raise APIError(400, f"Inference-Header-Content-Length {length!r} is not a byte count")
    if int(length) > len(body):
        raise APIError(400, f"Inference-Header-Content-Length is {int(length):,}, but the body has only "
                            f"{len(body):,} bytes")
    return body[:int(length)], body[int(length):]


def _params(d, where):
    params = d.get("parameters", {})
    if not isinstance(params, dict):
        raise APIError(400, f"{where}.parameters must be an object, got {type(params).__name__}")
    return params


def _tensor_values(t, shape, tail):
    """The FP32 values of input tensor ``t`` of ``shape``: from the binary tail when its
    parameters give ``binary_data_size``, else from its JSON ``data`` list."""
    need = math.prod(shape)
    size = _params(t, "inputs[0]").get("binary_data_size")
    if size is not None:
        if tail is None:
            raise APIError(400, "inputs[0].parameters.binary_data_size is set, but the request has no "
                                "Inference-Header-Content-Length header saying where its JSON ends")
        if "data" in t:
            raise APIError(400, "inputs[0] has both 'data' and parameters.binary_data_size; send one")
        if not _is_int(size) or size != 4 * need:
            raise APIError(400, f"inputs[0].parameters.binary_data_size is {size!r}; shape {shape} of FP32 "
                                f"takes {4 * need:,} bytes")
        if len(tail) != size:
            raise APIError(400, f"the body has {len(tail):,} bytes after its JSON header; "
                                f"inputs[0].parameters.binary_data_size says {size:,}")
        return np.frombuffer(tail, dtype="<f4").astype(np.float32).reshape(shape)
    if tail:
        raise APIError(400, f"the body has {len(tail):,} bytes after its JSON header, but no input "
                            "declares them (parameters.binary_data_size)")
    if "data" not in t:
        raise APIError(400, "inputs[0] has no 'data' field (nor parameters.binary_data_size)")
    data = t["data"]
    if not isinstance(data, list):
        raise APIError(400, f"inputs[0].data must be a list of numbers, got {type(data).__name__}")
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, RecursionError):
        raise APIError(400, "inputs[0].data is not a flat or rectangular nested list of numbers") from None
    if arr.dtype.kind not in "iuf" or (arr.size == 0 and need != 0):
        what = {"b": "booleans", "U": "strings", "O": "mixed or non-numeric values"}.get(arr.dtype.kind, arr.dtype)
        raise APIError(400, f"inputs[0].data must hold FP32 numbers, got {what}")
    if arr.size != need or (arr.ndim > 1 and list(arr.shape) != shape):
        raise APIError(400, f"inputs[0].data holds {arr.size} values in shape {list(arr.shape)}; "
                            f"shape {shape} needs {need}")
    with np.errstate(over="ignore"):
        return arr.astype(np.float32).reshape(shape)


def _parse_infer(body, headers, st):
    """The input tensor (N, C, H, W) float32 of a KServe v2 infer request (JSON, or with the
    binary tensor extension), its id, and whether the output goes back as binary."""
    engine = st.engine
    header, tail = _split_binary(body, headers)
    req = _json(header)
    expect = f"[-1, {', '.join(map(str, engine.input_shape))}]"
    if not isinstance(req, dict):
        raise APIError(400, f"request body must be a JSON object with an 'inputs' list, got {type(req).__name__}")
    if "inputs" not in req:
        raise APIError(400, "request has no 'inputs' field")
    inputs = req["inputs"]
    if not isinstance(inputs, list) or len(inputs) != 1:
        got = f"{len(inputs)} inputs" if isinstance(inputs, list) else type(inputs).__name__
        raise APIError(400, f"'inputs' must be a list of one tensor (the model's input "
                            f"{engine.input_name!r}), got {got}")
    t = inputs[0]
    if not isinstance(t, dict):
        raise APIError(400, f"inputs[0] must be an object with name, shape, datatype and data, got "
                            f"{type(t).__name__}")
    for field in ("name", "shape", "datatype"):
        if field not in t:
            raise APIError(400, f"inputs[0] has no {field!r} field")
    if t["name"] != engine.input_name:
        raise APIError(400, f"inputs[0].name is {t['name']!r}; the model's input is {engine.input_name!r}")
    dt = t["datatype"]
    if not isinstance(dt, str) or dt not in DATATYPES:
        raise APIError(400, f"inputs[0].datatype {dt!r} is not a KServe v2 datatype (the model takes FP32)")
    if dt != "FP32":
        raise APIError(400, f"inputs[0].datatype is {dt}; the model's input {engine.input_name!r} is FP32")
    shape = t["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise APIError(400, f"inputs[0].shape must be a list of non-negative integers, got {shape!r}")
    if len(shape) != 4 or tuple(shape[1:]) != engine.input_shape:
        raise APIError(400, f"inputs[0].shape {shape} does not fit the model's input {expect}")
    n = shape[0]
    if not 1 <= n <= st.max_batch:
        raise APIError(400, f"inputs[0].shape {shape}: a batch of {n}; this server takes 1 to "
                            f"{st.max_batch} per request (--max-batch)")
    x = _tensor_values(t, shape, tail)
    if not np.isfinite(x).all():
        raise APIError(400, "inputs[0].data holds NaN, infinity or values beyond FP32's range")
    binary_out = _params(req, "request").get("binary_data_output", False)
    outputs = req.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(
                isinstance(o, dict) and o.get("name") == engine.output_name for o in outputs):
            raise APIError(400, f"'outputs' may only request the model's output {engine.output_name!r}, "
                                f"got {outputs!r}")
        binary_out = any(_params(o, "outputs[0]").get("binary_data", binary_out) for o in outputs)
    if not isinstance(binary_out, bool):
        raise APIError(400, f"binary_data / binary_data_output must be true or false, got {binary_out!r}")
    rid = req.get("id")
    if rid is not None and not isinstance(rid, str):
        raise APIError(400, f"'id' must be a string, got {rid!r}")
    return x, rid, binary_out


async def _image_bytes(request, body):
    """The image of a /v1/predict body: the body itself, or the file of a multipart form."""
    ctype = request.headers.get("content-type", "")
    if ctype.lower().startswith("multipart/form-data"):
        from starlette.datastructures import UploadFile
        from starlette.formparsers import MultiPartException, MultiPartParser

        async def stream():
            yield body
            yield b""

        try:
            form = await MultiPartParser(request.headers, stream(), max_files=1, max_fields=16).parse()
        except MultiPartException as exc:
            raise APIError(400, f"malformed multipart body ({exc.message})") from None
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise APIError(400, "multipart body has no file part; send the image as a file field, "
                                "e.g. curl -F file=@image.png")
        data = await files[0].read()
        await form.close()
        body = data
    if not body:
        raise APIError(400, "empty image; send a PNG or JPEG image as the body or as a multipart file field")
    return body


def _decode_image(data, st):
    c, side = st.engine.input_shape[0], st.engine.image_side
    try:
        return read_image(io.BytesIO(data), c, side, name="the uploaded image", max_pixels=st.max_pixels,
                          formats=IMAGE_FORMATS)
    except ImageError as exc:
        raise APIError(400, str(exc)) from None


def _query_int(request, key, default, low, high):
    text = request.query_params.get(key)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise APIError(400, f"query parameter {key} must be an integer from {low} to {high}, got {text!r}")
    return int(text)


def _query_bool(request, key):
    text = request.query_params.get(key, "false").lower()
    if text not in ("1", "0", "true", "false"):
        raise APIError(400, f"query parameter {key} must be true or false, got {text!r}")
    return text in ("1", "true")


# ---- running and answering -----------------------------------------------------------------------
async def _infer(st, x):
    if st.batcher is None:
        raise APIError(503, "the server is not ready", {"Retry-After": "1"})
    try:
        future = st.batcher.submit(x)
    except QueueFull as exc:
        raise APIError(503, f"{exc}; retry later (--max-queue)", {"Retry-After": "1"}) from None
    except Closed:
        raise APIError(503, "the server is shutting down", {"Retry-After": "1"}) from None
    try:
        out = await asyncio.wait_for(asyncio.wrap_future(future), st.timeout_s)
    except TimeoutError:
        raise APIError(504, f"inference did not finish within {st.timeout_s:g} s (--timeout-s)") from None
    except Exception as exc:  # noqa: BLE001 - the engine's failure, reported to the client
        raise APIError(500, f"inference failed: {type(exc).__name__}: {exc}") from None
    if not np.isfinite(out).all():
        raise APIError(500, "the model produced NaN or infinity")
    return out


def _model(request):
    st = request.app.state.server
    if request.path_params["name"] != st.name:
        raise APIError(404, f"model {request.path_params['name']!r} not found; this server serves {st.name!r}")
    return st


async def live(request):
    return JSONResponse({"live": True})


async def ready(request):
    st = request.app.state.server
    return JSONResponse({"ready": st.ready}, status_code=200 if st.ready else 503)


async def ping(request):  # TorchServe's health check
    st = request.app.state.server
    return JSONResponse({"status": "Healthy" if st.ready else "Unhealthy"}, status_code=200 if st.ready else 503)


async def server_metadata(request):
    from .. import __version__

    return JSONResponse({"name": "divenet", "version": __version__,
                         "extensions": ["binary_tensor_data"]})


async def model_metadata(request):
    st = _model(request)
    e = st.engine
    return JSONResponse({
        "name": st.name, "versions": ["1"], "platform": e.kind,
        "inputs": [{"name": e.input_name, "datatype": "FP32", "shape": [-1, *e.input_shape]}],
        "outputs": [{"name": e.output_name, "datatype": "FP32", "shape": [-1, e.num_classes]}],
        "parameters": {"model": e.model_name, "classes": e.classes, "max_batch_size": st.max_batch,
                       "image_side": e.image_side},
    })


async def model_ready(request):
    st = _model(request)
    return JSONResponse({"name": st.name, "ready": st.ready}, status_code=200 if st.ready else 503)


async def infer(request):
    st = _model(request)
    body = await _read_body(request, st)
    x, rid, binary_out = await run_in_threadpool(_parse_infer, body, request.headers, st)
    out = await _infer(st, x)
    tensor = {"name": st.engine.output_name, "datatype": "FP32", "shape": list(out.shape)}
    reply = {"model_name": st.name, "model_version": "1", "outputs": [tensor]}
    if rid is not None:
        reply["id"] = rid
    if not binary_out:
        tensor["data"] = out.ravel().tolist()
        return JSONResponse(reply)
    raw = np.ascontiguousarray(out, dtype="<f4").tobytes()
    tensor["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps(reply, separators=(",", ":")).encode()
    return Response(header + raw, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})


async def predict(request):
    st = request.app.state.server
    e = st.engine
    if e.image_side is None:
        raise APIError(400, f"/v1/predict reads images, but the model's input is "
                            f"{'x'.join(map(str, e.input_shape))}; use /v2/models/{st.name}/infer")
    top = _query_int(request, "top", min(3, e.num_classes), 1, e.num_classes)
    invert = _query_bool(request, "invert")
    data = await _image_bytes(request, await _read_body(request, st))
    image, note = await run_in_threadpool(_decode_image, data, st)
    image = normalize(image, e.meta, invert)  # as divenet predict does
    logits = (await _infer(st, image[None]))[0].astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    best = np.argsort(-p, kind="stable")[:top]
    reply = {"model_name": st.name,
             "predictions": [{"label": e.classes[i], "index": int(i), "probability": float(p[i])} for i in best]}
    if note:
        reply["note"] = note
    return JSONResponse(reply)


async def metrics(request):
    st = request.app.state.server
    return Response(st.metrics.text(), media_type=st.metrics.content_type)


async def _api_error(request, exc):
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)


async def _http_error(request, exc):  # routing's 404 and 405
    detail = {404: f"no endpoint {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
    return JSONResponse({"error": detail.get(exc.status_code, exc.detail)}, status_code=exc.status_code,
                        headers=exc.headers)


async def _internal_error(request, exc):
    return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)


class _Instrumented:
    """Outermost ASGI layer: counts each request by route template and status, times it, and keeps
    the accepted / answered counts that the shutdown summary reports."""

    def __init__(self, app, st):
        self.app, self.st = app, st
        self.state = app.state  # uvicorn and tests reach app.state through the wrapper
        self.routes = app.routes

    def _endpoint(self, scope):
        for route in self.routes:
            if route.matches(scope)[0] != Match.NONE:
                return route.path
        return "other"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        st = self.st
        st.accepted += 1
        start = time.perf_counter()
        status, done = 500, False

        async def send_counted(message):
            nonlocal status, done
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                done = True

        try:
            await self.app(scope, receive, send_counted)
        finally:
            st.answered += done
            st.metrics.observe_request(self._endpoint(scope), status, time.perf_counter() - start)


def create_app(engine, *, name=None, max_batch=32, max_delay_ms=5.0, max_queue=256, timeout_s=30.0,
               read_timeout_s=None, max_body_bytes=16 << 20, max_pixels=25_000_000):
    """The ASGI app serving ``engine``; ``read_timeout_s`` (default ``timeout_s``) bounds the
    time a request's body may take to arrive. The batcher starts and stops with the app's lifespan."""
    st = ServerState(engine, name or engine.model_name, max_batch, max_delay_ms, max_queue, timeout_s,
                     read_timeout_s if read_timeout_s is not None else timeout_s, max_body_bytes, max_pixels)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        st.start()
        yield
        await run_in_threadpool(st.stop)

    routes = [
        Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/ping", ping),
        Route("/v2", server_metadata), Route("/v2/models/{name}", model_metadata),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v1/predict", predict, methods=["POST"]), Route("/metrics", metrics),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        APIError: _api_error, HTTPException: _http_error, Exception: _internal_error})
    app.state.server = st
    return _Instrumented(app, st)


# ---- serving -------------------------------------------------------------------------------------
def listen(host, port):
    """A listening TCP socket on host:port (port 0: a free one). Its protocol is set explicitly:
    asyncio turns TCP_NODELAY on for accepted sockets only when they report IPPROTO_TCP, and one
    made with proto 0 (socket.create_server) left Nagle on, so every keep-alive request after
    the first waited ~44 ms for the client's delayed ACK (measured on Linux, uvicorn 0.54)."""
    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except OSError as exc:  # socket.gaierror too
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def run(engine, *, host="127.0.0.1", port=8000, log=print, log_level="warning", **options):
    """Serve ``engine`` on host:port until SIGTERM or SIGINT, then stop gracefully: the listening
    socket closes, every request already accepted is answered, the batcher drains, and ``run``
    returns 0. A second signal stops at once. ``options`` go to :func:`create_app`."""
    import uvicorn

    app = create_app(engine, **options)
    st = app.st
    sock = listen(host, port)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # uvicorn would re-raise the signal after its graceful stop, killing the process by
            # it; a graceful stop here ends with the summary line and exit status 0
            st.draining = True  # /v2/health/ready answers 503 from now on
            self.force_exit = self.should_exit
            self.should_exit = True

    server = Server(uvicorn.Config(app, lifespan="on", log_level=log_level, access_log=False,
                                   timeout_graceful_shutdown=None))
    e = engine
    log(f"divenet serve: {st.name} ({e.kind}, input {'x'.join(map(str, e.input_shape))}, "
        f"{e.num_classes} classes) on http://{host}:{sock.getsockname()[1]}; max batch {st.max_batch}, "
        f"max delay {st.max_delay_s * 1000:g} ms", flush=True)
    server.run(sockets=[sock])
    log(f"divenet serve: stopped; answered {st.answered} of {st.accepted} requests accepted", flush=True)
    return 0
