"""divenet.profiler and ``divenet profile``: every op application and backward step is recorded
once and matched, MACs agree with divenet.summary, bytes live follow the arrays, nested events
(a checkpoint's recomputation) are not counted twice, the Chrome trace parses and has a
forward and a backward event per op, and the command refuses nonsense flags in one line."""
import json
import threading

import numpy as np
import pytest

import divenet as dn
import divenet.functional as F
import divenet.nn as nn
from divenet import autograd
from divenet.cli import main
from divenet.profiler import op_macs, profile
from divenet.summary import summary


def _net():
    dn.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 2 * 2, 5))


class _Count(autograd.OpHooks):
    """An independent count of the op applications and backward steps."""

    def __init__(self):
        self.applied, self.backward_steps = [], []

    def apply(self, cls, inputs, kwargs):
        self.applied.append(cls.__name__)
        return super().apply(cls, inputs, kwargs)

    def backward(self, node, grads):
        self.backward_steps.append(node.fn.__name__)
        return super().backward(node, grads)


def test_every_op_and_backward_step_recorded_once_and_matched(device):
    model = _net().to(device)
    x = dn.randn(2, 3, 8, 8, device=device)
    model(x)  # lazy state
    with _Count() as count:
        F.cross_entropy(model(x), dn.tensor([1, 3], device=device)).backward()
    prof = profile(model, x, steps=2, loss_fn=lambda out: F.cross_entropy(out, dn.tensor([1, 3], device=device)))
    assert prof.steps == 2
    step0 = [r for r in prof.ops if r.step == 0]
    assert [r.kind for r in step0] == count.applied
    backward = [e for e in prof.events if e.phase == "backward" and e.step == 0]
    assert sorted(e.name for e in backward) == sorted(count.backward_steps)
    for r in step0:  # every op that recorded a node got exactly its own backward step
        assert (r.backward is not None) == r.recorded
        if r.backward is not None:
            assert r.backward.op == r.index and r.backward.name == r.kind and r.backward.path == r.path
    assert [r.path for r in step0[:4]] == ["0", "1", "2", "3"]
    assert [r.position for r in prof.ops if r.step == 1] == list(range(len(step0)))


def test_macs_agree_with_summary():
    model = _net()
    batch = 3
    x = dn.randn(batch, 3, 8, 8)
    prof = profile(model, x, train=False, warmup=1)
    s = summary(model, (3, 8, 8))
    per_layer = {r.path: r.macs for r in prof.ops}
    for row in s.rows:
        if row.macs:
            assert per_layer[row.name] == batch * row.macs, row.name
    assert prof.totals()["forward_macs"] == batch * s.total_macs
    assert not any(e.phase == "backward" for e in prof.events)  # eval: no backward


def test_backward_macs_count_one_product_per_gradient():
    lin = nn.Linear(6, 4)
    x = dn.randn(5, 6)
    with profile() as prof:
        lin(x).sum().backward()  # x needs no gradient: only the weight's product
        y = lin(dn.randn(5, 6, requires_grad=True))
        y.sum().backward()
    fwd = [r for r in prof.ops if r.kind == "Linear"]
    assert [r.macs for r in fwd] == [5 * 4 * 6] * 2
    assert [r.backward_macs for r in fwd] == [5 * 4 * 6, 2 * 5 * 4 * 6]
    assert op_macs("MatMul", [(2, 3, 7), (7, 4)], [(2, 3, 4)]) == 2 * 3 * 4 * 7
    assert op_macs("Conv1d", [(1, 4, 9), (6, 2, 3), (6,)], [(1, 6, 7)]) == 6 * 7 * 2 * 3
    assert op_macs("ReLU", [(3,)], [(3,)]) == 0


def test_bytes_live_follow_the_arrays():
    x = dn.randn(1024, 1024)  # 4 MiB, made before the profile: not counted
    with profile() as prof:
        y = x * 2
        z = y + 1
        del y
        w = z * 3
    mul, add, mul2 = prof.events
    assert mul.out_bytes == add.out_bytes == 4 * 2 ** 20
    assert mul.live_bytes >= 4 * 2 ** 20
    assert add.live_bytes >= 8 * 2 ** 20  # y and z
    assert mul2.live_bytes < add.live_bytes + 2 ** 20 <= mul2.peak_bytes + 2 ** 20  # y freed, w made
    assert w.shape == z.shape


def test_a_graph_never_backpropagated_is_not_kept_alive():
    a = dn.randn(1024, 1024, requires_grad=True)
    small = dn.randn(4)
    with profile() as prof:
        y = (a * 2).exp()  # Exp saves its 4 MiB output for backward
        del y  # dropped without a backward: its nodes and arrays go
        small + 1
    assert prof.events[1].live_bytes >= 4 * 2 ** 20
    assert prof.events[-1].live_bytes < 2 ** 20


def test_recomputed_ops_are_not_counted_twice():
    model = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16))
    x = dn.randn(8, 16, requires_grad=True)
    with profile() as prof:
        dn.checkpoint(model, x).sum().backward()
    recompute = [e for e in prof.events if e.phase == "recompute"]
    assert [e.name for e in recompute] == ["Linear", "Tanh", "Linear"]
    outer = next(e for e in prof.events if e.phase == "backward" and e.name == "_Checkpoint")
    nested = [e for e in prof.events if outer.ts_ns <= e.ts_ns and e.ts_ns + e.dur_ns <= outer.ts_ns + outer.dur_ns
              and e is not outer]
    assert {e.name for e in nested} >= {"Linear", "Tanh"} and len(nested) >= 6  # 3 recomputed, 3 backward
    direct = [e for e in nested if not any(o is not e and o.ts_ns <= e.ts_ns and
                                           e.ts_ns + e.dur_ns <= o.ts_ns + o.dur_ns for o in nested)]
    assert outer.self_ns == outer.dur_ns - sum(e.dur_ns for e in direct)
    t = prof.totals()
    assert t["backward_ns"] == sum(e.self_ns for e in prof.events if e.phase != "forward")


def test_a_compiled_replay_is_profiled_node_by_node():
    model = _net()
    c = dn.compile(model, recompute=2)
    x, y = dn.randn(2, 3, 8, 8), dn.tensor([1, 3])
    F.cross_entropy(c(x), y).backward()  # the trace
    with profile() as prof:
        F.cross_entropy(c(x), y).backward()
    graph = c.graphs[0]
    nodes = [r for r in prof.ops if r.kind not in ("CompiledGraph", "CrossEntropy")]
    assert [(r.kind, r.path) for r in nodes] == [(n.op, n.path) for n in graph.nodes]
    assert [r.in_shapes for r in nodes] == [[None if i is None else graph.values[i].shape for i in n.inputs]
                                           for n in graph.nodes]
    assert nodes[0].inputs_from[0] == "input" and nodes[0].inputs_from[1] == "param"
    assert nodes[1].inputs_from[0] == nodes[0].index  # batch norm reads the convolution's output
    conv = nodes[0]
    assert conv.macs == 2 * 8 * 8 * 8 * 3 * 9 and conv.backward is not None
    assert conv.backward_macs == conv.macs  # the weight's gradient only: x needs none
    a, b = graph.plan.segments[0]
    again = [e for e in prof.events if e.phase == "recompute"]
    assert [e.name for e in again] == [n.op for n in graph.nodes[a:b]]
    assert all(e.op is not None and prof.ops[e.op].kind == e.name for e in again)
    outer = [e for e in prof.events if e.name == "CompiledGraph"]
    assert len(outer) == 2 and all(e.self_ns < e.dur_ns for e in outer)  # its nodes are its children
    t = prof.totals()
    assert t["forward_ns"] == sum(e.self_ns for e in prof.events if e.phase == "forward")
    table = prof.table(group_by="kind")
    assert "BatchNormReLU" in table and "Conv2d" in table


def test_context_manager_records_this_thread_only():
    x = dn.randn(4, 4)
    seen = []
    with profile() as prof:
        worker = threading.Thread(target=lambda: seen.append((x * 2) - 1))
        worker.start()
        worker.join()
        x + 1
    assert seen and [e.name for e in prof.events] == ["Add"]
    x * 5  # after the block: not recorded
    assert len(prof.events) == 1


def test_chrome_trace_has_a_forward_and_a_backward_event_per_op(tmp_path):
    model = _net()
    prof = profile(model, dn.randn(2, 3, 8, 8))
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(path)
    trace = json.loads(path.read_text())
    events = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(events) == len(prof.events)
    for e in events:
        assert e["ts"] >= 0 and e["dur"] >= 0 and e["pid"] == 1 and e["tid"] == (1 if e["cat"] == "forward" else 2)
    fwd = {e["args"]["op"]: e for e in events if e["cat"] == "forward"}
    bwd = {e["args"]["op"]: e for e in events if e["cat"] == "backward"}
    assert sorted(fwd) == [r.index for r in prof.ops]
    assert sorted(bwd) == [r.index for r in prof.ops if r.recorded] == sorted(fwd)  # all recorded here
    conv = fwd[0]
    assert conv["name"] == "Conv2d" and conv["args"]["module"] == "0"
    assert conv["args"]["inputs"][:2] == [[2, 3, 8, 8], [8, 3, 3, 3]] and conv["args"]["outputs"] == [[2, 8, 8, 8]]
    assert bwd[0]["ts"] > conv["ts"] + conv["dur"]
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {"forward", "backward"}
    assert any(e["ph"] == "C" for e in trace["traceEvents"])  # the bytes-live counter track


def test_tables_name_the_ops_and_modules():
    prof = profile(_net(), dn.randn(2, 3, 8, 8), steps=2)
    rows = prof.rows("op")
    assert rows == sorted(rows, key=lambda g: -(g["fwd_ns"] + g["bwd_ns"]))
    assert all(g["calls"] == 1 for g in rows)  # per step, averaged over the 2 steps
    kinds = {g["kind"]: g for g in prof.rows("kind")}
    assert kinds["Conv2d"]["calls"] == 2 and kinds["ReLU"]["calls"] == 2
    text = prof.table("op", top=3)
    assert "top 3 of" in text and rows[0]["kind"] in text
    assert "Conv2d" in prof.table("kind") and "Fwd GFLOP/s" in text
    assert {g["path"] for g in prof.rows("module")} >= {"0", "4", "7"}
    with pytest.raises(ValueError, match="group_by"):
        prof.rows("layer")


def test_bad_arguments():
    with pytest.raises(TypeError, match="Tensor"):
        profile(_net(), np.zeros((1, 3, 8, 8)))
    with pytest.raises(ValueError, match="steps"):
        profile(_net(), dn.randn(1, 3, 8, 8), steps=0)
    with pytest.raises(TypeError, match="callable"):
        profile("lenet", dn.randn(1, 3, 8, 8))
    prof = profile()
    with prof:
        with pytest.raises(RuntimeError, match="already recording"):
            prof.__enter__()


def test_steps_that_run_other_ops_than_the_warm_up_are_refused():
    calls = []

    def model(x):
        calls.append(1)
        return x * 2 if len(calls) <= 2 else (x * 2) + 1  # warm-up, sampled step, then another op

    with pytest.raises(RuntimeError, match="warmup=0"):
        profile(model, dn.randn(3, requires_grad=True), loss_fn=lambda y: y.sum())


def test_profile_command_prints_tables_and_writes_the_trace(tmp_path, capsys):
    trace = tmp_path / "t.json"
    assert main(["profile", "lenet", "--batch", "2", "--steps", "1", "--trace", str(trace), "--top", "4"]) == 0
    out = capsys.readouterr().out
    assert "lenet on 2x1x28x28" in out and "ops by time per step (top 4 of 13)" in out
    assert "Conv2d" in out and "peak bytes live" in out
    events = json.loads(trace.read_text())["traceEvents"]
    assert {e["cat"] for e in events if e["ph"] == "X"} == {"forward", "backward"}


def test_profile_command_eval_and_compile(capsys):
    assert main(["profile", "lenet", "--batch", "2", "--steps", "1", "--eval", "--no-memory"]) == 0
    out = capsys.readouterr().out
    assert "eval forward" in out and "backward" not in out.split("\n\n")[0]
    assert main(["profile", "lenet", "--batch", "2", "--steps", "1", "--compile"]) == 0
    out = capsys.readouterr().out
    assert "(dn.compile)" in out and "Conv2d" in out and "Sigmoid" in out  # the graph's nodes


@pytest.mark.parametrize("argv, fragment", [
    (["--batch", "0"], "argument --batch: must be a positive integer, got 0"),
    (["--steps", "-1"], "argument --steps: must be a positive integer, got -1"),
    (["--warmup", "x"], "argument --warmup: must be a non-negative integer, got x"),
    (["--trace", "out.txt"], "argument --trace: out.txt: must be a .json file name"),
    (["--trace", "/no/such/dir/t.json"], "argument --trace: /no/such/dir/t.json: no such directory"),
    (["--input", "3x0x4"], "argument --input:"),
    (["--device", "tpu"], "argument --device: unknown device 'tpu'"),
    (["--top", "0"], "argument --top: must be a positive integer, got 0"),
])
def test_profile_command_refuses_nonsense(argv, fragment, capsys):
    assert main(["profile", "lenet", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err


def test_profile_command_refuses_a_language_model(capsys):
    assert main(["profile", "charlm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("divenet profile: error:") and "language model" in err
