"""The block's scores and gradient on AMX tiles, for uint8 pixels, in LLVM IR.

Shapes: P rows of a block (its n samples rounded up to 16), D features, D16 = D rounded up to
16, C <= 16 classes; a group is 16 samples of the block.

Sapphire Rapids has eight tile registers of 16 rows x 64 bytes and ``tdpbf16ps``, which adds
to a 16 x 16 float32 tile C the products of a 16 x 32 bfloat16 tile A and a 32 x 16 one B:
``C[m, n] += sum_j A[m, 2j] B[2j, n] + A[m, 2j + 1] B[2j + 1, n]``, 16 x 16 x 32 multiplies
in one instruction, a pair of bfloat16 in each 32-bit word (the even one in the low half).
The pairs are what this module is built on:

* A pixel 0..255 is exact in bfloat16 (8 bits of mantissa), so 16 pixels become 16 words
  that hold the pixel twice, ``(x, x)`` (``_words_of``: widen, convert to float, copy the
  high half into the low one: a float of 0..255 has zeros there).
* A weight w = W[c, d] / 255 is not exact in bfloat16, but it is the sum of two of them:
  ``hi`` (w's top 16 bits) and ``lo`` (w - hi rounded to the nearest bfloat16), within
  2^-16 of w: ``Wb[d, c] = (hi, lo)`` (``pack_bf16_weights``, once per chunk of a step).
* Then one pair product is ``x hi + x lo``: the score tile ``S[s, c] += sum_d
  words(x_s)[d] Wb[d, c]`` (``_amx_scores``: A = 16 rows x 16 features of words, B = 16
  features of Wb) is ``x . w`` to about float32's precision, 16 samples x 16 features x C
  classes per instruction, with the 1/255 already in the weights.
* The deltas g = G[s, c] / 255 split the same way, ``Dt[group, c, s] = (hi, lo)``
  (``_pack_deltas``, per block), and the gradient tile ``part_W[c, d] += sum_s Dt[c, s]
  words(x_s)[d]`` (``_amx_gradient``: A = a group's deltas, B = its 16 rows x 16 features of
  words) takes the same words: one layout serves both products.

Where the words live decided the speed. The block is not packed: a block of words is four
times its pixels' bytes and sits in L2, and each 16 x 16 tile of words is instead made from
the rows where they are, into one of eight 1 KB tiles of a buffer that stays in L1 and starts
on a line (``_Rows``, ``tile_buffers``), twice per block (scores, then gradient). The next
step's tiles are made while this step's are multiplied (two halves of the buffer), so a tile
load never waits on the stores just issued. Variants tried on Sapphire Rapids: the block packed
once into words and read twice (slower: the words live in L2), tiles whose rows straddle
cache lines (the products alone more than twice as slow). Making the words costs more than
the tile products themselves (the conversion is two cycles of the two 512-bit ports per row of
16), which is why they are made as late and as close to L1 as this
(docs/journal/xeon-sapphire-rapids.md, round four). Four accumulator tiles at a time share
each tile of weights (scores) or deltas (gradient). The next block's rows are asked for half
during the scores, half during the gradient.

The sums are float32 (the tiles accumulate in float32, with bfloat16 products exact in it),
so the result differs from the vector tiles by rounding only, well within check.py's
tolerances; a given block size and thread count gives the same bits on every run. Float32
rows are not taken here: split into (hi, lo) words they need twice the conversion and two
products per tile, and the epoch was slower than the vector tiles' (same journal section).

The operating system must be asked for the tile registers once per process
(``tuning.request_tiles``: Linux's ``arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)``); without it
the first tile instruction kills the process. ``tuning.py`` asks at import and chooses this
module as the microkernel's provider (``microkernel.py``) only if the answer is yes; the
provider's functions are at the end of this file.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.extending import intrinsic, overload

from .tiles import _gather_gradient, _gather_scores
from .tuning import TUNING

GROUP = 16  # samples of a tile's rows; a block is packed in whole groups
SLAB = 16  # features of one tile of 64 bytes of words
WAYS = 4  # accumulator tiles that share one tile of weights (scores) or of deltas (gradient)
AMX_MIN_CHUNK = TUNING.amx_min_chunk  # samples of a chunk below which it keeps vector tiles

_i8 = ir.IntType(8)
_i16 = ir.IntType(16)
_i32 = ir.IntType(32)
_i64 = ir.IntType(64)
_byte_ptr = _i8.as_pointer()


def _void_fn(builder, name, args):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), args),
                                          name)


class _Tiles:
    """The AMX instructions of one function being built, with tile numbers as constants."""

    def __init__(self, builder):
        self.b = builder
        self._load = _void_fn(builder, "llvm.x86.tileloadd64", [_i8, _byte_ptr, _i64])
        self._store = _void_fn(builder, "llvm.x86.tilestored64", [_i8, _byte_ptr, _i64])
        self._zero = _void_fn(builder, "llvm.x86.tilezero", [_i8])
        self._dot = _void_fn(builder, "llvm.x86.tdpbf16ps", [_i8, _i8, _i8])

    def configure(self, shapes):
        """Load a tile configuration: ``shapes[t] = (rows, bytes per row)`` of tile t."""
        b = self.b
        cfg = cgutils.alloca_once(b, ir.ArrayType(_i8, 64))
        b.store(ir.Constant(ir.ArrayType(_i8, 64), None), cfg)
        base = b.bitcast(cfg, _byte_ptr)
        b.store(ir.Constant(_i8, 1), base)  # palette 1
        for t, (rows, colsb) in enumerate(shapes):
            b.store(b.trunc(rows, _i8) if rows.type != _i8 else rows,
                    b.gep(base, [ir.Constant(_i32, 48 + t)]))
            b.store(b.trunc(colsb, _i16) if colsb.type != _i16 else colsb,
                    b.bitcast(b.gep(base, [ir.Constant(_i32, 16 + 2 * t)]), _i16.as_pointer()))
        b.call(_void_fn(b, "llvm.x86.ldtilecfg", [_byte_ptr]), [base])

    def release(self):
        self.b.call(_void_fn(self.b, "llvm.x86.tilerelease", []), [])

    def load(self, tile, pointer, stride):
        self.b.call(self._load, [ir.Constant(_i8, tile), self.b.bitcast(pointer, _byte_ptr),
                                 stride])

    def store(self, tile, pointer, stride):
        self.b.call(self._store, [ir.Constant(_i8, tile), self.b.bitcast(pointer, _byte_ptr),
                                  stride])

    def zero(self, tile):
        self.b.call(self._zero, [ir.Constant(_i8, tile)])

    def dot(self, c, a, b_):
        self.b.call(self._dot, [ir.Constant(_i8, c), ir.Constant(_i8, a), ir.Constant(_i8, b_)])


def _shape2(builder, array):
    return cgutils.unpack_tuple(builder, array.shape, 2)


def _int(value):
    """An i64 constant."""
    return ir.Constant(_i64, value)


def _in_ways(builder, n, emit):
    """``emit(first, k)`` for first = 0, WAYS, 2 WAYS, ... < n with k = min(WAYS, n - first)
    items from first on: k is a Python constant (tile numbers are constants in the
    instructions, so each count is its own code)."""
    with cgutils.for_range_slice(builder, _int(0), n, _int(WAYS)) as (first, _):
        left = builder.sub(n, first)
        count = builder.select(builder.icmp_signed("<", left, _int(WAYS)), left, _int(WAYS))
        for k in range(1, WAYS + 1):
            with builder.if_then(builder.icmp_signed("==", count, _int(k))):
                emit(first, k)


def _pipelined(builder, n, convert, multiply):
    """``convert(i)`` then ``multiply(i)`` for i < n, the conversion of step i + 1 issued
    before the products of step i (the buffer's two halves take turns: a tile load never
    waits for the stores just issued)."""
    convert(_int(0))
    with cgutils.for_range(builder, n) as loop:
        following = builder.add(loop.index, _int(1))
        with builder.if_then(builder.icmp_signed("<", following, n)):
            convert(following)
        multiply(loop.index)


def _words_of(builder, vector):
    """16 pixels (uint8) as 16 words that hold the pixel twice, ``(x, x)`` in bfloat16:
    widened to floats (exact), whose high half is the bfloat16 and whose low half is zero,
    then the high half copied into the low one."""
    words = ir.VectorType(_i32, 16)
    half = ir.Constant(words, [ir.Constant(_i32, 16)] * 16)
    bits = builder.bitcast(builder.uitofp(vector, ir.VectorType(ir.FloatType(), 16)), words)
    return builder.or_(bits, builder.lshr(bits, half))


class _Rows:
    """The rows of pixels a block reads, through its list of row numbers, 16 features of 16
    rows at a time turned into a tile of words in a buffer that stays in L1 (``tile``), and
    the next block's rows asked for as the same columns are read (``ask``)."""

    def __init__(self, context, builder, x_type, x_value, rows_type, rows_value, buf_type,
                 buf_value):
        self.b = builder
        self.xa = context.make_array(x_type)(context, builder, x_value)
        self.ra = context.make_array(rows_type)(context, builder, rows_value)
        self.buf = context.make_array(buf_type)(context, builder, buf_value).data
        self.D = _shape2(builder, self.xa)[1]
        self.element = context.get_data_type(x_type.dtype)
        self.vector = ir.VectorType(self.element, 16)
        self.itemsize = x_type.dtype.bitwidth // 8

    def starts(self, first):
        """Pointers to the 16 rows ``rows[first + i]`` of X."""
        b = self.b
        out = []
        for i in range(16):
            row = b.load(b.gep(self.ra.data, [b.add(first, _int(i))]))
            out.append(b.gep(self.xa.data, [b.mul(row, self.D)]))
        return out

    def _load(self, pointer, count):
        """16 elements from pointer, or the first ``count`` of them and zeros (count < 16,
        one at a time: the last, partial vector of a row)."""
        b = self.b
        if count is None:
            return b.load(b.bitcast(pointer, self.vector.as_pointer()), align=1)
        slot = cgutils.alloca_once(b, self.vector)
        b.store(ir.Constant(self.vector, None), slot)
        lanes = b.bitcast(slot, self.element.as_pointer())
        with cgutils.for_range(b, count) as loop:
            b.store(b.load(b.gep(pointer, [loop.index])), b.gep(lanes, [loop.index]))
        return b.load(slot)

    def tile(self, starts, d0, step, j):
        """Write the words of features d0.. (zeros past D) of the 16 rows at ``starts`` into
        buffer tile ``slot(step, j)``."""
        b = self.b
        words = ir.VectorType(_i32, 16)
        base = self.slot(step, j)
        left = b.sub(self.D, d0)
        whole = b.icmp_signed(">=", left, _int(16))

        def fill(count):
            for i, start in enumerate(starts):
                value = _words_of(b, self._load(b.gep(start, [d0]), count))
                b.store(value, b.bitcast(b.gep(base, [_int(16 * i)]), words.as_pointer()),
                        align=1)

        with b.if_else(whole) as (then, otherwise):
            with then:
                fill(None)
            with otherwise:
                fill(left)

    def slot(self, step, j):
        """The address of tile j (< 4) of the buffer's half for ``step`` (an i64 value): 16
        rows of 64 bytes, the half ``step & 1``."""
        b = self.b
        half = b.mul(b.and_(step, _int(1)), _int(4))
        return b.gep(self.buf, [b.mul(b.add(half, _int(j)), _int(256))])

    def ask(self, ahead, lo, hi, first, d0):
        """Ask (``prefetcht1``) for the line of features d0.. of the rows ``ahead[first +
        i]``, i < 16 and lo <= first + i < hi, when d0 starts a line of them."""
        b = self.b
        fn = _void_fn(b, "llvm.prefetch.p0", [_byte_ptr, _i32, _i32, _i32])
        offset = b.mul(d0, _int(self.itemsize))
        starts_line = b.icmp_signed("==", b.and_(offset, _int(63)), _int(0))
        with b.if_then(starts_line):
            for i in range(16):
                index = b.add(first, _int(i))
                asked = b.and_(b.icmp_signed(">=", index, lo), b.icmp_signed("<", index, hi))
                with b.if_then(asked):
                    row = b.load(b.gep(ahead, [index]))
                    pointer = b.gep(self.xa.data, [b.add(b.mul(row, self.D), d0)])
                    b.call(fn, [b.bitcast(pointer, _byte_ptr), ir.Constant(_i32, 0),
                                ir.Constant(_i32, 2), ir.Constant(_i32, 1)])


@intrinsic
def _amx_scores(typingctx, X, rows, n_rows, ahead, n_ahead, Wb, buf, S):
    """``S[s, c] = sum_d words(X[rows[s]])[d] Wb[d, c]`` for s < n_rows (a multiple of 16),
    as pairs of bfloat16: X (N, D) uint8, Wb (D16, C) uint32, buf (2048,) uint32 (eight
    tiles of words, on a 64-byte line), S (P, C) float32, C <= 16. Up to four groups of 16
    samples at a time, each in its own accumulator tile, share each tile of Wb; the first
    half of the next block's rows ``ahead[:n_ahead]`` is asked for as the same columns are
    read. Tiles 0-3 the scores (16 x C), 4 the weights (16 features x C), 6-7 the rows."""
    sig = types.void(X, rows, n_rows, ahead, n_ahead, Wb, buf, S)

    def codegen(context, builder, signature, args):
        x_t, rows_t, _, ahead_t, _, wb_t, buf_t, s_t = signature.args
        src = _Rows(context, builder, x_t, args[0], rows_t, args[1], buf_t, args[6])
        ahead = context.make_array(ahead_t)(context, builder, args[3]).data
        n_rows, n_ahead = args[2], args[4]
        wb = context.make_array(wb_t)(context, builder, args[5])
        s_out = context.make_array(s_t)(context, builder, args[7])
        d16, C = _shape2(builder, wb)
        tiles = _Tiles(builder)
        sixteen, line = _int(16), _int(64)
        c_bytes = builder.mul(C, _int(4))
        tiles.configure([(sixteen, c_bytes)] * 6 + [(sixteen, line)] * 2)
        n_groups = builder.sdiv(n_rows, sixteen)
        ask_stop = builder.sdiv(n_ahead, _int(2))

        def emit(g0, k):
            firsts = [builder.mul(builder.add(g0, _int(g)), sixteen) for g in range(k)]
            starts = [src.starts(first) for first in firsts]

            def convert(step):
                d0 = builder.mul(step, sixteen)
                for g in range(k):
                    src.ask(ahead, _int(0), ask_stop, firsts[g], d0)
                    src.tile(starts[g], d0, step, g)

            def multiply(step):
                tiles.load(4, builder.gep(wb.data, [builder.mul(builder.mul(step, sixteen),
                                                                C)]), c_bytes)
                for g in range(k):
                    tiles.load(6 + g % 2, src.slot(step, g), line)
                    tiles.dot(g, 6 + g % 2, 4)

            for g in range(k):
                tiles.zero(g)
            _pipelined(builder, builder.sdiv(d16, sixteen), convert, multiply)
            for g in range(k):
                tiles.store(g, builder.gep(s_out.data, [builder.mul(firsts[g], C)]), c_bytes)

        _in_ways(builder, n_groups, emit)
        tiles.release()
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _amx_gradient(typingctx, Dt, X, rows, n_rows, x_col, out, d_stop, overwrite, ahead,
                  n_ahead, buf):
    """``out[c, d] (+)= sum_s Dt[s // 16, c, s % 16] words(X[rows[s]])[x_col + d]`` for
    s < n_rows (a multiple of 16) and the features d < d_stop (a multiple of 16) of out
    (C, D) float32; ``overwrite``: no ``out +``. Dt (groups, C, 16) uint32, X (N, D) uint8,
    buf as for ``_amx_scores``. Up to four slabs of 16 features at a time, each in its own
    accumulator tile, share each group's tile of deltas; the second half of the next block's
    rows ``ahead[:n_ahead]`` is asked for as the same columns are read. Tiles 0-3 the
    gradient (C x 16), 4 the deltas (C x 16 samples), 6-7 the rows."""
    sig = types.void(Dt, X, rows, n_rows, x_col, out, d_stop, overwrite, ahead, n_ahead, buf)

    def codegen(context, builder, signature, args):
        dt_t, x_t, rows_t, _, _, out_t, _, _, ahead_t, _, buf_t = signature.args
        dt = context.make_array(dt_t)(context, builder, args[0])
        src = _Rows(context, builder, x_t, args[1], rows_t, args[2], buf_t, args[10])
        out = context.make_array(out_t)(context, builder, args[5])
        n_rows, x_col, d_stop, overwrite = args[3], args[4], args[6], args[7]
        ahead = context.make_array(ahead_t)(context, builder, args[8]).data
        n_ahead = args[9]
        C = cgutils.unpack_tuple(builder, dt.shape, 3)[1]
        D = _shape2(builder, out)[1]
        tiles = _Tiles(builder)
        sixteen, line = _int(16), _int(64)
        out_stride = builder.mul(D, _int(4))
        tiles.configure([(C, line)] * 6 + [(sixteen, line)] * 2)
        ask_start = builder.sdiv(n_ahead, _int(2))
        fresh = builder.icmp_unsigned("!=", overwrite, ir.Constant(overwrite.type, 0))

        def emit(j0, k):
            columns = [builder.mul(builder.add(j0, _int(j)), sixteen) for j in range(k)]
            with builder.if_else(fresh) as (then, otherwise):
                with then:
                    for j in range(k):
                        tiles.zero(j)
                with otherwise:
                    for j in range(k):
                        tiles.load(j, builder.gep(out.data, [columns[j]]), out_stride)

            def convert(g):
                first = builder.mul(g, sixteen)
                starts = src.starts(first)
                for j in range(k):
                    d0 = builder.add(x_col, columns[j])
                    src.ask(ahead, ask_start, n_ahead, first, d0)
                    src.tile(starts, d0, g, j)

            def multiply(g):
                tiles.load(4, builder.gep(dt.data, [builder.mul(builder.mul(g, C), sixteen)]),
                           line)
                for j in range(k):
                    tiles.load(6 + j % 2, src.slot(g, j), line)
                    tiles.dot(j, 4, 6 + j % 2)

            _pipelined(builder, builder.sdiv(n_rows, sixteen), convert, multiply)
            for j in range(k):
                tiles.store(j, builder.gep(out.data, [columns[j]]), out_stride)

        _in_ways(builder, builder.sdiv(d_stop, sixteen), emit)
        tiles.release()
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _bf16_pair(typingctx, value):
    """The float32 ``value`` as a word of two bfloat16 whose sum is within 2^-16 of it: its
    top 16 bits (low half of the word) and the rest rounded to nearest even (high half)."""
    sig = types.uint32(types.float32)

    def codegen(context, builder, signature, args):
        top = ir.Constant(_i32, 0xFFFF0000)
        bits = builder.bitcast(args[0], _i32)
        hi = builder.and_(bits, top)
        rest = builder.bitcast(builder.fsub(args[0], builder.bitcast(hi, ir.FloatType())), _i32)
        odd = builder.and_(builder.lshr(rest, ir.Constant(_i32, 16)), ir.Constant(_i32, 1))
        lo = builder.and_(builder.add(rest, builder.add(ir.Constant(_i32, 0x7FFF), odd)), top)
        return builder.or_(builder.lshr(hi, ir.Constant(_i32, 16)), lo)

    return sig, codegen


@njit(cache=True)
def pack_bf16_weights(W, scale, Wb):
    """``Wb[d, c] = _bf16_pair(scale W[c, d])`` for W (C, D) float32, Wb (D16, C) uint32;
    the rows past D stay zero."""
    C, D = W.shape
    for c in range(C):
        w = W[c]
        for d in range(D):
            Wb[d, c] = _bf16_pair(w[d] * scale)


@njit(cache=True)
def _pack_deltas(G, n, scale, Dt):
    """``Dt[s // 16, c, s % 16] = _bf16_pair(scale G[s, c])`` for the n samples of G (P, C)
    float32, zero for s from n up to a whole group; Dt (groups, C, 16) uint32."""
    C = G.shape[1]
    for s in range(n):
        group = Dt[s // GROUP]
        for c in range(C):
            group[c, s % GROUP] = _bf16_pair(G[s, c] * scale)
    for s in range(n, whole_groups(n)):
        group = Dt[s // GROUP]
        for c in range(C):
            group[c, s % GROUP] = 0


@njit(cache=True)
def tile_buffers(T):
    """T buffers of eight tiles of words (T, 2048) uint32, each starting on a 64-byte line
    (Numba's arrays start on 32 bytes; a tile whose rows straddle lines loads at half the
    speed)."""
    words = np.zeros(T * 2048 + 16, np.uint32)
    skip = (-words.ctypes.data) % 64 // 4
    return words[skip:skip + T * 2048].reshape((T, 2048))


@njit(cache=True)
def whole_groups(n):
    """n rounded up to whole groups of 16 samples."""
    return (n + GROUP - 1) // GROUP * GROUP


@njit(cache=True)
def tile_scores(X, rows, n, ahead, n_ahead, Wb, buf, S):
    """The block's scores ``S[s, c] = scale X[rows[s]] . W[c]`` for s < n rounded up to 16
    (rows holds valid rows there), from Wb = ``pack_bf16_weights(W, scale)``, asking for the first
    half of the next block's rows ``ahead[:n_ahead]`` as it goes."""
    _amx_scores(X, rows, whole_groups(n), ahead, n_ahead, Wb, buf, S)


@njit(cache=True)
def tile_gradient(G, n, scale, Dt, X, rows, ahead, n_ahead, part_W, overwrite, tail, buf):
    """``part_W (C, D) [+]= scale G[:n]^T X[rows[:n]]`` (``overwrite``: no ``part_W +``),
    asking for the second half of the next block's rows; the last, partial slab of 16
    features (D not a multiple of 16) goes through tail (C, 16)."""
    C, D = part_W.shape
    n16 = whole_groups(n)
    _pack_deltas(G, n, scale, Dt)
    d_whole = D // SLAB * SLAB
    _amx_gradient(Dt, X, rows, n16, 0, part_W, d_whole, overwrite, ahead, n_ahead, buf)
    if d_whole < D:
        _amx_gradient(Dt, X, rows, n16, d_whole, tail, SLAB, True, ahead, 0, buf)
        for c in range(C):
            for d in range(D - d_whole):
                if overwrite:
                    part_W[c, d_whole + d] = tail[c, d]
                else:
                    part_W[c, d_whole + d] += tail[c, d]


# The AMX provider of the microkernel interface (``microkernel.py``), imported only where
# ``TUNING.amx``: uint8 pixels with float32 weights of at most SLAB classes take the tiles,
# a chunk at a time; everything else goes through the vector tiles (``tiles.py``).

def _pixels_on_tiles(X, W):
    """Whether blocks of these Numba types may take the tiles: uint8 pixels and float32
    weights (for every other type the overloads below compile the vector tiles alone)."""
    return X.dtype == types.uint8 and W.dtype == types.float32


def takes_tiles(X, W):
    """Whether a chunk of X's rows may take the tiles, whatever its length: uint8 pixels,
    float32 weights of at most SLAB classes."""
    return X.dtype == np.uint8 and W.dtype == np.float32 and W.shape[0] <= SLAB


@overload(takes_tiles)
def _takes_tiles_typed(X, W):
    if _pixels_on_tiles(X, W):
        return lambda X, W: W.shape[0] <= SLAB
    return lambda X, W: False


@njit(cache=True)
def new_scratch(T, C, D, block, X, W):
    """Per thread, padded so no two threads share a line: the packed weights Wb (D16, C), the
    tile buffer (``tile_buffers``), the packed deltas Dt of a block (groups, C, 16), the tail
    slab (C, 16) of a D that is not a multiple of 16, and whether the current chunk takes the
    tiles (``pack_weights``). Empty arrays where these types never take them."""
    tiles = takes_tiles(X, W)
    P = whole_groups(block) if tiles else 0
    D16 = (D + SLAB - 1) // SLAB * SLAB if tiles else 0
    return (np.zeros((T, D16, C), np.uint32), tile_buffers(T if tiles else 0),
            np.zeros((T, P // GROUP, C, GROUP), np.uint32),
            np.zeros((T, C if tiles else 0, SLAB), np.float32), np.zeros((T, 64), np.bool_))


@njit(cache=True)
def thread_scratch(scratch, k):
    """Thread k's part of ``new_scratch``'s scratch."""
    Wb, buf, Dt, tail, taken = scratch
    return Wb[k], buf[k], Dt[k], tail[k], taken[k]


@njit(cache=True)
def padded_rows(n):
    """n rounded up to whole groups of 16 samples, the rows of a tile (also whole score tiles
    of the vector tiles, for the blocks that take those)."""
    return whole_groups(n)


def _pack_on_tiles(X, W, Wb):
    """``pack_bf16_weights(W, 1/255, Wb)`` where the types may take the tiles."""


@overload(_pack_on_tiles)
def _pack_on_tiles_typed(X, W, Wb):
    if _pixels_on_tiles(X, W):
        return lambda X, W, Wb: pack_bf16_weights(W, np.float32(1.0 / 255.0), Wb)
    return lambda X, W, Wb: None


@njit(cache=True)
def pack_weights(X, W, n, scratch):
    """Decide whether this thread's chunk of n samples takes the tiles, and if so pack W:
    pixels that may take them (``takes_tiles``) and at least ``TUNING.amx_min_chunk``
    samples, since W is packed once per chunk and a short chunk gains less from the tiles
    than the packing costs."""
    Wb, _, _, _, taken = scratch
    taken[0] = takes_tiles(X, W) and n >= AMX_MIN_CHUNK
    if taken[0]:
        _pack_on_tiles(X, W, Wb)


def score_block(X, rows, n, ahead, n_ahead, W, scratch, S):
    """``S[s, c] = scale X[rows[s]] . W[c]`` for s < n: on the tiles (``tile_scores``) if the
    chunk took them, else the vector tiles' ``_gather_scores``."""


@overload(score_block)
def _score_block_typed(X, rows, n, ahead, n_ahead, W, scratch, S):
    if _pixels_on_tiles(X, W):
        def on_tiles(X, rows, n, ahead, n_ahead, W, scratch, S):
            Wb, buf, _, _, taken = scratch
            if taken[0]:
                tile_scores(X, rows, n, ahead, n_ahead, Wb, buf, S)
            else:
                _gather_scores(X, rows, n, W, S)
        return on_tiles
    return lambda X, rows, n, ahead, n_ahead, W, scratch, S: _gather_scores(X, rows, n, W, S)


def accumulate_gradient(X, rows, n, ahead, n_ahead, G, part_W, overwrite, scratch):
    """``part_W [+]= scale G[:n]^T X[rows[:n]]``: on the tiles (``tile_gradient``) if the
    chunk took them, else the vector tiles' ``_gather_gradient``."""


@overload(accumulate_gradient)
def _accumulate_gradient_typed(X, rows, n, ahead, n_ahead, G, part_W, overwrite, scratch):
    if _pixels_on_tiles(X, part_W):
        def on_tiles(X, rows, n, ahead, n_ahead, G, part_W, overwrite, scratch):
            _, buf, Dt, tail, taken = scratch
            if taken[0]:
                tile_gradient(G, n, np.float32(1.0 / 255.0), Dt, X, rows, ahead, n_ahead,
                              part_W, overwrite, tail, buf)
            else:
                _gather_gradient(X, rows, n, G, part_W, overwrite, ahead, n_ahead)
        return on_tiles
    return (lambda X, rows, n, ahead, n_ahead, G, part_W, overwrite, scratch:
            _gather_gradient(X, rows, n, G, part_W, overwrite, ahead, n_ahead))
