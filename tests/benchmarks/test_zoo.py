"""benchmarks/zoo.py and its PyTorch twins: the twins are the zoo's architectures (same
state_dict keys and shapes, same parameter count, same outputs from the same weights), the part
runs end to end at tiny sizes and writes the rows it promises. Nothing here asserts a speed."""
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import divenet as dn  # noqa: E402
import divenet.functional as F  # noqa: E402
from divenet import _cpu  # noqa: E402

from benchmarks import __main__ as bench  # noqa: E402
from benchmarks import common, torch_models, zoo  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One thread for PyTorch, OpenBLAS and the benchmark (BENCH_THREADS), so that no spinning
    workers fight over the shared cores; the rest of the suite gets its own counts back."""
    t, b = torch.get_num_threads(), _cpu.blas_threads()
    monkeypatch.setenv("BENCH_THREADS", "1")
    torch.set_num_threads(1)
    _cpu.set_blas_threads(1)
    yield
    torch.set_num_threads(t)
    if b is not None:
        _cpu.set_blas_threads(b)


@pytest.mark.parametrize("name", zoo.ALL)
def test_twin_mirrors_the_zoo_model(name):
    ours, theirs = zoo.build(name, torch)  # copies by name, strict: raises if a key is missing
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert ({k: tuple(v.shape) for k, v in ours_sd.items()}
            == {k: tuple(v.shape) for k, v in theirs_sd.items()})
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    # training mode: batch norm normalizes with the batch's statistics (in eval mode, with fresh
    # running statistics, MobileNet's activations fade to 1e-18 and any two nets agree); dropout
    # off, its masks differ. 16 values per channel at the last stage keep the variances
    # well-conditioned.
    ours.train()
    theirs.train()
    for m in ours.modules():
        if isinstance(m, dn.nn.Dropout):
            m.eval()
    for m in theirs.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    c, k = zoo.channels_classes(name)
    x = np.random.default_rng(0).standard_normal((4, c, 64, 64)).astype(np.float32)
    with dn.no_grad():
        a = ours(dn.tensor(x)).numpy()
    with torch.no_grad():
        b = theirs(torch.from_numpy(x)).numpy()
    assert a.shape == b.shape == (4, k)
    assert b.std(axis=0).max() > 1e-3 * np.abs(b).max()  # the outputs depend on the input
    # float32 through up to 121 layers: 1e-4 of the outputs' size at most in practice; a layer
    # out of place would differ by the size of the outputs
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * float(np.abs(b).max()))


def test_zoo_twin_refuses_an_unknown_name():
    with pytest.raises(ValueError, match="no PyTorch twin of 'lenet'"):
        torch_models.zoo_twin(torch, "lenet")


def test_conv_timer_counts_flops_of_each_gradient_computed():
    x = dn.tensor(np.ones((2, 3, 9, 9), np.float32))
    w = dn.tensor(np.ones((4, 3, 3, 3), np.float32), requires_grad=True)
    macs = 2 * 4 * 7 * 7 * 3 * 3 * 3  # images * out channels * output positions * taps
    for x_grad, grads in ((False, 1), (True, 2)):
        x.requires_grad = x_grad
        timer = zoo.ConvTimer()
        with timer:
            y = F.conv2d(x, w).relu()  # relu: an op the timer leaves alone
            y.sum().backward()
        assert timer.forward_flop == 2 * macs
        assert timer.backward_flop == 2 * macs * grads
        assert timer.forward_s > 0 and timer.backward_s > 0


def test_time_rounds_rotates_who_goes_first():
    calls = []
    fns = [lambda i=i: calls.append(i) for i in range(3)]
    medians = common.time_rounds(fns, rounds=3, warmup=0)
    assert calls == [0, 1, 2, 1, 2, 0, 2, 0, 1]
    assert len(medians) == 3 and all(m >= 0 for m in medians)


TINY = zoo.Sizes(train=((32, 2),), infer=((32, 1), (32, 2)), small=((8, 2),), rss=(32, 2),
                 efficiency=(32, 2), sgemm=64)


def test_zoo_part_end_to_end(tmp_path, monkeypatch, capsys):
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"environment": {"cpu": "older"},
                               "tables": {"ops: forward + backward": [{"case": "x"}]}}))
    monkeypatch.setattr(zoo, "SIZES", TINY)
    bench.main(["--only", "zoo", "--rounds", "1", "--quick", "--models", "resnet18,resnet18-small",
                "--json", str(out)])
    data = json.loads(out.read_text())
    # the earlier run's table stays, with the environment it was measured in
    assert data["tables"]["ops: forward + backward"] == [{"case": "x"}]
    assert data["environments"]["ops: forward + backward"] == {"cpu": "older"}
    env = data["environment"]
    assert env["cpu"] and env["threads"] == env["blas_threads"] == 1 and "onnxruntime" in env
    assert data["environments"]["zoo: training and inference"] == env

    rows = {r["case"]: r for r in data["tables"]["zoo: training and inference"]}
    assert sorted(rows) == sorted([
        "resnet18 train step 3x32x32 b2", "resnet18 inference 3x32x32 b1", "resnet18 inference 3x32x32 b2",
        "resnet18-small train step 1x8x8 b2", "resnet18-small inference 1x8x8 b2",
        "resnet18 peak RSS, 3 train steps 3x32x32 b2"])
    for case, r in rows.items():
        assert r["divenet"] > 0 and r["pytorch"] > 0
        assert math.isclose(r["ratio"], r["divenet"] / r["pytorch"])
        if r["mode"] == "infer":
            assert r["onnxruntime"] > 0
            assert math.isclose(r["ratio_onnxruntime"], r["divenet"] / r["onnxruntime"])
            assert r["compiled"] > 0  # divenet's compiled eval graph beside its eager run
            assert math.isclose(r["ratio_compiled"], r["compiled"] / r["pytorch"])
            assert math.isclose(r["ratio_compiled_onnxruntime"], r["compiled"] / r["onnxruntime"])
        else:
            assert "onnxruntime" not in r and "compiled" not in r
    assert rows["resnet18 inference 3x32x32 b2"]["unit"] == "ms"
    assert rows["resnet18 peak RSS, 3 train steps 3x32x32 b2"]["unit"] == "MiB"

    eff = data["tables"]["zoo: convolution GFLOP/s"]
    assert [r["case"].rsplit(", ", 1)[1] for r in eff] == ["forward", "backward (both gradients)",
                                                           "forward + backward"]
    fwd, bwd, both = eff
    # resnet18's convolutions at 32x32, multiply-adds per image: the stem (3 -> 64, 7x7, to
    # 16x16), then the stages at 8, 4, 2 and 1 pixels square (3x3 convolutions and the 1x1
    # downsamples); the backward computes no gradient of the image (the stem's input)
    stem = 3 * 64 * 49 * 16 * 16
    stages = (4 * 64 * 64 * 9 * 64 + sum(cin * c * 9 * s + 3 * c * c * 9 * s + cin * c * s
                                        for cin, c, s in ((64, 128, 16), (128, 256, 4), (256, 512, 1))))
    assert fwd["gflop_per_step"] == pytest.approx(2 * 2 * (stem + stages) / 1e9)
    assert bwd["gflop_per_step"] == pytest.approx(2 * 2 * (stem + 2 * stages) / 1e9)
    assert both["gflop_per_step"] == pytest.approx(fwd["gflop_per_step"] + bwd["gflop_per_step"])
    for r in eff:
        assert r["sgemm_gflop_per_s"] > 0
        assert math.isclose(r["efficiency"], r["gflop_per_s"] / r["sgemm_gflop_per_s"])
    assert "resnet18 inference 3x32x32 b2" in capsys.readouterr().out  # the printed table


@pytest.mark.parametrize("argv, message", [
    (["--only", "zoo", "--models", "resnet18,alexnet"], "--models: unknown 'alexnet'; choose from resnet18"),
    (["--only", "zoo", "--models", ","], "--models: no model named in ','; choose from"),
    (["--only", "zo"], "--only: unknown part zo; choose from ops,models"),
    (["--rounds", "0"], "--rounds: need at least 1 round, got 0"),
])
def test_cli_refuses_nonsense(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.main(argv)
    assert message in capsys.readouterr().err
