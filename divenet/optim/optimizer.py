"""Optimizer base: parameter groups, zero_grad, and state that round-trips through checkpoints."""
from __future__ import annotations

from ..backend import array_module, device as as_device, transfer


class Optimizer:
    defaults: dict = {}

    def __init__(self, params, **hyper):
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if isinstance(params[0], dict):
            groups = [dict(g) for g in params]
        else:
            groups = [{"params": params}]
        self.param_groups = []
        for g in groups:
            full = dict(hyper)
            full.update(g)
            full["params"] = list(full["params"])
            self.param_groups.append(full)
        self.state = {}  # id(param) -> {name: array}
        for g in self.param_groups:
            g.setdefault("initial_lr", g["lr"])

    def _params(self):
        for g in self.param_groups:
            for p in g["params"]:
                yield g, p

    def zero_grad(self, set_to_none=True):
        """Drop the gradients (PyTorch's default), or with ``set_to_none=False`` fill them with 0."""
        for _, p in self._params():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.detach_().zero_()

    def step(self):
        for group, p in self._params():
            grad = p.grad
            if grad is None:
                continue
            self.update(p, grad.array, self.state.setdefault(id(p), {}), group)
            p._version[0] += 1  # an in-place change of p: a graph that saved p must not use it

    def update(self, p, grad, state, group):
        """Update ``p.array`` in place from the raw gradient array ``grad``."""
        raise NotImplementedError

    # ---- checkpoints: state by parameter position, arrays on the CPU -----------------------------
    def state_dict(self):
        flat = [p for _, p in self._params()]
        state = {}
        for i, p in enumerate(flat):
            for k, v in self.state.get(id(p), {}).items():
                state[f"{i}.{k}"] = transfer(v, as_device("cpu")) if hasattr(v, "shape") else v
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd):
        flat = [p for _, p in self._params()]
        if len(sd["param_groups"]) != len(self.param_groups):
            raise ValueError(f"{type(self).__name__}.load_state_dict: checkpoint has "
                             f"{len(sd['param_groups'])} parameter groups, this optimizer {len(self.param_groups)}")
        for g, saved in zip(self.param_groups, sd["param_groups"]):
            g.update(saved)
        self.state = {}
        for key, v in sd["state"].items():
            i, name = key.split(".", 1)
            i = int(i)
            if i >= len(flat):
                raise ValueError(f"{type(self).__name__}.load_state_dict: state for parameter {i} "
                                 f"but the optimizer has {len(flat)} parameters")
            p = flat[i]
            if hasattr(v, "shape") and v.shape != () and tuple(v.shape) != tuple(p.shape):
                raise ValueError(f"{type(self).__name__}.load_state_dict: {key} has shape {tuple(v.shape)} "
                                 f"but parameter {i} has shape {tuple(p.shape)}")
            self.state.setdefault(id(p), {})[name] = transfer(v, p.device) if hasattr(v, "shape") and v.shape != () else v
        return self


def zeros_like(a):
    return array_module(a).zeros_like(a)
