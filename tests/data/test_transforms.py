import numpy as np
import pytest

import divenet as dn
from divenet.data.transforms import (
    Compose, Normalize, RandomCrop, RandomHorizontalFlip, Resize, bilinear_matrix, is_batchable,
)


def _images(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).random(shape).astype(dtype)


def _torch_resize(x, size):
    import torch
    import torch.nn.functional as tF

    return tF.interpolate(torch.from_numpy(x), size=size, mode="bilinear", align_corners=False,
                          antialias=False).numpy()


# ---- Resize ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,size,expected", [
    ((4, 1, 28, 28), 224, (224, 224)),
    ((4, 1, 28, 28), 96, (96, 96)),
    ((3, 2, 28, 28), (14, 10), (14, 10)),   # downscale, both axes
    ((2, 3, 17, 23), (40, 9), (40, 9)),     # up one axis, down the other, odd sizes
    ((2, 1, 5, 7), (5, 7), (5, 7)),         # identity
])
def test_resize_matches_torch(shape, size, expected):
    x = _images(shape)
    ours = Resize(size)(x)
    theirs = _torch_resize(x, expected)
    assert ours.shape == theirs.shape == shape[:2] + expected
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)


def test_resize_single_image_and_float64():
    x = _images((1, 28, 28), dtype=np.float64)
    out = Resize(96)(x)
    assert out.shape == (1, 96, 96) and out.dtype == np.float64
    np.testing.assert_allclose(out, _torch_resize(x[None], (96, 96))[0], rtol=1e-12)


def test_resize_int_is_shorter_side():
    t = Resize(56)
    assert t.output_size(28, 42) == (56, 84)
    assert t.output_size(42, 28) == (84, 56)
    assert Resize(56)(_images((1, 1, 28, 42))).shape == (1, 1, 56, 84)


@pytest.mark.parametrize("n_in,n_out", [(28, 224), (28, 96), (28, 14), (17, 40), (100, 37), (1, 4)])
def test_bilinear_matrix_equals_torch_weights(n_in, n_out):
    import torch
    import torch.nn.functional as tF

    # interpolating the one-hot columns of an identity gives PyTorch's weight matrix
    eye = torch.eye(n_in).reshape(n_in, 1, n_in, 1)
    theirs = tF.interpolate(eye, size=(n_out, 1), mode="bilinear", align_corners=False)[:, 0, :, 0].T
    np.testing.assert_array_equal(bilinear_matrix(n_in, n_out, np.float32), theirs.numpy())


def test_bilinear_matrix_rows_sum_to_one():
    for n_in, n_out in ((28, 224), (28, 96), (28, 14), (5, 3), (1, 4)):
        m = bilinear_matrix(n_in, n_out, np.float64)
        assert m.shape == (n_out, n_in)
        np.testing.assert_allclose(m.sum(1), 1.0, rtol=1e-12)
        assert ((m != 0).sum(1) <= 2).all()


def test_resize_errors():
    with pytest.raises(ValueError, match=r"Resize: size must be positive, got 0"):
        Resize(0)
    with pytest.raises(ValueError, match=r"Resize: size must be positive, got \(3, -1\)"):
        Resize((3, -1))
    with pytest.raises(ValueError, match=r"Resize: expected an image \(C, H, W\) or a batch \(N, C, H, W\), "
                                         r"got shape \(28, 28\)"):
        Resize(8)(np.zeros((28, 28), np.float32))
    with pytest.raises(TypeError, match="Resize: expected a floating-point image, got uint8"):
        Resize(8)(np.zeros((1, 28, 28), np.uint8))


def test_resize_on_tensor():
    x = dn.tensor(_images((2, 1, 8, 8)))
    out = Resize(4)(x)
    assert isinstance(out, dn.Tensor) and out.shape == (2, 1, 4, 4)
    np.testing.assert_allclose(out.numpy(), _torch_resize(x.numpy(), (4, 4)), rtol=1e-5, atol=1e-7)


# ---- Normalize ------------------------------------------------------------------------------------

def test_normalize_matches_formula_and_torchvision_order():
    x = _images((5, 3, 4, 4))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = Normalize(mean, std)(x)
    m = np.array(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.array(std, np.float32).reshape(1, 3, 1, 1)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, (x - m) / s)
    single = Normalize(mean, std)(x[2])
    np.testing.assert_array_equal(single, out[2])


def test_normalize_scalar_for_one_channel():
    x = _images((2, 1, 3, 3))
    out = Normalize(0.2860, 0.3530)(x)
    np.testing.assert_allclose(out, (x - 0.2860) / 0.3530, rtol=1e-6)
    assert out.dtype == np.float32


def test_normalize_errors():
    with pytest.raises(ValueError, match=r"Normalize: mean has 2 values but the image has 3 channels "
                                         r"\(shape \(1, 3, 2, 2\)\)"):
        Normalize((0.1, 0.2), 1.0)(np.zeros((1, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"Normalize: std \[1\.0, 0\.0\] contains a zero"):
        Normalize(0.0, (1.0, 0.0))


# ---- RandomCrop / RandomHorizontalFlip -----------------------------------------------------------

def test_random_crop_shapes_and_content():
    x = _images((64, 2, 8, 8))
    out = RandomCrop(8, padding=2)(x, np.random.default_rng(0))
    assert out.shape == (64, 2, 8, 8) and out.dtype == np.float32
    # each output is a window of the zero-padded input, at the offsets the generator drew
    rng = np.random.default_rng(0)
    tops = rng.integers(0, 5, size=64)
    lefts = rng.integers(0, 5, size=64)
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    for n in (0, 17, 63):
        np.testing.assert_array_equal(out[n], padded[n, :, tops[n]:tops[n] + 8, lefts[n]:lefts[n] + 8])
    assert len({(t, l) for t, l in zip(tops, lefts)}) > 10  # per-sample offsets


def test_random_crop_smaller_window_and_padding_forms():
    x = _images((3, 1, 10, 12))
    assert RandomCrop((6, 5))(x).shape == (3, 1, 6, 5)
    assert RandomCrop(4, padding=(1, 2)).padding == (1, 2, 1, 2)
    out = RandomCrop((10, 15), padding=(0, 0, 3, 0))(x, np.random.default_rng(1))
    np.testing.assert_array_equal(out[:, :, :, :12], x)
    assert (out[:, :, :, 12:] == 0).all()
    assert RandomCrop(5)(x[0]).shape == (1, 5, 5)


def test_random_crop_reproducible_with_manual_seed():
    x = _images((16, 1, 12, 12))
    dn.manual_seed(3)
    a = RandomCrop(10, padding=1)(x)
    b = RandomCrop(10, padding=1)(x)
    dn.manual_seed(3)
    a2 = RandomCrop(10, padding=1)(x)
    np.testing.assert_array_equal(a, a2)
    assert not np.array_equal(a, b)


def test_random_crop_errors():
    with pytest.raises(ValueError, match=r"RandomCrop: crop size \(12, 12\) is larger than the padded "
                                         r"image \(10, 10\)"):
        RandomCrop(12, padding=1)(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="RandomCrop: padding must be non-negative"):
        RandomCrop(4, padding=-1)


def test_random_flip():
    x = _images((200, 3, 4, 5))
    out = RandomHorizontalFlip(0.5)(x, np.random.default_rng(7))
    flips = np.random.default_rng(7).random(200) < 0.5
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(out[flips], x[flips][..., ::-1])
    np.testing.assert_array_equal(out[~flips], x[~flips])
    assert 60 < flips.sum() < 140
    np.testing.assert_array_equal(RandomHorizontalFlip(1.0)(x[0]), x[0][..., ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(0.0)(x), x)


def test_random_flip_reproducible_with_manual_seed():
    x = _images((32, 1, 4, 4))
    dn.manual_seed(11)
    a = RandomHorizontalFlip()(x)
    dn.manual_seed(11)
    b = RandomHorizontalFlip()(x)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"RandomHorizontalFlip: p must be in \[0, 1\], got 1.5"):
        RandomHorizontalFlip(1.5)


# ---- Compose ------------------------------------------------------------------------------------------

def test_compose_order_and_batchable():
    x = _images((4, 1, 28, 28))
    t = Compose([Resize(14), Normalize(0.5, 0.5)])
    np.testing.assert_allclose(t(x), (_torch_resize(x, (14, 14)) - 0.5) / 0.5, rtol=1e-5, atol=1e-6)
    assert is_batchable(t)
    plain = Compose([Resize(14), lambda a: a * 2])
    np.testing.assert_allclose(plain(x), Resize(14)(x) * 2)
    assert not is_batchable(plain)
    with pytest.raises(TypeError, match="Compose: 3 is not callable"):
        Compose([3])
