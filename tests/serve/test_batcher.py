"""The dynamic batcher on its own: batches fill up to max_batch or wait max_delay, whichever comes
first; each request gets its own rows; a full queue, a closed batcher, cancelled requests and a
failing engine."""
import threading
import time

import numpy as np
import pytest

from divenet.serve import Batcher, Closed, QueueFull


class Recorder:
    """infer = rows * 10; records batch sizes; waits on ``gate`` while it is cleared."""

    def __init__(self):
        self.sizes, self.gate = [], threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, batch):
        self.sizes.append(len(batch))
        self.started.set()
        assert self.gate.wait(10)
        return batch * 10


def rows(i, n=1):
    return np.full((n, 2), i, np.float32)


def test_each_request_gets_its_own_rows_in_one_batch():
    rec = Recorder()
    b = Batcher(rec, max_batch=32, max_delay_s=0.5)
    futures = [b.submit(rows(i, n=1 + i % 3)) for i in range(10)]  # 19 rows, within one batch
    for i, f in enumerate(futures):
        np.testing.assert_array_equal(f.result(5), rows(i, n=1 + i % 3) * 10)
    b.close()
    assert rec.sizes == [19]


def test_a_full_batch_runs_before_the_delay():
    rec = Recorder()
    b = Batcher(rec, max_batch=4, max_delay_s=30)
    t0 = time.monotonic()
    futures = [b.submit(rows(i)) for i in range(4)]
    for f in futures:
        f.result(5)
    assert time.monotonic() - t0 < 5  # not the 30 s delay
    assert rec.sizes == [4]
    b.close()


def test_a_lone_request_waits_max_delay_then_runs_alone():
    rec = Recorder()
    b = Batcher(rec, max_batch=8, max_delay_s=0.2)
    t0 = time.monotonic()
    b.submit(rows(1)).result(5)
    assert time.monotonic() - t0 >= 0.2
    assert rec.sizes == [1]
    b.close()


def test_batches_never_exceed_max_batch_and_keep_requests_whole():
    rec = Recorder()
    rec.gate.clear()
    b = Batcher(rec, max_batch=5, max_delay_s=0)
    first = b.submit(rows(0))
    assert rec.started.wait(5)  # the worker is busy: the rest queue up
    futures = [b.submit(rows(i, n=2)) for i in range(1, 6)]  # 10 rows: batches of 4, 4, 2
    assert b.depth == 5
    rec.gate.set()
    for i, f in enumerate(futures, 1):
        np.testing.assert_array_equal(f.result(5), rows(i, n=2) * 10)
    first.result(5)
    b.close()
    assert rec.sizes == [1, 4, 4, 2]


def test_full_queue_refuses_and_closed_batcher_refuses():
    rec = Recorder()
    rec.gate.clear()
    b = Batcher(rec, max_batch=1, max_delay_s=0, max_queue=2)
    running = b.submit(rows(0))
    assert rec.started.wait(5)
    queued = [b.submit(rows(1)), b.submit(rows(2))]
    with pytest.raises(QueueFull, match="2 requests waiting"):
        b.submit(rows(3))
    with pytest.raises(ValueError, match="a request of 2 samples; the server batches 1 to 1"):
        b.submit(rows(4, n=2))
    rec.gate.set()
    closer = threading.Thread(target=b.close)
    closer.start()
    closer.join(10)
    # close answered everything already queued
    assert [f.result(0) for f in [running, *queued]]
    with pytest.raises(Closed):
        b.submit(rows(5))


def test_cancelled_request_is_not_computed():
    rec = Recorder()
    rec.gate.clear()
    b = Batcher(rec, max_batch=4, max_delay_s=0)
    b.submit(rows(0))
    assert rec.started.wait(5)
    dropped, kept = b.submit(rows(1)), b.submit(rows(2))
    assert dropped.cancel()  # its caller timed out while it was queued
    rec.gate.set()
    np.testing.assert_array_equal(kept.result(5), rows(2) * 10)
    b.close()
    assert rec.sizes == [1, 1]


def test_engine_error_reaches_every_request_of_the_batch_and_the_worker_goes_on():
    calls = []

    def infer(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return batch

    b = Batcher(infer, max_batch=4, max_delay_s=0.2)
    failed = [b.submit(rows(i)) for i in range(2)]
    for f in failed:
        with pytest.raises(RuntimeError, match="boom"):
            f.result(5)
    np.testing.assert_array_equal(b.submit(rows(7)).result(5), rows(7))
    b.close()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch and max_queue must be >= 1"):
        Batcher(lambda x: x, max_batch=0)
