"""``divenet show``: each picture from a tiny checkpoint made here, checked as a PNG (size, not
blank), the kernels' arithmetic against the slides, and every option's one-line error."""
from __future__ import annotations

import numpy as np
import pytest

from divenet.cli import main
from divenet.show import KERNELS, apply_kernels, kernel_grid, kernel_tiles, photo_array, sample_photo

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("show") / "run"
    assert main(["train", "lenet", "--limit", "256", "--batch-size", "128", "--epochs", "1", "--quiet",
                 "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def shoe(tmp_path_factory):
    from divenet.data import FashionMNIST

    path = tmp_path_factory.mktemp("img") / "shoe.png"
    Image.fromarray(FashionMNIST(train=False).images[0]).save(path)
    return path


def _check_png(path, min_w, min_h):
    with Image.open(path) as img:
        assert img.format == "PNG"
        w, h = img.size
        a = np.asarray(img.convert("L"), dtype=np.float32)
    assert w >= min_w and h >= min_h, (w, h)
    assert a.std() > 10 and len(np.unique(a)) > 20  # a drawn picture, not a blank page


def test_filters(run, tmp_path, capsys):
    out = tmp_path / "f.png"
    assert main(["show", "filters", str(run), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    _check_png(out, 300, 250)
    assert main(["show", "filters", str(run / "epoch-001.json"), "--layer", "3", "--out", str(out)]) == 0
    _check_png(out, 600, 600)  # 16 x 6 kernels, the first 64 drawn


def test_features(run, shoe, tmp_path):
    out = tmp_path / "feat.png"
    assert main(["show", "features", str(run), str(shoe), "--out", str(out)]) == 0
    _check_png(out, 300, 300)
    assert main(["show", "features", str(run), str(shoe), "--layer", "2", "--out", str(out)]) == 0
    _check_png(out, 300, 300)


def test_errors(run, tmp_path, capsys):
    out = tmp_path / "err.png"
    assert main(["show", "errors", str(run), "--limit", "300", "--out", str(out)]) == 0
    _check_png(out, 1000, 500)


def _square(tmp_path):
    """A flat grey picture with a brighter square in it (flat everywhere but the square's rim)."""
    a = np.full((40, 50), 60, np.uint8)
    a[10:30, 15:35] = 200
    path = tmp_path / "square.png"
    Image.fromarray(a).save(path)
    return path, a.astype(np.float32) / 255


def test_kernels_png_and_zero_on_flat_regions(tmp_path):
    path, a = _square(tmp_path)
    out = tmp_path / "k.png"
    assert main(["show", "kernels", str(path), "--out", str(out)]) == 0
    _check_png(out, 1200, 300)
    image = photo_array(path)
    np.testing.assert_allclose(image, a, atol=1e-6)  # read at its own size, not squared
    y = apply_kernels(image)
    edge = y["edge"]  # valid cross-correlation: output pixel (i, j) sees input rows i..i+2
    assert edge.shape == (38, 48)
    rim = np.zeros_like(edge, dtype=bool)
    rim[8:30, 13:35] = True  # windows that touch both levels
    rim[10:28, 15:33] = False  # windows inside the square
    assert np.abs(edge[~rim]).max() < 1e-5
    assert np.abs(edge[rim]).min() > 0.1
    v = y["vertical edge"]  # [[1, -1]]: x[:, j] - x[:, j+1]; nonzero only at the left and right rims
    assert v.shape == (40, 49)
    nonzero = np.argwhere(np.abs(v) > 1e-5)
    assert set(nonzero[:, 1]) == {14, 34} and set(nonzero[:, 0]) == set(range(10, 30))
    np.testing.assert_allclose(y["gaussian blur"][0, 0], a[0, 0], rtol=1e-6)  # flat stays flat
    np.testing.assert_allclose(y["sharpen"][0, 0], a[0, 0], rtol=1e-6)


def test_kernels_are_the_slides():
    # the slides' vertical-edge example: two columns of ones then zeros
    x = np.array([[1, 1, 0, 0, 0]] * 4, np.float32)
    np.testing.assert_array_equal(apply_kernels(x)["vertical edge"], [[0, 1, 0, 0]] * 4)
    assert KERNELS["edge"].sum() == 0 and KERNELS["gaussian blur"].sum() == 1 and KERNELS["sharpen"].sum() == 1


def test_kernels_default_photo_is_shipped(tmp_path):
    assert sample_photo().is_file()
    out = tmp_path / "k.png"
    assert main(["show", "kernels", "--out", str(out)]) == 0
    _check_png(out, 1200, 300)
    assert photo_array(sample_photo()).shape == (300, 256)  # 600x512 pooled by 2


def test_kernel_tiles_and_grid():
    w = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    tiles = kernel_tiles(w)  # three input channels: one RGB tile per output channel
    assert [label for label, _ in tiles] == ["0", "1"] and tiles[0][1].shape == (2, 2, 3)
    assert kernel_grid(w).shape == (1 + 3, 1 + 2 * 3, 3)  # 1 row of 2 tiles, 1 pixel between
    tiles = kernel_tiles(np.ones((5, 2, 3, 3)), max_tiles=4)
    assert [label for label, _ in tiles] == ["0<-0", "0<-1", "1<-0", "1<-1"]
    assert np.all(tiles[0][1] == 0.5)  # a constant kernel is mid-grey, not a division by zero
    g = kernel_grid(np.random.default_rng(0).normal(size=(6, 1, 5, 5)))
    assert g.shape == (2 * 6 + 1, 3 * 6 + 1) and g.min() >= 0 and g.max() <= 1
    with pytest.raises(ValueError, match=r"expected a convolution weight \(out, in, kh, kw\), got shape \(3, 3\)"):
        kernel_tiles(np.ones((3, 3)))


@pytest.mark.parametrize("argv, message", [
    (["filters", "{run}", "--layer", "1"], "1 is a Sigmoid, not a convolution; lenet's convolutions: 0, 3"),
    (["filters", "{run}", "--layer", "nope"], "lenet has no layer 'nope'; its layers: 0 (Conv2d)"),
    (["filters", "{run}", "--layer", " "], "argument --layer: must not be empty"),
    (["features", "{run}", "{shoe}", "--layer", "7"], "7 (Linear) returns (1, 120), not feature maps"),
    (["features", "{run}", "{tmp}/missing.png"], "missing.png: no such file"),
    (["features", "{run}", "{tmp}/bad.png"], "bad.png: not a readable image"),
    (["errors", "{run}", "--limit", "0"], "argument --limit: must be a positive integer, got 0"),
    (["errors", "{tmp}/none"], "no such file or directory"),
    (["kernels", "--out", "{tmp}/k.jpg"], "k.jpg: must be a .png file name"),
    (["kernels", "--out", "{tmp}/no/k.png"], "no such directory"),
    (["kernels", "--out", "{tmp}"], "must be a .png file name"),
    (["kernels", "{tmp}/bad.png"], "bad.png: not a readable image"),
    (["colours"], "invalid choice: 'colours'"),
])
def test_errors_are_one_line(run, shoe, tmp_path, capsys, argv, message):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    args = [a.format(run=run, shoe=shoe, tmp=tmp_path) for a in argv]
    if args[0] != "kernels" and "--out" not in args and args[0] != "colours":
        args += ["--out", str(tmp_path / "x.png")]
    assert main(["show", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.png").exists()


def test_language_model_checkpoint_is_refused(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    assert main(["train", "charlm", "--text", str(text), "--epochs", "1", "--quiet", "--out",
                 str(tmp_path / "lm")]) == 0
    capsys.readouterr()
    assert main(["show", "filters", str(tmp_path / "lm"), "--out", str(tmp_path / "x.png")]) == 2
    assert "charlm is a language model; show filters needs an image model" in capsys.readouterr().err
