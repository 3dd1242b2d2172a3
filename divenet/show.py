"""``divenet show``: pictures of what a network computes, each written as one PNG.

- ``filters CKPT``: a convolution layer's kernels (the first one unless ``--layer``);
- ``features CKPT IMAGE``: the feature maps a layer computes for one image;
- ``kernels [IMAGE]``: the slides' hand-made kernels (edge, sharpen, Gaussian blur, vertical
  edge) applied to a photograph with ``F.conv2d`` (default: the photograph of Grace Hopper that
  ships in matplotlib's sample data);
- ``errors CKPT``: the confusion matrix on the test split and the misclassified images.

It owns these figures and the array helpers that lay kernels out as tiles (``kernel_grid``,
used by ``divenet.tensorboard`` too). It sits beside ``cli.py`` (whose checkpoint and image
helpers it reuses) and imports matplotlib only when it draws.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

# The slides' examples of hand-made kernels (2-D cross-correlation, no padding).
KERNELS = {
    "edge": np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=np.float32),
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float32),
    "gaussian blur": np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / 16,
    "vertical edge": np.array([[1, -1]], dtype=np.float32),
}
MAX_SIDE = 512  # kernels: a larger photograph is average-pooled down to about this side
MAX_TILES = 64  # filters / features: panels drawn at most


def sample_photo():
    """The path of the photograph ``divenet show kernels`` uses by default (matplotlib's
    sample data: Grace Hopper, 512x600 JPEG)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


# ---- arrays --------------------------------------------------------------------------------------
def apply_kernels(image):
    """The slides' kernels applied to a (H, W) image with ``F.conv2d``: name -> (H', W') array."""
    import divenet as dn
    import divenet.functional as F

    x = dn.tensor(np.asarray(image, dtype=np.float32)[None, None])
    with dn.no_grad():
        return {name: F.conv2d(x, dn.tensor(k[None, None])).numpy()[0, 0] for name, k in KERNELS.items()}


def _unit(a):
    """``a`` scaled to [0, 1] over its own range (a constant array becomes 0.5)."""
    lo, hi = float(a.min()), float(a.max())
    return np.full(a.shape, 0.5, np.float32) if hi == lo else ((a - lo) / (hi - lo)).astype(np.float32)


def kernel_tiles(weight, max_tiles=MAX_TILES):
    """The kernels of a conv weight (out, in, kh, kw) as a list of (label, tile) in [0, 1]: one
    RGB tile (kh, kw, 3) per output channel when in == 3, else one grey tile (kh, kw) per
    (output, input) pair; at most ``max_tiles``, output channel first."""
    w = np.asarray(weight, dtype=np.float32)
    if w.ndim != 4:
        raise ValueError(f"kernel_tiles: expected a convolution weight (out, in, kh, kw), got shape {w.shape}")
    if w.shape[1] == 3:
        return [(f"{o}", _unit(w[o].transpose(1, 2, 0))) for o in range(min(w.shape[0], max_tiles))]
    pairs = [(o, i) for o in range(w.shape[0]) for i in range(w.shape[1])][:max_tiles]
    one = w.shape[1] == 1
    return [(f"{o}" if one else f"{o}<-{i}", _unit(w[o, i])) for o, i in pairs]


def kernel_grid(weight, max_tiles=MAX_TILES, pad=1):
    """The tiles of :func:`kernel_tiles` in one (H, W) or (H, W, 3) array in [0, 1] (a square-ish
    grid, ``pad`` pixels of white between tiles): an image for TensorBoard."""
    tiles = [t for _, t in kernel_tiles(weight, max_tiles)]
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    kh, kw = tiles[0].shape[:2]
    grid = np.ones((rows * (kh + pad) + pad, cols * (kw + pad) + pad) + tiles[0].shape[2:], np.float32)
    for n, t in enumerate(tiles):
        r, c = divmod(n, cols)
        grid[pad + r * (kh + pad): pad + r * (kh + pad) + kh, pad + c * (kw + pad): pad + c * (kw + pad) + kw] = t
    return grid


def conv_layers(model):
    """(path, module) of each 2-D convolution of ``model``, in definition order."""
    from .nn import Conv2d

    return [(name, m) for name, m in model.named_modules() if isinstance(m, Conv2d)]


# ---- the command ---------------------------------------------------------------------------------
def _error(message):
    from .cli import CLIError

    return CLIError(message)


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise _error("show needs matplotlib: pip install 'divenet[plot]'") from None
    return plt


def _layer(model, name, model_name):
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        listed = [f"{n} ({type(m).__name__})" for n, m in modules.items() if n][:12]
        more = ", ..." if len(modules) > 13 else ""
        raise _error(f"argument --layer: {model_name} has no layer {name!r}; its layers: "
                     f"{', '.join(listed)}{more}")
    return modules[name]


def _image_model(args, what):
    from .cli import _load_model

    meta, model = _load_model(args.checkpoint, args.device, args.allow_nonfinite)
    if meta.get("kind", "image") != "image":
        raise _error(f"{what}: {meta['model']} is a language model; show {what} needs an image model")
    return meta, model


def _grid(n):
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def _save(fig, out):
    out = Path(out)
    fig.savefig(out, dpi=100)
    w, h = (int(round(v)) for v in fig.get_size_inches() * 100)
    _plt().close(fig)
    print(f"wrote {out} ({w}x{h} PNG)")
    return 0


def show_filters(args):
    meta, model = _image_model(args, "filters")
    convs = conv_layers(model)
    if args.layer is None:
        if not convs:
            raise _error(f"filters: {meta['model']} has no convolution layer")
        name, conv = convs[0]
    else:
        name, conv = args.layer, _layer(model, args.layer, meta["model"])
        if all(conv is not m for _, m in convs):
            listed = ", ".join(n for n, _ in convs[:12]) or "none"
            raise _error(f"argument --layer: {name} is a {type(conv).__name__}, not a convolution; "
                         f"{meta['model']}'s convolutions: {listed}")
    w = conv.weight.numpy()
    tiles = kernel_tiles(w)
    rows, cols = _grid(len(tiles))
    plt = _plt()
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 0.4, 1.4 * rows + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, tile) in zip(axes.flat, tiles):
        ax.imshow(tile, cmap="gray", interpolation="nearest", vmin=0, vmax=1)
        ax.set_title(label, fontsize=8)
    shown = "" if len(tiles) == w.shape[0] * (1 if w.shape[1] == 3 else w.shape[1]) else f" (first {len(tiles)})"
    fig.suptitle(f"{meta['model']} {name}: {w.shape[0]} kernels of {w.shape[1]}x{w.shape[2]}x{w.shape[3]}"
                 f"{shown}\n(each kernel scaled to its own range: dark = lowest weight, light = highest)", fontsize=9)
    fig.tight_layout()
    return _save(fig, args.out)


def layer_output(model, layer, x):
    """Run ``model`` on ``x`` and return what the submodule ``layer`` returned (its forward is
    wrapped for the call only)."""
    import divenet as dn

    seen = []
    saved = layer.__dict__.get("forward")
    original = layer.forward

    def forward(*a, **k):
        out = original(*a, **k)
        seen.append(out)
        return out

    layer.forward = forward
    try:
        with dn.no_grad():
            model(x)
    finally:
        del layer.__dict__["forward"]
        if saved is not None:
            layer.forward = saved
    return seen[0]


def show_features(args):
    import divenet as dn

    from .cli import _read_image

    meta, model = _image_model(args, "features")
    side = meta.get("input_size", 28)
    image, note = _read_image(args.image, meta["in_channels"], side)
    if note:
        print(f"divenet show: {args.image}: {note}")
    if args.invert:
        image = 1.0 - image
    if args.layer is None:
        convs = conv_layers(model)
        if not convs:
            raise _error(f"features: {meta['model']} has no convolution layer; pass --layer NAME")
        name, layer = convs[0]
    else:
        name, layer = args.layer, _layer(model, args.layer, meta["model"])
    out = layer_output(model, layer, dn.tensor(image[None], device=args.device))
    shape = tuple(out.shape) if isinstance(out, dn.Tensor) else None
    if shape is None or len(shape) != 4:
        raise _error(f"argument --layer: {name} ({type(layer).__name__}) returns "
                     f"{shape or type(out).__name__}, not feature maps (N, C, H, W); choose a "
                     "convolution, pooling or activation layer")
    maps = out.numpy()[0]
    n = min(len(maps), MAX_TILES)
    rows, cols = _grid(n + 1)
    plt = _plt()
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols + 0.4, 1.6 * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    shown = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    axes.flat[0].imshow(shown, cmap="gray", vmin=0, vmax=1)
    axes.flat[0].set_title("input", fontsize=8)
    for c, ax in enumerate(list(axes.flat)[1:n + 1]):
        ax.imshow(maps[c], cmap="viridis", interpolation="nearest")
        ax.set_title(f"channel {c}", fontsize=8)
    more = f", first {n} shown" if n < len(maps) else ""
    fig.suptitle(f"{meta['model']} {name} ({type(layer).__name__}) on {Path(args.image).name}: "
                 f"{shape[1]} maps of {shape[2]}x{shape[3]}{more}", fontsize=9)
    fig.tight_layout()
    return _save(fig, args.out)


def photo_array(path):
    """A photograph as a (H, W) greyscale float32 array in [0, 1], at its own aspect ratio; a
    side above ``MAX_SIDE`` is average-pooled down by a whole factor (``F.avg_pool2d``)."""
    import divenet as dn
    import divenet.functional as F

    # divenet.data.images.read_image always resizes to a square (a model's input); a picture
    # keeps its shape, so Pillow reads it here, behind the same decompression-bomb guard
    try:
        from PIL import Image
    except ImportError:
        raise _error("show kernels needs Pillow: pip install 'divenet[images]'") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                image = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _error(f"{path}: refused, too large to decode safely ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # what Pillow raises for bad files
        raise _error(f"{path}: not a readable image ({exc})") from None
    factor = math.ceil(max(image.shape) / MAX_SIDE)
    if factor > 1:
        image = F.avg_pool2d(dn.tensor(image[None, None]), factor).numpy()[0, 0]
    return image


def show_kernels(args):
    path = args.image if args.image is not None else sample_photo()
    image = photo_array(path)
    results = apply_kernels(image)
    plt = _plt()
    fig, axes = plt.subplots(1, 1 + len(results), figsize=(3.2 * (1 + len(results)), 4.2))
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"input {image.shape[1]}x{image.shape[0]}", fontsize=10)
    for ax, (name, y) in zip(axes[1:], results.items()):
        k = KERNELS[name]
        if k.sum() == 0:  # a detector: signed output, zero on flat regions (white)
            m = float(np.abs(y).max()) or 1.0
            im = ax.imshow(y, cmap="RdBu_r", vmin=-m, vmax=m)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        else:  # a smoother or sharpener keeps the brightness: same grey scale as the input
            ax.imshow(np.clip(y, 0, 1), cmap="gray", vmin=0, vmax=1)
        rows = " / ".join(" ".join(f"{v:g}" for v in r) for r in (k * 16 if name == "gaussian blur" else k))
        scale = "1/16 x " if name == "gaussian blur" else ""
        ax.set_title(f"{name}\n{scale}[{rows}]", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"the slides' kernels applied with F.conv2d to {Path(path).name}", fontsize=11)
    fig.tight_layout()
    return _save(fig, args.out)


def predictions(model, loader):
    """Predicted classes and true labels of every example of ``loader`` (numpy int arrays)."""
    import divenet as dn

    preds, labels = [], []
    with dn.no_grad():
        for x, y in loader:
            preds.append(model(x).array.argmax(axis=1))
            labels.append(y.array)
    to_np = (lambda a: a.get()) if hasattr(preds[0], "get") else np.asarray  # CuPy arrays
    return np.concatenate([to_np(p) for p in preds]), np.concatenate([to_np(t) for t in labels])


def show_errors(args):
    from .cli import _dataset, _input_transform
    from .data import DataLoader

    meta, model = _image_model(args, "errors")
    dataset = _dataset(meta.get("dataset") or "fashion-mnist", False, args.limit)
    loader = DataLoader(dataset, batch_size=256, transform=_input_transform(meta.get("input_size")),
                        device=args.device)
    pred, true = predictions(model, loader)
    classes = meta.get("classes") or [str(i) for i in range(meta["num_classes"])]
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (true, pred), 1)  # once per command, not a training step
    wrong = np.flatnonzero(pred != true)[:20]  # a 4 x 5 grid
    plt = _plt()
    fig = plt.figure(figsize=(14, 6.5))
    grid = fig.add_gridspec(4, 10, width_ratios=[1.1] * 4 + [0.25] + [0.6] * 5)
    ax = fig.add_subplot(grid[:, :4])
    ax.imshow(confusion, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if confusion[i, j] > confusion.max() / 2 else "black")
    ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = float((pred == true).mean())
    ax.set_title(f"{meta['model']}: {len(true)} test images, accuracy {acc:.3f}", fontsize=10)
    images = dataset.arrays()[0] if hasattr(dataset, "arrays") else None
    for n, idx in enumerate(wrong):
        sub = fig.add_subplot(grid[n // 5, 5 + n % 5])
        img = images[idx] if images is not None else dataset[idx][0]
        sub.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray")
        sub.set_title(f"true {classes[true[idx]]}\npred {classes[pred[idx]]}", fontsize=7)
        sub.axis("off")
    fig.suptitle(f"confusion matrix and the first misclassified test images ({len(np.flatnonzero(pred != true))} "
                 f"of {len(true)} wrong)", fontsize=11)
    fig.tight_layout()
    return _save(fig, args.out)


COMMANDS = {"filters": show_filters, "features": show_features, "kernels": show_kernels,
            "errors": show_errors}


def run(args):
    """Entry point of ``divenet show WHAT ...`` (cli.py's cmd_show)."""
    return COMMANDS[args.what](args)
