"""The D2L chapters' PyTorch code (ch_*.py here, the team's own code in the book's style) run
twice: as written under torch, and on divenet with only the import lines changed. Both runs
must show what the book shows: losses that fall, learned kernels, the slides' worked examples,
accuracies well above chance, the book's shapes. The same assertions hold for both frameworks,
so a divenet call that silently does nothing (an in-place update lost, a no-op initializer)
fails here as it would in a reader's notebook."""
from __future__ import annotations

import functools
import gzip
import math
import random
import re
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
N_TRAIN, N_TEST = 2000, 1000
TRAIN_SLICE = {"ch_lenet.py": 10000}  # the sigmoid LeNet needs ~200 steps of 256 to start learning

# the only torch imports a script may have, and what each becomes on divenet
IMPORTS = {
    "import torch": "import divenet as torch",
    "from torch import nn": "from divenet import nn",
    "from torch.nn import functional as F": "from divenet.nn import functional as F",
    "from torch.utils import data": "from divenet.utils import data",
}
FRAMEWORKS = ["torch", "divenet"]
SCRIPTS = sorted(p.name for p in HERE.glob("ch_*.py"))


def source_for(name: str, framework: str) -> str:
    """The script's source; for divenet, its torch import lines swapped (nothing else)."""
    lines = (HERE / name).read_text().splitlines(keepends=True)
    if framework == "divenet":
        lines = [IMPORTS[ln.strip()] + "\n" if ln.strip() in IMPORTS else ln for ln in lines]
    return "".join(lines)


def read_idx_head(path, n):
    """The first n items of a gzipped uint8 IDX file. A reader of its own, not divenet's, so that
    the torch run does not depend on divenet at all."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    assert raw[:3] == b"\0\0\x08", f"{path}: not a uint8 IDX file"
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)[:n].copy()


@functools.lru_cache(maxsize=None)
def fashion_mnist_slice(n_train=N_TRAIN):
    def part(stem, n):
        return read_idx_head(FASHION_MNIST / f"{stem}-idx{3 if 'images' in stem else 1}-ubyte.gz", n)
    return {"train_images": part("train-images", n_train), "train_labels": part("train-labels", n_train),
            "test_images": part("t10k-images", N_TEST), "test_labels": part("t10k-labels", N_TEST)}


def to_numpy(value, framework):
    """RESULT's tensors as NumPy arrays (recursively); a torch tensor in a divenet run fails."""
    if isinstance(value, dict):
        return {k: to_numpy(v, framework) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not (framework == "torch" and type(value).__name__ == "Size"):
        return type(value)(to_numpy(v, framework) for v in value) if type(value) in (list, tuple) else tuple(value)
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        assert framework == "torch" or "torch" not in type(value).__module__, \
            f"a torch tensor in the divenet run: {type(value)}"
        return np.asarray(value.detach().numpy())
    return value


@functools.lru_cache(maxsize=None)
def run(name: str, framework: str):
    """Execute one script in fresh globals (seeded; Fashion-MNIST injected); its RESULT, its
    printed lines and its wall time."""
    import importlib
    fw = importlib.import_module(framework)
    fw.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    path = HERE / name
    namespace = {"__name__": "__d2l__", "__file__": str(path)}
    printed = []

    def capture_print(*args, sep=" ", end="\n", **kwargs):
        printed.append(sep.join(str(a) for a in args))
    namespace["print"] = capture_print
    text = path.read_text()
    uses_lib = "from d2l import" in text
    if uses_lib:  # the shared helpers as a fresh module, imports swapped as the chapter's
        lib = types.ModuleType("d2l")
        lib.__file__ = str(HERE / "d2l.py")
        lib.print = capture_print
        lib.__dict__.update({k: v.copy() for k, v in fashion_mnist_slice(TRAIN_SLICE.get(name, N_TRAIN)).items()})
        exec(compile(source_for("d2l.py", framework), lib.__file__, "exec"), lib.__dict__)
        sys.modules["d2l"] = lib
    elif "train_images" in text:
        namespace.update({k: v.copy() for k, v in fashion_mnist_slice(TRAIN_SLICE.get(name, N_TRAIN)).items()})
    # spinning worker threads (torch's OpenMP, divenet's OpenBLAS) slow small ops up to 30x
    # when other processes hold the cores (measured: the RNN chapter on torch 261 s on two
    # threads, 8 s on one); both frameworks run on one thread, steady and comparable
    get, put = ((fw.get_num_threads, fw.set_num_threads) if framework == "torch"
                else (fw.blas_threads, fw.set_blas_threads))
    threads = get()
    if threads:
        put(1)
    start = time.perf_counter()
    try:
        # compiled under the script's own path: a traceback names its line
        exec(compile(source_for(name, framework), str(path), "exec"), namespace)
    finally:
        if threads:
            put(threads)
        if uses_lib:
            del sys.modules["d2l"]
    seconds = time.perf_counter() - start
    sys.stdout.write(f"\n[d2l] {name} on {framework}: {seconds:.1f} s\n")
    return to_numpy(namespace["RESULT"], framework), printed, seconds


def arr(x):
    return np.asarray(x, dtype=np.float64)


def assert_falls(losses, fraction, what="loss"):
    losses = [float(v) for v in losses]
    assert all(math.isfinite(v) for v in losses), f"{what} not finite: {losses}"
    assert losses[-1] < fraction * losses[0], f"{what} did not fall below {fraction} of the first: {losses}"


@pytest.fixture(params=FRAMEWORKS)
def framework(request):
    if request.param == "torch":
        pytest.importorskip("torch")
    return request.param


def test_scripts_import_only_torch_lines_that_map_to_divenet():
    assert SCRIPTS, "no ch_*.py scripts found"
    for name in SCRIPTS + ["d2l.py"]:
        for number, line in enumerate((HERE / name).read_text().splitlines(), 1):
            if re.match(r"\s*(import|from)\s+torch\b", line):
                assert line.strip() in IMPORTS, f"{name}:{number}: import not in the swap table: {line!r}"
        swapped = source_for(name, "divenet").splitlines()
        assert not [ln for ln in swapped if re.match(r"\s*(import|from)\s+torch\b", ln)], name


def test_linreg_scratch(framework):
    r, printed, _ = run("ch_linreg_scratch.py", framework)
    assert r["features_shape"] == (1000, 2) and r["labels_shape"] == (1000, 1)
    assert r["batch_shapes"] == ((10, 2), (10, 1))
    assert_falls(r["losses"], 1e-3)
    assert r["losses"][-1] < 1e-3
    np.testing.assert_allclose(r["w"], [2, -3.4], atol=0.05)
    assert abs(r["b"] - 4.2) < 0.05
    np.testing.assert_allclose(r["w_err"], [2, -3.4] - arr(r["w"]), atol=1e-6)
    np.testing.assert_array_equal(r["grad_after_step"], np.zeros((2, 1)))  # zero_() in sgd
    assert [p.split(",")[0] for p in printed[:3]] == ["epoch 1", "epoch 2", "epoch 3"]


def test_linreg_concise(framework):
    r, printed, _ = run("ch_linreg_concise.py", framework)
    assert r["num_batches"] == 100 and r["batch_shapes"] == ((10, 2), (10, 1))
    assert r["init_b"] == 0.0  # bias.data.fill_(0) took effect
    assert max(abs(v) for v in r["init_w"]) < 0.05  # weight.data.normal_(0, 0.01) took effect
    assert r["num_params"] == 2
    assert_falls(r["losses"], 1e-3)
    np.testing.assert_allclose(r["w"], [2, -3.4], atol=0.05)
    assert abs(r["b"] - 4.2) < 0.05
    assert all(re.fullmatch(r"epoch \d, loss \d+\.\d{6}", line) for line in r["log"]), r["log"]
    assert r["shuffled"] == (True, True)  # shuffle=True: not the first rows, a new order each pass
    assert r["grads_cleared"]


def check_classifier(r, min_acc, fraction):
    assert r["batch_shapes"][0][1:] == (1, 28, 28)
    if "init_max" in r:  # train_ch6's net.apply(init_weights) with Xavier's uniform bound
        assert 0.15 < r["init_max"] <= math.sqrt(6 / (84 + 10)), r["init_max"]
    assert_falls(r["losses"], fraction)
    assert 0.0 <= r["acc_before"] < 0.3  # untrained: about chance (0.1)
    assert min_acc < r["test_acc"] <= 1.0, f"test accuracy {r['test_acc']} (chance is 0.1)"


def test_softmax_scratch(framework):
    r, _, _ = run("ch_softmax_scratch.py", framework)
    np.testing.assert_allclose(r["row_sums"], [1, 1], rtol=1e-6)
    np.testing.assert_allclose(r["picked"], [0.1, 0.5], rtol=1e-6)
    np.testing.assert_allclose(r["ce"], [-math.log(0.1), -math.log(0.5)], rtol=1e-6)
    assert r["toy_acc"] == 0.5
    assert "float32" in r["batch_dtypes"][0] and "int64" in r["batch_dtypes"][1]
    check_classifier(r, 0.6, 0.75)


def test_softmax_concise(framework):
    r, _, _ = run("ch_softmax_concise.py", framework)
    assert abs(r["weight_std"] - 0.01) < 0.002  # nn.init.normal_ through net.apply took effect
    assert r["loss_shape"] == (64,)  # reduction='none'
    check_classifier(r, 0.6, 0.75)


def test_mlp_scratch(framework):
    r, _, _ = run("ch_mlp_scratch.py", framework)
    np.testing.assert_array_equal(r["relu_demo"], [0, 0, 0, 1.5])
    assert r["leaf"] == (True, True)
    assert r["param_shapes"] == [(784, 256), (256,), (256, 10), (10,)]
    check_classifier(r, 0.6, 0.75)


def test_mlp_concise(framework):
    r, _, _ = run("ch_mlp_concise.py", framework)
    assert all(abs(s - 0.01) < 0.002 for s in r["weight_stds"]), r["weight_stds"]
    assert r["num_params"] == 4
    check_classifier(r, 0.6, 0.75)


def test_conv_corr2d(framework):
    r, printed, _ = run("ch_conv_corr2d.py", framework)
    np.testing.assert_array_equal(r["worked"], [[19, 25], [37, 43]])
    np.testing.assert_array_equal(r["worked_arange"], [[19, 25], [37, 43]])
    assert r["scratch_params"] == [(1, 2), (1,)] and r["scratch_out_shape"] == (6, 7)
    np.testing.assert_array_equal(r["scratch_grad"], [[42, 42]])  # 6*7 windows of ones
    image = np.ones((6, 8))
    image[:, 2:6] = 0
    np.testing.assert_array_equal(r["image"], image)
    edges = np.zeros((6, 7))
    edges[:, 1], edges[:, 5] = 1, -1
    np.testing.assert_array_equal(r["edges"], edges)
    np.testing.assert_array_equal(r["edges_transposed"], np.zeros((8, 5)))
    assert_falls(r["losses"], 0.05)
    np.testing.assert_allclose(r["kernel"], [[1, -1]], atol=0.1)
    assert len(r["log"]) == 5 and all(re.fullmatch(r"epoch (2|4|6|8|10), loss \d+\.\d{3}", s) for s in r["log"]), r["log"]
    assert printed == r["log"]
    assert r["grad_cleared"]  # Module.zero_grad


def test_conv_padding_channels(framework):
    r, _, _ = run("ch_conv_padding_channels.py", framework)
    assert r["shapes"] == {"pad1": (8, 8), "pad21": (8, 8), "stride2": (4, 4), "stride34": (2, 2)}
    np.testing.assert_array_equal(r["strided"], [[0, 8], [6, 8]])
    np.testing.assert_array_equal(r["strided_F"], [[[[0, 8], [6, 8]]]])
    np.testing.assert_array_equal(r["multi_in"], [[56, 72], [104, 120]])
    assert r["K_shape"] == (3, 2, 2, 2)
    expected = [[[56, 72], [104, 120]], [[76, 100], [148, 172]], [[96, 128], [192, 224]]]
    np.testing.assert_array_equal(r["multi_out"], expected)
    np.testing.assert_allclose(r["multi_out_F"], expected, rtol=1e-6)
    shape, diff, size = r["one_by_one"]
    assert shape == (2, 3, 3) and size > 1  # not both zero
    # The book bounds the sum of the 18 differences by 1e-6. A BLAS matmul (divenet's, through
    # OpenBLAS with fused multiply-adds) may round each element one ulp (2.4e-7 near 2) away from
    # a plain sum of products, so the same 1e-6 bounds each element: equal up to rounding.
    assert diff < 1e-6


def test_pooling(framework):
    r, _, _ = run("ch_pooling.py", framework)
    np.testing.assert_array_equal(r["max"], [[4, 5], [7, 8]])
    np.testing.assert_array_equal(r["avg"], [[2, 3], [5, 6]])
    np.testing.assert_array_equal(r["input"], np.arange(16).reshape(1, 1, 4, 4))
    np.testing.assert_array_equal(r["window3"], [[[[10]]]])
    np.testing.assert_array_equal(r["padded"], [[[[5, 7], [13, 15]]]])
    np.testing.assert_array_equal(r["rect"], [[[[5, 7], [13, 15]]]])
    assert r["X2_shape"] == (1, 2, 4, 4)
    np.testing.assert_array_equal(r["two_channels"], [[[[5, 7], [13, 15]], [[6, 8], [14, 16]]]])
    np.testing.assert_array_equal(r["avg_pool"], [[[[2.5, 4.5], [10.5, 12.5]], [[3.5, 5.5], [11.5, 13.5]]]])


@pytest.mark.slow  # 1570 steps of 256 images: the sigmoid LeNet's plateau can last 940 of them
def test_lenet(framework):
    r, _, _ = run("ch_lenet.py", framework)
    assert r["layer_shapes"] == [
        ("Conv2d", (1, 6, 28, 28)), ("Sigmoid", (1, 6, 28, 28)), ("AvgPool2d", (1, 6, 14, 14)),
        ("Conv2d", (1, 16, 10, 10)), ("Sigmoid", (1, 16, 10, 10)), ("AvgPool2d", (1, 16, 5, 5)),
        ("Flatten", (1, 400)), ("Linear", (1, 120)), ("Sigmoid", (1, 120)),
        ("Linear", (1, 84)), ("Sigmoid", (1, 84)), ("Linear", (1, 10))]
    check_classifier(r, 0.4, 0.8)


def test_batchnorm_scratch(framework):
    r, _, _ = run("ch_batchnorm.py", framework)
    mean, var = r["train_stats"]
    np.testing.assert_allclose(mean, 0, atol=1e-5)
    np.testing.assert_allclose(var, 1, rtol=1e-3)
    X = arr(r["X"])
    batch_mean, batch_var = X.mean(axis=(0, 2, 3)), X.var(axis=(0, 2, 3))
    moving_mean, moving_var = r["moving_after_one"]
    np.testing.assert_allclose(moving_mean, 0.1 * batch_mean, rtol=1e-4)
    np.testing.assert_allclose(moving_var, 0.9 + 0.1 * batch_var, rtol=1e-4)
    # under no_grad the layer normalizes with the moving statistics, not the batch's
    expected = (X - moving_mean.reshape(1, 3, 1, 1)) / np.sqrt(moving_var.reshape(1, 3, 1, 1) + 1e-5)
    np.testing.assert_allclose(r["Y_pred"], expected, rtol=1e-4, atol=1e-4)
    assert r["bn_params"] == [(1, 3, 1, 1), (1, 3, 1, 1)]  # gamma, beta; not the moving statistics
    assert r["num_params"] == 5 * 2 + 4 * 2  # five Conv2d/Linear and four BatchNorm, two each
    assert not np.allclose(r["gamma"], 1)  # the scale was learned
    assert not np.allclose(r["moving_mean"], 0)  # the moving mean was updated during training
    check_classifier(r, 0.4, 0.8)  # two epochs of 32 steps; the test accuracy is still noisy


def test_resnet_block(framework):
    r, printed, _ = run("ch_resnet.py", framework)
    assert r["same_shape"] == (4, 3, 6, 6)
    assert r["halved_shape"] == (4, 6, 3, 3)
    assert r["conv1_weight_shape"] == (6, 3, 3, 3)  # in_channels inferred on the first call
    assert np.abs(r["grad_inplace"]).sum() > 0
    np.testing.assert_allclose(r["grad_inplace"], r["grad_out_of_place"], rtol=1e-5, atol=1e-6)
    # (the last layer's class name is left out: torch's LazyLinear turns itself into a Linear)
    assert r["layer_shapes"][:7] == [
        ("Sequential", (1, 64, 24, 24)), ("Sequential", (1, 64, 24, 24)), ("Sequential", (1, 128, 12, 12)),
        ("Sequential", (1, 256, 6, 6)), ("Sequential", (1, 512, 3, 3)), ("AdaptiveAvgPool2d", (1, 512, 1, 1)),
        ("Flatten", (1, 512))]
    assert r["layer_shapes"][7][1] == (1, 10)
    if framework == "divenet":  # the same network: as many parameters as PyTorch's
        assert r["num_params"] == run("ch_resnet.py", "torch")[0]["num_params"]
    assert len(printed) == 8
    assert r["eval_gap"] < 1e-5  # net.eval(): BatchNorm2d on running statistics


def test_densenet_block(framework):
    r, _, _ = run("ch_densenet.py", framework)
    assert r["dense_shape"] == (4, 23, 8, 8)  # 3 + 2 * 10 channels
    assert r["transition_shape"] == (4, 10, 4, 4)
    assert r["first_conv_grad"] > 0 and r["input_grad_shape"] == (4, 3, 8, 8)
    assert r["final_channels"] == 248
    assert [shape for _, shape in r["layer_shapes"]] == [
        (2, 64, 24, 24), (2, 192, 24, 24), (2, 96, 12, 12), (2, 224, 12, 12), (2, 112, 6, 6),
        (2, 240, 6, 6), (2, 120, 3, 3), (2, 248, 3, 3), (2, 248, 3, 3), (2, 248, 3, 3),
        (2, 248, 1, 1), (2, 248), (2, 10)]


def test_rnn_scratch(framework):
    r, printed, _ = run("ch_rnn_scratch.py", framework)
    vocab_size = r["vocab_size"]
    expected = np.zeros((2, vocab_size), dtype=int)
    expected[0, 0] = expected[1, 2] = 1
    np.testing.assert_array_equal(r["one_hot"], expected)
    assert r["output_shape"] == (10, vocab_size) and r["state_shape"] == (2, 64)
    assert len(r["untrained"]) == 14 and len(r["trained"]) == 29
    ppl = r["perplexities"]
    assert ppl[0] > 10  # about the vocabulary's size at the start
    assert_falls(ppl, 0.3, "perplexity")
    assert min(ppl[-5:]) < 4
    assert r["max_norm"] > 1 and r["clipped"] > 0  # clipping had work to do
    assert r["max_clipped_norm"] <= 1 + 1e-5  # and param.grad[:] *= ... did it, in place
    assert r["detached"][0] > 0 and r["detached"][1]  # s.detach_() on the carried state
    assert printed == [f"epoch {e}, perplexity {ppl[e - 1]:.1f}" for e in (10, 20, 30, 40)]


def test_lstm_concise(framework):
    r, _, _ = run("ch_lstm_concise.py", framework)
    V = r["vocab_size"]
    assert r["param_shapes"] == [(256, V), (256, 64), (256,), (256,)]  # four gates stacked
    assert r["output_shape"] == (10, V) and r["state_shapes"] == ((1, 2, 64), (1, 2, 64))
    assert len(r["untrained"]) == 14 and len(r["trained"]) == 29
    ppl = r["perplexities"]
    assert ppl[0] > 10
    assert_falls(ppl, 0.2, "perplexity")
    assert min(ppl[-5:]) < 2
    assert r["max_clipped_norm"] <= 1 + 1e-5  # nn.utils.clip_grad_norm_ scaled the gradients
    assert r["detached"]
