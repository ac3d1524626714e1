"""v10, one parallel region per epoch: the threads meet once per panel.

Shapes: N samples, D features, C classes, B batch, T threads.

v9's column split, but the whole epoch is one ``prange`` over the T threads, which meet once
per panel of SYNC_PANEL samples through atomic flags (``_publish``, ``_wait_until``); the
partial scores are double-buffered by panel parity and each panel's gradient is taken from its
packed half rows while they are in L2. Same bits as v9, the loss included (tested). The
threads spin on each other, so when they cannot all run at once v9 runs instead. It gained the
fork-joins at batch 64; at batch 1024 the scores pass still waited on DRAM, which is what v11
changed: split the samples again and read whole rows in place.

Frozen as measured: the code of ``fastlr/backends/numba.py`` at commit bcba5b3 (2026-11-27),
v10 as measured at da74215 with the fallback to v9 where the threads cannot all run at once
(TBB, or more chunks than threads), without which T = 3 on two cores never finishes.
"""

import numpy as np

from llvmlite import ir
from numba import get_num_threads, njit, prange, threading_layer, types
from numba.core import cgutils
from numba.core.extending import intrinsic

from .lab_common import _chunk_bounds, main


# Reassociation lets LLVM vectorize the dot-product reductions; contraction gives FMAs. The
# other fast-math flags (no NaN, no inf, approximate functions) are left off: softmax must
# see an inf or a NaN if the weights diverge, so the driver can report it.
FAST = {"reassoc", "contract"}


@njit(cache=True)
def _column_slice(D, k, T):
    """Columns [lo, hi) of W that thread k updates: T slices whose bounds are multiples of 16
    floats, so no two threads write the same cache line."""
    lo = min(D, ((k * D) // T + 15) // 16 * 16)
    hi = D if k == T - 1 else min(D, (((k + 1) * D) // T + 15) // 16 * 16)
    return lo, hi


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


def _emit_prefetch(builder, base, n_lines):
    """``prefetcht1`` the n_lines cache lines from the byte pointer base on."""
    i32 = ir.IntType(32)
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [base.type, i32, i32, i32]),
        "llvm.prefetch.p0")
    with cgutils.for_range(builder, n_lines) as loop:
        line = builder.gep(base, [builder.mul(loop.index, ir.Constant(n_lines.type, 64))])
        builder.call(fn, [line, ir.Constant(i32, 0), ir.Constant(i32, PREFETCH_LOCALITY),
                          ir.Constant(i32, 1)])


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


PREFETCH_ROWS = 8   # how far ahead in perm the packing asks for half rows of X (v9)


PREFETCH_LEAD = 32  # how many of the next step's half rows the gradient asks for (v9)


@njit(fastmath=FAST, cache=True)
def _column_scores(X, perm, start, stop, d_lo, d_hi, Xp, W_k, S_k, cursor):
    """Pack the half rows ``X[perm[start:stop], d_lo:d_hi]`` into Xp (P, D_k) and write the
    partial scores ``S_k[s, c] = Xp[s] . W_k[c]`` (the columns of Xp and W_k past
    d_hi - d_lo are zero), SCORE_SAMPLES rows at a time: pack them, then the register tiles
    on them while they are in L1. Before each block, make sure the half rows up to
    PREFETCH_ROWS further on in perm have been asked for (``cursor[0]``: the first row not
    yet asked for; ``_column_gradient`` usually got there first)."""
    C, Dk = W_k.shape
    M = perm.shape[0]
    n = stop - start
    width = d_hi - d_lo
    lanes = VECTOR_BYTES // Xp.itemsize
    n_vec = Dk // lanes
    d_tail = n_vec * lanes
    c_tiles = C - C % TILE_CLASSES
    for s0 in range(0, n, SCORE_SAMPLES):
        target = min(M, start + s0 + PREFETCH_ROWS + SCORE_SAMPLES)
        for j in range(cursor[0], target):
            _prefetch_span(X, perm[j], d_lo, width)
        cursor[0] = max(cursor[0], target)
        for s in range(s0, min(n, s0 + SCORE_SAMPLES)):
            # A view that starts at d_lo: indexing the row at d_lo + d instead costs a
            # negative-index check per element and the copy no longer vectorizes (2.6x slower).
            source = X[perm[start + s], d_lo:d_hi]
            packed = Xp[s]
            for d in range(width):
                packed[d] = source[d]
        for c0 in range(0, c_tiles, TILE_CLASSES):
            _score_tile(Xp, s0, W_k, c0, n_vec, S_k)
        for s in range(s0, s0 + SCORE_SAMPLES):
            x = Xp[s]
            for c in range(c_tiles, C):
                w = W_k[c]
                acc = W_k.dtype.type(0)
                for d in range(Dk):
                    acc += x[d] * w[d]
                S_k[s, c] = acc
            for c in range(c_tiles):
                w = W_k[c]
                acc = S_k[s, c]
                for d in range(d_tail, Dk):
                    acc += x[d] * w[d]
                S_k[s, c] = acc


@intrinsic
def _two_to(typingctx, k):
    """2.0 ** k as a float64 for an integer -1022 <= k <= 1023: the exponent field, set
    directly (one shift and a bitcast, so a loop around it still vectorizes)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        bits = builder.shl(builder.add(args[0], ir.Constant(i64, 1023)), ir.Constant(i64, 52))
        return builder.bitcast(bits, ir.DoubleType())

    return sig, codegen


LOG2_E = 1.4426950408889634


LN2_HI = 6.93147180369123816490e-01  # ln 2 in two parts (fdlibm): k LN2_HI is exact


LN2_LO = 1.90821492927058770002e-10


@njit(cache=True)
def _exp_nonpositive(x):
    """exp(x) in float64 for x <= 0, within 2 ulp, in plain IEEE operations that a loop can
    vectorize (a call to libm's exp cannot be): x = k ln2 + r with |r| <= ln2 / 2 (Cody-Waite),
    exp(r) by its Taylor polynomial to degree 13 (remainder < 5e-18), times 2^k. Below -708
    (exp < 3e-308, nothing next to the row maximum's 1) x is clamped there; a NaN stays NaN."""
    if x < -708.0:
        x = -708.0
    kf = np.floor(x * LOG2_E + 0.5)
    r = (x - kf * LN2_HI) - kf * LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    k = np.int64(kf) if kf >= -1022.0 else np.int64(-1022)
    return p * _two_to(k)


@njit(cache=True)
def _column_softmax(S_parts, n, inv_batch, b, y, sample_weight, perm, start, Z, E, row_max,
                    row_total, G, grad_b, loss_lo, loss_hi, loss):
    """The full scores of the samples ``perm[start:start + n]`` (a batch, or a panel of one
    for v10), ``Z = sum_k S_parts[k] + b`` summed in order k = 0..T-1 in float64 into Z
    (P, C); the stable softmax with the vectorized ``_exp_nonpositive`` over all n samples at
    once; ``G[s] = s_i (p - onehot) * inv_batch`` in W's dtype and ``grad_b += G[s]`` for
    s in order. Returns ``loss`` plus s_i l_i for the samples [loss_lo, loss_hi) of the n,
    added in order (the threads share the logs)."""
    T = S_parts.shape[0]
    C = b.shape[0]
    for s in range(n):
        for c in range(C):
            acc = np.float64(S_parts[0, s, c])
            for k in range(1, T):
                acc += S_parts[k, s, c]
            Z[s, c] = acc + b[c]
    for s in range(n):
        m = Z[s, 0]
        for c in range(1, C):
            if Z[s, c] > m:
                m = Z[s, c]
        row_max[s] = m
        for c in range(C):
            E[s, c] = Z[s, c] - m
    flat = E.reshape(E.size)
    for j in range(n * C):
        flat[j] = _exp_nonpositive(flat[j])
    for s in range(n):
        total = 0.0
        for c in range(C):
            total += E[s, c]
        row_total[s] = total
        inv_total = 1.0 / total
        i = perm[start + s]
        weight = np.float64(sample_weight[i])
        y_i = y[i]
        for c in range(C):
            p = weight * E[s, c] * inv_total
            if c == y_i:
                p -= weight
            g = b.dtype.type(p * inv_batch)
            G[s, c] = g
            grad_b[c] += g
    for s in range(loss_lo, loss_hi):
        i = perm[start + s]
        loss += sample_weight[i] * (row_max[s] + np.log(row_total[s]) - Z[s, y[i]])
    return loss


@njit(fastmath=FAST, cache=True)
def _column_gradient(Xp, n, G, grad_k, X, perm, cursor, next_stop, d_lo, width):
    """``grad_k += G[:n]^T Xp[:n]`` (C, D_k) in panels of PANEL rows with the register tiles;
    between the tiles, ask for the half rows ``X[perm[cursor[0]:next_stop], d_lo:d_lo +
    width]`` (the next step's), spread evenly, so the memory works while the tiles do."""
    C, Dk = grad_k.shape
    lanes = VECTOR_BYTES // Xp.itemsize
    wide = GRAD_VECTORS * lanes
    d_wide = Dk - Dk % wide
    d_narrow = Dk - Dk % lanes
    c_tiles = C - C % TILE_CLASSES
    n_panels = (n + PANEL - 1) // PANEL
    n_slots = n_panels * ((d_narrow + wide - 1) // wide)
    per_slot = (next_stop - cursor[0] + n_slots - 1) // max(1, n_slots)
    for p0 in range(0, n, PANEL):
        rows = min(PANEL, n - p0)
        panel = Xp[p0:p0 + rows]
        g_panel = G[p0:p0 + rows]
        for d0 in range(0, d_narrow, wide):
            target = min(next_stop, cursor[0] + per_slot)
            for j in range(cursor[0], target):
                _prefetch_span(X, perm[j], d_lo, width)
            cursor[0] = max(cursor[0], target)
            if d0 < d_wide:
                for c0 in range(0, c_tiles, TILE_CLASSES):
                    _grad_tile_wide(panel, rows, g_panel, d0, c0, grad_k)
            else:
                for d1 in range(d0, d_narrow, lanes):
                    for c0 in range(0, c_tiles, TILE_CLASSES):
                        _grad_tile_narrow(panel, rows, g_panel, d1, c0, grad_k)
        for s in range(rows):
            x = panel[s]
            for c in range(c_tiles):
                g = g_panel[s, c]
                row = grad_k[c]
                for d in range(d_narrow, Dk):
                    row[d] += g * x[d]
            for c in range(c_tiles, C):
                g = g_panel[s, c]
                row = grad_k[c]
                for d in range(Dk):
                    row[d] += g * x[d]


@njit(cache=True)
def _column_update(grad_k, W_k, vel_k, b_k, vel_b_k, grad_b, lr, momentum, alpha):
    """The SGD step on the thread's columns of W and on its copy of b:
    ``v = momentum v + (grad + alpha W); W -= lr v``, the bias without alpha; the arithmetic
    of ``_apply_update_rows``."""
    C, Dk = W_k.shape
    lr_ = W_k.dtype.type(lr)
    mu = W_k.dtype.type(momentum)
    al = W_k.dtype.type(alpha)
    for c in range(C):
        w = W_k[c]
        g_row = grad_k[c]
        if momentum != 0.0:
            v = vel_k[c]
            for d in range(Dk):
                g = g_row[d] + al * w[d] + mu * v[d]
                v[d] = g
                w[d] -= lr_ * g
        else:
            for d in range(Dk):
                w[d] -= lr_ * (g_row[d] + al * w[d])
    for c in range(C):
        g = grad_b[c]
        if momentum != 0.0:
            g += mu * vel_b_k[c]
            vel_b_k[c] = g
        b_k[c] -= lr_ * g


@njit(cache=True)
def _column_step(t, k, T, n_steps, X, y, sample_weight, perm, lr_steps, batch_size, momentum,
                 alpha, d_lo, d_hi, W_k, vel_k, grad_k, b_k, vel_b_k, grad_b, Xp, S_parts, G,
                 Z, E, row_max, row_total, cursor):
    """Thread k's share of pipeline stage t: finish step t-1 (softmax from the T partial
    scores, the gradient of its columns from its packed half rows while the next step's half
    rows are fetched, the update of its columns and of its copy of b), then start step t
    (pack its half rows, its partial scores). Returns its share of step t-1's sum of
    s_i l_i."""
    M = perm.shape[0]
    loss = 0.0
    if t > 0:
        start = (t - 1) * batch_size
        n = min(start + batch_size, M) - start
        loss_lo, loss_hi = _chunk_bounds(0, n, k, T)
        grad_b[:] = 0
        grad_k[:, :] = 0
        loss = _column_softmax(S_parts[(t - 1) % 2], n, 1.0 / n, b_k, y, sample_weight, perm,
                               start, Z, E, row_max, row_total, G, grad_b, loss_lo, loss_hi,
                               0.0)
        _column_gradient(Xp, n, G, grad_k, X, perm, cursor,
                         min(start + n + min(batch_size, PREFETCH_LEAD), M), d_lo, d_hi - d_lo)
        _column_update(grad_k, W_k, vel_k, b_k, vel_b_k, grad_b, lr_steps[t - 1], momentum,
                       alpha)
    if t < n_steps:
        start = t * batch_size
        _column_scores(X, perm, start, min(start + batch_size, M), d_lo, d_hi, Xp, W_k,
                       S_parts[t % 2, k], cursor)
    return loss


@njit(parallel=True, cache=True)
def sgd_epoch_v9(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                 alpha, parts_W, parts_b):
    """v9: thread k owns the columns ``_column_slice(D, k, T)`` of W, in a contiguous private
    buffer with its velocity, and reads only those columns of X. Steps are pipelined, one
    fork-join each: in stage t each thread finishes step t-1 and starts step t, so the only
    data crossing cores are the T partial score blocks (P, C), double-buffered by step
    parity. Every thread runs the softmax and the bias update on the same inputs, so their
    copies of b stay bitwise equal; the loss is summed over T row chunks in order."""
    T, C, D = parts_W.shape
    M = perm.shape[0]
    n_steps = (M + batch_size - 1) // batch_size
    if n_steps == 0:
        return 0.0
    dtype = W.dtype
    lanes = VECTOR_BYTES // W.itemsize
    width = 0
    for k in range(T):
        d_lo, d_hi = _column_slice(D, k, T)
        width = max(width, d_hi - d_lo)
    width = (width + lanes - 1) // lanes * lanes
    rows = (min(batch_size, M) + SCORE_SAMPLES - 1) // SCORE_SAMPLES * SCORE_SAMPLES
    c_pad = (C + lanes - 1) // lanes * lanes  # per-thread rows of C on cache lines of their own
    # Columns past a thread's slice stay zero in W_cols, vel_cols and Xp: they add exact
    # zeros to the scores and their gradient and update are zero.
    W_cols = np.zeros((T, C, width), dtype)
    vel_cols = np.zeros((T, C, width), dtype)
    grad_cols = np.zeros((T, C, width), dtype)
    Xp = np.zeros((T, rows, width), dtype)
    S_parts = np.zeros((2, T, rows, C), dtype)
    G = np.zeros((T, rows, C), dtype)
    Z = np.zeros((T, rows, C))
    E = np.zeros((T, rows, C))
    row_max = np.zeros((T, rows + 8))
    row_total = np.zeros((T, rows + 8))
    b_cols = np.zeros((T, c_pad), dtype)
    vel_b_cols = np.zeros((T, c_pad), dtype)
    grad_b = np.zeros((T, c_pad), dtype)
    cursor = np.zeros((T, 8), np.int64)
    bounds = np.zeros((T, 2), np.int64)
    for k in range(T):
        d_lo, d_hi = _column_slice(D, k, T)
        bounds[k, 0] = d_lo
        bounds[k, 1] = d_hi
        for c in range(C):
            for d in range(d_lo, d_hi):
                W_cols[k, c, d - d_lo] = W[c, d]
                vel_cols[k, c, d - d_lo] = vel_W[c, d]
            b_cols[k, c] = b[c]
            vel_b_cols[k, c] = vel_b[c]
    step_loss = np.zeros((T, 8))
    loss_sum = 0.0
    for t in range(n_steps + 1):
        if T == 1:
            step_loss[0, 0] = _column_step(
                t, 0, T, n_steps, X, y, sample_weight, perm, lr_steps, batch_size, momentum,
                alpha, bounds[0, 0], bounds[0, 1], W_cols[0], vel_cols[0], grad_cols[0],
                b_cols[0, :C], vel_b_cols[0, :C], grad_b[0, :C], Xp[0], S_parts, G[0], Z[0],
                E[0], row_max[0], row_total[0], cursor[0])
        else:
            for k in prange(T):
                step_loss[k, 0] = _column_step(
                    t, k, T, n_steps, X, y, sample_weight, perm, lr_steps, batch_size,
                    momentum, alpha, bounds[k, 0], bounds[k, 1], W_cols[k], vel_cols[k],
                    grad_cols[k], b_cols[k, :C], vel_b_cols[k, :C], grad_b[k, :C], Xp[k],
                    S_parts, G[k], Z[k], E[k], row_max[k], row_total[k], cursor[k])
        for k in range(T):
            loss_sum += step_loss[k, 0]
    for k in range(T):
        d_lo = bounds[k, 0]
        for c in range(C):
            for d in range(d_lo, bounds[k, 1]):
                W[c, d] = W_cols[k, c, d - d_lo]
                vel_W[c, d] = vel_cols[k, c, d - d_lo]
    for c in range(C):
        b[c] = b_cols[0, c]
        vel_b[c] = vel_b_cols[0, c]
    return loss_sum


SYNC_PANEL = 128  # samples per meeting of the threads (v10): 200 KB of half rows per thread


@intrinsic
def _publish(typingctx, flags, j, value):
    """``flags[j] = value`` as an atomic store with release ordering: every store before it
    is visible to a thread that reads ``value`` with acquire ordering. flags: int64 array."""
    sig = types.void(flags, j, value)

    def codegen(context, builder, signature, args):
        fa = context.make_array(signature.args[0])(context, builder, args[0])
        builder.store_atomic(args[2], builder.gep(fa.data, [args[1]]), "release", 8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _wait_until(typingctx, flags, j, value):
    """Spin (``pause`` between tries) until ``flags[j] >= value``, read with acquire
    ordering."""
    sig = types.void(flags, j, value)

    def codegen(context, builder, signature, args):
        fa = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(fa.data, [args[1]])
        pause = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
        spin = builder.append_basic_block("spin")
        wait = builder.append_basic_block("wait")
        done = builder.append_basic_block("done")
        builder.branch(spin)
        builder.position_at_end(spin)
        seen = builder.load_atomic(ptr, "acquire", 8)
        builder.cbranch(builder.icmp_signed(">=", seen, args[2]), done, wait)
        builder.position_at_end(wait)
        builder.call(pause, [])
        builder.branch(spin)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True)
def _panel_thread(k, T, X, y, sample_weight, perm, lr_steps, batch_size, momentum, alpha,
                  d_lo, d_hi, W_k, vel_k, grad_k, b_k, vel_b_k, grad_b, Xq, S_ring, G, Z, E,
                  row_max, row_total, cursor, flags, step_loss):
    """Thread k's whole epoch in v10. Per step, per panel of SYNC_PANEL samples: pack its half
    rows into Xq and its partial scores into S_ring[q % 2, k] (q counts the panels of the
    epoch), publish ``flags[8 k] = q + 1``, wait until every thread has published panel q,
    then the panel's softmax from the T partials (summed in order k = 0..T-1) and the
    gradient of its columns from Xq while the half rows are still in L2; after the last
    panel, the update. A thread overwrites S_ring[q % 2, k] at panel q + 2 only after the
    others published panel q + 1, which they do after reading panel q. Its share of step t's sum
    of s_i l_i (the samples of its chunk of the batch, in order, as in v9) goes to
    ``step_loss[t, k]``."""
    M = perm.shape[0]
    width = d_hi - d_lo
    n_steps = (M + batch_size - 1) // batch_size
    q = 0
    for t in range(n_steps):
        start = t * batch_size
        n = min(start + batch_size, M) - start
        inv_batch = 1.0 / n
        chunk_lo, chunk_hi = _chunk_bounds(0, n, k, T)
        loss = 0.0
        grad_b[:] = 0
        grad_k[:, :] = 0
        for p0 in range(0, n, SYNC_PANEL):
            rows = min(SYNC_PANEL, n - p0)
            lo = start + p0
            _column_scores(X, perm, lo, lo + rows, d_lo, d_hi, Xq, W_k, S_ring[q % 2, k],
                           cursor)
            _publish(flags, 8 * k, np.int64(q + 1))
            for j in range(T):
                _wait_until(flags, 8 * j, np.int64(q + 1))
            loss_lo = min(rows, max(0, chunk_lo - p0))
            loss_hi = max(loss_lo, min(rows, chunk_hi - p0))
            loss = _column_softmax(S_ring[q % 2], rows, inv_batch, b_k, y, sample_weight,
                                   perm, lo, Z, E, row_max, row_total, G, grad_b, loss_lo,
                                   loss_hi, loss)
            _column_gradient(Xq, rows, G, grad_k, X, perm, cursor,
                             min(lo + rows + PREFETCH_LEAD, M), d_lo, width)
            q += 1
        _column_update(grad_k, W_k, vel_k, b_k, vel_b_k, grad_b, lr_steps[t], momentum, alpha)
        step_loss[t, k] = loss


def sgd_epoch_v10(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                  alpha, parts_W, parts_b):
    """v10: v9's column split and buffers, but the whole epoch is one parallel region
    (``_panel_epoch``): the threads meet once per panel of SYNC_PANEL samples instead of
    forking and joining once per step, and the packed half rows are used for the gradient
    while they are in L2 (v9 packed the whole batch: 1.6 MB per thread at B = 1024). Same
    bits as v9, the loss included. The threads spin on each
    other, so all T must run at once: with more chunks than Numba has threads, v9 runs
    instead. (A Python function: Numba's thread count read inside a kernel would keep it out
    of the cache.)"""
    args = (X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
            alpha, parts_W, parts_b)
    # The threads spin on each other, so each chunk needs a thread of its own running at the
    # same time: the OpenMP and workqueue layers give every chunk of a prange its own thread;
    # TBB's work stealing may run two chunks one after the other on one thread, which would
    # never finish.
    if parts_W.shape[0] > get_num_threads() or threading_layer() not in ("omp", "workqueue"):
        return sgd_epoch_v9(*args)
    return _panel_epoch(*args)


@njit(parallel=True, cache=True)
def _panel_epoch(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                 alpha, parts_W, parts_b):
    """The kernel of ``sgd_epoch_v10``, for T at most Numba's thread count."""
    T, C, D = parts_W.shape
    M = perm.shape[0]
    n_steps = (M + batch_size - 1) // batch_size
    if n_steps == 0:
        return 0.0
    dtype = W.dtype
    lanes = VECTOR_BYTES // W.itemsize
    width = 0
    for k in range(T):
        d_lo, d_hi = _column_slice(D, k, T)
        width = max(width, d_hi - d_lo)
    width = (width + lanes - 1) // lanes * lanes
    rows = SYNC_PANEL
    c_pad = (C + lanes - 1) // lanes * lanes  # per-thread rows of C on cache lines of their own
    # Columns past a thread's slice stay zero in W_cols, vel_cols and Xq: they add exact
    # zeros to the scores and their gradient and update are zero.
    W_cols = np.zeros((T, C, width), dtype)
    vel_cols = np.zeros((T, C, width), dtype)
    grad_cols = np.zeros((T, C, width), dtype)
    Xq = np.zeros((T, rows, width), dtype)
    S_ring = np.zeros((2, T, rows, C), dtype)
    flags = np.zeros(8 * T, np.int64)
    G = np.zeros((T, rows, C), dtype)
    Z = np.zeros((T, rows, C))
    E = np.zeros((T, rows, C))
    row_max = np.zeros((T, rows + 8))
    row_total = np.zeros((T, rows + 8))
    b_cols = np.zeros((T, c_pad), dtype)
    vel_b_cols = np.zeros((T, c_pad), dtype)
    grad_b = np.zeros((T, c_pad), dtype)
    cursor = np.zeros((T, 8), np.int64)
    bounds = np.zeros((T, 2), np.int64)
    for k in range(T):
        d_lo, d_hi = _column_slice(D, k, T)
        bounds[k, 0] = d_lo
        bounds[k, 1] = d_hi
        for c in range(C):
            for d in range(d_lo, d_hi):
                W_cols[k, c, d - d_lo] = W[c, d]
                vel_cols[k, c, d - d_lo] = vel_W[c, d]
            b_cols[k, c] = b[c]
            vel_b_cols[k, c] = vel_b[c]
    step_loss = np.zeros((n_steps, T))
    if T == 1:
        _panel_thread(
            0, T, X, y, sample_weight, perm, lr_steps, batch_size, momentum, alpha, bounds[0, 0],
            bounds[0, 1], W_cols[0], vel_cols[0], grad_cols[0], b_cols[0, :C], vel_b_cols[0, :C],
            grad_b[0, :C], Xq[0], S_ring, G[0], Z[0], E[0], row_max[0], row_total[0], cursor[0],
            flags, step_loss)
    else:
        for k in prange(T):
            _panel_thread(
                k, T, X, y, sample_weight, perm, lr_steps, batch_size, momentum, alpha,
                bounds[k, 0], bounds[k, 1], W_cols[k], vel_cols[k], grad_cols[k],
                b_cols[k, :C], vel_b_cols[k, :C], grad_b[k, :C], Xq[k], S_ring, G[k], Z[k],
                E[k], row_max[k], row_total[k], cursor[k], flags, step_loss)
    loss_sum = 0.0
    for t in range(n_steps):
        for k in range(T):
            loss_sum += step_loss[t, k]
    for k in range(T):
        d_lo = bounds[k, 0]
        for c in range(C):
            for d in range(d_lo, bounds[k, 1]):
                W[c, d] = W_cols[k, c, d - d_lo]
                vel_W[c, d] = vel_cols[k, c, d - d_lo]
    for c in range(C):
        b[c] = b_cols[0, c]
        vel_b[c] = vel_b_cols[0, c]
    return loss_sum


if __name__ == "__main__":
    main(sgd_epoch_v10, __doc__)
