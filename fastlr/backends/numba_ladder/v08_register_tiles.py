"""v8, register tiles in LLVM vector IR, packed panels, a prefetch of the next panel.

Shapes: N samples, D features, C classes, B batch, T threads. P rows of a packed panel.

Numba keeps a local array of accumulators in memory; the intrinsics of
``fastlr.backends.numba.tiles`` hold them in registers. v8 copies up to PANEL rows of X into a
contiguous panel, runs the 4 x 5 score tile and a 5 x 4-vector gradient tile on it, and while
the scores run asks for the next panel's rows (``prefetcht1``, into L2): without that prefetch
the copy stalls on every row. The copy is a loop over d (a slice assignment was twice as slow).
v7's step structure around it. ``loss_and_grad`` used this chunk kernel until the epoch's own
replaced it.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.extending import intrinsic

from ..numba.partition import _chunk_bounds
from ..numba.tiles import (
    FAST, SCORE_SAMPLES, TILE_CLASSES, VECTOR_BYTES, _emit_grad_tile, _emit_score_tile,
    _llvm_prefetch, _prefetch_line, _row_length, _score_leftovers)
from .v01_naive import _softmax_row
from .v07_vector_update import _apply_update_rows


PANEL = 64          # samples packed at a time: 64 rows of MNIST are 200 KB, at home in L2
GRAD_VECTORS = 4    # vectors of features of the wide gradient tile: 5 x 4 accumulators


def _make_grad_tile(n_vectors):
    """An intrinsic ``grad_tile(Xp, n, G, d0, c0, out)``: for the TILE_CLASSES classes
    c0.. and the n_vectors vectors of features from d0,
    ``out[c, d] += sum_{s < n} G[s, c] Xp[s, d]``, summed over s in order in registers and
    added to ``out`` once. Xp (P, D), G (P, C), out (C, D), C-contiguous, one float dtype."""

    @intrinsic
    def grad_tile(typingctx, Xp, n, G, d0, c0, out):
        sig = types.void(Xp, n, G, d0, c0, out)

        def codegen(context, builder, signature, args):
            xp, n_, g, d0_, c0_, out_ = args
            x_type, _, g_type, _, _, out_type = signature.args
            xa = context.make_array(x_type)(context, builder, xp)
            ga = context.make_array(g_type)(context, builder, g)
            oa = context.make_array(out_type)(context, builder, out_)
            x_row = _row_length(context, builder, x_type, xa)
            _emit_grad_tile(context, builder, x_type, xa, lambda s: builder.mul(s, x_row), n_,
                            g_type, ga, _row_length(context, builder, g_type, ga), d0_, c0_, oa,
                            _row_length(context, builder, out_type, oa), TILE_CLASSES,
                            n_vectors)
            return context.get_dummy_value()

        return sig, codegen

    return grad_tile


_grad_tile_wide = _make_grad_tile(GRAD_VECTORS)
_grad_tile_narrow = _make_grad_tile(1)


@intrinsic
def _score_tile(typingctx, Xp, s0, W, c0, n_vectors, S):
    """``score_tile(Xp, s0, W, c0, n_vectors, S)``: for the SCORE_SAMPLES rows s0.. of Xp and
    the TILE_CLASSES rows c0.. of W, ``S[s, c] = sum_{d < n_vectors * lanes} Xp[s, d] W[c, d]``.
    Xp (P, D), W (C, D), S (P, C), one float dtype."""
    sig = types.void(Xp, s0, W, c0, n_vectors, S)

    def codegen(context, builder, signature, args):
        xp, s0_, w, c0_, nv, s_out = args
        x_type, _, w_type, _, _, s_type = signature.args
        intp = context.get_value_type(types.intp)
        xa = context.make_array(x_type)(context, builder, xp)
        x_row = _row_length(context, builder, x_type, xa)
        starts = [builder.mul(builder.add(s0_, ir.Constant(intp, s)), x_row)
                  for s in range(SCORE_SAMPLES)]
        _emit_score_tile(context, builder, x_type, xa, starts, s0_, w_type,
                         context.make_array(w_type)(context, builder, w), c0_, nv, s_type,
                         context.make_array(s_type)(context, builder, s_out))
        return context.get_dummy_value()

    return sig, codegen


def _emit_prefetch(builder, base, n_lines):
    """``prefetcht1`` the n_lines cache lines from the byte pointer base on."""
    fn = _llvm_prefetch(builder)
    with cgutils.for_range(builder, n_lines) as loop:
        _prefetch_line(builder, fn, builder.gep(base, [builder.mul(
            loop.index, ir.Constant(n_lines.type, 64))]))


@intrinsic
def _prefetch_row(typingctx, X, i):
    """Ask for every cache line of row i of X (N, D) to be brought into L2 (``prefetcht1``)."""
    sig = types.void(X, i)

    def codegen(context, builder, signature, args):
        x_type = signature.args[0]
        xa = context.make_array(x_type)(context, builder, args[0])
        intp = context.get_value_type(types.intp)
        row = _row_length(context, builder, x_type, xa)
        base = builder.bitcast(builder.gep(xa.data, [builder.mul(args[1], row)]),
                               ir.IntType(8).as_pointer())
        row_bytes = builder.mul(row, ir.Constant(intp, x_type.dtype.bitwidth // 8))
        n_lines = builder.udiv(builder.add(row_bytes, ir.Constant(intp, 63)),
                               ir.Constant(intp, 64))
        _emit_prefetch(builder, base, n_lines)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _prefetch_span(typingctx, X, i, lo, n):
    """Ask for the cache lines of X[i, lo:lo + n] (X (N, D)) to be brought into L2
    (``prefetcht1``): one line per 64 bytes from the first element, and one more for a span
    that does not start on a line (a prefetch never faults)."""
    sig = types.void(X, i, lo, n)

    def codegen(context, builder, signature, args):
        x_type = signature.args[0]
        xa = context.make_array(x_type)(context, builder, args[0])
        intp = context.get_value_type(types.intp)
        row = _row_length(context, builder, x_type, xa)
        start = builder.add(builder.mul(args[1], row), args[2])
        base = builder.bitcast(builder.gep(xa.data, [start]), ir.IntType(8).as_pointer())
        n_bytes = builder.mul(args[3], ir.Constant(intp, x_type.dtype.bitwidth // 8))
        n_lines = builder.add(builder.udiv(n_bytes, ir.Constant(intp, 64)),
                              ir.Constant(intp, 1))
        _emit_prefetch(builder, base, n_lines)
        return context.get_dummy_value()

    return sig, codegen


@njit(fastmath=FAST, cache=True)
def _panel_scores(Xp, n_rows, W, S, X, rows, next_lo, next_hi):
    """S[s, c] = Xp[s] . W[c] for s < n_rows (rounded up to SCORE_SAMPLES; rows past n_rows
    must be finite and are ignored): the tiles over whole vectors, then the leftover classes
    and features with plain loops. Along the way, prefetch the rows ``rows[next_lo:next_hi]``
    of X, the next panel, SCORE_SAMPLES rows per tile so the requests are spread out."""
    C, D = W.shape
    lanes = VECTOR_BYTES // Xp.itemsize
    n_vec = D // lanes
    d_tail = n_vec * lanes
    c_tiles = C - C % TILE_CLASSES
    n_next = next_hi - next_lo
    n_blocks = (n_rows + SCORE_SAMPLES - 1) // SCORE_SAMPLES
    per_block = (n_next + n_blocks - 1) // n_blocks
    for block in range(n_blocks):
        s0 = block * SCORE_SAMPLES
        for j in range(next_lo + block * per_block, min(next_hi, next_lo + (block + 1) * per_block)):
            _prefetch_row(X, rows[j])
        for c0 in range(0, c_tiles, TILE_CLASSES):
            _score_tile(Xp, s0, W, c0, n_vec, S)
        for s in range(s0, s0 + SCORE_SAMPLES):
            _score_leftovers(Xp[s], W, S[s], c_tiles, d_tail, 1.0)


@njit(fastmath=FAST, cache=True)
def _panel_gradient(Xp, n_rows, G, part_W):
    """part_W (C, D) += G[:n_rows]^T Xp[:n_rows]: register tiles of TILE_CLASSES classes x
    GRAD_VECTORS (then 1) vectors of features, leftover classes and features with plain
    loops."""
    C, D = part_W.shape
    lanes = VECTOR_BYTES // Xp.itemsize
    wide = GRAD_VECTORS * lanes
    d_wide = D - D % wide
    d_narrow = D - D % lanes
    c_tiles = C - C % TILE_CLASSES
    for d0 in range(0, d_wide, wide):
        for c0 in range(0, c_tiles, TILE_CLASSES):
            _grad_tile_wide(Xp, n_rows, G, d0, c0, part_W)
    for d0 in range(d_wide, d_narrow, lanes):
        for c0 in range(0, c_tiles, TILE_CLASSES):
            _grad_tile_narrow(Xp, n_rows, G, d0, c0, part_W)
    for s in range(n_rows):
        x = Xp[s]
        for c in range(c_tiles):
            g = G[s, c]
            row = part_W[c]
            for d in range(d_narrow, D):
                row[d] += g * x[d]
        for c in range(c_tiles, C):
            g = G[s, c]
            row = part_W[c]
            for d in range(D):
                row[d] += g * x[d]


@njit(cache=True)
def _chunk_grad_v8(X, y, sample_weight, rows, lo, hi, inv_batch, W, b, part_W, part_b,
                   after_lo, after_hi, Xp, S, G, z, G_row):
    """Partial gradient of samples ``rows[lo:hi]`` in panels of up to PANEL samples: copy the
    panel's rows of X into the contiguous Xp (P, D), the scores with the register-tiled kernel
    into S (P, C) while prefetching the next panel's rows (after the last panel, those of
    ``rows[after_lo:after_hi]``, the first panel of this chunk in the next step), the softmax
    and loss per sample with ``G[s] = s_i (p - onehot) / B`` in W's dtype, then
    part_W += G^T Xp with the register-tiled gradient kernel. Xp, S, G, z, G_row are the
    caller's scratch."""
    C, D = W.shape
    part_W[:, :] = 0
    part_b[:] = 0
    loss = 0.0
    for p0 in range(lo, hi, PANEL):
        n_rows = min(PANEL, hi - p0)
        for s in range(n_rows):
            source = X[rows[p0 + s]]
            packed = Xp[s]
            for d in range(D):
                packed[d] = source[d]
        if p0 + PANEL < hi:
            next_lo, next_hi = p0 + PANEL, min(hi, p0 + 2 * PANEL)
        else:
            next_lo, next_hi = after_lo, min(after_hi, after_lo + PANEL)
        _panel_scores(Xp, n_rows, W, S, X, rows, next_lo, next_hi)
        for s in range(n_rows):
            i = rows[p0 + s]
            for c in range(C):
                z[c] = S[s, c] + b[c]
            loss += _softmax_row(z, y[i], sample_weight[i], G_row)
            for c in range(C):
                g = W.dtype.type(G_row[c] * inv_batch)
                G[s, c] = g
                part_b[c] += g
        _panel_gradient(Xp, n_rows, G, part_W)
    return loss


@njit(cache=True)
def _panel_scratch(T, C, D, dtype):
    """Per-chunk scratch of the v8 kernel: packed rows (zeroed once, so the rows past a short
    panel that the score tile reads are finite), scores, scaled gradient of the scores, and
    the softmax's float64 rows."""
    rows = (PANEL + SCORE_SAMPLES - 1) // SCORE_SAMPLES * SCORE_SAMPLES
    Xp = np.zeros((T, rows, D), dtype)
    S = np.zeros((T, rows, C), dtype)
    G = np.zeros((T, rows, C), dtype)
    z = np.zeros((T, C))
    G_row = np.zeros((T, C))
    return Xp, S, G, z, G_row


@njit(parallel=True, cache=True)
def sgd_epoch_v8(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                 alpha, parts_W, parts_b):
    """v8: v7's step structure around the packed, register-tiled chunk kernel."""
    T, C, D = parts_W.shape
    M = perm.shape[0]
    n_steps = (M + batch_size - 1) // batch_size
    grad_rows = np.empty((T, D), W.dtype)
    Xp, S, G, z, G_row = _panel_scratch(T, C, D, W.dtype)
    if T == 1:
        loss_sum = 0.0
        for t in range(n_steps):
            start = t * batch_size
            stop = min(start + batch_size, M)
            loss_sum += _chunk_grad_v8(X, y, sample_weight, perm, start, stop,
                                       1.0 / (stop - start), W, b, parts_W[0], parts_b[0],
                                       stop, min(stop + batch_size, M), Xp[0], S[0], G[0],
                                       z[0], G_row[0])
            _apply_update_rows(W, b, vel_W, vel_b, parts_W, parts_b, lr_steps[t], momentum,
                               alpha, grad_rows[0])
        return loss_sum
    W_copy = np.empty((T, C, D), W.dtype)
    b_copy = np.empty((T, C), W.dtype)
    vel_W_copy = np.empty((T, C, D), W.dtype)
    vel_b_copy = np.empty((T, C), W.dtype)
    grads_W = np.empty((2, T, C, D), W.dtype)
    grads_b = np.empty((2, T, C), W.dtype)
    for k in range(T):
        W_copy[k] = W
        b_copy[k] = b
        vel_W_copy[k] = vel_W
        vel_b_copy[k] = vel_b
    chunk_loss = np.zeros(T)
    loss_sum = 0.0
    for t in range(n_steps):
        start = t * batch_size
        stop = min(start + batch_size, M)
        inv_batch = 1.0 / (stop - start)
        now = t % 2
        before = 1 - now
        for k in prange(T):
            if t > 0:
                _apply_update_rows(W_copy[k], b_copy[k], vel_W_copy[k], vel_b_copy[k],
                                   grads_W[before], grads_b[before], lr_steps[t - 1],
                                   momentum, alpha, grad_rows[k])
            lo, hi = _chunk_bounds(start, stop, k, T)
            after_lo, after_hi = _chunk_bounds(stop, min(stop + batch_size, M), k, T)
            chunk_loss[k] = _chunk_grad_v8(X, y, sample_weight, perm, lo, hi, inv_batch,
                                           W_copy[k], b_copy[k], grads_W[now, k],
                                           grads_b[now, k], after_lo, after_hi, Xp[k], S[k],
                                           G[k], z[k], G_row[k])
        for k in range(T):
            loss_sum += chunk_loss[k]
    if n_steps > 0:
        last = (n_steps - 1) % 2
        W[...] = W_copy[0]
        b[...] = b_copy[0]
        vel_W[...] = vel_W_copy[0]
        vel_b[...] = vel_b_copy[0]
        _apply_update_rows(W, b, vel_W, vel_b, grads_W[last], grads_b[last],
                           lr_steps[n_steps - 1], momentum, alpha, grad_rows[0])
    return loss_sum
