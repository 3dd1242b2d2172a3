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
            p.grad = g.copy()
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
            p.grad = g.copy()
            opt.step()
        return p.array

    np.testing.assert_array_equal(run(3), run(99))


def test_sgd_never_writes_into_grad():
    p = Parameter(np.ones(3, np.float32))
    g = np.full(3, 2.0, np.float32)
    p.grad = g
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)
    opt.step()
    opt.step()
    np.testing.assert_array_equal(g, np.full(3, 2.0, np.float32))


def test_clip_grad_norm():
    a, b = Parameter(np.zeros(3, np.float32)), Parameter(np.zeros(4, np.float32))
    a.grad = np.full(3, 3.0, np.float32)
    b.grad = np.full(4, 4.0, np.float32)
    total = optim.clip_grad_norm_([a, b], max_norm=1.0)
    assert total == pytest.approx(math.sqrt(9 * 3 + 16 * 4))
    new = math.sqrt(float((a.grad ** 2).sum() + (b.grad ** 2).sum()))
    assert new == pytest.approx(1.0, rel=1e-5)
    # below the limit nothing changes
    before = a.grad.copy()
    optim.clip_grad_norm_([a, b], max_norm=10.0)
    np.testing.assert_array_equal(a.grad, before)


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
