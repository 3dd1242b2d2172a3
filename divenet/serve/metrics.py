"""The server's Prometheus metrics, in a registry of their own (one per app, so that several apps
in one process, as in the tests, do not share counts):

- ``divenet_requests_total{endpoint, status}``: requests answered, by route template and status
- ``divenet_request_seconds{endpoint}``: latency from the first byte the app sees to the last sent
- ``divenet_batch_size``: samples per batch the engine ran
- ``divenet_inference_seconds``: the engine's time per batch
- ``divenet_queue_depth``: requests waiting for a batch (read at scrape time)
"""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch, queue_depth):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("divenet_requests", "Requests answered, by endpoint and HTTP status",
                                ("endpoint", "status"), registry=r)
        self.latency = Histogram("divenet_request_seconds", "Request latency in seconds", ("endpoint",),
                                 buckets=LATENCY_BUCKETS, registry=r)
        sizes, b = [], 1
        while b < max_batch:
            sizes.append(b)
            b *= 2
        self.batch_size = Histogram("divenet_batch_size", "Samples per batch run by the engine",
                                    buckets=(*sizes, max_batch), registry=r)
        self.inference = Histogram("divenet_inference_seconds", "Engine time per batch in seconds",
                                   buckets=LATENCY_BUCKETS, registry=r)
        depth = Gauge("divenet_queue_depth", "Requests waiting for a batch", registry=r)
        depth.set_function(queue_depth)

    def observe_request(self, endpoint, status, seconds):
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_batch(self, size, seconds):
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def text(self):
        return generate_latest(self.registry)
