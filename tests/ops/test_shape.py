"""Shape ops: reshape/view, flatten, transpose/permute, squeeze/unsqueeze, expand, indexing,
cat/stack, split/chunk, pad."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import divenet as dn
from tests.helpers import assert_raises_naming, check_against_torch, numerical_grad_check


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---- reshape, flatten, transpose, permute, squeeze, unsqueeze, expand ---------------------------
RESHAPES = [
    ((2, 3, 4), lambda x: x.reshape(6, 4)), ((2, 3, 4), lambda x: x.reshape((4, -1))),
    ((2, 3, 4), lambda x: x.view(-1)), ((2, 3, 4), lambda x: x.view(2, -1, 2)),
    ((2, 3, 4), lambda x: x.reshape([2, 3, 4])), ((6,), lambda x: x.reshape(3, 2).reshape(2, 3)),
    ((2, 3, 4), lambda x: x.flatten()), ((2, 3, 4, 5), lambda x: x.flatten(1)),
    ((2, 3, 4, 5), lambda x: x.flatten(1, 2)), ((2, 3, 4, 5), lambda x: x.flatten(0, -2)),
    ((2, 3, 4, 5), lambda x: x.flatten(start_dim=-3, end_dim=-1)),
    ((2, 3, 4), lambda x: x.transpose(0, 2)), ((2, 3, 4), lambda x: x.transpose(-1, 1)),
    ((2, 3, 4), lambda x: x.permute(2, 0, 1)), ((2, 3, 4), lambda x: x.permute((1, -1, 0))),
    ((2, 3), lambda x: x.T), ((2, 3, 4), lambda x: x.permute(2, 0, 1).reshape(4, 6)),
    ((2, 1, 3, 1), lambda x: x.squeeze()), ((2, 1, 3, 1), lambda x: x.squeeze(1)),
    ((2, 1, 3, 1), lambda x: x.squeeze(-1)), ((2, 1, 3, 1), lambda x: x.squeeze(0)),
    ((2, 1, 3, 1), lambda x: x.squeeze((1, 3))),
    ((2, 3), lambda x: x.unsqueeze(0)), ((2, 3), lambda x: x.unsqueeze(-1)), ((2, 3), lambda x: x.unsqueeze(1)),
    ((2, 3), lambda x: x.unsqueeze(-2)),
    ((3, 1), lambda x: x.expand(3, 4)), ((3, 1), lambda x: x.expand(2, -1, 5)),
    ((1, 4), lambda x: x.expand((3, 4))), ((4,), lambda x: x.expand(2, 3, 4)),
]


@pytest.mark.parametrize("shape, fn", RESHAPES)
def test_view_ops_against_torch(device, shape, fn):
    a = _rand(shape)
    check_against_torch(fn, fn, [a], device=device)


@pytest.mark.parametrize("fn", [lambda x: x.permute(2, 0, 1).reshape(4, 6), lambda x: x.transpose(0, 1)[1:, ::2],
                                lambda x: x[:, None].expand(2, 5, 3, 4) * 1.5])
def test_view_ops_numerical(device, fn):
    numerical_grad_check(fn, [_rand((2, 3, 4), 1)], device=device)


def test_reshape_errors_name_shapes(device):
    t = dn.zeros(2, 3, device=device)
    assert_raises_naming(ValueError, lambda: t.reshape(4, 2), "(2, 3)", "(4, 2)")
    assert_raises_naming(ValueError, lambda: t.view(4, -1), "(2, 3)", "(4, -1)")
    assert_raises_naming(ValueError, lambda: t.reshape(-1, -1), "(2, 3)")
    assert_raises_naming(ValueError, lambda: t.permute(0, 0), "(2, 3)", "(0, 0)")
    assert_raises_naming(ValueError, lambda: t.expand(4, 3), "(2, 3)", "(4, 3)")
    assert_raises_naming(ValueError, lambda: t.expand(3), "(2, 3)", "(3,)")
    assert_raises_naming(ValueError, lambda: t.squeeze(2), "(2, 3)", "dim 2")
    # out-of-range dims raise instead of wrapping around
    assert_raises_naming(ValueError, lambda: t.permute(0, 2), "(2, 3)", "2")
    assert_raises_naming(ValueError, lambda: t.permute(1, 0, 2), "(2, 3)")
    assert_raises_naming(ValueError, lambda: t.transpose(0, 2), "(2, 3)", "dim 2")
    assert_raises_naming(ValueError, lambda: t.flatten(0, 4), "(2, 3)", "dim 4")
    assert_raises_naming(ValueError, lambda: t.unsqueeze(3), "dim 3", "3 dimensions")
    assert_raises_naming(ValueError, lambda: t.unsqueeze(-4), "dim -4")


# ---- indexing ----------------------------------------------------------------------------------
INDEXES = [
    lambda x, T: x[1], lambda x, T: x[-1], lambda x, T: x[1:3], lambda x, T: x[::2],
    lambda x, T: x[:, -2:], lambda x, T: x[..., 1], lambda x, T: x[None, 0], lambda x, T: x[:, None, 1:4:2],
    lambda x, T: x[0, ..., None], lambda x, T: x[-2, 1:, ::3], lambda x, T: x[1, 2, 3],
    lambda x, T: x[T([0, 0, 2, 0])],  # repeated indices: gradients accumulate
    lambda x, T: x[:, T([4, 1, 4])], lambda x, T: x[T([1, 1]), T([0, 0])],
    lambda x, T: x[T([[0, 2], [2, 2]]), 1:],
]


@pytest.mark.parametrize("k", range(len(INDEXES)))
def test_getitem_against_torch(device, k):
    fn = INDEXES[k]
    a = _rand((3, 5, 4), 2)
    check_against_torch(lambda x: fn(x, lambda i: dn.tensor(i, device=device)),
                        lambda x: fn(x, torch.tensor), [a], device=device)
    numerical_grad_check(lambda x: fn(x, lambda i: dn.tensor(i, device=device)), [a], device=device)


def test_getitem_with_lists_and_numpy_indices(device):
    a = _rand((4, 3), 3)
    check_against_torch(lambda x: x[[3, 3, 0]], lambda x: x[[3, 3, 0]], [a], device=device)
    check_against_torch(lambda x: x[np.array([1, 1, 2])], lambda x: x[torch.tensor([1, 1, 2])], [a],
                        device=device)


def test_getitem_boolean_masks(device):
    a = _rand((3, 5, 4), 4)
    m3 = a > 0.2
    m1 = np.array([True, False, True])
    check_against_torch(lambda x: x[dn.tensor(m3, device=device)], lambda x: x[torch.tensor(m3)], [a],
                        device=device)
    check_against_torch(lambda x: x[x > 0.2], lambda x: x[x > 0.2], [a], device=device)
    check_against_torch(lambda x: x[dn.tensor(m1, device=device), 1:], lambda x: x[torch.tensor(m1), 1:], [a],
                        device=device)
    numerical_grad_check(lambda x: x[dn.tensor(m3, device=device)], [a], device=device)


def test_getitem_out_of_range(device):
    t = dn.zeros(3, 5, device=device)
    assert_raises_naming(IndexError, lambda: t[3], "3", "size 3")
    assert_raises_naming(IndexError, lambda: t[:, dn.tensor([0, 7], device=device)], "7", "size 5")


# ---- cat, stack, split, chunk ------------------------------------------------------------------
@pytest.mark.parametrize("shapes, dim", [([(2, 3), (4, 3)], 0), ([(2, 3), (2, 1), (2, 2)], 1),
                                         ([(2, 3, 1), (2, 3, 2)], -1), ([(5,)], 0)])
def test_cat_against_torch(device, shapes, dim):
    arrays = [_rand(s, i) for i, s in enumerate(shapes)]
    check_against_torch(lambda *xs: dn.cat(xs, dim), lambda *xs: torch.cat(xs, dim), arrays, device=device)
    check_against_torch(lambda *xs: dn.concat(list(xs), dim=dim), lambda *xs: torch.cat(xs, dim=dim), arrays,
                        device=device)
    numerical_grad_check(lambda *xs: dn.cat(xs, dim), arrays, device=device)


@pytest.mark.parametrize("mixed", [False, True], ids=["all-batch-last", "one-nchw"])
def test_channel_cat_of_batch_last_views_keeps_the_layout(device, mixed):
    """Channel concatenation of (C, H, W, N) buffers seen as NCHW (convolution outputs, as in
    GoogLeNet and DenseNet) stays batch-last; any other mix takes the plain path."""
    chwn = [np.ascontiguousarray(_rand((3, c, 4, 5), i).transpose(1, 2, 3, 0)) for i, c in enumerate((2, 4))]
    arrays = chwn + [_rand((3, 1, 4, 5), 7)] if mixed else chwn

    def ours(*xs):
        views = [x.permute(3, 0, 1, 2) if x.ndim == 4 and x.shape[-1] == 3 else x for x in xs]
        return dn.cat(views, 1)

    def theirs(*xs):
        views = [x.permute(3, 0, 1, 2) if x.ndim == 4 and x.shape[-1] == 3 else x for x in xs]
        return torch.cat(views, 1)

    y = check_against_torch(ours, theirs, arrays, device=device)[0].array
    assert y.shape == (3, 7 if mixed else 6, 4, 5)
    assert y.transpose(1, 2, 3, 0).flags.c_contiguous != mixed


def _chwn(n, c, seed):
    """An (n, c, 4, 5) array laid out (C, H, W, N), as convolution outputs are."""
    return np.ascontiguousarray(_rand((n, c, 4, 5), seed).transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


def test_concat_grow_chain_writes_one_buffer_with_concats_values_and_layout():
    """graph mode's share_concat links (a DenseNet block): each result is the leading channels
    of one buffer, equal to np.concatenate bit for bit and laid out as Concat lays it out."""
    from divenet.autograd import Context
    from divenet.ops.shape import Concat, ConcatGrow

    x0, news = _chwn(3, 4, 0), [_chwn(3, 2, i + 1) for i in range(3)]
    prev, results = x0, []
    for i, new in enumerate(news):
        out = ConcatGrow.forward(Context((True, True)), prev, new, axis=1, total=10, first=i == 0)
        want = Concat.forward(Context((True, True)), prev, new, axis=1)
        np.testing.assert_array_equal(out, want)
        assert out.strides == want.strides and out.shape == want.shape
        results.append(out)
        prev = out
    buf = results[0].base
    assert buf.shape == (10, 4, 5, 3) and all(r.base is buf for r in results)
    assert np.shares_memory(results[0], results[2])  # one buffer, not one per link
    np.testing.assert_array_equal(results[0], np.concatenate([x0, news[0]], axis=1))  # not overwritten
    ctx = Context((True, True))
    ConcatGrow.forward(ctx, x0, news[0], axis=1, total=10, first=True)
    g = _rand((3, 6, 4, 5), 9)
    ga, gb = ConcatGrow.backward(ctx, g)
    np.testing.assert_array_equal(ga, g[:, :4]), np.testing.assert_array_equal(gb, g[:, 4:])


@pytest.mark.parametrize("case", ["not-a-prefix", "new-inside-buffer", "nchw", "axis-0"])
def test_concat_grow_falls_back_to_a_fresh_concat(case):
    """A link whose first input is not the leading part of a buffer of the chain's size, whose
    other input lies in that buffer, or whose inputs are not batch-last gives Concat's result
    in new memory, never writing into an array another value holds."""
    from divenet.autograd import Context
    from divenet.ops.shape import Concat, ConcatGrow

    first = ConcatGrow.forward(Context((True, True)), _chwn(3, 4, 0), _chwn(3, 2, 1), axis=1, total=10, first=True)
    before = first.base.copy()
    prev, new, axis = first, _chwn(3, 2, 2), 1
    if case == "not-a-prefix":
        prev = first.base[1:7].transpose(3, 0, 1, 2)
    elif case == "new-inside-buffer":
        new = first[:, :2]
    elif case == "nchw":
        prev, new = np.ascontiguousarray(first), np.ascontiguousarray(new)
    else:
        prev, new, axis = first, first, 0
    out = ConcatGrow.forward(Context((True, True)), prev, new, axis=axis, total=10, first=False)
    np.testing.assert_array_equal(out, Concat.forward(Context((True, True)), prev, new, axis=axis))
    assert not np.shares_memory(out, first)
    np.testing.assert_array_equal(first.base[:6], before[:6])  # what the first link made is untouched


def test_cat_with_constant_input(device):
    a, b = _rand((2, 3), 1), _rand((1, 3), 2)
    check_against_torch(lambda x, y: dn.cat([x, y]), lambda x, y: torch.cat([x, y]), [a, b], grad_inputs=[1],
                        device=device)


@pytest.mark.parametrize("n, dim", [(1, 0), (3, 0), (2, 1), (3, 2), (2, -1), (2, -3)])
def test_stack_against_torch(device, n, dim):
    arrays = [_rand((2, 3), i) for i in range(n)]
    check_against_torch(lambda *xs: dn.stack(xs, dim), lambda *xs: torch.stack(xs, dim), arrays, device=device)
    numerical_grad_check(lambda *xs: dn.stack(xs, dim=dim), arrays, device=device)


@pytest.mark.parametrize("size, dim", [(2, 0), (3, 0), (5, 0), (7, 0), (2, 1), ([1, 3, 1], 0), ([0, 5], 0),
                                       ([2, 1], -1), (1, -1)])
def test_split_against_torch(device, size, dim):
    a = _rand((5, 3), 5)
    outs = check_against_torch(lambda x: dn.split(x, size, dim), lambda x: torch.split(x, size, dim), [a],
                               device=device)
    assert isinstance(outs, tuple)
    check_against_torch(lambda x: x.split(size, dim=dim), lambda x: x.split(size, dim=dim), [a], device=device)
    numerical_grad_check(lambda x: x.split(size, dim), [a], device=device)


@pytest.mark.parametrize("chunks, dim", [(2, 0), (3, 0), (5, 0), (1, 1), (3, 1), (4, 0)])
def test_chunk_against_torch(device, chunks, dim):
    a = _rand((5, 3), 6)
    check_against_torch(lambda x: dn.chunk(x, chunks, dim), lambda x: torch.chunk(x, chunks, dim), [a],
                        device=device)
    check_against_torch(lambda x: x.chunk(chunks, dim=dim), lambda x: x.chunk(chunks, dim=dim), [a],
                        device=device)


def test_split_one_output_used(device):
    a = _rand((6, 2), 7)
    check_against_torch(lambda x: x.split([2, 4])[1] * 2, lambda x: x.split([2, 4])[1] * 2, [a], device=device)


def test_cat_stack_split_errors_name_shapes(device):
    a, b = dn.zeros(2, 3, device=device), dn.zeros(2, 4, device=device)
    assert_raises_naming(ValueError, lambda: dn.cat([a, b]), "cat", "(2, 3)", "(2, 4)")
    assert_raises_naming(ValueError, lambda: dn.cat([a, dn.zeros(3, device=device)], 0), "cat", "(2, 3)", "(3,)")
    assert_raises_naming(ValueError, lambda: dn.stack([a, b]), "stack", "(2, 3)", "(2, 4)")
    assert_raises_naming(ValueError, lambda: dn.cat([]), "cat", "non-empty")
    assert_raises_naming(ValueError, lambda: dn.split(a, [1, 1], 1), "split", "[1, 1]", "(2, 3)")
    assert_raises_naming(ValueError, lambda: dn.split(a, 0), "split", "0")
    assert_raises_naming(ValueError, lambda: dn.cat([a, a], 2), "dim 2", "(2, 3)")
    assert_raises_naming(ValueError, lambda: dn.stack([a, a], 3), "dim 3")
    assert_raises_naming(ValueError, lambda: dn.split(a, 1, dim=-3), "dim -3", "(2, 3)")
    assert_raises_naming(ValueError, lambda: a.chunk(0), "chunk", "0")


# ---- pad ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, pad, value", [
    ((2, 3), (1, 2), 0.0), ((2, 3), (1, 0, 0, 2), 0.0), ((1, 2, 3, 4), (1, 1, 2, 0), -1.5),
    ((1, 2, 3, 4), (0, 0, 0, 0, 1, 1), 0.0), ((3,), (2, 2), 2.0), ((2, 3), (0, 0), 0.0),
])
def test_pad_against_torch(device, shape, pad, value):
    a = _rand(shape, 8)
    out = check_against_torch(lambda x: dn.pad(x, pad, value=value), lambda x: TF.pad(x, pad, value=value), [a],
                              device=device)
    assert out[0].dtype == np.float32
    numerical_grad_check(lambda x: dn.pad(x, pad, value), [a], device=device)


def test_pad_errors_name_shapes(device):
    t = dn.zeros(2, 3, device=device)
    assert_raises_naming(ValueError, lambda: dn.pad(t, (1, 2, 3)), "pad", "(2, 3)", "(1, 2, 3)")
    assert_raises_naming(ValueError, lambda: dn.pad(t, (1, 1, 1, 1, 1, 1)), "pad", "(2, 3)")
    assert_raises_naming(ValueError, lambda: dn.pad(t, (-1, 1)), "pad", "negative", "(-1, 1)")
