"""``divenet graph`` and divenet/graphviz.py: the DOT graph has one node per recorded op and one
edge per array passed between ops, Graphviz parses and renders it with the labels, the bytes live
stand beside the ops, the memory timeline measures checkpointing's saving and draws a non-empty
picture, and missing Graphviz or nonsense flags are one-line errors."""
import re
import shutil
import subprocess

import pytest

import divenet as dn
import divenet.nn as nn
from divenet import graphviz as G
from divenet.cli import main

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="apt-get install graphviz")


class _Residual(nn.Module):
    def __init__(self, c):
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return nn.functional.relu(self.bn(self.conv(x)) + x)


def _net():
    dn.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _Residual(4), _Residual(4), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3))


def _traced():
    return G.trace_forward(_net(), (dn.randn(2, 3, 6, 6),))


def _node_ids(dot):
    return re.findall(r"^\s*(op\d+) \[", dot, flags=re.M)


def test_one_node_per_op_and_one_edge_per_array():
    prof = _traced()
    ops = [r for r in prof.ops if r.forward.phase == "forward" and r.step == 0]
    dot = G.graph_dot(prof, "net")
    assert _node_ids(dot) == [f"op{r.index}" for r in ops]
    edges = re.findall(r"^\s*(\w+) -> (op\d+);", dot, flags=re.M)
    made = [(f"op{src}", f"op{r.index}") for r in ops for src in r.inputs_from if isinstance(src, int)]
    assert sorted(e for e in edges if e[0].startswith("op")) == sorted(made)
    assert [e for e in edges if e[0].startswith("in")] == [("in0", "op0")]  # the model input, once
    adds = [r for r in ops if r.kind == "Add"]
    assert len(adds) == 2 and all(sum(isinstance(s, int) for s in r.inputs_from) == 2 for r in adds)
    assert dot.count("+2 params") == sum(1 for r in ops if r.kind in ("Conv2d", "BatchNorm", "Linear"))
    for r in ops:  # the memory plan beside each op
        assert re.search(rf"op{r.index} \[.*xlabel=\"[\d.]+ [KM]B live\"", dot)


@needs_dot
def test_dot_parses_and_the_svg_holds_the_labels(tmp_path):
    prof = _traced()
    ops = [r for r in prof.ops if r.step == 0]
    dot = G.graph_dot(prof, "net")
    canon = subprocess.run(["dot", "-Tcanon"], input=dot.encode(), capture_output=True, check=True).stdout.decode()
    assert len(re.findall(r"^\s*op\d+\s+\[", canon, flags=re.M)) == len(ops)
    svg = G.write_graph(dot, tmp_path / "g.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and svg.count('class="node"') == len(ops) + 1  # and the input
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    for r in ops:
        assert r.kind in texts and (r.path or "(top)") in texts
    assert "2x4x6x6" in texts and "input" in texts
    png = G.write_graph(dot, tmp_path / "g.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_graphviz_svg_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="install graphviz.*--out .*g.dot"):
        G.write_graph("digraph {}", tmp_path / "g.svg")
    assert main(["graph", "lenet", "--out", str(tmp_path / "g.svg")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "graphviz" in err[0] and ".dot" in err[0]
    assert not (tmp_path / "g.svg").exists()
    # a .dot file needs no Graphviz
    assert main(["graph", "lenet", "--out", str(tmp_path / "g.dot")]) == 0
    assert len(_node_ids((tmp_path / "g.dot").read_text())) == 13


def test_timeline_checkpointing_keeps_less(tmp_path):
    dn.manual_seed(0)
    model = nn.Sequential(*[nn.Sequential(*[layer for _ in range(4) for layer in (nn.Linear(128, 128), nn.Tanh())])
                            for _ in range(4)])
    x = dn.randn(256, 128)
    model.zero_grad()
    timeline = G.memory_timeline(model, (x,), modes=("eager", "checkpoint"))
    eager, ckpt = timeline["eager"], timeline["checkpoint"]
    assert eager[0].count("forward") == 32 + 1  # 32 layers and the loss (cross-entropy)
    assert ckpt[0].count("forward") == 32 + 4 + 1  # the unrecorded run, a checkpoint node per block, the loss
    assert ckpt[0].count("recompute") == 32
    assert "recompute" in ckpt[0] and "recompute" not in eager[0]

    def at_forward_end(phases, live):
        return live[phases.index("backward") - 1]

    # after the forward pass eager keeps an activation per Linear-Tanh pair (16 x 128 KB: the
    # Tanh's output is the next Linear's saved input), the checkpointed model the 4 blocks'
    # outputs (the input was made before the step)
    assert at_forward_end(eager[0], eager[2]) > 2.5 * at_forward_end(ckpt[0], ckpt[2])
    assert max(ckpt[3]) < max(eager[3])
    for suffix in (".svg", ".png"):
        path = G.plot_timeline(timeline, tmp_path / f"t{suffix}", "chain")
        data = path.read_bytes()
        assert len(data) > 1000
    assert b"<svg" in (tmp_path / "t.svg").read_bytes()[:500]
    with pytest.raises(ValueError, match="unknown mode 'lazy'"):
        G.memory_timeline(model, (x,), modes=("lazy",))


@needs_dot
def test_graph_command_writes_graph_and_timeline(tmp_path, capsys):
    out, timeline = tmp_path / "g.svg", tmp_path / "t.png"
    assert main(["graph", "lenet", "--out", str(out), "--timeline", str(timeline)]) == 0
    said = capsys.readouterr().out
    assert "13 ops" in said and "timeline:" in said and "checkpoint" in said
    assert out.read_text().count('class="node"') == 14 and timeline.read_bytes()[:4] == b"\x89PNG"


def test_checkpoint_blocks_restores_the_model():
    model = _net()
    before = {name: type(m).forward for name, m in model.named_children()}
    with G.checkpoint_blocks(model):
        assert all("forward" in vars(m) for _, m in model.named_children())
    assert all("forward" not in vars(m) for _, m in model.named_children())
    assert {name: type(m).forward for name, m in model.named_children()} == before


@pytest.mark.parametrize("argv, fragment", [
    (["--out", "graph.txt"], "argument --out: graph.txt: must be a .dot, .svg or .png file name"),
    (["--out", "/no/such/dir/g.dot"], "argument --out: /no/such/dir/g.dot: no such directory"),
    (["--out", "g.dot", "--timeline", "t.dot"], "argument --timeline: t.dot: must be a .svg or .png file name"),
    (["--out", "g.dot", "--batch", "0"], "argument --batch: must be a positive integer, got 0"),
    (["--out", "g.dot", "--input", "3x"], "argument --input:"),
    (["--out", "g.dot", "--device", "tpu"], "argument --device: unknown device 'tpu'"),
    ([], "the following arguments are required: --out"),
])
def test_graph_command_refuses_nonsense(argv, fragment, capsys):
    assert main(["graph", "lenet", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
