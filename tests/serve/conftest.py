"""Fixtures of the server tests: an untrained LeNet engine, and servers stopped after each test."""
from __future__ import annotations

import pytest

pytest.importorskip("starlette", reason="pip install 'divenet[serve]'")
pytest.importorskip("httpx", reason="pip install httpx")

from divenet.cli import build_model  # noqa: E402
from divenet.serve import DivenetEngine  # noqa: E402
from divenet.serve.app import create_app  # noqa: E402

from .helpers import LENET, Served  # noqa: E402


@pytest.fixture(scope="session")
def lenet():
    """(engine, model): an untrained LeNet with class names, and the model to compare with."""
    import divenet as dn

    dn.manual_seed(0)
    model = build_model(LENET)
    return DivenetEngine(model, LENET), model


@pytest.fixture
def serve():
    """serve(engine, **create_app options) -> a running Served; all are stopped after the test."""
    running = []

    def start(engine, **options):
        s = Served(create_app(engine, **options))
        running.append(s)
        return s

    yield start
    for s in running:
        s.stop()


