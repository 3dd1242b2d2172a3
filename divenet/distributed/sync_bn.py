"""SyncBatchNorm: batch normalization whose training statistics cover the batches of all ranks.

Forward: each rank computes its per-channel count n_r, mean and centred sum of squares M2_r
(two passes, as BatchNorm does, so |mean| >> std loses nothing); one allgather shares them
and every rank combines them exactly as the statistics of the concatenated batch:
n = sum n_r, mean = sum n_r mean_r / n, M2 = sum M2_r + sum n_r (mean_r - mean)^2 (Chan et al.;
a plain allreduce of sum(x) and sum(x^2) would cancel badly in float32, and PyTorch also
gathers per-rank means and variances). Backward allreduces the two per-channel sums the input
gradient needs, sum(g) and sum(g (x - mean)); the weight and bias gradients stay local sums,
which DistributedDataParallel then averages, as with PyTorch's SyncBatchNorm.

Outside training, or in a group of one, it is BatchNorm.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..backend import array_module
from ..functional._checks import require_float, require_tensor
from ..nn.layers import _BatchNorm
from ..nn.module import Module
from ..ops.norm import (_col, _dot_c, _sum_c, channels_like, channels_restore, channels_view,
                        update_running_stats)

__all__ = ["SyncBatchNorm"]


class _SyncBatchNormFn(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean=None, running_var=None, momentum=0.1, eps=1e-5,
                comm=None):
        xp = array_module(x)
        dt = x.dtype.type
        u, layout = channels_view(x)
        p, c, l = u.shape
        m = p * l
        stats = xp.zeros(2 * c + 1, dtype=np.float64)  # [mean_r, M2_r, n_r]: exact counts
        y = xp.empty_like(u)
        if m:
            mu = _sum_c(u) / dt(m)
            xp.subtract(u, _col(mu), out=y)
            stats[:c], stats[c:2 * c] = mu, _dot_c(y, y)
        stats[2 * c] = m
        g = comm.allgather(stats)
        counts = g[:, 2 * c:]
        n = float(counts.sum())
        if n <= 1:
            raise ValueError(f"sync_batch_norm: expected more than 1 value per channel over all ranks "
                             f"when training, got {int(n)} (input of shape {tuple(x.shape)} on rank {comm.rank})")
        mean64 = (counts * g[:, :c]).sum(axis=0) / n
        m2 = g[:, c:2 * c].sum(axis=0) + (counts * (g[:, :c] - mean64) ** 2).sum(axis=0)
        var64 = m2 / n
        mean = mean64.astype(x.dtype)
        invstd = (1 / xp.sqrt(var64 + eps)).astype(x.dtype)
        scale = invstd if weight is None else invstd * weight
        xp.subtract(u, _col(mean), out=y)
        y *= _col(scale)
        if bias is not None:
            y += _col(bias)
        update_running_stats(running_mean, running_var, momentum * mean64, momentum * m2 / (n - 1), momentum)
        ctx.save_for_backward(u, mean, invstd, weight)
        ctx.layout, ctx.n, ctx.comm = layout, n, comm
        return channels_restore(y, layout)

    @staticmethod
    def backward(ctx, g):
        u, mean, invstd, weight = ctx.saved
        xp = array_module(g)
        dt = u.dtype.type
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gu = channels_like(g, ctx.layout)
        c = u.shape[1]
        xmu = u - _col(mean)
        sums = xp.empty(2 * c, dtype=u.dtype)
        sums[:c], sums[c:] = _sum_c(gu), _dot_c(gu, xmu)  # local sum(g), sum(g (x - mean))
        db = sums[:c].copy() if need_b else None
        dw = sums[c:] * invstd if need_w else None
        dx = None
        if need_x:
            ctx.comm.allreduce(sums, "sum")  # every rank's share of the two sums
            n = dt(ctx.n)
            mean_dy, mean_dy_xmu = sums[:c] / n, sums[c:] / n
            scale = invstd if weight is None else invstd * weight
            xmu *= _col(invstd * invstd * mean_dy_xmu)
            dx = gu - _col(mean_dy)
            dx -= xmu
            dx *= _col(scale)
            dx = channels_restore(dx, ctx.layout)
        return dx, dw, db


class SyncBatchNorm(_BatchNorm):
    """``SyncBatchNorm(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, process_group=None)``: BatchNorm over the concatenated batches
    of the ranks of ``process_group`` (a communicator; default: the process group) in
    training. Takes (N, C, ...) inputs of 2 to 5 dimensions. Every rank must run it, in the
    same order (each forward and backward is a collective)."""

    _ndims = (2, 3, 4, 5)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def _comm(self):
        from . import _default

        return self.process_group if self.process_group is not None else _default

    def forward(self, x):
        comm = self._comm()
        if not self.training or comm is None or comm.size == 1:
            return super().forward(x)
        require_tensor("sync_batch_norm", "input", x)
        if x.ndim not in self._ndims:
            raise ValueError(f"SyncBatchNorm: expected a 2-D to 5-D input, got shape {tuple(x.shape)}")
        require_float("sync_batch_norm", "input", x)
        self._ensure(x)
        momentum = self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.array += 1
            if momentum is None:  # cumulative moving average, as in PyTorch
                momentum = 1.0 / float(self.num_batches_tracked.array)
        stats = (None, None) if not self.track_running_stats else (self.running_mean.array, self.running_var.array)
        return _SyncBatchNormFn.apply(x, self.weight, self.bias, running_mean=stats[0], running_var=stats[1],
                                      momentum=0.0 if momentum is None else float(momentum),
                                      eps=float(self.eps), comm=comm)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """``module`` with every BatchNorm1d/2d/3d layer replaced by a SyncBatchNorm that keeps
        its parameters and buffers (the same objects: an optimizer made before still trains
        them). Converts in place and returns the module (a new one when ``module`` itself is a
        batch norm layer)."""
        if not isinstance(module, Module):
            raise TypeError(f"convert_sync_batchnorm: module must be a divenet Module, got {type(module).__name__}")
        done, visited = {}, set()

        def convert(bn):
            if id(bn) not in done:
                new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                          process_group)
                for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                    if name in bn.__dict__:
                        setattr(new, name, bn.__dict__[name])
                new._lazy, new.training = bn._lazy, bn.training
                done[id(bn)] = new
            return done[id(bn)]

        def sub(value):
            if isinstance(value, _BatchNorm) and not isinstance(value, SyncBatchNorm):
                return convert(value)
            if isinstance(value, Module):
                if id(value) not in visited:
                    visited.add(id(value))
                    d = value.__dict__
                    for key in list(d):
                        d[key] = sub(d[key])
                return value
            if isinstance(value, list):
                value[:] = [sub(v) for v in value]
            elif isinstance(value, dict):
                for key in list(value):
                    value[key] = sub(value[key])
            elif isinstance(value, tuple) and not hasattr(value, "_fields"):
                return tuple(sub(v) for v in value)
            return value

        return sub(module)
