import pytest

from tests.helpers import DEVICES


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def pytest_addoption(parser):
    parser.addoption("--fuzz-cases", type=int, default=None, metavar="N",
                     help="cases per fuzz target in tests/fuzz (default: a CI-sized few hundred in all)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end runs (training to an accuracy); select with -m slow")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU with CuPy")


def pytest_collection_modifyitems(config, items):
    """Slow end-to-end runs take minutes: they run only when selected with ``-m slow``."""
    expr = config.getoption("-m") or ""
    if "slow" in expr and "not slow" not in expr:
        return
    skip = pytest.mark.skip(reason="minutes of training: select with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
