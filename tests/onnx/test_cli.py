"""``divenet export`` (a zoo model or a checkpoint -> ONNX, class names and preprocessing in the
metadata) and ``divenet predict model.onnx IMAGE``, with their option errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

import divenet as dn
from divenet.cli import build_model, main
from divenet.io.checkpoint import save_checkpoint
from tests.onnx.helpers import assert_close, run_dn, run_ort, session

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture
def checkpoint(tmp_path):
    """A lenet checkpoint (random weights, no training: the test is about the files)."""
    meta = {"model": "lenet", "kind": "image", "num_classes": 10, "in_channels": 1, "input_size": 28,
            "dataset": "fashion-mnist", "classes": CLASSES}
    dn.manual_seed(0)
    model = build_model(meta)
    return save_checkpoint(tmp_path / "run", 1, model, metadata=meta), model


def test_export_a_checkpoint_keeps_weights_classes_and_preprocessing(checkpoint, tmp_path, capsys):
    ckpt, model = checkpoint
    out = tmp_path / "lenet.onnx"
    assert main(["export", str(ckpt), "--onnx", str(out)]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"wrote {out}: lenet, input (batch, 1, 28, 28), opset 17")
    sess = session(out)
    meta = {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}
    assert meta["classes"] == CLASSES and meta["input_size"] == 28 and meta["in_channels"] == 1
    assert meta["invert"] is False and meta["model"] == "lenet"
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    (ours,), (ref,) = run_ort(sess, x), run_dn(model.eval(), x)
    assert_close(ours, ref, "exported checkpoint")


def test_export_a_zoo_model_at_its_training_size(tmp_path, capsys):
    out = tmp_path / "nin.onnx"
    assert main(["export", "nin", "--onnx", str(out), "--opset", "18"]) == 0
    assert "nin, input (batch, 1, 224, 224), opset 18" in capsys.readouterr().out
    sess = session(out)
    assert sess.get_inputs()[0].shape == ["batch", 1, 224, 224]
    assert main(["export", "lstm", "--onnx", str(tmp_path / "l.onnx"), "--input", "1x28x28"]) == 0
    assert main(["export", "charlm", "--onnx", str(tmp_path / "c.onnx"), "--input", "16"]) == 0
    assert session(tmp_path / "c.onnx").get_inputs()[0].shape == ["batch", 16]


def test_predict_with_an_onnx_file_names_the_classes(checkpoint, tmp_path, capsys):
    from PIL import Image

    ckpt, _ = checkpoint
    out = tmp_path / "lenet.onnx"
    assert main(["export", str(ckpt), "--onnx", str(out)]) == 0
    rng = np.random.default_rng(1)
    paths = []
    for i in range(2):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(p)
        paths.append(str(p))
    capsys.readouterr()
    assert main(["predict", str(ckpt), *paths, "--top", "2"]) == 0
    from_checkpoint = capsys.readouterr().out
    assert main(["predict", str(out), *paths, "--top", "2"]) == 0
    from_onnx = capsys.readouterr().out
    lines = from_onnx.strip().splitlines()
    assert len(lines) == 2 and all(line.split(": ")[1].split(" ")[0] in CLASSES for line in lines)
    assert from_onnx == from_checkpoint  # same classes, same probabilities to 3 digits


def test_predict_with_an_onnx_file_without_metadata_reads_its_input_shape(tmp_path, capsys):
    from PIL import Image

    model = dn.nn.Sequential(dn.nn.Conv2d(3, 2, 3), dn.nn.Flatten(), dn.nn.Linear(2 * 6 * 6, 4))
    dn.onnx.export(model, dn.zeros(1, 3, 8, 8), tmp_path / "m.onnx")
    Image.fromarray(np.zeros((5, 7, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "m.onnx"), str(tmp_path / "a.png")]) == 0
    captured = capsys.readouterr()
    assert "resized from 7x5 to the model's 8x8" in captured.err
    assert captured.out.startswith(f"{tmp_path / 'a.png'}: ")  # classes 0..3 by number


def test_export_option_errors(checkpoint, tmp_path, capsys):
    ckpt, _ = checkpoint
    cases = [
        (["export", "nosuchmodel", "--onnx", str(tmp_path / "a.onnx")],
         "neither a checkpoint (no such file or directory) nor a zoo model name"),
        (["export", "lenet", "--onnx", str(tmp_path / "a.txt")], "must be a .onnx file name"),
        (["export", "lenet", "--onnx", str(tmp_path / "no" / "a.onnx")], "no such directory"),
        (["export", "lenet", "--onnx", str(tmp_path)], "must be a .onnx file name"),
        (["export", "lenet", "--onnx", str(tmp_path / "a.onnx"), "--opset", "11"],
         "must be an ONNX opset number of at least 13, got 11"),
        (["export", "lenet", "--onnx", str(tmp_path / "a.onnx"), "--opset", "999"],
         "opset must be an int from 13 to"),
        (["export", "lenet", "--onnx", str(tmp_path / "a.onnx"), "--input", "3x4x5x6"],
         "give S, HxW or CxHxW without the batch axis"),
        (["export", str(ckpt), "--onnx", str(tmp_path / "a.onnx"), "--input", "3x28x28"],
         "takes 1-channel images, got 3x28x28"),
        (["export", "lenet"], "the following arguments are required: --onnx"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "a.onnx").exists()


def test_predict_refuses_an_onnx_file_that_is_not_an_image_classifier(tmp_path, capsys):
    dn.onnx.export(dn.nn.Sequential(dn.nn.Linear(3, 2)), dn.zeros(1, 3), tmp_path / "v.onnx")
    (tmp_path / "a.png").write_bytes(b"")
    assert main(["predict", str(tmp_path / "v.onnx"), str(tmp_path / "a.png")]) == 2
    assert "is not (batch, C, H, W)" in capsys.readouterr().err


def test_predict_refuses_an_onnx_image_model_that_is_not_square(tmp_path, capsys):
    model = dn.nn.Sequential(dn.nn.Conv2d(1, 2, 3), dn.nn.Flatten(), dn.nn.Linear(2 * 4 * 6, 3))
    dn.onnx.export(model, dn.zeros(1, 1, 6, 8), tmp_path / "r.onnx")
    (tmp_path / "a.png").write_bytes(b"")
    assert main(["predict", str(tmp_path / "r.onnx"), str(tmp_path / "a.png")]) == 2
    assert "predict reads square images, but the model takes 6x8 inputs" in capsys.readouterr().err
