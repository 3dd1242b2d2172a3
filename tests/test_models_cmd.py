"""``divenet models``: every registered model with the figures ``divenet summary`` gives."""
from __future__ import annotations

import json
import re

import pytest

from divenet.cli import main
from divenet.models import get_spec, list_models
from divenet.models.registry import _first_sentence


def _summary_totals(capsys, name):
    assert main(["summary", name]) == 0
    text = capsys.readouterr().out
    params = int(re.search(r"Total params: ([\d,]+)", text).group(1).replace(",", ""))
    macs = int(re.search(r"Total MACs:   ([\d,]+)", text).group(1).replace(",", ""))
    shape = re.search(r"on input \(([\d, ]+)\)", text).group(1)
    return params, macs, [int(s) for s in shape.split(",") if s.strip()]


@pytest.fixture(scope="module")
def listed():
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["models", "--json"]) == 0
    return json.loads(buf.getvalue())


def test_every_model_is_listed_with_its_recipe(listed):
    assert [r["name"] for r in listed] == list_models()
    for r in listed:
        recipe = get_spec(r["name"]).recipe
        assert (r["epochs"], r["lr"], r["batch_size"], r["optimizer"], r["resize"]) == (
            recipe.epochs, recipe.lr, recipe.batch_size, recipe.optimizer, recipe.resize)
        assert "\n" not in r["description"]


def test_figures_equal_divenet_summary(listed, capsys):
    for r in listed:
        params, macs, shape = _summary_totals(capsys, r["name"])
        assert (r["params"], r["macs"], r["input"]) == (params, macs, shape), r["name"]


def test_input_is_the_training_size(listed):
    rows = {r["name"]: r for r in listed}
    assert rows["alexnet"]["input"] == [1, 224, 224] and rows["googlenet"]["input"] == [1, 96, 96]
    assert rows["lenet"]["input"] == [1, 28, 28] and rows["charlm"]["input"] == [64]
    assert rows["lenet"]["params"] == 61706  # D2L's LeNet on 28x28 (6 and 16 channels, 120-84-10)


def test_descriptions_come_from_docstrings():
    assert get_spec("alexnet").description.startswith("D2L's AlexNet: five convolutions")
    assert get_spec("googlenet").description.startswith("D2L's GoogLeNet: five stages (b1 .. b5) with nine")
    assert _first_sentence("One ``x``.  Two.\n  Three") == "One x."
    assert _first_sentence("a 16 ... 128 net. More") == "a 16 ... 128 net."
    assert _first_sentence(None) == ""


def test_table(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["model", "input", "params", "MACs"]
    assert len(lines) == 1 + len(list_models())
    vgg = next(line for line in lines if line.startswith("vgg16 "))
    assert "1x224x224" in vgg and "134.300M" in vgg and "15.408G" in vgg
    assert all(len(line) < 200 for line in lines)


def test_models_takes_no_model_argument(capsys):
    assert main(["models", "lenet"]) == 2
    assert "unrecognized arguments: lenet" in capsys.readouterr().err
