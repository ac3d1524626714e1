/* The loops that do nearly all the arithmetic ("tiles"), as one table of functions per
   instruction set. tiles_impl.h is the source, written once; tiles_v4.c, tiles_v3.c and
   tiles_base.c compile it for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and the x86-64
   baseline (SSE2), each into its table; dispatch.c points fastlr_active_tiles at the one
   that runs. So one build runs on every x86-64, the extension itself needs no -march flag,
   and every level can be tested on a CPU that has the highest one.

   Shapes as in kernels.h. Each function exists for float and double (suffix); the two that
   read X also for uint8 pixels (u8_float, u8_double). */
#ifndef FASTLR_TILES_H
#define FASTLR_TILES_H

#include <string.h>

#include "kernels.h"

/* The v4 and v3 tiles need GCC's target pragma with x86-64-v* names (GCC 12) on x86-64;
   elsewhere (other compilers, other CPUs) only the baseline is built. */
#if defined(__GNUC__) && __GNUC__ >= 12 && !defined(__clang__) && defined(__x86_64__) \
    && defined(__linux__)
#define FASTLR_MULTI_ISA 1
#else
#define FASTLR_MULTI_ISA 0
#endif

/* The intrinsics that widen uint8 pixels to floats in the tiles. */
#if FASTLR_MULTI_ISA
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The scores walk D in spans of fastlr_score_span(...) bytes (kernels.h, tiles_impl.h). */

struct fastlr_tiles {
    int isa_level;  /* 4, 3 or 1, as in fastlr_isa_level */
    /* z (n, C) = x_j W^T + b for the n samples x_j = xs[j] (D,). */
    void (*scores_float)(const float *W, const float *b, ptrdiff_t C, ptrdiff_t D,
                         const float *const *xs, ptrdiff_t n, float *z);
    void (*scores_double)(const double *W, const double *b, ptrdiff_t C, ptrdiff_t D,
                          const double *const *xs, ptrdiff_t n, double *z);
    /* gW (C, D) += sum_j g_j x_j^T and gb (C,) += sum_j g_j over the n samples x_j = xs[j],
       g (n, C); with overwrite, from 0 instead. The n_ahead rows xs[n], xs[n + 1], ...
       come next and are prefetched. */
    void (*accumulate_float)(float *gW, float *gb, ptrdiff_t C, ptrdiff_t D,
                             const float *const *xs, ptrdiff_t n, ptrdiff_t n_ahead,
                             int overwrite, const float *g);
    void (*accumulate_double)(double *gW, double *gb, ptrdiff_t C, ptrdiff_t D,
                              const double *const *xs, ptrdiff_t n, ptrdiff_t n_ahead,
                              int overwrite, const double *g);
    /* The same two for X of uint8 pixels, whose features are X / 255. */
    void (*scores_u8_float)(const float *W, const float *b, ptrdiff_t C, ptrdiff_t D,
                            const uint8_t *const *xs, ptrdiff_t n, float *z);
    void (*scores_u8_double)(const double *W, const double *b, ptrdiff_t C, ptrdiff_t D,
                             const uint8_t *const *xs, ptrdiff_t n, double *z);
    void (*accumulate_u8_float)(float *gW, float *gb, ptrdiff_t C, ptrdiff_t D,
                                const uint8_t *const *xs, ptrdiff_t n, ptrdiff_t n_ahead,
                                int overwrite, const float *g);
    void (*accumulate_u8_double)(double *gW, double *gb, ptrdiff_t C, ptrdiff_t D,
                                 const uint8_t *const *xs, ptrdiff_t n, ptrdiff_t n_ahead,
                                 int overwrite, const double *g);
    /* fastlr_sum_parts_* and fastlr_sum_update_* of kernels.h. */
    void (*sum_parts_float)(const float *parts, ptrdiff_t T, ptrdiff_t stride, ptrdiff_t j0,
                            ptrdiff_t j1, float *out);
    void (*sum_parts_double)(const double *parts, ptrdiff_t T, ptrdiff_t stride,
                             ptrdiff_t j0, ptrdiff_t j1, double *out);
    void (*sum_update_float)(float *W, float *vel, const float *parts, ptrdiff_t T,
                             ptrdiff_t stride, ptrdiff_t j0, ptrdiff_t j1, double lr,
                             double momentum, double alpha);
    void (*sum_update_double)(double *W, double *vel, const double *parts, ptrdiff_t T,
                              ptrdiff_t stride, ptrdiff_t j0, ptrdiff_t j1, double lr,
                              double momentum, double alpha);
    /* v[i] = exp(v[i]) for n arguments v[i] <= 0, in float64, within a few ulp. */
    void (*exp_nonpositive)(double *v, ptrdiff_t n);
};

extern const struct fastlr_tiles fastlr_tiles_base;
#if FASTLR_MULTI_ISA
extern const struct fastlr_tiles fastlr_tiles_v3, fastlr_tiles_v4;
#endif

/* The table the kernels call (dispatch.c). */
extern const struct fastlr_tiles *fastlr_active_tiles;

/* The AMX tiles (tiles_amx.c) need GCC to accept the amx-tile and amx-bf16 targets, which
   setup.py probes (it defines FASTLR_COMPILER_HAS_AMX). */
#if FASTLR_MULTI_ISA && defined(FASTLR_COMPILER_HAS_AMX)
#define FASTLR_AMX 1
#else
#define FASTLR_AMX 0
#endif

/* Samples per block of the AMX path (a multiple of 16, the rows of a tile), the fewest
   samples of a chunk it takes (shorter chunks take the v4 tiles), and the most classes (the
   columns of one tile); tiles_amx.c says why these. */
enum { FASTLR_AMX_BLOCK = 64, FASTLR_AMX_MIN_CHUNK = 64, FASTLR_AMX_CLASSES = 16 };

/* The bf16 tile products of the AMX level, for X of uint8 pixels with float weights and
   C <= FASTLR_AMX_CLASSES; the chunk loop that calls them is in kernels_impl.h. P16 and D16
   are n and D rounded up to multiples of 16; Wb (D16, 16) and Dt (P16 / 16, C, 16) are uint32
   pairs of bf16, laid out as tiles_amx.c describes. */
struct fastlr_amx_tiles {
    /* Wb from W (C, D): the bf16 pair (hi, lo) of each W[c, d] / 255. */
    void (*pack_weights)(const float *W, ptrdiff_t C, ptrdiff_t D, uint32_t *Wb);
    /* z (n, C) = x_j W^T / 255 + b for the n <= FASTLR_AMX_BLOCK samples x_j = xs[j] (D,);
       z has room for P16 rows; stage is scratch. The n_ahead rows xs[n], xs[n + 1], ...
       come next: the first half of them is prefetched here, the rest by accumulate. */
    void (*scores)(const uint32_t *Wb, const float *b, ptrdiff_t C, ptrdiff_t D,
                   const uint8_t *const *xs, ptrdiff_t n, ptrdiff_t n_ahead, float *z,
                   uint32_t *stage);
    /* gW (C, D) += sum_j g_j x_j^T / 255 and gb (C,) += sum_j g_j over the same samples,
       g (n, C); with overwrite, from 0 instead. Of the n_ahead rows that come next, the
       second half is prefetched. Dt, stage and tail are scratch. */
    void (*accumulate)(float *gW, float *gb, ptrdiff_t C, ptrdiff_t D,
                       const uint8_t *const *xs, ptrdiff_t n, ptrdiff_t n_ahead, int overwrite,
                       const float *g, uint32_t *Dt, uint32_t *stage, float *tail);
};

#if FASTLR_AMX
extern const struct fastlr_amx_tiles fastlr_amx_tiles;
#endif

/* A thread's scratch as the AMX chunk loop uses it, each piece on cache lines of its own: the
   block's scores z (FASTLR_AMX_BLOCK, C), then its deltas in place; the exponentials of
   FASTLR_BLOCK samples (the softmax takes the block in pieces of FASTLR_BLOCK); Wb, Dt, the
   staging buffers of the pixel tiles (2 x 4 tiles of 16 x 16 dwords) and the gradient's tail
   slab. */
struct fastlr_amx_scratch {
    float *z;
    double *ex;
    uint32_t *Wb, *Dt, *stage;
    float *tail;
};

/* Lays out the pieces from base (any address) and returns the bytes they take from base up;
   with base 0, an upper bound for any base. */
static inline ptrdiff_t fastlr_amx_scratch(uintptr_t base, ptrdiff_t C, ptrdiff_t D,
                                           struct fastlr_amx_scratch *s) {
    ptrdiff_t D16 = (D + 15) / 16 * 16, P = FASTLR_AMX_BLOCK;
    uintptr_t at = base;
#define FASTLR_AMX_PIECE(field, type, count)                  \
    at = (at + 63) / 64 * 64;                                 \
    s->field = (type *)at;                                    \
    at += (uintptr_t)(count) * sizeof(type)
    FASTLR_AMX_PIECE(z, float, P * C);
    FASTLR_AMX_PIECE(ex, double, FASTLR_BLOCK * C);
    FASTLR_AMX_PIECE(Wb, uint32_t, D16 * FASTLR_AMX_CLASSES);
    FASTLR_AMX_PIECE(Dt, uint32_t, P * C);
    FASTLR_AMX_PIECE(stage, uint32_t, 2 * 4 * 16 * 16);
    FASTLR_AMX_PIECE(tail, float, 16 * C);
#undef FASTLR_AMX_PIECE
    return (ptrdiff_t)(at - base) + (base == 0 ? 63 : 0);
}

/* The AMX tiles the kernels call, or NULL below the AMX level (dispatch.c). */
extern const struct fastlr_amx_tiles *fastlr_active_amx;

/* The switch cases of a tile of the classes left over after the full tiles of `width`
   classes: case k calls tile(k) for k = 1 .. min(9, width - 1), so that each count is a
   tile with its own constant K (the tiles are inlined), its accumulators in registers; 0 left
   over does nothing. */
#define FASTLR_LEFTOVER_CASE(tile, k, width) \
    case k:                                  \
        if (k < (width))                     \
            tile(k);                         \
        break
#define FASTLR_LEFTOVER_CASES(tile, width)   \
    FASTLR_LEFTOVER_CASE(tile, 1, width);    \
    FASTLR_LEFTOVER_CASE(tile, 2, width);    \
    FASTLR_LEFTOVER_CASE(tile, 3, width);    \
    FASTLR_LEFTOVER_CASE(tile, 4, width);    \
    FASTLR_LEFTOVER_CASE(tile, 5, width);    \
    FASTLR_LEFTOVER_CASE(tile, 6, width);    \
    FASTLR_LEFTOVER_CASE(tile, 7, width);    \
    FASTLR_LEFTOVER_CASE(tile, 8, width);    \
    FASTLR_LEFTOVER_CASE(tile, 9, width);    \
    default:                                 \
        break

/* Names in the templates: FASTLR_CAT(scores_, FLOAT) is scores_float when FLOAT is float. */
#define FASTLR_CAT_(a, b) a##b
#define FASTLR_CAT(a, b) FASTLR_CAT_(a, b)
/* In the translation unit of one ISA: fastlr_scores_v4_float for (scores, float). */
#define FASTLR_TILE_NAME(name, type) \
    FASTLR_CAT(FASTLR_CAT(fastlr_##name##_, ISA), FASTLR_CAT(_, type))

#endif
