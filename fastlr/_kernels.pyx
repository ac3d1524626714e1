# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# cython: cdivision=True
"""Cython kernels: the contract of ``fastlr/backends/__init__.py``, compiled with OpenMP.

Shapes: N samples, D features, C classes, B batch, S steps in an epoch, T threads, K chunks
of a batch.

This module is the threading layer: the OpenMP regions, and thin nogil wrappers around the C
kernels in ``fastlr/csrc`` (``kernels.h`` is their contract). Like every kernel it checks
nothing: the driver (``fastlr/sgd.py``) has checked every dtype, shape and contiguity.

The kernels (float32 and float64 through fused types; typed memoryviews; no GIL)
-----------
``sgd_epoch``       one epoch of minibatch SGD in one parallel region. Each step splits its
                    minibatch into K chunks (boundaries ``B j / K``, K = parts_W.shape[0],
                    the driver's, never T); thread k of T writes the gradients of chunks
                    ``k K / T`` to ``(k + 1) K / T - 1`` into parts_W[j] (C, D),
                    parts_b[j] (C,); after a meeting each thread sums the K parts in the order
                    j = 0..K-1 over its own slice of the C*D weights, straight into the
                    (momentum, L2) update there; a meeting; the next step. Any T gives the
                    same bits. The meetings count long waits (``threads.h``: a thread that
                    had to yield its core, because another process took its partner's); with
                    ``patience`` > 0 the team stops at the end of the step where it has seen
                    that many, and ``seen`` says how many steps ran.
``loss_and_grad``   the same first phase for one batch, then the fixed-order sum into grad_W.
``predict_scores``  ``X W^T + b``, blocks of FASTLR_BLOCK rows spread over threads with prange.

X is of W's float type, or uint8 pixels whose features are X / 255 (a second fused type,
``samples``): the tiles convert the bytes to floats, which is exact, and multiply each of their
sums by 1/255 once, so an epoch reads a quarter of the bytes.

A thread's chunk (``fastlr_chunk_grad_*``) goes in blocks of FASTLR_BLOCK = 32 samples (why 32:
``kernels.h``): the block's scores (register tiles of 10 classes x 2 samples; W walked in 1 KB
spans that stay in L1), a stable
softmax and log-sum-exp in float64 (the block's exponentials vectorized, within 2 ulp of
libm's), then the block's gradient with a tile of 10 rows x one vector of gW held in
registers across the block's samples (stored once per block, not once per sample). While the
gradient, which is compute-bound, runs, the rows of the next block's samples are prefetched into
L2: the rows are scattered by the permutation and the scores would otherwise wait on DRAM.
The tiles are compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and the baseline
(SSE2); the best the CPU supports is picked at import (``isa_level``; ``set_isa_level`` to
compare them). Above v4, the AMX level (``AMX_LEVEL``, where the CPU has AMX-BF16 and Linux
grants the tile registers) computes the scores and gradient of uint8 pixels with float32
weights (C <= 16, chunks of at least 64 samples) as bf16 tile products, each weight split into
two bf16 (``fastlr/csrc/tiles_amx.c``), faster than v4's epoch on MNIST at batch 1024.

Why it is built this way (measured on AMD Zen 4, then on Intel Sapphire Rapids; the numbers
are in ``docs/journal/``):

- On Sapphire Rapids: the lanes of the score accumulators summed as vector halves (the copy
  to an array GCC made of it was half the score tile's time), the score span chosen from the
  L1's size (whole rows where they fit), and uint8 pixels, a quarter of the bytes of an epoch
  that was waiting on memory.

- Register tiles: the gradient of a block accumulated in registers, instead of a rank-1
  update of every row of gW per sample, was the first large gain; then the scores waited on
  DRAM, which the prefetch during the gradient pass hides (better than prefetching during
  the scores, or both; into L2 better than into L1 or L3).
- x86-64-v4 first: with 32 registers the score tile covers 10 classes, so each row of W is
  loaded once per two samples; it beats v3 at every batch size and thread count measured.
- The parts summed straight into the update (the sum written nowhere, no stores into another
  thread's part) and the first block overwriting the thread's part (no clearing pass).
- One parallel region per epoch against a new region per step
  (``sgd_epoch_region_per_step``, kept for ``bench --kernels all``): equal within the noise;
  the single region is kept.
- Tried and dropped: packing the block's rows into a contiguous buffer for the gradient pass
  (the stores cost what the reads saved); splitting the columns of W between the threads
  instead of the samples (slower: every thread computes the softmax of every sample).

Reproducibility: every sum has an order fixed in the source, so the same inputs, the same T
and the same ISA level give bitwise the same model. The gradient adds its terms sample by
sample in batch order whatever the vector width, but the lane sums of the scores and the use
of FMA differ between ISA levels, so a v4 and a v3 CPU round differently (well within the
tolerances of ``fastlr/backends/check.py``); ``set_isa_level(3)`` reproduces a v3 CPU. The
AMX level rounds otherwise again (weights and deltas to about 16 bits, the tiles' float32
sums); ``set_isa_level(4)`` reproduces, on a CPU with AMX, a v4 CPU without it.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport calloc, free, malloc

cdef extern from "threads.h":
    int FASTLR_OPENMP
    enum: FASTLR_MEETING_SLOTS
    void fastlr_barrier() noexcept nogil
    int64_t fastlr_meeting(int64_t* flags, int tid, int team, int64_t count,
                           int64_t* long_waits) noexcept nogil
    int fastlr_thread_num() noexcept nogil
    int fastlr_team_size() noexcept nogil
    int fastlr_max_threads() noexcept nogil

# The sizes are ptrdiff_t in kernels.h: the same type as Py_ssize_t.
cdef extern from "kernels.h":
    enum: FASTLR_BLOCK
    enum: FASTLR_ISA_AMX
    Py_ssize_t fastlr_scratch_size(Py_ssize_t C, Py_ssize_t D) noexcept nogil
    double fastlr_chunk_grad_float(
        const float* X, const int64_t* y, const float* sw, const int64_t* rows, Py_ssize_t lo,
        Py_ssize_t hi, const float* W, const float* b, Py_ssize_t C, Py_ssize_t D,
        double inv_batch, float* gW, float* gb, float* scratch, const int64_t* next_rows,
        Py_ssize_t n_next, double* correct) noexcept nogil
    double fastlr_chunk_grad_double(
        const double* X, const int64_t* y, const double* sw, const int64_t* rows,
        Py_ssize_t lo, Py_ssize_t hi, const double* W, const double* b, Py_ssize_t C,
        Py_ssize_t D, double inv_batch, double* gW, double* gb, double* scratch,
        const int64_t* next_rows, Py_ssize_t n_next, double* correct) noexcept nogil
    double fastlr_chunk_grad_u8_float(
        const uint8_t* X, const int64_t* y, const float* sw, const int64_t* rows,
        Py_ssize_t lo, Py_ssize_t hi, const float* W, const float* b, Py_ssize_t C,
        Py_ssize_t D, double inv_batch, float* gW, float* gb, float* scratch,
        const int64_t* next_rows, Py_ssize_t n_next, double* correct) noexcept nogil
    double fastlr_chunk_grad_u8_double(
        const uint8_t* X, const int64_t* y, const double* sw, const int64_t* rows,
        Py_ssize_t lo, Py_ssize_t hi, const double* W, const double* b, Py_ssize_t C,
        Py_ssize_t D, double inv_batch, double* gW, double* gb, double* scratch,
        const int64_t* next_rows, Py_ssize_t n_next, double* correct) noexcept nogil
    void fastlr_predict_block_float(const float* X, const float* W, const float* b,
                                    Py_ssize_t N, Py_ssize_t C, Py_ssize_t D,
                                    Py_ssize_t block, float* out) noexcept nogil
    void fastlr_predict_block_double(const double* X, const double* W, const double* b,
                                     Py_ssize_t N, Py_ssize_t C, Py_ssize_t D,
                                     Py_ssize_t block, double* out) noexcept nogil
    void fastlr_predict_block_u8_float(const uint8_t* X, const float* W, const float* b,
                                       Py_ssize_t N, Py_ssize_t C, Py_ssize_t D,
                                       Py_ssize_t block, float* out) noexcept nogil
    void fastlr_predict_block_u8_double(const uint8_t* X, const double* W, const double* b,
                                        Py_ssize_t N, Py_ssize_t C, Py_ssize_t D,
                                        Py_ssize_t block, double* out) noexcept nogil
    void fastlr_sum_parts_float(const float* parts, Py_ssize_t T, Py_ssize_t stride,
                                Py_ssize_t j0, Py_ssize_t j1, float* out) noexcept nogil
    void fastlr_sum_parts_double(const double* parts, Py_ssize_t T, Py_ssize_t stride,
                                 Py_ssize_t j0, Py_ssize_t j1, double* out) noexcept nogil
    void fastlr_sum_update_float(float* W, float* vel, const float* parts, Py_ssize_t T,
                                 Py_ssize_t stride, Py_ssize_t j0, Py_ssize_t j1, double lr,
                                 double momentum, double alpha) noexcept nogil
    void fastlr_sum_update_double(double* W, double* vel, const double* parts, Py_ssize_t T,
                                  Py_ssize_t stride, Py_ssize_t j0, Py_ssize_t j1, double lr,
                                  double momentum, double alpha) noexcept nogil
    int fastlr_isa_level() noexcept nogil
    int fastlr_best_isa_level() noexcept nogil
    int fastlr_set_isa_level(int level) noexcept nogil
    void fastlr_dispatch_init() noexcept nogil
    void fastlr_set_score_span(Py_ssize_t bytes) noexcept nogil

# The values of X: floats of W's type, or uint8 pixels whose features are X / 255. Cython
# compiles every pairing with W's type; float X of the other float type is refused.
ctypedef fused samples:
    float
    double
    uint8_t

#: True if the extension was compiled with OpenMP; without it every kernel runs on one thread.
OPENMP_ENABLED = bool(FASTLR_OPENMP)


def max_threads():
    """The most threads an OpenMP parallel region would start here (1 without OpenMP)."""
    return fastlr_max_threads()


#: The level of the AMX tiles: x86-64-v4 with bf16 tile products (AMX-BF16) for the epochs
#: and gradients of uint8 X with float32 weights and at most 16 classes.
AMX_LEVEL = FASTLR_ISA_AMX


def isa_level():
    """The instruction set the kernels run: ``AMX_LEVEL`` (5: x86-64-v4 and AMX-BF16 tiles),
    4 (x86-64-v4, AVX-512), 3 (x86-64-v3, AVX2 + FMA) or 1 (the x86-64 baseline)."""
    return fastlr_isa_level()


def best_isa_level():
    """The best instruction set level this build, this CPU and its operating system run: the
    one picked at import."""
    return fastlr_best_isa_level()


def set_isa_level(int level):
    """Run the kernels for instruction set ``level`` (5, 4, 3 or 1) from now on, in this
    process: to compare them, or to reproduce bitwise the results of a CPU with a lower level.
    Raises ValueError for a level this CPU cannot run."""
    if fastlr_set_isa_level(level) != 0:
        raise ValueError(f"ISA level {level} is not one of 1, 3, 4, {FASTLR_ISA_AMX} up to "
                         f"{fastlr_best_isa_level()}, the best this CPU runs")


def set_score_span(Py_ssize_t n_bytes):
    """Make the score tile walk D in spans of ``n_bytes`` bytes of each row of W from now on, in
    this process (0: this CPU's choice again: whole rows where the tile's rows of W fit in its
    L1 data cache, else 1 KB). It changes only the speed: the same sums in the same order, so
    bitwise the same results."""
    fastlr_set_score_span(n_bytes)


fastlr_dispatch_init()


cdef inline double _chunk_grad(const samples* X, const int64_t* y, const floating* sw,
                               const int64_t* rows, Py_ssize_t lo, Py_ssize_t hi,
                               const floating* W, const floating* b, Py_ssize_t C,
                               Py_ssize_t D, double inv_batch, floating* gW, floating* gb,
                               floating* scratch, const int64_t* next_rows,
                               Py_ssize_t n_next, double* correct) noexcept nogil:
    """The chunk's sum of s_i l_i; its sum of s_i over the samples scored right is added to
    ``correct[0]``."""
    cdef double counted
    cdef double loss
    if samples is uint8_t:
        if floating is float:
            loss = fastlr_chunk_grad_u8_float(X, y, sw, rows, lo, hi, W, b, C, D, inv_batch,
                                              gW, gb, scratch, next_rows, n_next, &counted)
        else:
            loss = fastlr_chunk_grad_u8_double(X, y, sw, rows, lo, hi, W, b, C, D, inv_batch,
                                               gW, gb, scratch, next_rows, n_next, &counted)
    # (float X of the other type than W's is refused before it gets here)
    elif floating is float:
        loss = fastlr_chunk_grad_float(<const float*>X, y, sw, rows, lo, hi, W, b, C, D,
                                       inv_batch, gW, gb, scratch, next_rows, n_next, &counted)
    else:
        loss = fastlr_chunk_grad_double(<const double*>X, y, sw, rows, lo, hi, W, b, C, D,
                                        inv_batch, gW, gb, scratch, next_rows, n_next,
                                        &counted)
    correct[0] += counted
    return loss


cdef inline void _sum_parts(const floating* parts, Py_ssize_t T, Py_ssize_t stride,
                            Py_ssize_t j0, Py_ssize_t j1, floating* out) noexcept nogil:
    if floating is float:
        fastlr_sum_parts_float(parts, T, stride, j0, j1, out)
    else:
        fastlr_sum_parts_double(parts, T, stride, j0, j1, out)


cdef inline void _sum_update(floating* W, floating* vel, const floating* parts, Py_ssize_t T,
                             Py_ssize_t stride, Py_ssize_t j0, Py_ssize_t j1, double lr,
                             double momentum, double alpha) noexcept nogil:
    if floating is float:
        fastlr_sum_update_float(W, vel, parts, T, stride, j0, j1, lr, momentum, alpha)
    else:
        fastlr_sum_update_double(W, vel, parts, T, stride, j0, j1, lr, momentum, alpha)


cdef class _ThreadBuffers:
    """What one kernel call needs besides the driver's arrays: ``chunk_loss`` and
    ``chunk_correct`` (K,) zeros; ``scratch``, ``fastlr_scratch_size(C, D)`` values of
    ``itemsize`` bytes for each of the T threads; the meeting's ``flags``, zeros, a cache line
    per thread starting on a line; ``thread_seen`` (T, 2) zeros, each thread's steps run and
    long waits. Freed with the object."""
    cdef double* chunk_loss
    cdef double* chunk_correct
    cdef void* scratch
    cdef int64_t* flag_memory
    cdef int64_t* flags
    cdef int64_t* thread_seen

    def __cinit__(self, Py_ssize_t T, Py_ssize_t K, Py_ssize_t C, Py_ssize_t D,
                  size_t itemsize):
        self.chunk_loss = <double*>calloc(K, sizeof(double))
        self.chunk_correct = <double*>calloc(K, sizeof(double))
        self.scratch = malloc(T * fastlr_scratch_size(C, D) * itemsize)
        self.flag_memory = <int64_t*>calloc((T + 1) * FASTLR_MEETING_SLOTS, sizeof(int64_t))
        self.thread_seen = <int64_t*>calloc(2 * T, sizeof(int64_t))
        if (self.chunk_loss == NULL or self.chunk_correct == NULL or self.scratch == NULL
                or self.flag_memory == NULL or self.thread_seen == NULL):
            raise MemoryError()
        self.flags = self.flag_memory + (-(<size_t>self.flag_memory) // sizeof(int64_t)
                                         ) % FASTLR_MEETING_SLOTS

    def __dealloc__(self):
        free(self.chunk_loss)
        free(self.chunk_correct)
        free(self.scratch)
        free(self.flag_memory)
        free(self.thread_seen)


cdef inline void _predict_block(const samples* X, const floating* W, const floating* b,
                                Py_ssize_t N, Py_ssize_t C, Py_ssize_t D, Py_ssize_t block,
                                floating* out) noexcept nogil:
    if samples is uint8_t:
        if floating is float:
            fastlr_predict_block_u8_float(X, W, b, N, C, D, block, out)
        else:
            fastlr_predict_block_u8_double(X, W, b, N, C, D, block, out)
    elif floating is float:
        fastlr_predict_block_float(<const float*>X, W, b, N, C, D, block, out)
    else:
        fastlr_predict_block_double(<const double*>X, W, b, N, C, D, block, out)


def predict_scores(const samples[:, ::1] X, const floating[:, ::1] W, const floating[::1] b,
                   floating[:, ::1] out, int n_threads):
    """out (N, C) = X (N, D) W (C, D)^T + b (C,), on ``n_threads`` threads; for uint8 X the
    features X / 255."""
    cdef Py_ssize_t N = X.shape[0], D = X.shape[1], C = W.shape[0]
    cdef Py_ssize_t block
    if samples is not uint8_t and sizeof(samples) != sizeof(floating):
        raise TypeError("float X must have W's dtype")
    if N == 0:
        return
    for block in prange((N + FASTLR_BLOCK - 1) // FASTLR_BLOCK, nogil=True,
                        num_threads=max(n_threads, 1), schedule="static"):
        _predict_block(&X[0, 0], &W[0, 0], &b[0], N, C, D, block, &out[0, 0])


def loss_and_grad(const samples[:, ::1] X, const int64_t[::1] y,
                  const floating[::1] sample_weight, const floating[:, ::1] W,
                  const floating[::1] b, floating[:, ::1] grad_W, floating[::1] grad_b,
                  floating[:, :, ::1] parts_W, floating[:, ::1] parts_b, int n_threads):
    """Mean weighted cross-entropy of the batch X (B, D), y (B,), sample_weight (B,) at
    W (C, D), b (C,); its gradient is written into grad_W (C, D), grad_b (C,).

    Chunk j of the K = parts_W.shape[0] of the batch (samples ``B j / K`` to
    ``B (j+1) / K``) goes into parts_W[j] (C, D), parts_b[j] (C,), on ``n_threads`` threads;
    the parts are then summed in the order j = 0, 1, ..., K-1.
    """
    cdef Py_ssize_t B = X.shape[0], D = X.shape[1], C = W.shape[0], K = parts_W.shape[0]
    cdef Py_ssize_t T = max(n_threads, 1)
    cdef Py_ssize_t CD = C * D
    cdef Py_ssize_t chunk
    cdef int tid, team
    cdef double inv_batch = 1.0 / B
    cdef double loss = 0.0
    if samples is not uint8_t and sizeof(samples) != sizeof(floating):
        raise TypeError("float X must have W's dtype")
    cdef _ThreadBuffers buffers = _ThreadBuffers(T, K, C, D, sizeof(floating))
    cdef double* chunk_loss = buffers.chunk_loss
    cdef double* chunk_correct = buffers.chunk_correct
    cdef floating* scratch = <floating*>buffers.scratch
    with nogil, parallel(num_threads=T):
        tid = fastlr_thread_num()
        team = fastlr_team_size()
        # The team (fewer than T under OMP_THREAD_LIMIT) shares the K chunks; the result
        # depends on K alone.
        for chunk in range(K * tid // team, K * (tid + 1) // team):
            chunk_loss[chunk] = _chunk_grad(&X[0, 0], &y[0], &sample_weight[0], NULL,
                                            B * chunk // K, B * (chunk + 1) // K, &W[0, 0],
                                            &b[0], C, D, inv_batch, &parts_W[chunk, 0, 0],
                                            &parts_b[chunk, 0],
                                            scratch + tid * fastlr_scratch_size(C, D), NULL, 0,
                                            &chunk_correct[chunk])
        fastlr_barrier()
        _sum_parts(&parts_W[0, 0, 0], K, CD, CD * tid // team, CD * (tid + 1) // team,
                   &grad_W[0, 0])
        if tid == 0:
            _sum_parts(&parts_b[0, 0], K, C, 0, C, &grad_b[0])
    for chunk in range(K):
        loss += chunk_loss[chunk]
    return loss * inv_batch


cdef void _step_chunks(int tid, int team, Py_ssize_t step, const samples* X,
                       const int64_t* y, const floating* sw, const int64_t* perm, Py_ssize_t M,
                       Py_ssize_t batch_size, Py_ssize_t K, Py_ssize_t C, Py_ssize_t D,
                       const floating* W, const floating* b, floating* parts_W,
                       floating* parts_b, floating* scratch, double* chunk_loss,
                       double* chunk_correct) noexcept nogil:
    """Thread ``tid``'s chunks of SGD step ``step``, in a parallel region of ``team`` threads:
    chunks ``K tid / team`` to ``K (tid + 1) / team - 1`` of the minibatch into
    parts_W (K, C, D), parts_b (K, C), their sums of s_i l_i and of s_i over the samples
    scored right added to chunk_loss and chunk_correct (K,). While a chunk's gradient runs,
    the rows that come after it in the thread's stream are prefetched: its next chunk, or
    after its last its first chunk of the next step."""
    cdef Py_ssize_t CD = C * D
    cdef Py_ssize_t start = step * batch_size
    cdef Py_ssize_t n_batch = min(batch_size, M - start)
    cdef Py_ssize_t n_after = max(0, min(batch_size, M - start - batch_size))
    cdef Py_ssize_t j0 = K * tid // team
    cdef Py_ssize_t j1 = K * (tid + 1) // team
    cdef Py_ssize_t chunk, next_lo, next_hi
    cdef const int64_t* next_rows
    for chunk in range(j0, j1):
        if chunk + 1 < j1:
            next_rows = perm + start
            next_lo = n_batch * (chunk + 1) // K
            next_hi = n_batch * (chunk + 2) // K
        else:
            next_rows = perm + start + batch_size
            next_lo = n_after * j0 // K
            next_hi = n_after * (j0 + 1) // K
        chunk_loss[chunk] += _chunk_grad(
            X, y, sw, perm + start, n_batch * chunk // K, n_batch * (chunk + 1) // K, W, b, C,
            D, 1.0 / n_batch, parts_W + chunk * CD, parts_b + chunk * C,
            scratch + tid * fastlr_scratch_size(C, D), next_rows + next_lo, next_hi - next_lo,
            chunk_correct + chunk)


cdef void _step_update(int tid, int team, Py_ssize_t K, Py_ssize_t C, Py_ssize_t D,
                       floating* W, floating* b, floating* vel_W, floating* vel_b, double lr,
                       double momentum, double alpha, const floating* parts_W,
                       const floating* parts_b) noexcept nogil:
    """Thread ``tid``'s share of a step's update, after its chunks: its slice of the C*D
    weights gets the K parts summed in order j = 0..K-1 and the update; thread 0 the bias.
    Element by element, so the slices change no bits."""
    cdef Py_ssize_t CD = C * D
    _sum_update(W, vel_W, parts_W, K, CD, CD * tid // team, CD * (tid + 1) // team, lr,
                momentum, alpha)
    if tid == 0:
        _sum_update(b, vel_b, parts_b, K, C, 0, C, lr, momentum, 0.0)


cdef tuple _sgd_epoch(const samples[:, ::1] X, const int64_t[::1] y,
                      const floating[::1] sample_weight, const int64_t[::1] perm,
                      floating[:, ::1] W, floating[::1] b, floating[:, ::1] vel_W,
                      floating[::1] vel_b, const double[::1] lr_steps, Py_ssize_t batch_size,
                      double momentum, double alpha, floating[:, :, ::1] parts_W,
                      floating[:, ::1] parts_b, int n_threads, Py_ssize_t patience,
                      int64_t[::1] seen, bint region_per_step):
    """sgd_epoch, with one parallel region for the whole epoch (two meetings per step), or
    with ``region_per_step`` a new region for every step (the variant it was measured
    against, which never stops early)."""
    cdef Py_ssize_t M = perm.shape[0], D = X.shape[1], C = W.shape[0], K = parts_W.shape[0]
    cdef Py_ssize_t T = max(n_threads, 1)
    cdef Py_ssize_t n_steps = (M + batch_size - 1) // batch_size
    cdef Py_ssize_t step, chunk
    cdef int tid, team
    cdef int64_t meetings, long_waits, team_waits
    cdef double loss = 0.0
    cdef double correct = 0.0
    if samples is not uint8_t and sizeof(samples) != sizeof(floating):
        raise TypeError("float X must have W's dtype")
    seen[0] = n_steps
    seen[1] = 0
    if M == 0:
        return 0.0, 0.0
    cdef _ThreadBuffers buffers = _ThreadBuffers(T, K, C, D, sizeof(floating))
    cdef double* chunk_loss = buffers.chunk_loss
    cdef double* chunk_correct = buffers.chunk_correct
    cdef floating* scratch = <floating*>buffers.scratch
    cdef int64_t* flags = buffers.flags
    cdef int64_t* thread_seen = buffers.thread_seen
    if region_per_step:
        for step in range(n_steps):
            with nogil, parallel(num_threads=T):
                tid = fastlr_thread_num()
                team = fastlr_team_size()
                _step_chunks(tid, team, step, &X[0, 0], &y[0], &sample_weight[0], &perm[0], M,
                             batch_size, K, C, D, &W[0, 0], &b[0], &parts_W[0, 0, 0],
                             &parts_b[0, 0], scratch, chunk_loss, chunk_correct)
                fastlr_barrier()
                _step_update(tid, team, K, C, D, &W[0, 0], &b[0], &vel_W[0, 0], &vel_b[0],
                             lr_steps[step], momentum, alpha, &parts_W[0, 0, 0],
                             &parts_b[0, 0])
    else:
        with nogil, parallel(num_threads=T):
            tid = fastlr_thread_num()
            team = fastlr_team_size()
            meetings = 0
            long_waits = 0
            thread_seen[2 * tid] = n_steps
            for step in range(n_steps):
                _step_chunks(tid, team, step, &X[0, 0], &y[0], &sample_weight[0], &perm[0], M,
                             batch_size, K, C, D, &W[0, 0], &b[0], &parts_W[0, 0, 0],
                             &parts_b[0, 0], scratch, chunk_loss, chunk_correct)
                meetings = meetings + 1
                fastlr_meeting(flags, tid, team, meetings, &long_waits)
                _step_update(tid, team, K, C, D, &W[0, 0], &b[0], &vel_W[0, 0], &vel_b[0],
                             lr_steps[step], momentum, alpha, &parts_W[0, 0, 0],
                             &parts_b[0, 0])
                # The next step reads the weights this one wrote.
                meetings = meetings + 1
                team_waits = fastlr_meeting(flags, tid, team, meetings, &long_waits)
                if patience > 0 and team_waits >= patience:
                    thread_seen[2 * tid] = step + 1
                    break
            thread_seen[2 * tid + 1] = long_waits
        seen[0] = thread_seen[0]
        for chunk in range(T):
            seen[1] += thread_seen[2 * chunk + 1]
    for chunk in range(K):
        loss += chunk_loss[chunk]
        correct += chunk_correct[chunk]
    return loss, correct


def sgd_epoch(const samples[:, ::1] X, const int64_t[::1] y,
              const floating[::1] sample_weight, const int64_t[::1] perm,
              floating[:, ::1] W, floating[::1] b, floating[:, ::1] vel_W, floating[::1] vel_b,
              const double[::1] lr_steps, Py_ssize_t batch_size, double momentum, double alpha,
              floating[:, :, ::1] parts_W, floating[:, ::1] parts_b, int n_threads,
              Py_ssize_t patience, int64_t[::1] seen):
    """One epoch of minibatch SGD over X (N, D), y (N,), sample_weight (N,) in ``perm`` (M,)
    order, updating W (C, D), b (C,), vel_W, vel_b in place; return the epoch's sum of
    ``s_i l_i``, each loss taken at the weights of its step, and its sum of ``s_i`` over the
    samples whose highest score at those weights is their label.

    One parallel region of ``n_threads`` threads spans the epoch. Every step is two phases
    separated by meetings: the K chunks of the minibatch into parts_W (K, C, D),
    parts_b (K, C); then the parts summed in order j = 0..K-1 and the update applied, each
    thread on its slice of the C*D weights. With ``patience`` > 0 the threads stop at the end
    of the step whose closing meeting counted that many long waits. ``seen`` (2,) int64 is
    written: the steps run, the long waits the threads saw.
    """
    return _sgd_epoch(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size,
                      momentum, alpha, parts_W, parts_b, n_threads, patience, seen, False)


def sgd_epoch_region_per_step(const samples[:, ::1] X, const int64_t[::1] y,
                              const floating[::1] sample_weight, const int64_t[::1] perm,
                              floating[:, ::1] W, floating[::1] b, floating[:, ::1] vel_W,
                              floating[::1] vel_b, const double[::1] lr_steps,
                              Py_ssize_t batch_size, double momentum, double alpha,
                              floating[:, :, ::1] parts_W, floating[:, ::1] parts_b,
                              int n_threads, Py_ssize_t patience, int64_t[::1] seen):
    """sgd_epoch with a new parallel region for every step instead of one per epoch: the
    same result, kept for ``python -m fastlr bench --kernels all`` to measure the difference.
    It runs every step (``patience`` is not used)."""
    return _sgd_epoch(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size,
                      momentum, alpha, parts_W, parts_b, n_threads, patience, seen, True)
