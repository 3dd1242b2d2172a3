"""The IDX file format of MNIST and Fashion-MNIST, raw or gzip-compressed.

An IDX file is a 4-byte magic number, one big-endian uint32 size per dimension, then the
items in row-major (C) order, big-endian::

    byte 0, 1   zero
    byte 2      type code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte 3      number of dimensions

``read_idx`` checks every part of that and names the file in every error, so that a truncated
download or a wrong file says what is wrong instead of surfacing later as a reshape error.
Compression is detected by the gzip magic bytes ``1f 8b``, not by the file name.

A damaged or hostile header costs nothing: the payload's size is computed in Python integers
(no int64 wrap-around) and checked against the file's size before anything is allocated, and a
gzip stream is inflated in bounded chunks, never beyond the size its header declares (a small
file that inflates to gigabytes is refused after the first few kilobytes). The one damage that
cannot be seen is a flipped bit in a raw file's payload: IDX has no checksum (gzip's CRC-32
catches it in a compressed file).
"""
from __future__ import annotations

import gzip
import math
import os
import struct
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


class _GzipStream:
    """The inflated bytes of a gzip file (all its members), read on demand: nothing is inflated
    beyond what the caller asks for, so a small file that inflates to gigabytes (a gzip bomb)
    costs no memory. A broken or cut-off stream is an IDXError."""

    _CHUNK = 1 << 16  # compressed bytes read from the file at a time

    def __init__(self, f, name, size):
        self.f, self.name, self.size = f, name, size
        self.d = zlib.decompressobj(wbits=31)
        self.pending = b""  # compressed bytes read but not yet given to the decompressor
        self.ended = False

    def _error(self, why):
        self.ended = True
        return IDXError(f"{self.name}: corrupt gzip stream ({why})")

    def drain(self):
        """Inflate (and drop) the rest, so that a corrupt stream is reported as such rather than
        as the garbled header it inflated to."""
        for _ in range(256):  # at most 256 MB: more than any real IDX file, a bounded time
            if not self.read(1 << 20):
                return

    def _next_member(self) -> bool:
        """After a member's end: start the next one; False at the end of the file."""
        rest = self.d.unused_data + self.f.read(2)
        if len(rest) < 2 and not rest.strip(b"\x00"):
            return False
        if rest[:2] != _GZIP_MAGIC:
            tail_start = self.f.tell() - len(rest)
            # trailing zero padding is allowed, as gzip(1) allows it
            while True:
                if rest.strip(b"\x00"):
                    raise self._error(f"{self.size - tail_start} bytes of garbage after the "
                                      f"compressed data")
                rest = self.f.read(self._CHUNK)
                if not rest:
                    return False
        self.d = zlib.decompressobj(wbits=31)
        self.pending = rest
        return True

    def read(self, n: int) -> bytes:
        """Up to ``n`` inflated bytes (fewer only at the end of the stream)."""
        parts, want = [], n
        while want > 0 and not self.ended:
            if self.d.eof:
                if not self._next_member():
                    self.ended = True
                    break
            at_end = False
            if not self.pending:
                self.pending = self.f.read(self._CHUNK)
                at_end = not self.pending
            try:
                out = self.d.decompress(self.pending, want)
            except zlib.error as exc:
                raise self._error(exc) from None
            self.pending = self.d.unconsumed_tail
            if not out and at_end and not self.d.eof:
                raise self._error("it ends before the end of the compressed data; the file was "
                                  "probably cut off")
            parts.append(out)
            want -= len(out)
        return b"".join(parts)


def _read_payload(src, nbytes: int, gz: bool):
    """``nbytes`` from ``src`` into one writable buffer, in bounded chunks; a short result means
    the file ended first."""
    if not gz:  # the size was checked against the file's: one allocation of the exact size
        buf = np.empty(nbytes, np.uint8)
        got = 0
        while got < nbytes:
            k = src.readinto(memoryview(buf)[got:])
            if not k:
                return buf[:got]
            got += k
        return buf
    # Real IDX files deflate less than 10x: allocated once. A header that declares more than
    # that is believed only as far as the stream really inflates (the buffer grows).
    buf = bytearray(min(nbytes, 16 * src.size))
    got = 0
    while got < nbytes:
        chunk = src.read(min(nbytes - got, 1 << 18))
        if not chunk:
            break
        buf[got:got + len(chunk)] = chunk
        got += len(chunk)
    del buf[got:]
    return buf


def _dims_text(dims) -> str:
    return "x".join(str(d) for d in dims) if dims else "(scalar)"


#: deflate inflates at most 1032 bytes per compressed byte (a 258-byte match in 2 bits)
_MAX_INFLATION = 1032


def read_idx(path) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a native-byte-order NumPy array.

    Raises IDXError (a ValueError) naming the file when the magic number, the type code, the
    header or the payload length is wrong, or when the gzip stream is corrupt. The payload's
    size is computed from the header and checked against the file's size before anything is
    allocated, and a gzip stream is never inflated beyond the size the header declares.
    """
    name = _name(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        gz = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        if not gz:
            return _parse(f, name, size, gz)
        src = _GzipStream(f, name, size)
        try:
            return _parse(src, name, size, gz)
        except IDXError as exc:
            if not str(exc).startswith(f"{name}: too long"):
                try:  # a corrupt stream is the real error, not the header it garbled
                    src.drain()
                except IDXError as corrupt:
                    raise corrupt from None
            raise


def _parse(src, name: str, size: int, gz: bool) -> np.ndarray:
    """The array of an IDX stream ``src`` (a raw file or a _GzipStream) of ``size`` bytes."""
    what = "the decompressed file" if gz else "the file"
    data = src.read(4)
    if len(data) < 4:
        raise IDXError(f"{name}: not an IDX file: {len(data)} bytes is shorter than the 4-byte "
                       f"magic number")
    if data[0] != 0 or data[1] != 0:
        raise IDXError(f"{name}: not an IDX file: bad magic number {data[:4].hex(' ')} (an IDX "
                       f"file starts with two zero bytes, a type code and the number of dimensions)")
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X} {dt.newbyteorder('=').name}" for c, dt in IDX_TYPES.items())
        raise IDXError(f"{name}: unknown IDX type code 0x{code:02X}; expected one of {known}")
    if ndim == 0:
        raise IDXError(f"{name}: bad IDX header: 0 dimensions")
    header = 4 + 4 * ndim
    data += src.read(header - 4)
    if len(data) < header:
        raise IDXError(f"{name}: truncated: the header declares {ndim} dimensions ({header} header "
                       f"bytes) but {what} holds {len(data)} bytes")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_TYPES[code]
    expected = math.prod(dims) * dtype.itemsize  # Python ints: a huge header cannot wrap to 0
    declared = f"{name}: %s: header says {_dims_text(dims)} = {expected} bytes of data but %s " \
               f"(file size {size} bytes)"
    # checked against what the file can hold before anything is allocated
    if not gz and expected != size - header:
        state = "truncated" if expected > size - header else "too long"
        raise IDXError(declared % (state, f"the file holds {size - header}"))
    if gz and expected > _MAX_INFLATION * size - header:
        raise IDXError(declared % ("truncated", f"a gzip file of {size} bytes inflates to at most "
                                                f"{_MAX_INFLATION * size - header}"))
    buf = _read_payload(src, expected, gz)
    if len(buf) < expected:
        raise IDXError(declared % ("truncated", f"{what} holds {len(buf)}"))
    if gz and src.read(1):  # reads on to the stream's end, where its checksums are checked
        raise IDXError(declared % ("too long", "the gzip stream inflates to more"))
    arr = np.frombuffer(buf, dtype=dtype).reshape(dims)
    if dtype.itemsize > 1 and not dtype.isnative:  # in place: the buffer is ours and writable
        arr = arr.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return arr


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
