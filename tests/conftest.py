"""Suite-wide options and hooks: the devices that device-parametrized tests run on, the
markers, and the slow-test skip. docs/testing.md describes them."""
import os
from collections import Counter, defaultdict

import pytest

from tests.helpers import ALL_DEVICES


def pytest_addoption(parser):
    parser.addoption("--fuzz-cases", type=int, default=None, metavar="N",
                     help="cases per fuzz target in tests/fuzz (default: a CI-sized few hundred in all)")
    parser.addoption("--device", action="append", default=None, metavar="NAME",
                     help="run device-parametrized tests only on NAME (cpu, sim, gpu:N); repeatable. "
                          f"Default: DIVENET_TEST_DEVICES (comma-separated), else {','.join(ALL_DEVICES)}")


def _selected_devices(config):
    """The devices asked for (``--device``, else DIVENET_TEST_DEVICES, else all there are),
    each checked: a device that was asked for but is missing is a usage error, not a skip."""
    given = config.getoption("--device")
    source = "--device"
    if not given:
        env = os.environ.get("DIVENET_TEST_DEVICES", "")
        given, source = [d for d in env.split(",") if d.strip()], "DIVENET_TEST_DEVICES"
    if not given:
        return list(ALL_DEVICES)
    import divenet as dn

    out = []
    for name in given:
        name = name.strip().lower()
        if name.startswith("cuda"):
            name = "gpu" + name[4:]
        if name == "gpu":
            name = "gpu:0"
        if name not in ("cpu", "sim") and not name.startswith("gpu:"):
            raise pytest.UsageError(f"{source}: unknown device {name!r}; expected cpu, sim or gpu:N")
        if name.startswith("gpu:"):
            try:
                dn.device(name)
            except (RuntimeError, ValueError) as exc:
                raise pytest.UsageError(f"{source}: {exc}") from None
        if name not in out:
            out.append(name)
    return out


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end runs (training to an accuracy); select with -m slow")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU with CuPy")
    config._divenet_devices = _selected_devices(config)
    config._divenet_device_of = {}  # test id -> device, for the per-device summary


def pytest_generate_tests(metafunc):
    """Every test (or fixture) taking ``device`` runs once per selected device; runs on a GPU
    are marked ``gpu``."""
    if "device" not in metafunc.fixturenames:
        return
    params = [pytest.param(d, id=d, marks=[pytest.mark.gpu] if d.startswith("gpu") else [])
              for d in metafunc.config._divenet_devices]
    metafunc.parametrize("device", params)


def pytest_collection_modifyitems(config, items):
    """Slow end-to-end runs take minutes: they run only when selected with ``-m slow``."""
    device_of = config._divenet_device_of
    for item in items:
        spec = getattr(item, "callspec", None)
        if spec is not None and "device" in spec.params:
            device_of[item.nodeid] = spec.params["device"]
    expr = config.getoption("-m") or ""
    if "slow" in expr and "not slow" not in expr:
        return
    skip = pytest.mark.skip(reason="minutes of training: select with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line: how many device-parametrized tests ran on each device, and how they ended
    (a test counts once, by its worst outcome: a teardown error after a pass is an error)."""
    device_of = config._divenet_device_of
    rank = ("failed", "error", "xpassed", "xfailed", "skipped", "passed")
    final = {}
    for outcome in rank:
        for report in terminalreporter.stats.get(outcome, ()):
            nodeid = getattr(report, "nodeid", None)
            if nodeid in device_of and nodeid not in final:
                final[nodeid] = outcome
    per_device = defaultdict(Counter)
    for nodeid, outcome in final.items():
        per_device[device_of[nodeid]][outcome] += 1
    parts = [f"{dev} " + ", ".join(f"{per_device[dev][k]} {k}" for k in reversed(rank) if per_device[dev][k])
             for dev in config._divenet_devices if per_device[dev]]
    if parts:
        terminalreporter.write_line("devices: " + "; ".join(parts))
