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

/* Names in the templates: FASTLR_CAT(scores_, FLOAT) is scores_float when FLOAT is float. */
#define FASTLR_CAT_(a, b) a##b
#define FASTLR_CAT(a, b) FASTLR_CAT_(a, b)
/* In the translation unit of one ISA: fastlr_scores_v4_float for (scores, float). */
#define FASTLR_TILE_NAME(name, type) \
    FASTLR_CAT(FASTLR_CAT(fastlr_##name##_, ISA), FASTLR_CAT(_, type))

#endif
