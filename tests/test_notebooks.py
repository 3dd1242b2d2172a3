"""The course notebooks (notebooks/*.py, jupytext percent format) run top to bottom in a fresh
kernel; their cells assert the slides' numbers, so a wrong result fails here.

Each is converted with jupytext and executed with nbclient (``pip install 'divenet[notebooks]'``).
Times measured on the 2-core project machine are in the table below; those over about a
minute are marked slow (``pytest -m slow``).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SLOW = set()  # names of notebooks that take over about a minute (none so far)


def _params():
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py")):
        marks = [pytest.mark.slow] if path.stem in SLOW else []
        yield pytest.param(path, id=path.stem, marks=marks)


def test_every_lecture_topic_has_a_notebook():
    names = {p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py")}
    for topic in ("gpus", "convolutions", "pooling", "lenet", "alexnet_vgg_nin", "googlenet", "batch_norm",
                  "resnet_densenet", "rnn_lstm_gru", "systems"):
        assert any(topic in n for n in names), topic


@pytest.mark.parametrize("path", _params())
def test_notebook_runs(path, tmp_path):
    nb = jupytext.read(path)
    assert nb.cells and any(c.cell_type == "markdown" for c in nb.cells)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for line in source.splitlines():  # public API only
        if line.startswith(("import divenet", "from divenet")):
            assert not line.split()[1].startswith(("divenet._", "divenet.ops", "divenet.backend")), line
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONHASHSEED="0")
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    old = os.environ.copy()
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
