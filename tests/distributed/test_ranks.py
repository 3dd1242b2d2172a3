"""Two ranks under mpirun: the communicator, DistributedDataParallel's gradients (against one
process on the whole batch), no_sync, the unfinished-reduction error, SyncBatchNorm (against
PyTorch's BatchNorm2d on the concatenated batch) and the stall watchdog."""
import numpy as np
import pytest

import divenet as dn
from tests.distributed import ranks as R
from tests.distributed.mpi import needs_mpi
from tests.distributed.mpi import ranks as run_ranks

pytestmark = needs_mpi


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    proc, _ = run_ranks(2, "unit", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [dict(np.load(out / f"rank{r}.npz")) for r in range(2)]


def test_communicator(results):
    a = [np.arange(6, dtype=np.float32) + r for r in range(2)]
    for res in results:
        np.testing.assert_array_equal(res["allreduce_sum"], a[0] + a[1])
        np.testing.assert_array_equal(res["allreduce_avg"], (a[0] + a[1]) / 2)
        np.testing.assert_array_equal(res["iallreduce_avg"], (a[0] + a[1]) / 2)
        assert res["iallreduce_done"]
        np.testing.assert_array_equal(res["broadcast"], [2.0, 2.0, 2.0])  # rank 1's
        np.testing.assert_array_equal(res["allgather"], [[0, 0], [1, 10]])
        errors = list(res["errors"])
        assert "op must be 'sum' or 'avg', got 'max'" in errors[0]
        assert errors[1].startswith("TypeError") and "NumPy arrays, got list" in errors[1]
        assert "C-contiguous" in errors[2]


def _reference_grads(model, chunks):
    """Gradients of one process: the mean over ``chunks`` of each chunk's loss gradient
    (the chunks being the ranks' equal shares, this is the full batch's mean-loss gradient)."""
    total = None
    for c in chunks:
        model.zero_grad()
        R.net_loss(model(dn.tensor(c))).backward()
        g = {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}
        total = g if total is None else {n: total[n] + g[n] for n in g}
    return {n: v / len(chunks) for n, v in total.items()}


def _rank0_model(results):
    dn.manual_seed(100)  # rank 0's seed in ranks.py: the weights DDP broadcast
    model = R.Net()
    flat = np.concatenate([p.numpy().ravel() for p in model.parameters()])
    np.testing.assert_array_equal(results[0]["initial"], flat)
    return model


def test_ddp_broadcasts_rank0_weights_and_averages_gradients(results):
    np.testing.assert_array_equal(results[1]["initial"], results[0]["initial"])  # rank 1 had its own
    model = _rank0_model(results)
    x = R.net_data()
    ref = _reference_grads(model, [x[:4], x[4:]])
    for res in results:
        for name, g in ref.items():
            np.testing.assert_allclose(res[f"grad.{name}"], g, rtol=1e-5, atol=1e-7, err_msg=name)
        # never used: no gradient anywhere, so the reduced one is zero
        np.testing.assert_array_equal(res["grad.unused.weight"], 0)
    # with 2 ranks the average is (g0 + g1) * 0.5 in either order: the ranks agree bitwise
    for name in ref:
        np.testing.assert_array_equal(results[0][f"grad.{name}"], results[1][f"grad.{name}"])


def test_ddp_buckets_and_timings(results):
    res = results[0]
    # reverse registration order, 64-byte cap: (unused.bias, unused.weight, b.bias), b.weight, a.bias, a.weight
    np.testing.assert_array_equal(res["bucket_sizes"], [36, 60, 20, 120])
    steps, in_flight, wait, hidden = res["stats"]
    assert steps == 1 and in_flight > 0 and 0 <= wait and hidden <= 1


def test_ddp_no_sync_accumulates_then_reduces(results):
    model = _rank0_model(results)
    x = R.net_data()
    ref = _reference_grads(model, [x[0:2], x[2:4], x[4:6], x[6:8]])  # per micro-batch means
    # the local gradient after no_sync differs between the ranks (no communication)
    assert not np.allclose(results[0]["local_after_no_sync"], results[1]["local_after_no_sync"])
    for res in results:
        for name, g in ref.items():  # sum of the two micro-batches, averaged over 2 ranks
            np.testing.assert_allclose(res[f"accum.{name}"], 2 * g, rtol=1e-5, atol=1e-7, err_msg=name)
    np.testing.assert_array_equal(results[0]["after_step"], results[1]["after_step"])


def test_ddp_unfinished_reduction_is_an_error(results):
    for res in results:
        msg = str(res["unfinished"])
        assert "expected to have finished reduction in the prior iteration" in msg
        assert "q.weight" in msg and "q.bias" in msg and "p.weight" not in msg


def test_sync_batchnorm_matches_batchnorm_over_the_concatenated_batch(results):
    torch = pytest.importorskip("torch")
    x, w, gamma, beta = R.bn_data()
    bn = torch.nn.BatchNorm2d(3, momentum=0.3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gamma))
        bn.bias.copy_(torch.tensor(beta))
    xt = torch.tensor(x, requires_grad=True)
    y = bn(xt)
    (y * torch.tensor(w)).sum().backward()
    lo = 0
    for r, res in enumerate(results):
        hi = lo + R.BN_SPLIT[r]
        np.testing.assert_allclose(res["bn_y"], y.detach().numpy()[lo:hi], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(res["bn_dx"], xt.grad.numpy()[lo:hi], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(res["bn_dw"], bn.weight.grad.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(res["bn_db"], bn.bias.grad.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(res["bn_running"][0], bn.running_mean.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(res["bn_running"][1], bn.running_var.numpy(), rtol=1e-5, atol=1e-6)
        lo = hi


def test_a_stalled_rank_makes_the_others_stop_with_a_message(tmp_path):
    proc, seconds = run_ranks(2, "stall", tmp_path, timeout=60, DIVENET_DIST_TIMEOUT="2")
    assert proc.returncode != 0
    assert "divenet stall: error: rank 0 of 2: allreduce of 16 bytes did not complete " \
           "within 2 s" in proc.stderr, proc.stderr
    assert seconds < 25  # rank 1 sleeps 30 s: the abort ended it
