"""In-memory datasets: ArrayDataset, and MNIST / Fashion-MNIST read from local IDX files.

divenet never downloads. The four IDX files of a dataset (each raw or ``.gz``) are looked up,
first directory wins, in

1. ``root`` when one is given (and ``root/<name>``),
2. ``$DIVENET_DATA/<name>``,
3. ``~/.cache/divenet/<name>``,
4. ``/usr/share/datasets/<name>`` (Debian's ``dataset-fashion-mnist`` installs Fashion-MNIST
   there),

where ``<name>`` is ``fashion-mnist`` or ``mnist``. Files lying directly in ``$DIVENET_DATA``
are not used: MNIST and Fashion-MNIST share their file names, so such a directory cannot say
which dataset it holds. A directory is all or nothing: one that holds some of the four files
but not all is an error naming what it lacks, not a reason to look further (a half-copied
``$DIVENET_DATA`` must not be silently replaced by the system's copy). When nothing is found,
DatasetNotFoundError lists every directory searched.

Decoded arrays are cached per process (keyed by path, size and modification time), so a second
``FashionMNIST()`` costs nothing; the cached arrays are read-only and shared.
"""
from __future__ import annotations

import operator
import os
import threading

import numpy as np

from .idx import IDXError, read_idx

__all__ = [
    "ArrayDataset", "FashionMNIST", "MNIST", "DatasetNotFoundError", "find_dataset",
    "dataset_locations", "search_dirs", "describe_datasets", "DATASET_FILES",
]

#: split -> (images file, labels file), without the optional ``.gz``
DATASET_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_ALL_FILES = DATASET_FILES["train"] + DATASET_FILES["test"]

_DATASETS = {
    "fashion-mnist": {
        "title": "Fashion-MNIST",
        "classes": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        "install": "apt-get install dataset-fashion-mnist",
    },
    "mnist": {
        "title": "MNIST",
        "classes": tuple(str(d) for d in range(10)),
        "install": None,
    },
}

#: system-wide dataset directories, searched last (a module attribute so tests can replace it)
SYSTEM_DATA_DIRS = ("/usr/share/datasets",)
ENV_VAR = "DIVENET_DATA"


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are in none of the searched directories."""


# ---- ArrayDataset ----------------------------------------------------------------------------

class ArrayDataset:
    """A dataset of in-memory arrays: ``images`` (N, C, H, W) or (N, H, W) and ``labels`` (N,).

    ``dataset[i]`` is ``(image, label)``: a float32 (C, H, W) image (uint8 images are scaled
    to [0, 1], as torchvision's ToTensor does; a missing channel axis is added) with
    ``transform`` applied, and the label as a Python int for integer labels.
    ``arrays()`` returns all images that way at once, for the DataLoader's fast path, which
    then applies ``transform`` batch-wise.
    """

    def __init__(self, images, labels, transform=None):
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.ndim not in (3, 4):
            raise ValueError(f"ArrayDataset: images must be (N, C, H, W) or (N, H, W), "
                             f"got shape {images.shape}")
        if labels.ndim != 1:
            raise ValueError(f"ArrayDataset: labels must be 1-D (N,), got shape {labels.shape}")
        if len(labels) != len(images):
            raise ValueError(f"ArrayDataset: {len(images)} images {images.shape} but "
                             f"{len(labels)} labels {labels.shape}")
        if images.dtype.kind not in "uif":
            raise TypeError(f"ArrayDataset: images must be numeric, got dtype {images.dtype}")
        if labels.dtype.kind in "iub" and labels.dtype != np.int64:
            labels = labels.astype(np.int64)
        self.images = images
        self.labels = labels
        self.transform = transform
        self._float = None
        self._lock = threading.Lock()

    def __len__(self):
        return len(self.labels)

    def _to_float(self, imgs):
        if imgs.ndim == self.images.ndim and self.images.ndim == 3:
            imgs = imgs[:, None]
        elif imgs.ndim == 2:
            imgs = imgs[None]
        if imgs.dtype == np.uint8:
            # one pass, and the same rounding as torchvision's ToTensor (x.float() / 255)
            return np.divide(imgs, np.float32(255), dtype=np.float32)
        if imgs.dtype.kind == "f":
            return imgs
        return imgs.astype(np.float32)

    def arrays(self):
        """``(images, labels)``: float32 (N, C, H, W) images (uint8 scaled to [0, 1]; float
        images as they are) and the labels; computed once and cached, read-only."""
        if self._float is None:
            with self._lock:
                if self._float is None:
                    imgs = np.ascontiguousarray(self._to_float(self.images))
                    if imgs is self.images:
                        imgs = imgs.view()
                    imgs.flags.writeable = False
                    labels = self.labels.view()
                    labels.flags.writeable = False
                    self._float = (imgs, labels)
        return self._float

    def __getitem__(self, index):
        n = len(self)
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"{type(self).__name__}: index must be an integer, "
                            f"got {type(index).__name__}") from None
        if not -n <= i < n:
            raise IndexError(f"{type(self).__name__}: index {i} is out of range for {n} samples")
        img = self._to_float(self.images[i])
        if self.transform is not None:
            img = self.transform(img)
        label = self.labels[i]
        return img, (int(label) if self.labels.dtype.kind in "iu" else label)

    def __repr__(self):
        return (f"{type(self).__name__}({len(self)} images of shape {self.images.shape[1:]} "
                f"{self.images.dtype}, labels {self.labels.dtype})")


# ---- locating the files ------------------------------------------------------------------------

def _check_name(name: str) -> str:
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(_DATASETS)}")
    return name


def search_dirs(name: str, root=None) -> list[tuple[str, str]]:
    """The directories searched for dataset ``name``, in order, each with where it came from."""
    _check_name(name)
    dirs = []
    if root is not None:
        root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        dirs.append((root, "root"))
        dirs.append((os.path.join(root, name), "root"))
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append((os.path.join(os.path.abspath(os.path.expanduser(env)), name), f"${ENV_VAR}"))
    dirs.append((os.path.join(os.path.expanduser("~"), ".cache", "divenet", name), "user cache"))
    for sysdir in SYSTEM_DATA_DIRS:
        dirs.append((os.path.join(sysdir, name), "system"))
    seen, out = set(), []
    for d, why in dirs:
        if d not in seen:
            seen.add(d)
            out.append((d, why))
    return out


def _file_in(directory: str, stem: str):
    """The path of ``stem`` or ``stem.gz`` in ``directory`` (raw preferred: faster), or None."""
    for cand in (stem, stem + ".gz"):
        p = os.path.join(directory, cand)
        if os.path.isfile(p):
            return p
    return None


def _missing(directory: str, stems) -> list[str]:
    return [s for s in stems if _file_in(directory, s) is None]


def _locate(name: str, root=None):
    """``(directory, where it came from, the files it lacks)`` for the first searched directory
    that holds any file of dataset ``name``, or None."""
    for d, why in search_dirs(name, root):
        if os.path.isdir(d):
            missing = _missing(d, _ALL_FILES)
            if len(missing) < len(_ALL_FILES):
                return d, why, missing
    return None


def _incomplete(name: str, directory: str, why: str, missing) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{_DATASETS[name]['title']}: {directory} ({why}) holds only part of the dataset: it lacks "
        f"{', '.join(missing)}. A dataset directory must hold all four files ({', '.join(_ALL_FILES)}), "
        f"each raw or .gz; complete it or remove it (divenet does not fall back to the next directory)")


def find_dataset(name: str, root=None):
    """The first searched directory that holds the four files of dataset ``name``, or None when
    none holds any of them. The first directory that holds some raises DatasetNotFoundError
    naming the files it lacks."""
    hit = _locate(name, root)
    if hit is None:
        return None
    d, why, missing = hit
    if missing:
        raise _incomplete(name, d, why, missing)
    return d


def dataset_locations() -> dict:
    """``{name: directory or None}`` for every known dataset (for ``divenet datasets``); an
    incomplete directory is None (it cannot be used)."""
    out = {}
    for name in _DATASETS:
        hit = _locate(name)
        out[name] = hit[0] if hit and not hit[2] else None
    return out


def describe_datasets() -> str:
    """A human-readable report of where each dataset was found (``divenet datasets``)."""
    lines = []
    for name, info in _DATASETS.items():
        hit = _locate(name)
        if hit and hit[2]:
            lines.append(f"{info['title']:<14} incomplete: {hit[0]} ({hit[1]}) lacks {', '.join(hit[2])}")
            continue
        lines.append(f"{info['title']:<14} {hit[0] if hit else 'not found'}")
        if hit is None:
            lines.append("  searched: " + ", ".join(p for p, _ in search_dirs(name)))
            if info["install"]:
                lines.append(f"  install:  {info['install']}")
    return "\n".join(lines)


def _not_found(name: str, root, split: str) -> DatasetNotFoundError:
    info = _DATASETS[name]
    lines = [f"{info['title']} ({split} split) not found. It is four files, each raw or .gz, "
             f"in one directory: {', '.join(_ALL_FILES)}. Searched:"]
    for d, why in search_dirs(name, root):
        state = "holds none of them" if os.path.isdir(d) else "does not exist"
        lines.append(f"  {d}  ({why}; {state})")
    if not os.environ.get(ENV_VAR):
        lines.append(f"  (${ENV_VAR} is not set; set it to a directory holding {name}/)")
    hint = f"Install it with `{info['install']}`, or copy" if info["install"] else "Copy"
    lines.append(f"{hint} the files into one of these directories; divenet never downloads.")
    return DatasetNotFoundError("\n".join(lines))


# ---- decoding, cached per process --------------------------------------------------------------

_cache: dict = {}        # key -> (uint8 images, int64 labels)
_float_cache: dict = {}  # key -> arrays(): float32 (N, 1, H, W) images in [0, 1], labels
_cache_lock = threading.Lock()


def _key(path):
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)


def _load_pair(images_path: str, labels_path: str, num_classes: int):
    """``(key, images, labels)``: decoded and checked once per process."""
    key = (_key(images_path), _key(labels_path))
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        return (key,) + hit
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    iname, lname = os.path.basename(images_path), os.path.basename(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IDXError(f"{iname}: expected uint8 images (N, H, W), got {images.dtype} "
                       f"{images.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise IDXError(f"{lname}: expected integer labels (N,), got {labels.dtype} {labels.shape}")
    if len(images) == 0:
        raise IDXError(f"{iname}: has 0 images (its header says {images.shape}); a dataset split "
                       f"needs at least one")
    if images.size == 0:
        raise IDXError(f"{iname}: holds images of {images.shape[1]}x{images.shape[2]} pixels; "
                       f"expected images with at least one pixel")
    if len(labels) != len(images):
        raise IDXError(f"{lname}: holds {len(labels)} labels but {iname} holds "
                       f"{len(images)} images")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise IDXError(f"{lname}: labels range over {labels.min()}..{labels.max()}, outside "
                       f"the {num_classes} classes 0..{num_classes - 1}")
    images.flags.writeable = False
    labels.flags.writeable = False
    with _cache_lock:
        _cache[key] = (images, labels)
    return key, images, labels


def clear_cache() -> None:
    """Forget the decoded arrays (they are freed once no dataset holds them)."""
    with _cache_lock:
        _cache.clear()
        _float_cache.clear()


class _IDXDataset(ArrayDataset):
    name = ""

    def __init__(self, root=None, train=True, transform=None):
        info = _DATASETS[self.name]
        split = "train" if train else "test"
        directory = find_dataset(self.name, root)
        if directory is None:
            raise _not_found(self.name, root, split)
        stems = DATASET_FILES[split]
        paths = [_file_in(directory, s) for s in stems]
        self._key, images, labels = _load_pair(paths[0], paths[1], len(info["classes"]))
        super().__init__(images, labels, transform=transform)
        self.root = directory
        self.files = tuple(paths)
        self.train = bool(train)
        self.classes = list(info["classes"])
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    def arrays(self):
        """As ArrayDataset.arrays(), shared by every dataset made from the same files."""
        if self._float is None:
            with _cache_lock:
                hit = _float_cache.get(self._key)
            if hit is None:
                hit = super().arrays()
                with _cache_lock:
                    hit = _float_cache.setdefault(self._key, hit)
            self._float = hit
        return self._float

    def __repr__(self):
        split = "train" if self.train else "test"
        return f"{type(self).__name__}({split}, {len(self)} images from {self.root})"


class FashionMNIST(_IDXDataset):
    """Fashion-MNIST (Zalando): 60000 train / 10000 test 28x28 grayscale images, 10 classes."""

    name = "fashion-mnist"


class MNIST(_IDXDataset):
    """MNIST handwritten digits: 60000 train / 10000 test 28x28 grayscale images, 10 classes."""

    name = "mnist"
