# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# cython: cdivision=True
"""Cython kernels: the contract of ``fastlr/backends/__init__.py``, compiled with OpenMP.

Shapes: N samples, D features, C classes, B batch, S steps in an epoch, T threads.

The kernels (float32 and float64 through fused types; typed memoryviews; no GIL)
-----------
``sgd_epoch``       one epoch of minibatch SGD in one parallel region. Each step splits its
                    minibatch into T chunks (boundaries ``B t / T``, so they depend on T
                    alone); thread t writes the gradient of its chunk into parts_W[t] (C, D),
                    parts_b[t] (C,); after a barrier each thread sums the T parts in the order
                    t = 0..T-1 over its own slice of the C*D weights, straight into the
                    (momentum, L2) update there; a barrier; the next step.
``loss_and_grad``   the same first phase for one batch, then the fixed-order sum into grad_W.
``predict_scores``  ``X W^T + b``, blocks of SAMPLE_BLOCK rows spread over threads with prange.

A thread's chunk goes in blocks of SAMPLE_BLOCK = 64 samples: the block's scores (register
tiles of 10 classes x 2 samples; W walked in 1 KB spans that stay in L1), a stable softmax and
log-sum-exp in float64 (the block's exponentials vectorized, within 2 ulp of libm's), then the
block's gradient with a tile of 10 rows x one vector of gW held in registers across all 64
samples (stored once per block, not once per sample). While
the gradient, which is compute-bound, runs, the rows of the next 64 samples (the next block,
or the thread's chunk of the next step) are prefetched into L2: the rows are scattered by the
permutation and the scores would otherwise wait on DRAM. The hot loops are C (GCC vector
extensions: vectors of independent partial sums, so no -ffast-math; softmax, loss and update
are plain IEEE arithmetic) compiled three times: x86-64-v4 (AVX-512, 64-byte vectors, 32
registers), x86-64-v3 (AVX2 + FMA, 5 x 2 score tiles) and the x86-64 baseline (SSE2); the best
the CPU supports is picked at import (``isa_level``, ``set_isa_level`` to compare).

Reproducibility: every sum has an order fixed in the source, so the same inputs, the same T
and the same ISA level give bitwise the same model. The gradient adds its terms sample by
sample in batch order whatever the vector width, but the lane sums of the scores and the use
of FMA differ between ISA levels, so a v4 and a v3 CPU round differently (well within the
tolerances of ``fastlr/backends/check.py``); ``set_isa_level(3)`` reproduces a v3 CPU.

Measured: MNIST epoch (60000 x 784, float32), wall ms, median of 5 with the NumPy loop and
each variant interleaved in one run, 2-core AMD EPYC Zen 4 VM (NumPy sgemm ~100 GFLOP/s on one
thread). The machine is shared and its memory speed drifts by up to 2x between runs, so only
numbers from one run are compared.

- Starting point (per 4 samples: scores of 2 classes x 4 samples, then the 4 rank-1 updates
  read-modify-writing every row of gW): batch 64 1 thr 74, 2 thr 102; batch 1024 1 thr 58.
- Register-tiled gradient, blocks of 64 samples: batch 64 1 thr 59, batch 1024 1 thr 53.
  Scores then wait on DRAM (perf: the x loads).
- Prefetching whole rows 8 samples ahead while the scores run, batch 1024 1 thr: prefetcht1
  (into L2) 38, prefetcht2 42, none 49; prefetcht0 and prefetchnta no better than none; only
  the first 2-8 lines of each row (to start the hardware prefetcher) 45; distance 4-32
  samples: all the same. Prefetching the next 64 rows during the gradient pass instead:
  batch 1024 1 thr 48 -> 37, batch 64 2 thr 32 -> 25; both together no better than the
  gradient pass alone, so only that is kept.
- x86-64-v4 kernels against x86-64-v3 and the baseline (same build, ``set_isa_level``; the
  final kernels, momentum 0), ms: batch 64 1 thr 29.3 / 33.7 / 75.9, 2 thr 22.7 / 26.0 /
  53.3; batch 256 2 thr 18.8 / 24.3 / 54.9; batch 1024 1 thr 26.2 / 31.1 / 72.4, 2 thr 17.5 /
  23.2 / 55.7. v4 kept as the first choice (earlier, with W loaded twice per two samples,
  it won only 3-9%).
- Rows of W loaded once per two samples (an empty asm keeps the vector in a register; GCC
  had folded the load into both FMAs): scores alone, 64 x 784 in cache, 46 -> 73 GFLOP/s (v3).
  W walked in spans that fit L1: ~5% per epoch. Labels and weights of the next samples
  prefetched (their loads stalled the softmax): ~10%.
- Synchronization, one region per epoch against a region per step
  (``sgd_epoch_region_per_step``), final kernels: batch 64 1 thr 29.3 vs 29.7, 2 thr 22.7 vs
  21.9; batch 256 2 thr 18.8 vs 19.1; batch 1024 1 thr 26.2 vs 26.8, 2 thr 17.5 vs 17.5:
  equal within the noise of this machine (the 938 fork/joins cost about what the 938 extra
  barriers do); the single region is kept.
- Tried and dropped: packing the block's rows into a contiguous buffer during the scores for
  the gradient pass (no gain: the strided stores cost what the reads saved); splitting the
  columns of W between threads instead of the samples (W, vel_W and the gradient never leave
  their core; one barrier per block; every thread does the softmax of every sample): batch 64
  2 thr 31.6 vs 27.1, batch 1024 2 thr 25.5 vs 19.6, slower.
- The softmax's exp vectorized over the block (float64, 2 ulp) instead of libm's exp per
  value (perf: ~8% of the time): batch 64 1 thr 32.8 -> 30.4, batch 1024 1 thr 28.8 -> 26.5.
- The parts summed into the update in one pass (no sum written into parts_W[0], half of
  which the other thread owns) and the first block overwriting the thread's part (no memset
  pass), momentum 0: batch 64 1 thr 30.1 -> 28.7, 2 thr 20.1 -> 18.2; batch 1024 2 thr 18.5
  -> 14.3.
- Where the time goes now (perf, 1 thread): scores ~40% (still partly waiting on DRAM), the
  gradient ~35% (near the FMA limit), the update ~8% at batch 64 with momentum.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport log
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


cdef extern from *:
    """
    /* The loops that do nearly all the arithmetic, in C. They are compiled three times and
       the fastest the CPU runs is picked when the module is imported, so one build runs on
       every x86-64: for x86-64-v4 (AVX-512, 32 registers of 64 bytes: bigger register tiles),
       and with target_clones for x86-64-v3 (AVX2 + FMA, 16 registers of 32 bytes) and for
       the x86-64 baseline. Vectors are GCC vector extensions holding independent partial
       sums, so the loops are vectorized by construction without reassociating a float sum
       (no -ffast-math). */
    #include <string.h>
    #if defined(__GNUC__) && __GNUC__ >= 12 && !defined(__clang__) && defined(__x86_64__) \
        && defined(__linux__)
    #define FASTLR_MULTI_ISA 1
    #define FASTLR_V3 __attribute__((target("arch=x86-64-v3")))
    #define FASTLR_V4 __attribute__((target("arch=x86-64-v4")))
    #else
    #define FASTLR_MULTI_ISA 0
    #endif

    /* Keeps a loaded vector in a register: without it GCC folds the load of a row of W into
       both FMAs that use it, loading it twice (a load-bound loop). */
    #define FASTLR_IN_REGISTER(v) __asm__("" : "+x"(v))
    #define FASTLR_ANYWHERE(v) ((void)0)
    #define FASTLR_LOAD(V, p) ({ V v_; memcpy(&v_, (p), sizeof v_); v_; })
    #define FASTLR_STORE(p, v) do { __typeof__(v) v_ = (v); memcpy((p), &v_, sizeof v_); } while (0)

    /* The rows of X are scattered (a random permutation) and mostly in DRAM. While the
       gradient of a block is accumulated (compute-bound), the rows of up to AHEAD samples that
       come next are prefetched into L2 (prefetcht1, one per cache line), so that the
       scores of the next block, which would wait on DRAM, find them there. */
    enum { FASTLR_AHEAD = 64 };
    /* The label and weight of a sample that comes next, which would otherwise be a cache
       miss on the path from a sample's scores to its delta. */
    static inline void fastlr_prefetch(const void *p) {
    #if defined(__GNUC__)
        __builtin_prefetch(p, 0, 2);
    #endif
    }
    /* Samples per block (SAMPLE_BLOCK in the Cython code). */
    enum { FASTLR_BLOCK = 64 };
    /* The scores walk D in spans of this many bytes of each row of W, every pair of samples of
       the block through one span before the next, so the span of W (10 rows: 10 KB) stays in
       L1 instead of streaming all of W (31 KB, the size of L1) from L2 for every pair. The
       accumulators wait in memory between spans: the sums are the same, in the same order. */
    enum { FASTLR_SCORE_SPAN = 1024 };

    /* The kernels for one float type T and one instruction set ISA (function attribute ATTR,
       vectors of VBYTES bytes). Register tiles: the scores keep SK classes x 2 samples of
       accumulators, the gradient GK classes x one vector of D. */
    #define FASTLR_KERNELS(T, SUFFIX, ISA, ATTR, VBYTES, SK, GK, KEEP)                      \
    typedef T fastlr_##ISA##_##SUFFIX __attribute__((vector_size(VBYTES)));                 \
                                                                                            \
    /* The lanes of v summed pairwise, halving the vector each time (a fixed order that    \
       vectorizes; a serial sum of 16 lanes was a chain of 16 dependent adds). */           \
    ATTR static inline T fastlr_lane_sum_##ISA##_##SUFFIX(fastlr_##ISA##_##SUFFIX v) {      \
        enum { LANES = VBYTES / sizeof(T) };                                                \
        T l[LANES];                                                                         \
        memcpy(l, &v, sizeof v);                                                            \
        _Pragma("GCC unroll 8")                                                             \
        for (int w = LANES / 2; w > 0; w /= 2) {                                            \
            _Pragma("GCC unroll 16")                                                        \
            for (int i = 0; i < w; i++)                                                     \
                l[i] += l[i + w];                                                           \
        }                                                                                   \
        return l[0];                                                                        \
    }                                                                                       \
                                                                                            \
    /* z (n, C) = x_j W^T + b for the n samples x_j = xs[j] (D,), W (C, D) row-major. Two  \
       samples and SK classes per pass over D (per vector of D, SK + 2 loads feed 2 SK      \
       FMAs); the lanes of each accumulator are summed in a fixed order. A short tile       \
       repeats its last sample or class, writing the same value twice. */                   \
    ATTR static void fastlr_scores_##ISA##_##SUFFIX(                                        \
            const T *W, const T *b, Py_ssize_t C, Py_ssize_t D, const T *const *xs,        \
            Py_ssize_t n, T *z) {                                                           \
        typedef fastlr_##ISA##_##SUFFIX V;                                                  \
        enum { LANES = VBYTES / sizeof(T), K = SK,                                          \
               SPAN = FASTLR_SCORE_SPAN / sizeof(T) };                                      \
        V acc[(FASTLR_BLOCK + 1) / 2][2 * K];                                               \
        Py_ssize_t d_main = D - D % LANES;                                                  \
        for (Py_ssize_t c0 = 0; c0 < C; c0 += K) {                                          \
            Py_ssize_t cs[K];                                                               \
            const T *w[K];                                                                  \
            for (int k = 0; k < K; k++) {                                                   \
                cs[k] = c0 + k < C ? c0 + k : C - 1;                                        \
                w[k] = W + cs[k] * D;                                                       \
            }                                                                               \
            for (Py_ssize_t q0 = 0; q0 < d_main; q0 += SPAN) {                              \
                Py_ssize_t q1 = q0 + SPAN < d_main ? q0 + SPAN : d_main;                    \
                for (Py_ssize_t j = 0; j < n; j += 2) {                                     \
                    const T *x0 = xs[j], *x1 = xs[j + 1 < n ? j + 1 : j];                   \
                    V *a0 = acc[j / 2], *a1 = acc[j / 2] + K;                               \
                    V acc0[K], acc1[K];                                                     \
                    _Pragma("GCC unroll 16")                                                \
                    for (int k = 0; k < K; k++) {                                           \
                        acc0[k] = q0 ? a0[k] : (V){0};                                      \
                        acc1[k] = q0 ? a1[k] : (V){0};                                      \
                    }                                                                       \
                    for (Py_ssize_t d = q0; d < q1; d += LANES) {                           \
                        V u0 = FASTLR_LOAD(V, x0 + d);                                      \
                        V u1 = FASTLR_LOAD(V, x1 + d);                                      \
                        _Pragma("GCC unroll 16")                                            \
                        for (int k = 0; k < K; k++) {                                       \
                            V u = FASTLR_LOAD(V, w[k] + d);                                 \
                            KEEP(u);                                                        \
                            acc0[k] += u * u0;                                              \
                            acc1[k] += u * u1;                                              \
                        }                                                                   \
                    }                                                                       \
                    _Pragma("GCC unroll 16")                                                \
                    for (int k = 0; k < K; k++) {                                           \
                        a0[k] = acc0[k];                                                    \
                        a1[k] = acc1[k];                                                    \
                    }                                                                       \
                }                                                                           \
            }                                                                               \
            for (Py_ssize_t j = 0; j < n; j += 2) {                                         \
                Py_ssize_t j1 = j + 1 < n ? j + 1 : j;                                      \
                const T *x0 = xs[j], *x1 = xs[j1];                                          \
                V *a0 = acc[j / 2], *a1 = acc[j / 2] + K;                                   \
                if (d_main == 0)                                                            \
                    for (int k = 0; k < K; k++)                                             \
                        a0[k] = a1[k] = (V){0};                                             \
                for (Py_ssize_t t = 0; t < D - d_main; t++) {                               \
                    for (int k = 0; k < K; k++) {                                           \
                        a0[k][t] += w[k][d_main + t] * x0[d_main + t];                      \
                        a1[k][t] += w[k][d_main + t] * x1[d_main + t];                      \
                    }                                                                       \
                }                                                                           \
                for (int k = 0; k < K; k++) {                                               \
                    z[j * C + cs[k]] = fastlr_lane_sum_##ISA##_##SUFFIX(a0[k]) + b[cs[k]];  \
                    z[j1 * C + cs[k]] = fastlr_lane_sum_##ISA##_##SUFFIX(a1[k]) + b[cs[k]]; \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
                                                                                            \
    /* gW (C, D) += sum_j g_j x_j^T and gb (C,) += sum_j g_j over the n samples            \
       x_j = xs[j] (D,), g (n, C). A tile of GK rows x one vector of gW stays in registers  \
       for all n samples (per sample, one x load and GK broadcasts of g feed GK FMAs);     \
       every element adds its n terms one sample at a time, in order, whatever the vector  \
       width. The rows xs[n .. n + n_ahead - 1] come next and are prefetched. With         \
       overwrite, gW and gb start from 0 instead of their contents. */                      \
    ATTR static void fastlr_accumulate_##ISA##_##SUFFIX(                                    \
            T *gW, T *gb, Py_ssize_t C, Py_ssize_t D, const T *const *xs, Py_ssize_t n,    \
            Py_ssize_t n_ahead, int overwrite, const T *g) {                                \
        typedef fastlr_##ISA##_##SUFFIX V;                                                  \
        enum { LANES = VBYTES / sizeof(T), LINE = 64 / sizeof(T), K = GK };                 \
        Py_ssize_t d_main = D - D % LANES;                                                  \
        Py_ssize_t c0 = 0;                                                                  \
        for (; c0 + K <= C; c0 += K) {                                                      \
            T *rows = gW + c0 * D;                                                          \
            const T *gc = g + c0;                                                           \
            for (Py_ssize_t d = 0; d < d_main; d += LANES) {                                \
                V acc[K];                                                                   \
                if (c0 == 0 && d % LINE == 0)                                               \
                    for (Py_ssize_t r = 0; r < n_ahead; r++)                                \
                        __builtin_prefetch(xs[n + r] + d, 0, 2);                            \
                _Pragma("GCC unroll 16")                                                    \
                for (int k = 0; k < K; k++)                                                 \
                    acc[k] = overwrite ? (V){0} : FASTLR_LOAD(V, rows + k * D + d);         \
                for (Py_ssize_t j = 0; j < n; j++) {                                        \
                    V xv = FASTLR_LOAD(V, xs[j] + d);                                       \
                    const T *gj = gc + j * C;                                               \
                    _Pragma("GCC unroll 16")                                                \
                    for (int k = 0; k < K; k++)                                             \
                        acc[k] += gj[k] * xv;                                               \
                }                                                                           \
                _Pragma("GCC unroll 16")                                                    \
                for (int k = 0; k < K; k++)                                                 \
                    FASTLR_STORE(rows + k * D + d, acc[k]);                                 \
            }                                                                               \
            for (Py_ssize_t d = d_main; d < D; d++)                                         \
                for (int k = 0; k < K; k++) {                                               \
                    T s = overwrite ? 0 : rows[k * D + d];                                  \
                    for (Py_ssize_t j = 0; j < n; j++)                                      \
                        s += gc[j * C + k] * xs[j][d];                                      \
                    rows[k * D + d] = s;                                                    \
                }                                                                           \
        }                                                                                   \
        for (; c0 < C; c0++) {                                                              \
            T *row = gW + c0 * D;                                                           \
            for (Py_ssize_t d = 0; d < D; d++) {                                            \
                T s = overwrite ? 0 : row[d];                                               \
                for (Py_ssize_t j = 0; j < n; j++)                                          \
                    s += g[j * C + c0] * xs[j][d];                                          \
                row[d] = s;                                                                 \
            }                                                                               \
        }                                                                                   \
        for (Py_ssize_t c = 0; c < C; c++) {                                                \
            T s = overwrite ? 0 : gb[c];                                                    \
            for (Py_ssize_t j = 0; j < n; j++)                                              \
                s += g[j * C + c];                                                          \
            gb[c] = s;                                                                      \
        }                                                                                   \
    }                                                                                       \
                                                                                            \
    /* out[j] = parts[0, j] + parts[1, j] + ... + parts[T-1, j] for j in j0..j1-1, in that \
       order (T = n_parts, rows stride apart). out may be parts itself (row 0). */          \
    ATTR static void fastlr_sum_parts_##ISA##_##SUFFIX(                                     \
            const T *parts, Py_ssize_t n_parts, Py_ssize_t stride, Py_ssize_t j0,           \
            Py_ssize_t j1, T *out) {                                                        \
        if (out != parts)                                                                   \
            for (Py_ssize_t j = j0; j < j1; j++)                                            \
                out[j] = parts[j];                                                          \
        for (Py_ssize_t t = 1; t < n_parts; t++)                                            \
            for (Py_ssize_t j = j0; j < j1; j++)                                            \
                out[j] += parts[t * stride + j];                                            \
    }                                                                                       \
                                                                                            \
    /* v = momentum v + (grad + alpha W); W -= lr v for j in j0..j1-1 (v untouched when    \
       momentum is 0), in float64 and rounded once, as the reference does. */               \
    ATTR static void fastlr_sgd_update_##ISA##_##SUFFIX(                                    \
            T *W, T *vel, const T *grad, Py_ssize_t j0, Py_ssize_t j1, double lr,           \
            double momentum, double alpha) {                                                \
        if (momentum != 0) {                                                                \
            for (Py_ssize_t j = j0; j < j1; j++) {                                          \
                double v = momentum * vel[j] + ((double)grad[j] + alpha * W[j]);            \
                vel[j] = (T)v;                                                              \
                W[j] = (T)(W[j] - lr * v);                                                  \
            }                                                                               \
        } else {                                                                            \
            for (Py_ssize_t j = j0; j < j1; j++)                                            \
                W[j] = (T)(W[j] - lr * ((double)grad[j] + alpha * W[j]));                   \
        }                                                                                   \
    }                                                                                       \
                                                                                            \
    /* The update of W[j0:j1] with grad = parts[0] + ... + parts[T-1] (summed as            \
       sum_parts does, T = n_parts, rows stride apart), without writing the sum anywhere:  \
       one pass, and no stores into another thread's part. */                               \
    ATTR static void fastlr_sum_update_##ISA##_##SUFFIX(                                    \
            T *W, T *vel, const T *parts, Py_ssize_t n_parts, Py_ssize_t stride,            \
            Py_ssize_t j0, Py_ssize_t j1, double lr, double momentum, double alpha) {       \
        enum { PIECE = 256 };                                                               \
        T grad[PIECE];                                                                      \
        for (Py_ssize_t p0 = j0; p0 < j1; p0 += PIECE) {                                    \
            Py_ssize_t m = j1 - p0 < PIECE ? j1 - p0 : PIECE;                               \
            for (Py_ssize_t j = 0; j < m; j++)                                              \
                grad[j] = parts[p0 + j];                                                    \
            for (Py_ssize_t t = 1; t < n_parts; t++)                                        \
                for (Py_ssize_t j = 0; j < m; j++)                                          \
                    grad[j] += parts[t * stride + p0 + j];                                  \
            fastlr_sgd_update_##ISA##_##SUFFIX(W + p0, vel + p0, grad, 0, m, lr, momentum,  \
                                               alpha);                                      \
        }                                                                                   \
    }

    /* v[i] = exp(v[i]) for the n arguments v[i] <= 0 of a block's softmax, in float64 and
       vectorized (libm's exp is a call per value): exp(x) = 2^k exp(r) with k = round(x /
       ln 2) and r = x - k ln 2 (ln 2 in two parts, so r is exact to about 2^-60), |r| <=
       0.35, and exp(r) by its Taylor polynomial to degree 13 (truncation below 1e-17), so
       within a few units in the last place. Arguments below -708 give exp(-708) ~ 3e-308
       instead of a smaller number or 0: they are added to a sum that is at least 1. A NaN
       stays NaN. */
    #define FASTLR_EXP(ISA, ATTR)                                                           \
    ATTR static void fastlr_exp_##ISA(double *v, Py_ssize_t n) {                            \
        for (Py_ssize_t i = 0; i < n; i++) {                                                \
            double x = v[i] < -708.0 ? -708.0 : v[i];                                       \
            double k = __builtin_rint(x * 1.4426950408889634);                              \
            double r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10; \
            double p = 1.0 / 6227020800.0;                                                  \
            p = p * r + 1.0 / 479001600.0;                                                  \
            p = p * r + 1.0 / 39916800.0;                                                   \
            p = p * r + 1.0 / 3628800.0;                                                    \
            p = p * r + 1.0 / 362880.0;                                                     \
            p = p * r + 1.0 / 40320.0;                                                      \
            p = p * r + 1.0 / 5040.0;                                                       \
            p = p * r + 1.0 / 720.0;                                                        \
            p = p * r + 1.0 / 120.0;                                                        \
            p = p * r + 1.0 / 24.0;                                                         \
            p = p * r + 1.0 / 6.0;                                                          \
            p = p * r + 0.5;                                                                \
            p = p * r + 1.0;                                                                \
            p = p * r + 1.0;                                                                \
            int64_t bits = ((int64_t)k + 1023) << 52;                                       \
            double scale;                                                                   \
            memcpy(&scale, &bits, sizeof scale);                                            \
            v[i] = p * scale;                                                               \
        }                                                                                   \
    }
    FASTLR_EXP(base, )
    #if FASTLR_MULTI_ISA
    FASTLR_EXP(v3, FASTLR_V3)
    FASTLR_EXP(v4, FASTLR_V4)
    #endif

    /* The x86-64 baseline (SSE2, 16 registers of 16 bytes), wherever this is compiled. */
    FASTLR_KERNELS(float, float, base, , 16, 5, 10, FASTLR_ANYWHERE)
    FASTLR_KERNELS(double, double, base, , 16, 5, 10, FASTLR_ANYWHERE)
    #if FASTLR_MULTI_ISA
    /* x86-64-v3: 5 x 2 score tiles (10 of 16 ymm registers), 10-class gradient tiles. */
    FASTLR_KERNELS(float, float, v3, FASTLR_V3, 32, 5, 10, FASTLR_IN_REGISTER)
    FASTLR_KERNELS(double, double, v3, FASTLR_V3, 32, 5, 10, FASTLR_IN_REGISTER)
    /* x86-64-v4: 10 x 2 score tiles (20 of 32 zmm registers: W is read once per two samples
       instead of twice), 10-class gradient tiles of 64-byte vectors. */
    FASTLR_KERNELS(float, float, v4, FASTLR_V4, 64, 10, 10, FASTLR_IN_REGISTER)
    FASTLR_KERNELS(double, double, v4, FASTLR_V4, 64, 10, 10, FASTLR_IN_REGISTER)
    #endif

    /* Which kernels run: 4 (x86-64-v4), 3 (x86-64-v3) or 1 (baseline), the best this CPU
       (and its operating system) supports, or a lower level set for a comparison. */
    static int fastlr_isa_level = 1;
    static int fastlr_best_isa_level(void) {
    #if FASTLR_MULTI_ISA
        __builtin_cpu_init();
        if (__builtin_cpu_supports("x86-64-v4"))
            return 4;
        if (__builtin_cpu_supports("x86-64-v3"))
            return 3;
    #endif
        return 1;
    }
    static void fastlr_pick_isa(void) { fastlr_isa_level = fastlr_best_isa_level(); }

    #if FASTLR_MULTI_ISA
    #define FASTLR_DISPATCH(NAME, SUFFIX, ...)                                               \
        if (fastlr_isa_level == 4) fastlr_##NAME##_v4_##SUFFIX(__VA_ARGS__);                \
        else if (fastlr_isa_level == 3) fastlr_##NAME##_v3_##SUFFIX(__VA_ARGS__);           \
        else fastlr_##NAME##_base_##SUFFIX(__VA_ARGS__);
    #else
    #define FASTLR_DISPATCH(NAME, SUFFIX, ...) fastlr_##NAME##_base_##SUFFIX(__VA_ARGS__);
    #endif
    #define FASTLR_ENTRY_POINTS(T, SUFFIX)                                                  \
    static void fastlr_scores_##SUFFIX(const T *W, const T *b, Py_ssize_t C, Py_ssize_t D, \
            const T *const *xs, Py_ssize_t n, T *z) {                                       \
        FASTLR_DISPATCH(scores, SUFFIX, W, b, C, D, xs, n, z)                               \
    }                                                                                       \
    static void fastlr_accumulate_##SUFFIX(T *gW, T *gb, Py_ssize_t C, Py_ssize_t D,        \
            const T *const *xs, Py_ssize_t n, Py_ssize_t n_ahead, int overwrite,            \
            const T *g) {                                                                   \
        FASTLR_DISPATCH(accumulate, SUFFIX, gW, gb, C, D, xs, n, n_ahead, overwrite, g)     \
    }                                                                                       \
    static void fastlr_sum_parts_##SUFFIX(const T *parts, Py_ssize_t n_parts,               \
            Py_ssize_t stride, Py_ssize_t j0, Py_ssize_t j1, T *out) {                      \
        FASTLR_DISPATCH(sum_parts, SUFFIX, parts, n_parts, stride, j0, j1, out)             \
    }                                                                                       \
    static void fastlr_sgd_update_##SUFFIX(T *W, T *vel, const T *grad, Py_ssize_t j0,      \
            Py_ssize_t j1, double lr, double momentum, double alpha) {                      \
        FASTLR_DISPATCH(sgd_update, SUFFIX, W, vel, grad, j0, j1, lr, momentum, alpha)      \
    }                                                                                       \
    static void fastlr_sum_update_##SUFFIX(T *W, T *vel, const T *parts,                    \
            Py_ssize_t n_parts, Py_ssize_t stride, Py_ssize_t j0, Py_ssize_t j1, double lr,  \
            double momentum, double alpha) {                                                \
        FASTLR_DISPATCH(sum_update, SUFFIX, W, vel, parts, n_parts, stride, j0, j1, lr,     \
                        momentum, alpha)                                                    \
    }
    FASTLR_ENTRY_POINTS(float, float)
    FASTLR_ENTRY_POINTS(double, double)
    static void fastlr_exp(double *v, Py_ssize_t n) {
    #if FASTLR_MULTI_ISA
        if (fastlr_isa_level == 4) fastlr_exp_v4(v, n);
        else if (fastlr_isa_level == 3) fastlr_exp_v3(v, n);
        else fastlr_exp_base(v, n);
    #else
        fastlr_exp_base(v, n);
    #endif
    }
    """
    void fastlr_scores_float(const float* W, const float* b, Py_ssize_t C, Py_ssize_t D,
                             const float** xs, Py_ssize_t n, float* z) noexcept nogil
    void fastlr_scores_double(const double* W, const double* b, Py_ssize_t C, Py_ssize_t D,
                              const double** xs, Py_ssize_t n, double* z) noexcept nogil
    void fastlr_accumulate_float(float* gW, float* gb, Py_ssize_t C, Py_ssize_t D,
                                 const float** xs, Py_ssize_t n, Py_ssize_t n_ahead,
                                 int overwrite, const float* g) noexcept nogil
    void fastlr_accumulate_double(double* gW, double* gb, Py_ssize_t C, Py_ssize_t D,
                                  const double** xs, Py_ssize_t n, Py_ssize_t n_ahead,
                                  int overwrite, const double* g) noexcept nogil
    void fastlr_sum_parts_float(const float* parts, Py_ssize_t n_parts, Py_ssize_t stride,
                                Py_ssize_t j0, Py_ssize_t j1, float* out) noexcept nogil
    void fastlr_sum_parts_double(const double* parts, Py_ssize_t n_parts, Py_ssize_t stride,
                                 Py_ssize_t j0, Py_ssize_t j1, double* out) noexcept nogil
    void fastlr_sgd_update_float(float* W, float* vel, const float* grad, Py_ssize_t j0,
                                 Py_ssize_t j1, double lr, double momentum,
                                 double alpha) noexcept nogil
    void fastlr_sgd_update_double(double* W, double* vel, const double* grad, Py_ssize_t j0,
                                  Py_ssize_t j1, double lr, double momentum,
                                  double alpha) noexcept nogil
    enum: FASTLR_AHEAD
    enum: FASTLR_BLOCK
    void fastlr_prefetch(const void* p) noexcept nogil
    void fastlr_sum_update_float(float* W, float* vel, const float* parts, Py_ssize_t n_parts,
                                 Py_ssize_t stride, Py_ssize_t j0, Py_ssize_t j1, double lr,
                                 double momentum, double alpha) noexcept nogil
    void fastlr_sum_update_double(double* W, double* vel, const double* parts,
                                  Py_ssize_t n_parts, Py_ssize_t stride, Py_ssize_t j0,
                                  Py_ssize_t j1, double lr, double momentum,
                                  double alpha) noexcept nogil
    void fastlr_exp(double* v, Py_ssize_t n) noexcept nogil
    int fastlr_isa_level
    void fastlr_pick_isa() noexcept nogil
    int fastlr_best_isa_level() noexcept nogil

fastlr_pick_isa()


def isa_level():
    """The instruction set the kernels run: 4 (x86-64-v4, AVX-512), 3 (x86-64-v3, AVX2 + FMA)
    or 1 (the x86-64 baseline)."""
    return fastlr_isa_level


def set_isa_level(int level):
    """Run the kernels for instruction set ``level`` (4, 3 or 1) from now on, in this process:
    to compare them, or to reproduce bitwise the results of a CPU with a lower level. Raises
    ValueError for a level this CPU cannot run."""
    global fastlr_isa_level
    if level not in (1, 3, 4) or level > fastlr_best_isa_level():
        raise ValueError(f"ISA level {level} is not one of 1, 3, 4 up to "
                         f"{fastlr_best_isa_level()}, the best this CPU runs")
    fastlr_isa_level = level


cdef enum:
    # Samples per block: their scores, then their gradient, while their rows are in L2.
    SAMPLE_BLOCK = FASTLR_BLOCK


cdef inline void _scores(const floating* W, const floating* b, Py_ssize_t C, Py_ssize_t D,
                         const floating** xs, Py_ssize_t n, floating* z) noexcept nogil:
    """z (n, C) = x_j W^T + b for the n samples x_j = xs[j] (D,); W (C, D), b (C,)."""
    if floating is float:
        fastlr_scores_float(W, b, C, D, xs, n, z)
    else:
        fastlr_scores_double(W, b, C, D, xs, n, z)


cdef double _softmax_block(floating* z, Py_ssize_t n, Py_ssize_t C, const int64_t* y,
                          const floating* sw, const int64_t* rows, Py_ssize_t i0,
                          double inv_batch, double* ex) noexcept nogil:
    """Turn the scores z (n, C) of the samples i0 .. i0 + n - 1 of the batch (X[rows[i]], or
    X[i] when rows is NULL) into ``s_i / B (softmax(z_i) - onehot(y_i))`` in place; return
    their sum of ``s_i l_i`` with ``l_i = log sum_k exp(z_ik) - z_i,y_i``, both with the row
    maximum subtracted, in float64. ``ex`` holds n * C doubles."""
    cdef Py_ssize_t j, c
    cdef double total, z_label, scale, p_scale
    cdef double loss = 0.0
    cdef double m[SAMPLE_BLOCK]
    cdef floating* zj
    cdef int64_t idx, label
    for j in range(n):
        zj = z + j * C
        m[j] = zj[0]
        for c in range(1, C):
            if zj[c] > m[j]:
                m[j] = zj[c]
        for c in range(C):
            ex[j * C + c] = zj[c] - m[j]
    fastlr_exp(ex, n * C)
    for j in range(n):
        zj = z + j * C
        idx = rows[i0 + j] if rows != NULL else i0 + j
        label = y[idx]
        z_label = zj[label]
        total = 0.0
        for c in range(C):
            total += ex[j * C + c]
        scale = sw[idx] * inv_batch
        # One division per sample instead of one per class.
        p_scale = scale / total
        for c in range(C):
            zj[c] = <floating>(p_scale * ex[j * C + c])
        zj[label] = <floating>(zj[label] - scale)
        loss += sw[idx] * (m[j] + log(total) - z_label)
    return loss


cdef inline void _accumulate(floating* gW, floating* gb, Py_ssize_t C, Py_ssize_t D,
                             const floating** xs, Py_ssize_t n, Py_ssize_t n_ahead,
                             bint overwrite, const floating* g) noexcept nogil:
    """gW (C, D) += sum_j g_j x_j^T and gb (C,) += sum_j g_j over the n samples
    x_j = xs[j] (D,); g is (n, C). The n_ahead rows xs[n], xs[n + 1], ... (the samples that
    come next) are prefetched meanwhile. With ``overwrite`` gW and gb start from 0."""
    if floating is float:
        fastlr_accumulate_float(gW, gb, C, D, xs, n, n_ahead, overwrite, g)
    else:
        fastlr_accumulate_double(gW, gb, C, D, xs, n, n_ahead, overwrite, g)


cdef inline const floating* _row(const floating* X, const int64_t* rows, Py_ssize_t i,
                                 Py_ssize_t D) noexcept nogil:
    """Row i of the batch: X[rows[i]] when the batch is a list of indices, else X[i]."""
    if rows != NULL:
        return X + rows[i] * D
    return X + i * D


cdef inline Py_ssize_t _scratch_size(Py_ssize_t C) noexcept nogil:
    """Values of scratch per thread: the block's scores (SAMPLE_BLOCK, C), then room for
    SAMPLE_BLOCK * C doubles (the exponentials), padded to whole cache lines so that threads
    share none."""
    return (3 * SAMPLE_BLOCK * C + 15) // 16 * 16


cdef double _batch_chunk(const floating* X, const int64_t* y, const floating* sw,
                         const int64_t* rows, Py_ssize_t lo, Py_ssize_t hi,
                         const floating* W, const floating* b, Py_ssize_t C, Py_ssize_t D,
                         double inv_batch, floating* gW, floating* gb, floating* scratch,
                         const int64_t* next_rows, Py_ssize_t n_next) noexcept nogil:
    """Gradient of samples lo..hi-1 of a batch of size 1/inv_batch into gW (C, D), gb (C,)
    (overwritten), in blocks of SAMPLE_BLOCK samples; return their sum of ``s_i l_i``.
    ``scratch`` holds _scratch_size(C) values. The rows X[next_rows[k]], k < n_next, come
    after this chunk (the thread's next chunk) and are prefetched."""
    cdef double loss = 0.0
    cdef Py_ssize_t i, j, n, n_ahead
    cdef const floating* xs[SAMPLE_BLOCK + FASTLR_AHEAD]
    cdef int64_t idx
    if hi <= lo:
        memset(gW, 0, C * D * sizeof(floating))
        memset(gb, 0, C * sizeof(floating))
    i = lo
    while i < hi:
        n = min(<Py_ssize_t>SAMPLE_BLOCK, hi - i)
        for j in range(n):
            xs[j] = _row(X, rows, i + j, D)
        n_ahead = 0
        while n_ahead < FASTLR_AHEAD:
            j = i + n + n_ahead
            if j < hi:
                idx = rows[j] if rows != NULL else j
            elif j - hi < n_next:
                idx = next_rows[j - hi]
            else:
                break
            xs[n + n_ahead] = X + idx * D
            fastlr_prefetch(&y[idx])
            fastlr_prefetch(&sw[idx])
            n_ahead += 1
        _scores(W, b, C, D, xs, n, scratch)
        loss += _softmax_block(scratch, n, C, y, sw, rows, i, inv_batch,
                               <double*>(scratch + SAMPLE_BLOCK * C))
        # The first block overwrites gW: no separate pass to clear it.
        _accumulate(gW, gb, C, D, xs, n, n_ahead, i == lo, scratch)
        i += n
    return loss


cdef inline void _sum_parts(const floating* parts, Py_ssize_t T, Py_ssize_t stride,
                            Py_ssize_t j0, Py_ssize_t j1, floating* out) noexcept nogil:
    """out[j] = parts[0, j] + parts[1, j] + ... + parts[T-1, j] for j in j0..j1-1, in that
    order. ``out`` may be ``parts`` itself (row 0)."""
    if floating is float:
        fastlr_sum_parts_float(parts, T, stride, j0, j1, out)
    else:
        fastlr_sum_parts_double(parts, T, stride, j0, j1, out)


cdef inline void _sgd_update(floating* W, floating* vel, const floating* grad,
                             Py_ssize_t j0, Py_ssize_t j1, double lr, double momentum,
                             double alpha) noexcept nogil:
    """v = momentum v + (grad + alpha W); W -= lr v for j in j0..j1-1 (v untouched when
    momentum is 0). Computed in float64 and rounded once, as the reference does."""
    if floating is float:
        fastlr_sgd_update_float(W, vel, grad, j0, j1, lr, momentum, alpha)
    else:
        fastlr_sgd_update_double(W, vel, grad, j0, j1, lr, momentum, alpha)


cdef inline void _sum_update(floating* W, floating* vel, const floating* parts, Py_ssize_t T,
                             Py_ssize_t stride, Py_ssize_t j0, Py_ssize_t j1, double lr,
                             double momentum, double alpha) noexcept nogil:
    """_sgd_update of W[j0:j1] with the gradient _sum_parts would write, in one pass and
    without writing the sum anywhere."""
    if floating is float:
        fastlr_sum_update_float(W, vel, parts, T, stride, j0, j1, lr, momentum, alpha)
    else:
        fastlr_sum_update_double(W, vel, parts, T, stride, j0, j1, lr, momentum, alpha)


cdef inline void _predict_block(const floating* X, const floating* W, const floating* b,
                                Py_ssize_t N, Py_ssize_t C, Py_ssize_t D, Py_ssize_t block,
                                floating* out) noexcept nogil:
    """Scores of rows SAMPLE_BLOCK block .. SAMPLE_BLOCK (block + 1) - 1 of X (N, D) (fewer
    in the last block) into out (N, C)."""
    cdef const floating* xs[SAMPLE_BLOCK]
    cdef Py_ssize_t j, start = block * SAMPLE_BLOCK
    cdef Py_ssize_t n = min(<Py_ssize_t>SAMPLE_BLOCK, N - start)
    for j in range(n):
        xs[j] = X + (start + j) * D
    _scores(W, b, C, D, xs, n, out + start * C)


def predict_scores(const floating[:, ::1] X, const floating[:, ::1] W, const floating[::1] b,
                   floating[:, ::1] out, int n_threads):
    """out (N, C) = X (N, D) W (C, D)^T + b (C,), on ``n_threads`` threads."""
    cdef Py_ssize_t N = X.shape[0], D = X.shape[1], C = W.shape[0]
    cdef Py_ssize_t block
    if N == 0:
        return
    for block in prange((N + SAMPLE_BLOCK - 1) // SAMPLE_BLOCK, nogil=True,
                        num_threads=max(n_threads, 1), schedule="static"):
        _predict_block(&X[0, 0], &W[0, 0], &b[0], N, C, D, block, &out[0, 0])


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
    cdef floating* scratch = <floating*>malloc(T * _scratch_size(C) * sizeof(floating))
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
                                             scratch + tid * _scratch_size(C), NULL, 0)
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


cdef void _sgd_step(int tid, int team, Py_ssize_t step, const floating* X, const int64_t* y,
                    const floating* sw, const int64_t* perm, Py_ssize_t M,
                    Py_ssize_t batch_size, Py_ssize_t T, Py_ssize_t C, Py_ssize_t D,
                    floating* W, floating* b, floating* vel_W, floating* vel_b, double lr,
                    double momentum, double alpha, floating* parts_W, floating* parts_b,
                    floating* scratch, double* chunk_loss) noexcept nogil:
    """Thread ``tid``'s share of SGD step ``step``, inside a parallel region of ``team``
    threads: its chunks of the minibatch into parts_W (T, C, D), parts_b (T, C); a barrier;
    then its slices of the weights get the parts summed in order t = 0..T-1 and the update
    (the bias parts summed into parts_b[0]). A team smaller than T (e.g. under OMP_THREAD_LIMIT) takes the T chunks
    round-robin: the chunk boundaries, and so the result, depend on T alone."""
    cdef Py_ssize_t CD = C * D
    cdef Py_ssize_t start = step * batch_size
    cdef Py_ssize_t n_batch = min(batch_size, M - start)
    # The same chunk of the next step, to prefetch its rows.
    cdef Py_ssize_t n_next = max(0, min(batch_size, M - start - batch_size))
    cdef Py_ssize_t chunk = tid
    cdef Py_ssize_t j0, j1
    while chunk < T:
        j0 = n_next * chunk // T
        j1 = n_next * (chunk + 1) // T
        chunk_loss[chunk] += _batch_chunk(
            X, y, sw, perm + start, n_batch * chunk // T, n_batch * (chunk + 1) // T, W, b, C,
            D, 1.0 / n_batch, parts_W + chunk * CD, parts_b + chunk * C,
            scratch + tid * _scratch_size(C), perm + start + batch_size + j0, j1 - j0)
        chunk += team
    fastlr_barrier()
    chunk = tid
    while chunk < T:
        j0 = CD * chunk // T
        j1 = CD * (chunk + 1) // T
        _sum_update(W, vel_W, parts_W, T, CD, j0, j1, lr, momentum, alpha)
        if chunk == 0:
            _sum_parts(parts_b, T, C, 0, C, parts_b)
            _sgd_update(b, vel_b, parts_b, 0, C, lr, momentum, 0.0)
        chunk += team


cdef double _sgd_epoch(const floating[:, ::1] X, const int64_t[::1] y,
                       const floating[::1] sample_weight, const int64_t[::1] perm,
                       floating[:, ::1] W, floating[::1] b, floating[:, ::1] vel_W,
                       floating[::1] vel_b, const double[::1] lr_steps, Py_ssize_t batch_size,
                       double momentum, double alpha, floating[:, :, ::1] parts_W,
                       floating[:, ::1] parts_b, bint region_per_step) except -1:
    """sgd_epoch, with one parallel region for the whole epoch (a barrier after every step),
    or with ``region_per_step`` a new region for every step (the variant it was measured
    against)."""
    cdef Py_ssize_t M = perm.shape[0], D = X.shape[1], C = W.shape[0], T = parts_W.shape[0]
    cdef Py_ssize_t n_steps = (M + batch_size - 1) // batch_size
    cdef Py_ssize_t step, chunk
    cdef int tid, team
    cdef double loss = 0.0
    if M == 0:
        return 0.0
    cdef double* chunk_loss = <double*>malloc(T * sizeof(double))
    cdef floating* scratch = <floating*>malloc(T * _scratch_size(C) * sizeof(floating))
    if chunk_loss == NULL or scratch == NULL:
        free(chunk_loss)
        free(scratch)
        raise MemoryError()
    memset(chunk_loss, 0, T * sizeof(double))
    if region_per_step:
        for step in range(n_steps):
            with nogil, parallel(num_threads=T):
                _sgd_step(fastlr_thread_num(), fastlr_team_size(), step, &X[0, 0], &y[0],
                          &sample_weight[0], &perm[0], M, batch_size, T, C, D, &W[0, 0],
                          &b[0], &vel_W[0, 0], &vel_b[0], lr_steps[step], momentum, alpha,
                          &parts_W[0, 0, 0], &parts_b[0, 0], scratch, chunk_loss)
    else:
        with nogil, parallel(num_threads=T):
            tid = fastlr_thread_num()
            team = fastlr_team_size()
            for step in range(n_steps):
                _sgd_step(tid, team, step, &X[0, 0], &y[0], &sample_weight[0], &perm[0], M,
                          batch_size, T, C, D, &W[0, 0], &b[0], &vel_W[0, 0], &vel_b[0],
                          lr_steps[step], momentum, alpha, &parts_W[0, 0, 0],
                          &parts_b[0, 0], scratch, chunk_loss)
                # The next step reads the weights this one wrote.
                fastlr_barrier()
    for chunk in range(T):
        loss += chunk_loss[chunk]
    free(chunk_loss)
    free(scratch)
    return loss


def sgd_epoch(const floating[:, ::1] X, const int64_t[::1] y,
              const floating[::1] sample_weight, const int64_t[::1] perm,
              floating[:, ::1] W, floating[::1] b, floating[:, ::1] vel_W, floating[::1] vel_b,
              const double[::1] lr_steps, Py_ssize_t batch_size, double momentum, double alpha,
              floating[:, :, ::1] parts_W, floating[:, ::1] parts_b):
    """One epoch of minibatch SGD over X (N, D), y (N,), sample_weight (N,) in ``perm`` (M,)
    order, updating W (C, D), b (C,), vel_W, vel_b in place; return the epoch's sum of
    ``s_i l_i``, each loss taken at the weights of its step.

    One parallel region spans the epoch. Every step is two phases separated by barriers: the
    T chunks of the minibatch into parts_W (T, C, D), parts_b (T, C); then the parts summed
    in order t = 0..T-1 and the update applied, each thread on its slice of the C*D weights.
    """
    return _sgd_epoch(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size,
                      momentum, alpha, parts_W, parts_b, False)


def sgd_epoch_region_per_step(const floating[:, ::1] X, const int64_t[::1] y,
                              const floating[::1] sample_weight, const int64_t[::1] perm,
                              floating[:, ::1] W, floating[::1] b, floating[:, ::1] vel_W,
                              floating[::1] vel_b, const double[::1] lr_steps,
                              Py_ssize_t batch_size, double momentum, double alpha,
                              floating[:, :, ::1] parts_W, floating[:, ::1] parts_b):
    """sgd_epoch with a new parallel region for every step instead of one per epoch: the
    same result, kept for ``python -m fastlr bench --kernels all`` to measure the difference."""
    return _sgd_epoch(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size,
                      momentum, alpha, parts_W, parts_b, True)
