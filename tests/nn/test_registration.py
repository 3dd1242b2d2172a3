"""Module registration and methods with PyTorch's rules, each run as the same code under
torch.nn and divenet.nn: parameters, buffers and submodules found whatever their names,
register_buffer / register_parameter / add_module, non-persistent buffers, state_dict order,
load_state_dict's (missing, unexpected) keys and errors, attribute assignment rules, apply,
zero_grad, requires_grad_, to(dtype), lazy layers, inplace activations."""
from collections import OrderedDict

import numpy as np
import pytest
import torch

import divenet as dn
from divenet import nn
from tests.helpers import assert_raises_naming


class Lib:
    """The bits of a framework the shared test code needs."""

    def __init__(self, name):
        self.name = name
        self.nn = torch.nn if name == "torch" else nn
        self.tensor = (lambda a: torch.tensor(np.asarray(a, np.float32))) if name == "torch" else \
            (lambda a: dn.tensor(np.asarray(a, np.float32)))


LIBS = [Lib("torch"), Lib("divenet")]


def both(fn):
    """fn(lib) under torch and divenet; returns (torch's result, divenet's)."""
    return fn(LIBS[0]), fn(LIBS[1])


def build(lib):
    tnn, T = lib.nn, lib.tensor

    class Block(tnn.Module):
        def __init__(self):
            super().__init__()
            self._scale = tnn.Parameter(T(np.ones(3)))  # a private name is still a parameter
            self.register_buffer("_count", T(np.zeros(1)))  # and a registered private buffer
            self.register_buffer("scratch", T(np.zeros(2)), persistent=False)
            self.lin = tnn.Linear(3, 3)
            self._act = tnn.ReLU()

        def forward(self, x):
            return self._act(self.lin(x * self._scale))

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.stem = tnn.Sequential(OrderedDict([("conv", tnn.Conv2d(1, 2, 3)),
                                                    ("bn", tnn.BatchNorm2d(2))]))
            self.blocks = tnn.ModuleList([Block(), Block()])
            self.heads = tnn.ModuleDict({"a": tnn.Linear(3, 1), "b": tnn.Linear(3, 2)})
            self.plist = tnn.ParameterList([tnn.Parameter(T(np.ones(2))), T(np.zeros(3))])
            self.pdict = tnn.ParameterDict({"k": tnn.Parameter(T(np.zeros(1)))})
            self.register_parameter("maybe", None)
            self.tied = self.blocks[0]  # the same block twice: listed once

    return Net()


def test_names_match_torch():
    theirs, ours = both(build)
    for what in ("named_parameters", "named_buffers", "named_modules", "named_children"):
        t_names = [n for n, _ in getattr(theirs, what)()]
        o_names = [n for n, _ in getattr(ours, what)()]
        assert o_names == t_names, what
    assert "blocks.0._scale" in [n for n, _ in ours.named_parameters()]
    # state_dict: PyTorch's keys in PyTorch's order (per module: parameters, then persistent
    # buffers); the non-persistent buffer is left out
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert "blocks.0.scratch" not in ours.state_dict()
    assert "blocks.0.scratch" in dict(ours.named_buffers())
    assert [n for n, _ in ours.named_parameters(prefix="m", recurse=True)][:2] == ["m.stem.conv.weight", "m.stem.conv.bias"]
    assert [n for n, _ in ours.blocks[0].named_parameters(recurse=False)] == \
        [n for n, _ in theirs.blocks[0].named_parameters(recurse=False)] == ["_scale"]
    assert len(list(ours.parameters(recurse=False))) == len(list(theirs.parameters(recurse=False)))
    assert len(list(ours.buffers())) == len(list(theirs.buffers()))
    assert ours.get_submodule("stem.bn") is ours.stem.bn


def test_private_plain_tensors_are_not_state():
    class Cached(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.ones(2, np.float32))
            self._cache = dn.zeros(4)  # internal: not a buffer unless registered
            self._cache_list = [dn.zeros(1)]
            self.flag, self._lazy = 3, False

    m = Cached()
    assert [n for n, _ in m.named_parameters()] == ["w"]
    assert list(m.named_buffers()) == []
    assert list(m.state_dict()) == ["w"]


def test_state_dict_round_trip_through_torch():
    theirs, ours = both(build)
    sd = {k: v.numpy() + 0.5 if v.dtype.is_floating_point else v.numpy()
          for k, v in theirs.state_dict().items()}
    assert ours.load_state_dict(sd).missing_keys == []
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(v, sd[k], err_msg=k)
    assert repr(ours.load_state_dict(sd)) == repr(theirs.load_state_dict(
        {k: torch.tensor(v) for k, v in sd.items()})) == "<All keys matched successfully>"


def test_load_state_dict_not_strict_returns_missing_and_unexpected_like_torch():
    def run(lib):
        m = lib.nn.Sequential(lib.nn.Linear(2, 3), lib.nn.BatchNorm1d(3))
        sd = {k: v for k, v in m.state_dict().items() if k != "1.running_var"}
        sd["extra.weight"] = sd["0.weight"]
        r = m.load_state_dict(sd, strict=False)
        return r.missing_keys, r.unexpected_keys, type(r).__name__

    theirs, ours = both(run)
    assert ours[:2] == theirs[:2] == (["1.running_var"], ["extra.weight"])
    assert ours[2] == theirs[2] == "_IncompatibleKeys"


def test_load_state_dict_errors_name_the_key_and_load_nothing():
    m = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    sd = m.state_dict()
    before = m[0].weight.array.copy()
    for key, value, fragments in [
        ("0.weight", np.zeros((3, 3), np.float32), ["0.weight", "(3, 2)", "(3, 3)"]),
        ("0.weight", np.zeros((3, 2), np.int32), ["0.weight", "float32", "int32"]),
        ("1.running_mean", np.zeros(3, np.int64), ["1.running_mean", "int64"]),
    ]:
        bad = {k: (v + 1 if v.dtype.kind == "f" else v) for k, v in sd.items()}
        bad[key] = value
        assert_raises_naming(ValueError, lambda: m.load_state_dict(bad), *fragments)
        np.testing.assert_array_equal(m[0].weight.array, before)  # checked before copying any
    missing = dict(sd)
    del missing["1.bias"]
    assert_raises_naming(ValueError, lambda: m.load_state_dict(missing), "missing", "1.bias")
    assert_raises_naming(ValueError, lambda: m.load_state_dict({**sd, "2.weight": sd["1.bias"]}),
                         "unexpected", "2.weight")
    # an integer buffer takes integer data; a float checkpoint of it is converted, as torch does
    m.load_state_dict({**sd, "1.num_batches_tracked": np.array(7.0)})
    assert m[1].num_batches_tracked.dtype == np.int64 and int(m[1].num_batches_tracked.item()) == 7


@pytest.mark.parametrize("action", [
    lambda lib, m: setattr(m, "weight", lib.tensor(np.zeros((2, 2)))),  # a plain tensor in a parameter slot
    lambda lib, m: setattr(m, "sub", 5),  # not a module in a submodule slot
    lambda lib, m: setattr(m, "buf", 5),  # not a tensor in a registered buffer slot
    lambda lib, m: m.register_parameter("p", lib.tensor(np.zeros(1))),
    lambda lib, m: m.register_buffer("q", 5),
    lambda lib, m: m.add_module("r", 5),
])
def test_assignment_type_errors_like_torch(action):
    def run(lib):
        m = lib.nn.Linear(2, 2)
        m.sub = lib.nn.ReLU()
        m.register_buffer("buf", lib.tensor(np.zeros(2)))
        with pytest.raises(TypeError) as info:
            action(lib, m)
        return str(info.value)

    theirs, ours = both(run)
    assert "expected" in ours or "required" in ours or "not a Module" in ours


@pytest.mark.parametrize("action", [
    lambda lib, m: m.register_buffer("a.b", lib.tensor(np.zeros(1))),
    lambda lib, m: m.register_parameter("", None),
    lambda lib, m: m.register_buffer("training", None),  # an existing attribute
    lambda lib, m: m.register_buffer("weight", lib.tensor(np.zeros(1))),  # an existing parameter
    lambda lib, m: m.add_module("x.y", lib.nn.ReLU()),
])
def test_bad_registration_names_raise_key_error_like_torch(action):
    for lib in LIBS:
        with pytest.raises(KeyError):
            action(lib, lib.nn.Linear(2, 2))


def test_none_in_a_parameter_slot_and_delattr_like_torch():
    def run(lib):
        m = lib.nn.Linear(2, 2)
        m.bias = None
        names = [n for n, _ in m.named_parameters()]
        keys = list(m.state_dict())
        m.bias = lib.nn.Parameter(lib.tensor(np.zeros(2)))
        back = [n for n, _ in m.named_parameters()]
        del m.weight
        gone = [n for n, _ in m.named_parameters()]
        m.register_buffer("rb", None)
        return names, keys, back, gone, m.rb is None, list(m.state_dict())

    theirs, ours = both(run)
    assert ours == theirs
    assert ours[0] == ["weight"]


def test_apply_children_first_and_module_methods_like_torch():
    def run(lib):
        m = build(lib)
        seen = []
        m.apply(lambda mod: seen.append(type(mod).__name__))
        kids = [n for n, _ in m.named_children()]
        return seen, kids, len(list(m.modules())), len(list(m.children()))

    theirs, ours = both(run)
    assert ours == theirs


def test_zero_grad_and_requires_grad_like_torch():
    def run(lib):
        m = lib.nn.Linear(3, 2)
        x = lib.tensor(np.ones((4, 3)))
        m(x).sum().backward()
        m.zero_grad(set_to_none=False)
        zeroed = [None if p.grad is None else np.asarray(p.grad.numpy() if hasattr(p.grad, "numpy")
                                                         else p.grad).tolist() for p in m.parameters()]
        m.zero_grad()
        cleared = [p.grad is None for p in m.parameters()]
        m.requires_grad_(False)
        flags = [p.requires_grad for p in m.parameters()]
        return zeroed, cleared, flags

    theirs, ours = both(run)
    assert ours == theirs
    assert ours[0] == [[[0.0] * 3] * 2, [0.0] * 2]


@pytest.mark.parametrize("call", ["double", "half", "float", "to_dtype", "to_device_dtype"])
def test_module_dtype_casts_floats_only_like_torch(call):
    def run(lib):
        m = lib.nn.Sequential(lib.nn.Linear(2, 3), lib.nn.BatchNorm1d(3))
        m(lib.tensor(np.ones((4, 2)))).sum().backward()
        dt = {"torch": torch.float64, "divenet": dn.float64}[lib.name]
        if call == "to_dtype":
            m.to(dt)
        elif call == "to_device_dtype":
            m.to("cpu", dt)
        else:
            getattr(m.double() if call == "float" else m, call)()
        grads = [str(p.grad.dtype).replace("torch.", "") for p in m.parameters()]
        return {k: str(v.dtype).replace("torch.", "") for k, v in m.state_dict().items()}, grads

    theirs, ours = both(run)
    assert ours == theirs
    assert ours[0]["1.num_batches_tracked"] == "int64"


def test_module_in_float64_computes_in_float64():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)).double()
    y = m(dn.tensor(np.ones((1, 1, 4, 4))).double())
    assert y.dtype == np.float64 and m.cpu() is m


# ---- lazy layers ---------------------------------------------------------------------------------
LAZY = [
    ("LazyLinear", (3,), {}, (4, 5), "Linear"),
    ("LazyConv2d", (4, 3), {"padding": 1, "stride": 2}, (2, 3, 7, 7), "Conv2d"),
    ("LazyConv1d", (4, 3), {"bias": False}, (2, 3, 9), "Conv1d"),
    ("LazyBatchNorm2d", (), {}, (3, 5, 4, 4), "BatchNorm2d"),
    ("LazyBatchNorm1d", (), {"affine": False}, (6, 5), "BatchNorm1d"),
]


@pytest.mark.parametrize("name,args,kw,shape,becomes", LAZY)
def test_lazy_layers_match_torch_and_become_the_plain_class(name, args, kw, shape, becomes):
    ours, theirs = getattr(nn, name)(*args, **kw), getattr(torch.nn, name)(*args, **kw)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    theirs(torch.tensor(x))  # materializes
    ours.init(dn.tensor(x))
    assert type(ours) is getattr(nn, becomes) and type(theirs) is getattr(torch.nn, becomes)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    ours.train()
    np.testing.assert_allclose(ours(dn.tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-4, atol=1e-5)


# ---- inplace activations, Flatten / Unflatten, Identity ------------------------------------------
@pytest.mark.parametrize("name,args", [("ReLU", ()), ("LeakyReLU", (0.2,)), ("ReLU6", ()), ("SiLU", ()),
                                       ("Hardtanh", (-0.5, 0.5)), ("Dropout", (0.0,))])
def test_inplace_is_accepted_and_computes_the_same_values(name, args):
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32) * 2
    ours, theirs = getattr(nn, name)(*args, inplace=True), getattr(torch.nn, name)(*args, inplace=True)
    assert repr(ours) == repr(theirs)
    xo = dn.tensor(x)
    np.testing.assert_allclose(ours(xo).numpy(), theirs(torch.tensor(x)).numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(xo.numpy(), x)  # documented: the input is left unchanged


@pytest.mark.parametrize("make", [
    lambda lib: lib.nn.Unflatten(1, (2, 6)), lambda lib: lib.nn.Unflatten(-1, (-1, 2)),
    lambda lib: lib.nn.Flatten(0, 1), lambda lib: lib.nn.Identity(54, unused="x"),
    lambda lib: lib.nn.Softmax(), lambda lib: lib.nn.LogSoftmax(dim=0),
])
def test_shape_layers_match_torch(make):
    x = np.random.default_rng(0).standard_normal((3, 12, 2)).astype(np.float32)
    ours, theirs = make(LIBS[1]), make(LIBS[0])
    xo, xt = dn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yo, yt = ours(xo), theirs(xt)
    np.testing.assert_allclose(yo.numpy(), yt.detach().numpy(), rtol=1e-6, atol=1e-6)
    w = np.random.default_rng(1).standard_normal(yt.shape).astype(np.float32)
    (yo * dn.tensor(w)).sum().backward()
    (yt * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(np.asarray(xo.grad.numpy() if hasattr(xo.grad, "numpy") else xo.grad),
                               xt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_private_parameter_is_trained_and_saved_without_super_init():
    from divenet import optim

    class Scaled(nn.Module):  # no super().__init__(): divenet modules need none
        def __init__(self):
            self._scale = nn.Parameter(np.ones(3, np.float32))
            self.register_buffer("_steps", dn.zeros(1), persistent=False)

        def forward(self, x):
            return x * self._scale

    m = Scaled()
    opt = optim.SGD(m.parameters(), lr=0.5)
    m(dn.ones(2, 3)).sum().backward()
    opt.step()
    np.testing.assert_allclose(m._scale.numpy(), [0.0, 0.0, 0.0])  # 1 - 0.5 * 2
    assert list(m.state_dict()) == ["_scale"]
    assert [n for n, _ in m.named_buffers()] == ["_steps"]
