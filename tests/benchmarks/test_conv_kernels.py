"""benchmarks/conv_kernels.py runs end to end (two tiny layers, one for Winograd), names the
kernel the dispatch took, and restores the dispatch it switches off for its im2col column."""
import json

import numpy as np

from benchmarks import conv_kernels
from divenet.ops import conv as C


def test_conv_kernels_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(conv_kernels, "LAYERS", [("tiny 4->8 k3 6x6 b2", (2, 4, 6, 6), (8, 4, 3, 3), 1, 1, 1),
                                                 ("96->96 k3 8x8 b32", (32, 96, 8, 8), (96, 96, 3, 3), 1, 1, 1)])
    real = C._implicit, C._winograd_takes
    out = tmp_path / "k.json"
    tables = conv_kernels.main(conv_kernels.run, "", ["--rounds", "1", "--json", str(out)])
    assert (C._implicit, C._winograd_takes) == real
    assert [t.title for t in tables] == ["convolution kernels: forward", "convolution kernels: forward + backward"]
    for t in tables:
        tiny, wide = t.rows
        assert tiny["kind"] in ("direct", "implicit", "im2col")
        assert wide["kind"] == ("winograd" if C._native.usable(np.zeros(1, np.float32)) else "im2col")
        for row in t.rows:
            assert row["vs_im2col"] > 0 and row["divenet"] > 0 and row["pytorch"] > 0
    saved = json.loads(out.read_text())
    assert "convolution kernels: forward" in json.dumps(saved)
