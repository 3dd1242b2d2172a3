"""Devices: parsing, the CPU, the clear error without a GPU, and mixing devices."""
import numpy as np
import pytest

import divenet as dn
from divenet import backend
from tests.helpers import assert_raises_naming

needs_gpu = pytest.mark.skipif(not dn.gpu_available(), reason="needs a CUDA GPU with CuPy")


def test_cpu_device():
    assert dn.cpu() == dn.device("cpu") == dn.device("CPU") == dn.device(None) == dn.device(dn.cpu())
    assert str(dn.cpu()) == "cpu" and repr(dn.device("cpu")) == "cpu"
    assert dn.cpu().xp is np
    assert hash(dn.cpu()) == hash(dn.device("cpu"))
    assert dn.cpu() != "cpu"
    t = dn.zeros(2, device="cpu")
    assert t.device == dn.cpu() and isinstance(t.array, np.ndarray)
    assert backend.array_module(t.array) is np and backend.device_of(t.array) == dn.cpu()


@pytest.mark.skipif(dn.gpu_available(), reason="a GPU is present")
@pytest.mark.parametrize("spec", ["gpu:0", "gpu", "cuda:0"])
def test_gpu_without_gpu_raises_clearly(spec):
    assert not dn.gpu_available()
    msg = assert_raises_naming(RuntimeError, lambda: dn.device(spec), "gpu:0", "CuPy")
    assert "pip install" in msg
    with pytest.raises(RuntimeError, match="CuPy"):
        dn.gpu(0)
    with pytest.raises(RuntimeError, match="CuPy"):
        dn.zeros(2, device=spec)
    with pytest.raises(RuntimeError, match="CuPy"):
        dn.tensor([1.0]).to(spec)


@pytest.mark.parametrize("spec", ["tpu", "gpu:x", "gpu:-1", "", "cpu0", "gpu:1.5"])
def test_bad_device_strings(spec):
    assert_raises_naming(ValueError, lambda: dn.device(spec), repr(spec))


def test_bad_device_types():
    assert_raises_naming(TypeError, lambda: dn.device(3), "int")
    assert_raises_naming(ValueError, lambda: backend.Device("tpu"), "'tpu'")


@pytest.mark.gpu
@needs_gpu
def test_gpu_tensors_and_transfers():
    import cupy

    g = dn.device("gpu:0")
    assert g == dn.gpu(0) and str(g) == "gpu:0" and g.xp is cupy
    x = dn.tensor([1.0, 2.0], requires_grad=True)
    y = x.to("gpu:0")
    assert y.device == g and isinstance(y.array, cupy.ndarray) and backend.device_of(y.array) == g
    (y * y).sum().backward()
    assert isinstance(x.grad, dn.Tensor) and isinstance(x.grad.array, np.ndarray)
    np.testing.assert_allclose(x.grad, [2.0, 4.0])
    np.testing.assert_array_equal(y.numpy(), [1.0, 2.0])
    assert y.cpu().device == dn.cpu()


@pytest.mark.gpu
@needs_gpu
def test_mixing_devices_raises():
    a = dn.zeros(2, 3)
    b = dn.zeros(2, 3, device="gpu:0")
    for fn in (lambda: a + b, lambda: b * a, lambda: dn.cat([a, b]), lambda: a @ b.T):
        assert_raises_naming(ValueError, fn, "cpu", "gpu:0", ".to(")


def test_cuda_namespace_answers_d2ls_try_gpu():
    """D2L's try_gpu: ``torch.device(f'cuda:{i}') if torch.cuda.device_count() >= i + 1 else cpu``."""
    assert dn.cuda.is_available() == dn.gpu_available()
    assert (dn.cuda.device_count() >= 1) == dn.gpu_available()
