"""Recurrent kernels: plain RNN (tanh or relu), LSTM and GRU, one step (cells) and a whole
sequence (layers), with PyTorch's gate order and weight layout.

Layouts seen by callers, as in PyTorch: ``w_ih`` (G*H, I), ``w_hh`` (G*H, H), biases (G*H,),
where G is 1 (RNN), 4 (LSTM: gates i, f, g, o) or 3 (GRU: gates r, z, n). Sequences are
time-major: x (T, N, I), output (T, N, H); states (N, H).

Every op is ONE graph node. A sequence op projects the input of all T steps with one batched
GEMM, loops over time for the recurrent GEMM and one fused elementwise pass, saves the gate
activations, and in backward runs backpropagation through time in a loop that does only the
recurrent GEMM and the elementwise work; the weight gradients and the input gradient are one
GEMM each over all steps at the end.

Inside, the kernels work feature-major: gates as (G*H, N) and states as (H, N) per step. Each
gate is then a contiguous block of rows, so the elementwise passes run on contiguous memory
(batch-major (N, G*H) gate slices are strided and measured 2 to 4 times slower in NumPy), and
the recurrent GEMM is ``w_hh (G*H, H) @ h^T (H, N)`` on the weights as stored, the fastest of
the layouts measured with OpenBLAS. The LSTM writes h_t straight into the (T, N, H) output
through a transposed view; GRU and RNN transpose their states back once per call.

Sigmoid is computed as ``0.5 * tanh(x / 2) + 0.5`` (one transcendental, twice as fast as exp
in NumPy). The sequence ops fold the ``1/2`` into the rows of the weights and biases of the
sigmoid gates, so one ``tanh`` over the whole gate block serves both nonlinearities.

A missing initial state (``None``) means zeros and skips the work that zeros make moot.
``reverse=True`` runs the sequence from step T-1 down to 0 (the backward direction of a
bidirectional layer); ``output[t]`` is still the state after reading ``x[t]``.
"""
from __future__ import annotations

from ..autograd import Function
from ..backend import array_module
from .activation import tanh


def _gate_scale(xp, H, gates, dtype):
    """Per-row factor of a gate block: 1/2 on the sigmoid rows (LSTM i, f, o; GRU r, z), 1 on
    the tanh rows (LSTM g, GRU n), so that tanh(scale * z) serves both nonlinearities."""
    s = xp.full(gates * H, 0.5, dtype=dtype)
    s[2 * H:3 * H] = 1
    return s


def _bias_sum(b_ih, b_hh):
    if b_ih is None:
        return b_hh
    if b_hh is None:
        return b_ih
    return b_ih + b_hh


def _same_bias_grads(n, db):
    """The same gradient for b_ih and b_hh (inputs -2 and -1), as separate arrays."""
    g_ih = db if n[-2] else None
    g_hh = (db.copy() if g_ih is not None else db) if n[-1] else None
    return g_ih, g_hh


def _input_and_weight_grads(xp, n, dZ, x, w_ih, out, h0, reverse):
    """dx, dW_ih, dW_hh, db_ih, db_hh of an LSTM or plain RNN sequence from the gate gradients
    of all steps, dZ (G*H, T, N): one GEMM (or sum) each. ``n`` is needs_input_grad, whose last
    four entries are w_ih, w_hh, b_ih, b_hh."""
    T, N = dZ.shape[1], dZ.shape[2]
    dZ2 = dZ.reshape(dZ.shape[0], T * N)
    dx = (dZ2.T @ w_ih).reshape(T, N, w_ih.shape[1]) if n[0] else None
    dw_ih = dZ2 @ x.reshape(T * N, x.shape[2]) if n[-4] else None
    dw_hh = _recurrent_weight_grad(xp, dZ, out, h0, reverse) if n[-3] else None
    db_ih, db_hh = _same_bias_grads(n, dZ2.sum(axis=1)) if (n[-2] or n[-1]) else (None, None)
    return dx, dw_ih, dw_hh, db_ih, db_hh


def _project(xp, w, x, bias):
    """w @ x[t]^T for every step at once: (T, G*H, N), plus a bias column (G*H,)."""
    P = xp.matmul(w, x.transpose(0, 2, 1))
    if bias is not None:
        P += bias[:, None]
    return P


def _steps(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def _back_steps(T, reverse):
    """Backward visits the steps in the opposite order; yields (t, p, first) with p the step
    that produced h_{t-1} and ``first`` true at the step that read the initial state."""
    for t in (range(T) if reverse else range(T - 1, -1, -1)):
        first = t == (T - 1 if reverse else 0)
        yield t, (t + 1 if reverse else t - 1), first


def _recurrent_weight_grad(xp, dZ, out, h0, reverse):
    """dW_hh = sum_t dZ_t h_{t-1}^T from dZ (K, T, N), the pre-activation gradients of every
    step: one GEMM over the steps that had a previous output (h_{t-1} = out[t-1], or out[t+1]
    if reverse) plus one for the initial state."""
    K, T, N = dZ.shape
    H = out.shape[2]
    if T > 1:
        steps = slice(0, T - 1) if reverse else slice(1, T)
        prev = out[1:] if reverse else out[:-1]
        dw = dZ[:, steps].reshape(K, (T - 1) * N) @ prev.reshape((T - 1) * N, H)
    else:
        dw = xp.zeros((K, H), dtype=dZ.dtype)
    if h0 is not None:
        dw += dZ[:, T - 1 if reverse else 0] @ h0
    return dw


def _c(xp, a):
    return None if a is None else xp.ascontiguousarray(a)


# ---- LSTM ----------------------------------------------------------------------------------------
def _lstm_step(xp, A, c_prev, c_out, tc_out, h_out):
    """A (4H, N) holds the pre-activations, already halved on the sigmoid rows; in place it
    becomes the activations [i, f, g, o]. Writes c_t, tanh(c_t) and h_t, each (H, N)."""
    H = c_out.shape[0]
    tanh(A, out=A)
    for sig in (A[:2 * H], A[3 * H:]):
        sig *= 0.5
        sig += 0.5
    i, f, g, o = A[:H], A[H:2 * H], A[2 * H:3 * H], A[3 * H:]
    if c_prev is None:
        xp.multiply(i, g, out=c_out)
    else:
        xp.multiply(f, c_prev, out=c_out)
        c_out += i * g
    tanh(c_out, out=tc_out)
    xp.multiply(o, tc_out, out=h_out)


def _lstm_step_back(xp, A, c_prev, tc, dh, dc, dZ):
    """Gradient of one LSTM step, feature-major. A = [i, f, g, o] activations (4H, N), c_prev
    (or None for zeros), tc = tanh(c_t), dh and dc the gradients reaching h_t and c_t (dc may
    be None). Writes the gradient of the pre-activations into dZ (4H, N) and returns the total
    gradient of c_t (times f it is the gradient of c_{t-1})."""
    H = tc.shape[0]
    i, f, g, o = A[:H], A[H:2 * H], A[2 * H:3 * H], A[3 * H:]
    dct = tc * tc
    xp.subtract(1, dct, out=dct)
    dct *= o
    dct *= dh
    if dc is not None:
        dct += dc
    # gradients of the activations ...
    xp.multiply(dct, g, out=dZ[:H])
    if c_prev is None:
        dZ[H:2 * H] = 0
    else:
        xp.multiply(dct, c_prev, out=dZ[H:2 * H])
    xp.multiply(dct, i, out=dZ[2 * H:3 * H])
    xp.multiply(dh, tc, out=dZ[3 * H:])
    # ... times the derivatives: a(1-a) for the sigmoid gates, 1-g^2 for g
    d = xp.subtract(1, A)
    d *= A
    dg = d[2 * H:3 * H]
    xp.multiply(g, g, out=dg)
    xp.subtract(1, dg, out=dg)
    dZ *= d
    return dct


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
        s = _gate_scale(xp, H, 4, dt)
        bias = _bias_sum(b_ih, b_hh)
        A = _project(xp, w_ih * s[:, None], x, None if bias is None else bias * s)
        whh = w_hh * s[:, None]
        out = xp.empty((T, N, H), dtype=dt)
        CT = xp.empty((T, H, N), dtype=dt)
        TC = xp.empty((T, H, N), dtype=dt)
        rec = xp.empty((4 * H, N), dtype=dt)
        h = None if h0 is None else h0.T
        c = None if c0 is None else c0.T
        for t in _steps(T, reverse):
            if h is not None:
                xp.matmul(whh, h, out=rec)
                A[t] += rec
            # h_t goes straight into the output through a transposed view: the GEMM of the
            # next step reads it as well from there as from a contiguous copy
            _lstm_step(xp, A[t], c, CT[t], TC[t], out[t].T)
            h, c = out[t].T, CT[t]
        n = ctx.needs_input_grad
        ctx.reverse = reverse
        ctx.save_for_backward(x if n[3] else None, h0, c0, w_ih if n[0] else None, w_hh,
                              A, CT, TC, out)
        return out, xp.ascontiguousarray(h.T), xp.ascontiguousarray(c.T)

    @staticmethod
    def backward(ctx, dout, dh_n, dc_n):
        x, h0, c0, w_ih, w_hh, A, CT, TC, out = ctx.saved
        n = ctx.needs_input_grad
        xp = array_module(A)
        T, N, H = out.shape
        dt = A.dtype
        whh_t = xp.ascontiguousarray(w_hh.T)
        # pre-activation gradients of all steps, laid out (4H, T, N) for the end GEMMs
        keep = any(n[:1] + n[3:])
        dZ = xp.empty((4 * H, T, N), dtype=dt) if keep else None
        dz = xp.empty((4 * H, N), dtype=dt)
        dh, dc = dh_n.T, dc_n.T
        dh_t = xp.empty((H, N), dtype=dt)
        c0t = None if c0 is None else c0.T
        for t, p, first in _back_steps(T, ctx.reverse):
            xp.add(dout[t].T, dh, out=dh_t)
            dct = _lstm_step_back(xp, A[t], c0t if first else CT[p], TC[t], dh_t, dc, dz)
            if keep:
                dZ[:, t] = dz
            dh = whh_t @ dz if not first or n[1] else None
            dc = dct * A[t][H:2 * H] if not first or n[2] else None
        dx = dw_ih = dw_hh = db_ih = db_hh = None
        if keep:
            dx, dw_ih, dw_hh, db_ih, db_hh = _input_and_weight_grads(xp, n, dZ, x, w_ih, out, h0, ctx.reverse)
        return dx, _c(xp, None if dh is None else dh.T), _c(xp, None if dc is None else dc.T), \
            dw_ih, dw_hh, db_ih, db_hh


class LSTMCell(Function):
    """One LSTM step: forward(x (N, I), h (N, H) or None, c (N, H) or None, w_ih, w_hh, b_ih,
    b_hh) -> (h', c')."""

    @staticmethod
    def forward(ctx, x, h, c, w_ih, w_hh, b_ih, b_hh):
        xp = array_module(x)
        N = x.shape[0]
        H = w_hh.shape[1]
        dt = x.dtype
        A = w_ih @ x.T
        if h is not None:
            A += w_hh @ h.T
        bias = _bias_sum(b_ih, b_hh)
        if bias is not None:
            A += bias[:, None]
        A[:2 * H] *= 0.5
        A[3 * H:] *= 0.5
        c_new = xp.empty((H, N), dtype=dt)
        tc = xp.empty((H, N), dtype=dt)
        h_new = xp.empty((H, N), dtype=dt)
        _lstm_step(xp, A, None if c is None else c.T, c_new, tc, h_new)
        n = ctx.needs_input_grad
        ctx.save_for_backward(x if n[3] else None, h if n[4] else None, c,
                              w_ih if n[0] else None, w_hh if n[1] else None, A, tc)
        return xp.ascontiguousarray(h_new.T), xp.ascontiguousarray(c_new.T)

    @staticmethod
    def backward(ctx, dh, dc):
        x, h, c, w_ih, w_hh, A, tc = ctx.saved
        n = ctx.needs_input_grad
        xp = array_module(A)
        H = tc.shape[0]
        dZ = xp.empty_like(A)
        dct = _lstm_step_back(xp, A, None if c is None else c.T, tc, dh.T, dc.T, dZ)
        dx = dZ.T @ w_ih if n[0] else None
        dh_prev = dZ.T @ w_hh if n[1] else None
        dc_prev = xp.ascontiguousarray((dct * A[H:2 * H]).T) if n[2] else None
        dw_ih = dZ @ x if n[3] else None
        dw_hh = None
        if n[4]:
            dw_hh = dZ @ h if h is not None else xp.zeros((4 * H, H), dtype=A.dtype)
        db_ih, db_hh = _same_bias_grads(n, dZ.sum(axis=1)) if (n[5] or n[6]) else (None, None)
        return dx, dh_prev, dc_prev, dw_ih, dw_hh, db_ih, db_hh


# ---- GRU -----------------------------------------------------------------------------------------
def _gru_step(xp, A, gh_rz, ghn, h_prev, h_out):
    """A (3H, N) holds the input side [r, z] pre-activations (halved) and W_in x + b_in; gh_rz
    the halved hidden side of r and z (or None when already added), ghn = W_hn h + b_hn.
    In place, A becomes [r, z, n]; writes h_t (H, N)."""
    H = h_out.shape[0]
    rz = A[:2 * H]
    if gh_rz is not None:
        rz += gh_rz
    tanh(rz, out=rz)
    rz *= 0.5
    rz += 0.5
    r, z, nn = A[:H], A[H:2 * H], A[2 * H:]
    nn += r * ghn
    tanh(nn, out=nn)
    if h_prev is None:  # h' = n - z * n
        xp.multiply(z, nn, out=h_out)
        xp.subtract(nn, h_out, out=h_out)
    else:  # h' = n + z * (h - n)
        xp.subtract(h_prev, nn, out=h_out)
        h_out *= z
        h_out += nn


def _gru_step_back(xp, A, ghn, h_prev, dh, dGH, dAN):
    """Gradient of one GRU step, feature-major. A = [r, z, n] (3H, N), ghn = W_hn h + b_hn, dh
    the gradient reaching h_t. Writes the gradient of the hidden-side pre-activations
    [r, z, W_hn h + b_hn] into dGH (3H, N) and of the input-side n pre-activation into dAN
    (H, N); the input side's r and z gradients equal the hidden side's. Returns dh * z, the
    direct part of the gradient of h_{t-1}."""
    H = dAN.shape[0]
    r, z, nn = A[:H], A[H:2 * H], A[2 * H:]
    # through n: dn = dh * (1 - z), dan = dn * (1 - n^2)
    xp.subtract(1, z, out=dAN)
    dAN *= dh
    w = nn * nn
    xp.subtract(1, w, out=w)
    dAN *= w
    # gate r: dr = dan * ghn ; gate z: dz = dh * (h_prev - n)
    xp.multiply(dAN, ghn, out=dGH[:H])
    dzz = dGH[H:2 * H]
    if h_prev is None:
        xp.negative(nn, out=dzz)
    else:
        xp.subtract(h_prev, nn, out=dzz)
    dzz *= dh
    rz = A[:2 * H]
    d = xp.subtract(1, rz)
    d *= rz
    dGH[:2 * H] *= d
    xp.multiply(dAN, r, out=dGH[2 * H:])
    return dh * z


def _gru_input_grads(xp, dGH, dAN, X, w_ih, need_x, need_w):
    """Input-side gradients when the input-side pre-activation gradient is [dGH[:2H]; dAN]
    (feature-major, (3H, M) and (H, M)): dX (M, I) and dW_ih (3H, I), X being (M, I)."""
    H = dAN.shape[0]
    dx = dw = None
    if need_x:
        dx = dGH[:2 * H].T @ w_ih[:2 * H]
        dx += dAN.T @ w_ih[2 * H:]
    if need_w:
        dw = xp.empty((3 * H, X.shape[1]), dtype=dGH.dtype)
        xp.matmul(dGH[:2 * H], X, out=dw[:2 * H])
        xp.matmul(dAN, X, out=dw[2 * H:])
    return dx, dw


def _gru_bias_grads(xp, n, dGH, dAN):
    """db_ih = [dGH[:2H] summed; dAN summed], db_hh = dGH summed, over the columns."""
    db_ih = db_hh = None
    if n[-2] or n[-1]:
        db_hh = dGH.sum(axis=1)
        if n[-2]:
            db_ih = db_hh.copy()
            db_ih[2 * db_hh.shape[0] // 3:] = dAN.sum(axis=1)
    return db_ih, db_hh if n[-1] else None


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
        s = _gate_scale(xp, H, 3, dt)
        # b_hr and b_hz only add to the pre-activations, so they join the input projection;
        # b_hn sits inside r * (W_hn h + b_hn) and stays on the hidden side
        bias = None
        if b_ih is not None or b_hh is not None:
            bias = xp.zeros(3 * H, dtype=dt)
            if b_ih is not None:
                bias += b_ih
            if b_hh is not None:
                bias[:2 * H] += b_hh[:2 * H]
            bias *= s
        A = _project(xp, w_ih * s[:, None], x, bias)
        bhn = None if b_hh is None else b_hh[2 * H:, None]
        whh = w_hh * s[:, None]
        HT = xp.empty((T, H, N), dtype=dt)
        GHN = xp.empty((T, H, N), dtype=dt)
        gh = xp.empty((3 * H, N), dtype=dt)
        h = None if h0 is None else h0.T
        for t in _steps(T, reverse):
            if h is None:
                GHN[t] = 0 if bhn is None else bhn
                _gru_step(xp, A[t], None, GHN[t], None, HT[t])
            else:
                xp.matmul(whh, h, out=gh)
                if bhn is None:
                    GHN[t] = gh[2 * H:]
                else:
                    xp.add(gh[2 * H:], bhn, out=GHN[t])
                _gru_step(xp, A[t], gh[:2 * H], GHN[t], h, HT[t])
            h = HT[t]
        out = xp.ascontiguousarray(HT.transpose(0, 2, 1))
        n = ctx.needs_input_grad
        ctx.reverse, ctx.input_size = reverse, I
        ctx.save_for_backward(x if n[2] else None, h0, w_ih if n[0] else None, w_hh, A, GHN, HT,
                              out)
        return out, xp.ascontiguousarray(h.T)

    @staticmethod
    def backward(ctx, dout, dh_n):
        x, h0, w_ih, w_hh, A, GHN, HT, out = ctx.saved
        n = ctx.needs_input_grad
        xp = array_module(A)
        T, N, H = out.shape
        I = ctx.input_size
        dt = A.dtype
        whh_t = xp.ascontiguousarray(w_hh.T)
        keep = any(n[:1] + n[2:])
        if keep:  # gradients of all steps, laid out (K, T, N) for the end GEMMs
            dGH = xp.empty((3 * H, T, N), dtype=dt)
            dAN = xp.empty((H, T, N), dtype=dt)
        dgh = xp.empty((3 * H, N), dtype=dt)
        dan = xp.empty((H, N), dtype=dt)
        dh = dh_n.T
        dh_t = xp.empty((H, N), dtype=dt)
        h0t = None if h0 is None else h0.T
        for t, p, first in _back_steps(T, ctx.reverse):
            xp.add(dout[t].T, dh, out=dh_t)
            direct = _gru_step_back(xp, A[t], GHN[t], h0t if first else HT[p], dh_t, dgh, dan)
            if keep:
                dGH[:, t] = dgh
                dAN[:, t] = dan
            if not first or n[1]:
                dh = direct
                dh += whh_t @ dgh
            else:
                dh = None
        dx = dw_ih = dw_hh = db_ih = db_hh = None
        if keep:
            dGH2 = dGH.reshape(3 * H, T * N)
            dAN2 = dAN.reshape(H, T * N)
            dx, dw_ih = _gru_input_grads(xp, dGH2, dAN2, None if x is None else x.reshape(T * N, I),
                                         w_ih, n[0], n[2])
            if dx is not None:
                dx = dx.reshape(T, N, I)
            if n[3]:
                dw_hh = _recurrent_weight_grad(xp, dGH, out, h0, ctx.reverse)
            db_ih, db_hh = _gru_bias_grads(xp, n, dGH2, dAN2)
        return dx, _c(xp, None if dh is None else dh.T), dw_ih, dw_hh, db_ih, db_hh


class GRUCell(Function):
    """One GRU step: forward(x (N, I), h (N, H) or None, w_ih, w_hh, b_ih, b_hh) -> h'."""

    @staticmethod
    def forward(ctx, x, h, w_ih, w_hh, b_ih, b_hh):
        xp = array_module(x)
        N = x.shape[0]
        H = w_hh.shape[1]
        dt = x.dtype
        A = w_ih @ x.T
        if b_ih is not None:
            A += b_ih[:, None]
        if h is not None:
            gh = w_hh @ h.T
            if b_hh is not None:
                gh += b_hh[:, None]
            A[:2 * H] += gh[:2 * H]
            ghn = gh[2 * H:]
        else:
            if b_hh is not None:
                A[:2 * H] += b_hh[:2 * H, None]
            ghn = xp.zeros((H, N), dtype=dt)
            if b_hh is not None:
                ghn += b_hh[2 * H:, None]
        A[:2 * H] *= 0.5
        h_new = xp.empty((H, N), dtype=dt)
        _gru_step(xp, A, None, ghn, None if h is None else h.T, h_new)
        n = ctx.needs_input_grad
        ctx.save_for_backward(x if n[2] else None, h, w_ih if n[0] else None,
                              w_hh if n[1] else None, A, ghn)
        return xp.ascontiguousarray(h_new.T)

    @staticmethod
    def backward(ctx, dh):
        x, h, w_ih, w_hh, A, ghn = ctx.saved
        n = ctx.needs_input_grad
        xp = array_module(A)
        H, N = ghn.shape
        dGH = xp.empty((3 * H, N), dtype=A.dtype)
        dAN = xp.empty((H, N), dtype=A.dtype)
        direct = _gru_step_back(xp, A, ghn, None if h is None else h.T, dh.T, dGH, dAN)
        dx, dw_ih = _gru_input_grads(xp, dGH, dAN, x, w_ih, n[0], n[2])
        dh_prev = None
        if n[1]:
            dh_prev = dGH.T @ w_hh
            dh_prev += direct.T
        dw_hh = None
        if n[3]:
            dw_hh = dGH @ h if h is not None else xp.zeros((3 * H, H), dtype=A.dtype)
        db_ih, db_hh = _gru_bias_grads(xp, n, dGH, dAN)
        return dx, dh_prev, dw_ih, dw_hh, db_ih, db_hh


# ---- plain RNN -----------------------------------------------------------------------------------
def _rnn_act(xp, z, out, nonlinearity):
    if nonlinearity == "tanh":
        tanh(z, out=out)
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
        Z = _project(xp, w_ih, x, _bias_sum(b_ih, b_hh))
        HT = xp.empty((T, H, N), dtype=x.dtype)
        rec = xp.empty((H, N), dtype=x.dtype)
        h = None if h0 is None else h0.T
        for t in _steps(T, reverse):
            if h is not None:
                xp.matmul(w_hh, h, out=rec)
                Z[t] += rec
            _rnn_act(xp, Z[t], HT[t], nonlinearity)
            h = HT[t]
        out = xp.ascontiguousarray(HT.transpose(0, 2, 1))
        n = ctx.needs_input_grad
        ctx.reverse, ctx.nonlinearity = reverse, nonlinearity
        ctx.save_for_backward(x if n[2] else None, h0, w_ih if n[0] else None, w_hh, HT, out)
        return out, xp.ascontiguousarray(h.T)

    @staticmethod
    def backward(ctx, dout, dh_n):
        x, h0, w_ih, w_hh, HT, out = ctx.saved
        n = ctx.needs_input_grad
        xp = array_module(out)
        T, N, H = out.shape
        whh_t = xp.ascontiguousarray(w_hh.T)
        keep = any(n[:1] + n[2:])
        dZ = xp.empty((H, T, N), dtype=out.dtype) if keep else None
        dz = xp.empty((H, N), dtype=out.dtype)
        dh = dh_n.T
        dh_t = xp.empty((H, N), dtype=out.dtype)
        for t, _, first in _back_steps(T, ctx.reverse):
            xp.add(dout[t].T, dh, out=dh_t)
            _rnn_act_back(xp, HT[t], dh_t, ctx.nonlinearity, dz)
            if keep:
                dZ[:, t] = dz
            dh = whh_t @ dz if (not first or n[1]) else None
        dx = dw_ih = dw_hh = db_ih = db_hh = None
        if keep:
            dx, dw_ih, dw_hh, db_ih, db_hh = _input_and_weight_grads(xp, n, dZ, x, w_ih, out, h0, ctx.reverse)
        return dx, _c(xp, None if dh is None else dh.T), dw_ih, dw_hh, db_ih, db_hh


class RNNCell(Function):
    """One Elman RNN step: forward(x (N, I), h (N, H) or None, w_ih, w_hh, b_ih, b_hh,
    nonlinearity='tanh') -> h'."""

    @staticmethod
    def forward(ctx, x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
        xp = array_module(x)
        z = w_ih @ x.T
        if h is not None:
            z += w_hh @ h.T
        bias = _bias_sum(b_ih, b_hh)
        if bias is not None:
            z += bias[:, None]
        _rnn_act(xp, z, z, nonlinearity)
        n = ctx.needs_input_grad
        ctx.nonlinearity = nonlinearity
        ctx.save_for_backward(x if n[2] else None, h if n[3] else None, w_ih if n[0] else None,
                              w_hh if n[1] else None, z)
        return xp.ascontiguousarray(z.T)

    @staticmethod
    def backward(ctx, dh):
        x, h, w_ih, w_hh, hT = ctx.saved
        n = ctx.needs_input_grad
        xp = array_module(hT)
        dZ = xp.empty_like(hT)
        _rnn_act_back(xp, hT, dh.T, ctx.nonlinearity, dZ)
        H = hT.shape[0]
        dx = dZ.T @ w_ih if n[0] else None
        dh_prev = dZ.T @ w_hh if n[1] else None
        dw_ih = dZ @ x if n[2] else None
        dw_hh = None
        if n[3]:
            dw_hh = dZ @ h if h is not None else xp.zeros((H, H), dtype=hT.dtype)
        db_ih, db_hh = _same_bias_grads(n, dZ.sum(axis=1)) if (n[4] or n[5]) else (None, None)
        return dx, dh_prev, dw_ih, dw_hh, db_ih, db_hh
