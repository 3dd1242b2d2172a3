import gzip
import os
import tracemalloc
import zlib

import numpy as np
import pytest

from divenet.data.idx import IDX_TYPES, IDXError, read_idx, write_idx

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def _sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("shape", [(7,), (3, 4, 5), (2, 1, 3, 2)])
def test_round_trip(tmp_path, dtype, gz, shape):
    arr = _sample(dtype, shape)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, arr)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == gz
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == shape
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable


def test_header_layout_is_big_endian(tmp_path):
    path = tmp_path / "x"
    write_idx(path, np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int16))
    raw = path.read_bytes()
    assert raw[:4] == bytes([0, 0, 0x0B, 2])
    assert raw[4:12] == bytes([0, 0, 0, 2, 0, 0, 0, 3])
    assert raw[12:14] == bytes([0, 1]) and len(raw) == 12 + 12


def test_gzip_detected_by_magic_not_name(tmp_path):
    arr = _sample(np.uint8, (4, 3))
    misnamed_gz = tmp_path / "plain-name"
    write_idx(misnamed_gz, arr, compress=True)
    misnamed_raw = tmp_path / "looks.gz"
    write_idx(misnamed_raw, arr, compress=False)
    np.testing.assert_array_equal(read_idx(misnamed_gz), arr)
    np.testing.assert_array_equal(read_idx(misnamed_raw), arr)


def test_multi_member_gzip(tmp_path):
    arr = _sample(np.uint8, (10, 4))
    tmp = tmp_path / "raw"
    write_idx(tmp, arr)
    raw = tmp.read_bytes()
    path = tmp_path / "two-members.gz"
    path.write_bytes(gzip.compress(raw[:20]) + gzip.compress(raw[20:]))
    np.testing.assert_array_equal(read_idx(path), arr)


def _raw_file(tmp_path, name, arr):
    path = tmp_path / name
    write_idx(path, arr, compress=False)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_truncated(tmp_path, gz):
    arr = np.zeros((5, 4, 3), np.uint8)
    data = _raw_file(tmp_path, "tmp", arr).read_bytes()[:-7]
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(IDXError) as e:
        read_idx(path)
    held = (f"the decompressed file holds 53 (file size {path.stat().st_size} bytes)" if gz
            else "the file holds 53 (file size 69 bytes)")
    assert str(e.value) == f"{name}: truncated: header says 5x4x3 = 60 bytes of data but {held}"


def test_truncated_header(tmp_path):
    path = tmp_path / "short-header"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 5]))
    with pytest.raises(IDXError, match=r"^short-header: truncated: the header declares 3 dimensions"):
        read_idx(path)


def test_truncated_magic(tmp_path):
    path = tmp_path / "tiny"
    path.write_bytes(b"\x00\x00")
    with pytest.raises(IDXError, match=r"^tiny: not an IDX file: 2 bytes"):
        read_idx(path)


def test_over_long(tmp_path):
    arr = np.zeros((6,), np.int32)
    path = _raw_file(tmp_path, "labels-too-long", arr)
    path.write_bytes(path.read_bytes() + b"\x01\x02")
    with pytest.raises(IDXError) as e:
        read_idx(path)
    assert str(e.value) == ("labels-too-long: too long: header says 6 = 24 bytes of data "
                            "but the file holds 26 (file size 34 bytes)")


def test_bad_magic(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello, this is not IDX")
    with pytest.raises(IDXError, match=r"^notes\.txt: not an IDX file: bad magic number 68 65 6c 6c"):
        read_idx(path)


def test_bad_type_code(tmp_path):
    path = _raw_file(tmp_path, "weird-type", np.zeros(3, np.uint8))
    data = bytearray(path.read_bytes())
    data[2] = 0x0A
    path.write_bytes(bytes(data))
    with pytest.raises(IDXError, match=r"^weird-type: unknown IDX type code 0x0A; expected one of "
                                       r"0x08 uint8, 0x09 int8, 0x0B int16"):
        read_idx(path)


def test_zero_dimensions(tmp_path):
    path = tmp_path / "nodims"
    path.write_bytes(bytes([0, 0, 8, 0]))
    with pytest.raises(IDXError, match="^nodims: bad IDX header: 0 dimensions"):
        read_idx(path)


def test_corrupt_gzip(tmp_path):
    good = gzip.compress(_raw_file(tmp_path, "tmp", _sample(np.uint8, (50, 50))).read_bytes())
    bad = bytearray(good)
    for i in range(20, 60):
        bad[i] ^= 0xFF
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(bytes(bad))
    with pytest.raises(IDXError, match=r"^t10k-images-idx3-ubyte\.gz: corrupt gzip stream"):
        read_idx(path)


def test_cut_off_gzip(tmp_path):
    good = gzip.compress(_raw_file(tmp_path, "tmp", _sample(np.uint8, (50, 50))).read_bytes())
    path = tmp_path / "cut.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(IDXError, match=r"^cut\.gz: corrupt gzip stream .*cut off"):
        read_idx(path)


def test_garbage_after_gzip(tmp_path):
    good = gzip.compress(_raw_file(tmp_path, "tmp", _sample(np.uint8, (5, 5))).read_bytes())
    path = tmp_path / "tail.gz"
    path.write_bytes(good + b"garbage")
    with pytest.raises(IDXError, match=r"^tail\.gz: corrupt gzip stream \(7 bytes of garbage"):
        read_idx(path)


def test_idx_error_is_value_error():
    assert issubclass(IDXError, ValueError)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


def test_write_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(TypeError, match="write_idx: IDX has no type for dtype int64"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"write_idx: IDX needs 1 to 255 dimensions, got shape \(\)"):
        write_idx(tmp_path / "x", np.float32(1))
    assert not os.path.exists(tmp_path / "x")


def test_type_table_complete():
    assert sorted(IDX_TYPES) == [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]


# ---- hostile headers and streams: sizes are checked before anything is allocated ---------------

def _peak_bytes(fn):
    """Run ``fn()`` and return (its exception or None, the peak of traced allocations)."""
    tracemalloc.start()
    try:
        fn()
        exc = None
    except Exception as e:  # noqa: BLE001 - returned for the caller to check
        exc = e
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return exc, peak


HUGE = bytes([0, 0, 8, 3]) + np.array([2 ** 22, 2 ** 21, 2 ** 21], ">u4").tobytes()


@pytest.mark.parametrize("payload", [0, 100])
def test_huge_header_does_not_wrap_to_zero(tmp_path, payload):
    # 2^22 * 2^21 * 2^21 = 2^64 wrapped to 0 in int64 and then failed in NumPy's reshape
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(HUGE + bytes(payload))
    exc, peak = _peak_bytes(lambda: read_idx(path))
    assert isinstance(exc, IDXError)
    assert str(exc) == (f"train-images-idx3-ubyte: truncated: header says 4194304x2097152x2097152 = "
                        f"18446744073709551616 bytes of data but the file holds {payload} "
                        f"(file size {16 + payload} bytes)")
    assert peak < 1 << 20


def test_huge_header_in_gzip_is_refused_before_inflating(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(HUGE + bytes(1000)))
    size = path.stat().st_size
    exc, peak = _peak_bytes(lambda: read_idx(path))
    assert isinstance(exc, IDXError)
    assert str(exc) == (f"train-images-idx3-ubyte.gz: truncated: header says 4194304x2097152x2097152 = "
                        f"18446744073709551616 bytes of data but a gzip file of {size} bytes inflates "
                        f"to at most {1032 * size - 16} (file size {size} bytes)")
    assert peak < 1 << 20


def test_gzip_bomb_is_not_inflated(tmp_path):
    # a 1 MB file: the header declares 10 images (7840 bytes), the stream inflates to 200 MB
    z = zlib.compressobj(1, zlib.DEFLATED, 31)
    parts = [z.compress(bytes([0, 0, 8, 3]) + np.array([10, 28, 28], ">u4").tobytes())]
    zeros = bytes(1 << 20)
    parts += [z.compress(zeros) for _ in range(200)]
    parts.append(z.flush())
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"".join(parts))
    size = path.stat().st_size
    assert size < 1 << 20
    exc, peak = _peak_bytes(lambda: read_idx(path))
    assert isinstance(exc, IDXError)
    assert str(exc) == (f"train-images-idx3-ubyte.gz: too long: header says 10x28x28 = 7840 bytes of "
                        f"data but the gzip stream inflates to more (file size {size} bytes)")
    assert peak < 50 << 20


@pytest.mark.parametrize("gz", [False, True])
def test_reading_holds_one_copy_of_the_payload(tmp_path, gz):
    arr = _sample(np.int32, (1000, 1000))  # 4 MB, big-endian on disk
    path = tmp_path / "big"
    write_idx(path, arr, compress=gz)
    out = None

    def read():
        nonlocal out
        out = read_idx(path)
    exc, peak = _peak_bytes(read)
    assert exc is None
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable and out.dtype.isnative
    assert peak < 1.5 * arr.nbytes  # one copy (the old reader held three)


def test_zero_sized_dimension_reads_as_empty_array(tmp_path):
    path = tmp_path / "empty"
    write_idx(path, np.zeros((0, 28, 28), np.uint8))
    out = read_idx(path)
    assert out.shape == (0, 28, 28) and out.dtype == np.uint8


def test_gzip_checksum_is_checked(tmp_path):
    arr = _sample(np.uint8, (20, 20))
    path = tmp_path / "crc.gz"
    write_idx(path, arr, compress=True)
    data = bytearray(path.read_bytes())
    data[-8] ^= 0x01  # the CRC-32 of the inflated data, in the gzip trailer
    path.write_bytes(bytes(data))
    with pytest.raises(IDXError, match=r"^crc\.gz: corrupt gzip stream \(.*incorrect data check\)$"):
        read_idx(path)


def test_gzip_zero_padding_allowed_but_not_garbage_after_it(tmp_path):
    arr = _sample(np.uint8, (6, 5))
    path = tmp_path / "padded.gz"
    write_idx(path, arr, compress=True)
    good = path.read_bytes()
    path.write_bytes(good + bytes(100))
    np.testing.assert_array_equal(read_idx(path), arr)
    path.write_bytes(good + bytes(100) + b"x" + bytes(9))
    with pytest.raises(IDXError, match=r"^padded\.gz: corrupt gzip stream \(110 bytes of garbage "):
        read_idx(path)


def test_gzip_member_cut_inside_the_header_bytes(tmp_path):
    path = tmp_path / "cut-header.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 3, 0, 0])))
    with pytest.raises(IDXError, match=r"^cut-header\.gz: truncated: the header declares 3 dimensions "
                                       r"\(16 header bytes\) but the decompressed file holds 6 bytes$"):
        read_idx(path)
