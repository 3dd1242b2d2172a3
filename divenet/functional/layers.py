"""Basic layers with PyTorch's names and signatures: linear, dropout, embedding, one_hot,
channel_shuffle. (``flatten`` is ``Tensor.flatten``.)"""
from __future__ import annotations

import numbers

from .. import random as _random
from ..backend import array_module
from ..ops import layers as L
from ..tensor import Tensor
from ._checks import require_float, require_tensor
from .loss import defer_check

__all__ = ["linear", "dropout", "embedding", "one_hot", "channel_shuffle"]


def linear(input, weight, bias=None):
    """input (..., in_features) @ weight.T + bias, weight (out_features, in_features),
    bias (out_features,)."""
    require_tensor("linear", "input", input)
    require_tensor("linear", "weight", weight)
    require_float("linear", "input", input)
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    if input.ndim < 1:
        raise ValueError(f"linear: input must have at least 1 dimension, got shape {tuple(input.shape)}")
    if input.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: input {tuple(input.shape)} has {input.shape[-1]} features but weight "
            f"{tuple(weight.shape)} expects in_features={weight.shape[1]}")
    if input.dtype != weight.dtype:
        raise TypeError(f"linear: input dtype {input.dtype} and weight dtype {weight.dtype} differ "
                        f"(input {tuple(input.shape)}, weight {tuple(weight.shape)})")
    if bias is not None:
        require_tensor("linear", "bias", bias)
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"linear: bias must have shape ({weight.shape[0]},) for weight "
                             f"{tuple(weight.shape)}, got {tuple(bias.shape)}")
        if bias.dtype != weight.dtype:
            raise TypeError(f"linear: bias dtype {bias.dtype} differs from weight dtype {weight.dtype}")
    return L.Linear.apply(input, weight, bias)


def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability ``p`` and scale the rest by 1 / (1 - p) (training
    only; identity in evaluation or for p = 0). The mask comes from ``divenet.random``'s
    generator of the input's device (drawn in device memory on a GPU), so ``dn.manual_seed``
    makes it reproducible. ``inplace`` is accepted for compatibility; the result is always a
    new tensor."""
    require_tensor("dropout", "input", input)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability p has to be between 0 and 1, but got {p!r} "
                         f"(input {tuple(input.shape)})")
    if not training or p == 0:
        return input
    require_float("dropout", "input", input)
    return L.Dropout.apply(input, p=float(p), rng=_random.generator(input.device))


def embedding(input, weight, padding_idx=None):
    """weight[input]: rows of ``weight`` (num_embeddings, embedding_dim) looked up by integer
    indices of any shape; the output has shape input.shape + (embedding_dim,). The row
    ``padding_idx`` (negative counts from the end) receives no gradient."""
    require_tensor("embedding", "weight", weight)
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), "
                         f"got shape {tuple(weight.shape)}")
    num = weight.shape[0]
    if not isinstance(input, Tensor):
        raise TypeError(f"embedding: input must be a Tensor of integer indices, got {type(input).__name__}")
    if input.dtype.kind not in "iu":
        raise TypeError(f"embedding: input must hold integer indices (int64 or int32), got "
                        f"{input.dtype} with shape {tuple(input.shape)}")
    if input.device != weight.device:
        raise ValueError(f"embedding: input lives on {input.device} but weight on {weight.device}")
    if padding_idx is not None:
        if isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral) \
                or not -num <= padding_idx < num:
            raise ValueError(f"embedding: padding_idx {padding_idx!r} must be an int within "
                             f"[{-num}, {num}) for weight {tuple(weight.shape)}")
        padding_idx = int(padding_idx) % num
    idx = input.array
    if idx.size and input.device.kind != "cpu":  # a device: checked without a sync
        defer_check(((idx < 0) | (idx >= num)).any(),
                    f"embedding: indices must be in [0, {num}) for weight {tuple(weight.shape)}; a "
                    f"call on {input.device} had indices out of range")
    elif idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= num:
            raise ValueError(f"embedding: indices must be in [0, {num}) for weight {tuple(weight.shape)}, "
                             f"got values from {lo} to {hi} in input {tuple(input.shape)}")
    return L.Embedding.apply(input, weight, padding_idx=padding_idx)


def one_hot(tensor, num_classes=-1):
    """int64 one-hot encoding of integer class indices: shape tensor.shape + (num_classes,);
    ``num_classes=-1`` takes max(tensor) + 1. Not differentiable (as in PyTorch)."""
    op = "one_hot"
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{op}: tensor must be a Tensor of integer class indices, got {type(tensor).__name__}")
    if tensor.dtype.kind not in "iu":
        raise TypeError(f"{op}: tensor must hold integer class indices (int64), got {tensor.dtype} "
                        f"with shape {tuple(tensor.shape)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or \
            (num_classes < 1 and num_classes != -1):
        raise ValueError(f"{op}: num_classes must be a positive int or -1 (inferred), got {num_classes!r}")
    y = tensor.array
    xp = array_module(y)
    lo, hi = (int(y.min()), int(y.max())) if y.size else (0, -1)
    if lo < 0:
        raise ValueError(f"{op}: class values must be non-negative, got {lo} in tensor {tuple(tensor.shape)}")
    if num_classes == -1:
        if not y.size:
            raise ValueError(f"{op}: cannot infer num_classes from an empty tensor; pass num_classes")
        num_classes = hi + 1
    elif hi >= num_classes:
        raise ValueError(f"{op}: class values must be smaller than num_classes={num_classes}, "
                         f"got {hi} in tensor {tuple(tensor.shape)}")
    out = (y[..., None] == xp.arange(int(num_classes))).astype(xp.int64)
    return Tensor._make(out, tensor.device, None)


def channel_shuffle(input, groups):
    """ShuffleNet's channel shuffle of (N, C, *): (N, g, C/g, *) -> transpose -> (N, C, *)."""
    require_tensor("channel_shuffle", "input", input)
    if input.ndim < 3:
        raise ValueError(f"channel_shuffle: input must have at least 3 dims (N, C, *), "
                         f"got shape {tuple(input.shape)}")
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups <= 0:
        raise ValueError(f"channel_shuffle: groups must be a positive int, got {groups!r}")
    if input.shape[1] % groups:
        raise ValueError(f"channel_shuffle: {input.shape[1]} channels of input {tuple(input.shape)} "
                         f"are not divisible by groups={groups}")
    return L.ChannelShuffle.apply(input, groups=int(groups))
