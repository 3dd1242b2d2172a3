"""The command line as a user drives it: train, resume, evaluate, predict, and the errors."""
import gzip
import json
import shutil
from pathlib import Path

import pytest

from divenet.cli import main

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_data = pytest.mark.skipif(not FMNIST.exists(), reason="apt-get install dataset-fashion-mnist")


def _rows(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def _train(out, *extra):
    return main(["train", "lenet", "--limit", "1024", "--batch-size", "128", "--quiet", "--out", str(out), *extra])


@needs_data
def test_train_writes_metrics_checkpoint_and_curves(tmp_path, capsys):
    assert _train(tmp_path / "run", "--epochs", "2") == 0
    rows = _rows(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("epoch", "train_loss", "train_acc", "test_acc", "epoch_seconds", "examples_per_sec"):
        assert key in rows[0]
    assert rows[1]["train_loss"] < rows[0]["train_loss"] or rows[1]["train_acc"] > rows[0]["train_acc"]
    assert (tmp_path / "run" / "epoch-002.json").exists()
    assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "epoch 2" in out and "test_acc" in out


@needs_data
def test_resume_ends_exactly_where_an_uninterrupted_run_ends(tmp_path):
    assert _train(tmp_path / "full", "--epochs", "3") == 0
    assert _train(tmp_path / "split", "--epochs", "1") == 0
    assert _train(tmp_path / "split", "--epochs", "3", "--resume") == 0
    full, split = _rows(tmp_path / "full"), _rows(tmp_path / "split")
    assert [r["epoch"] for r in split] == [1, 2, 3]
    for a, b in zip(full, split):
        for key in ("train_loss", "train_acc", "test_acc", "test_loss"):
            assert a[key] == b[key], (a["epoch"], key)


@needs_data
def test_evaluate_and_predict(tmp_path, capsys):
    from PIL import Image

    from divenet.data import FashionMNIST

    assert _train(tmp_path / "run", "--epochs", "1") == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--limit", "1024"]) == 0
    result = json.loads(capsys.readouterr().out)
    # the checkpoint scores exactly what the run measured after its last epoch
    assert result["test_acc"] == pytest.approx(_rows(tmp_path / "run")[-1]["test_acc"], abs=1e-6)
    assert result["dataset"] == "fashion-mnist"
    images = FashionMNIST(train=False).images
    paths = []
    for i in range(2):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(images[i]).save(p)
        paths.append(str(p))
    assert main(["predict", str(tmp_path / "run" / "epoch-001.json"), *paths, "--top", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    classes = set(FashionMNIST(train=False).classes)
    for line, path in zip(lines, paths):
        name, rest = line.split(": ", 1)
        assert name == path
        first = rest.split(", ")[0].rsplit(" ", 1)
        assert first[0] in classes and 0 <= float(first[1]) <= 1


def _write_truncated_copy(dst):
    dst.mkdir()
    for f in FMNIST.iterdir():
        shutil.copy(f, dst / f.name)
    raw = gzip.decompress((FMNIST / "train-images-idx3-ubyte.gz").read_bytes())
    (dst / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))


@needs_data
def test_truncated_idx_file_is_one_clear_error(tmp_path, monkeypatch, capsys):
    from divenet.data import datasets

    datasets.clear_cache()
    _write_truncated_copy(tmp_path / "fashion-mnist")
    monkeypatch.setenv("DIVENET_DATA", str(tmp_path))
    assert _train(tmp_path / "run", "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz" in err and "truncated" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "epoch-001.json").exists()
    datasets.clear_cache()


def test_missing_dataset_says_where_to_put_the_files(tmp_path, monkeypatch, capsys):
    from divenet.data import datasets

    monkeypatch.setattr(datasets, "search_dirs", lambda name, root=None: [("test", str(tmp_path / "nowhere"))])
    datasets.clear_cache()
    assert _train(tmp_path / "run", "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere") in err and "train-images-idx3-ubyte" in err
    datasets.clear_cache()


@needs_data
def test_checkpoint_of_another_model_is_refused_and_left_intact(tmp_path, capsys):
    assert _train(tmp_path / "run", "--epochs", "1") == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    capsys.readouterr()
    assert main(["train", "lenet-bn", "--out", str(tmp_path / "run"), "--resume", "--quiet"]) == 2
    assert "holds a checkpoint of 'lenet'" in capsys.readouterr().err
    meta_path = tmp_path / "run" / "epoch-001.json"
    meta = json.loads(meta_path.read_text())
    meta["model"] = "lenet-bn"
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "epoch-001.json").write_text(json.dumps(meta))
    shutil.copy(tmp_path / "run" / "epoch-001.safetensors", forged)
    assert main(["evaluate", str(forged)]) == 2
    err = capsys.readouterr().err
    assert "do not fit model 'lenet-bn'" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


@needs_data
def test_wrong_input_size_is_a_clear_error(tmp_path, capsys):
    assert _train(tmp_path / "run", "--epochs", "1", "--resize", "20") == 2
    err = capsys.readouterr().err
    assert "Linear" in err and "400" in err
    assert not (tmp_path / "run" / "epoch-001.json").exists()


def test_datasets_command_lists_locations(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "Fashion-MNIST" in out and "MNIST" in out


def test_starting_over_an_existing_run_is_refused(tmp_path, capsys, monkeypatch):
    from divenet.cli import build_model
    from divenet.data import datasets
    from divenet.io import save_checkpoint

    meta = {"model": "lenet", "kind": "image", "num_classes": 10, "in_channels": 1, "input_size": 28}
    save_checkpoint(tmp_path / "run", 1, build_model(meta), None, meta)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    # refused before any data set is read
    monkeypatch.setattr(datasets, "search_dirs", lambda *a, **k: pytest.fail("loaded a data set"))
    assert _train(tmp_path / "run", "--epochs", "1") == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
