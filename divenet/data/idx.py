"""The IDX file format of MNIST and Fashion-MNIST, raw or gzip-compressed.

An IDX file is a 4-byte magic number, one big-endian uint32 size per dimension, then the
items in row-major (C) order, big-endian::

    byte 0, 1   zero
    byte 2      type code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte 3      number of dimensions

``read_idx`` checks every part of that and names the file in every error, so that a truncated
download or a wrong file says what is wrong instead of surfacing later as a reshape error.
Compression is detected by the gzip magic bytes ``1f 8b``, not by the file name.
"""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

__all__ = ["IDXError", "read_idx", "write_idx", "IDX_TYPES"]

#: type code -> big-endian NumPy dtype
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


class IDXError(ValueError):
    """A file that is not a well-formed IDX file (the message starts with the file's name)."""


def _name(path) -> str:
    return os.path.basename(os.fspath(path))


def _gunzip(raw: bytes, path) -> bytes:
    """Decompress every gzip member of ``raw``; a broken or cut-off stream is an IDXError."""
    parts = []
    data = raw
    while True:
        d = zlib.decompressobj(wbits=31)
        try:
            parts.append(d.decompress(data))
            parts.append(d.flush())
        except zlib.error as exc:
            raise IDXError(f"{_name(path)}: corrupt gzip stream ({exc})") from None
        if not d.eof:
            raise IDXError(f"{_name(path)}: corrupt gzip stream (it ends before the end of the "
                           f"compressed data; the file was probably cut off)")
        data = d.unused_data
        if not data.strip(b"\x00"):  # trailing zero padding is allowed, as gzip(1) allows it
            break
        if data[:2] != _GZIP_MAGIC:
            raise IDXError(f"{_name(path)}: corrupt gzip stream ({len(data)} bytes of garbage "
                           f"after the compressed data)")
    return b"".join(parts) if len(parts) != 2 or parts[1] else parts[0]


def _dims_text(dims) -> str:
    return "x".join(str(d) for d in dims) if dims else "(scalar)"


def read_idx(path) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a native-byte-order NumPy array.

    Raises IDXError (a ValueError) naming the file when the magic number, the type code, the
    header or the payload length is wrong, or when the gzip stream is corrupt.
    """
    with open(path, "rb") as f:
        raw = f.read()
    name = _name(path)
    data = _gunzip(raw, path) if raw[:2] == _GZIP_MAGIC else raw
    if len(data) < 4:
        raise IDXError(f"{name}: not an IDX file: {len(data)} bytes is shorter than the 4-byte "
                       f"magic number")
    if data[0] != 0 or data[1] != 0:
        raise IDXError(f"{name}: not an IDX file: bad magic number {data[:4].hex(' ')} (an IDX file "
                       f"starts with two zero bytes, a type code and the number of dimensions)")
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X} {dt.newbyteorder('=').name}" for c, dt in IDX_TYPES.items())
        raise IDXError(f"{name}: unknown IDX type code 0x{code:02X}; expected one of {known}")
    if ndim == 0:
        raise IDXError(f"{name}: bad IDX header: 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{name}: truncated: the header declares {ndim} dimensions ({header} header "
                       f"bytes) but the file holds {len(data)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    held = len(data) - header
    if held != expected:
        what = "truncated" if held < expected else "too long"
        raise IDXError(f"{name}: {what}: header says {_dims_text(dims)} = {expected} bytes of data "
                       f"but the file holds {held}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    # one copy: native byte order, writable, independent of the bytes object
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path, array, compress=None) -> None:
    """Write ``array`` as an IDX file; gzip-compressed when ``compress`` is true, or, when it is
    None, when ``path`` ends with ``.gz``."""
    arr = np.asarray(array)
    native = arr.dtype.newbyteorder("=")
    if native not in _CODES:
        names = ", ".join(dt.newbyteorder("=").name for dt in IDX_TYPES.values())
        raise TypeError(f"write_idx: IDX has no type for dtype {arr.dtype}; expected one of {names}")
    if arr.ndim == 0 or arr.ndim > 255:
        raise ValueError(f"write_idx: IDX needs 1 to 255 dimensions, got shape {arr.shape}")
    if any(d >= 2 ** 32 for d in arr.shape):
        raise ValueError(f"write_idx: dimension too large for IDX in shape {arr.shape}")
    code = _CODES[native]
    payload = (bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
               + np.ascontiguousarray(arr, dtype=IDX_TYPES[code]).tobytes())
    if compress is None:
        compress = os.fspath(path).endswith(".gz")
    if compress:
        payload = gzip.compress(payload, mtime=0)
    with open(path, "wb") as f:
        f.write(payload)
