"""divenet's model server: ``divenet serve CHECKPOINT_OR_ONNX`` (docs/serving.md).

Owns the HTTP API (app.py: KServe v2 inference protocol, an image endpoint, health and
Prometheus metrics, on Starlette + uvicorn), the dynamic batcher (batcher.py), the engines that
run a batch (engines.py: divenet models, ONNX Runtime) and the metrics (metrics.py). It may
import divenet's public API, divenet.data.images (the image reader it shares with ``divenet
predict``) and divenet.onnx; nothing below imports it. Its dependencies are the ``serve``
extra: ``pip install 'divenet[serve]'``.
"""
from .batcher import Batcher, Closed, QueueFull
from .engines import DivenetEngine, Engine, OnnxEngine, open_engine


def __getattr__(name):  # the app needs starlette and uvicorn: loaded only when used
    if name in ("create_app", "run"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'divenet.serve' has no attribute {name!r}")


__all__ = ["Batcher", "Closed", "QueueFull", "Engine", "DivenetEngine", "OnnxEngine", "open_engine",
           "create_app", "run"]
