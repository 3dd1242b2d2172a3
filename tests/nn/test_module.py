import numpy as np
import pytest

import divenet as dn
from divenet import nn
from divenet.nn import Module, Parameter


class Affine(Module):
    def __init__(self, n):
        self.w = Parameter(np.ones(n, np.float32))
        self.b = Parameter(np.zeros(n, np.float32))
        self.count = dn.zeros(1)  # a buffer: a Tensor that is not a Parameter

    def forward(self, x):
        if x.shape[-1] != self.w.shape[0]:
            raise ValueError(f"affine: input has {x.shape[-1]} features, expected {self.w.shape[0]}")
        return x * self.w + self.b


class Net(Module):
    def __init__(self):
        self.blocks = [Affine(3), Affine(3)]
        self.heads = {"a": Affine(3)}
        self.seq = nn.Sequential(Affine(3), Affine(3))
        self.shared = self.blocks[0]  # the same module twice: its parameters count once

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.seq(self.heads["a"](x))


def test_parameters_found_in_lists_dicts_and_sequential_with_torch_names():
    names = [n for n, _ in Net().named_parameters()]
    assert names == ["blocks.0.w", "blocks.0.b", "blocks.1.w", "blocks.1.b", "heads.a.w", "heads.a.b",
                     "seq.0.w", "seq.0.b", "seq.1.w", "seq.1.b"]
    assert [n for n, _ in Net().named_buffers()][:2] == ["blocks.0.count", "blocks.1.count"]


def test_state_dict_round_trip_and_errors():
    a, b = Net(), Net()
    for p in a.parameters():
        p.array = np.random.default_rng(0).standard_normal(p.shape).astype(np.float32)
    sd = a.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert "blocks.0.count" in sd
    b.load_state_dict(sd)
    for (n1, p1), (n2, p2) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p1.array, p2.array)
    bad = dict(sd)
    bad["seq.0.w"] = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match=r"seq\.0\.w.*\(3,\).*\(4,\)"):
        b.load_state_dict(bad)
    del bad["seq.0.w"]
    with pytest.raises(ValueError, match="missing keys.*seq.0.w"):
        b.load_state_dict(bad)
    bad["extra"] = np.zeros(1)
    with pytest.raises(ValueError, match="unexpected keys.*extra"):
        b.load_state_dict(bad, strict=True)


def test_state_dict_is_a_copy():
    m = Affine(2)
    sd = m.state_dict()
    sd["w"][0] = 5
    assert m.w.array[0] == 1


def test_train_eval_propagate():
    m = Net()
    m.eval()
    assert all(not x.training for x in m.modules())
    m.train()
    assert all(x.training for x in m.modules())


def test_errors_inside_modules_name_the_module_path():
    m = Net()
    with pytest.raises(ValueError) as info:
        m.seq(dn.ones(2, 4))
    assert str(info.value).startswith("0 (Affine): affine: input has 4 features")
    with pytest.raises(ValueError) as info:
        m(dn.ones(2, 4))
    assert str(info.value).startswith("blocks.0 (Affine): ")


def test_zero_grad_and_backward_through_module():
    m = Affine(3)
    (m(dn.ones(2, 3)) ** 2).sum().backward()
    np.testing.assert_allclose(m.w.grad, [4, 4, 4])
    m.zero_grad()
    assert m.w.grad is None


def test_lazy_layers_infer_sizes_and_refuse_parameters_before_init():
    m = nn.Sequential(nn.Conv2d(None, 4, 3), nn.Flatten(), nn.Linear(None, 5))
    with pytest.raises(RuntimeError, match="init"):
        list(m.parameters())
    m.init(dn.zeros(1, 2, 6, 6))
    shapes = [tuple(p.shape) for p in m.parameters()]
    assert shapes == [(4, 2, 3, 3), (4,), (5, 64), (5,)]


def test_repr_reads_like_pytorch():
    m = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.Sigmoid(), nn.Linear(400, 120))
    text = repr(m)
    assert "(0): Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))" in text
    assert "(2): Linear(in_features=400, out_features=120, bias=True)" in text


def test_default_init_matches_pytorch_bounds():
    dn.manual_seed(0)
    lin = nn.Linear(300, 50)
    bound = 1 / np.sqrt(300)
    assert np.abs(lin.weight.array).max() <= bound
    assert np.abs(lin.weight.array).max() > 0.9 * bound  # actually spans the range
    conv = nn.Conv2d(4, 8, 3)
    assert np.abs(conv.weight.array).max() <= 1 / np.sqrt(36)
    assert conv.weight.dtype == np.float32


def test_manual_seed_makes_init_reproducible():
    dn.manual_seed(3)
    a = nn.Linear(5, 5).weight.array.copy()
    dn.manual_seed(3)
    np.testing.assert_array_equal(a, nn.Linear(5, 5).weight.array)


def test_num_parameters_and_devices():
    m = nn.Linear(3, 2)
    assert m.num_parameters() == 8
    assert m.to("cpu").weight.device == dn.cpu()
