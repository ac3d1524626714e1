"""The register tiles: scores and gradients of a block of samples, in LLVM vector IR.

Shapes: N samples, D features, C classes, P rows of a block (its n samples, rounded up to
SCORE_SAMPLES), lanes = VECTOR_BYTES / itemsize of W (16 float32 or 8 float64 with AVX-512).

X is float (W's dtype) or uint8 pixels: a vector of pixels is ``lanes`` bytes widened to
floats (exact), and the 1/255 that makes them features multiplies each tile's finished sums,
once (``_load_x``, ``_scaled``), so the loops are the same loads, broadcasts and FMAs on a
quarter of the bytes. The tile shapes and the vector width come from ``tuning.py``.

``_gather_scores``    S[s, c] = X[rows[s]] . W[c]: score tiles of SCORE_SAMPLES samples x
                      TILE_CLASSES classes, the classes left over in tiles of powers of two,
                      then the leftover features.
``_gather_gradient``  part_W [+]= G^T X[rows]: gradient tiles of GATHER_CLASSES classes x
                      GATHER_VECTORS vectors of features held in registers over the whole
                      block (the classes left over in tiles of powers of two); as a tile sweeps D, sample s asks for the same columns of the
                      row that takes its place in the next block (``prefetcht1``), so the
                      next rows arrive while the FMAs run.

Both read the rows of X where they are, through the block's list of row numbers: no copy into
a packed panel (the copy, and half rows re-read for a second pass, lost to reading whole rows
in place). Numba cannot hold an array of accumulators in registers (a local array lives in
memory, so a loop over one cannot be FMA-bound); the intrinsics emit the loops as LLVM IR on
vectors of one 64-byte register with the accumulators in allocas that LLVM promotes to zmm
registers and explicit ``llvm.fma`` calls, so the rounding does not depend on what the
optimizer contracts, and the lanes are reduced by a fixed halving tree. The loop bodies are
vector loads, broadcasts and ``vfmadd231ps`` only (checked with ``inspect_asm``). With
AVX-512 the 4 x 5 score tile feeds 20 FMAs from 9 vector loads; the 10 x 2 gradient tile
covers all of MNIST's classes, so one sweep over D reads each row once (the AVX2 and baseline
shapes: ``tuning.py``).

Fast-math is limited to reassociation and contraction (``FAST``), in these loops only.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.extending import intrinsic, overload

from .tuning import TUNING

# Reassociation lets LLVM vectorize the dot-product reductions; contraction gives FMAs. The
# other fast-math flags (no NaN, no inf, approximate functions) are left off: softmax must
# see an inf or a NaN if the weights diverge, so the driver can report it.
FAST = {"reassoc", "contract"}

# The shapes depend on the CPU: chosen in tuning.py (avx512: 64-byte vectors, a 4 x 5 score
# tile, a 10 x 2 gradient tile).
VECTOR_BYTES = TUNING.vector_bytes
PREFETCH_LOCALITY = TUNING.prefetch_locality  # llvm.prefetch locality 2: prefetcht1, into L2
SCORE_SAMPLES = TUNING.score_samples  # samples x classes of the score tile
TILE_CLASSES = TUNING.score_classes   # classes of the score tile; C = 10 is two tiles of 5
GATHER_CLASSES = TUNING.grad_classes  # classes of the gradient tile (avx512: all 10 of MNIST's)
GATHER_VECTORS = TUNING.grad_vectors  # vectors of features of that tile
SCORES_BY_CLASS_BYTES = TUNING.scores_by_class_kib * 1024  # W larger: classes outermost


def _lanes_of(context, array_type):
    element = context.get_data_type(array_type.dtype)
    lanes = VECTOR_BYTES // (array_type.dtype.bitwidth // 8)
    return element, ir.VectorType(element, lanes)


def _is_pixels(x_type):
    """Whether X holds uint8 pixels, whose features are X / 255."""
    return x_type.dtype == types.uint8


def _load_x(builder, x_type, xa, index, vector):
    """The vector of X's elements from ``index`` on, in the float type of ``vector``: loaded
    as they are, or, for uint8 pixels, ``lanes`` bytes converted (exactly: 0..255) to floats;
    the 1/255 multiplies the tiles' sums (``_scaled``), once per sum, not every pixel."""
    if not _is_pixels(x_type):
        return builder.load(_vector_at(builder, xa.data, index, vector), align=1)
    pixels = ir.VectorType(ir.IntType(8), vector.count)
    return builder.uitofp(builder.load(_vector_at(builder, xa.data, index, pixels), align=1),
                          vector)


def _scaled(builder, x_type, value):
    """A tile's sum over features (a float or a vector of them) times X's scale: 1/255 for
    uint8 pixels, nothing for float X."""
    if not _is_pixels(x_type):
        return value
    if isinstance(value.type, ir.VectorType):
        element = value.type.element
        scale = ir.Constant(value.type, [ir.Constant(element, 1.0 / 255.0)] * value.type.count)
    else:
        scale = ir.Constant(value.type, 1.0 / 255.0)
    return builder.fmul(value, scale)


def pixel_scale(X):
    """The factor that turns X's values into features: 1/255 for uint8 pixels, else 1."""
    return 1.0 / 255.0 if X.dtype == np.uint8 else 1.0


@overload(pixel_scale)
def _pixel_scale_typed(X):
    if X.dtype == types.uint8:
        return lambda X: 1.0 / 255.0
    return lambda X: 1.0


def _fma(builder, a, b, c):
    """a * b + c on vectors: one rounding where the CPU has FMA (``TUNING.fused``), else a
    multiply and an add."""
    if not TUNING.fused:
        return builder.fadd(builder.fmul(a, b), c)
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


def _llvm_prefetch(builder):
    """The ``llvm.prefetch`` function of the module being built."""
    i32 = ir.IntType(32)
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32,
                                                       i32]), "llvm.prefetch.p0")


def _prefetch_line(builder, fn, pointer):
    """``prefetcht1`` the cache line of one (byte) pointer: a read, into L2, data."""
    i32 = ir.IntType(32)
    builder.call(fn, [pointer, ir.Constant(i32, 0), ir.Constant(i32, PREFETCH_LOCALITY),
                      ir.Constant(i32, 1)])


@intrinsic
def _prefetch_element(typingctx, a, i):
    """``prefetch_element(a, i)``: ask for the cache line of ``a[i]`` (a 1-d array; i within
    it), ``prefetcht1`` as the rows; a hint, it never faults."""
    sig = types.void(a, i)

    def codegen(context, builder, signature, args):
        aa = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = builder.bitcast(builder.gep(aa.data, [args[1]]), ir.IntType(8).as_pointer())
        _prefetch_line(builder, _llvm_prefetch(builder), pointer)
        return context.get_dummy_value()

    return sig, codegen


def _leftover_tiles(builder, left, c0, below, tile):
    """Emit ``tile(c_start, width, first)`` for the ``left`` < ``below`` classes from ``c0``
    (runtime values): one tile for each binary digit of ``left``, the widest first, each
    run only where ``left`` has that digit, so every count is a few register tiles (C = 26
    with tiles of 5: one class left, one tile of 1; with tiles of 10: a tile of 4 and one of
    2). ``first`` is the i1 value: no wider tile ran before this one."""
    width = 1
    while 2 * width < below:
        width *= 2
    while width >= 1:
        digit = ir.Constant(left.type, width)
        with builder.if_then(builder.icmp_unsigned("!=", builder.and_(left, digit),
                                                    ir.Constant(left.type, 0))):
            before = builder.and_(left, ir.Constant(left.type, -2 * width))
            tile(builder.add(c0, before), width,
                 builder.icmp_unsigned("==", before, ir.Constant(left.type, 0)))
        width //= 2


def _emit_grad_tile(context, builder, x_type, xa, row_start, n_, g_type, ga, g_row, d0_, c0_,
                    oa, out_row, n_classes, n_vectors, overwrite=None, ask=None):
    """The body of the gradient tiles: for the n_classes classes c0.. and the n_vectors
    vectors of features from d0, ``out[c, d] (+)= sum_{s < n} G[s, c] x_s[d]`` with x_s the
    row of X starting at element ``row_start(s)``, summed over s in order in n_classes x
    n_vectors accumulators that stay in registers, and written to ``out`` once: added to it,
    or stored over it where the i1 value ``overwrite`` is true; for uint8 X the sums are
    times 1/255. ``ask(s)``, if given, emits the prefetches to issue at sample s. The vectors
    are of G's float type (X may be uint8)."""
    element, vector = _lanes_of(context, g_type)
    lanes = vector.count
    intp = context.get_value_type(types.intp)
    acc = _accumulators(builder, vector, n_classes * n_vectors)
    with cgutils.for_range(builder, n_) as loop:
        s = loop.index
        if ask is not None:
            ask(s)
        x_at = builder.add(row_start(s), d0_)
        xs = [_load_x(builder, x_type, xa, builder.add(x_at, ir.Constant(intp, v * lanes)),
                      vector) for v in range(n_vectors)]
        g_at = builder.add(builder.mul(s, g_row), c0_)
        for c in range(n_classes):
            gc = builder.load(builder.gep(ga.data, [builder.add(g_at, ir.Constant(intp, c))]))
            gv = _splat(builder, gc, vector)
            for v in range(n_vectors):
                slot = acc[c * n_vectors + v]
                builder.store(_fma(builder, gv, xs[v], builder.load(slot)), slot)
    for c in range(n_classes):
        out_at = builder.add(builder.mul(builder.add(c0_, ir.Constant(intp, c)), out_row), d0_)
        for v in range(n_vectors):
            ptr = _vector_at(builder, oa.data, builder.add(out_at, ir.Constant(intp, v * lanes)),
                             vector)
            total = _scaled(builder, x_type, builder.load(acc[c * n_vectors + v]))
            added = builder.fadd(builder.load(ptr, align=1), total)
            if overwrite is not None:
                added = builder.select(overwrite, total, added)
            builder.store(added, ptr, align=1)


def _make_gather_grad_tile(n_classes, n_vectors, leftover=False):
    """An intrinsic ``gather_grad_tile(X, rows, n, G, d0, c0, out, overwrite, ahead,
    n_ahead, left)``: for the n_classes classes c0.. and the n_vectors vectors of features
    from d0, ``out[c, d] = [out[c, d] +] sum_{s < n} G[s, c] X[rows[s], d]`` (``overwrite``
    true: no ``out[c, d] +``), the rows of X read where they are. At sample s < n_ahead it
    asks for the same columns of row ``ahead[s]`` of X (a sample of the next block), so a
    sweep of these tiles over all of D asks for every line of those rows, one or two
    prefetches per 2 n_classes FMAs. With ``leftover`` the classes are the ``left`` <
    n_classes from c0 instead, in tiles of powers of two (``_leftover_tiles``), the first of
    them asking for the rows; otherwise ``left`` is ignored. X (N, D), rows and ahead int64,
    G (P, C), out (C, D)."""

    @intrinsic
    def gather_grad_tile(typingctx, X, rows, n, G, d0, c0, out, overwrite, ahead, n_ahead,
                         left):
        sig = types.void(X, rows, n, G, d0, c0, out, overwrite, ahead, n_ahead, left)

        def codegen(context, builder, signature, args):
            x_, rows_, n_, g, d0_, c0_, out_, overwrite_, ahead_, n_ahead_, left_ = args
            x_type, rows_type, _, g_type, _, _, out_type, _, ahead_type, _, _ = signature.args
            xa = context.make_array(x_type)(context, builder, x_)
            ra = context.make_array(rows_type)(context, builder, rows_)
            aa = context.make_array(ahead_type)(context, builder, ahead_)
            ga = context.make_array(g_type)(context, builder, g)
            oa = context.make_array(out_type)(context, builder, out_)
            x_row = _row_length(context, builder, x_type, xa)
            intp = context.get_value_type(types.intp)
            fn = _llvm_prefetch(builder)
            byte = ir.IntType(8).as_pointer()
            n_lines = max(1, n_vectors * VECTOR_BYTES * x_type.dtype.bitwidth
                          // (g_type.dtype.bitwidth * 64))

            def row_start(s):
                return builder.mul(builder.load(builder.gep(ra.data, [s])), x_row)

            def asker(n_asked):
                def ask(s):
                    with builder.if_then(builder.icmp_signed("<", s, n_asked)):
                        row = builder.load(builder.gep(aa.data, [s]))
                        base = builder.bitcast(builder.gep(xa.data, [builder.add(
                            builder.mul(row, x_row), d0_)]), byte)
                        for m in range(n_lines):
                            _prefetch_line(builder, fn, builder.gep(
                                base, [ir.Constant(intp, 64 * m)]))
                return ask

            overwrite_bit = builder.icmp_unsigned("!=", overwrite_, ir.Constant(
                overwrite_.type, 0))

            def tile(c_start, width, n_asked):
                _emit_grad_tile(context, builder, x_type, xa, row_start, n_, g_type, ga,
                                _row_length(context, builder, g_type, ga), d0_, c_start, oa,
                                _row_length(context, builder, out_type, oa), width, n_vectors,
                                overwrite_bit, asker(n_asked))

            if leftover:
                _leftover_tiles(builder, left_, c0_, n_classes, lambda c_start, width, first:
                                tile(c_start, width, builder.select(
                                    first, n_ahead_, ir.Constant(n_ahead_.type, 0))))
            else:
                tile(c0_, n_classes, n_ahead_)
            return context.get_dummy_value()

        return sig, codegen

    return gather_grad_tile


def _emit_score_tile(context, builder, x_type, xa, row_starts, s0_, w_type, wa, c0_, nv,
                     s_type, sa, n_classes):
    """The body of the score tiles: for the SCORE_SAMPLES rows of X starting at the elements
    ``row_starts`` and the n_classes rows c0.. of W,
    ``S[s0 + s, c] = sum_{d < nv * lanes} x_s[d] W[c, d]``, each sum kept in one vector of
    lanes across d and reduced by a fixed halving tree (for uint8 X, times 1/255). The vectors
    are of W's float type."""
    element, vector = _lanes_of(context, w_type)
    lanes = vector.count
    intp = context.get_value_type(types.intp)
    w_row = _row_length(context, builder, w_type, wa)
    s_row = _row_length(context, builder, s_type, sa)
    w_starts = [builder.mul(builder.add(c0_, ir.Constant(intp, c)), w_row)
                for c in range(n_classes)]
    acc = _accumulators(builder, vector, SCORE_SAMPLES * n_classes)
    with cgutils.for_range(builder, nv) as loop:
        d = builder.mul(loop.index, ir.Constant(intp, lanes))
        xs = [_load_x(builder, x_type, xa, builder.add(start, d), vector) for start in row_starts]
        for c in range(n_classes):
            wv = builder.load(_vector_at(builder, wa.data, builder.add(w_starts[c], d), vector),
                              align=1)
            for s in range(SCORE_SAMPLES):
                slot = acc[s * n_classes + c]
                builder.store(_fma(builder, xs[s], wv, builder.load(slot)), slot)
    for s in range(SCORE_SAMPLES):
        s_at = builder.add(builder.mul(builder.add(s0_, ir.Constant(intp, s)), s_row), c0_)
        for c in range(n_classes):
            total = _scaled(builder, x_type, _horizontal_sum(builder, builder.load(
                acc[s * n_classes + c])))
            builder.store(total, builder.gep(sa.data, [builder.add(s_at, ir.Constant(intp, c))]))


def _make_gather_score_tile(leftover=False):
    """An intrinsic ``gather_score_tile(X, rows, s0, W, c0, n_vectors, S, left)``: for the
    SCORE_SAMPLES rows ``rows[s0 + s]`` of X (N, D), read where they are, and the
    TILE_CLASSES rows c0.. of W,
    ``S[s0 + s, c] = sum_{d < n_vectors * lanes} X[rows[s0 + s], d] W[c, d]``. With
    ``leftover`` the classes are the ``left`` < TILE_CLASSES from c0 instead, in tiles of
    powers of two (``_leftover_tiles``); otherwise ``left`` is ignored. rows int64, W (C, D),
    S (P, C), one float dtype."""

    @intrinsic
    def gather_score_tile(typingctx, X, rows, s0, W, c0, n_vectors, S, left):
        sig = types.void(X, rows, s0, W, c0, n_vectors, S, left)

        def codegen(context, builder, signature, args):
            x_, rows_, s0_, w, c0_, nv, s_out, left_ = args
            x_type, rows_type, _, w_type, _, _, s_type, _ = signature.args
            intp = context.get_value_type(types.intp)
            xa = context.make_array(x_type)(context, builder, x_)
            ra = context.make_array(rows_type)(context, builder, rows_)
            wa = context.make_array(w_type)(context, builder, w)
            sa = context.make_array(s_type)(context, builder, s_out)
            x_row = _row_length(context, builder, x_type, xa)
            starts = [builder.mul(builder.load(builder.gep(ra.data, [builder.add(
                s0_, ir.Constant(intp, s))])), x_row) for s in range(SCORE_SAMPLES)]

            def tile(c_start, width, first=None):
                _emit_score_tile(context, builder, x_type, xa, starts, s0_, w_type, wa,
                                 c_start, nv, s_type, sa, width)

            if leftover:
                _leftover_tiles(builder, left_, c0_, TILE_CLASSES, tile)
            else:
                tile(c0_, TILE_CLASSES)
            return context.get_dummy_value()

        return sig, codegen

    return gather_score_tile


_gather_score_tile = _make_gather_score_tile()
_gather_score_leftover = _make_gather_score_tile(leftover=True)
_gather_grad_wide = _make_gather_grad_tile(GATHER_CLASSES, GATHER_VECTORS)
_gather_grad_narrow = _make_gather_grad_tile(GATHER_CLASSES, 1)
_gather_grad_leftover = _make_gather_grad_tile(GATHER_CLASSES, GATHER_VECTORS, leftover=True)
_gather_grad_leftover_narrow = _make_gather_grad_tile(GATHER_CLASSES, 1, leftover=True)


@njit(fastmath=FAST, cache=True)
def _score_tail(x, W, z, d_tail, scale):
    """What the score tiles leave of one sample's scores z (C,): the features from d_tail
    on, ``scale x[d_tail:] . W[c, d_tail:]`` added to each tile's sum in z. ``scale``:
    ``pixel_scale(X)``."""
    C, D = W.shape
    for c in range(C):
        w = W[c]
        acc = W.dtype.type(0)
        for d in range(d_tail, D):
            acc += W.dtype.type(x[d]) * w[d]
        z[c] += acc * scale


@njit(fastmath=FAST, cache=True)
def _gather_scores(X, rows, n, W, S):
    """S[s, c] = X[rows[s]] . W[c] for s < n rounded up to SCORE_SAMPLES (``rows`` holds a
    valid row there; those scores are ignored): the register tiles over whole vectors (the
    classes after the last full tile in narrower tiles), the samples outermost, or the
    classes where W is larger than ``TUNING.scores_by_class_kib``; then the leftover
    features with a plain loop."""
    C, D = W.shape
    lanes = VECTOR_BYTES // W.itemsize
    scale = pixel_scale(X)
    n_vec = D // lanes
    d_tail = n_vec * lanes
    c_tiles = C - C % TILE_CLASSES
    if C * D * W.itemsize > SCORES_BY_CLASS_BYTES:
        for c0 in range(0, c_tiles, TILE_CLASSES):
            for s0 in range(0, n, SCORE_SAMPLES):
                _gather_score_tile(X, rows, s0, W, c0, n_vec, S, 0)
        if c_tiles < C:
            for s0 in range(0, n, SCORE_SAMPLES):
                _gather_score_leftover(X, rows, s0, W, c_tiles, n_vec, S, C - c_tiles)
    else:
        for s0 in range(0, n, SCORE_SAMPLES):
            for c0 in range(0, c_tiles, TILE_CLASSES):
                _gather_score_tile(X, rows, s0, W, c0, n_vec, S, 0)
            if c_tiles < C:
                _gather_score_leftover(X, rows, s0, W, c_tiles, n_vec, S, C - c_tiles)
    for s in range(padded_rows(n)):
        _score_tail(X[rows[s]], W, S[s], d_tail, scale)


@njit(fastmath=FAST, cache=True)
def _gather_gradient(X, rows, n, G, part_W, overwrite, ahead, n_ahead):
    """``part_W (C, D) [+]= G[:n]^T X[rows[:n]]`` (``overwrite``: no ``part_W +``) with the
    gather tiles, sweeping D once per class tile (the classes after the last full tile in
    narrower tiles); the first class tile of each sweep step asks for the same columns of
    the rows ``X[ahead[:n_ahead]]`` (n_ahead <= n), the next block's, so every line of them
    is asked for once, spread over the whole pass. Leftover features with plain loops."""
    C, D = part_W.shape
    lanes = VECTOR_BYTES // part_W.itemsize
    wide = GATHER_VECTORS * lanes
    d_wide = D - D % wide
    d_narrow = D - D % lanes
    c_tiles = C - C % GATHER_CLASSES
    left = C - c_tiles
    for d0 in range(0, d_wide, wide):
        ask = n_ahead
        for c0 in range(0, c_tiles, GATHER_CLASSES):
            _gather_grad_wide(X, rows, n, G, d0, c0, part_W, overwrite, ahead, ask, 0)
            ask = 0
        if left:
            _gather_grad_leftover(X, rows, n, G, d0, c_tiles, part_W, overwrite, ahead, ask,
                                  left)
    for d0 in range(d_wide, d_narrow, lanes):
        ask = n_ahead
        for c0 in range(0, c_tiles, GATHER_CLASSES):
            _gather_grad_narrow(X, rows, n, G, d0, c0, part_W, overwrite, ahead, ask, 0)
            ask = 0
        if left:
            _gather_grad_leftover_narrow(X, rows, n, G, d0, c_tiles, part_W, overwrite, ahead,
                                         ask, left)
    if d_narrow < D:
        if overwrite:
            part_W[:, d_narrow:] = 0
        scale = pixel_scale(X)
        for s in range(n):
            x = X[rows[s], d_narrow:]
            for c in range(C):
                g = part_W.dtype.type(G[s, c] * scale)
                row = part_W[c, d_narrow:]
                for d in range(D - d_narrow):
                    row[d] += g * part_W.dtype.type(x[d])


# The vector provider of the microkernel interface (``microkernel.py``).

@njit(cache=True)
def new_scratch(T, C, D, block, X, W):
    """The vector tiles keep nothing between calls: no scratch (None)."""
    return None


@njit(cache=True)
def thread_scratch(scratch, k):
    """Thread k's part of no scratch: None."""
    return scratch


@njit(cache=True)
def padded_rows(n):
    """n rounded up to whole score tiles of SCORE_SAMPLES samples (the tiles fill them: the
    rows past n repeat a row, their scores are ignored)."""
    return (n + SCORE_SAMPLES - 1) // SCORE_SAMPLES * SCORE_SAMPLES


@njit(cache=True)
def pack_weights(X, W, n, scratch):
    """Nothing to pack: the vector tiles read W where it is."""


@njit(cache=True)
def score_block(X, rows, n, ahead, n_ahead, W, scratch, S):
    """A block's scores ``S[s, c] = scale X[rows[s]] . W[c]`` (``_gather_scores``); the next
    block's rows are asked for by the gradient's sweep instead."""
    _gather_scores(X, rows, n, W, S)


@njit(cache=True)
def accumulate_gradient(X, rows, n, ahead, n_ahead, G, part_W, overwrite, scratch):
    """``part_W [+]= scale G[:n]^T X[rows[:n]]`` (``_gather_gradient``), asking for the rows
    ``ahead[:n_ahead]`` of the next block as the tiles sweep D."""
    _gather_gradient(X, rows, n, G, part_W, overwrite, ahead, n_ahead)
