"""The memory layout concept (divenet/ops/layout.py): naming, buffers, copies and views."""
import numpy as np
import pytest

from divenet.ops import layout as L

SHAPES = {3: (2, 3, 5), 4: (2, 3, 4, 5)}


def _stored_as(layout, ndim, rng):
    """An (N, C, ...) array of SHAPES[ndim] whose memory is ``layout``'s buffer."""
    shape = SHAPES[ndim]
    o = L.order(layout, ndim)
    buf = rng.standard_normal(tuple(shape[a] for a in o)).astype(np.float32)
    return L.restore(buf, layout), buf


@pytest.mark.parametrize("ndim", [3, 4])
@pytest.mark.parametrize("layout", [L.NCHW, L.BATCH_LAST, L.CHANNELS_FIRST])
def test_layouts_are_named_and_their_buffers_read_in_place(layout, ndim):
    rng = np.random.default_rng(0)
    x, buf = _stored_as(layout, ndim, rng)
    assert x.shape == SHAPES[ndim]
    assert L.layout_of(x) == layout
    assert L.stored(x, layout) is not None and np.shares_memory(L.stored(x, layout), buf)
    np.testing.assert_array_equal(L.stored(x, layout), buf)
    expect_buffer = layout != L.NCHW  # a C-ordered array is no view of another layout's buffer
    assert (L.buffer(x, layout) is not None) == expect_buffer
    # the other layouts: a C-ordered copy with the same values, and no buffer
    for other in (L.NCHW, L.BATCH_LAST, L.CHANNELS_FIRST):
        if other == layout:
            continue
        s = L.stored(x, other)
        assert s.flags.c_contiguous and not np.shares_memory(s, buf)
        np.testing.assert_array_equal(L.restore(s, other), x)
        assert L.buffer(x, other) is None


def test_batch_last_order_puts_the_batch_innermost():
    assert L.order(L.BATCH_LAST, 4) == (1, 2, 3, 0)
    assert L.order(L.CHANNELS_FIRST, 4) == (1, 0, 2, 3)
    assert L.order(L.BATCH_LAST, 3) == (1, 2, 0)
    assert L.order(L.NCHW, 4) == (0, 1, 2, 3)


def test_other_strides_have_no_layout_and_get_copied():
    x = np.zeros((2, 4, 5, 3), np.float32).transpose(0, 3, 1, 2)  # NHWC memory
    assert x.shape == (2, 3, 4, 5) and L.layout_of(x) is None
    y = np.zeros((2, 3, 8, 5), np.float32)[:, :, ::2]
    assert L.layout_of(y) is None
    assert L.stored(y, L.BATCH_LAST).flags.c_contiguous


def test_permuted_is_always_a_view():
    x = np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5)
    v = L.permuted(x, L.BATCH_LAST)
    assert v.shape == (3, 4, 5, 2) and np.shares_memory(v, x) and not v.flags.c_contiguous


def test_fewer_than_three_axes_are_nchw():
    assert L.layout_of(np.zeros((4, 3), np.float32).T) == L.NCHW
    assert L.buffer(np.zeros((4, 3), np.float32), L.BATCH_LAST) is None
