/* The AMX level's tiles: the scores and the gradient of a block of uint8 pixels with float
   weights as bf16 tile products (TDPBF16PS), for C <= 16 classes and chunks of at least
   FASTLR_AMX_MIN_CHUNK samples. Everything else (float X, float64 weights, more classes,
   shorter chunks, prediction) runs the v4 tiles at this level. The chunk loop that calls
   these is chunk_grad_amx in kernels_impl.h: per chunk, pack_weights; per block of
   FASTLR_AMX_BLOCK samples, scores, the softmax of the other levels, accumulate.

   The instruction. TDPBF16PS C += A B multiplies tiles of bf16 (the high 16 bits of a
   float32): C is M x N float32, A is M rows of 16 dwords, B is 16 rows of N dwords, and
   each dword holds a PAIR of bf16, so that
       C[m][n] += sum_r A[m][r].low * B[r][n].low + A[m][r].high * B[r][n].high.
   A product of two bf16 is exact in float32; the sums round as float32 additions do.

   The pair trick. A pixel 0..255 is exact in bf16 (8 significant bits), a weight is not:
   bf16 keeps 8 of float32's 24 bits. So each weight w is split into hi, its bf16 truncation
   (bits & 0xFFFF0000), and lo, the bf16 rounded to nearest even of w - hi (which float32
   holds exactly), and a pixel x is put in BOTH halves of its dword: then one pair is
   x * hi + x * lo, the weight to about 16 bits (|w - hi - lo| <= 2^-17 |w|) for the price
   of one bf16 product per pixel and class, and the same pixel pairs serve both products:
     - scores:   S (16 samples x C) += Xp (16 samples x 16 pixels) Wb (16 pixels x C),
                 the pairs of Wb being (hi, lo) of w = W[c, d] / 255;
     - gradient: gW (C x 16 pixels) += Dt (C x 16 samples) Xp (16 samples x 16 pixels),
                 the pairs of Dt being (hi, lo) of the delta G[s, c] / 255.
   The scale 1/255 goes into the split values (not into the pixels), so the pixels stay exact.

   The layouts (uint32 dwords; D16 = D rounded up to 16, P16 = the block's n rounded up to 16):
     Xp (P16, D16)    row s, dword d: bits(float(x[s][d])) | bits >> 16, the pixel in both
                      halves (a float of 0..255 has zero low 16 bits); pixels d >= D and rows
                      s >= n are 0, so the padding adds nothing to either product.
     Wb (D16, 16)     row d, dword c: (hi, lo) of W[c, d] / 255, 0 for d >= D and c >= C: 16
                      rows of it are the B tile of the scores (W transposed, once per chunk,
                      by 16 x 16 transposes in registers; rows padded to 16 classes so that
                      each is one aligned store).
     Dt (P16/16, C, 16)  group g, row c, dword r: (hi, lo) of G[16 g + r, c] / 255, 0 for
                      16 g + r >= n: the A tile of the gradient.
   Xp is never stored whole: each 16 x 16 tile of it is converted from the rows into a
   4 KB staging buffer (4 tiles, and a second buffer so that the next slab's tiles are
   converted while the products of this one run), once for the scores and once again for
   the gradient. Packing the block's Xp once (4 bytes a pixel: 200 KB for 64 samples of
   784, so in L2) and reading it twice was tried, with blocks of 32 to 128: slower than
   converting every tile twice into L1.
   A slab of 16 pixels past D would make the gradient's tile store run into the next row of
   gW, so the last slab goes through a C x 16 scratch (tail) when D is not a multiple of 16.

   Tile registers: the scores hold 4 groups of 16 samples (tmm0-3, 16 x C), one slab of Wb
   (tmm4) and the Xp tiles (tmm5-7, loaded in turn so a load overlaps the product before it);
   the gradient holds 4 slabs of 16 pixels of gW (tmm0-3, C x 16), the block's Dt group
   (tmm4) and the Xp tiles (tmm5-7). The two need different shapes, so each function loads its
   own configuration and releases the tiles at its end (no tile state outlives a call).

   The next block's rows (scattered by the permutation, mostly in DRAM) are prefetched into
   L2 a line at a time, half of them during the scores and half during the gradient: all of
   them during the gradient alone left it waiting for free fill buffers; split, the epoch
   ran faster.

   Variants tried, chosen, why (measured on Sapphire Rapids, MNIST's pixels, C = 10, the AMX
   level against v4 interleaved in one run: docs/journal/xeon-sapphire-rapids.md, "Figures
   moved out of source comments"): the AMX level gains most at batch 1024 and least on short
   chunks; blocks of 64 samples gained more than 32 or 128. Packing W costs a fixed time per
   chunk, more when the other thread has just updated half of W, and on chunks of 32 samples
   (batch 64 on 2 threads) that made the AMX path slower than v4: hence
   FASTLR_AMX_MIN_CHUNK = 64. */
#include "tiles.h"

#if FASTLR_AMX
#pragma GCC target("arch=x86-64-v4,amx-tile,amx-bf16")
#include <immintrin.h>

/* What ldtilecfg reads: palette 1, then for each tile register its bytes per row and its
   rows. */
struct tile_config {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((aligned(64)));

/* GCC's tile loads are asm statements that do not say they read memory (its stores do): this
   barrier keeps the C stores a tile load reads (the staged pixels, the deltas, a tail slab)
   before it, and the stores that overwrite them (the next staging) after it. */
#define MEMORY_BARRIER() __asm__ volatile("" ::: "memory")

static void load_config(struct tile_config *cfg) {
    MEMORY_BARRIER();
    _tile_loadconfig(cfg);
}

/* The products of one step in up to four ways: the staged tiles of words at x (16 x 16
 * dwords each, 256 apart) are loaded into tiles 5, 6, 7 and 5 again, and
 * PRODUCT(acc, tile) adds each one's product with tile 4 into accumulator 0..ways-1. The
 * tile numbers are constants in the instructions, so this is a macro: the scores take the
 * rows as A (FASTLR_ROWS_TIMES_4), the gradient as B (FASTLR_4_TIMES_ROWS). */
#define FASTLR_ROWS_TIMES_4(acc, tile) _tile_dpbf16ps(acc, tile, 4)
#define FASTLR_4_TIMES_ROWS(acc, tile) _tile_dpbf16ps(acc, 4, tile)
#define FASTLR_IN_WAYS(ways, x, PRODUCT)   \
    do {                                   \
        _tile_loadd(5, (x), 64);           \
        PRODUCT(0, 5);                     \
        if ((ways) > 1) {                  \
            _tile_loadd(6, (x) + 256, 64); \
            PRODUCT(1, 6);                 \
        }                                  \
        if ((ways) > 2) {                  \
            _tile_loadd(7, (x) + 512, 64); \
            PRODUCT(2, 7);                 \
        }                                  \
        if ((ways) > 3) {                  \
            _tile_loadd(5, (x) + 768, 64); \
            PRODUCT(3, 5);                 \
        }                                  \
    } while (0)

static inline void shape_tile(struct tile_config *cfg, int tile, ptrdiff_t rows,
                              ptrdiff_t bytes_per_row) {
    cfg->rows[tile] = (uint8_t)rows;
    cfg->colsb[tile] = (uint16_t)bytes_per_row;
}

static inline ptrdiff_t round_up_16(ptrdiff_t n) { return (n + 15) / 16 * 16; }

/* The lanes 0..k-1 of a 16-lane mask, 0 <= k <= 16. */
static inline __mmask16 first_lanes(ptrdiff_t k) {
    return k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << k) - 1);
}

/* The scale of the split values: the features are the pixels / 255. */
static const float PIXEL_SCALE = (float)(1.0 / 255.0);

/* The pair (hi in the low half, lo in the high half) of each of 16 floats v: hi the bf16
   truncation of v, lo the bf16 of v - hi rounded to nearest even (in integers: add 0x7FFF
   and the lowest kept bit, then drop the low 16 bits). */
static inline __m512i bf16_pairs(__m512 v) {
    __m512i hi = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32((int)0xFFFF0000u));
    __m512i rest = _mm512_castps_si512(_mm512_sub_ps(v, _mm512_castsi512_ps(hi)));
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(rest, 16), _mm512_set1_epi32(1));
    __m512i lo = _mm512_srli_epi32(
        _mm512_add_epi32(rest, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))), 16);
    return _mm512_or_si512(_mm512_srli_epi32(hi, 16), _mm512_slli_epi32(lo, 16));
}

/* 16 pixels as 16 dwords with the pixel's bf16 in both halves. */
static inline __m512i pixel_pairs(__m128i bytes) {
    __m512i bits = _mm512_castps_si512(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes)));
    return _mm512_or_si512(bits, _mm512_srli_epi32(bits, 16));
}

/* One Xp tile, staged: the pixels d0..d0+15 of the 16 rows xs[0..15] as pixel pairs, into
   stage (16 x 16 dwords); pixels past D (outside `pixels`) and rows past the first `rows`
   are 0. */
static inline void stage_rows(const uint8_t *const *xs, ptrdiff_t rows, ptrdiff_t d0,
                              __mmask16 pixels, uint32_t *stage) {
    for (int r = 0; r < 16; r++)
        _mm512_store_si512(stage + 16 * r,
                           r < rows ? pixel_pairs(_mm_maskz_loadu_epi8(pixels, xs[r] + d0))
                                    : _mm512_setzero_si512());
}

/* r[0..15] transposed in place, as a 16 x 16 matrix of dwords: within each 128-bit lane,
   pairs of rows interleaved (dwords, then qwords), then the lanes moved across the rows. */
static inline void transpose_16x16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    /* u[4m + q], lane L: column 4L + q of rows 4m..4m+3. */
    __m512i u[16];
    for (int m = 0; m < 16; m += 4) {
        u[m] = _mm512_unpacklo_epi64(t[m], t[m + 2]);
        u[m + 1] = _mm512_unpackhi_epi64(t[m], t[m + 2]);
        u[m + 2] = _mm512_unpacklo_epi64(t[m + 1], t[m + 3]);
        u[m + 3] = _mm512_unpackhi_epi64(t[m + 1], t[m + 3]);
    }
    for (int q = 0; q < 4; q++) {
        __m512i lanes01 = _mm512_shuffle_i32x4(u[q], u[4 + q], 0x44);
        __m512i lanes23 = _mm512_shuffle_i32x4(u[q], u[4 + q], 0xEE);
        __m512i lanes01_hi = _mm512_shuffle_i32x4(u[8 + q], u[12 + q], 0x44);
        __m512i lanes23_hi = _mm512_shuffle_i32x4(u[8 + q], u[12 + q], 0xEE);
        r[q] = _mm512_shuffle_i32x4(lanes01, lanes01_hi, 0x88);
        r[4 + q] = _mm512_shuffle_i32x4(lanes01, lanes01_hi, 0xDD);
        r[8 + q] = _mm512_shuffle_i32x4(lanes23, lanes23_hi, 0x88);
        r[12 + q] = _mm512_shuffle_i32x4(lanes23, lanes23_hi, 0xDD);
    }
}

/* Wb from W, 16 pixels at a time: the pairs of the C rows' 16 weights (rows C..15 zero), a
   16 x 16 transpose in registers, 16 rows of Wb. (Gathering the columns from the pairs
   stored on the stack was tried: a visible part of an epoch at batch 64.) */
static void amx_pack_weights(const float *W, ptrdiff_t C, ptrdiff_t D, uint32_t *Wb) {
    const __m512 scale = _mm512_set1_ps(PIXEL_SCALE);
    for (ptrdiff_t d0 = 0; d0 < D; d0 += 16) {
        __mmask16 pixels = first_lanes(D - d0);
        __m512i slab[16];
        for (int c = 0; c < 16; c++)
            slab[c] = c < C ? bf16_pairs(_mm512_mul_ps(
                                  _mm512_maskz_loadu_ps(pixels, W + c * D + d0), scale))
                            : _mm512_setzero_si512();
        transpose_16x16(slab);
        for (int r = 0; r < 16; r++)
            _mm512_store_si512(Wb + (d0 + r) * FASTLR_AMX_CLASSES, slab[r]);
    }
}

/* The scores of ng <= 4 groups of 16 samples, the rows xs[0..] of which `rows` are real,
   into z (row stride C): a pass over D in slabs of 16 pixels, one load of Wb's slab for the
   ng products. The Xp tiles of slab k + 1 are staged (stage: 2 x 4 x 256 dwords, in turn)
   while the products of slab k run; the rows next[0..n_next-1] are prefetched, a quarter of
   them per slab, one line per four slabs. ng is a constant where it is inlined (the tile
   registers are named in the instructions). */
static inline __attribute__((always_inline)) void scores_of_groups(
    const uint32_t *Wb, ptrdiff_t C, ptrdiff_t D, const uint8_t *const *xs, ptrdiff_t rows,
    const uint8_t *const *next, ptrdiff_t n_next, float *z, uint32_t *stage, const int ng) {
    const ptrdiff_t w_stride = FASTLR_AMX_CLASSES * 4, z_stride = C * 4;
    ptrdiff_t slabs = (D + 15) / 16;
    _tile_zero(0);
    if (ng > 1)
        _tile_zero(1);
    if (ng > 2)
        _tile_zero(2);
    if (ng > 3)
        _tile_zero(3);
    for (int g = 0; g < ng; g++)
        stage_rows(xs + 16 * g, rows - 16 * g, 0, first_lanes(D), stage + 256 * g);
    for (ptrdiff_t k = 0; k < slabs; k++) {
        uint32_t *x = stage + 1024 * (k % 2), *x_next = stage + 1024 * ((k + 1) % 2);
        if (k + 1 < slabs)
            for (int g = 0; g < ng; g++)
                stage_rows(xs + 16 * g, rows - 16 * g, 16 * (k + 1),
                           first_lanes(D - 16 * (k + 1)), x_next + 256 * g);
        for (ptrdiff_t r = k % 4; r < n_next; r += 4) {
            __builtin_prefetch(next[r] + 64 * (k / 4), 0, 2);
            if (64 * (k / 4) + 64 >= D)
                __builtin_prefetch(next[r] + D - 1, 0, 2);
        }
        MEMORY_BARRIER();
        _tile_loadd(4, Wb + 16 * k * FASTLR_AMX_CLASSES, w_stride);
        FASTLR_IN_WAYS(ng, x, FASTLR_ROWS_TIMES_4);
        MEMORY_BARRIER();
    }
    _tile_stored(0, z, z_stride);
    if (ng > 1)
        _tile_stored(1, z + 16 * C, z_stride);
    if (ng > 2)
        _tile_stored(2, z + 32 * C, z_stride);
    if (ng > 3)
        _tile_stored(3, z + 48 * C, z_stride);
}

static void amx_scores(const uint32_t *Wb, const float *b, ptrdiff_t C, ptrdiff_t D,
                       const uint8_t *const *xs, ptrdiff_t n, ptrdiff_t n_ahead, float *z,
                       uint32_t *stage) {
    ptrdiff_t groups = (n + 15) / 16;
    struct tile_config cfg = {.palette = 1};
    for (int t = 0; t < 4; t++)
        shape_tile(&cfg, t, 16, C * 4);
    shape_tile(&cfg, 4, 16, C * 4);
    for (int t = 5; t < 8; t++)
        shape_tile(&cfg, t, 16, 64);
    load_config(&cfg);
    for (ptrdiff_t g = 0; g < groups; g += 4) {
        const uint8_t *const *x = xs + 16 * g;
        ptrdiff_t rows = n - 16 * g;
        float *zg = z + 16 * g * C;
        switch (groups - g) {
        case 1:
            scores_of_groups(Wb, C, D, x, rows, xs + n, g == 0 ? n_ahead / 2 : 0, zg, stage, 1);
            break;
        case 2:
            scores_of_groups(Wb, C, D, x, rows, xs + n, g == 0 ? n_ahead / 2 : 0, zg, stage, 2);
            break;
        case 3:
            scores_of_groups(Wb, C, D, x, rows, xs + n, g == 0 ? n_ahead / 2 : 0, zg, stage, 3);
            break;
        default:
            scores_of_groups(Wb, C, D, x, rows, xs + n, g == 0 ? n_ahead / 2 : 0, zg, stage, 4);
        }
    }
    _tile_release();
    __mmask16 classes = first_lanes(C);
    __m512 bias = _mm512_maskz_loadu_ps(classes, b);
    for (ptrdiff_t j = 0; j < n; j++)
        _mm512_mask_storeu_ps(z + j * C, classes,
                              _mm512_add_ps(_mm512_maskz_loadu_ps(classes, z + j * C), bias));
}

/* Dt from the deltas g (n, C): for each group of 16 samples and each class, the column of
   16 deltas (a gather, stride C) as pairs of g / 255; the samples past n are 0. */
static void pack_deltas(const float *g, ptrdiff_t n, ptrdiff_t C, uint32_t *Dt) {
    const __m512i sample_offsets = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32((int)C));
    const __m512 scale = _mm512_set1_ps(PIXEL_SCALE);
    for (ptrdiff_t s0 = 0; s0 < n; s0 += 16) {
        __mmask16 samples = first_lanes(n - s0);
        for (ptrdiff_t c = 0; c < C; c++) {
            __m512 column = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), samples,
                                                     sample_offsets, g + s0 * C + c, 4);
            _mm512_store_si512(Dt + (s0 / 16 * C + c) * 16,
                               bf16_pairs(_mm512_mul_ps(column, scale)));
        }
    }
}

/* The B tiles of group g for the slabs d0, d0 + 16, ... (ns of them) of the gradient,
   staged into stage + 256 j. */
static inline __attribute__((always_inline)) void stage_group(const uint8_t *const *xs,
                                                              ptrdiff_t n, ptrdiff_t D,
                                                              ptrdiff_t g, ptrdiff_t d0,
                                                              uint32_t *stage, const int ns) {
    for (int j = 0; j < ns; j++)
        stage_rows(xs + 16 * g, n - 16 * g, d0 + 16 * j, first_lanes(D - d0 - 16 * j),
                   stage + 256 * j);
}

/* ns <= 4 slabs of 16 pixels of gW, from pixel d0, over the block's groups of 16 samples:
   each slab's C x 16 sums stay in a tile register for the whole block, loaded from gW (or
   zero with overwrite) and stored back once. A slab that would end past D goes through
   tail. The B tiles of group g + 1 are staged while the products of group g run, and the
   line d0..d0+63 of the next block's rows next[0..n_next-1] is prefetched, spread over the
   groups. ns is a constant where it is inlined. */
static inline __attribute__((always_inline)) void gradient_of_slabs(
    float *gW, ptrdiff_t C, ptrdiff_t D, const uint8_t *const *xs, ptrdiff_t n,
    const uint8_t *const *next, ptrdiff_t n_next, const uint32_t *Dt, int overwrite,
    uint32_t *stage, float *tail, ptrdiff_t d0, const int ns) {
    ptrdiff_t groups = (n + 15) / 16;
    float *out[4];
    ptrdiff_t out_stride[4];
    ptrdiff_t in_tail = -1; /* the first pixel of the slab that goes through tail */
    for (int j = 0; j < ns; j++) {
        ptrdiff_t d = d0 + 16 * j;
        if (d + 16 <= D) {
            out[j] = gW + d;
            out_stride[j] = D * 4;
        } else {
            in_tail = d;
            out[j] = tail;
            out_stride[j] = 64;
            if (!overwrite)
                for (ptrdiff_t c = 0; c < C; c++)
                    for (ptrdiff_t t = 0; t < 16; t++)
                        tail[c * 16 + t] = d + t < D ? gW[c * D + d + t] : 0.0f;
        }
    }
    stage_group(xs, n, D, 0, d0, stage, ns);
    MEMORY_BARRIER();
#define FASTLR_START_SLAB(j)                       \
    do {                                           \
        if (overwrite)                             \
            _tile_zero(j);                         \
        else                                       \
            _tile_loadd(j, out[j], out_stride[j]); \
    } while (0)
    FASTLR_START_SLAB(0);
    if (ns > 1)
        FASTLR_START_SLAB(1);
    if (ns > 2)
        FASTLR_START_SLAB(2);
    if (ns > 3)
        FASTLR_START_SLAB(3);
#undef FASTLR_START_SLAB
    for (ptrdiff_t g = 0; g < groups; g++) {
        uint32_t *x = stage + 1024 * (g % 2);
        if (g + 1 < groups)
            stage_group(xs, n, D, g + 1, d0, stage + 1024 * ((g + 1) % 2), ns);
        for (ptrdiff_t r = n_next * g / groups; r < n_next * (g + 1) / groups; r++) {
            __builtin_prefetch(next[r] + d0, 0, 2);
            if (d0 + 64 >= D)
                __builtin_prefetch(next[r] + D - 1, 0, 2);
        }
        MEMORY_BARRIER();
        _tile_loadd(4, Dt + g * C * 16, 64);
        FASTLR_IN_WAYS(ns, x, FASTLR_4_TIMES_ROWS);
        MEMORY_BARRIER();
    }
    _tile_stored(0, out[0], out_stride[0]);
    if (ns > 1)
        _tile_stored(1, out[1], out_stride[1]);
    if (ns > 2)
        _tile_stored(2, out[2], out_stride[2]);
    if (ns > 3)
        _tile_stored(3, out[3], out_stride[3]);
    if (in_tail >= 0)
        for (ptrdiff_t c = 0; c < C; c++)
            for (ptrdiff_t t = 0; in_tail + t < D; t++)
                gW[c * D + in_tail + t] = tail[c * 16 + t];
}

static void amx_accumulate(float *gW, float *gb, ptrdiff_t C, ptrdiff_t D,
                           const uint8_t *const *xs, ptrdiff_t n, ptrdiff_t n_ahead,
                           int overwrite, const float *g, uint32_t *Dt, uint32_t *stage,
                           float *tail) {
    ptrdiff_t D16 = round_up_16(D);
    pack_deltas(g, n, C, Dt);
    /* gb: each class's deltas added sample by sample, all classes in one vector (a chain
       of n adds instead of C of them). */
    __mmask16 classes = first_lanes(C);
    __m512 sum_b = overwrite ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(classes, gb);
    for (ptrdiff_t j = 0; j < n; j++)
        sum_b = _mm512_add_ps(sum_b, _mm512_maskz_loadu_ps(classes, g + j * C));
    _mm512_mask_storeu_ps(gb, classes, sum_b);
    struct tile_config cfg = {.palette = 1};
    for (int t = 0; t < 5; t++)
        shape_tile(&cfg, t, C, 64);
    for (int t = 5; t < 8; t++)
        shape_tile(&cfg, t, 16, 64);
    load_config(&cfg);
    const uint8_t *const *next = xs + n + n_ahead / 2;
    n_ahead -= n_ahead / 2;
    for (ptrdiff_t d0 = 0; d0 < D16; d0 += 64) {
        switch ((D16 - d0) / 16) {
        case 1:
            gradient_of_slabs(gW, C, D, xs, n, next, n_ahead, Dt, overwrite, stage, tail, d0, 1);
            break;
        case 2:
            gradient_of_slabs(gW, C, D, xs, n, next, n_ahead, Dt, overwrite, stage, tail, d0, 2);
            break;
        case 3:
            gradient_of_slabs(gW, C, D, xs, n, next, n_ahead, Dt, overwrite, stage, tail, d0, 3);
            break;
        default:
            gradient_of_slabs(gW, C, D, xs, n, next, n_ahead, Dt, overwrite, stage, tail, d0, 4);
        }
    }
    _tile_release();
}

const struct fastlr_amx_tiles fastlr_amx_tiles = {
    .pack_weights = amx_pack_weights,
    .scores = amx_scores,
    .accumulate = amx_accumulate,
};
#endif
