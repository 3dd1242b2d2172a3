"""The strict simulated device enforces CuPy's rules (divenet/sim.py)."""
from __future__ import annotations

import numpy as np
import pytest

import divenet as dn
from divenet import _native, backend, sim


def _sim(a):
    return backend.transfer(np.asarray(a, dtype=np.float32), backend.SIM)


def test_implicit_conversion_to_numpy_raises_as_cupys_does():
    a = _sim([1, 2, 3])
    with pytest.raises(TypeError, match="implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError, match="implicit conversion"):
        np.testing.assert_allclose(a, [1, 2, 3])
    np.testing.assert_array_equal(a.get(), [1, 2, 3])  # the explicit copy works


@pytest.mark.parametrize("op", [
    lambda a, h: a + h, lambda a, h: h * a, lambda a, h: np.maximum(a, h),
    lambda a, h: sim.xp.concatenate([a, h]), lambda a, h: sim.xp.exp(h),
])
def test_mixing_with_a_numpy_array_raises(op):
    with pytest.raises(TypeError, match="NumPy array"):
        op(_sim([1.0, 2.0]), np.ones(2, np.float32))


def test_scalars_mix_freely_and_results_stay_on_the_device():
    a = _sim([1.0, 2.0])
    for out in (a * 2, 3.0 - a, a / np.float32(2), sim.xp.sum(a), a.sum(), a.max(axis=0), a[0]):
        assert isinstance(out, sim.SimArray)  # scalars come back as 0-d arrays, as CuPy's do
    assert (a * 2).dtype == np.float32


def test_host_syncs_and_uploads_are_counted():
    a = _sim([1.0, 2.0, 3.0])
    with sim.counting() as c:
        b = (a * 2).sum()
    assert c["sync"] == 0
    with sim.counting() as c:
        float(b), b.item(), bool(b > 0), int(b), a.tolist(), a.get()
    assert c["sync"] == 6
    with sim.counting() as c:
        sim.xp.asarray(np.ones(3)), backend.transfer(np.ones(2), backend.SIM)
    assert c["upload"] == 2


def test_advanced_indices_wrap_as_cupys_do():
    a = _sim([10, 20, 30])
    idx = backend.transfer(np.array([0, 3, -4]), backend.SIM)
    np.testing.assert_array_equal(a[idx].get(), [10, 10, 30])  # NumPy would raise IndexError


def test_the_native_kernels_and_blas_shortcuts_are_never_reached():
    a = _sim(np.ones((2, 2, 2, 2)))
    assert not _native.usable(a)
    with pytest.raises(AttributeError, match="ctypes"):
        a.ctypes


def test_device_tensors_on_sim():
    x = dn.tensor([[1.0, 2.0], [3.0, 4.0]], device="sim")
    assert str(x.device) == "sim" and isinstance(x.array, sim.SimArray)
    assert backend.array_module(x.array) is sim.xp
    np.testing.assert_array_equal((x @ x).numpy(), [[7, 10], [15, 22]])
    with pytest.raises(TypeError, match="sim"):
        np.asarray(x)  # as a CUDA tensor refuses


def test_a_planted_numpy_only_call_fails_on_sim_only():
    """What the sim device is for: an op that calls NumPy on its input directly."""
    def planted(xp_array):
        return np.tanh(np.asarray(xp_array))  # NumPy-only: wrong for device arrays

    planted(np.ones(3))  # passes on the CPU
    with pytest.raises(TypeError):
        planted(_sim(np.ones(3)))


# ---- no per-call uploads on a device: constants are typed scalars or cached device arrays -------
def _sim_tensor(shape, seed, requires_grad=True):
    a = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return dn.tensor(a, device="sim", requires_grad=requires_grad)


def _steady(step):
    """``step()`` once (it may build and copy its cached constants), then again counted: a
    second call of the same shapes must neither upload nor sync."""
    step()
    with sim.counting() as c:
        out = step()
    assert c["upload"] == 0, f"{c['upload']} host-to-device uploads per call"
    assert c["sync"] == 0, f"{c['sync']} host syncs per call"
    return out


def test_an_elementwise_chain_uploads_nothing():
    x = _sim_tensor((4, 5), 0)

    def step():
        y = ((x * 2 + 1) / 3 - 0.5) ** 2
        y = (2.0 - y).maximum(0.25).clamp(0, 3) + dn.where(x > 0, x, 0.0)
        y = y.relu().sigmoid().tanh() * np.float64(1.5)
        y.sum().backward()
        return y

    y = _steady(step)
    assert y.dtype == np.float32 and x.grad.dtype == np.float32


def test_conv_batch_norm_relu_pool_forward_and_backward_upload_nothing():
    import divenet.functional as F

    x = _sim_tensor((2, 3, 9, 9), 1)
    w1, b1 = _sim_tensor((4, 3, 3, 3), 2), _sim_tensor((4,), 3)
    gamma, beta = _sim_tensor((4,), 4), _sim_tensor((4,), 5)
    mean, var = dn.zeros(4, device="sim"), dn.ones(4, device="sim")
    w2 = _sim_tensor((5, 4, 3, 3), 6)  # on a 2x2 map: the dense small-map product

    def step():
        y = F.conv2d(x, w1, b1, stride=1, padding=1)
        y = F.batch_norm(y, mean, var, gamma, beta, training=True)
        y = F.max_pool2d(F.relu(y), 3, stride=2, padding=1)
        y = F.avg_pool2d(y, 3, stride=2, padding=1, count_include_pad=False)  # a divisor table
        y = F.conv2d(y[:, :, :2, :2], w2, padding=1)
        y.sum().backward()
        return y

    assert _steady(step).dtype == np.float32


def test_adaptive_pooling_uploads_nothing():
    import divenet.functional as F

    x = _sim_tensor((2, 3, 7, 5), 7)

    def step():
        y = F.adaptive_avg_pool2d(x, (3, 2)) + F.adaptive_max_pool2d(x, (3, 2))
        y.sum().backward()
        return y

    assert _steady(step).dtype == np.float32


def test_index_lists_count_as_uploads_as_cupy_copies_them():
    a = _sim([1.0, 2.0, 3.0])
    with sim.counting() as c:
        a[[0, 2]], a[np.array([1])]
    assert c["upload"] == 2
    with sim.counting() as c:
        sim.xp.ogrid[0:3], sim.xp.arange(3)  # made on the device, as CuPy's are
    assert c["upload"] == 0 and isinstance(sim.xp.ogrid[0:3], sim.SimArray)
