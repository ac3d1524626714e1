/* The tiles for one float type, one type of X and one instruction set; tiles_isa.h includes
   this file once per float type, and again with PIXELS defined. It expects:

     FLOAT             float or double
     PIXELS            defined if X holds uint8 pixels, whose features are X / 255: then only
                       the tiles that read X (scores, accumulate) are compiled, as
                       scores_u8_FLOAT and accumulate_u8_FLOAT
     ISA               the instruction set's name in function names (v4, v3, base)
     VECTOR_BYTES      the width of a vector register
     SCORE_TILE        classes per register tile of the scores (times 2 samples)
     GRAD_TILE         classes per register tile of the gradient
     GRAD_VECTORS      vectors of D per register tile of the gradient
     KEEP_IN_REGISTER  an empty asm on a loaded vector, or nothing

   Vectors are GCC vector extensions holding independent partial sums, so the loops are
   vectorized by construction without reassociating a float sum (no -ffast-math). */

#define TILE(name) FASTLR_TILE_NAME(name, FLOAT)
#define VEC TILE(vec)

#ifndef PIXELS
typedef FLOAT VEC __attribute__((vector_size(VECTOR_BYTES)));

/* Unaligned vector loads and stores: the rows of X and W start anywhere. */
static inline VEC TILE(load)(const FLOAT *p) {
    VEC v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void TILE(store)(FLOAT *p, VEC v) { memcpy(p, &v, sizeof v); }

/* The lanes of v summed pairwise, halving the vector each time: the high half added to the
   low half as vectors while a half is wider than 16 bytes, then the last few lanes the same
   way one by one. A fixed order that needs a handful of instructions (a serial sum of 16
   lanes was a chain of 16 dependent adds; the lanes copied to an array and added there cost
   half the time of the score tile on Sapphire Rapids). */
typedef FLOAT TILE(half32) __attribute__((vector_size(32)));
typedef FLOAT TILE(half16) __attribute__((vector_size(16)));
#define FASTLR_HALVES_ADDED(half_type, v)                          \
    ({                                                             \
        half_type lo_, hi_;                                        \
        memcpy(&lo_, &(v), sizeof lo_);                            \
        memcpy(&hi_, (const char *)&(v) + sizeof lo_, sizeof hi_); \
        lo_ + hi_;                                                 \
    })

static inline FLOAT TILE(lane_sum)(VEC v) {
#if VECTOR_BYTES == 64
    TILE(half32) v32 = FASTLR_HALVES_ADDED(TILE(half32), v);
    TILE(half16) v16 = FASTLR_HALVES_ADDED(TILE(half16), v32);
#elif VECTOR_BYTES == 32
    TILE(half16) v16 = FASTLR_HALVES_ADDED(TILE(half16), v);
#else
    TILE(half16) v16 = v;
#endif
    enum { LANES = 16 / sizeof(FLOAT) };
    FLOAT l[LANES];
    memcpy(l, &v16, sizeof v16);
#pragma GCC unroll 4
    for (int w = LANES / 2; w > 0; w /= 2) {
#pragma GCC unroll 4
        for (int i = 0; i < w; i++)
            l[i] += l[i + w];
    }
    return l[0];
}

#endif /* the helpers that do not read X */

/* The tiles that read X: XT is the type of its values; a vector of X's values as FLOATs
   (load_x); X_SCALE, what turns them into features. For pixels the scale multiplies a sum
   once, as it is added to what it goes into (a score, an element of gW), not every pixel:
   the bytes 0..255 convert to floats exactly, so only that one rounding is new. */
#ifdef PIXELS
#define XT uint8_t
#define XTILE(name) FASTLR_TILE_NAME(name, FASTLR_CAT(u8_, FLOAT))
#define X_SCALED 1
#define X_SCALE ((FLOAT)(1.0 / 255.0))
/* GCC's vector conversions from bytes go through the stack or a scalar conversion per byte
   (several times slower tiles); the widening instructions each vector width has do it in two
   (vpmovzxbd, vcvtdq2ps), SSE2 in three (two unpacks with zeros, cvtdq2ps). */
static inline VEC XTILE(load_x)(const uint8_t *p) {
    VEC v;
#if VECTOR_BYTES == 64
    if (sizeof(FLOAT) == 4) {
        __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const void *)p)));
        memcpy(&v, &f, sizeof v);
    } else {
        __m512d f = _mm512_cvtepi32_pd(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const void *)p)));
        memcpy(&v, &f, sizeof v);
    }
#elif VECTOR_BYTES == 32
    if (sizeof(FLOAT) == 4) {
        __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const void *)p)));
        memcpy(&v, &f, sizeof v);
    } else {
        int32_t four;
        memcpy(&four, p, sizeof four);
        __m256d f = _mm256_cvtepi32_pd(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(four)));
        memcpy(&v, &f, sizeof v);
    }
#elif VECTOR_BYTES == 16 && defined(__SSE2__)
    if (sizeof(FLOAT) == 4) {
        int32_t four;
        memcpy(&four, p, sizeof four);
        __m128i zero = _mm_setzero_si128();
        __m128i ints = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(four), zero), zero);
        __m128 f = _mm_cvtepi32_ps(ints);
        memcpy(&v, &f, sizeof v);
    } else {
        v[0] = p[0];
        v[1] = p[1];
    }
#else
    for (int i = 0; i < (int)(VECTOR_BYTES / sizeof(FLOAT)); i++)
        v[i] = p[i];
#endif
    return v;
}
#else
#define XT FLOAT
#define XTILE(name) TILE(name)
#define X_SCALED 0
#define X_SCALE ((FLOAT)1)

static inline VEC XTILE(load_x)(const FLOAT *p) { return TILE(load)(p); }
#endif

/* Where a sum over samples into gW starts, and what is stored at its end, for an element
   (or vector) of gW whose contents are old: for float X the sum starts from old (or 0 with
   overwrite) and is stored as it is; for pixels it starts from 0 and old + X_SCALE sum is
   stored. */
static inline FLOAT XTILE(sum_start)(int overwrite, FLOAT old) {
    return X_SCALED || overwrite ? 0 : old;
}

static inline FLOAT XTILE(sum_end)(int overwrite, FLOAT old, FLOAT sum) {
    return X_SCALED ? (overwrite ? 0 : old) + X_SCALE * sum : sum;
}

static inline VEC XTILE(vec_sum_start)(int overwrite, const FLOAT *old) {
    return X_SCALED || overwrite ? (VEC){0} : TILE(load)(old);
}

static inline VEC XTILE(vec_sum_end)(int overwrite, const FLOAT *old, VEC sum) {
    if (!X_SCALED)
        return sum;
    return (overwrite ? (VEC){0} : TILE(load)(old)) + X_SCALE * sum;
}

/* The score tile of the K <= SCORE_TILE classes c0 .. c0 + K - 1: their scores z[j, c] =
   x_j . W[c] + b[c] of the n <= FASTLR_BLOCK samples x_j = xs[j]. Two samples and K classes
   per pass over D (per vector of D, K + 2 loads feed 2 K FMAs); the lanes of each
   accumulator are summed in a fixed order. A block of an odd n repeats its last sample,
   writing the same value twice. Inlined with K a constant, so each K is a tile of its own.
   D is walked in spans of fastlr_score_span bytes, every pair of samples of the block
   through one span before the next, so that the span of the tile's rows of W stays in L1
   (on a 32 KB L1, 1 KB spans: 10 KB of W instead of streaming all 31 KB of it from L2 for
   every pair); where the whole rows fit, one span. The accumulators wait in acc between
   spans: the sums are the same, in the same order, whatever the span. */
static inline __attribute__((always_inline)) void
XTILE(score_tile)(const FLOAT *W, const FLOAT *b, ptrdiff_t C, ptrdiff_t D,
                  const XT *const *xs, ptrdiff_t n, FLOAT *z, ptrdiff_t c0,
                  VEC (*acc)[2 * SCORE_TILE], const int K) {
    enum { LANES = VECTOR_BYTES / sizeof(FLOAT) };
    ptrdiff_t d_main = D - D % LANES;
    ptrdiff_t span = fastlr_score_span(D * (ptrdiff_t)sizeof(FLOAT), K) /
                     (ptrdiff_t)sizeof(FLOAT) / LANES * LANES;
    if (span < LANES)
        span = LANES;
    const FLOAT *w[SCORE_TILE];
    for (int k = 0; k < K; k++)
        w[k] = W + (c0 + k) * D;
    for (ptrdiff_t q0 = 0; q0 < d_main; q0 += span) {
        ptrdiff_t q1 = q0 + span < d_main ? q0 + span : d_main;
        for (ptrdiff_t j = 0; j < n; j += 2) {
            const XT *x0 = xs[j], *x1 = xs[j + 1 < n ? j + 1 : j];
            VEC *a0 = acc[j / 2], *a1 = acc[j / 2] + K;
            VEC acc0[SCORE_TILE], acc1[SCORE_TILE];
#pragma GCC unroll 16
            for (int k = 0; k < K; k++) {
                acc0[k] = q0 ? a0[k] : (VEC){0};
                acc1[k] = q0 ? a1[k] : (VEC){0};
            }
            for (ptrdiff_t d = q0; d < q1; d += LANES) {
                VEC u0 = XTILE(load_x)(x0 + d);
                VEC u1 = XTILE(load_x)(x1 + d);
#pragma GCC unroll 16
                for (int k = 0; k < K; k++) {
                    VEC u = TILE(load)(w[k] + d);
                    KEEP_IN_REGISTER(u);
                    acc0[k] += u * u0;
                    acc1[k] += u * u1;
                }
            }
#pragma GCC unroll 16
            for (int k = 0; k < K; k++) {
                a0[k] = acc0[k];
                a1[k] = acc1[k];
            }
        }
    }
    for (ptrdiff_t j = 0; j < n; j += 2) {
        ptrdiff_t j1 = j + 1 < n ? j + 1 : j;
        const XT *x0 = xs[j], *x1 = xs[j1];
        VEC *a0 = acc[j / 2], *a1 = acc[j / 2] + K;
        if (d_main == 0)
            for (int k = 0; k < K; k++)
                a0[k] = a1[k] = (VEC){0};
        for (ptrdiff_t t = 0; t < D - d_main; t++) {
            for (int k = 0; k < K; k++) {
                a0[k][t] += w[k][d_main + t] * x0[d_main + t];
                a1[k][t] += w[k][d_main + t] * x1[d_main + t];
            }
        }
        for (int k = 0; k < K; k++) {
            z[j * C + c0 + k] = X_SCALE * TILE(lane_sum)(a0[k]) + b[c0 + k];
            z[j1 * C + c0 + k] = X_SCALE * TILE(lane_sum)(a1[k]) + b[c0 + k];
        }
    }
}

/* z (n, C) = x_j W^T + b for the n <= FASTLR_BLOCK samples x_j = xs[j] (D,), W (C, D): tiles
   of SCORE_TILE classes, then one tile of the classes left over (score_tile). */
_Static_assert(SCORE_TILE <= 10, "FASTLR_LEFTOVER_CASES covers up to 9 classes");
static void XTILE(scores)(const FLOAT *W, const FLOAT *b, ptrdiff_t C, ptrdiff_t D,
                          const XT *const *xs, ptrdiff_t n, FLOAT *z) {
    VEC acc[(FASTLR_BLOCK + 1) / 2][2 * SCORE_TILE];
    ptrdiff_t c0 = 0;
    for (; c0 + SCORE_TILE <= C; c0 += SCORE_TILE)
        XTILE(score_tile)(W, b, C, D, xs, n, z, c0, acc, SCORE_TILE);
#define FASTLR_SCORE_TILE(k) XTILE(score_tile)(W, b, C, D, xs, n, z, c0, acc, k)
    switch (C - c0) { FASTLR_LEFTOVER_CASES(FASTLR_SCORE_TILE, SCORE_TILE); }
#undef FASTLR_SCORE_TILE
}

/* The gradient tile of the K <= GRAD_TILE classes whose rows of gW start at rows and whose
   deltas are gc[j * C + k], over the features d0 .. d1 - 1 (d1 - d0 a multiple of V vectors):
   for each V vectors of D, K x V vectors of gW stay in registers for all n samples (per
   sample, V x loads and K broadcasts of g feed K V FMAs), stored once per block instead of
   once per sample; every element adds its n terms one sample at a time, in order, whatever
   K and V. Inlined with K and V constants, so each is a tile of its own with its
   accumulators in registers. With prefetch, the rows xs[n .. n + n_ahead - 1], which come
   next, scattered by the permutation and mostly in DRAM, are asked for into L2 (prefetcht1,
   one per cache line) while this loop runs (compute-bound), so that the scores of the next
   block find them there. */
static inline __attribute__((always_inline)) void
XTILE(grad_tile)(FLOAT *rows, const FLOAT *gc, ptrdiff_t C, ptrdiff_t D, const XT *const *xs,
                 ptrdiff_t n, ptrdiff_t n_ahead, int overwrite, int prefetch, ptrdiff_t d0,
                 ptrdiff_t d1, const int K, const int V) {
    enum { LANES = VECTOR_BYTES / sizeof(FLOAT), LINE = 64 / sizeof(XT) };
    for (ptrdiff_t d = d0; d < d1; d += V * LANES) {
        VEC acc[GRAD_TILE][GRAD_VECTORS];
        if (prefetch)
            for (int v = 0; v < V; v++)
                if ((d + v * LANES) % LINE == 0)
                    for (ptrdiff_t r = 0; r < n_ahead; r++)
                        __builtin_prefetch(xs[n + r] + d + v * LANES, 0, 2);
#pragma GCC unroll 16
        for (int k = 0; k < K; k++)
#pragma GCC unroll 4
            for (int v = 0; v < V; v++)
                acc[k][v] = XTILE(vec_sum_start)(overwrite, rows + k * D + d + v * LANES);
        for (ptrdiff_t j = 0; j < n; j++) {
            VEC xv[GRAD_VECTORS];
#pragma GCC unroll 4
            for (int v = 0; v < V; v++)
                xv[v] = XTILE(load_x)(xs[j] + d + v * LANES);
            const FLOAT *gj = gc + j * C;
#pragma GCC unroll 16
            for (int k = 0; k < K; k++)
#pragma GCC unroll 4
                for (int v = 0; v < V; v++)
                    acc[k][v] += gj[k] * xv[v];
        }
#pragma GCC unroll 16
        for (int k = 0; k < K; k++)
#pragma GCC unroll 4
            for (int v = 0; v < V; v++) {
                FLOAT *at = rows + k * D + d + v * LANES;
                TILE(store)(at, XTILE(vec_sum_end)(overwrite, at, acc[k][v]));
            }
    }
}

/* The K <= GRAD_TILE classes of grad_tile over all of D: tiles of GRAD_VECTORS vectors, then
   of one vector, then the features after the last whole vector one by one. */
static inline __attribute__((always_inline)) void
XTILE(grad_sweep)(FLOAT *rows, const FLOAT *gc, ptrdiff_t C, ptrdiff_t D, const XT *const *xs,
                  ptrdiff_t n, ptrdiff_t n_ahead, int overwrite, int prefetch, const int K) {
    enum { LANES = VECTOR_BYTES / sizeof(FLOAT) };
    ptrdiff_t d_main = D - D % LANES, d_wide = D - D % (GRAD_VECTORS * LANES);
    XTILE(grad_tile)(rows, gc, C, D, xs, n, n_ahead, overwrite, prefetch, 0, d_wide, K,
                     GRAD_VECTORS);
    if (GRAD_VECTORS > 1)
        XTILE(grad_tile)(rows, gc, C, D, xs, n, n_ahead, overwrite, prefetch, d_wide, d_main,
                         K, 1);
    for (ptrdiff_t d = d_main; d < D; d++)
        for (int k = 0; k < K; k++) {
            FLOAT s = XTILE(sum_start)(overwrite, rows[k * D + d]);
            for (ptrdiff_t j = 0; j < n; j++)
                s += gc[j * C + k] * xs[j][d];
            rows[k * D + d] = XTILE(sum_end)(overwrite, rows[k * D + d], s);
        }
}

/* gW (C, D) += sum_j g_j x_j^T and gb (C,) += sum_j g_j over the n samples x_j = xs[j] (D,),
   g (n, C): tiles of GRAD_TILE classes, then one tile of the classes left over (C = 26 with
   tiles of 10: a tile of 6), each a sweep over D (grad_sweep). With overwrite, gW and gb start
   from 0 instead of their contents. The first sweep prefetches the rows xs[n .. n + n_ahead
   - 1] of the next block. */
_Static_assert(GRAD_TILE <= 10, "FASTLR_LEFTOVER_CASES covers up to 9 classes");
static void XTILE(accumulate)(FLOAT *gW, FLOAT *gb, ptrdiff_t C, ptrdiff_t D,
                              const XT *const *xs, ptrdiff_t n, ptrdiff_t n_ahead,
                              int overwrite, const FLOAT *g) {
    ptrdiff_t c0 = 0;
    for (; c0 + GRAD_TILE <= C; c0 += GRAD_TILE)
        XTILE(grad_sweep)(gW + c0 * D, g + c0, C, D, xs, n, n_ahead, overwrite, c0 == 0,
                          GRAD_TILE);
#define FASTLR_GRAD_SWEEP(k) \
    XTILE(grad_sweep)(gW + c0 * D, g + c0, C, D, xs, n, n_ahead, overwrite, c0 == 0, k)
    switch (C - c0) { FASTLR_LEFTOVER_CASES(FASTLR_GRAD_SWEEP, GRAD_TILE); }
#undef FASTLR_GRAD_SWEEP
    for (ptrdiff_t c = 0; c < C; c++) {
        FLOAT s = overwrite ? 0 : gb[c];
        for (ptrdiff_t j = 0; j < n; j++)
            s += g[j * C + c];
        gb[c] = s;
    }
}

#undef XT
#undef XTILE
#undef X_SCALED
#undef X_SCALE

#ifndef PIXELS /* the tiles that do not read X */
/* fastlr_sum_parts_* (kernels.h). out may be parts itself (row 0). */
static void TILE(sum_parts)(const FLOAT *parts, ptrdiff_t T, ptrdiff_t stride, ptrdiff_t j0,
                            ptrdiff_t j1, FLOAT *out) {
    if (out != parts)
        for (ptrdiff_t j = j0; j < j1; j++)
            out[j] = parts[j];
    for (ptrdiff_t t = 1; t < T; t++)
        for (ptrdiff_t j = j0; j < j1; j++)
            out[j] += parts[t * stride + j];
}

/* v = momentum v + (grad + alpha W); W -= lr v for j in j0..j1-1 (v untouched when momentum
   is 0), in float64 and rounded once, as the reference does. */
static void TILE(sgd_update)(FLOAT *W, FLOAT *vel, const FLOAT *grad, ptrdiff_t j0,
                             ptrdiff_t j1, double lr, double momentum, double alpha) {
    if (momentum != 0) {
        for (ptrdiff_t j = j0; j < j1; j++) {
            double v = momentum * vel[j] + ((double)grad[j] + alpha * W[j]);
            vel[j] = (FLOAT)v;
            W[j] = (FLOAT)(W[j] - lr * v);
        }
    } else {
        for (ptrdiff_t j = j0; j < j1; j++)
            W[j] = (FLOAT)(W[j] - lr * ((double)grad[j] + alpha * W[j]));
    }
}

/* fastlr_sum_update_* (kernels.h): the parts summed piece by piece into a buffer on the
   stack, so there are no stores into another thread's part and no second pass. */
static void TILE(sum_update)(FLOAT *W, FLOAT *vel, const FLOAT *parts, ptrdiff_t T,
                             ptrdiff_t stride, ptrdiff_t j0, ptrdiff_t j1, double lr,
                             double momentum, double alpha) {
    enum { PIECE = 256 };
    FLOAT grad[PIECE];
    for (ptrdiff_t p0 = j0; p0 < j1; p0 += PIECE) {
        ptrdiff_t m = j1 - p0 < PIECE ? j1 - p0 : PIECE;
        for (ptrdiff_t j = 0; j < m; j++)
            grad[j] = parts[p0 + j];
        for (ptrdiff_t t = 1; t < T; t++)
            for (ptrdiff_t j = 0; j < m; j++)
                grad[j] += parts[t * stride + p0 + j];
        TILE(sgd_update)(W + p0, vel + p0, grad, 0, m, lr, momentum, alpha);
    }
}

#undef FASTLR_HALVES_ADDED
#endif
#undef VEC
#undef TILE
