"""v12, tuned blocks: the production epoch as it was chosen, in blocks the CPU's tuning picks.

Shapes: N samples, D features, C classes, B batch, T threads, P rows of a block (its n
samples rounded up to whole score tiles), lanes = vector_bytes / itemsize.

v11's epoch (the threads split the samples, the tiles read the rows of X where they are, one
parallel region with two meetings per step) with what changed after it was chosen:

* the tile shapes and the vector width come from the CPU (``Tuning``: avx512, avx2, baseline),
  and the AVX2 tiles are 2 samples x 5 classes (scores) and 5 classes x 2 vectors (gradient);
* a block is ``block_kib`` KiB of rows (``samples_per_block``: 32 of MNIST's float32 rows)
  instead of 64 samples; ``epoch_in_blocks`` runs it in any other block, for comparisons;
* the update is one rule for any T, in float64, rounded once (``_sgd_step_of``), the last
  partial added inside the step's loop;
* the labels and weights of a block are asked for as its rows are listed;
* a meeting yields the core after a long spin (``SPINS_BEFORE_YIELD``);
* uint8 pixels run the same tiles on a quarter of the bytes, the 1/255 applied to each sum;
* the threads also count the weight of the samples scored right (the contract's second
  result); threads that cannot all run at once take ``_stepwise_epoch``, the same bits.

Production (``fastlr.backends.numba``) is this rung, split into files by job, plus the AMX
tiles that uint8 pixels take on CPUs that have them; the AMX path is not copied here, the lab
being timed on float32.

Frozen: a copy of ``fastlr/backends/numba`` (partition, tuning, tiles, softmax, update, sync,
epoch) at commit 631ac6e (2026-12-01), the vector-tile path only; the tuning keeps the
profiles without the ``FASTLR_NUMBA_TUNING`` override.
"""

import dataclasses
import platform

import numpy as np
from llvmlite import ir
from numba import get_num_threads, njit, prange, threading_layer, types
from numba.core import cgutils, config
from numba.core.extending import intrinsic, overload

from .lab_common import _chunk_bounds, main


@njit(cache=True)
def _aligned_slice(D, k, T):
    """Columns [lo, hi) of W that thread k updates: T slices whose bounds are multiples of 16
    floats, so no two threads write the same cache line."""
    lo = min(D, ((k * D) // T + 15) // 16 * 16)
    hi = D if k == T - 1 else min(D, (((k + 1) * D) // T + 15) // 16 * 16)
    return lo, hi


@dataclasses.dataclass(frozen=True)
class Tuning:
    """The parameters of the tiles and the threads' meetings, chosen from the CPU's features
    (``tuning_for``): the vector width, the score tile (samples x classes), the gradient tile
    (classes x vectors), whether the tiles use FMAs, the prefetch locality, whether a spin runs
    x86's ``pause``, and the KiB of rows of X in a block."""

    profile: str
    vector_bytes: int
    score_samples: int
    score_classes: int
    grad_classes: int
    grad_vectors: int
    fused: bool
    prefetch_locality: int = 2
    pause: bool = True
    block_kib: int = 100


def _profile(name, x86):
    """The named profile's parameters; ``x86``: whether ``pause`` exists."""
    if name == "avx512":
        return Tuning(name, 64, 4, 5, 10, 2, True, pause=x86)
    if name == "avx2":
        return Tuning(name, 32, 2, 5, 5, 2, True, pause=x86)
    return Tuning(name, 16, 2, 5, 5, 2, False, pause=x86)


def compile_features():
    """The set of CPU features Numba compiles for (``NUMBA_CPU_FEATURES``, else the host's),
    as names without the sign: ``{"avx2", "fma", ...}``."""
    if config.CPU_FEATURES is not None:
        text = config.CPU_FEATURES
    else:
        from numba.core.codegen import get_host_cpu_features
        text = get_host_cpu_features()
    return {f[1:] for f in text.split(",") if f.startswith("+")}


def tuning_for(features):
    """The tuning for a CPU with ``features`` (a set of LLVM feature names): avx512 where it
    has AVX-512, avx2 where AVX2 and FMA, else the 16-byte baseline."""
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
    if "avx512f" in features:
        tuning = _profile("avx512", x86)
    elif "avx2" in features and "fma" in features:
        tuning = _profile("avx2", x86)
    else:
        tuning = _profile("baseline", x86)
    if "fma" not in features:  # an FMA the CPU lacks would be a call to fmaf per lane
        tuning = dataclasses.replace(tuning, fused=False)
    return tuning


TUNING = tuning_for(compile_features())


# Reassociation lets LLVM vectorize the dot-product reductions; contraction gives FMAs. The
# other fast-math flags (no NaN, no inf, approximate functions) are left off: softmax must
# see an inf or a NaN if the weights diverge, so the driver can report it.
FAST = {"reassoc", "contract"}


# The shapes depend on the CPU: chosen by ``TUNING`` (avx512: 64-byte vectors, a 4 x 5 score
# tile, a 10 x 2 gradient tile).
VECTOR_BYTES = TUNING.vector_bytes


PREFETCH_LOCALITY = TUNING.prefetch_locality  # llvm.prefetch locality 2: prefetcht1, into L2


SCORE_SAMPLES = TUNING.score_samples  # samples x classes of the score tile


TILE_CLASSES = TUNING.score_classes   # classes of the score tile; C = 10 is two tiles of 5


GATHER_CLASSES = TUNING.grad_classes  # classes of the gradient tile (avx512: all 10 of MNIST's)


GATHER_VECTORS = TUNING.grad_vectors  # vectors of features of that tile


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


def _make_gather_grad_tile(n_classes, n_vectors):
    """An intrinsic ``gather_grad_tile(X, rows, n, G, d0, c0, out, overwrite, ahead,
    n_ahead)``: for the n_classes classes c0.. and the n_vectors vectors of features
    from d0, ``out[c, d] = [out[c, d] +] sum_{s < n} G[s, c] X[rows[s], d]`` (``overwrite``
    true: no ``out[c, d] +``), the rows of X read where they are. At sample s < n_ahead it
    asks for the same columns of row ``ahead[s]`` of X (a sample of the next block), so a
    sweep of these tiles over all of D asks for every line of those rows, one or two
    prefetches per 2 n_classes FMAs. X (N, D), rows and ahead int64, G (P, C), out (C, D)."""

    @intrinsic
    def gather_grad_tile(typingctx, X, rows, n, G, d0, c0, out, overwrite, ahead, n_ahead):
        sig = types.void(X, rows, n, G, d0, c0, out, overwrite, ahead, n_ahead)

        def codegen(context, builder, signature, args):
            x_, rows_, n_, g, d0_, c0_, out_, overwrite_, ahead_, n_ahead_ = args
            x_type, rows_type, _, g_type, _, _, out_type, _, ahead_type, _ = signature.args
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

            def ask(s):
                with builder.if_then(builder.icmp_signed("<", s, n_ahead_)):
                    row = builder.load(builder.gep(aa.data, [s]))
                    base = builder.bitcast(builder.gep(xa.data, [builder.add(
                        builder.mul(row, x_row), d0_)]), byte)
                    for m in range(n_lines):
                        _prefetch_line(builder, fn, builder.gep(base, [ir.Constant(intp,
                                                                                    64 * m)]))

            overwrite_bit = builder.icmp_unsigned("!=", overwrite_, ir.Constant(
                overwrite_.type, 0))
            _emit_grad_tile(context, builder, x_type, xa, row_start, n_, g_type, ga,
                            _row_length(context, builder, g_type, ga), d0_, c0_, oa,
                            _row_length(context, builder, out_type, oa), n_classes, n_vectors,
                            overwrite_bit, ask)
            return context.get_dummy_value()

        return sig, codegen

    return gather_grad_tile


def _emit_score_tile(context, builder, x_type, xa, row_starts, s0_, w_type, wa, c0_, nv,
                     s_type, sa):
    """The body of the score tiles: for the SCORE_SAMPLES rows of X starting at the elements
    ``row_starts`` and the TILE_CLASSES rows c0.. of W,
    ``S[s0 + s, c] = sum_{d < nv * lanes} x_s[d] W[c, d]``, each sum kept in one vector of
    lanes across d and reduced by a fixed halving tree (for uint8 X, times 1/255). The vectors
    are of W's float type."""
    element, vector = _lanes_of(context, w_type)
    lanes = vector.count
    intp = context.get_value_type(types.intp)
    w_row = _row_length(context, builder, w_type, wa)
    s_row = _row_length(context, builder, s_type, sa)
    w_starts = [builder.mul(builder.add(c0_, ir.Constant(intp, c)), w_row)
                for c in range(TILE_CLASSES)]
    acc = _accumulators(builder, vector, SCORE_SAMPLES * TILE_CLASSES)
    with cgutils.for_range(builder, nv) as loop:
        d = builder.mul(loop.index, ir.Constant(intp, lanes))
        xs = [_load_x(builder, x_type, xa, builder.add(start, d), vector) for start in row_starts]
        for c in range(TILE_CLASSES):
            wv = builder.load(_vector_at(builder, wa.data, builder.add(w_starts[c], d), vector),
                              align=1)
            for s in range(SCORE_SAMPLES):
                slot = acc[s * TILE_CLASSES + c]
                builder.store(_fma(builder, xs[s], wv, builder.load(slot)), slot)
    for s in range(SCORE_SAMPLES):
        s_at = builder.add(builder.mul(builder.add(s0_, ir.Constant(intp, s)), s_row), c0_)
        for c in range(TILE_CLASSES):
            total = _scaled(builder, x_type, _horizontal_sum(builder, builder.load(
                acc[s * TILE_CLASSES + c])))
            builder.store(total, builder.gep(sa.data, [builder.add(s_at, ir.Constant(intp, c))]))


@intrinsic
def _gather_score_tile(typingctx, X, rows, s0, W, c0, n_vectors, S):
    """``gather_score_tile(X, rows, s0, W, c0, n_vectors, S)``: for the SCORE_SAMPLES rows
    ``rows[s0 + s]`` of X (N, D), read where they are, and the TILE_CLASSES rows c0.. of W,
    ``S[s0 + s, c] = sum_{d < n_vectors * lanes} X[rows[s0 + s], d] W[c, d]``. rows int64,
    W (C, D), S (P, C), one float dtype."""
    sig = types.void(X, rows, s0, W, c0, n_vectors, S)

    def codegen(context, builder, signature, args):
        x_, rows_, s0_, w, c0_, nv, s_out = args
        x_type, rows_type, _, w_type, _, _, s_type = signature.args
        intp = context.get_value_type(types.intp)
        xa = context.make_array(x_type)(context, builder, x_)
        ra = context.make_array(rows_type)(context, builder, rows_)
        x_row = _row_length(context, builder, x_type, xa)
        starts = [builder.mul(builder.load(builder.gep(ra.data, [builder.add(
            s0_, ir.Constant(intp, s))])), x_row) for s in range(SCORE_SAMPLES)]
        _emit_score_tile(context, builder, x_type, xa, starts, s0_, w_type,
                         context.make_array(w_type)(context, builder, w), c0_, nv, s_type,
                         context.make_array(s_type)(context, builder, s_out))
        return context.get_dummy_value()

    return sig, codegen


_gather_grad_wide = _make_gather_grad_tile(GATHER_CLASSES, GATHER_VECTORS)


_gather_grad_narrow = _make_gather_grad_tile(GATHER_CLASSES, 1)


_gather_grad_class = _make_gather_grad_tile(1, GATHER_VECTORS)


_gather_grad_class_narrow = _make_gather_grad_tile(1, 1)


@njit(fastmath=FAST, cache=True)
def _score_leftovers(x, W, z, c_tiles, d_tail, scale):
    """What the score tiles leave of one sample's scores z (C,): whole dot products
    ``scale x . W[c]`` for the classes from c_tiles on, and the features from d_tail on for
    the classes before (added to the tile's sums in z). ``scale``: ``pixel_scale(X)``."""
    C, D = W.shape
    for c in range(c_tiles, C):
        w = W[c]
        acc = W.dtype.type(0)
        for d in range(D):
            acc += W.dtype.type(x[d]) * w[d]
        z[c] = acc * scale
    for c in range(c_tiles):
        w = W[c]
        acc = W.dtype.type(0)
        for d in range(d_tail, D):
            acc += W.dtype.type(x[d]) * w[d]
        z[c] += acc * scale


@njit(fastmath=FAST, cache=True)
def _gather_scores(X, rows, n, W, S):
    """S[s, c] = X[rows[s]] . W[c] for s < n rounded up to SCORE_SAMPLES (``rows`` holds a
    valid row there; those scores are ignored): the register tiles over whole vectors, the
    leftover classes and features with plain loops."""
    C, D = W.shape
    lanes = VECTOR_BYTES // W.itemsize
    scale = pixel_scale(X)
    n_vec = D // lanes
    d_tail = n_vec * lanes
    c_tiles = C - C % TILE_CLASSES
    for s0 in range(0, n, SCORE_SAMPLES):
        for c0 in range(0, c_tiles, TILE_CLASSES):
            _gather_score_tile(X, rows, s0, W, c0, n_vec, S)
        for s in range(s0, s0 + SCORE_SAMPLES):
            _score_leftovers(X[rows[s]], W, S[s], c_tiles, d_tail, scale)


@njit(fastmath=FAST, cache=True)
def _gather_gradient(X, rows, n, G, part_W, overwrite, ahead, n_ahead):
    """``part_W (C, D) [+]= G[:n]^T X[rows[:n]]`` (``overwrite``: no ``part_W +``) with the
    gather tiles, sweeping D once per class tile; the first class tile of each sweep step
    asks for the same columns of the rows ``X[ahead[:n_ahead]]`` (n_ahead <= n), the next
    block's, so every line of them is asked for once, spread over the whole pass. Leftover
    features with plain loops."""
    C, D = part_W.shape
    lanes = VECTOR_BYTES // part_W.itemsize
    wide = GATHER_VECTORS * lanes
    d_wide = D - D % wide
    d_narrow = D - D % lanes
    c_tiles = C - C % GATHER_CLASSES
    for d0 in range(0, d_wide, wide):
        ask = n_ahead
        for c0 in range(0, c_tiles, GATHER_CLASSES):
            _gather_grad_wide(X, rows, n, G, d0, c0, part_W, overwrite, ahead, ask)
            ask = 0
        for c in range(c_tiles, C):
            _gather_grad_class(X, rows, n, G, d0, c, part_W, overwrite, ahead, ask)
            ask = 0
    for d0 in range(d_wide, d_narrow, lanes):
        ask = n_ahead
        for c0 in range(0, c_tiles, GATHER_CLASSES):
            _gather_grad_narrow(X, rows, n, G, d0, c0, part_W, overwrite, ahead, ask)
            ask = 0
        for c in range(c_tiles, C):
            _gather_grad_class_narrow(X, rows, n, G, d0, c, part_W, overwrite, ahead, ask)
            ask = 0
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
def _block_softmax(S_parts, n, inv_batch, b, y, sample_weight, perm, start, Z, E, row_max,
                    row_total, G, grad_b, loss_lo, loss_hi, loss):
    """The full scores of the samples ``perm[start:start + n]`` (in the epoch a block of one
    thread's chunk, T = 1 part; v9's column split summed T parts), ``Z = sum_k S_parts[k] +
    b`` summed in order k = 0..T-1 in float64 into Z (P, C); the stable softmax with the vectorized
    ``_exp_nonpositive`` over all n samples at once; ``G[s] = s_i (p - onehot) * inv_batch`` in
    W's dtype and ``grad_b += G[s]`` for s in order. Returns ``loss`` plus s_i l_i for the
    samples [loss_lo, loss_hi) of the n, added in order (the threads share the logs)."""
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


@njit(cache=True)
def _block_correct(Z, row_max, y, sample_weight, perm, start, lo, hi, correct):
    """``correct`` plus s_i for the samples [lo, hi) of ``perm[start:]`` whose highest score in
    Z (the first one on a tie, as ``argmax``) is their label; row_max holds the rows' maxima,
    as ``_block_softmax`` left them."""
    for s in range(lo, hi):
        i = perm[start + s]
        label = y[i]
        hit = Z[s, label] == row_max[s]
        for c in range(label):
            if Z[s, c] == row_max[s]:
                hit = False
        if hit:
            correct += sample_weight[i]
    return correct


@njit(cache=True)
def _softmax_scratch(T, rows, C, dtype):
    """Per-thread scratch of ``_block_softmax`` for up to ``rows`` samples: G (T, rows, C) in
    W's dtype, the float64 scores Z and exponentials E (T, rows, C), and the row maxima and
    sums (T, rows + 8: no two threads' rows on one cache line)."""
    return (np.zeros((T, rows, C), dtype), np.zeros((T, rows, C)), np.zeros((T, rows, C)),
            np.zeros((T, rows + 8)), np.zeros((T, rows + 8)))


@njit(cache=True)
def _sgd_step_of(w, v, g0, g1, lr, momentum, alpha):
    """``_sgd_step`` with the gradient ``g0 + g1`` (summed in w's type, then widened), or g0
    alone if g1 is None: two partial gradients step W without a pass that sums them first."""
    dtype = w.dtype.type
    if momentum != 0.0:
        for j in range(w.shape[0]):
            g = np.float64(g0[j]) if g1 is None else np.float64(g0[j] + g1[j])
            step = momentum * np.float64(v[j]) + (g + alpha * np.float64(w[j]))
            v[j] = dtype(step)
            w[j] = dtype(w[j] - lr * step)
    else:
        for j in range(w.shape[0]):
            g = np.float64(g0[j]) if g1 is None else np.float64(g0[j] + g1[j])
            w[j] = dtype(w[j] - lr * (g + alpha * np.float64(w[j])))


@njit(cache=True)
def _sum_parts(parts, lo, hi, out):
    """``out[:hi - lo] = parts[0, lo:hi] + parts[1, lo:hi] + ... + parts[T-1, lo:hi]``, summed
    in that order. parts (T, n)."""
    n = hi - lo
    first = parts[0, lo:hi]
    for j in range(n):
        out[j] = first[j]
    for k in range(1, parts.shape[0]):
        part = parts[k, lo:hi]
        for j in range(n):
            out[j] += part[j]


@njit(cache=True)
def _update_slice(W, vel, parts, lo, hi, lr, momentum, alpha, grad):
    """The SGD step on the elements [lo, hi) of the flat W (C D,) and vel, with the gradient
    summed from parts (T, C D) in order k = 0..T-1. The last partial is added inside the
    step's loop, so one thread steps on its partial as it is and two sum theirs with no pass
    through a scratch slice (alone, half of W at momentum 0.9: 1.40 against 1.77 us; the epoch
    at batch 64 on two threads 17.9-19.1 against 19.6-20.4 ms); more sum the first T - 1 into
    the scratch ``grad`` first."""
    T = parts.shape[0]
    w, v = W[lo:hi], vel[lo:hi]
    if T == 1:
        _sgd_step_of(w, v, parts[0, lo:hi], None, lr, momentum, alpha)
        return
    if T == 2:
        first = parts[0, lo:hi]
    else:
        _sum_parts(parts[:T - 1], lo, hi, grad)
        first = grad[:hi - lo]
    _sgd_step_of(w, v, first, parts[T - 1, lo:hi], lr, momentum, alpha)


@njit(cache=True)
def _update_bias(b, vel_b, parts_b, lr, momentum, grad):
    """The SGD step on the bias b (C,), with the gradient summed from parts_b (T, C) as
    ``_update_slice`` sums W's; no decay on the bias."""
    _update_slice(b, vel_b, parts_b, 0, b.shape[0], lr, momentum, 0.0, grad)


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


# Tries of a spin before each further try first yields the core (``sched_yield``): a meeting
# takes microseconds, so a thread still waiting after this many tries (a millisecond or so)
# most likely waits for a thread that shares its core, which runs only when it yields. With
# both threads of an epoch on one core (``taskset -c 0``, or the other core busy), an epoch at
# batch 1024 took 471 ms instead of about 30 (docs/journal/xeon-sapphire-rapids.md).
SPINS_BEFORE_YIELD = 1 << 13


@intrinsic
def _wait_until(typingctx, flags, j, value):
    """Spin (``pause`` between tries) until ``flags[j] >= value``, read with acquire
    ordering; after SPINS_BEFORE_YIELD tries, yield the core before every further try."""
    sig = types.void(flags, j, value)

    def codegen(context, builder, signature, args):
        fa = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(fa.data, [args[1]])
        i64 = ir.IntType(64)
        tries = cgutils.alloca_once_value(builder, ir.Constant(i64, 0))
        spin = builder.append_basic_block("spin")
        wait = builder.append_basic_block("wait")
        done = builder.append_basic_block("done")
        builder.branch(spin)
        builder.position_at_end(spin)
        seen = builder.load_atomic(ptr, "acquire", 8)
        builder.cbranch(builder.icmp_signed(">=", seen, args[2]), done, wait)
        builder.position_at_end(wait)
        count = builder.add(builder.load(tries), ir.Constant(i64, 1))
        builder.store(count, tries)
        with builder.if_else(builder.icmp_signed(">", count, ir.Constant(
                i64, SPINS_BEFORE_YIELD))) as (long_wait, short_wait):
            with long_wait:
                builder.call(cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield"), [])
            with short_wait:
                if TUNING.pause:
                    builder.call(cgutils.get_or_insert_function(
                        builder.module, ir.FunctionType(ir.VoidType(), []),
                        "llvm.x86.sse2.pause"), [])
        builder.branch(spin)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True)
def _barrier(flags, k, T, count):
    """Thread k's side of the count-th meeting of the T threads: publish the count, wait until
    every thread has."""
    _publish(flags, 8 * k, count)
    for j in range(T):
        _wait_until(flags, 8 * j, count)


def _threads_run_at_once(T):
    """Whether the T chunks of a ``prange(T)`` run on T threads at the same time, as kernels
    whose threads spin on each other need: the OpenMP and workqueue layers give every chunk
    its own thread if Numba has T; TBB's work stealing may run two chunks one after the
    other on one thread, which would never finish."""
    return T <= get_num_threads() and threading_layer() in ("omp", "workqueue")


BLOCK_BYTES = TUNING.block_kib * 1024  # rows of X per block, in bytes (``TUNING``)


MAX_BLOCK = 1024  # samples: the scratch of a block of rows a few features long stays small


@njit(cache=True)
def _stream_rows(perm, batch_size, k, T, t, offset, count, out):
    """``out[:got]``: the rows of thread k's stream of samples (its chunk of step t, then its
    chunk of step t + 1, ...) from ``offset`` samples into step t's chunk on; returns
    got <= count (fewer at the end of the epoch)."""
    M = perm.shape[0]
    got = 0
    while got < count:
        start = t * batch_size
        if start >= M:
            break
        lo, hi = _chunk_bounds(start, min(start + batch_size, M), k, T)
        if offset >= hi - lo:
            offset -= hi - lo
            t += 1
            continue
        m = min(count - got, hi - lo - offset)
        for s in range(m):
            out[got + s] = perm[lo + offset + s]
        got += m
        offset += m
    return got


@njit(cache=True)
def _aligned(a):
    """``a`` itself if it starts on a 64-byte line, else a copy that does (Numba allocates on
    64 bytes). On Intel cores a 64-byte load that straddles two lines costs two; a row of
    MNIST (3136 bytes) is a whole number of lines, so aligning the start aligns every row:
    the score tile alone went from 116 to 156 GFLOP/s, the gradient tile from 181 to 208
    (Xeon, docs/journal/xeon-sapphire-rapids.md)."""
    if a.ctypes.data % 64 == 0:
        return a
    return a.copy()


@njit(cache=True)
def samples_per_block(row_bytes):
    """The samples of a block for rows of ``row_bytes`` bytes: BLOCK_BYTES of them, rounded
    down to whole score tiles, at least one tile and at most MAX_BLOCK (MNIST: 32 float32
    rows, 16 float64 rows, and 128 uint8 rows with AVX-512's tiles of 4 samples, 130 with
    the tiles of 2 of AVX2 and the baseline)."""
    n = BLOCK_BYTES // row_bytes // SCORE_SAMPLES * SCORE_SAMPLES
    return min(max(n, SCORE_SAMPLES), MAX_BLOCK)


@njit(cache=True)
def _whole_tiles(n):
    """n rounded up to whole score tiles of SCORE_SAMPLES samples (the tiles fill them: the
    rows past n repeat a row, their scores are ignored)."""
    return (n + SCORE_SAMPLES - 1) // SCORE_SAMPLES * SCORE_SAMPLES


@njit(cache=True)
def _epoch_scratch(T, C, D, dtype, block):
    """Per-thread scratch of the epoch in blocks of ``block`` samples, each row padded so no
    two threads share a cache line: the block's row numbers and the next block's
    (T, block + 16) int64, the block's scores S (T, 1, block rounded up to whole score tiles,
    C), the softmax's G, Z, E, row maxima and sums, the update's gradient slice
    (T, C D / T + 16 + lanes)."""
    rows = np.zeros((T, block + 16), np.int64)
    ahead = np.zeros((T, block + 16), np.int64)
    S = np.zeros((T, 1, _whole_tiles(block), C), dtype)
    lanes = VECTOR_BYTES // S.itemsize
    G, Z, E, row_max, row_total = _softmax_scratch(T, block, C, dtype)
    grad = np.zeros((T, (C * D) // T + 16 + lanes), dtype)
    return rows, ahead, S, G, Z, E, row_max, row_total, grad


@njit(cache=True)
def _chunk_gradient(k, T, t, X, y, sample_weight, perm, batch_size, W, b, part_W, part_b,
                    rows, ahead, S, G, Z, E, row_max, row_total, block):
    """Thread k's partial gradient of step t at the current W, into part_W (C, D) and part_b
    (C,), block by block of ``block`` samples: the block's scores straight from the rows of X,
    its softmax, its gradient, while the next block's rows are asked for. Returns the chunk's
    sum of s_i l_i and its sum of s_i over the samples whose highest score is their label."""
    M = perm.shape[0]
    start = t * batch_size
    stop = min(start + batch_size, M)
    inv_batch = 1.0 / (stop - start)
    lo, hi = _chunk_bounds(start, stop, k, T)
    loss = 0.0
    correct = 0.0
    part_b[:] = 0
    if hi == lo:
        part_W[:, :] = 0
    for p0 in range(lo, hi, block):
        n = min(block, hi - p0)
        for s in range(n):
            rows[s] = perm[p0 + s]
            # The softmax reads the block's labels and weights, scattered over y and
            # sample_weight: asked for now, they arrive while the scores run.
            _prefetch_element(y, rows[s])
            _prefetch_element(sample_weight, rows[s])
        for s in range(n, _whole_tiles(n)):
            rows[s] = rows[n - 1]
        n_ahead = _stream_rows(perm, batch_size, k, T, t, p0 - lo + n, n, ahead)
        _gather_scores(X, rows, n, W, S[0])
        loss = _block_softmax(S, n, inv_batch, b, y, sample_weight, perm, p0, Z, E, row_max,
                              row_total, G, part_b, 0, n, loss)
        correct = _block_correct(Z, row_max, y, sample_weight, perm, p0, 0, n, correct)
        # The first block overwrites the part: no pass to clear it.
        _gather_gradient(X, rows, n, G, part_W, p0 == lo, ahead, n_ahead)
    return loss, correct


@njit(cache=True)
def _update_share(k, T, lr, momentum, alpha, W, b, vel_W, vel_b, parts_W, parts_b, grad):
    """Thread k's share of a step's update: its slice of the flat W from the T partial
    gradients, and the bias if k is 0."""
    C, D = W.shape
    lo, hi = _aligned_slice(C * D, k, T)
    _update_slice(W.reshape(C * D), vel_W.reshape(C * D), parts_W.reshape((T, C * D)), lo, hi,
                  lr, momentum, alpha, grad)
    if k == 0:
        _update_bias(b, vel_b, parts_b, lr, momentum, grad)


@njit(cache=True)
def _sample_thread(k, T, X, y, sample_weight, perm, lr_steps, batch_size, momentum, alpha,
                   W, b, vel_W, vel_b, parts_W, parts_b, rows, ahead, S, G, Z, E, row_max,
                   row_total, grad, flags, step_loss, step_correct, block):
    """Thread k's whole epoch: per step its chunk gradient, a meeting, its share of the
    update, a meeting, after which W is whole again. Its sum of s_i l_i for step t goes to
    ``step_loss[t, k]``, its sum of s_i over the samples it scored right to
    ``step_correct[t, k]``."""
    M = perm.shape[0]
    n_steps = (M + batch_size - 1) // batch_size
    meetings = 0
    for t in range(n_steps):
        step_loss[t, k], step_correct[t, k] = _chunk_gradient(
            k, T, t, X, y, sample_weight, perm, batch_size, W, b, parts_W[k], parts_b[k], rows,
            ahead, S, G, Z, E, row_max, row_total, block)
        if T > 1:
            meetings += 1
            _barrier(flags, k, T, meetings)
        _update_share(k, T, lr_steps[t], momentum, alpha, W, b, vel_W, vel_b, parts_W, parts_b,
                      grad)
        if T > 1:
            meetings += 1
            _barrier(flags, k, T, meetings)


@njit(cache=True)
def _sum_steps(per_step):
    """The epoch's total of (S, T) per-step, per-thread sums (of the loss, of the samples
    scored right), added step by step, thread by thread, in order."""
    total = 0.0
    for t in range(per_step.shape[0]):
        for k in range(per_step.shape[1]):
            total += per_step[t, k]
    return total


@njit(parallel=True, cache=True)
def _sample_epoch(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                  alpha, parts_W, parts_b, block):
    """The epoch as one parallel region: T threads that meet through atomic flags. W and the
    partial gradients are worked on where they start on a cache line (``_aligned``)."""
    T, C, D = parts_W.shape
    M = perm.shape[0]
    n_steps = (M + batch_size - 1) // batch_size
    rows, ahead, S, G, Z, E, row_max, row_total, grad = _epoch_scratch(T, C, D, W.dtype,
                                                                       block)
    flags = np.zeros(8 * T, np.int64)
    step_loss = np.zeros((n_steps, T))
    step_correct = np.zeros((n_steps, T))
    W_work, parts_work = _aligned(W), _aligned(parts_W)
    for k in prange(T):  # the whole epoch: at T = 1, one fork-join per epoch
        _sample_thread(k, T, X, y, sample_weight, perm, lr_steps, batch_size, momentum, alpha,
                       W_work, b, vel_W, vel_b, parts_work, parts_b, rows[k], ahead[k], S[k],
                       G[k], Z[k], E[k], row_max[k], row_total[k], grad[k], flags, step_loss,
                       step_correct, block)
    if W_work.ctypes.data != W.ctypes.data:
        W[:, :] = W_work
    return _sum_steps(step_loss), _sum_steps(step_correct)


@njit(parallel=True, cache=True)
def _stepwise_epoch(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size,
                    momentum, alpha, parts_W, parts_b, block):
    """The epoch for threads that may not all run at once: ``_sample_epoch``'s chunk
    gradients and update, with two fork-joins per step in place of its meetings."""
    T, C, D = parts_W.shape
    M = perm.shape[0]
    n_steps = (M + batch_size - 1) // batch_size
    rows, ahead, S, G, Z, E, row_max, row_total, grad = _epoch_scratch(T, C, D, W.dtype,
                                                                       block)
    step_loss = np.zeros((n_steps, T))
    step_correct = np.zeros((n_steps, T))
    W_work, parts_work = _aligned(W), _aligned(parts_W)
    for t in range(n_steps):
        for k in prange(T):
            step_loss[t, k], step_correct[t, k] = _chunk_gradient(
                k, T, t, X, y, sample_weight, perm, batch_size, W_work, b, parts_work[k],
                parts_b[k], rows[k], ahead[k], S[k], G[k], Z[k], E[k], row_max[k],
                row_total[k], block)
        for k in prange(T):
            _update_share(k, T, lr_steps[t], momentum, alpha, W_work, b, vel_W, vel_b,
                          parts_work, parts_b, grad[k])
    if W_work.ctypes.data != W.ctypes.data:
        W[:, :] = W_work
    return _sum_steps(step_loss), _sum_steps(step_correct)


def sgd_epoch(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
              alpha, parts_W, parts_b):
    """One epoch of minibatch SGD (the contract in ``fastlr/backends/__init__.py``).

    Parameters
    ----------
    X : (N, D) float32 or float64, C-contiguous
    y : (N,) int64, labels in 0..C-1
    sample_weight : (N,) X's dtype
    perm : (M,) int64, the samples of the epoch in order; step t takes
        ``perm[t*batch_size:(t+1)*batch_size]``
    W, b, vel_W, vel_b : (C, D), (C,) X's dtype, updated in place
    lr_steps : (S,) float64, the learning rate of each step
    batch_size : int
    momentum, alpha : float, momentum and L2 strength
    parts_W, parts_b : (T, C, D), (T, C) X's dtype, the per-thread partial gradients; T is the
        thread count

    Returns
    -------
    loss_sum : float
        The sum of ``s_i l_i`` over the epoch, each loss at the weights of its step.
    correct_sum : float
        The sum of ``s_i`` over the samples whose highest score at those weights is their
        label (the first one on a tie).
    """
    return epoch_in_blocks(samples_per_block(X.shape[1] * X.itemsize), X, y, sample_weight, perm,
                           W, b, vel_W, vel_b, lr_steps, batch_size, momentum, alpha, parts_W,
                           parts_b)


def epoch_in_blocks(block, *args):
    """``sgd_epoch(*args)`` with the threads' chunks taken in blocks of ``block`` samples
    instead of ``samples_per_block``'s (for comparisons: bench/where_rows_come_from.py
    --blocks). The block changes the order in which a chunk's gradient is summed, so the bits,
    not only the speed."""
    parts_W = args[-2]  # (T, C, D): the contract's next-to-last argument
    if _threads_run_at_once(parts_W.shape[0]):
        return _sample_epoch(*args, block)
    return _stepwise_epoch(*args, block)


if __name__ == "__main__":
    main(sgd_epoch, __doc__)
