"""One image file (a path or the bytes of an upload) as a classifier's input: decoded by Pillow,
converted to the model's colour mode, resized to its side, scaled to [0, 1].

``divenet predict`` and the server's ``/v1/predict`` both read images here, so a file gives the
same input to the model either way. Large images are refused from their header, before any pixel
is decoded: by ``max_pixels`` when given, and always by Pillow's decompression-bomb guard (its
warning band, MAX_IMAGE_PIXELS to twice that, is refused too).
"""
from __future__ import annotations

import warnings


class ImageError(ValueError):
    """An image that cannot be read, or one refused as too large; the message names it."""


def read_image(source, channels, side, *, name=None, max_pixels=None, formats=None):
    """``source`` (a path or a binary file object) as a (channels, side, side) float32 array in
    [0, 1], and a note of what was changed to get there (None when nothing was). ``name`` is what
    messages call the image (default: ``source``); ``formats`` limits the decoders tried (e.g.
    ``("PNG", "JPEG")``). Raises :class:`ImageError`."""
    import numpy as np

    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImageError("reading images needs Pillow: pip install 'divenet[images]'") from None
    name = source if name is None else name
    mode = "L" if channels == 1 else "RGB"
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=formats) as img:
                w, h = img.size  # from the header; nothing is decoded yet
                if max_pixels is not None and w * h > max_pixels:
                    raise ImageError(f"{name}: refused, {w}x{h} is {w * h:,} pixels, over the limit "
                                     f"of {max_pixels:,}")
                notes = []
                if img.mode != mode:
                    notes.append(f"{img.mode} converted to {'greyscale' if mode == 'L' else 'RGB'}")
                if img.size != (side, side):
                    notes.append(f"resized from {w}x{h} to the model's {side}x{side}")
                img = img.convert(mode).resize((side, side), Image.BILINEAR)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: refused, too large to decode safely ({exc})") from None
    except UnidentifiedImageError:  # Pillow's message repeats the path or a file object's repr
        kinds = " or ".join(formats) if formats else "a format Pillow reads"
        raise ImageError(f"{name}: not a readable image (not {kinds})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # what Pillow raises for bad files
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"{name}: not a readable image ({exc})") from None
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return (arr[None] if channels == 1 else arr.transpose(2, 0, 1)), "; ".join(notes) or None


def normalize(batch, meta, invert=False):
    """What a model's metadata (a checkpoint's, or an ONNX file's metadata_props) says to do with
    images from :func:`read_image` (C, H, W) or a stack of them: ``1 - x`` when ``invert`` or
    ``meta["invert"]``, then ``(x - mean) / std`` per channel when ``meta["mean"]`` is set."""
    import numpy as np

    if invert or meta.get("invert"):
        batch = 1.0 - batch
    if meta.get("mean") is not None:
        shape = (-1, 1, 1)
        batch = ((batch - np.reshape(meta["mean"], shape)) / np.reshape(meta["std"], shape)).astype(np.float32)
    return batch
