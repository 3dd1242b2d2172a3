"""Fuzzing checkpoints: a real LeNet checkpoint with its weights file (safetensors) and its JSON
damaged, then read by ``load_checkpoint`` and by ``divenet predict``. Each ends in a success or a
one-line divenet error (CheckpointError / ValueError naming the file; for the command a one-line
``divenet predict: error: ...``), never a traceback, a hang or a memory blow-up.

Most safetensors mutations recompute the SHA-256 in the JSON, so that they reach the weights
parser instead of stopping at the hash check; a flipped payload bit then loads as other
weights (tallied as "payload": the hash is what catches it, and it was recomputed).
"""
import hashlib
import json
import shutil

from divenet.io import CheckpointError, load_checkpoint

from .harness import Fuzz, bitflip, cli_outcome, delete, garbage, insert, run_cli, truncate

ST_KINDS = ("truncate", "truncate-unhashed", "bitflip-header", "bitflip-payload", "bitflip-unhashed",
            "insert", "delete", "header-length", "dtype", "shape", "offsets", "drop-tensor",
            "rename-tensor", "extra-tensor", "header-json", "metadata")
JSON_KINDS = ("truncate", "bitflip", "garbage", "field", "delete-field", "toplevel", "weights-name")
HOSTILE = (None, "", "x", -1, 0, 1.5, 10 ** 12, 2 ** 64, True, [], {}, [1, 2], {"a": 1},
           "../../etc/passwd", float("nan"))


def _split(blob):
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def _join(header, payload):
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return len(h).to_bytes(8, "little") + h + payload


def _tensor(rng, header):
    names = sorted(k for k in header if k != "__metadata__")
    return names[int(rng.integers(0, len(names)))]


def _pick(rng, options):
    return options[int(rng.integers(0, len(options)))]


def _mutate_weights(rng, kind, blob):
    """(new blob, whether to recompute the hash, description)."""
    header, payload = _split(blob)
    start = len(blob) - len(payload)
    if kind.startswith("truncate"):
        new, detail = truncate(rng, blob)
        return new, kind == "truncate", detail
    if kind == "bitflip-header":
        new, detail = bitflip(rng, blob, 0, start)
        return new, True, detail
    if kind == "bitflip-payload":
        new, detail = bitflip(rng, blob, start)
        return new, True, detail
    if kind == "bitflip-unhashed":
        new, detail = bitflip(rng, blob)
        return new, False, detail
    if kind == "insert":
        new, detail = insert(rng, blob)
        return new, True, detail
    if kind == "delete":
        new, detail = delete(rng, blob)
        return new, True, detail
    if kind == "header-length":
        n = start - 8
        new = _pick(rng, [0, 1, n - 1, n + 1, len(blob), 2 ** 31, 2 ** 63, 2 ** 64 - 1,
                          int(rng.integers(0, 2 ** 62))])
        return new.to_bytes(8, "little") + blob[8:], True, f"header length {n} -> {new}"
    if kind == "header-json":
        text = _pick(rng, [b"[]", b"{}", b'"x"', b"null", b"5", b'{"__metadata__": 5}',
                           b"[" * 10000, b"{\"a\": " * 5000, garbage(rng)[0]])
        return len(text).to_bytes(8, "little") + text + payload, True, f"header {text[:20]!r}"
    name = _tensor(rng, header)
    t = header[name]
    if kind == "dtype":
        t["dtype"] = _pick(rng, ["F16", "F64", "I64", "I32", "U8", "BOOL", "BF16", "F8_E4M3", "XX", "",
                                 5, None])
        detail = f"{name} dtype -> {t['dtype']!r}"
    elif kind == "shape":
        s = t["shape"]
        t["shape"] = _pick(rng, [[], [0], [-1], [2 ** 40], s + [1], s[::-1], s[:-1], "x", [1.5],
                                 [2 ** 63], [2 ** 64 + 1], [s[0] * 2] + s[1:]])
        detail = f"{name} shape {s} -> {t['shape']!r}"
    elif kind == "offsets":
        b, e = t["data_offsets"]
        t["data_offsets"] = _pick(rng, [[e, b], [b, e + 4], [b, e - 4], [b, len(payload) + 100], [-1, e],
                                        [b], "x", [0, 0], [b + 1, e + 1], [b, 2 ** 64]])
        detail = f"{name} offsets [{b}, {e}] -> {t['data_offsets']!r}"
    elif kind == "drop-tensor":
        del header[name]
        detail = f"{name} dropped"
    elif kind == "rename-tensor":
        new = _pick(rng, [name.split(".", 1)[1], name + "x", "model.", "optim.0.x", ""])
        header[new] = header.pop(name)
        detail = f"{name} renamed {new!r}"
    elif kind == "extra-tensor":
        header["model.extra"] = {"dtype": "F32", "shape": [1], "data_offsets": [len(payload), len(payload) + 4]}
        payload += b"\0\0\0\0"
        detail = "model.extra added"
    else:
        assert kind == "metadata"
        header["__metadata__"] = _pick(rng, [5, {"a": 5}, [], "x", {"a": "b"}])
        detail = f"__metadata__ -> {header['__metadata__']!r}"
    return _join(header, payload), True, detail


def _mutate_meta(rng, kind, text, meta):
    """(new JSON bytes, description)."""
    if kind == "truncate":
        return truncate(rng, text)
    if kind == "bitflip":
        return bitflip(rng, text)
    if kind == "garbage":
        return garbage(rng)
    meta = json.loads(text)
    if kind == "toplevel":
        new = _pick(rng, [[], 5, None, "x", [meta]])
        return json.dumps(new).encode(), f"the whole JSON -> {json.dumps(new)[:30]}"
    key = _pick(rng, sorted(meta))
    if kind == "delete-field":
        del meta[key]
        return json.dumps(meta).encode(), f"{key} deleted"
    if kind == "weights-name":
        key = "weights"
        meta[key] = _pick(rng, ["../x.safetensors", "", "none.safetensors", "/etc/passwd", "epoch-001.json",
                                ".", 5, None, "\0"])
    else:  # any field, or one that build_model reads when present
        key = _pick(rng, sorted(meta) + ["model_kwargs"])
        meta[key] = _pick(rng, HOSTILE)
    return json.dumps(meta).encode(), f"{key} -> {meta[key]!r}"


def test_checkpoint_fuzz(tmp_path, fuzz_cases, lenet_checkpoint, good_png):
    src = lenet_checkpoint
    weights_name = json.loads(src.read_text())["weights"]
    blob0, text0 = (src.parent / weights_name).read_bytes(), src.read_bytes()
    # the unmutated checkpoint loads and predicts: the baseline every case compares with
    load_checkpoint(src)
    rc, base_out, err = run_cli(["predict", str(src), str(good_png)])
    assert rc == 0 and base_out.startswith(str(good_png)), err

    library = Fuzz("load_checkpoint", 2, time_limit=5.0, mem_limit=64 << 20)
    command = Fuzz("divenet predict with the damaged checkpoint", 2, time_limit=10.0, mem_limit=256 << 20)
    with library.session():
        for case in range(fuzz_cases(100)):
            rng = library.rng(case)
            d = tmp_path / f"case{case}"
            d.mkdir()
            ckpt, weights = d / src.name, d / weights_name
            blob, meta_text = blob0, text0
            if rng.random() < 0.6:
                kind = str(_pick(rng, ST_KINDS))
                blob, rehash, detail = _mutate_weights(rng, kind, blob0)
                if rehash:
                    meta = json.loads(text0)
                    meta["weights_sha256"] = hashlib.sha256(blob).hexdigest()
                    meta_text = json.dumps(meta, indent=1).encode()
                label = f"weights/{kind}"
            else:
                kind = str(_pick(rng, JSON_KINDS))
                meta_text, detail = _mutate_meta(rng, kind, text0, json.loads(text0))
                label = f"json/{kind}"
            weights.write_bytes(blob)
            ckpt.write_bytes(meta_text)
            names = [ckpt.name, weights.name, str(d)]

            run = library.call(lambda: load_checkpoint(ckpt))
            outcome = library.bounds_broken(run)
            if outcome is None:
                if run.exc is None:
                    outcome = "payload" if kind == "bitflip-payload" else (
                        "unchanged" if (blob, meta_text) == (blob0, text0) else "accepted")
                else:
                    outcome = library.error_outcome(run.exc, (CheckpointError, ValueError), names)
            library.record(case, label, outcome, detail, run)

            run = command.call(lambda: run_cli(["predict", str(ckpt), str(good_png)]))
            outcome = command.bounds_broken(run)
            if outcome is None and run.exc is not None:
                outcome = "crash"
            elif outcome is None:
                rc, out, err = run.value
                outcome = cli_outcome(rc, out, err, "predict", [str(good_png)])
                if outcome == "ok":
                    outcome = "unchanged" if out == base_out else (
                        "payload" if kind == "bitflip-payload" else "accepted")
                elif outcome != "clear-error":
                    run.exc = RuntimeError(f"exit {rc}; stderr: {err.strip()[:300]!r}")
            command.record(case, label, outcome, detail, run)
            shutil.rmtree(d)
    failures = []
    for fuzz in (library, command):
        try:
            fuzz.check("tests/fuzz/test_checkpoint_fuzz.py")
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "\n\n".join(failures)
