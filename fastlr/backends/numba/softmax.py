"""The softmax of a block of samples, its loss, and the exp that lets it vectorize.

Shapes: P rows of scratch (at least the n samples of a block), C classes.

``_block_softmax`` takes the scores of n samples (plus the bias, in float64), runs the stable
softmax, writes the gradient of the loss with respect to the scores
``G[s] = s_i (p - onehot(y_i)) / B`` in W's dtype, adds it to the bias gradient, and sums the
loss ``s_i (logsumexp(z) - z[y_i])``; ``_block_correct`` then counts, from the same scores
and maxima, the samples whose highest score is their label. The exponentials go through
``_exp_nonpositive`` (Cody-Waite reduction, a degree-13 Taylor polynomial, 2^k set in the
exponent bits; within 2 ulp of libm's exp): a loop around it vectorizes over the whole block,
which a call to libm cannot, and that is what made the softmax a small part of the epoch. No
fast-math here: the softmax must see an inf or a NaN when the weights diverge, so the driver
can report it.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.extending import intrinsic


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
def _block_softmax(S, n, inv_batch, b, y, sample_weight, perm, start, Z, E, row_max, row_total,
                   G, grad_b, loss):
    """The scores of the samples ``perm[start:start + n]`` (a block of a thread's chunk) with
    the bias, ``Z = S + b`` in float64 into Z (P, C); the stable softmax with the vectorized
    ``_exp_nonpositive`` over all n samples at once; ``G[s] = s_i (p - onehot) * inv_batch``
    in W's dtype and ``grad_b += G[s]`` for s in order. Returns ``loss`` plus s_i l_i for the
    n samples, added in order."""
    C = b.shape[0]
    for s in range(n):
        for c in range(C):
            Z[s, c] = np.float64(S[s, c]) + b[c]
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
    for s in range(n):
        i = perm[start + s]
        loss += sample_weight[i] * (row_max[s] + np.log(row_total[s]) - Z[s, y[i]])
    return loss


@njit(cache=True)
def _block_correct(Z, row_max, y, sample_weight, perm, start, n, correct):
    """``correct`` plus s_i for the n samples of ``perm[start:]`` whose highest score in Z (the
    first one on a tie, as ``argmax``) is their label; row_max holds the rows' maxima, as
    ``_block_softmax`` left them."""
    for s in range(n):
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
