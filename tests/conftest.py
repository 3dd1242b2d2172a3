import pytest

from tests.helpers import DEVICES


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end runs (training to an accuracy); select with -m slow")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU with CuPy")
