"""Sequential, ModuleList, ModuleDict, ParameterList and ParameterDict: the same operations
under torch.nn and divenet.nn leave the same children, keys and parameters."""
from collections import OrderedDict

import numpy as np
import pytest
import torch

import divenet as dn
from divenet import nn
from tests.helpers import assert_raises_naming


def _libs():
    return [(torch.nn, lambda a: torch.tensor(np.asarray(a, np.float32))),
            (nn, lambda a: dn.tensor(np.asarray(a, np.float32)))]


def _layout(m):
    """What must agree: child names and types, state-dict keys and shapes."""
    return ([(n, type(c).__name__) for n, c in m.named_children()],
            [(k, tuple(v.shape)) for k, v in m.state_dict().items()])


def _same(script):
    got = [script(tnn, T) for tnn, T in _libs()]
    assert _layout(got[1][0]) == _layout(got[0][0])
    assert got[1][1:] == got[0][1:]
    return got


def test_sequential_operations_like_torch():
    def script(tnn, T):
        s = tnn.Sequential(OrderedDict([("conv", tnn.Conv2d(1, 2, 3)), ("act", tnn.ReLU()),
                                        ("fc", tnn.Linear(2, 2))]))
        info = [type(s.conv).__name__, type(s[-1]).__name__, len(s),
                [n for n, _ in s[1:].named_children()], type(s[1:]).__name__]
        s = tnn.Sequential(*s)  # torch's insert needs numbered keys
        s.append(tnn.Tanh())
        s.insert(1, tnn.BatchNorm2d(2))
        s.extend([tnn.Sigmoid()])
        s[0] = tnn.Conv2d(1, 2, 5)
        popped = s.pop(2)
        del s[-1]
        info += [type(popped).__name__, len(s), [type(m).__name__ for m in s]]
        return s, info

    _same(script)


def test_sequential_forward_and_named_access():
    s = nn.Sequential(OrderedDict([("fc", nn.Linear(3, 2)), ("act", nn.ReLU())]))
    t = torch.nn.Sequential(OrderedDict([("fc", torch.nn.Linear(3, 2)), ("act", torch.nn.ReLU())]))
    s.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(s(dn.tensor(x)).numpy(), t(torch.tensor(x)).detach().numpy(), rtol=1e-6)
    assert s.fc is s[0]
    with pytest.raises(AttributeError, match="nope"):
        s.nope
    assert_raises_naming(IndexError, lambda: s[2], "index 2", "length 2")
    assert_raises_naming(TypeError, lambda: nn.Sequential(nn.ReLU(), 3), "int is not a Module")


def test_module_list_operations_like_torch():
    def script(tnn, T):
        ml = tnn.ModuleList([tnn.Linear(2, 2), tnn.ReLU()])
        ml.append(tnn.Linear(2, 3))
        ml.extend([tnn.Tanh(), tnn.Linear(3, 1)])
        ml.insert(1, tnn.BatchNorm1d(2))
        ml[0] = tnn.Linear(2, 4)
        del ml[2]
        ml += [tnn.Sigmoid()]
        popped = ml.pop(1)
        return ml, [type(popped).__name__, len(ml), type(ml[1:3]).__name__, len(ml[1:3]),
                    [type(m).__name__ for m in ml], type(ml[-1]).__name__]

    _same(script)
    assert_raises_naming(TypeError, lambda: nn.ModuleList().append(3), "int is not a Module")
    assert_raises_naming(TypeError, lambda: nn.ModuleList().extend(3), "iterable", "int")


def test_module_dict_operations_like_torch():
    def script(tnn, T):
        md = tnn.ModuleDict({"b": tnn.Linear(2, 2), "a": tnn.ReLU()})
        md["c"] = tnn.Linear(2, 1)
        md.update([("d", tnn.Tanh())])
        md.update({"b": tnn.Linear(2, 5)})
        popped = md.pop("a")
        return md, [type(popped).__name__, list(md.keys()), "c" in md, "a" in md, len(md),
                    [type(v).__name__ for v in md.values()], list(md)]

    _same(script)
    md = nn.ModuleDict({"x": nn.ReLU()})
    assert md.x is md["x"]
    with pytest.raises(KeyError):
        md["a.b"] = nn.ReLU()


def test_parameter_list_and_dict_like_torch():
    def script(tnn, T):
        pl = tnn.ParameterList([T(np.ones(2)), tnn.Parameter(T(np.zeros((2, 3))))])
        pl.append(T(np.ones(4)))
        pl.extend([T(np.ones(1))])
        pl[0] = T(np.full(2, 3.0))
        pd = tnn.ParameterDict({"w": T(np.ones(3))})
        pd["b"] = T(np.zeros(1))
        pd.update({"c": T(np.ones(2))})
        m = tnn.Module()
        m.pl, m.pd = pl, pd
        kinds = [type(p).__name__ for p in pl] + [type(p).__name__ for p in pd.values()]
        return m, [len(pl), list(pd.keys()), kinds.count("Parameter"), float(pl[0].sum()),
                   all(p.requires_grad for p in m.parameters())]

    theirs, ours = _same(script)
    assert ours[1][2] == 7
    assert repr(ours[0].pl).splitlines()[1] == "  (0): Parameter containing: [float32 of size 2]"


def test_containers_train_with_optimizer():
    from divenet import optim

    model = nn.Module()
    model.layers = nn.ModuleList([nn.Linear(3, 3), nn.Linear(3, 1)])
    model.scales = nn.ParameterList([dn.ones(3)])
    opt = optim.SGD(model.parameters(), lr=0.1)
    x = dn.tensor(np.ones((2, 3), np.float32))
    before = [p.array.copy() for p in model.parameters()]
    y = model.layers[1](model.layers[0](x * model.scales[0]))
    y.sum().backward()
    opt.step()
    assert len(before) == 5
    assert all(not np.array_equal(b, p.array) for b, p in zip(before, model.parameters()))
