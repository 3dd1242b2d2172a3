import math

import numpy as np
import pytest
import torch

import divenet as dn
from divenet import optim
from divenet.nn import Parameter


def _run_both(make_dn, make_torch, steps=5, shapes=((3, 4), (4,)), seed=0, sched=None):
    """Apply the same gradient sequence to divenet and torch parameters; compare after each step."""
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    ours = [Parameter(a.copy()) for a in init]
    theirs = [torch.nn.Parameter(torch.tensor(a.copy())) for a in init]
    o_opt, t_opt = make_dn(ours), make_torch(theirs)
    o_s = t_s = None
    if sched:
        o_s, t_s = sched[0](o_opt), sched[1](t_opt)
    for _ in range(steps):
        grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        for p, g in zip(ours, grads):
            p.grad = dn.tensor(g)
        for p, g in zip(theirs, grads):
            p.grad = torch.tensor(g.copy())
        o_opt.step()
        t_opt.step()
        if sched:
            o_s.step()
            t_s.step()
            assert o_opt.param_groups[0]["lr"] == pytest.approx(t_opt.param_groups[0]["lr"], rel=1e-6)
        for p, q in zip(ours, theirs):
            np.testing.assert_allclose(p.array, q.detach().numpy(), rtol=1e-5, atol=1e-6)
            assert p.array.dtype == np.float32
    return ours


@pytest.mark.parametrize("kw", [
    dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(lr=0.05, momentum=0.9, dampening=0.1),
    dict(lr=0.1, momentum=0.9, nesterov=True), dict(lr=0.1, momentum=0.5, weight_decay=1e-2),
])
def test_sgd_matches_torch(kw):
    _run_both(lambda ps: optim.SGD(ps, **kw), lambda ps: torch.optim.SGD(ps, **kw))


@pytest.mark.parametrize("cls,tcls,kw", [
    (optim.Adam, torch.optim.Adam, dict(lr=1e-2)),
    (optim.Adam, torch.optim.Adam, dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2)),
    (optim.AdamW, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
])
def test_adam_matches_torch(cls, tcls, kw):
    _run_both(lambda ps: cls(ps, **kw), lambda ps: tcls(ps, **kw), steps=8)


@pytest.mark.parametrize("make", [
    (lambda o: optim.StepLR(o, 2, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 2, 0.5)),
    (lambda o: optim.CosineAnnealingLR(o, 6, 1e-3), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 6, 1e-3)),
    (lambda o: optim.OneCycleLR(o, 0.5, 10), lambda o: torch.optim.lr_scheduler.OneCycleLR(o, 0.5, 10, cycle_momentum=False)),
])
def test_schedules_match_torch(make):
    # divenet's OneCycleLR schedules the learning rate only (torch: cycle_momentum=False)
    _run_both(lambda ps: optim.SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1), steps=6, sched=make)


def test_optimizer_state_round_trip_continues_identically():
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((5,)).astype(np.float32)
    grads = [rng.standard_normal((5,)).astype(np.float32) for _ in range(6)]

    def run(split):
        p = Parameter(w0.copy())
        opt = optim.Adam([p], lr=0.01)
        for i, g in enumerate(grads):
            if i == split:
                sd = opt.state_dict()
                p2 = Parameter(p.array.copy())
                opt = optim.Adam([p2], lr=0.01).load_state_dict(sd)
                p = p2
            p.grad = dn.tensor(g)
            opt.step()
        return p.array

    np.testing.assert_array_equal(run(3), run(99))


def test_sgd_never_writes_into_grad():
    p = Parameter(np.ones(3, np.float32))
    g = np.full(3, 2.0, np.float32)
    p.grad = dn.as_tensor(g)
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)
    opt.step()
    opt.step()
    np.testing.assert_array_equal(g, np.full(3, 2.0, np.float32))


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [1.0, 100.0])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, device):
    from divenet import sim

    rng = np.random.default_rng(3)
    grads = [rng.standard_normal(s).astype(np.float32) * 3 for s in ((3, 4), (5,))]
    ours = [Parameter(dn.zeros(g.shape, device=device)) for g in grads]
    theirs = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads]
    for p, q, g in zip(ours, theirs, grads):
        p.grad, q.grad = dn.tensor(g, device=device), torch.tensor(g)
    kept = [p.grad for p in ours]
    with sim.counting() as counts:
        total = optim.clip_grad_norm_(ours, max_norm, norm_type)
    if device == "sim":  # one device reduction, scaled without reading it back
        assert (counts["sync"], counts["upload"]) == (0, 0)
    t_total = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert isinstance(total, dn.Tensor) and total.shape == () and total.dtype == np.float32
    assert total.device == dn.device(device)
    np.testing.assert_allclose(total.item(), t_total.item(), rtol=1e-5)
    for p, q, k in zip(ours, theirs, kept):
        assert p.grad is k  # scaled in place, as PyTorch does
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_clip_grad_norm_error_if_nonfinite_on_a_device_reads_only_when_asked(device):
    from divenet import sim

    p = Parameter(dn.zeros(3, device=device))
    p.grad = dn.tensor([1.0, float("nan"), -2.0], device=device)
    with sim.counting() as counts:
        optim.clip_grad_norm_(p, 1.0)  # clips to NaN silently, as PyTorch does
    assert counts["sync"] == 0 and np.isnan(p.grad.numpy()).all()
    with sim.counting() as counts, pytest.raises(RuntimeError, match="norm of order 2.0 .* is nan"):
        optim.clip_grad_norm_(p, 1.0, error_if_nonfinite=True)
    assert counts["sync"] == (1 if device == "sim" else 0)


def test_clip_grad_norm_nonfinite_and_value():
    p = Parameter(np.zeros(3, np.float32))
    p.grad = dn.tensor([1.0, float("inf"), -2.0])
    with pytest.raises(RuntimeError, match="error_if_nonfinite"):
        optim.clip_grad_norm_(p, 1.0, error_if_nonfinite=True)
    g = np.array([[0.5, -3.0], [2.0, -0.1]], np.float32)
    ours, theirs = Parameter(np.zeros((2, 2), np.float32)), torch.nn.Parameter(torch.zeros(2, 2))
    ours.grad, theirs.grad = dn.tensor(g), torch.tensor(g)
    optim.clip_grad_value_([ours], 1.0)
    torch.nn.utils.clip_grad_value_([theirs], 1.0)
    np.testing.assert_array_equal(ours.grad, theirs.grad.numpy())


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_set_to_none(set_to_none):
    ours = Parameter(np.ones(3, np.float32))
    theirs = torch.nn.Parameter(torch.ones(3))
    o_opt, t_opt = optim.SGD([ours], lr=0.1), torch.optim.SGD([theirs], lr=0.1)
    for _ in range(2):  # a second step accumulates into the zero-filled gradient
        (ours * ours).sum().backward()
        (theirs * theirs).sum().backward()
        kept = ours.grad
        o_opt.step()
        t_opt.step()
        o_opt.zero_grad(set_to_none=set_to_none)
        t_opt.zero_grad(set_to_none=set_to_none)
        if set_to_none:
            assert ours.grad is None and theirs.grad is None
        else:
            assert ours.grad is kept and isinstance(ours.grad, dn.Tensor)
            np.testing.assert_array_equal(ours.grad, theirs.grad.numpy())
    np.testing.assert_allclose(ours.array, theirs.detach().numpy(), rtol=1e-6)


def test_step_after_forward_invalidates_the_graph():
    """An optimizer step changes the parameters in place: a graph recorded before it that
    saved a parameter must not give a gradient from the new values (PyTorch raises too)."""
    w = Parameter(np.ones(3, np.float32))
    x = dn.tensor([1.0, 2.0, 3.0], requires_grad=True)
    loss = (w * x).sum()
    w.grad = dn.ones(3)
    optim.SGD([w], lr=0.1).step()
    with pytest.raises(RuntimeError, match="Mul.*in-place"):
        loss.backward()


def test_d2l_sgd_from_scratch_under_no_grad():
    """D2L's ``param -= lr * param.grad / batch_size`` and ``param.grad.zero_()`` update the
    weights in place and train a linear regression, as under PyTorch."""
    def train(m):
        gen = np.random.default_rng(0)
        true_w, true_b = np.array([2.0, -3.4], np.float32), np.float32(4.2)
        X = gen.standard_normal((1000, 2)).astype(np.float32)
        y = (X @ true_w + true_b + 0.01 * gen.standard_normal(1000)).astype(np.float32).reshape(-1, 1)
        w = m.tensor(gen.normal(0, 0.01, (2, 1)).astype(np.float32), requires_grad=True)
        b = m.zeros(1, requires_grad=True)
        ws = []
        for epoch in range(3):
            for i in range(0, 1000, 10):
                Xb, yb = m.tensor(X[i:i + 10]), m.tensor(y[i:i + 10])
                loss = ((m.matmul(Xb, w) + b - yb) ** 2 / 2).sum()
                loss.backward()
                with m.no_grad():
                    for param in (w, b):
                        param -= 0.03 * param.grad / 10
                        param.grad.zero_()
            ws.append(w.detach().numpy().copy())
        return ws, b.detach().numpy()

    ours, theirs = train(dn), train(torch)
    for a, t in zip(ours[0], theirs[0]):
        np.testing.assert_allclose(a, t, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours[0][-1].ravel(), [2.0, -3.4], atol=0.01)  # trained
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-4, atol=1e-5)


def test_bad_hyper_parameters_raise():
    p = [Parameter(np.zeros(2, np.float32))]
    with pytest.raises(ValueError, match="SGD"):
        optim.SGD(p, lr=-1)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)


def test_training_a_quadratic_converges():
    target = dn.tensor([1.0, -2.0, 3.0])
    p = Parameter(np.zeros(3, np.float32))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    for _ in range(200):
        loss = ((p - target) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    np.testing.assert_allclose(p.array, target.numpy(), atol=1e-4)
