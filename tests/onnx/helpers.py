"""Shared pieces of the ONNX tests: ONNX Runtime sessions and output comparison."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

import divenet as dn

RTOL, ATOL = 1e-4, 1e-5
BATCHES = (1, 3)  # through the dynamic batch axis: the export traced at 1 (and 2)


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # CI has 2 cores shared by the whole suite
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_ort(sess, *inputs):
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, dict(zip(names, inputs)))


def run_dn(model, *inputs):
    with dn.no_grad():
        out = model(*[dn.tensor(x) for x in inputs])
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def assert_close(ours, ref, what):
    """Equal within RTOL/ATOL at the output's own scale: both are divided by the reference's
    standard deviation, so that a net whose random weights give outputs of 1e-5 (VGG's
    N(0, 0.01) dense layers) or 1e4 (a deep ResNet with random batch-norm statistics) is held
    to the same relative standard as one with outputs near 1."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype} != {ref.dtype}"
    if ref.dtype.kind != "f":
        np.testing.assert_array_equal(ours, ref, err_msg=what)
        return
    scale = float(np.std(ref.astype(np.float64))) or 1.0
    np.testing.assert_allclose(ours / scale, ref / scale, rtol=RTOL, atol=ATOL, err_msg=what)
