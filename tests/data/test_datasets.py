import os

import numpy as np
import pytest

import divenet.data.datasets as ds
from divenet.data import (
    ArrayDataset, DatasetNotFoundError, FashionMNIST, IDXError, MNIST, Normalize, dataset_locations,
    describe_datasets, find_dataset, write_idx,
)

REAL = "/usr/share/datasets/fashion-mnist"
FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def make_dataset(directory, marker, n_train=6, n_test=4, gz=True, splits=("train", "test")):
    """Write a tiny IDX dataset whose every pixel equals ``marker`` (to tell copies apart)."""
    os.makedirs(directory, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("test", n_test)):
        if split not in splits:
            continue
        img_name, lab_name = ds.DATASET_FILES[split]
        write_idx(os.path.join(directory, img_name + suffix), np.full((n, 28, 28), marker, np.uint8))
        write_idx(os.path.join(directory, lab_name + suffix), (np.arange(n) % 10).astype(np.uint8))
    return str(directory)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Nothing to find: no $DIVENET_DATA, an empty HOME, an empty system directory."""
    home = tmp_path / "home"
    system = tmp_path / "system"
    home.mkdir()
    system.mkdir()
    monkeypatch.delenv("DIVENET_DATA", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(ds, "SYSTEM_DATA_DIRS", (str(system),))
    return tmp_path


# ---- the real Fashion-MNIST -------------------------------------------------------------------

@pytest.fixture(scope="module")
def real():
    if not all(os.path.exists(os.path.join(REAL, f + ".gz")) for f in FILES):
        pytest.skip(f"Fashion-MNIST is not installed in {REAL} (apt-get install dataset-fashion-mnist)")
    return FashionMNIST(root=REAL, train=True), FashionMNIST(root=REAL, train=False)


def test_real_sizes_and_dtypes(real):
    train, test = real
    assert len(train) == 60000 and len(test) == 10000
    for d, n in ((train, 60000), (test, 10000)):
        assert d.images.shape == (n, 28, 28) and d.images.dtype == np.uint8
        assert d.labels.shape == (n,) and d.labels.dtype == np.int64
        assert d.images.min() == 0 and d.images.max() == 255
    assert train.root == REAL and train.train and not test.train
    assert train.files == tuple(os.path.join(REAL, f + ".gz") for f in FILES[:2])


def test_real_label_counts(real):
    train, test = real
    np.testing.assert_array_equal(np.bincount(train.labels, minlength=10), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), [1000] * 10)
    assert train.labels[0] == 9 and train.classes[9] == "Ankle boot"


def test_real_classes(real):
    assert real[0].classes == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert real[0].class_to_idx["Bag"] == 8


def test_real_getitem_and_arrays(real):
    train, _ = real
    x, y = train[123]
    assert x.shape == (1, 28, 28) and x.dtype == np.float32
    assert isinstance(y, int) and y == train.labels[123]
    np.testing.assert_array_equal(x[0], train.images[123].astype(np.float32) / np.float32(255))
    x_last, _ = train[-1]
    np.testing.assert_array_equal(x_last[0] * 255, train.images[-1].astype(np.float32))
    imgs, labels = train.arrays()
    assert imgs.shape == (60000, 1, 28, 28) and imgs.dtype == np.float32
    assert imgs.min() == 0.0 and imgs.max() == 1.0
    np.testing.assert_array_equal(imgs[123], x)
    assert labels is not None and labels.dtype == np.int64 and len(labels) == 60000
    assert train.arrays()[0] is imgs  # computed once


def test_real_cached_per_process(real):
    again = FashionMNIST(root=REAL, train=True)
    assert again.images is real[0].images and again.labels is real[0].labels
    assert not again.images.flags.writeable
    assert again.arrays()[0] is real[0].arrays()[0]  # the float32 copy is shared too


def test_real_transform_applied(real):
    d = FashionMNIST(root=REAL, train=False, transform=Normalize(0.5, 0.25))
    x, _ = d[7]
    np.testing.assert_allclose(x, (real[1].images[7][None] / np.float32(255) - 0.5) / 0.25, rtol=1e-6)


# ---- finding the files --------------------------------------------------------------------------

def test_not_found_lists_every_directory(isolated):
    root = isolated / "my-root"
    with pytest.raises(DatasetNotFoundError) as e:
        FashionMNIST(root=root)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    for d in (root, root / "fashion-mnist", isolated / "home" / ".cache" / "divenet" / "fashion-mnist",
              isolated / "system" / "fashion-mnist"):
        assert f"  {d}  (" in msg, d
    for f in FILES:
        assert f in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "$DIVENET_DATA is not set" in msg
    assert msg.startswith("Fashion-MNIST (train split) not found")


def test_not_found_says_which_directories_exist(isolated, monkeypatch):
    env = isolated / "env"
    (env / "mnist").mkdir(parents=True)
    monkeypatch.setenv("DIVENET_DATA", str(env))
    with pytest.raises(DatasetNotFoundError) as e:
        MNIST(train=False)
    msg = str(e.value)
    assert msg.startswith("MNIST (test split) not found")
    assert f"  {env / 'mnist'}  ($DIVENET_DATA; holds none of them)" in msg
    assert f"  {isolated / 'system' / 'mnist'}  (system; does not exist)" in msg
    assert "apt-get" not in msg and "DIVENET_DATA is not set" not in msg


def _incomplete_message(title, directory, why, missing):
    return (f"{title}: {directory} ({why}) holds only part of the dataset: it lacks {', '.join(missing)}. "
            f"A dataset directory must hold all four files ({', '.join(FILES)}), each raw or .gz; "
            f"complete it or remove it (divenet does not fall back to the next directory)")


def test_env_dir_missing_one_file_is_an_error_not_a_fallback(isolated, monkeypatch):
    # a half-copied $DIVENET_DATA used to be skipped silently in favour of the system's copy
    env = isolated / "env" / "fashion-mnist"
    make_dataset(env, 1)
    os.remove(env / "t10k-labels-idx1-ubyte.gz")
    make_dataset(isolated / "system" / "fashion-mnist", 3)
    monkeypatch.setenv("DIVENET_DATA", str(isolated / "env"))
    expected = _incomplete_message("Fashion-MNIST", env, "$DIVENET_DATA", ["t10k-labels-idx1-ubyte"])
    for train in (True, False):
        with pytest.raises(DatasetNotFoundError) as e:
            FashionMNIST(train=train)
        assert str(e.value) == expected
    with pytest.raises(DatasetNotFoundError):
        find_dataset("fashion-mnist")


def test_partial_root_is_an_error_even_when_another_copy_exists(isolated):
    root = make_dataset(isolated / "root", 4, splits=("train",))
    make_dataset(isolated / "system" / "fashion-mnist", 3)
    with pytest.raises(DatasetNotFoundError) as e:
        FashionMNIST(root=root, train=True)
    assert str(e.value) == _incomplete_message("Fashion-MNIST", root, "root",
                                               ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])


def test_describe_reports_an_incomplete_directory(isolated, monkeypatch):
    env = isolated / "env" / "mnist"
    make_dataset(env, 1, splits=("test",))
    make_dataset(isolated / "system" / "mnist", 3)
    monkeypatch.setenv("DIVENET_DATA", str(isolated / "env"))
    assert dataset_locations() == {"fashion-mnist": None, "mnist": None}
    text = describe_datasets()
    assert (f"MNIST          incomplete: {env} ($DIVENET_DATA) lacks train-images-idx3-ubyte, "
            f"train-labels-idx1-ubyte") in text.splitlines()


def test_search_order(isolated, monkeypatch):
    env = isolated / "env"
    cache = isolated / "home" / ".cache" / "divenet" / "fashion-mnist"
    system = isolated / "system" / "fashion-mnist"
    make_dataset(env / "fashion-mnist", 1)
    make_dataset(cache, 2)
    make_dataset(system, 3)
    root = make_dataset(isolated / "root", 4)
    monkeypatch.setenv("DIVENET_DATA", str(env))

    def marker(**kw):
        return int(FashionMNIST(**kw).images[0, 0, 0])

    assert marker(root=root) == 4
    assert marker() == 1
    assert find_dataset("fashion-mnist") == str(env / "fashion-mnist")
    monkeypatch.delenv("DIVENET_DATA")
    assert marker() == 2
    assert find_dataset("fashion-mnist") == str(cache)
    monkeypatch.setenv("HOME", str(isolated / "elsewhere"))
    assert marker() == 3 and marker(train=False) == 3
    assert find_dataset("fashion-mnist") == str(system)


def test_root_subdirectory_and_fallback(isolated):
    make_dataset(isolated / "data" / "fashion-mnist", 5)
    assert FashionMNIST(root=isolated / "data").root == str(isolated / "data" / "fashion-mnist")
    make_dataset(isolated / "system" / "fashion-mnist", 3)
    # an explicit root without the files falls through to the later directories
    assert FashionMNIST(root=isolated / "empty").images[0, 0, 0] == 3


def test_files_directly_in_env_dir_are_ignored(isolated, monkeypatch):
    make_dataset(isolated / "flat", 1)
    monkeypatch.setenv("DIVENET_DATA", str(isolated / "flat"))
    assert find_dataset("fashion-mnist") is None and find_dataset("mnist") is None


def test_raw_files_preferred_over_gz(isolated):
    make_dataset(isolated / "r", 7, gz=True)
    make_dataset(isolated / "r", 8, gz=False)
    d = FashionMNIST(root=isolated / "r")
    assert d.images[0, 0, 0] == 8 and d.files[0].endswith("train-images-idx3-ubyte")


def test_dataset_locations_and_describe(isolated, monkeypatch):
    make_dataset(isolated / "env" / "mnist", 1)
    monkeypatch.setenv("DIVENET_DATA", str(isolated / "env"))
    assert dataset_locations() == {"fashion-mnist": None, "mnist": str(isolated / "env" / "mnist")}
    text = describe_datasets()
    assert f"MNIST          {isolated / 'env' / 'mnist'}" in text
    assert "Fashion-MNIST  not found" in text and "apt-get install dataset-fashion-mnist" in text


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar10'; expected one of \['fashion-mnist', 'mnist'\]"):
        find_dataset("cifar10")


def test_mnist_classes(isolated):
    d = MNIST(root=make_dataset(isolated / "m", 0))
    assert d.classes == [str(i) for i in range(10)]
    assert repr(d) == f"MNIST(train, 6 images from {isolated / 'm'})"


# ---- broken files ---------------------------------------------------------------------------------

def test_count_mismatch_names_both_files(isolated):
    root = make_dataset(isolated / "bad", 1, n_train=6)
    write_idx(os.path.join(root, "train-labels-idx1-ubyte.gz"), np.zeros(5, np.uint8))
    with pytest.raises(IDXError, match=r"^train-labels-idx1-ubyte\.gz: holds 5 labels but "
                                       r"train-images-idx3-ubyte\.gz holds 6 images$"):
        FashionMNIST(root=root)


def test_label_out_of_range(isolated):
    root = make_dataset(isolated / "bad", 1, n_train=3)
    write_idx(os.path.join(root, "train-labels-idx1-ubyte.gz"), np.array([0, 10, 2], np.uint8))
    with pytest.raises(IDXError, match=r"^train-labels-idx1-ubyte\.gz: labels range over 0\.\.10, "
                                       r"outside the 10 classes 0\.\.9"):
        FashionMNIST(root=root)


def test_images_wrong_rank(isolated):
    root = make_dataset(isolated / "bad", 1)
    write_idx(os.path.join(root, "t10k-images-idx3-ubyte.gz"), np.zeros((4, 784), np.uint8))
    with pytest.raises(IDXError, match=r"^t10k-images-idx3-ubyte\.gz: expected uint8 images \(N, H, W\), "
                                       r"got uint8 \(4, 784\)"):
        FashionMNIST(root=root, train=False)


def test_truncated_real_style_file_names_file(isolated):
    root = make_dataset(isolated / "bad", 1)
    path = os.path.join(root, "train-images-idx3-ubyte")
    write_idx(path, np.zeros((6, 28, 28), np.uint8))
    with open(path, "r+b") as f:
        f.truncate(16 + 100)
    with pytest.raises(IDXError, match=r"^train-images-idx3-ubyte: truncated: header says 6x28x28 = "
                                       r"4704 bytes of data but the file holds 100 \(file size 116 bytes\)$"):
        FashionMNIST(root=root)


def test_train_split_with_no_images_is_refused(isolated):
    # a valid IDX file of 0 images used to load, and training then died of a ZeroDivisionError
    root = make_dataset(isolated / "empty", 1, n_train=0)
    with pytest.raises(IDXError, match=r"^train-images-idx3-ubyte\.gz: has 0 images \(its header says "
                                       r"\(0, 28, 28\)\); a dataset split needs at least one$"):
        FashionMNIST(root=root)


def test_divenet_train_on_an_empty_split_is_one_line(isolated, monkeypatch, capsys):
    from divenet.cli import main

    make_dataset(isolated / "env" / "fashion-mnist", 1, n_train=0)
    monkeypatch.setenv("DIVENET_DATA", str(isolated / "env"))
    assert main(["train", "lenet", "--epochs", "1", "--quiet", "--out", str(isolated / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("divenet train: error: train-images-idx3-ubyte.gz: has 0 images")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_images_without_pixels(isolated):
    root = make_dataset(isolated / "bad", 1)
    write_idx(os.path.join(root, "t10k-images-idx3-ubyte.gz"), np.zeros((4, 0, 28), np.uint8))
    with pytest.raises(IDXError, match=r"^t10k-images-idx3-ubyte\.gz: holds images of 0x28 pixels"):
        FashionMNIST(root=root, train=False)


def test_labels_wrong_rank_and_type(isolated):
    root = make_dataset(isolated / "bad", 1, n_test=4)
    path = os.path.join(root, "t10k-labels-idx1-ubyte.gz")
    write_idx(path, np.zeros((4, 1), np.uint8))
    with pytest.raises(IDXError, match=r"^t10k-labels-idx1-ubyte\.gz: expected integer labels \(N,\), "
                                       r"got uint8 \(4, 1\)$"):
        FashionMNIST(root=root, train=False)
    write_idx(path, np.zeros(4, np.float32))
    with pytest.raises(IDXError, match=r"^t10k-labels-idx1-ubyte\.gz: expected integer labels \(N,\), "
                                       r"got float32 \(4,\)$"):
        FashionMNIST(root=root, train=False)


def test_images_of_another_type(isolated):
    root = make_dataset(isolated / "bad", 1)
    write_idx(os.path.join(root, "train-images-idx3-ubyte.gz"), np.zeros((6, 28, 28), np.int16))
    with pytest.raises(IDXError, match=r"^train-images-idx3-ubyte\.gz: expected uint8 images \(N, H, W\), "
                                       r"got int16 \(6, 28, 28\)$"):
        FashionMNIST(root=root)


def test_labels_file_that_is_not_idx(isolated):
    root = make_dataset(isolated / "bad", 1)
    with open(os.path.join(root, "train-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(b"<html>404 Not Found</html>")
    with pytest.raises(IDXError, match=r"^train-labels-idx1-ubyte\.gz: not an IDX file: bad magic number "
                                       r"3c 68 74 6d"):
        FashionMNIST(root=root)


# ---- ArrayDataset -----------------------------------------------------------------------------------

def test_array_dataset_uint8_scaled_and_channel_added():
    imgs = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    d = ArrayDataset(imgs, np.array([3, 1], np.int32))
    assert d.labels.dtype == np.int64 and len(d) == 2
    x, y = d[1]
    assert x.shape == (1, 3, 4) and x.dtype == np.float32 and y == 1
    np.testing.assert_array_equal(x[0], imgs[1] / np.float32(255))
    a, lab = d.arrays()
    assert a.shape == (2, 1, 3, 4) and a.dtype == np.float32 and not a.flags.writeable
    assert imgs.flags.writeable  # the caller's arrays are left alone


def test_array_dataset_float_kept():
    imgs = np.random.default_rng(0).standard_normal((3, 2, 4, 4)).astype(np.float32)
    d = ArrayDataset(imgs, [0, 1, 2])
    np.testing.assert_array_equal(d[2][0], imgs[2])
    np.testing.assert_array_equal(d.arrays()[0], imgs)
    assert imgs.flags.writeable


def test_array_dataset_errors():
    with pytest.raises(ValueError, match=r"ArrayDataset: 3 images \(3, 4, 4\) but 2 labels \(2,\)"):
        ArrayDataset(np.zeros((3, 4, 4)), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"images must be \(N, C, H, W\) or \(N, H, W\), got shape \(3, 4\)"):
        ArrayDataset(np.zeros((3, 4)), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"labels must be 1-D \(N,\), got shape \(3, 1\)"):
        ArrayDataset(np.zeros((3, 4, 4)), np.zeros((3, 1), np.int64))
    d = ArrayDataset(np.zeros((3, 4, 4), np.uint8), np.zeros(3, np.int64))
    with pytest.raises(IndexError, match="ArrayDataset: index 3 is out of range for 3 samples"):
        d[3]
    with pytest.raises(TypeError, match="ArrayDataset: index must be an integer, got str"):
        d["a"]
