# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# cython: cdivision=True
"""Cython kernels: the contract of ``fastlr/backends/__init__.py``, compiled with OpenMP.

Shapes: N samples, D features, C classes, B batch, S steps in an epoch, T threads.

Measured numbers and the variants tried are to follow with the benchmark.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport exp, log
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTLR_OPENMP 1
    /* An orphaned barrier binds to the innermost enclosing parallel region: the one region
       sgd_epoch keeps open for a whole epoch. */
    static inline void fastlr_barrier(void) {
        #pragma omp barrier
    }
    static inline int fastlr_thread_num(void) { return omp_get_thread_num(); }
    static inline int fastlr_team_size(void) { return omp_get_num_threads(); }
    static inline int fastlr_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define FASTLR_OPENMP 0
    static inline void fastlr_barrier(void) {}
    static inline int fastlr_thread_num(void) { return 0; }
    static inline int fastlr_team_size(void) { return 1; }
    static inline int fastlr_max_threads(void) { return 1; }
    #endif
    """
    int FASTLR_OPENMP
    void fastlr_barrier() noexcept nogil
    int fastlr_thread_num() noexcept nogil
    int fastlr_team_size() noexcept nogil
    int fastlr_max_threads() noexcept nogil

#: True if the extension was compiled with OpenMP; without it every kernel runs on one thread.
OPENMP_ENABLED = bool(FASTLR_OPENMP)


def max_threads():
    """The most threads an OpenMP parallel region would start here (1 without OpenMP)."""
    return fastlr_max_threads()


cdef enum:
    # Independent partial sums per dot product: one per vector lane, so the D loop vectorizes
    # without reassociating a float reduction (no -ffast-math), and the result is the same on
    # any vector width.
    LANES = 16
    # Samples whose dot products share each load of a row of W.
    SAMPLE_BLOCK = 4


cdef inline void _scores4(const floating* W, const floating* b, Py_ssize_t C, Py_ssize_t D,
                          const floating* x0, const floating* x1, const floating* x2,
                          const floating* x3, floating* z0, floating* z1, floating* z2,
                          floating* z3) noexcept nogil:
    """z_i (C,) = W x_i + b for four samples x_i (D,); W (C, D) row-major, b (C,)."""
    cdef floating a0[LANES]
    cdef floating a1[LANES]
    cdef floating a2[LANES]
    cdef floating a3[LANES]
    cdef floating wk, s0, s1, s2, s3
    cdef const floating* w
    cdef Py_ssize_t c, d, d_block, k
    cdef Py_ssize_t d_main = D - D % LANES
    for c in range(C):
        w = W + c * D
        for k in range(LANES):
            a0[k] = 0
            a1[k] = 0
            a2[k] = 0
            a3[k] = 0
        for d_block in range(d_main // LANES):
            d = d_block * LANES
            for k in range(LANES):
                wk = w[d + k]
                a0[k] += wk * x0[d + k]
                a1[k] += wk * x1[d + k]
                a2[k] += wk * x2[d + k]
                a3[k] += wk * x3[d + k]
        for k in range(D - d_main):
            wk = w[d_main + k]
            a0[k] += wk * x0[d_main + k]
            a1[k] += wk * x1[d_main + k]
            a2[k] += wk * x2[d_main + k]
            a3[k] += wk * x3[d_main + k]
        s0 = 0
        s1 = 0
        s2 = 0
        s3 = 0
        for k in range(LANES):
            s0 += a0[k]
            s1 += a1[k]
            s2 += a2[k]
            s3 += a3[k]
        z0[c] = s0 + b[c]
        z1[c] = s1 + b[c]
        z2[c] = s2 + b[c]
        z3[c] = s3 + b[c]


cdef inline double _softmax_delta(floating* z, Py_ssize_t C, int64_t label,
                                  double scale) noexcept nogil:
    """Turn scores z (C,) into ``scale * (softmax(z) - onehot(label))`` in place; return the
    cross-entropy ``log sum_k exp(z_k) - z_label``, both with the maximum subtracted."""
    cdef Py_ssize_t c
    cdef double m = z[0]
    cdef double total = 0.0
    cdef double z_label = z[label]
    cdef double e
    for c in range(1, C):
        if z[c] > m:
            m = z[c]
    for c in range(C):
        e = exp(z[c] - m)
        z[c] = <floating>e
        total += e
    for c in range(C):
        z[c] = <floating>(scale * (z[c] / total))
    z[label] = <floating>(z[label] - scale)
    return m + log(total) - z_label


cdef inline void _accumulate4(floating* gW, floating* gb, Py_ssize_t C, Py_ssize_t D,
                              const floating* x0, const floating* x1, const floating* x2,
                              const floating* x3, const floating* g0, const floating* g1,
                              const floating* g2, const floating* g3) noexcept nogil:
    """gW (C, D) += sum_i g_i x_i^T and gb (C,) += sum_i g_i over four samples."""
    cdef floating* row
    cdef floating h0, h1, h2, h3
    cdef Py_ssize_t c, d
    for c in range(C):
        h0 = g0[c]
        h1 = g1[c]
        h2 = g2[c]
        h3 = g3[c]
        row = gW + c * D
        for d in range(D):
            row[d] += h0 * x0[d] + h1 * x1[d] + h2 * x2[d] + h3 * x3[d]
        gb[c] += h0 + h1 + h2 + h3


cdef inline const floating* _row(const floating* X, const int64_t* rows, Py_ssize_t i,
                                 Py_ssize_t D) noexcept nogil:
    """Row i of the batch: X[rows[i]] when the batch is a list of indices, else X[i]."""
    if rows != NULL:
        return X + rows[i] * D
    return X + i * D


cdef double _batch_chunk(const floating* X, const int64_t* y, const floating* sw,
                         const int64_t* rows, Py_ssize_t lo, Py_ssize_t hi,
                         const floating* W, const floating* b, Py_ssize_t C, Py_ssize_t D,
                         double inv_batch, floating* gW, floating* gb,
                         floating* scratch) noexcept nogil:
    """Gradient of samples lo..hi-1 of a batch of size 1/inv_batch into gW (C, D), gb (C,)
    (overwritten), in blocks of four; return their sum of ``s_i l_i``. ``scratch`` holds
    SAMPLE_BLOCK * C values. A short last block repeats its last sample with zero weight."""
    cdef double loss = 0.0
    cdef Py_ssize_t i, j, n, r
    cdef const floating* xs[SAMPLE_BLOCK]
    cdef int64_t idx
    memset(gW, 0, C * D * sizeof(floating))
    memset(gb, 0, C * sizeof(floating))
    i = lo
    while i < hi:
        n = min(<Py_ssize_t>SAMPLE_BLOCK, hi - i)
        for j in range(SAMPLE_BLOCK):
            xs[j] = _row(X, rows, i + min(j, n - 1), D)
        _scores4(W, b, C, D, xs[0], xs[1], xs[2], xs[3], scratch, scratch + C,
                 scratch + 2 * C, scratch + 3 * C)
        for j in range(SAMPLE_BLOCK):
            if j < n:
                r = i + j
                idx = rows[r] if rows != NULL else r
                loss += sw[idx] * _softmax_delta(scratch + j * C, C, y[idx],
                                                 sw[idx] * inv_batch)
            else:
                memset(scratch + j * C, 0, C * sizeof(floating))
        _accumulate4(gW, gb, C, D, xs[0], xs[1], xs[2], xs[3], scratch, scratch + C,
                     scratch + 2 * C, scratch + 3 * C)
        i += SAMPLE_BLOCK
    return loss


cdef inline void _sum_parts(const floating* parts, Py_ssize_t T, Py_ssize_t stride,
                            Py_ssize_t j0, Py_ssize_t j1, floating* out) noexcept nogil:
    """out[j] = parts[0, j] + parts[1, j] + ... + parts[T-1, j] for j in j0..j1-1, in that
    order. ``out`` may be ``parts`` itself (row 0)."""
    cdef Py_ssize_t t, j
    cdef const floating* part
    if out != parts:
        for j in range(j0, j1):
            out[j] = parts[j]
    for t in range(1, T):
        part = parts + t * stride
        for j in range(j0, j1):
            out[j] += part[j]


cdef inline void _sgd_update(floating* W, floating* vel, const floating* grad,
                             Py_ssize_t j0, Py_ssize_t j1, double lr, double momentum,
                             double alpha) noexcept nogil:
    """v = momentum v + (grad + alpha W); W -= lr v for j in j0..j1-1 (v untouched when
    momentum is 0). Computed in float64 and rounded once, as the reference does."""
    cdef Py_ssize_t j
    cdef double v
    if momentum != 0:
        for j in range(j0, j1):
            v = momentum * vel[j] + (grad[j] + alpha * W[j])
            vel[j] = <floating>v
            W[j] = <floating>(W[j] - lr * v)
    else:
        for j in range(j0, j1):
            W[j] = <floating>(W[j] - lr * (grad[j] + alpha * W[j]))


def predict_scores(const floating[:, ::1] X, const floating[:, ::1] W, const floating[::1] b,
                   floating[:, ::1] out, int n_threads):
    """out (N, C) = X (N, D) W (C, D)^T + b (C,), on ``n_threads`` threads."""
    cdef Py_ssize_t N = X.shape[0], D = X.shape[1], C = W.shape[0]
    cdef Py_ssize_t n_blocks = (N + SAMPLE_BLOCK - 1) // SAMPLE_BLOCK
    cdef Py_ssize_t blk, i0, i1, i2, i3
    if N == 0:
        return
    cdef const floating* Xp = &X[0, 0]
    cdef floating* outp = &out[0, 0]
    for blk in prange(n_blocks, nogil=True, num_threads=max(n_threads, 1), schedule="static"):
        # A short last block repeats its last row: the same values written twice.
        i0 = blk * SAMPLE_BLOCK
        i1 = min(i0 + 1, N - 1)
        i2 = min(i0 + 2, N - 1)
        i3 = min(i0 + 3, N - 1)
        _scores4(&W[0, 0], &b[0], C, D, Xp + i0 * D, Xp + i1 * D, Xp + i2 * D, Xp + i3 * D,
                 outp + i0 * C, outp + i1 * C, outp + i2 * C, outp + i3 * C)


def loss_and_grad(const floating[:, ::1] X, const int64_t[::1] y,
                  const floating[::1] sample_weight, const floating[:, ::1] W,
                  const floating[::1] b, floating[:, ::1] grad_W, floating[::1] grad_b,
                  floating[:, :, ::1] parts_W, floating[:, ::1] parts_b):
    """Mean weighted cross-entropy of the batch X (B, D), y (B,), sample_weight (B,) at
    W (C, D), b (C,); its gradient is written into grad_W (C, D), grad_b (C,).

    Chunk t of the batch (samples ``B t / T`` to ``B (t+1) / T``) goes into parts_W[t] (C, D),
    parts_b[t] (C,); the parts are then summed in the order t = 0, 1, ..., T-1.
    """
    cdef Py_ssize_t B = X.shape[0], D = X.shape[1], C = W.shape[0], T = parts_W.shape[0]
    cdef Py_ssize_t CD = C * D
    cdef Py_ssize_t chunk
    cdef int tid, team
    cdef double inv_batch = 1.0 / B
    cdef double loss = 0.0
    cdef double* chunk_loss = <double*>malloc(T * sizeof(double))
    cdef floating* scratch = <floating*>malloc(T * SAMPLE_BLOCK * C * sizeof(floating))
    if chunk_loss == NULL or scratch == NULL:
        free(chunk_loss)
        free(scratch)
        raise MemoryError()
    with nogil, parallel(num_threads=T):
        tid = fastlr_thread_num()
        team = fastlr_team_size()
        # A team smaller than T (e.g. OMP_THREAD_LIMIT) takes chunks round-robin: the chunk
        # boundaries, and so the result, depend on T alone.
        chunk = tid
        while chunk < T:
            chunk_loss[chunk] = _batch_chunk(&X[0, 0], &y[0], &sample_weight[0], NULL,
                                             B * chunk // T, B * (chunk + 1) // T,
                                             &W[0, 0], &b[0], C, D, inv_batch,
                                             &parts_W[chunk, 0, 0], &parts_b[chunk, 0],
                                             scratch + tid * SAMPLE_BLOCK * C)
            chunk = chunk + team
        fastlr_barrier()
        chunk = tid
        while chunk < T:
            _sum_parts(&parts_W[0, 0, 0], T, CD, CD * chunk // T, CD * (chunk + 1) // T,
                       &grad_W[0, 0])
            if chunk == 0:
                _sum_parts(&parts_b[0, 0], T, C, 0, C, &grad_b[0])
            chunk = chunk + team
    for chunk in range(T):
        loss += chunk_loss[chunk]
    free(chunk_loss)
    free(scratch)
    return loss * inv_batch


def sgd_epoch(const floating[:, ::1] X, const int64_t[::1] y,
              const floating[::1] sample_weight, const int64_t[::1] perm,
              floating[:, ::1] W, floating[::1] b, floating[:, ::1] vel_W, floating[::1] vel_b,
              const double[::1] lr_steps, Py_ssize_t batch_size, double momentum, double alpha,
              floating[:, :, ::1] parts_W, floating[:, ::1] parts_b):
    """One epoch of minibatch SGD over X (N, D), y (N,), sample_weight (N,) in ``perm`` (M,)
    order, updating W (C, D), b (C,), vel_W, vel_b in place; return the epoch's sum of
    ``s_i l_i``, each loss taken at the weights of its step.

    Every step is two phases of the one parallel region, separated by barriers: the T chunks
    of the minibatch into parts_W (T, C, D), parts_b (T, C); then the parts summed in order
    t = 0..T-1 into parts_W[0] and the update applied, each thread on its slice of the C*D
    weights.
    """
    cdef Py_ssize_t M = perm.shape[0], D = X.shape[1], C = W.shape[0], T = parts_W.shape[0]
    cdef Py_ssize_t CD = C * D
    cdef Py_ssize_t n_steps = (M + batch_size - 1) // batch_size
    cdef Py_ssize_t step, start, n_batch, chunk, j0, j1
    cdef int tid, team
    cdef double loss = 0.0
    cdef double lr
    if M == 0:
        return 0.0
    cdef double* chunk_loss = <double*>malloc(T * sizeof(double))
    cdef floating* scratch = <floating*>malloc(T * SAMPLE_BLOCK * C * sizeof(floating))
    if chunk_loss == NULL or scratch == NULL:
        free(chunk_loss)
        free(scratch)
        raise MemoryError()
    memset(chunk_loss, 0, T * sizeof(double))
    cdef const floating* Xp = &X[0, 0]
    cdef floating* Wp = &W[0, 0]
    cdef floating* bp = &b[0]
    cdef floating* pW = &parts_W[0, 0, 0]
    cdef floating* pb = &parts_b[0, 0]
    with nogil, parallel(num_threads=T):
        tid = fastlr_thread_num()
        team = fastlr_team_size()
        for step in range(n_steps):
            start = step * batch_size
            n_batch = min(batch_size, M - start)
            chunk = tid
            while chunk < T:
                chunk_loss[chunk] += _batch_chunk(
                    Xp, &y[0], &sample_weight[0], &perm[start],
                    n_batch * chunk // T, n_batch * (chunk + 1) // T, Wp, bp, C, D,
                    1.0 / n_batch, pW + chunk * CD, pb + chunk * C,
                    scratch + tid * SAMPLE_BLOCK * C)
                chunk = chunk + team
            fastlr_barrier()
            lr = lr_steps[step]
            chunk = tid
            while chunk < T:
                j0 = CD * chunk // T
                j1 = CD * (chunk + 1) // T
                _sum_parts(pW, T, CD, j0, j1, pW)
                _sgd_update(Wp, &vel_W[0, 0], pW, j0, j1, lr, momentum, alpha)
                if chunk == 0:
                    _sum_parts(pb, T, C, 0, C, pb)
                    _sgd_update(bp, &vel_b[0], pb, 0, C, lr, momentum, 0.0)
                chunk = chunk + team
            fastlr_barrier()
    for chunk in range(T):
        loss += chunk_loss[chunk]
    free(chunk_loss)
    free(scratch)
    return loss
