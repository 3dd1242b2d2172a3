"""Fuzzing the images ``divenet predict`` reads: PNG and JPEG files made with Pillow, then cut,
flipped, garbled or made to declare huge sizes. Each run ends in a prediction or one-line errors
on stderr (``divenet predict: error: ...``, or a per-file line), never a traceback, a hang or a
memory blow-up.

A decodable damaged image is no error (JPEG has no checksum): a prediction that differs from
the healthy file's is tallied as "accepted".
"""
import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image

from .harness import Fuzz, bitflip, cli_outcome, delete, garbage, insert, run_cli, truncate

KINDS = ("truncate", "bitflip", "bitflip-header", "insert", "delete", "garbage", "empty",
         "huge-declared", "chunk", "bomb")
BASES = (("L", (28, 28), "PNG"), ("RGB", (40, 30), "PNG"), ("RGBA", (16, 16), "PNG"),
         ("P", (20, 20), "PNG"), ("I;16", (28, 28), "PNG"), ("L", (28, 28), "JPEG"),
         ("RGB", (64, 48), "JPEG"))


def _image(mode, size, fmt):
    rng = np.random.default_rng(0)
    w, h = size
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (h, w)).astype(np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _png_chunks(data):
    """(offset, type) of each chunk of a PNG file."""
    out, i = [], 8
    while i + 8 <= len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        out.append((i, data[i + 4:i + 8]))
        i += 12 + n
    return out


def _fix_crc(b, i):
    n = int.from_bytes(b[i:i + 4], "big")
    b[i + 8 + n:i + 12 + n] = zlib.crc32(bytes(b[i + 4:i + 8 + n])).to_bytes(4, "big")


def _huge(rng, data, fmt):
    w, h = (int(rng.choice([0, 1, 30000, 65535, 100000, 2 ** 31 - 1, 2 ** 32 - 1])) for _ in range(2))
    b = bytearray(data)
    if fmt == "PNG":  # IHDR is the first chunk; its CRC is fixed so that only the size is wrong
        b[16:24] = struct.pack(">II", w, h)
        _fix_crc(b, 8)
        return bytes(b), f"IHDR declares {w}x{h}"
    w, h = w & 0xFFFF, h & 0xFFFF
    for i in range(2, len(b) - 9):
        if b[i] == 0xFF and b[i + 1] in (0xC0, 0xC1, 0xC2):
            b[i + 5:i + 9] = struct.pack(">HH", h, w)
            return bytes(b), f"SOF declares {w}x{h}"
    return data, "no SOF marker"


def _chunk(rng, data, fmt):
    """PNG: damage a chunk's contents and fix its CRC, so that the decoder meets the damage;
    JPEG: flip bits in the second half (the entropy-coded scan)."""
    if fmt != "PNG":
        return bitflip(rng, data, len(data) // 2)
    b = bytearray(data)
    chunks = _png_chunks(data)
    i, kind = chunks[int(rng.integers(0, len(chunks)))]
    n = int.from_bytes(b[i:i + 4], "big")
    if n:
        for _ in range(int(rng.integers(1, 4))):
            j = i + 8 + int(rng.integers(0, n))
            b[j] ^= 1 << int(rng.integers(0, 8))
        _fix_crc(b, i)
    return bytes(b), f"{kind.decode('latin-1')} chunk damaged, CRC fixed"


@functools.lru_cache(maxsize=None)
def _blank_png(side):
    buf = io.BytesIO()
    Image.new("L", (side, side)).save(buf, "PNG")
    return buf.getvalue()


def _bomb(rng):
    """A valid PNG of many pixels in few bytes: under Pillow's limit, just over it (a warning
    only, in Pillow), and over twice it (an error in Pillow)."""
    side = int(rng.choice([3000, 9500, 14000]))
    data = _blank_png(side)
    return data, f"a valid {side}x{side} PNG of {len(data)} bytes"


def _mutate(rng, kind, data, fmt):
    if kind == "truncate":
        return truncate(rng, data)
    if kind == "bitflip":
        return bitflip(rng, data)
    if kind == "bitflip-header":
        return bitflip(rng, data, 0, 40)
    if kind == "insert":
        return insert(rng, data)
    if kind == "delete":
        return delete(rng, data)
    if kind == "garbage":
        return garbage(rng, data[:int(rng.choice([0, 4, 8, 16]))])
    if kind == "empty":
        return b"", "empty file"
    if kind == "huge-declared":
        return _huge(rng, data, fmt)
    if kind == "chunk":
        return _chunk(rng, data, fmt)
    assert kind == "bomb"
    return _bomb(rng)


def test_image_fuzz(tmp_path, fuzz_cases, lenet_checkpoint):
    bases, baseline = [], {}
    for mode, size, fmt in BASES:
        path = tmp_path / f"base-{mode.replace(';', '')}.{fmt.lower()}"
        path.write_bytes(_image(mode, size, fmt))
        rc, out, err = run_cli(["predict", str(lenet_checkpoint), str(path)])
        assert rc == 0, err  # the healthy images predict: the baseline
        baseline[path.name] = out.split(":", 1)[1]
        bases.append((path, fmt))

    command = Fuzz("divenet predict with a damaged image", 3, time_limit=10.0, mem_limit=256 << 20)
    with command.session():
        for case in range(fuzz_cases(100)):
            rng = command.rng(case)
            base, fmt = bases[int(rng.integers(0, len(bases)))]
            kind = str(rng.choice(KINDS))
            data, detail = _mutate(rng, kind, base.read_bytes(), fmt)
            img = tmp_path / f"case{case}.{fmt.lower()}"
            img.write_bytes(data)
            run = command.call(lambda: run_cli(["predict", str(lenet_checkpoint), str(img)]))
            outcome = command.bounds_broken(run)
            if outcome is None and run.exc is not None:
                outcome = "crash"
            elif outcome is None:
                rc, out, err = run.value
                outcome = cli_outcome(rc, out, err, "predict", [str(img)])
                if outcome == "ok":
                    same = out.split(":", 1)[1] == baseline[base.name]
                    outcome = "unchanged" if same else "accepted"
                elif outcome != "clear-error":
                    run.exc = RuntimeError(f"exit {rc}; stderr: {err.strip()[:300]!r}")
            command.record(case, f"{fmt.lower()}/{kind}", outcome, f"{base.name}: {detail}", run)
            img.unlink()
    command.check("tests/fuzz/test_image_fuzz.py")
