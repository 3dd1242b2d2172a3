"""``mpirun -np 2 divenet train lenet --distributed`` against one process: the same metrics
epoch by epoch (global batch 256 either way), resume with another number of ranks, and a rank
killed with SIGKILL: the job ends within a bound naming the rank, and resumes."""
import json
import os
import signal
import subprocess
import time
import uuid

import pytest

from divenet import cli
from divenet.distributed import Communicator
from divenet.distributed.launch import check_batch
from tests.distributed.mpi import MPIRUN, ROOT, divenet_cmd, mpi_env, mpirun, needs_mpi

LIMIT = 1000  # 500 per rank: batches 128, 128, 128, 116 = halves of the one-process 256, 256, 256, 232
ARGS = ["train", "lenet", "--batch-size", "256", "--limit", str(LIMIT), "--quiet", "--optimizer", "adam",
        "--lr", "0.01"]


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    assert cli.main([*ARGS, "--epochs", "2", "--threads", "1", "--out", str(out)]) == 0
    return _metrics(out)


def _distributed(out, epochs, resume=False, n=2):
    argv = [*divenet_cmd(), *ARGS, "--epochs", str(epochs), "--out", str(out), "--distributed"]
    proc, _ = mpirun(n, argv + (["--resume"] if resume else []), timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _assert_same(rows, ref):
    """Losses to float32 rounding (the ranks sum their halves in another order than one
    process sums the whole batch, so the last bits differ); accuracies to one example, which
    such a rounding difference can move across an argmax tie."""
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in ref]
    for r, f in zip(rows, ref):
        for key in ("train_loss", "test_loss"):
            assert r[key] == pytest.approx(f[key], rel=2e-5), (key, r, f)
        for key in ("train_acc", "test_acc"):
            assert abs(r[key] - f[key]) <= 1 / LIMIT, (key, r, f)


@needs_mpi
def test_two_ranks_train_as_one_process_and_resume_with_one(tmp_path, one_process):
    # the weights move (8 steps of sigmoid LeNet only begin to learn): not two flat lines compared
    assert one_process[1]["train_loss"] < one_process[0]["train_loss"] - 0.05
    out = tmp_path / "run"
    proc = _distributed(out, 1)
    assert proc.stdout.count("training lenet") == 1 and proc.stdout.count("epoch 1 ") == 1  # rank 0 only
    _assert_same(_metrics(out), one_process[:1])
    # the 2-rank checkpoint continues in one process (no module. prefix, same order of samples)
    assert cli.main([*ARGS, "--epochs", "2", "--threads", "1", "--out", str(out), "--resume"]) == 0
    _assert_same(_metrics(out), one_process)


def _rank_pid(tag, rank):
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"DIVENET_TEST_TAG={tag}".encode() in env and f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            return int(pid)
    return None


@needs_mpi
def test_a_killed_rank_ends_the_job_naming_it_and_the_run_resumes(tmp_path, one_process):
    out, tag = tmp_path / "run", uuid.uuid4().hex
    env = mpi_env(DIVENET_TEST_TAG=tag)
    argv = [MPIRUN, "-np", "2", "--oversubscribe", *divenet_cmd(), *ARGS, "--epochs", "2", "--out", str(out),
            "--distributed"]
    job = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not (out / "epoch-001.json").exists():  # epoch 2 is under way now
            assert job.poll() is None and time.monotonic() < deadline, job.communicate()
            time.sleep(0.05)
        pid = _rank_pid(tag, 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        stdout, stderr = job.communicate(timeout=60)
        seconds = time.monotonic() - killed
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    assert seconds < 30
    assert "process rank 1" in stderr and "signal 9" in stderr, stderr  # Open MPI's report
    assert not (out / "epoch-002.json").exists()
    _distributed(out, 2, resume=True)
    _assert_same(_metrics(out), one_process)


def test_the_global_batch_must_split_evenly():
    comm = Communicator()
    comm.size = 3
    with pytest.raises(ValueError, match="256 is the global batch, split evenly over the 3 ranks, so it "
                                         "must be divisible by 3"):
        check_batch(256, comm)
    assert check_batch(255, comm) == 85


def test_distributed_refuses_a_language_model(capsys, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("hello world " * 50)
    assert cli.main(["train", "charlm", "--text", str(text), "--distributed", "--out", str(tmp_path / "r")]) == 2
    assert "argument --distributed: trains image models" in capsys.readouterr().err
