"""`divenet serve` on the command line: every option refuses nonsense with one line naming it
(exit 2, before anything loads), as do unusable model files and a port in use; and a server in
a subprocess stopped by SIGTERM under load answers every request it accepted, exactly once."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from divenet.cli import build_model, main
from divenet.io import save_checkpoint

from .helpers import LENET, client, infer_body


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("run"), 1, build_model(LENET), None, LENET)


def _error_line(capsys):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


NONSENSE = [
    (["--engine", "tensorrt"], "argument --engine: invalid choice: 'tensorrt'"),
    (["--host", ""], "argument --host: must be a host name or address"),
    (["--host", "local host"], "argument --host: must be a host name or address"),
    *[(["--port", v], f"argument --port: must be a port number from 0 to 65535 (0: any free port), got {v}")
      for v in ("-1", "65536", "80.5", "http")],
    *[(["--max-batch", v], f"argument --max-batch: must be a positive integer, got {v}") for v in ("0", "-4", "2.5")],
    *[(["--max-delay-ms", v], f"argument --max-delay-ms: must be a finite number >= 0, got {v}")
      for v in ("-1", "nan", "inf", "soon")],
    *[(["--max-queue", v], f"argument --max-queue: must be a positive integer, got {v}") for v in ("0", "many")],
    *[(["--timeout-s", v], f"argument --timeout-s: must be a positive finite number, got {v}")
      for v in ("0", "-3", "inf")],
    *[(["--max-body-mb", v], f"argument --max-body-mb: must be a positive finite number, got {v}")
      for v in ("0", "-1", "nan")],
    *[(["--max-pixels", v], f"argument --max-pixels: must be a positive integer, got {v}") for v in ("0", "1e6")],
    *[([f"--name={v}"], "argument --name: must be letters, digits, '_', '.' and '-' (one URL path segment)")
      for v in ("a/b", "", "-x", "name with space", "x?y")],
    (["--device", "tpu"], "argument --device: unknown device 'tpu'"),
]


@pytest.mark.parametrize("extra,message", NONSENSE)
def test_each_option_refuses_nonsense(capsys, ckpt, extra, message):
    assert main(["serve", str(ckpt), *extra]) == 2
    line = _error_line(capsys)
    assert line.startswith("divenet serve: error: ") and message in line, line


def test_model_files_that_cannot_be_served(capsys, tmp_path, ckpt):
    assert main(["serve", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: no such file or directory" in _error_line(capsys)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\0junk")
    assert main(["serve", str(junk)]) == 2
    assert "junk.onnx: not a loadable ONNX model" in _error_line(capsys)
    assert main(["serve", str(junk), "--engine", "divenet"]) == 2
    assert "the divenet engine serves checkpoints" in _error_line(capsys)
    text = tmp_path / "notes.json"
    text.write_text("{}")
    assert main(["serve", str(text)]) == 2
    assert "notes.json" in _error_line(capsys)


def test_a_port_in_use_is_one_line(capsys, ckpt):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", str(ckpt), "--port", str(port)]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"divenet serve: error: cannot listen on 127.0.0.1:{port}: "), line


def test_sigterm_under_load_answers_every_accepted_request_once(ckpt, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "divenet", "serve", str(ckpt), "--port", "0", "--max-batch", "8",
                             "--max-delay-ms", "40"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        first = proc.stdout.readline()
        assert " on http://127.0.0.1:" in first, first + proc.stderr.read()
        url = first.split(" on ")[1].split(";")[0]
        received, failures, lock = [], [], threading.Lock()
        with client(url) as c:
            deadline = time.monotonic() + 30
            while c.get("/v2/health/ready").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            received.append(("ready", None))
        x = np.zeros((1, 1, 28, 28), np.float32)

        def load(worker):
            with client(url) as c:
                for i in range(10_000):
                    rid = f"{worker}-{i}"
                    try:
                        r = c.post("/v2/models/lenet/infer", json=infer_body(x, id=rid))
                    except httpx.TransportError:  # refused or closed unanswered: not accepted
                        return
                    with lock:
                        received.append((rid, r))

        threads = [threading.Thread(target=load, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        while len(received) < 60:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    last = out.strip().splitlines()[-1]
    answered, accepted = (int(w) for w in last.split("answered ")[1].split(" requests")[0].split(" of "))
    replies = [(rid, r) for rid, r in received if r is not None]
    assert all(r.status_code == 200 for _, r in replies), [r.text for _, r in replies if r.status_code != 200][:3]
    assert all(r.json()["id"] == rid for rid, r in replies)
    assert len({rid for rid, _ in replies}) == len(replies)  # each answered once
    assert answered == accepted == len(received), (last, len(received))
    assert len(received) > 60  # the load went on until the stop
