"""Tensor.register_post_accumulate_grad_hook (PyTorch's), which DistributedDataParallel uses."""
import numpy as np
import pytest

import divenet as dn


def test_hook_runs_after_each_accumulation_and_can_be_removed():
    w = dn.tensor(np.ones(3, np.float32), requires_grad=True)
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    ((w * 2).sum() + (w * 3).sum()).backward()  # w is used twice: two accumulations
    assert len(seen) == 2 and sorted(float(s[0]) for s in seen) in ([2.0, 5.0], [3.0, 5.0])
    np.testing.assert_array_equal(seen[-1], [5, 5, 5])  # the hook sees the accumulated .grad
    handle.remove()
    (w * 1).sum().backward()
    assert len(seen) == 2


def test_hook_only_on_leaves():
    w = dn.tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(RuntimeError, match="only leaf tensors"):
        (w * 2).register_post_accumulate_grad_hook(print)
    with pytest.raises(TypeError, match="must be callable"):
        w.register_post_accumulate_grad_hook(3)
