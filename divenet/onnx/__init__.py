"""ONNX export and import.

``dn.onnx.export(model, example_input, path, opset=17, dynamic_batch=True, ...)`` traces one
eval-mode forward pass and writes the ops it ran as an ONNX graph (export.py);
``dn.onnx.load(path)`` returns a divenet Module that runs an ONNX file (load.py). How each op
maps, both ways, is the one table in ops.py. Needs the ``onnx`` package (``pip install
'divenet[onnx]'``); ONNX Runtime only to run the exported files elsewhere. See docs/onnx.md.

May import: divenet's tensor, autograd, backend, functional and nn layers (never cli, train or
serve, which import this package).
"""
from __future__ import annotations

# the functions take the names of their modules (divenet.onnx.export is the function; the
# module stays importable as divenet.onnx.export through sys.modules, e.g. ``from
# divenet.onnx.export import build``); onnx itself is imported only when one of them runs
from .export import ExportError, build, export  # noqa: E402
from .load import OnnxModule, load  # noqa: E402

__all__ = ["export", "build", "load", "ExportError", "OnnxModule"]
