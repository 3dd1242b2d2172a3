"""Fuzzing the IDX reader and the datasets built on it: damaged files, raw and gzipped, end in
a success or a one-line IDXError naming the file; never another exception, a hang or a
memory blow-up.

The accepted exception: IDX has no checksum, so a bit flipped in a raw file's payload reads
as other pixel values (tallied as "payload"). In a gzip file the stream's CRC-32 catches it.
"""
import zlib

import numpy as np

import divenet.data.datasets as ds
from divenet.data import DatasetNotFoundError, FashionMNIST, IDXError, read_idx, write_idx
from divenet.data.idx import IDX_TYPES

from .harness import Fuzz, bitflip, delete, garbage, insert, truncate

INNER = ("truncate", "bitflip-header", "bitflip-payload", "insert", "delete", "dims", "ndim",
         "magic", "append")
STREAM = ("truncate", "bitflip", "insert", "delete", "garbage-tail", "zero-padding",
          "extra-member", "bomb")


def _array(rng, role, n):
    if role == "images":
        return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    if role == "labels":
        return rng.integers(0, 10, n).astype(np.uint8)
    dtype = IDX_TYPES[int(rng.choice(list(IDX_TYPES)))].newbyteorder("=")
    shape = tuple(int(d) for d in rng.integers(1, 7, int(rng.integers(1, 5))))
    return (rng.standard_normal(shape) * 100).astype(dtype)


def _mutate_inner(rng, kind, raw, ndim):
    """Damage the IDX bytes themselves (before any compression)."""
    header = 4 + 4 * ndim
    if kind == "truncate":
        return truncate(rng, raw)
    if kind == "bitflip-header":
        return bitflip(rng, raw, 0, header)
    if kind == "bitflip-payload":
        return bitflip(rng, raw, header)
    if kind == "insert":
        return insert(rng, raw)
    if kind == "delete":
        return delete(rng, raw)
    if kind == "append":
        return garbage(rng, raw)[0], "bytes appended"
    b = bytearray(raw)
    if kind == "dims":
        i = int(rng.integers(0, ndim))
        old = int.from_bytes(b[4 + 4 * i: 8 + 4 * i], "big")
        new = int(rng.choice([0, 1, old + 1, max(old - 1, 0), 2 ** 31, 2 ** 32 - 1, 2 ** 21,
                              int(rng.integers(0, 2 ** 32))]))
        b[4 + 4 * i: 8 + 4 * i] = new.to_bytes(4, "big")
        return bytes(b), f"dimension {i}: {old} -> {new}"
    if kind == "ndim":
        new = int(rng.integers(0, 256))
        b[3] = new
        return bytes(b), f"ndim {ndim} -> {new}"
    assert kind == "magic"
    i = int(rng.integers(0, 3))
    new = int(rng.integers(0, 256))
    b[i] = new
    return bytes(b), f"magic byte {i} -> 0x{new:02X}"


def _zeros_stream(nbytes):
    z = zlib.compressobj(1, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    parts = [z.compress(chunk) for _ in range(nbytes >> 20)]
    return b"".join(parts) + z.flush()


def _mutate_stream(rng, kind, raw, gz):
    """Damage the gzip stream around intact IDX bytes."""
    if kind == "truncate":
        return truncate(rng, gz)
    if kind == "bitflip":
        return bitflip(rng, gz)
    if kind == "insert":
        return insert(rng, gz)
    if kind == "delete":
        return delete(rng, gz)
    if kind == "garbage-tail":
        return garbage(rng, gz)[0] + b"!", "garbage after the stream"
    if kind == "zero-padding":
        n = int(rng.integers(1, 600))
        return gz + bytes(n), f"{n} zero bytes after the stream"
    if kind == "extra-member":
        extra = rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8).tobytes()
        return gz + zlib.compress(extra, wbits=31), f"a second member of {len(extra)} bytes"
    assert kind == "bomb"
    mb = int(rng.integers(4, 17))
    return gz + _zeros_stream(mb << 20), f"a second member inflating to {mb} MB of zeros"


def _partners(root, role, n):
    """The three healthy files of a dataset beside the damaged one."""
    img, lab = ds.DATASET_FILES["train"]
    if role == "images":
        write_idx(root / (lab + ".gz"), (np.arange(n) % 10).astype(np.uint8))
    else:
        write_idx(root / (img + ".gz"), np.zeros((n, 28, 28), np.uint8))
    timg, tlab = ds.DATASET_FILES["test"]
    write_idx(root / (timg + ".gz"), np.zeros((2, 28, 28), np.uint8))
    write_idx(root / (tlab + ".gz"), np.zeros(2, np.uint8))


def _success(got, orig):
    if got.shape != orig.shape or got.dtype != orig.dtype:
        return "accepted"
    return "unchanged" if got.tobytes() == orig.tobytes() else "payload"


def test_idx_fuzz(tmp_path, fuzz_cases, monkeypatch):
    monkeypatch.delenv("DIVENET_DATA", raising=False)
    reader = Fuzz("read_idx", 1, time_limit=3.0, mem_limit=32 << 20)
    dataset = Fuzz("FashionMNIST over the damaged file", 1, time_limit=3.0, mem_limit=32 << 20)
    with reader.session():
        for case in range(fuzz_cases(300)):
            rng = reader.rng(case)
            role = str(rng.choice(["images", "labels", "generic"]))
            n = int(rng.integers(1, 5))
            orig = _array(rng, role, n)
            root = tmp_path / f"case{case}"
            root.mkdir()
            scratch = root / "scratch"
            write_idx(scratch, orig, compress=False)
            raw = scratch.read_bytes()
            scratch.unlink()
            compressed = bool(rng.random() < 0.5)
            if compressed and rng.random() < 0.5:
                kind = str(rng.choice(STREAM))
                data, detail = _mutate_stream(rng, kind, raw, zlib.compress(raw, wbits=31))
                label = f"gz-stream/{kind}"
            else:
                kind = str(rng.choice(INNER))
                data, detail = _mutate_inner(rng, kind, raw, orig.ndim)
                if compressed:
                    data = zlib.compress(data, wbits=31)
                label = f"{'gz' if compressed else 'raw'}/{kind}"
            stems = ds.DATASET_FILES["train"]
            name = (stems[0] if role == "images" else stems[1]) + (".gz" if compressed else "")
            path = root / name
            path.write_bytes(data)

            run = reader.call(lambda: read_idx(path))
            outcome = reader.bounds_broken(run)
            if outcome is None:
                outcome = (_success(run.value, orig) if run.exc is None
                           else reader.error_outcome(run.exc, (IDXError, ValueError), [name]))
            reader.record(case, label, outcome, detail, run)

            if role == "generic":
                continue
            _partners(root, role, n)
            run = dataset.call(lambda: FashionMNIST(root=root, train=True))
            outcome = dataset.bounds_broken(run)
            if outcome is None and run.exc is None:
                got = run.value.images if role == "images" else run.value.labels
                want = orig if role == "images" else orig.astype(np.int64)
                outcome = _success(np.asarray(got), want)
            elif outcome is None:
                outcome = dataset.error_outcome(run.exc, (IDXError, DatasetNotFoundError, ValueError),
                                                [name])
            dataset.record(case, label, outcome, detail, run)
            ds.clear_cache()
    print("\nIDX payload bit flips read as other values (the accepted exception): "
          f"{sum(c['payload'] for k, c in reader.table.items() if 'bitflip-payload' in k)} of "
          f"{sum(sum(c.values()) for k, c in reader.table.items() if 'bitflip-payload' in k)} cases")
    dataset.check("tests/fuzz/test_idx_fuzz.py")
    reader.check("tests/fuzz/test_idx_fuzz.py")


def test_unmutated_files_read_back(tmp_path):
    # the fuzzer's "unchanged" needs a healthy file to read as itself
    for compress in (False, True):
        arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
        write_idx(tmp_path / "x", arr, compress=compress)
        np.testing.assert_array_equal(read_idx(tmp_path / "x"), arr)
