"""Engines: what the server runs a batch on. Each takes a float32 (N, C, H, W) array and returns
the model's float32 (N, K) logits; the batcher calls ``infer`` from its one worker thread.

- :class:`DivenetEngine`: a divenet model (from a checkpoint) under ``no_grad``.
- :class:`OnnxEngine`: an ONNX file run by ONNX Runtime (CPU), read with onnxruntime directly.

:func:`open_engine` picks one for ``divenet serve``'s arguments.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np


class Engine:
    """Names and shapes for the metadata endpoint, and what /v1/predict needs to read an image."""

    kind = "?"
    input_name = "input"
    output_name = "logits"
    max_batch = None  # the largest batch the model takes (None: any)

    def __init__(self, model_name, input_shape, classes=None, meta=None):
        self.model_name = model_name
        self.meta = dict(meta or {})  # preprocessing for /v1/predict: invert, mean, std (data/images.normalize)
        self.input_shape = tuple(int(d) for d in input_shape)  # (C, H, W), without the batch axis
        out = self.infer(np.zeros((1, *self.input_shape), np.float32))  # warm-up, and the class count
        if out.ndim != 2 or out.shape[0] != 1:
            raise ValueError(f"{model_name}: the model's output has shape {out.shape}; the server "
                             "serves classifiers with (N, classes) outputs")
        self.num_classes = out.shape[1]
        if classes is not None and len(classes) != self.num_classes:
            raise ValueError(f"{model_name}: {len(classes)} class names for {self.num_classes} outputs")
        self.classes = list(classes) if classes is not None else [str(i) for i in range(self.num_classes)]

    @property
    def image_side(self):
        """The side /v1/predict resizes images to, or None when the input is not a square image."""
        c, h, w = self.input_shape
        return h if h == w and c in (1, 3) else None

    def infer(self, batch):
        raise NotImplementedError


class DivenetEngine(Engine):
    kind = "divenet"

    def __init__(self, model, meta, device="cpu"):
        import divenet as dn

        if meta.get("kind", "image") != "image":
            raise ValueError(f"{meta.get('model')} is a language model; the server serves image classifiers")
        self._dn = dn
        self.model = model.eval()
        self.device = dn.device(device) if isinstance(device, str) else device
        side = meta.get("input_size", 28)
        super().__init__(meta["model"], (meta["in_channels"], side, side), meta.get("classes"), meta)

    def infer(self, batch):
        dn = self._dn
        with dn.no_grad():
            return self.model(dn.tensor(batch, device=self.device)).numpy()


class OnnxEngine(Engine):
    """An ONNX classifier with one float input (N, C, H, W) and a (N, K) output. Class names and
    preprocessing (invert, mean, std) come from ``meta`` or else from the file's metadata_props,
    each value JSON-encoded as divenet.onnx.export writes them."""

    kind = "onnxruntime"

    def __init__(self, path, meta=None, threads=None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ValueError("--engine onnxruntime needs onnxruntime: pip install 'divenet[serve]'") from None
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime's load errors have several types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{path}: not a loadable ONNX model ({first})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ValueError(f"{path}: the server serves models with one input, this one has {len(inputs)}")
        inp = inputs[0]
        shape = list(inp.shape)
        if inp.type != "tensor(float)" or len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
            raise ValueError(f"{path}: input {inp.name!r} is {inp.type} {shape}; the server needs a float "
                             "(N, C, H, W) input with fixed C, H and W")
        if isinstance(shape[0], int):
            self.max_batch = shape[0]  # exported with a fixed batch
        self.input_name, self.output_name = inp.name, outputs[0].name
        if meta is None:
            meta = {}
            for key, text in self.session.get_modelmeta().custom_metadata_map.items():
                try:
                    meta[key] = json.loads(text)
                except ValueError:
                    raise ValueError(f"{path}: metadata {key!r} is not JSON ({text[:40]!r})") from None
        classes = meta.get("classes")
        if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)):
            raise ValueError(f"{path}: metadata 'classes' must be a list of names, got {classes!r}")
        name = meta.get("model") if isinstance(meta.get("model"), str) else Path(path).stem
        super().__init__(name, shape[1:], classes, meta)

    def infer(self, batch):
        return self.session.run([self.output_name], {self.input_name: batch})[0]


def _export_onnx(model, meta, device):
    """Export a checkpoint's model to a temporary ONNX file with divenet.onnx (for --engine
    onnxruntime on a checkpoint); returns the file's path."""
    import divenet as dn

    try:
        from divenet.onnx import export
    except ImportError:
        raise ValueError("--engine onnxruntime on a checkpoint needs divenet.onnx.export, which this "
                         "build lacks; serve an .onnx file instead") from None
    side = meta.get("input_size", 28)
    example = dn.zeros(1, meta["in_channels"], side, side, device=device)
    path = Path(tempfile.mkdtemp(prefix="divenet-serve-")) / f"{meta['model']}.onnx"
    export(model, example, path)  # OnnxEngine takes the checkpoint's metadata directly
    return path


def open_engine(path, engine=None, device="cpu", load_checkpoint=None):
    """The engine ``divenet serve PATH --engine ENGINE`` runs. ``path`` is an ``.onnx`` file or a
    checkpoint; ``load_checkpoint(path)`` returns a checkpoint's (metadata, model) (the CLI's
    loader, which checks the checkpoint). ``engine`` None: onnxruntime for an .onnx file, else divenet."""
    path = Path(path)
    onnx_file = path.suffix.lower() == ".onnx"
    engine = engine or ("onnxruntime" if onnx_file else "divenet")
    if engine not in ("divenet", "onnxruntime"):
        raise ValueError(f"unknown engine {engine!r}; choose divenet or onnxruntime")
    if onnx_file:
        if engine == "divenet":
            raise ValueError(f"{path}: the divenet engine serves checkpoints; serve an .onnx file with "
                             "--engine onnxruntime")
        return OnnxEngine(path)
    meta, model = load_checkpoint(path)
    if meta.get("kind", "image") != "image":
        raise ValueError(f"{path}: {meta.get('model')} is a language model; the server serves image classifiers")
    if engine == "divenet":
        return DivenetEngine(model, meta, device)
    exported = _export_onnx(model, meta, device)
    try:
        return OnnxEngine(exported, meta)
    finally:  # the session holds the model in memory
        shutil.rmtree(exported.parent, ignore_errors=True)
