"""Recurrent kernels: plain RNN (tanh or relu), LSTM and GRU, one step (cells) and a whole
sequence (layers), with PyTorch's gate order and weight layout.

Layouts, as in PyTorch: ``w_ih`` (G*H, I), ``w_hh`` (G*H, H), biases (G*H,), where G is 1
(RNN), 4 (LSTM: gates i, f, g, o) or 3 (GRU: gates r, z, n). Sequences are time-major:
x (T, N, I), output (T, N, H).

Every op is ONE graph node. A sequence op projects the input of all T steps with one GEMM,
loops over time for the recurrent GEMM and one fused elementwise pass, saves the gate
activations, and in backward runs backpropagation through time in a loop that only does the
recurrent GEMM and the elementwise work; the weight gradients and the input gradient are one
GEMM each over all steps at the end.

Sigmoid is computed as ``0.5 * tanh(x / 2) + 0.5`` (one transcendental, twice as fast as exp
in NumPy). The sequence ops fold the ``1/2`` into the rows of the weights and biases of the
sigmoid gates, so one ``tanh`` over the whole (N, G*H) gate block serves both nonlinearities.

A missing initial state (``None``) means zeros and skips the work that zeros make moot.
``reverse=True`` runs the sequence from step T-1 down to 0 (the backward direction of a
bidirectional layer); ``output[t]`` is still the state after reading ``x[t]``.
"""
from __future__ import annotations

from ..autograd import Function
from ..backend import array_module


def _sig_scale(xp, H, gates, tanh_slices, dtype):
    """Per-row constants of a gate block: s = 1/2 on sigmoid rows, 1 on tanh rows. With
    t = tanh(s * z), the activation is s * t + shift (shift = 1 - s): 0.5 * t + 0.5 = sigmoid(z)
    on sigmoid rows, t = tanh(z) on tanh rows."""
    s = xp.full(gates * H, 0.5, dtype=dtype)
    for k in tanh_slices:
        s[k * H:(k + 1) * H] = 1
    return s, 1 - s


def _bias_sum(b_ih, b_hh):
    if b_ih is None:
        return b_hh
    if b_hh is None:
        return b_ih
    return b_ih + b_hh


def _bias_grads(ctx, db, i_ih=-2, i_hh=-1):
    """The same gradient for b_ih and b_hh, as separate arrays (never one array for two .grad)."""
    n = ctx.needs_input_grad
    g_ih = db if n[i_ih] else None
    g_hh = (db.copy() if g_ih is not None else db) if n[i_hh] else None
    return g_ih, g_hh


# ---- LSTM ----------------------------------------------------------------------------------------
def _lstm_step(xp, A, s, shift, c_prev, c_out, tc_out, h_out):
    """A holds the scaled pre-activations s * z (N, 4H); in place it becomes the activations
    [i, f, g, o]. Writes c_t, tanh(c_t) and h_t into the given buffers."""
    H = c_out.shape[1]
    xp.tanh(A, out=A)
    A *= s
    A += shift
    i, f, g, o = A[:, :H], A[:, H:2 * H], A[:, 2 * H:3 * H], A[:, 3 * H:]
    if c_prev is None:
        xp.multiply(i, g, out=c_out)
    else:
        xp.multiply(f, c_prev, out=c_out)
        c_out += i * g
    xp.tanh(c_out, out=tc_out)
    xp.multiply(o, tc_out, out=h_out)


def _lstm_step_back(xp, A, c_prev, tc, dh, dc, dZ):
    """Gradient of one LSTM step. A = [i, f, g, o] activations, c_prev (or None for zeros),
    tc = tanh(c_t), dh and dc the gradients reaching h_t and c_t (dc may be None). Writes the
    gradient of the pre-activations into dZ (N, 4H) and returns the total gradient of c_t
    (multiply by f for the gradient of c_{t-1})."""
    H = tc.shape[1]
    i, f, g, o = A[:, :H], A[:, H:2 * H], A[:, 2 * H:3 * H], A[:, 3 * H:]
    dct = tc * tc
    xp.subtract(1, dct, out=dct)
    dct *= o
    dct *= dh
    if dc is not None:
        dct += dc
    # gradients of the activations ...
    xp.multiply(dct, g, out=dZ[:, :H])
    if c_prev is None:
        dZ[:, H:2 * H] = 0
    else:
        xp.multiply(dct, c_prev, out=dZ[:, H:2 * H])
    xp.multiply(dct, i, out=dZ[:, 2 * H:3 * H])
    xp.multiply(dh, tc, out=dZ[:, 3 * H:])
    # ... times the derivatives: a(1-a) for the sigmoid gates, 1-g^2 for g
    d = xp.subtract(1, A)
    d *= A
    dg = d[:, 2 * H:3 * H]
    xp.multiply(g, g, out=dg)
    xp.subtract(1, dg, out=dg)
    dZ *= d
    return dct


def _weight_grads_sequence(xp, dZ, x, out, h0, reverse, need_ih, need_hh):
    """dW_ih = sum_t dZ_t^T x_t and dW_hh = sum_t dZ_t^T h_{t-1} as one GEMM each over all steps
    (plus one (N x N) GEMM for the initial state). h_{t-1} is out[t-1] (out[t+1] if reverse)."""
    T, N, GH = dZ.shape
    dw_ih = dw_hh = None
    if need_ih:
        dw_ih = dZ.reshape(T * N, GH).T @ x.reshape(T * N, x.shape[2])
    if need_hh:
        H = out.shape[2]
        if T > 1:
            dz_part = dZ[:-1] if reverse else dZ[1:]
            h_part = out[1:] if reverse else out[:-1]
            dw_hh = dz_part.reshape(-1, GH).T @ h_part.reshape(-1, H)
        else:
            dw_hh = xp.zeros((GH, H), dtype=dZ.dtype)
        if h0 is not None:
            dw_hh += dZ[0 if not reverse else T - 1].T @ h0
    return dw_ih, dw_hh


class LSTMSequence(Function):
    """One LSTM layer in one direction over a whole sequence.

    forward(x (T, N, I), h0 (N, H) or None, c0 (N, H) or None, w_ih (4H, I), w_hh (4H, H),
    b_ih (4H,) or None, b_hh (4H,) or None, reverse=False) -> (output (T, N, H), h_n, c_n)
    """

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse=False):
        xp = array_module(x)
        T, N, I = x.shape
        H = w_hh.shape[1]
        dt = x.dtype
        s, shift = _sig_scale(xp, H, 4, (2,), dt)
        # input projection of every step at once, already scaled for the tanh trick
        A = x.reshape(T * N, I) @ (w_ih * s[:, None]).T
        bias = _bias_sum(b_ih, b_hh)
        if bias is not None:
            A += bias * s
        A = A.reshape(T, N, 4 * H)
        whh_t = (w_hh * s[:, None]).T
        out = xp.empty((T, N, H), dtype=dt)
        C = xp.empty((T, N, H), dtype=dt)
        TC = xp.empty((T, N, H), dtype=dt)
        rec = xp.empty((N, 4 * H), dtype=dt)
        h, c = h0, c0
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            if h is not None:
                xp.matmul(h, whh_t, out=rec)
                A[t] += rec
            _lstm_step(xp, A[t], s, shift, c, C[t], TC[t], out[t])
            h, c = out[t], C[t]
        n = ctx.needs_input_grad
        ctx.reverse = reverse
        ctx.save_for_backward(x if n[3] else None, h0, c0, w_ih if n[0] else None, w_hh,
                              A, C, TC, out)
        return out, h.copy(), c.copy()

    @staticmethod
    def backward(ctx, dout, dh_n, dc_n):
        x, h0, c0, w_ih, w_hh, A, C, TC, out = ctx.saved
        n = ctx.needs_input_grad
        reverse = ctx.reverse
        xp = array_module(A)
        T, N, H = out.shape
        dZ = xp.empty((T, N, 4 * H), dtype=A.dtype)
        order = range(T) if reverse else range(T - 1, -1, -1)
        last = order[-1]
        need_h0, need_c0 = n[1], n[2]
        dh, dc = dh_n, dc_n
        dh_t = xp.empty((N, H), dtype=A.dtype)
        for t in order:
            p = t + 1 if reverse else t - 1  # the step that produced h_{t-1}
            first = t == last
            c_prev = c0 if first else C[p]
            xp.add(dout[t], dh, out=dh_t)
            dct = _lstm_step_back(xp, A[t], c_prev, TC[t], dh_t, dc, dZ[t])
            if first:
                dh = dZ[t] @ w_hh if need_h0 else None
                dc = dct * A[t][:, H:2 * H] if need_c0 else None
            else:
                dh = dZ[t] @ w_hh
                dc = dct * A[t][:, H:2 * H]
        dx = None
        if n[0]:
            dx = (dZ.reshape(T * N, 4 * H) @ w_ih).reshape(T, N, w_ih.shape[1])
        dw_ih, dw_hh = _weight_grads_sequence(xp, dZ, x, out, h0, reverse, n[3], n[4])
        db_ih, db_hh = _bias_grads(ctx, dZ.reshape(T * N, 4 * H).sum(axis=0)) if (n[5] or n[6]) \
            else (None, None)
        return dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh


class LSTMCell(Function):
    """One LSTM step: forward(x (N, I), h (N, H) or None, c (N, H) or None, w_ih, w_hh, b_ih,
    b_hh) -> (h', c')."""

    @staticmethod
    def forward(ctx, x, h, c, w_ih, w_hh, b_ih, b_hh):
        xp = array_module(x)
        N = x.shape[0]
        H = w_hh.shape[1]
        dt = x.dtype
        s, shift = _sig_scale(xp, H, 4, (2,), dt)
        A = x @ w_ih.T
        if h is not None:
            A += h @ w_hh.T
        bias = _bias_sum(b_ih, b_hh)
        if bias is not None:
            A += bias
        A *= s
        c_new = xp.empty((N, H), dtype=dt)
        tc = xp.empty((N, H), dtype=dt)
        h_new = xp.empty((N, H), dtype=dt)
        _lstm_step(xp, A, s, shift, c, c_new, tc, h_new)
        n = ctx.needs_input_grad
        ctx.save_for_backward(x if n[3] else None, h if n[4] else None, c,
                              w_ih if n[0] else None, w_hh if n[1] else None, A, tc)
        return h_new, c_new

    @staticmethod
    def backward(ctx, dh, dc):
        x, h, c, w_ih, w_hh, A, tc = ctx.saved
        n = ctx.needs_input_grad
        xp = array_module(A)
        dZ = xp.empty_like(A)
        dct = _lstm_step_back(xp, A, c, tc, dh, dc, dZ)
        H = tc.shape[1]
        dx = dZ @ w_ih if n[0] else None
        dh_prev = dZ @ w_hh if n[1] else None
        dc_prev = dct * A[:, H:2 * H] if n[2] else None
        dw_ih = dZ.T @ x if n[3] else None
        dw_hh = dZ.T @ h if n[4] and h is not None else None
        if n[4] and h is None:
            dw_hh = xp.zeros((4 * H, H), dtype=A.dtype)
        db_ih, db_hh = _bias_grads(ctx, dZ.sum(axis=0)) if (n[5] or n[6]) else (None, None)
        return dx, dh_prev, dc_prev, dw_ih, dw_hh, db_ih, db_hh


# ---- GRU -----------------------------------------------------------------------------------------
def _gru_step(xp, A, gh, h_prev, h_out):
    """A holds [s*(W_ir x + b_ir), s*(W_iz x + b_iz), W_in x + b_in] (N, 3H), gh the same for the
    hidden side (s = 1/2 on the r and z rows). In place, A becomes [r, z, n]; writes h_t."""
    H = h_out.shape[1]
    rz = A[:, :2 * H]
    rz += gh[:, :2 * H]
    xp.tanh(rz, out=rz)
    rz *= 0.5
    rz += 0.5
    r, z, nn = A[:, :H], A[:, H:2 * H], A[:, 2 * H:]
    nn += r * gh[:, 2 * H:]
    xp.tanh(nn, out=nn)
    # h' = n + z * (h - n)
    if h_prev is None:  # h' = n - z * n
        xp.multiply(z, nn, out=h_out)
        xp.subtract(nn, h_out, out=h_out)
    else:
        xp.subtract(h_prev, nn, out=h_out)
        h_out *= z
        h_out += nn


def _gru_step_back(xp, A, ghn, h_prev, dh, dGH, dAN):
    """Gradient of one GRU step. A = [r, z, n], ghn = W_hn h + b_hn, dh the gradient reaching
    h_t. Writes the gradient of the hidden-side pre-activations [r, z, n*] into dGH (N, 3H) and
    of the input-side n pre-activation into dAN (N, H) (input-side r and z equal the hidden
    side's). Returns dh * z, the direct part of the gradient of h_{t-1}."""
    H = dAN.shape[1]
    r, z, nn = A[:, :H], A[:, H:2 * H], A[:, 2 * H:]
    # through n: dn = dh * (1 - z), dan = dn * (1 - n^2)
    xp.subtract(1, z, out=dAN)
    dAN *= dh
    w = nn * nn
    xp.subtract(1, w, out=w)
    dAN *= w
    # gate r: dr = dan * ghn ; gate z: dz = dh * (h_prev - n)
    xp.multiply(dAN, ghn, out=dGH[:, :H])
    dzz = dGH[:, H:2 * H]
    if h_prev is None:
        xp.negative(nn, out=dzz)
    else:
        xp.subtract(h_prev, nn, out=dzz)
    dzz *= dh
    rz = A[:, :2 * H]
    d = xp.subtract(1, rz)
    d *= rz
    dGH[:, :2 * H] *= d
    xp.multiply(dAN, r, out=dGH[:, 2 * H:])
    return dh * z


def _gru_split_grads(xp, dGH, dAN, X, w_ih, need_x, need_w):
    """Input-side gradients when the input-side pre-activation gradient is [dGH[:, :2H], dAN]:
    dX = that @ w_ih, dW_ih = that^T X (X and the gradients flattened to rows)."""
    H = dAN.shape[1]
    dx = dw = None
    if need_x:
        dx = dGH[:, :2 * H] @ w_ih[:2 * H]
        dx += dAN @ w_ih[2 * H:]
    if need_w:
        dw = xp.empty((3 * H, X.shape[1]), dtype=dGH.dtype)
        xp.matmul(dGH[:, :2 * H].T, X, out=dw[:2 * H])
        xp.matmul(dAN.T, X, out=dw[2 * H:])
    return dx, dw


class GRUSequence(Function):
    """One GRU layer in one direction over a whole sequence.

    forward(x (T, N, I), h0 (N, H) or None, w_ih (3H, I), w_hh (3H, H), b_ih (3H,) or None,
    b_hh (3H,) or None, reverse=False) -> (output (T, N, H), h_n)
    """

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, reverse=False):
        xp = array_module(x)
        T, N, I = x.shape
        H = w_hh.shape[1]
        dt = x.dtype
        s, _ = _sig_scale(xp, H, 3, (2,), dt)
        A = x.reshape(T * N, I) @ (w_ih * s[:, None]).T
        if b_ih is not None:
            A += b_ih * s
        A = A.reshape(T, N, 3 * H)
        whh_t = (w_hh * s[:, None]).T
        bhh = b_hh * s if b_hh is not None else xp.zeros(3 * H, dtype=dt)
        out = xp.empty((T, N, H), dtype=dt)
        GHN = xp.empty((T, N, H), dtype=dt)
        gh = xp.empty((N, 3 * H), dtype=dt)
        h = h0
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            if h is None:
                gh[...] = bhh
            else:
                xp.matmul(h, whh_t, out=gh)
                gh += bhh
            GHN[t] = gh[:, 2 * H:]
            _gru_step(xp, A[t], gh, h, out[t])
            h = out[t]
        n = ctx.needs_input_grad
        ctx.reverse, ctx.input_size = reverse, I
        ctx.save_for_backward(x if n[2] else None, h0, w_ih if n[0] else None, w_hh, A, GHN, out)
        return out, h.copy()

    @staticmethod
    def backward(ctx, dout, dh_n):
        x, h0, w_ih, w_hh, A, GHN, out = ctx.saved
        n = ctx.needs_input_grad
        reverse = ctx.reverse
        xp = array_module(A)
        T, N, H = out.shape
        dGH = xp.empty((T, N, 3 * H), dtype=A.dtype)
        dAN = xp.empty((T, N, H), dtype=A.dtype)
        order = range(T) if reverse else range(T - 1, -1, -1)
        last = order[-1]
        dh = dh_n
        dh_t = xp.empty((N, H), dtype=A.dtype)
        for t in order:
            p = t + 1 if reverse else t - 1
            first = t == last
            h_prev = h0 if first else out[p]
            xp.add(dout[t], dh, out=dh_t)
            direct = _gru_step_back(xp, A[t], GHN[t], h_prev, dh_t, dGH[t], dAN[t])
            if not first or n[1]:
                dh = direct
                dh += dGH[t] @ w_hh
            else:
                dh = None
        I = ctx.input_size
        dGH2 = dGH.reshape(T * N, 3 * H)
        dAN2 = dAN.reshape(T * N, H)
        dx, dw_ih = _gru_split_grads(xp, dGH2, dAN2, x.reshape(T * N, I) if x is not None else None,
                                     w_ih, n[0], n[2])
        if dx is not None:
            dx = dx.reshape(T, N, I)
        _, dw_hh = _weight_grads_sequence(xp, dGH, None, out, h0, reverse, False, n[3])
        db_ih = db_hh = None
        if n[4] or n[5]:
            db_hh = dGH2.sum(axis=0)
        if n[4]:
            db_ih = db_hh.copy()
            db_ih[2 * H:] = dAN2.sum(axis=0)
        if not n[5]:
            db_hh = None
        return dx, dh, dw_ih, dw_hh, db_ih, db_hh


class GRUCell(Function):
    """One GRU step: forward(x (N, I), h (N, H) or None, w_ih, w_hh, b_ih, b_hh) -> h'."""

    @staticmethod
    def forward(ctx, x, h, w_ih, w_hh, b_ih, b_hh):
        xp = array_module(x)
        N = x.shape[0]
        H = w_hh.shape[1]
        dt = x.dtype
        A = x @ w_ih.T
        if b_ih is not None:
            A += b_ih
        if h is not None:
            gh = h @ w_hh.T
            if b_hh is not None:
                gh += b_hh
        else:
            gh = xp.zeros((N, 3 * H), dtype=dt)
            if b_hh is not None:
                gh += b_hh
        # the r and z rows take the 1/2 of the tanh form of the sigmoid here
        A[:, :2 * H] *= 0.5
        gh[:, :2 * H] *= 0.5
        ghn = gh[:, 2 * H:].copy()
        h_new = xp.empty((N, H), dtype=dt)
        _gru_step(xp, A, gh, h, h_new)
        n = ctx.needs_input_grad
        ctx.save_for_backward(x if n[2] else None, h, w_ih if n[0] else None,
                              w_hh if n[1] else None, A, ghn)
        return h_new

    @staticmethod
    def backward(ctx, dh):
        x, h, w_ih, w_hh, A, ghn = ctx.saved
        n = ctx.needs_input_grad
        xp = array_module(A)
        N, H = ghn.shape
        dGH = xp.empty((N, 3 * H), dtype=A.dtype)
        dAN = xp.empty((N, H), dtype=A.dtype)
        direct = _gru_step_back(xp, A, ghn, h, dh, dGH, dAN)
        dx, dw_ih = _gru_split_grads(xp, dGH, dAN, x, w_ih, n[0], n[2])
        dh_prev = None
        if n[1]:
            dh_prev = direct
            dh_prev += dGH @ w_hh
        dw_hh = None
        if n[3]:
            dw_hh = dGH.T @ h if h is not None else xp.zeros((3 * H, H), dtype=A.dtype)
        db_ih = db_hh = None
        if n[4]:
            db_ih = dGH.sum(axis=0)
            db_ih[2 * H:] = dAN.sum(axis=0)
        if n[5]:
            db_hh = dGH.sum(axis=0)
        return dx, dh_prev, dw_ih, dw_hh, db_ih, db_hh


# ---- plain RNN -----------------------------------------------------------------------------------
def _rnn_act(xp, z, out, nonlinearity):
    if nonlinearity == "tanh":
        xp.tanh(z, out=out)
    else:
        xp.maximum(z, 0, out=out)


def _rnn_act_back(xp, h, dh, nonlinearity, out):
    """Gradient of the pre-activation from the activation h and its gradient dh."""
    if nonlinearity == "tanh":
        xp.multiply(h, h, out=out)
        xp.subtract(1, out, out=out)
        out *= dh
    else:
        xp.multiply(dh, h > 0, out=out)


class RNNSequence(Function):
    """One Elman RNN layer in one direction: h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),
    act = tanh or relu.

    forward(x (T, N, I), h0 (N, H) or None, w_ih (H, I), w_hh (H, H), b_ih, b_hh,
    nonlinearity='tanh', reverse=False) -> (output (T, N, H), h_n)
    """

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh", reverse=False):
        xp = array_module(x)
        T, N, I = x.shape
        H = w_hh.shape[1]
        Z = x.reshape(T * N, I) @ w_ih.T
        bias = _bias_sum(b_ih, b_hh)
        if bias is not None:
            Z += bias
        Z = Z.reshape(T, N, H)
        whh_t = w_hh.T
        out = xp.empty((T, N, H), dtype=x.dtype)
        rec = xp.empty((N, H), dtype=x.dtype)
        h = h0
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            if h is not None:
                xp.matmul(h, whh_t, out=rec)
                Z[t] += rec
            _rnn_act(xp, Z[t], out[t], nonlinearity)
            h = out[t]
        n = ctx.needs_input_grad
        ctx.reverse, ctx.nonlinearity = reverse, nonlinearity
        ctx.save_for_backward(x if n[2] else None, h0, w_ih if n[0] else None, w_hh, out)
        return out, h.copy()

    @staticmethod
    def backward(ctx, dout, dh_n):
        x, h0, w_ih, w_hh, out = ctx.saved
        n = ctx.needs_input_grad
        reverse = ctx.reverse
        xp = array_module(out)
        T, N, H = out.shape
        dZ = xp.empty((T, N, H), dtype=out.dtype)
        order = range(T) if reverse else range(T - 1, -1, -1)
        last = order[-1]
        dh = dh_n
        dh_t = xp.empty((N, H), dtype=out.dtype)
        for t in order:
            xp.add(dout[t], dh, out=dh_t)
            _rnn_act_back(xp, out[t], dh_t, ctx.nonlinearity, dZ[t])
            dh = dZ[t] @ w_hh if (t != last or n[1]) else None
        dZ2 = dZ.reshape(T * N, H)
        dx = (dZ2 @ w_ih).reshape(T, N, w_ih.shape[1]) if n[0] else None
        dw_ih, dw_hh = _weight_grads_sequence(xp, dZ, x, out, h0, reverse, n[2], n[3])
        db_ih, db_hh = _bias_grads(ctx, dZ2.sum(axis=0)) if (n[4] or n[5]) else (None, None)
        return dx, dh, dw_ih, dw_hh, db_ih, db_hh


class RNNCell(Function):
    """One Elman RNN step: forward(x (N, I), h (N, H) or None, w_ih, w_hh, b_ih, b_hh,
    nonlinearity='tanh') -> h'."""

    @staticmethod
    def forward(ctx, x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
        xp = array_module(x)
        z = x @ w_ih.T
        if h is not None:
            z += h @ w_hh.T
        bias = _bias_sum(b_ih, b_hh)
        if bias is not None:
            z += bias
        _rnn_act(xp, z, z, nonlinearity)
        n = ctx.needs_input_grad
        ctx.nonlinearity = nonlinearity
        ctx.save_for_backward(x if n[2] else None, h if n[3] else None, w_ih if n[0] else None,
                              w_hh if n[1] else None, z)
        return z

    @staticmethod
    def backward(ctx, dh):
        x, h, w_ih, w_hh, out = ctx.saved
        n = ctx.needs_input_grad
        xp = array_module(out)
        dZ = xp.empty_like(out)
        _rnn_act_back(xp, out, dh, ctx.nonlinearity, dZ)
        H = out.shape[1]
        dx = dZ @ w_ih if n[0] else None
        dh_prev = dZ @ w_hh if n[1] else None
        dw_ih = dZ.T @ x if n[2] else None
        dw_hh = None
        if n[3]:
            dw_hh = dZ.T @ h if h is not None else xp.zeros((H, H), dtype=out.dtype)
        db_ih, db_hh = _bias_grads(ctx, dZ.sum(axis=0)) if (n[4] or n[5]) else (None, None)
        return dx, dh_prev, dw_ih, dw_hh, db_ih, db_hh
