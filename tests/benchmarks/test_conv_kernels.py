"""benchmarks/conv_kernels.py runs end to end (one tiny layer), names the kernel the dispatch
took, and restores the dispatch it switches off for its im2col column."""
import json

from benchmarks import conv_kernels
from divenet.ops import conv as C


def test_conv_kernels_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(conv_kernels, "LAYERS", [("tiny 4->8 k3 6x6 b2", (2, 4, 6, 6), (8, 4, 3, 3), 1, 1, 1)])
    real = C._implicit
    out = tmp_path / "k.json"
    tables = conv_kernels.main(conv_kernels.run, "", ["--rounds", "1", "--json", str(out)])
    assert C._implicit is real
    assert [t.title for t in tables] == ["convolution kernels: forward", "convolution kernels: forward + backward"]
    for t in tables:
        (row,) = t.rows
        assert row["kind"] in ("direct", "implicit", "im2col") and row["vs_im2col"] > 0
        assert row["divenet"] > 0 and row["pytorch"] > 0
    saved = json.loads(out.read_text())
    assert "convolution kernels: forward" in json.dumps(saved)
