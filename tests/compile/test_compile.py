"""dn.compile's module, cache, errors and passes: what a user sees (tests/compile/test_zoo_compiled.py
checks every zoo model against eager mode)."""
from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

import divenet as dn
import divenet.functional as F
import divenet.nn as nn
from divenet import _native
from divenet.compile import PASSES, RecompileWarning, TraceError, trace_graph
from divenet.optim import SGD


def _net():
    dn.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 8 * 8, 5))


def _x(n=2, seed=0, side=8, device="cpu"):
    return dn.tensor(np.random.default_rng(seed).standard_normal((n, 1, side, side)).astype(np.float32),
                     device=device)


def _step(model, x, y):
    loss = F.cross_entropy(model(x), y)
    for p in model.parameters():
        p.grad = None
    loss.backward()
    return loss.numpy(), [p.grad.numpy() for p in model.parameters()]


def _same_training(a, b, x, y, steps=2):
    for _ in range(steps):
        (la, ga), (lb, gb) = _step(a, x, y), _step(b, x, y)
        np.testing.assert_array_equal(la, lb)
        for u, v in zip(ga, gb):
            np.testing.assert_array_equal(u, v)


# ---- the module -----------------------------------------------------------------------------------
def test_shares_parameters_state_dict_and_modes():
    model = _net()
    c = dn.compile(model)
    assert callable(dn.compile) and dn.compile.compile is not None  # a package that is callable
    assert [id(p) for p in c.parameters()] == [id(p) for p in model.parameters()]
    assert list(c.state_dict()) == list(model.state_dict())
    c.eval()
    assert not model.training and all(not m.training for m in model.modules())
    c.train()
    assert model.training and c.training
    c.load_state_dict(_net().state_dict())
    assert c[0] is model[0]  # attributes and indexing reach the model
    with pytest.raises(TypeError, match="expected a divenet.nn.Module"):
        dn.compile(lambda x: x)


def test_replay_is_one_autograd_node():
    c = dn.compile(_net())
    x = _x()
    assert c(x).grad_fn.fn.__name__ == "Linear"  # the trace: eager mode's graph
    out = c(x)
    assert out.grad_fn.fn.__name__ == "CompiledGraph"
    assert len(out.grad_fn.inputs) == 1 + len(list(c.parameters()))  # the input and the parameters


@pytest.mark.parametrize("options", [{}, {"recompute": "sqrt"}, {"recompute": 2}, {"passes": ()}])
def test_training_matches_eager_bitwise(options, device):
    eager, c = _net().to(device), dn.compile(_net().to(device), **options)
    x, y = _x(device=device), dn.tensor(np.array([1, 3]), device=device)
    _same_training(eager, c, x, y, steps=3)
    for (n, p), q in zip(eager.named_buffers(), c.buffers()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)


def test_sgd_training_loop_and_parameters_after_steps():
    eager, c = _net(), dn.compile(_net())
    x, y = _x(4), dn.tensor(np.array([0, 1, 2, 3]))
    for model in (eager, c):
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    for p, q in zip(eager.state_dict().values(), c.state_dict().values()):
        np.testing.assert_array_equal(p, q)


def test_input_gradient_and_detach():
    class Net(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            h = self.fc(x)
            return h * h.detach() + x  # no gradient through the detached factor

    dn.manual_seed(0)
    a = Net()
    dn.manual_seed(0)
    c = dn.compile(Net())
    for _ in range(2):
        grads = []
        for m in (a, c):
            x = dn.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
            m(x).sum().backward()
            grads.append(x.grad.numpy())
        np.testing.assert_array_equal(*grads)


def test_no_grad_inside_the_forward_stops_the_gradient():
    class Net(nn.Module):
        def __init__(self):
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            with dn.no_grad():
                h = self.a(x)
            return self.b(h)

    c = dn.compile(Net())
    x = dn.tensor(np.ones((2, 3), dtype=np.float32))
    for _ in range(2):
        c.zero_grad()
        c(x).sum().backward()
        assert c.a.weight.grad is None and c.b.weight.grad is not None


def test_dropout_draws_fresh_masks_like_eager():
    def build():
        dn.manual_seed(0)
        return nn.Sequential(nn.Linear(16, 64), nn.Dropout(0.5), nn.Linear(64, 4))

    eager, c = build(), dn.compile(build())
    x = dn.tensor(np.ones((8, 16), dtype=np.float32))
    outs = []
    for seed in (1, 2):
        dn.manual_seed(seed)
        e = eager(x).numpy()
        dn.manual_seed(seed)
        outs.append(c(x).numpy())
        np.testing.assert_array_equal(e, outs[-1])
    assert not np.array_equal(outs[0], outs[1])  # each replay draws new numbers
    dn.manual_seed(3)
    assert not np.array_equal(c(x).numpy(), c(x).numpy())


def test_batch_norm_cumulative_momentum_and_counter():
    def build():
        dn.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3, momentum=None))

    eager, c = build(), dn.compile(build())
    for seed in range(4):
        x = _x(seed=seed)
        eager(x), c(x)
    for (n, p), q in zip(eager.named_buffers(), c.buffers()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)
    assert int(c[1].num_batches_tracked.item()) == 4


def test_inplace_op_in_the_forward_is_replayed():
    class Net(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            y = self.fc(x)
            y += 1
            y *= x
            return y

    dn.manual_seed(0)
    a = Net()
    dn.manual_seed(0)
    c = dn.compile(Net())
    x = dn.tensor(np.arange(8, dtype=np.float32).reshape(2, 4))
    for _ in range(3):
        ra = a(x)
        rb = c(x)
        np.testing.assert_array_equal(ra.numpy(), rb.numpy())
        for m, r in ((a, ra), (c, rb)):
            m.zero_grad()
            r.sum().backward()
        np.testing.assert_array_equal(a.fc.weight.grad.numpy(), c.fc.weight.grad.numpy())


def test_lazy_layers_are_made_by_the_trace():
    dn.manual_seed(0)
    a = nn.Sequential(nn.Linear(None, 3), nn.ReLU(), nn.Linear(None, 2))
    dn.manual_seed(0)
    c = dn.compile(nn.Sequential(nn.Linear(None, 3), nn.ReLU(), nn.Linear(None, 2)))
    x = dn.tensor(np.ones((2, 5), dtype=np.float32))
    first = []
    for m in (a, c):
        dn.manual_seed(1)  # the weights are drawn at the first forward
        first.append(m(x).numpy())
    np.testing.assert_array_equal(*first)
    np.testing.assert_array_equal(a(x).numpy(), c(x).numpy())  # a replay
    assert [tuple(p.shape) for p in c.parameters()] == [(3, 5), (3,), (2, 3), (2,)]


def test_backward_after_an_optimizer_step_is_refused():
    c = dn.compile(_net())
    x, y = _x(), dn.tensor(np.array([1, 3]))
    c(x)
    loss = F.cross_entropy(c(x), y)
    with dn.no_grad():
        c[0].weight += 1  # an in-place change of a parameter the graph saved
    with pytest.raises(RuntimeError, match="0.weight .* changed by an in-place operation"):
        loss.backward()


# ---- signatures and the cache ---------------------------------------------------------------------
def test_new_signature_traces_again_with_a_warning_naming_the_change():
    c = dn.compile(_net())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c(_x(2))
        c(_x(2))  # the same signature: no warning
    with pytest.warns(RecompileWarning, match=r"input 0 shape \(2, 1, 8, 8\) -> \(3, 1, 8, 8\)"):
        c(_x(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c(_x(2))  # cached
    c.eval()
    with pytest.warns(RecompileWarning, match="training True -> False"):
        c(_x(3))
    with pytest.warns(RecompileWarning, match="grad mode on -> off"), dn.no_grad():
        c(_x(3))
    assert c.traces == 4 and len(c.graphs) == 4


def test_cache_overflow_drops_the_least_recently_used_graph():
    c = dn.compile(_net(), cache_size=2)
    eager = _net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecompileWarning)
        c(_x(2))
        c(_x(3))
        c(_x(2))  # now 3 is the least recently used
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        c(_x(4))
    messages = [str(w.message) for w in seen if w.category is RecompileWarning]
    assert len(messages) == 2 and "traced again" in messages[0], messages
    assert "cache of 2 graphs is full; dropped the least recently used one (input 0 shape (3, 1, 8, 8) -> " \
           "(4, 1, 8, 8) since it)" in messages[1]
    assert all(w.filename == __file__ for w in seen)  # the warnings point at the caller's line
    assert [g.values[g.inputs[0]].shape[0] for g in c.graphs] == [2, 4]
    with pytest.warns(RecompileWarning):
        out = c(_x(3))  # traced again
    np.testing.assert_array_equal(out.numpy(), eager(_x(3)).numpy())


@pytest.mark.parametrize("kwargs,match", [
    ({"passes": ("dce", "fuse")}, r"unknown pass\(es\) \['fuse'\]"),
    ({"passes": "dce"}, "collection of pass names"),
    ({"recompute": "all"}, "recompute must be None, 'sqrt' or a number"),
    ({"recompute": 0}, "recompute must be"),
    ({"cache_size": 0}, "cache_size must be an integer >= 1"),
])
def test_bad_options(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        dn.compile(_net(), **kwargs)


# ---- what cannot be traced ------------------------------------------------------------------------
class _Reads(nn.Module):
    def __init__(self, how):
        self.fc = nn.Linear(3, 3)
        self.how = how

    def forward(self, x):
        y = self.fc(x)
        if self.how == "bool":
            if y.sum():  # the line the error names
                return y
            return -y
        if self.how == "compare":
            return y * (y > 0)  # a mask computed without an op: no replay could recompute it
        if self.how == "argmax":
            return y[:, y.sum(0).argmax()]
        return y * getattr(y.sum(), self.how)()


@pytest.mark.parametrize("how", ["bool", "item", "numpy", "tolist", "compare", "argmax"])
def test_value_read_during_tracing_names_module_and_line(how):
    model = nn.Sequential(nn.Identity(), _Reads(how))
    c = dn.compile(model)
    with pytest.raises(TraceError) as err:
        c(dn.tensor(np.ones((2, 3), dtype=np.float32)))
    msg = str(err.value)
    assert msg.startswith("1: dn.compile:"), msg
    assert "test_compile.py:" in msg and "of a traced tensor" in msg
    # the same model runs eagerly
    model(dn.tensor(np.ones((2, 3), dtype=np.float32)))


def test_reading_a_constant_is_allowed():
    class Net(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            scale = dn.tensor(2.0).item()  # a constant, not a traced value
            return self.fc(x) * scale

    c = dn.compile(Net())
    x = dn.tensor(np.ones((2, 3), dtype=np.float32))
    np.testing.assert_array_equal(c(x).numpy(), c._orig_mod(x).numpy())


def test_inplace_on_a_view_and_raw_buffer_writes_are_refused():
    class View(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            y = self.fc(x)
            y[0] += 1
            return y

    class Raw(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(3, 3)
            self.count = dn.zeros(1)

        def forward(self, x):
            self.count.array += 1
            return self.fc(x)

    x = dn.tensor(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(TraceError, match="in-place op .* on a view"):
        dn.compile(View())(x)
    with pytest.raises(TraceError, match="buffer count changed during the forward outside the divenet ops"):
        dn.compile(Raw())(x)


# ---- passes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PASSES)
def test_each_pass_alone_gives_eager_results(name):
    eager, c = _net(), dn.compile(_net(), passes=(name,))
    x, y = _x(), dn.tensor(np.array([1, 3]))
    _same_training(eager, c, x, y)
    eager.eval(), c.eval()
    with dn.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RecompileWarning)
        for _ in range(2):
            np.testing.assert_allclose(c(x).numpy(), eager(x).numpy(), rtol=1e-5, atol=1e-6)
    assert name in c.graphs[-1].passes


def test_dce_and_constant_folding():
    class Net(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            unused = self.fc(x) * 3  # dead: nothing reads it
            bias = dn.ones(3) * 2 + 1  # constant: folded at compile time
            del unused
            return self.fc(x) + bias

    x = dn.tensor(np.ones((2, 3), dtype=np.float32))
    plain = trace_graph(Net(), x, passes=())
    optimized = trace_graph(Net(), x)
    ops = lambda g: [n.op for n in g.nodes]  # noqa: E731
    assert ops(plain) == ["Linear", "Mul", "Mul", "Add", "Linear", "Add"]
    assert ops(optimized) == ["Linear", "Add"]
    model = Net()
    c = dn.compile(model)
    c(x)
    np.testing.assert_array_equal(c(x).numpy(), model(x).numpy())


def test_batchnorm_folding_is_never_stale():
    eager, model = _net(), _net()
    c = dn.compile(model)
    eager.eval(), c.eval()
    x = _x()
    with dn.no_grad():
        c(x)
        graph = c.graphs[0]
        assert [n.op for n in graph.nodes].count("BatchNorm") == 0
        assert sum(v.kind == "derived" for v in graph.values) == 4
        np.testing.assert_allclose(c(x).numpy(), eager(x).numpy(), rtol=1e-5, atol=1e-6)
    # an optimizer step (version counters) and load_state_dict (new arrays) are both seen
    for m in (eager, model):
        m.train()
        F.cross_entropy(m(x), dn.tensor(np.array([0, 1]))).backward()
        SGD(m.parameters(), lr=0.5).step()
        m.eval()
    with dn.no_grad():
        np.testing.assert_allclose(c(x).numpy(), eager(x).numpy(), rtol=1e-5, atol=1e-6)
        state = _net().state_dict()
        state["1.running_var"] = state["1.running_var"] * 4
        eager.load_state_dict(state)
        c.load_state_dict(state)
        np.testing.assert_allclose(c(x).numpy(), eager(x).numpy(), rtol=1e-5, atol=1e-6)


def test_inplace_and_release_fill_the_plan():
    g = trace_graph(_net(), _x(), passes=[p for p in PASSES if p != "fuse_bn_relu"])  # ReLUs left to run in place
    assert [n.op for n in g.nodes if n.impl is not None] == ["ReLU", "ReLU"]
    assert sum(len(f) for f in g.plan.free_after) > 0
    off = trace_graph(_net(), _x(), passes=())
    assert not any(n.impl for n in off.nodes) and not any(off.plan.free_after)
    timeline = g.memory_timeline()
    assert len(timeline) == len(g.nodes) and max(timeline) > 0
    text = str(g)
    assert "Conv2d(%0" in text and "in place" in text and "frees" in text


def _peak(model, x, y):
    for _ in range(2):
        _step(model, x, y)
    tracemalloc.start()
    _step(model, x, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def _deep():
    dn.manual_seed(0)
    layers = [nn.Conv2d(1, 8, 3, padding=1)]
    for _ in range(8):
        layers += [nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(8 * 16 * 16, 3))


def test_release_and_recompute_lower_peak_numpy_memory():
    x, y = _x(8, side=16), dn.tensor(np.arange(8) % 3)
    kept = _peak(dn.compile(_deep(), passes=("dce",)), x, y)
    released = _peak(dn.compile(_deep()), x, y)
    recomputed = _peak(dn.compile(_deep(), recompute="sqrt"), x, y)
    assert released < 0.9 * kept, (released, kept)
    assert recomputed < 0.8 * released, (recomputed, released)


def test_recompute_keeps_dropout_masks_and_running_stats():
    def build():
        dn.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
                             nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))

    eager, c = build(), dn.compile(build(), recompute=3)
    x, y = dn.tensor(np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)), \
        dn.tensor(np.arange(8) % 2)
    for seed in range(3):
        res = []
        for m in (eager, c):
            dn.manual_seed(seed)
            res.append(_step(m, x, y))
        np.testing.assert_array_equal(res[0][0], res[1][0])
        for u, v in zip(res[0][1], res[1][1]):
            np.testing.assert_array_equal(u, v)
    assert c.graphs[0].plan.recomputed  # some segment was re-run
    for (n, p), q in zip(eager.named_buffers(), c.buffers()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)  # updated once per step


def test_a_compiled_submodule_inside_a_model():
    dn.manual_seed(0)
    inner = _net()
    outer = nn.Sequential(dn.compile(inner), nn.ReLU())
    assert list(outer.state_dict()) == ["0." + k for k in inner.state_dict()]
    x, y = _x(), dn.tensor(np.array([1, 3]))
    _step(outer, x, y)
    loss, grads = _step(outer, x, y)
    dn.manual_seed(0)
    plain = nn.Sequential(_net(), nn.ReLU())
    _step(plain, x, y)
    loss2, grads2 = _step(plain, x, y)
    np.testing.assert_array_equal(loss, loss2)


def test_tensors_nested_in_tuple_inputs_are_inputs():
    dn.manual_seed(0)
    lstm = nn.LSTM(3, 4)
    c = dn.compile(lstm)
    x = dn.tensor(np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # new state tensors every call: the same signature
        for seed in range(3):
            rng = np.random.default_rng(seed)
            h, cell = (dn.tensor(rng.standard_normal((1, 2, 4)).astype(np.float32)) for _ in range(2))
            out, (hn, cn) = c(x, (h, cell))
            ref, (hr, cr) = lstm(x, (h, cell))
            np.testing.assert_array_equal(out.numpy(), ref.numpy())
            np.testing.assert_array_equal(cn.numpy(), cr.numpy())
    assert c.traces == 1


def test_replay_on_the_device_has_no_host_syncs_or_uploads():
    from divenet import sim

    c = dn.compile(_net().to("sim"))
    x, y = _x(device="sim"), dn.tensor(np.array([1, 3]), device="sim")
    opt = SGD(c.parameters(), lr=0.1)
    for step in range(3):
        with sim.counting() as counts:
            opt.zero_grad()
            F.cross_entropy(c(x), y).backward()
            opt.step()
        if step:  # replays (the trace is eager mode plus its bookkeeping)
            assert counts["sync"] == 0 and counts["upload"] == 0, dict(counts)


def test_profilers_see_each_node_of_a_replay():
    from divenet.autograd import OpHooks

    class Watch(OpHooks):
        def __init__(self):
            self.seen = []

        def compiled_op(self, node, phase, run, graph):
            self.seen.append((node.op, node.path, phase))
            return run()

    c = dn.compile(_net(), recompute=2)
    x, y = _x(), dn.tensor(np.array([1, 3]))
    eager_loss = _step(c, x, y)[0]
    watch = Watch()
    with watch:
        loss = _step(c, x, y)[0]
    np.testing.assert_array_equal(loss, eager_loss)
    graph = c.graphs[0]
    forward = [(op, path) for op, path, phase in watch.seen if phase == "forward"]
    assert forward == [(n.op, n.path) for n in graph.nodes]
    a, b = graph.plan.segments[0]
    assert [op for op, _, phase in watch.seen if phase == "recompute"] == [n.op for n in graph.nodes[a:b]]
    assert sorted(op for op, _, phase in watch.seen if phase == "backward") == sorted(n.op for n in graph.nodes)


def test_memory_budget_recomputes_only_what_it_must():
    x, y = _x(8, side=16), dn.tensor(np.arange(8) % 3)
    recomputed = {}
    for budget in (0, 1 << 40, None):
        options = {"memory_budget": budget} if budget is not None else {"recompute": "sqrt"}
        c = dn.compile(_deep(), **options)
        _same_training(_deep(), c, x, y)
        recomputed[budget] = c.graphs[0].plan.recomputed
    full = trace_graph(_deep(), x, recompute="sqrt")
    assert recomputed[1 << 40] == ()  # everything fits: nothing is re-run
    assert recomputed[0] == tuple(range(len(full.plan.segments) - 1))  # nothing fits: every segment but the last
    # "sqrt" re-runs only the segments that lower the estimated peak
    assert recomputed[None] and set(recomputed[None]) <= set(recomputed[0])
    budget = sum(full.plan.context_bytes) // 2
    some = trace_graph(_deep(), x, memory_budget=budget).plan.recomputed
    assert 0 < len(some) <= len(recomputed[0]) and some == recomputed[0][:len(some)]
    with pytest.raises(ValueError, match="memory_budget must be a number of bytes"):
        dn.compile(_deep(), memory_budget=-1)


def test_equal_to_eager_across_a_shape_change_and_a_mode_switch():
    eager, c = _net(), dn.compile(_net())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecompileWarning)
        for n in (2, 3, 2):  # batch 3 traces a second graph; batch 2 replays the first again
            x, y = _x(n, seed=n), dn.tensor(np.arange(n) % 5)
            _same_training(eager, c, x, y)
        eager.eval(), c.eval()
        for n in (2, 3):
            for _ in range(2):
                np.testing.assert_allclose(c(_x(n)).numpy(), eager(_x(n)).numpy(), rtol=1e-5, atol=1e-6)
        eager.train(), c.train()
        _same_training(eager, c, _x(2), dn.tensor(np.array([1, 2])))
    assert c.traces == 4
    for p, q in zip(eager.state_dict().values(), c.state_dict().values()):
        np.testing.assert_array_equal(p, q)


def test_outputs_in_dicts_and_namedtuples_are_replayed():
    from collections import namedtuple

    Pair = namedtuple("Pair", "logits features")

    class Net(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            h = self.fc(x)
            return {"out": Pair(h, dn.relu(h)), "n": 2}

    model = Net()
    c = dn.compile(model)
    for seed in range(3):
        x = dn.tensor(np.random.default_rng(seed).standard_normal((2, 3)).astype(np.float32))
        got, want = c(x), model(x)
        assert isinstance(got["out"], Pair) and got["n"] == 2
        np.testing.assert_array_equal(got["out"].features.numpy(), want["out"].features.numpy())


# ---- fuse_bn_relu ---------------------------------------------------------------------------------
UNFUSED = tuple(p for p in PASSES if p != "fuse_bn_relu")


def _resnet(side=16, n=2):
    dn.manual_seed(0)
    model = dn.models.get_model("resnet18-d2l", num_classes=10, in_channels=1)
    x = dn.tensor(np.random.default_rng(0).standard_normal((n, 1, side, side)).astype(np.float32))
    return model, x, dn.tensor(np.arange(n) % 10)


def test_fuse_bn_relu_fuses_every_chain_of_a_resnet():
    model, x, _ = _resnet()
    ops = [node.op for node in trace_graph(model, x).nodes]
    # the stem and each of 8 blocks' two batch norms; the second of each block with the residual
    assert ops.count("BatchNormReLU") == 17 and "BatchNorm" not in ops and "ReLU" not in ops
    fused = [node for node in trace_graph(model, x).nodes if node.op == "BatchNormReLU"]
    assert sum(node.inputs[3] is not None for node in fused) == 8
    plain = [node.op for node in trace_graph(model, x, passes=UNFUSED).nodes]
    assert plain.count("BatchNorm") == 17 and plain.count("ReLU") == 17 and "BatchNormReLU" not in plain
    assert "BatchNormReLU" not in [node.op for node in trace_graph(_net(), _x(), passes=("dce",)).nodes]


def test_fuse_bn_relu_equals_eager_in_eval_mode_with_gradients_and_retain_graph():
    """Eval-mode batch norm in a graph that needs gradients is not folded, so it is fused; and a
    second backward (release off, retain_graph=True) finds the rebuilt saved arrays again."""
    for passes in (None, [p for p in PASSES if p != "release"]):
        (eager, x, y), (model, _, _) = _resnet(), _resnet()
        c = dn.compile(model, passes=passes)
        eager.eval(), c.eval()
        for m in (eager, c):
            m(x)  # c traces
        grads = []
        for m in (eager, c):
            loss = F.cross_entropy(m(x), y)
            for p in m.parameters():
                p.grad = None
            loss.backward(retain_graph=passes is not None)
            if passes is not None:
                loss.backward()
            grads.append([p.grad.numpy() for p in m.parameters()])
        assert "BatchNormReLU" in [n.op for n in c.graphs[-1].nodes]
        for u, v in zip(*grads):
            np.testing.assert_array_equal(u, v)


def _pointwise():
    """1x1 convolutions (their patch matrix is the input itself) between batch norms and ReLUs:
    eager keeps each batch norm's input and each ReLU's output, the fused graph only the former."""
    dn.manual_seed(0)
    layers = [nn.Conv2d(1, 16, 1)]
    for _ in range(12):
        layers += [nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 1)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))


def test_fuse_bn_relu_lowers_peak_numpy_memory(monkeypatch):
    from divenet.ops import conv

    # resnet18-d2l's 2x2 stage through the dense small-map product (64 images and up in the
    # dispatch): its dense weights are what the rebuild_patches pass saves most on below
    monkeypatch.setattr(conv, "_DENSE_MIN_BATCH", 1)
    x, y = _x(8, side=16), dn.tensor(np.arange(8) % 3)
    eager = _peak(_pointwise(), x, y)
    unfused = _peak(dn.compile(_pointwise(), passes=UNFUSED), x, y)
    fused = _peak(dn.compile(_pointwise()), x, y)
    assert unfused > 0.9 * eager, (unfused, eager)
    assert fused < 0.7 * eager, (fused, eager)
    # resnet18-d2l, 1x64x64, batch 8: most of what it keeps are patch matrices, so less is won
    # until the convolutions rebuild them too (the rebuild_patches pass)
    model, x, y = _resnet(64, 8)
    eager = _peak(model, x, y)
    model, _, _ = _resnet(64, 8)
    fused = _peak(dn.compile(model, passes=tuple(p for p in PASSES if p != "rebuild_patches")), x, y)
    assert fused < 0.98 * eager, (fused, eager)
    model, _, _ = _resnet(64, 8)
    lean = _peak(dn.compile(model), x, y)
    assert lean < 0.85 * fused, (lean, fused)


def test_fuse_bn_relu_rebuilt_inputs_train_bitwise_on_device(device):
    """The readers' saved inputs are dropped and rebuilt (1x1 convolutions save their input):
    gradients and running statistics still eager's, bit for bit, on each device."""
    eager, c = _pointwise().to(device), dn.compile(_pointwise().to(device))
    x, y = _x(4, side=6, device=device), dn.tensor(np.arange(4) % 3, device=device)
    _same_training(eager, c, x, y, steps=3)
    graph = c.graphs[0]
    assert sum(bool(n.rebuild) for n in graph.nodes) == 12 and " rebuilt;" in str(graph)
    for (n, p), q in zip(eager.named_buffers(), c.buffers()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)


# ---- recomputation: where the cuts go, what is re-run, what it saves ------------------------------
def _d2l(side, n):
    dn.manual_seed(0)
    model = dn.models.get_model("resnet18-d2l", num_classes=10, in_channels=1)
    x = dn.tensor(np.random.default_rng(0).standard_normal((n, 1, side, side)).astype(np.float32))
    return model, x, dn.tensor(np.arange(n) % 10)


def test_recompute_peak_is_below_compiled_and_bitwise_eager(monkeypatch):
    """resnet18-d2l at 96x96, batch 8: its stem's maps dominate. Re-running segments used to
    peak above the plain compiled graph (1.09x its bytes, 0.59x eager's): the stem's output kept
    for the whole backward, a re-run segment's values alive to its end, whole-map temporaries in
    the fused backward. Now 0.85x and 0.40x. Through im2col and its patch-matrix weight
    gradient on every CPU: the implicit GEMMs, which each CPU's dispatch takes for other layers,
    save eager its patch matrices and move the baseline (AVX2 Zen 1, implicit forward:
    recomputed 0.59x eager's bytes; Zen 4, implicit weight gradients: 0.73x)."""
    from divenet.ops import conv

    monkeypatch.setattr(conv, "_implicit", lambda p: False)
    monkeypatch.setattr(conv, "_implicit_weight_grad", lambda p, xh: False)
    model, x, y = _d2l(96, 8)
    eager = _peak(model, x, y)
    loss, grads = _step(model, x, y)
    # the plain compiled graph: without recompute_cheap, which re-runs the stem by default
    plain = [p for p in PASSES if p != "recompute_cheap"]
    compiled = _peak(dn.compile(_d2l(96, 8)[0], passes=plain), x, y)
    c = dn.compile(_d2l(96, 8)[0], recompute="sqrt")
    recomputed = _peak(c, x, y)
    assert recomputed < 0.9 * compiled, (recomputed, compiled)
    assert recomputed < 0.5 * eager, (recomputed, eager)
    assert c.graphs[0].plan.recomputed
    # the same model after the same (gradient-free) steps: the same loss and gradients, bit for bit
    got_loss, got = _step(c, x, y)
    np.testing.assert_array_equal(got_loss, loss)
    for u, v in zip(grads, got):
        np.testing.assert_array_equal(u, v)


def test_recompute_cuts_where_few_bytes_cross_and_keeps_small_tail_contexts():
    from divenet.autograd import OpHooks

    class Watch(OpHooks):
        seen = []

        def compiled_op(self, node, phase, run, graph):
            self.seen.append((node.index, phase))
            return run()

    model, x, y = _d2l(32, 2)
    c = dn.compile(model, recompute=5)  # (at this size "sqrt" finds no segment worth re-running)
    _step(c, x, y)
    with Watch():
        _step(c, x, y)
    graph = c.graphs[0]
    a, b = graph.plan.segments[0]
    # the stem's segment ends after its max pool (64 channels at a quarter of the map), not
    # between batch norm and the pool (the full map)
    assert [n.op for n in graph.nodes[a:b]] == ["Conv2d", "BatchNormReLU", "MaxPool2d"]
    pool = b - 1
    assert 0 in graph.plan.recomputed and pool in graph.plan.kept
    again = {k for k, phase in Watch.seen if phase == "recompute"}
    assert {0, 1} <= again and pool not in again  # its one-byte indices kept from the forward
    assert (pool, "backward") in Watch.seen


def test_recompute_rebuilds_fused_outputs_inside_a_rerun_segment():
    """1x1 convolutions save their input, a fused batch norm + ReLU output: in a re-run segment
    the reader drops it after its re-run and gets it rebuilt before its backward, bit for bit."""
    from divenet.compile.executor import Program

    eager, c = _pointwise(), dn.compile(_pointwise(), recompute=3)
    x, y = _x(4, side=6), dn.tensor(np.arange(4) % 3)
    _same_training(eager, c, x, y, steps=3)
    graph = c.graphs[0]
    program = Program(graph)
    rerun = {k for j in graph.plan.recomputed for k in range(*graph.plan.segments[j])}
    assert any(s.rebuild for k, s in enumerate(program.steps) if k in rerun)
    for (n, p), q in zip(eager.named_buffers(), c.buffers()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)


def test_dense_small_map_convolutions_rebuild_their_dense_weight(monkeypatch):
    """resnet18-d2l at 48x48: its last stage runs on 2x2 maps through the dense small-map
    product, whose dense weight (16.8 MB a layer at batch 16) the compiled graph no longer keeps
    for backward (the rebuild_patches pass): 0.66x the peak of the graph without that pass;
    gradients bit for bit. (The dispatch takes the dense product from 64 images: lowered here
    to this batch of 16. Its 3x3 stage took it too until the ninth session, when the test
    measured 0.85x -> under 0.5x eager's peak; eager no longer keeps those weights at all.)"""
    from divenet.ops import conv

    monkeypatch.setattr(conv, "_DENSE_MIN_BATCH", 1)
    model, x, y = _d2l(48, 16)
    _peak(model, x, y)  # the same steps as the compiled model's below
    loss, grads = _step(model, x, y)
    kept = _peak(dn.compile(_d2l(48, 16)[0], passes=tuple(p for p in PASSES if p != "rebuild_patches")), x, y)
    c = dn.compile(_d2l(48, 16)[0])
    compiled = _peak(c, x, y)
    assert compiled < 0.7 * kept, (compiled, kept)
    assert "dense" in [n.kind for n in c.graphs[0].nodes]
    got_loss, got = _step(c, x, y)
    np.testing.assert_array_equal(got_loss, loss)
    for u, v in zip(grads, got):
        np.testing.assert_array_equal(u, v)


# ---- share_concat and recompute_cheap ---------------------------------------------------------
class _Dense(nn.Module):
    """A DenseNet block: each layer's input is the concatenation of the block input and every
    earlier layer's new features. ``fork`` also concatenates layer 1's input a second time
    (a reader the buffer could not be shared with); ``bump`` adds 1 in place to it."""

    def __init__(self, layers=4, growth=4, fork=False, bump=False):
        super().__init__()
        dn.manual_seed(0)
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.norms = nn.ModuleList([nn.BatchNorm2d(8 + i * growth) for i in range(layers)])
        self.convs = nn.ModuleList([nn.Conv2d(8 + i * growth, growth, 3, padding=1) for i in range(layers)])
        self.fork, self.bump = fork, bump
        self.head = nn.Linear(8 + layers * growth + (8 + growth if fork else 0), 3)

    def forward(self, x):
        x = self.stem(x)
        extra = None
        for i, (norm, conv) in enumerate(zip(self.norms, self.convs)):
            if i == 1 and self.bump:
                x += 1
            if i == 1 and self.fork:
                extra = dn.cat([x, x[:, :0]], dim=1)
            x = dn.cat([x, conv(F.relu(norm(x)))], dim=1)
        if extra is not None:
            x = dn.cat([x, extra], dim=1)
        return self.head(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("case", ["chain", "fork", "bump"])
def test_share_concat_grows_a_dense_block_in_one_buffer_bitwise(case, device):
    kwargs = {"fork": case == "fork", "bump": case == "bump"}
    x = _x(4, side=12, device=device)
    y = dn.tensor(np.arange(4) % 3, device=device)
    eager, c = _Dense(**kwargs).to(device), dn.compile(_Dense(**kwargs).to(device))
    _same_training(eager, c, x, y, steps=3)
    kinds = [(n.op, n.kwargs.get("first")) for n in c.graphs[0].nodes if n.op.startswith("Concat")]
    if case == "chain":
        assert kinds == [("ConcatGrow", True)] + [("ConcatGrow", False)] * 3
    elif case == "fork":  # layer 1's input has two concatenating readers: the chain starts after it
        # (the last concatenation extends the chain, copying the fork's result in)
        assert kinds == [("Concat", None)] * 2 + [("ConcatGrow", True)] + [("ConcatGrow", False)] * 3
    else:  # the first concatenation's result is changed in place: it starts no chain
        assert kinds[0] == ("Concat", None) and kinds[1] == ("ConcatGrow", True)


def test_share_concat_keeps_one_buffer_per_block():
    """The batch norms save every layer's input; sharing keeps them as parts of one buffer."""
    x, y = _x(16, side=24), dn.tensor(np.arange(16) % 3)
    unshared = [p for p in PASSES if p != "share_concat"]
    big = dict(layers=8, growth=16)
    shared_peak = _peak(dn.compile(_Dense(**big)), x, y)
    unshared_peak = _peak(dn.compile(_Dense(**big), passes=unshared), x, y)
    assert shared_peak < 0.75 * unshared_peak, (shared_peak, unshared_peak)


def _stem_net():
    """D2L ResNet's shape in small: a one-channel 7x7 stem on a large map, then wide layers at
    a quarter of its side. The stem's batch norm input is a large part of what training keeps,
    and re-running the stem costs 3% of the forward."""
    dn.manual_seed(0)
    layers = [nn.Conv2d(1, 16, 7, stride=2, padding=3), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
              nn.Conv2d(16, 128, 3, stride=2, padding=1), nn.BatchNorm2d(128), nn.ReLU()]
    for _ in range(4):
        layers += [nn.Conv2d(128, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU()]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 8 * 8, 3))


def test_recompute_cheap_reruns_only_a_cheap_stem_and_stays_bitwise():
    x, y = _x(32, side=64), dn.tensor(np.arange(32) % 3)
    without = [p for p in PASSES if p != "recompute_cheap"]
    c = dn.compile(_stem_net())
    _same_training(_stem_net(), c, x, y)
    plan = c.graphs[0].plan
    assert "recompute_cheap" in c.graphs[0].passes
    assert plan.recomputed == (0,) and plan.segments[0][1] <= 4  # the stem, up to its max pool
    # (0.80x with the native kernels, 0.86x on the NumPy path)
    assert _peak(dn.compile(_stem_net()), x, y) < 0.9 * _peak(dn.compile(_stem_net(), passes=without), x, y)
    # LeNet's first segment is half its forward's work: nothing is cheap enough to re-run
    lenet = trace_graph(dn.models.get_model("lenet"), _x(8, side=28))
    assert "recompute_cheap" in lenet.passes and lenet.plan.recomputed == () and not lenet.plan.segments


@pytest.mark.skipif(not _native.usable(np.zeros(1, np.float32)), reason="Winograd needs the native build")
def test_compiled_inference_keeps_winograd_transforms_of_folded_weights_and_never_goes_stale():
    """An eval graph's folded weights are read-only arrays, so a Winograd convolution keeps their
    transform between calls; an optimizer step refolds them into new arrays, and the output
    follows eager's."""
    from divenet.ops import conv as conv_ops

    def net():
        dn.manual_seed(0)
        return nn.Sequential(nn.Conv2d(96, 96, 3, padding=1), nn.BatchNorm2d(96), nn.ReLU(), nn.Flatten(),
                             nn.Linear(96 * 8 * 8, 3))
    eager, model = net(), net()
    c = dn.compile(model)
    eager.eval(), c.eval()
    x = dn.tensor(np.random.default_rng(1).standard_normal((8, 96, 8, 8)).astype(np.float32))
    kinds, transforms = [], []
    real, transform = conv_ops._choose, conv_ops._winograd_weight
    conv_ops._choose = lambda *a, **k: kinds.append(real(*a, **k)) or kinds[-1]
    conv_ops._winograd_weight = lambda *a, **k: transforms.append(1) or transform(*a, **k)
    try:
        with dn.no_grad():
            c(x)  # the trace (unfolded, as eager)
            transforms.clear()
            first, again = c(x).numpy(), c(x).numpy()
            assert len(transforms) == 1  # the folded weight's, kept for the second call
            np.testing.assert_allclose(first, eager(x).numpy(), rtol=1e-4, atol=1e-5)
    finally:
        conv_ops._choose, conv_ops._winograd_weight = real, transform
    assert "winograd" in kinds and np.array_equal(first, again)
    for m in (eager, model):
        m.train()
        F.cross_entropy(m(x), dn.tensor(np.arange(8) % 3)).backward()
        SGD(m.parameters(), lr=0.5).step()
        m.eval()
    with dn.no_grad():
        after = c(x).numpy()
        np.testing.assert_allclose(after, eager(x).numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(after, first)
