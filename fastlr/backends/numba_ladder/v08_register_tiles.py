"""v8, register tiles in LLVM vector IR, packed panels, a prefetch of the next panel.

Shapes: N samples, D features, C classes, B batch, T threads. P rows of a packed panel.

Numba keeps a local array of accumulators in memory; the intrinsics here (``_score_tile``,
``_make_grad_tile``) emit the loops as LLVM vector IR with the accumulators in registers. v8
copies up to PANEL rows of X into a contiguous panel, runs the 4 x 5 score tile and a 5 x
4-vector gradient tile on it, and while the scores run asks for the next panel's rows
(``prefetcht1``, into L2): without that prefetch the copy stalls on every row. The copy is a
loop over d (a slice assignment was twice as slow). v7's step structure around it.

Frozen as measured: the code of ``fastlr/backends/numba.py`` at commit 543b54e (2026-11-27),
which measured v8. The tiles are those of Zen 4, the CPU it was written on: 64-byte vectors
whatever the CPU (on an AVX2 CPU LLVM splits each into two registers, and the 20
accumulators no longer fit).
"""

import numpy as np

from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.extending import intrinsic

from .lab_common import _chunk_bounds, main


# Reassociation lets LLVM vectorize the dot-product reductions; contraction gives FMAs. The
# other fast-math flags (no NaN, no inf, approximate functions) are left off: softmax must
# see an inf or a NaN if the weights diverge, so the driver can report it.
FAST = {"reassoc", "contract"}


@njit(cache=True)
def _softmax_row(z, y_i, weight, G_row):
    """Stable softmax of one sample's scores z (C,) float64, the sample's gradient wrt the
    scores ``G_row = weight (p - onehot(y_i))`` written in place, and its loss
    ``weight * (logsumexp(z) - z[y_i])``, all in float64."""
    C = z.shape[0]
    m = z[0]
    for c in range(1, C):
        if z[c] > m:
            m = z[c]
    total = 0.0
    for c in range(C):
        e = np.exp(z[c] - m)
        G_row[c] = e
        total += e
    inv_total = 1.0 / total
    for c in range(C):
        G_row[c] = weight * G_row[c] * inv_total
    G_row[y_i] -= weight
    return weight * (m + np.log(total) - z[y_i])


@njit(cache=True)
def _apply_update_rows(W, b, vel_W, vel_b, parts_W, parts_b, lr, momentum, alpha, grad_row):
    """``_apply_update`` over all of W, restructured so every inner loop runs along a row of D
    contiguous floats and vectorizes: the T partials are summed row by row into grad_row (D,)
    in fixed order k = 0..T-1, then one pass applies momentum, L2 and the step. (In
    ``_apply_update`` the innermost loop is the runtime-length sum over k, which keeps the
    whole update scalar.) Same arithmetic, same order, element by element; no fast-math, so
    no contraction into FMAs either: the result is bitwise ``_apply_update``'s."""
    T, C, D = parts_W.shape
    lr_ = W.dtype.type(lr)
    mu = W.dtype.type(momentum)
    al = W.dtype.type(alpha)
    for c in range(C):
        w = W[c]
        first = parts_W[0, c]
        for d in range(D):
            grad_row[d] = first[d]
        for k in range(1, T):
            part = parts_W[k, c]
            for d in range(D):
                grad_row[d] += part[d]
        if momentum != 0.0:
            v = vel_W[c]
            for d in range(D):
                g = grad_row[d] + al * w[d] + mu * v[d]
                v[d] = g
                w[d] -= lr_ * g
        else:
            for d in range(D):
                w[d] -= lr_ * (grad_row[d] + al * w[d])
    for c in range(C):
        g = parts_b[0, c]
        for k in range(1, T):
            g += parts_b[k, c]
        if momentum != 0.0:
            g += mu * vel_b[c]
            vel_b[c] = g
        b[c] -= lr_ * g


VECTOR_BYTES = 64


PANEL = 64          # samples packed at a time: 64 rows of MNIST are 200 KB, at home in L2


PREFETCH_LOCALITY = 2  # llvm.prefetch locality 2: prefetcht1, into L2


SCORE_SAMPLES = 4   # samples x classes of the score tile: 9 vector loads feed 20 FMAs


TILE_CLASSES = 5    # classes of both tiles; C = 10 is two tiles


GRAD_VECTORS = 4    # vectors of features of the wide gradient tile: 5 x 4 accumulators


def _lanes_of(context, array_type):
    element = context.get_data_type(array_type.dtype)
    lanes = VECTOR_BYTES // (array_type.dtype.bitwidth // 8)
    return element, ir.VectorType(element, lanes)


def _fma(builder, a, b, c):
    """a * b + c on vectors, one rounding."""
    vector = a.type
    suffix = f"v{vector.count}f{64 if isinstance(vector.element, ir.DoubleType) else 32}"
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                        "llvm.fma." + suffix)
    return builder.call(fn, [a, b, c])


def _vector_at(builder, base, index, vector):
    """Pointer to the vector starting at element ``index`` of ``base`` (unaligned)."""
    return builder.bitcast(builder.gep(base, [index]), vector.as_pointer())


def _splat(builder, value, vector):
    undef = ir.Constant(vector, ir.Undefined)
    first = builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
    mask = ir.Constant(ir.VectorType(ir.IntType(32), vector.count), [0] * vector.count)
    return builder.shuffle_vector(first, undef, mask)


def _horizontal_sum(builder, value):
    """Sum of the lanes of a vector by halving: a fixed tree, so a fixed rounding."""
    width = value.type.count
    while width > 1:
        half = width // 2
        low = builder.shuffle_vector(value, value, ir.Constant(
            ir.VectorType(ir.IntType(32), half), list(range(half))))
        high = builder.shuffle_vector(value, value, ir.Constant(
            ir.VectorType(ir.IntType(32), half), list(range(half, width))))
        value = builder.fadd(low, high)
        width = half
    return builder.extract_element(value, ir.Constant(ir.IntType(32), 0))


def _accumulators(builder, vector, count):
    slots = []
    for _ in range(count):
        slot = cgutils.alloca_once(builder, vector)
        builder.store(ir.Constant(vector, None), slot)
        slots.append(slot)
    return slots


def _row_length(context, builder, array_type, array):
    return cgutils.unpack_tuple(builder, array.shape, 2)[1]


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
            element, vector = _lanes_of(context, x_type)
            lanes = vector.count
            intp = context.get_value_type(types.intp)
            xa = context.make_array(x_type)(context, builder, xp)
            ga = context.make_array(g_type)(context, builder, g)
            oa = context.make_array(out_type)(context, builder, out_)
            x_row = _row_length(context, builder, x_type, xa)
            g_row = _row_length(context, builder, g_type, ga)
            out_row = _row_length(context, builder, out_type, oa)
            acc = _accumulators(builder, vector, TILE_CLASSES * n_vectors)
            with cgutils.for_range(builder, n_) as loop:
                s = loop.index
                x_at = builder.add(builder.mul(s, x_row), d0_)
                xs = [builder.load(_vector_at(builder, xa.data, builder.add(
                    x_at, ir.Constant(intp, v * lanes)), vector), align=1)
                    for v in range(n_vectors)]
                g_at = builder.add(builder.mul(s, g_row), c0_)
                for c in range(TILE_CLASSES):
                    gc = builder.load(builder.gep(ga.data, [builder.add(
                        g_at, ir.Constant(intp, c))]))
                    gv = _splat(builder, gc, vector)
                    for v in range(n_vectors):
                        slot = acc[c * n_vectors + v]
                        builder.store(_fma(builder, gv, xs[v], builder.load(slot)), slot)
            for c in range(TILE_CLASSES):
                out_at = builder.add(builder.mul(builder.add(c0_, ir.Constant(intp, c)),
                                                 out_row), d0_)
                for v in range(n_vectors):
                    ptr = _vector_at(builder, oa.data, builder.add(
                        out_at, ir.Constant(intp, v * lanes)), vector)
                    total = builder.fadd(builder.load(ptr, align=1),
                                         builder.load(acc[c * n_vectors + v]))
                    builder.store(total, ptr, align=1)
            return context.get_dummy_value()

        return sig, codegen

    return grad_tile


_grad_tile_wide = _make_grad_tile(GRAD_VECTORS)


_grad_tile_narrow = _make_grad_tile(1)


@intrinsic
def _score_tile(typingctx, Xp, s0, W, c0, n_vectors, S):
    """``score_tile(Xp, s0, W, c0, n_vectors, S)``: for the SCORE_SAMPLES rows s0.. of Xp and
    the TILE_CLASSES rows c0.. of W, ``S[s, c] = sum_{d < n_vectors * lanes} Xp[s, d] W[c, d]``,
    each sum kept in one vector of lanes across d and reduced by a fixed halving tree.
    Xp (P, D), W (C, D), S (P, C), one float dtype."""
    sig = types.void(Xp, s0, W, c0, n_vectors, S)

    def codegen(context, builder, signature, args):
        xp, s0_, w, c0_, nv, s_out = args
        x_type, _, w_type, _, _, s_type = signature.args
        element, vector = _lanes_of(context, x_type)
        lanes = vector.count
        intp = context.get_value_type(types.intp)
        xa = context.make_array(x_type)(context, builder, xp)
        wa = context.make_array(w_type)(context, builder, w)
        sa = context.make_array(s_type)(context, builder, s_out)
        x_row = _row_length(context, builder, x_type, xa)
        w_row = _row_length(context, builder, w_type, wa)
        s_row = _row_length(context, builder, s_type, sa)
        x_starts = [builder.mul(builder.add(s0_, ir.Constant(intp, s)), x_row)
                    for s in range(SCORE_SAMPLES)]
        w_starts = [builder.mul(builder.add(c0_, ir.Constant(intp, c)), w_row)
                    for c in range(TILE_CLASSES)]
        acc = _accumulators(builder, vector, SCORE_SAMPLES * TILE_CLASSES)
        with cgutils.for_range(builder, nv) as loop:
            d = builder.mul(loop.index, ir.Constant(intp, lanes))
            xs = [builder.load(_vector_at(builder, xa.data, builder.add(start, d), vector),
                               align=1) for start in x_starts]
            for c in range(TILE_CLASSES):
                wv = builder.load(_vector_at(builder, wa.data, builder.add(w_starts[c], d),
                                             vector), align=1)
                for s in range(SCORE_SAMPLES):
                    slot = acc[s * TILE_CLASSES + c]
                    builder.store(_fma(builder, xs[s], wv, builder.load(slot)), slot)
        for s in range(SCORE_SAMPLES):
            s_at = builder.add(builder.mul(builder.add(s0_, ir.Constant(intp, s)), s_row), c0_)
            for c in range(TILE_CLASSES):
                total = _horizontal_sum(builder, builder.load(acc[s * TILE_CLASSES + c]))
                builder.store(total, builder.gep(sa.data, [builder.add(
                    s_at, ir.Constant(intp, c))]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _prefetch_row(typingctx, X, i):
    """Ask for every cache line of row i of X (N, D) to be brought into L2 (``prefetcht1``)."""
    sig = types.void(X, i)

    def codegen(context, builder, signature, args):
        x_type = signature.args[0]
        xa = context.make_array(x_type)(context, builder, args[0])
        intp = context.get_value_type(types.intp)
        byte_ptr = ir.IntType(8).as_pointer()
        row = _row_length(context, builder, x_type, xa)
        base = builder.bitcast(builder.gep(xa.data, [builder.mul(args[1], row)]), byte_ptr)
        row_bytes = builder.mul(row, ir.Constant(intp, x_type.dtype.bitwidth // 8))
        n_lines = builder.udiv(builder.add(row_bytes, ir.Constant(intp, 63)),
                               ir.Constant(intp, 64))
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]),
            "llvm.prefetch.p0")
        with cgutils.for_range(builder, n_lines) as loop:
            line = builder.gep(base, [builder.mul(loop.index, ir.Constant(intp, 64))])
            builder.call(fn, [line, ir.Constant(i32, 0), ir.Constant(i32, PREFETCH_LOCALITY),
                              ir.Constant(i32, 1)])
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
            x = Xp[s]
            for c in range(c_tiles, C):
                w = W[c]
                acc = W.dtype.type(0)
                for d in range(D):
                    acc += x[d] * w[d]
                S[s, c] = acc
            for c in range(c_tiles):
                w = W[c]
                acc = S[s, c]
                for d in range(d_tail, D):
                    acc += x[d] * w[d]
                S[s, c] = acc


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


if __name__ == "__main__":
    main(sgd_epoch_v8, __doc__)
