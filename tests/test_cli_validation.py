"""The command line refuses nonsense before it loads anything: each bad value of each option is
one line on stderr naming the option and the value, exit status 2, no traceback. Then the
behaviours users met: resume conflicts, summary's default input, predict on odd images, closed
pipes, --version."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from divenet.cli import build_model, main
from divenet.io import save_checkpoint
from divenet.models import get_spec, list_models

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_data = pytest.mark.skipif(not FMNIST.exists(), reason="apt-get install dataset-fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]


@pytest.fixture
def ckpt(tmp_path):
    """A LeNet checkpoint written without training (its weights are the initial ones)."""
    meta = {"model": "lenet", "kind": "image", "num_classes": 10, "in_channels": 1, "input_size": 28,
            "dataset": "fashion-mnist", "classes": CLASSES}
    return save_checkpoint(tmp_path / "run", 1, build_model(meta), None, meta)


def _error_line(capsys):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


# (command line, option the message names, a piece of the message); {ckpt}, {file} and {dir} are
# an existing checkpoint, an existing plain file and an existing directory
NONSENSE = [
    *[(["train", "lenet", "--epochs", v], "--epochs", f"must be a positive integer, got {v}")
      for v in ("0", "-2", "1.5", "ten")],
    *[(["train", "lenet", "--batch-size", v], "--batch-size", f"must be a positive integer, got {v}")
      for v in ("0", "-1", "64.0")],
    *[(["train", "lenet", "--lr", v], "--lr", f"must be a positive finite number, got {v}")
      for v in ("0", "-0.1", "nan", "inf", "1e-400", "fast")],
    (["train", "lenet", "--lr=-inf"], "--lr", "must be a positive finite number, got -inf"),
    (["train", "lenet", "--optimizer", "rmsprop"], "--optimizer", "invalid choice: 'rmsprop'"),
    *[(["train", "lenet", "--resize", v], "--resize", f"must be an image side from 1 to 4096, got {v}")
      for v in ("0", "-28", "big", "100000")],
    (["train", "lenet", "--device", "tpu"], "--device", "unknown device 'tpu'"),
    (["train", "lenet", "--device", "gpu:x"], "--device", "bad GPU index"),
    (["train", "lenet", "--device", "gpu:-1"], "--device", "bad GPU index"),
    (["train", "lenet", "--device", "gpu:99"], "--device", "gpu:99"),
    *[(["train", "lenet", "--threads", v], "--threads", f"must be a positive integer, got {v}")
      for v in ("0", "-1", "all")],
    *[(["train", "lenet", "--seed", v], "--seed", f"must be a non-negative integer, got {v}")
      for v in ("-1", "0.5", "random")],
    *[(["train", "lenet", "--clip-grad", v], "--clip-grad", f"must be a positive finite number, got {v}")
      for v in ("0", "-1", "nan", "inf")],
    *[(["train", "lenet", "--limit", v], "--limit", f"must be a positive integer, got {v}")
      for v in ("0", "-5", "1k")],
    (["train", "lenet", "--out", "{file}"], "--out", "is a file"),
    (["train", "lenet", "--out", "{file}/run"], "--out", "lies under the file"),
    (["train", "lenet", "--out", ""], "--out", "must be a path"),
    (["train", "lenet", "--out", "{dir}/" + "x" * 300], "--out", "too long"),
    *[(["train", "lenet", "--keep", v], "--keep", f"must be a non-negative integer, got {v}")
      for v in ("-1", "two")],
    (["train", "lenet", "--dataset", "cifar10"], "--dataset", "invalid choice: 'cifar10'"),
    (["train", "lenet", "--text", "{file}"], "--text", "lenet is an image model"),
    (["train", "resnet1000"], "model", "unknown model 'resnet1000'"),
    (["train", "charlm", "--text", "{dir}/missing.txt"], "--text", "no such file"),
    (["train", "charlm", "--text", "{dir}"], "--text", "not a file"),
    (["train", "charlm", "--text", "{file}", "--resize", "32"], "--resize", "language model"),
    (["train", "charlm", "--text", "{file}", "--dataset", "mnist"], "--dataset", "language model"),
    (["train", "charlm"], None, "pass --text FILE"),
    (["evaluate", "{dir}/missing"], "checkpoint", "no such file or directory"),
    (["evaluate", "{ckpt}", "--batch-size", "0"], "--batch-size", "must be a positive integer, got 0"),
    *[(["evaluate", "{ckpt}", "--limit", v], "--limit", f"must be a positive integer, got {v}")
      for v in ("0", "-5")],
    (["evaluate", "{ckpt}", "--dataset", "imagenet"], "--dataset", "invalid choice"),
    (["evaluate", "{ckpt}", "--device", "tpu"], "--device", "unknown device"),
    (["predict", "{dir}/missing.json", "{file}"], "checkpoint", "no such file or directory"),
    *[(["predict", "{ckpt}", "{file}", "--top", v], "--top", f"must be a positive integer, got {v}")
      for v in ("0", "-1", "all")],
    (["predict", "{ckpt}", "{file}", "--device", "gpu:x"], "--device", "bad GPU index"),
    (["summary", "resnet1000"], "model", "unknown model 'resnet1000'"),
    *[(["summary", "alexnet", "--input", v], "--input", "whole numbers joined by x")
      for v in ("3xabc", "3x", "x224", "3xx224", "", "2.5")],
    *[(["summary", "alexnet", "--input", v], "--input", "positive sizes") for v in ("0x224x224", "3x-1")],
    (["summary", "alexnet", "--input", "1x3x224x224"], "--input", "without the batch axis"),
    *[(["summary", "alexnet", "--input", v], "--input", "at most 4096") for v in ("100000", "3x5000x224")],
    (["summary", "charlm", "--input", "3x64"], "--input", "sequence of token ids"),
    *[(["summary", "lenet", "--num-classes", v], "--num-classes", f"must be a positive integer, got {v}")
      for v in ("0", "-10")],
    *[(["generate", "{ckpt}", "--length", v], "--length", f"must be a positive integer, got {v}")
      for v in ("0", "-1")],
    *[(["generate", "{ckpt}", "--temperature", v], "--temperature", f"must be a finite number >= 0, got {v}")
      for v in ("-1", "nan", "inf", "hot")],
    (["generate", "{ckpt}", "--seed", "-3"], "--seed", "must be a non-negative integer, got -3"),
    (["generate", "{dir}/missing"], "checkpoint", "no such file or directory"),
    (["fit", "lenet"], None, "invalid choice: 'fit'"),
]


@pytest.mark.parametrize("argv, option, message", NONSENSE, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_nonsense_is_one_line_exit_2(argv, option, message, tmp_path, ckpt, capsys, monkeypatch):
    from divenet.data import datasets

    # nothing may load a data set before the check: make any attempt fail loudly
    monkeypatch.setattr(datasets, "search_dirs", lambda *a, **k: pytest.fail("loaded a data set"))
    monkeypatch.chdir(tmp_path)  # a default run directory (runs/MODEL) would land here
    (tmp_path / "file.txt").write_text("some text\n")
    subs = {"{ckpt}": str(ckpt), "{file}": str(tmp_path / "file.txt"), "{dir}": str(tmp_path)}
    for key, value in subs.items():
        argv = [a.replace(key, value) for a in argv]
    assert main(argv) == 2
    line = _error_line(capsys)
    command = argv[0] if argv[0] in ("train", "evaluate", "predict", "summary", "generate") else None
    prefix = f"divenet {command}: error: " if command else "divenet: error: "
    if option:
        prefix += f"argument {option}: "
    assert line.startswith(prefix), line
    assert message in line, line
    assert not (tmp_path / "runs").exists()


def test_version(capsys):
    import divenet

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"divenet {divenet.__version__}" == "divenet 0.1.0"


# ---- resume ---------------------------------------------------------------------------------------
def _train(out, *extra):
    return main(["train", "lenet", "--limit", "64", "--batch-size", "32", "--quiet", "--out", str(out), *extra])


@needs_data
def test_resume_refuses_options_that_differ_from_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run, "--epochs", "2") == 0
    rows = (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["train", "lenet", "--out", str(run), "--resume", "--lr", "0.01", "--batch-size", "64",
                 "--dataset", "mnist", "--epochs", "3"]) == 2
    line = _error_line(capsys)
    for piece in ("--lr 0.01 (the run has 0.9)", "--batch-size 64 (the run has 32)",
                  "--dataset mnist (the run has fashion-mnist)"):
        assert piece in line, line
    # the same values given again are no conflict; --epochs is the total, the run has it already
    assert _train(run, "--resume", "--lr", "0.9", "--seed", "0", "--epochs", "2") == 0
    assert "already trained 2 epochs; nothing to do" in capsys.readouterr().out
    assert _train(run, "--resume", "--epochs", "1") == 2
    assert "must be at least 2, got 1" in _error_line(capsys)
    assert (run / "metrics.jsonl").read_text() == rows  # the run is untouched


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("resume") / "run"
    assert _train(run, "--epochs", "1") == 0
    return run


@needs_data
@pytest.mark.parametrize("option, given, saved", [
    ("--lr", "0.5", "0.9"), ("--batch-size", "16", "32"), ("--optimizer", "adam", "sgd"), ("--seed", "1", "0"),
    ("--resize", "32", "28"), ("--dataset", "mnist", "fashion-mnist"), ("--clip-grad", "1", "none"),
    ("--limit", "128", "64")])
def test_resume_names_each_conflicting_option(one_epoch_run, option, given, saved, capsys, monkeypatch):
    from divenet.data import datasets

    monkeypatch.setattr(datasets, "search_dirs", lambda *a, **k: pytest.fail("loaded a data set"))
    capsys.readouterr()
    assert main(["train", "lenet", "--out", str(one_epoch_run), "--resume", option, given, "--epochs", "2"]) == 2
    line = _error_line(capsys)
    value = str(float(given)) if option in ("--lr", "--clip-grad") else given
    assert f"{option} {value} (the run has {saved})" in line, line


@needs_data
def test_keep_and_keep_best(tmp_path):
    assert _train(tmp_path / "default", "--epochs", "3") == 0
    assert sorted(p.name for p in (tmp_path / "default").glob("epoch-*.json")) == ["epoch-002.json", "epoch-003.json"]
    assert _train(tmp_path / "all", "--epochs", "3", "--keep", "0") == 0
    assert len(list((tmp_path / "all").glob("epoch-*.json"))) == 3
    assert _train(tmp_path / "best", "--epochs", "3", "--keep", "1", "--keep-best") == 0
    best = json.loads((tmp_path / "best" / "best.json").read_text())
    rows = [json.loads(r) for r in (tmp_path / "best" / "metrics.jsonl").read_text().splitlines()]
    assert best["test_acc"] == max(r["test_acc"] for r in rows)
    kept = {p.name for p in (tmp_path / "best").glob("epoch-*.json")}
    assert kept == {"epoch-003.json", best["checkpoint"]}


@needs_data
def test_no_divergence_check(tmp_path, capsys):
    args = ["--limit", "256", "--lr", "1000", "--epochs", "1"]  # a loss far above the first step's, finite
    assert _train(tmp_path / "checked", *args) == 2
    assert "training diverged" in _error_line(capsys)
    assert _train(tmp_path / "unchecked", *args, "--no-divergence-check") == 0


@needs_data
def test_resume_without_epochs_continues_to_the_runs_own_total(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run, "--epochs", "2") == 0
    (run / "epoch-002.json").unlink()  # as if it had stopped during epoch 2
    capsys.readouterr()
    assert main(["train", "lenet", "--out", str(run), "--resume", "--quiet"]) == 0
    assert [json.loads(r)["epoch"] for r in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@needs_data
def test_a_run_that_never_finished_an_epoch_starts_over(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1, "stale": true}\n')
    assert _train(run, "--epochs", "1") == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "interrupted start" in line]
    assert len(said) == 1 and "metrics.jsonl" in said[0]
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and "stale" not in rows[0]


def test_unwritable_run_directory_is_one_line_before_any_data(tmp_path, capsys, monkeypatch):
    from divenet.data import datasets

    monkeypatch.setattr(datasets, "search_dirs", lambda *a, **k: pytest.fail("loaded a data set"))
    assert main(["train", "lenet", "--out", "/proc/divenet-nowhere/run"]) == 2
    line = _error_line(capsys)
    assert line.startswith("divenet train: error: argument --out: cannot create /proc/divenet-nowhere/run")


# ---- summary --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_models())
def test_summary_of_every_model_at_its_training_size(name, capsys):
    assert main(["summary", name]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    spec = get_spec(name)
    if spec.kind == "text":
        assert first == f"{name} on input (64,) (batch axis left out)"
    else:
        side = spec.recipe.resize or 28
        assert first == f"{name} on input (1, {side}, {side}) (batch axis left out)"


@pytest.mark.parametrize("given, shape", [("224", (1, 224, 224)), ("96x96", (1, 96, 96)),
                                          ("3x224x224", (3, 224, 224)), ("2 x 100 x 120", (2, 100, 120))])
def test_summary_input_forms(given, shape, capsys):
    assert main(["summary", "alexnet", "--input", given]) == 0
    assert capsys.readouterr().out.startswith(f"alexnet on input {shape} ")


def _run_into_closed_pipe(*argv):
    proc = subprocess.Popen([sys.executable, "-m", "divenet", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    proc.stdout.close()  # the reader is gone before the first write, like `| head` done early
    err = proc.stderr.read().decode()
    return proc.wait(timeout=60), err


@pytest.mark.parametrize("argv", [("summary", "resnet50"), ("datasets",)])
def test_closed_pipe_is_quiet(argv):
    status, err = _run_into_closed_pipe(*argv)
    assert err == ""
    assert status in (0, 141)


def test_errors_from_the_installed_command_are_one_line():
    proc = subprocess.run([sys.executable, "-m", "divenet", "train", "lenet", "--epochs", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "divenet train: error: argument --epochs: must be a positive integer, got 0\n"


# ---- predict --------------------------------------------------------------------------------------
def _predictions(out):
    return {line.split(": ", 1)[0]: line for line in out.strip().splitlines()}


def test_predict_says_what_it_changed_in_an_image(ckpt, tmp_path, capsys):
    from PIL import Image

    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(photo)
    grey = tmp_path / "grey.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(grey)
    assert main(["predict", str(ckpt), str(photo), str(grey)]) == 0
    captured = capsys.readouterr()
    assert set(_predictions(captured.out)) == {str(photo), str(grey)}
    notes = captured.err.strip().splitlines()
    assert notes == [f"divenet predict: {photo}: RGB converted to greyscale; resized from 400x300 to the "
                     "model's 28x28"]


def test_predict_reports_a_bad_file_and_predicts_the_others(ckpt, tmp_path, capsys):
    from PIL import Image

    good = [tmp_path / "a.png", tmp_path / "b.png"]
    for p in good:
        Image.fromarray(np.full((28, 28), 200, np.uint8)).save(p)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    missing = tmp_path / "missing.png"
    assert main(["predict", str(ckpt), str(good[0]), str(broken), str(missing), str(good[1])]) == 1
    captured = capsys.readouterr()
    assert set(_predictions(captured.out)) == {str(p) for p in good}
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2 and "Traceback" not in captured.err
    assert errors[0].startswith(f"divenet predict: error: {broken}: not a readable image")
    assert errors[1].startswith(f"divenet predict: error: {missing}: not a readable image")


@pytest.mark.parametrize("pixels", [1500, 4000])  # above Pillow's limit (a warning), above twice it (an error)
def test_predict_refuses_decompression_bombs(ckpt, tmp_path, capsys, monkeypatch, pixels):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # stands for Pillow's 89M-pixel default
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((pixels // 50, 50), np.uint8)).save(big)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(small)
    assert main(["predict", str(ckpt), str(big), str(small)]) == 1
    captured = capsys.readouterr()
    assert set(_predictions(captured.out)) == {str(small)}
    assert _error_line_of(captured.err).startswith(f"divenet predict: error: {big}: refused, too large")


def test_nonfinite_weights_are_refused_unless_allowed(tmp_path, capsys):
    meta = {"model": "lenet", "kind": "image", "num_classes": 10, "in_channels": 1, "input_size": 28,
            "classes": CLASSES}
    model = build_model(meta)
    model[0].weight.array[0, 0, 0, 0] = np.nan
    path = save_checkpoint(tmp_path / "run", 1, model, None, meta)
    from PIL import Image

    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(img)
    assert main(["predict", str(path), str(img)]) == 2
    line = _error_line(capsys)
    assert line.startswith("divenet predict: error: ") and "non-finite" in line and "0.weight" in line
    assert main(["predict", str(path), str(img), "--allow-nonfinite"]) == 0
    assert capsys.readouterr().out.startswith(f"{img}: ")


@pytest.mark.parametrize("field, value, message", [
    ("model", "lenet-9", "unknown model 'lenet-9'"), ("model", 3, "'model' must be a model name"),
    ("num_classes", None, "'num_classes' must be a positive integer"),
    ("in_channels", "1", "'in_channels' must be a positive integer"),
    ("input_size", 0, "'input_size' must be a positive integer"),
    ("model_kwargs", {"width": 2}, "cannot rebuild model 'lenet'"),
    ("classes", ["T-shirt"], "'classes' must be a list of 10 names")])
def test_a_bad_model_description_is_one_line(ckpt, tmp_path, capsys, field, value, message):
    from PIL import Image

    meta = json.loads(ckpt.read_text())
    meta[field] = value
    ckpt.write_text(json.dumps(meta))
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(img)
    assert main(["predict", str(ckpt), str(img)]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"divenet predict: error: {ckpt}: ") and message in line, line


def _error_line_of(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
