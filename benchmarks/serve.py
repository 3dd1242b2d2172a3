"""Load test of ``divenet serve``: throughput and p50/p99 latency at several concurrencies, with
batching (max-batch 32) and without (max-batch 1), for both engines, on an untrained resnet18 at
3x96x96. Each server runs in a subprocess on a free port of 127.0.0.1 and is stopped by
SIGTERM after its cases; traffic is bounded by a request count and a time cap per case.

    python -m benchmarks.serve [--requests 256] [--time-cap 60] [--concurrency 1,8,32]
                               [--engines divenet,onnxruntime] [--batches 1,32] [--json PATH]
                               [--payload binary|json]

The requests carry the image as raw FP32 bytes (KServe's binary tensor extension) by default;
``--payload json`` sends it as a JSON list of 27,648 numbers instead, whose parsing then costs
more than the inference (see docs/serving.md).

Targets it reports: batching gives >= 2.5x the throughput of batch-1 serving at concurrency 32;
p99 <= max-delay + 3 x one batch's compute time (the engine's mean time per batch in that case,
read from the server's divenet_inference_seconds metric).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def make_checkpoint(directory, model, side, channels):
    from divenet.cli import build_model
    from divenet.io import save_checkpoint

    meta = {"model": model, "kind": "image", "num_classes": 10, "in_channels": channels, "input_size": side,
            "classes": [f"class{i}" for i in range(10)]}
    return save_checkpoint(Path(directory) / "run", 1, build_model(meta), None, meta)


class Server:
    """``divenet serve`` in a subprocess; ``url`` once it is ready."""

    def __init__(self, ckpt, engine, max_batch, max_delay_ms):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "divenet", "serve", str(ckpt), "--engine", engine, "--port", "0",
             "--max-batch", str(max_batch), "--max-delay-ms", str(max_delay_ms), "--max-queue", "1024",
             "--timeout-s", "300"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        first = self.proc.stdout.readline()
        if " on http://" not in first:
            self.proc.kill()
            raise RuntimeError(f"the server did not start: {first}{self.proc.stderr.read()}")
        self.url = first.split(" on ")[1].split(";")[0]
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.url + "/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not become ready in 120 s")
            time.sleep(0.1)

    def metric(self, name):
        import httpx

        for line in httpx.get(self.url + "/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split(" ")[1])
        return 0.0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.stdout.read().strip().splitlines()[-1:]


class _Client:
    """One keep-alive connection with TCP_NODELAY, on the standard library: the load generator
    shares the server's cores, and httpx's 32 client threads took 0.8 of this machine's 2 cores
    at concurrency 32 (measured), slowing the server's batches 1.8x."""

    def __init__(self, url):
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=300)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self, path, body, headers):
        """(status, body bytes) of one POST."""
        self.conn.request("POST", path, body=body, headers=headers)
        r = self.conn.getresponse()
        return r.status, r.read()

    def close(self):
        self.conn.close()


def compute_ceiling(ckpt, engine, shape, max_batch, rounds=5):
    """The most that batching can give an engine, measured in this process without a server:
    its time per sample at batch 1 over its time per sample at batch ``max_batch`` (medians of
    alternating rounds). A server's batched throughput can beat batch-1 serving by more only if
    batch-1 serving wastes time outside the engine."""
    from divenet.cli import _load_model
    from divenet.serve import open_engine

    e = open_engine(ckpt, engine, load_checkpoint=lambda p: _load_model(p, "cpu", False))
    rng = np.random.default_rng(1)
    one, many = rng.random((1, *shape[1:]), dtype=np.float32), rng.random((max_batch, *shape[1:]), dtype=np.float32)
    e.infer(one), e.infer(many)  # warm-up
    t1, tn = [], []
    for _ in range(rounds):
        for x, times in ((one, t1), (many, tn)):
            t0 = time.perf_counter()
            e.infer(x)
            times.append(time.perf_counter() - t0)
    per1, pern = statistics.median(t1), statistics.median(tn) / max_batch
    return {"engine": engine, "batch1_ms": per1 * 1e3, f"batch{max_batch}_ms_per_sample": pern * 1e3,
            "ceiling": per1 / pern}


def request_body(x, name, payload):
    """(content, headers) of one infer request for input ``name``."""
    tensor = {"name": name, "shape": list(x.shape), "datatype": "FP32"}
    if payload == "json":
        return json.dumps({"inputs": [{**tensor, "data": x.ravel().tolist()}]}).encode(), {
            "content-type": "application/json"}
    raw = np.ascontiguousarray(x, "<f4").tobytes()
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return header + raw, {"content-type": "application/octet-stream",
                          "inference-header-content-length": str(len(header))}


def run_case(server, path, request, concurrency, requests, time_cap):
    """``requests`` POSTs of ``request`` (content, headers) from ``concurrency`` threads (stopping
    at ``time_cap`` s); returns throughput, latency percentiles and the engine's batches during
    the case."""
    body, headers = request
    count = [0]
    lock = threading.Lock()
    latencies, errors = [], []
    batches0, infer0 = server.metric("divenet_inference_seconds_count"), server.metric("divenet_inference_seconds_sum")
    samples0 = server.metric("divenet_batch_size_sum")
    stop_at = time.monotonic() + time_cap

    def worker():
        c = _Client(server.url)
        try:
            while time.monotonic() < stop_at:
                with lock:
                    if count[0] >= requests:
                        return
                    count[0] += 1
                t0 = time.perf_counter()
                status, reply = c.post(path, body, headers)
                dt = time.perf_counter() - t0
                with lock:
                    (latencies if status == 200 else errors).append(dt if status == 200 else reply.decode(errors="replace"))
        finally:
            c.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    batches = server.metric("divenet_inference_seconds_count") - batches0
    infer_s = server.metric("divenet_inference_seconds_sum") - infer0
    samples = server.metric("divenet_batch_size_sum") - samples0
    lat = sorted(latencies)

    def pct(q):
        return lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))] if lat else float("nan")

    return {"concurrency": concurrency, "requests": len(lat), "errors": len(errors), "seconds": elapsed,
            "throughput": len(lat) / elapsed if elapsed else float("nan"), "p50_ms": pct(0.50) * 1e3,
            "p99_ms": pct(0.99) * 1e3, "mean_ms": statistics.fmean(lat) * 1e3 if lat else float("nan"),
            "batches": int(batches), "mean_batch": samples / batches if batches else float("nan"),
            "batch_compute_ms": infer_s / batches * 1e3 if batches else float("nan"),
            "first_error": errors[0][:200] if errors else None}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=256, help="requests per case (default 256)")
    ap.add_argument("--time-cap", type=float, default=60.0, help="seconds per case at most (default 60)")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--engines", default="divenet,onnxruntime")
    ap.add_argument("--batches", default="1,32", help="max-batch values (default 1,32)")
    ap.add_argument("--max-delay-ms", type=float, default=5.0)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--payload", choices=("binary", "json"), default="binary",
                    help="the image as raw FP32 bytes (default) or as a JSON list")
    ap.add_argument("--json", default="benchmarks/serve.json")
    args = ap.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    shape = (1, args.channels, args.size, args.size)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    rows = []
    print(f"divenet serve load test: {args.model} {args.channels}x{args.size}x{args.size}, {args.requests} "
          f"requests per case (cap {args.time_cap:g} s), max delay {args.max_delay_ms:g} ms, {args.payload} "
          f"payload, {os.cpu_count()} CPUs")
    print(f"  {'engine':<12} {'batch':>5} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'batches':>7} {'mean bs':>7} {'batch ms':>8} {'err':>4}")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(tmp, args.model, args.size, args.channels)
        for engine in args.engines.split(","):
            for max_batch in batches:
                server = Server(ckpt, engine, max_batch, args.max_delay_ms)
                try:
                    import httpx

                    # the ONNX input's name is the exporter's: ask the metadata
                    name = httpx.get(f"{server.url}/v2/models/{args.model}").json()["inputs"][0]["name"]
                    case_body = request_body(x, name, args.payload)
                    path = f"/v2/models/{args.model}/infer"
                    run_case(server, path, case_body, 1, 2, args.time_cap)  # warm-up
                    for c in concurrencies:
                        row = {"engine": engine, "max_batch": max_batch, "max_delay_ms": args.max_delay_ms,
                               **run_case(server, path, case_body, c, args.requests, args.time_cap)}
                        rows.append(row)
                        print(f"  {engine:<12} {max_batch:>5} {c:>4} {row['throughput']:>8.2f} {row['p50_ms']:>8.1f} "
                              f"{row['p99_ms']:>8.1f} {row['batches']:>7} {row['mean_batch']:>7.1f} "
                              f"{row['batch_compute_ms']:>8.1f} {row['errors']:>4}", flush=True)
                finally:
                    server.stop()
    print("compute ceiling (the engine alone, no server): time per sample at batch 1 / at batch "
          f"{max(batches)}")
    ceilings = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(tmp, args.model, args.size, args.channels)
        for engine in args.engines.split(","):
            ceilings.append(compute_ceiling(ckpt, engine, shape, max(batches)))
            c = ceilings[-1]
            print(f"  {engine:<12} {c['batch1_ms']:8.1f} ms / {c[f'batch{max(batches)}_ms_per_sample']:6.1f} ms "
                  f"per sample = {c['ceiling']:.2f}x", flush=True)
    targets = []
    for engine in args.engines.split(","):
        def find(b, c):
            return next((r for r in rows if r["engine"] == engine and r["max_batch"] == b and r["concurrency"] == c), None)

        top = max(concurrencies)
        one, many = find(1, top), find(max(batches), top)
        if one and many and one["throughput"]:
            speedup = many["throughput"] / one["throughput"]
            targets.append({"engine": engine, "target": f"batching >= 2.5x batch-1 throughput at concurrency {top}",
                            "value": round(speedup, 2), "met": speedup >= 2.5})
        for r in rows:
            if r["engine"] == engine and r["max_batch"] == max(batches) and r["max_batch"] > 1:
                bound = r["max_delay_ms"] + 3 * r["batch_compute_ms"]
                targets.append({"engine": engine, "target": f"p99 <= max-delay + 3 x batch compute at "
                                f"concurrency {r['concurrency']}", "value": round(r["p99_ms"], 1),
                                "bound": round(bound, 1), "met": r["p99_ms"] <= bound})
    print("targets:")
    for t in targets:
        print(f"  {t['engine']:<12} {t['target']:<58} {t['value']:>8}"
              + (f" <= {t['bound']}" if "bound" in t else "") + ("  met" if t["met"] else "  NOT met"))
    try:
        from .common import environment
    except ImportError:  # run as python benchmarks/serve.py
        from common import environment

    Path(args.json).write_text(json.dumps({"environment": environment(), "model": args.model,
                                           "input": list(shape[1:]), "payload": args.payload, "rows": rows,
                                           "compute_ceiling": ceilings, "targets": targets}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
