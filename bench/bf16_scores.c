/* Whether AVX512-BF16 pays for the score tile on this CPU: one block of 64 MNIST-shaped samples
   (D = 784, C = 10), rows in cache, scored by the C kernels' fp32 tile (float X and uint8 X,
   x86-64-v4) against a tile of the same shape (2 samples x 10 classes of accumulators) built
   on vdpbf16ps, which multiplies 32 bfloat16 pairs into 16 fp32 sums per instruction, twice
   an fp32 FMA's products: from uint8 rows (widened to fp32, then packed to bf16, in the loop)
   and from rows already stored as bf16 (the best case: no conversion at all). W is rounded to
   bf16 once per call, as a mixed-precision step would once per SGD step; pixels 0-255 are
   exact in bf16.

       gcc -O3 -march=sapphirerapids -Ifastlr/csrc -c bench/bf16_scores.c -o /tmp/bf16.o &&
       gcc -O3 -Ifastlr/csrc /tmp/bf16.o fastlr/csrc/dispatch.c fastlr/csrc/tiles_v4.c \
           fastlr/csrc/tiles_v3.c fastlr/csrc/tiles_base.c -o /tmp/bf16_scores && /tmp/bf16_scores

   (only on a CPU with AVX512-BF16). The fastest of 3000 calls each. */
#include <immintrin.h>
#include <math.h>
#include <stdio.h>

#include "tiles.h"
#include "timing.h"

enum { N_BLOCK = 64, D = 784, C = 10, CALLS = 3000, SPANS = (D + 31) / 32 };
#define LINE_ALIGNED __attribute__((aligned(64)))

static void report(const char *what, double s) {
    printf("  %-30s %6.2f us  %6.1f GFLOP/s\n", what, s * 1e6, 2.0 * N_BLOCK * C * D / s / 1e9);
}

/* The 16 floats from p, zeros past D. */
static inline __m512 floats16(const float *row, int d) {
    return d < D ? _mm512_loadu_ps(row + d) : _mm512_setzero_ps();
}

/* W (C, D) as bf16, 32 features per vector, zero-padded to SPANS * 32. */
static void weights_to_bf16(const float *W, __m512bh *Wb) {
    for (int c = 0; c < C; c++)
        for (int q = 0; q < SPANS; q++)
            Wb[c * SPANS + q] = _mm512_cvtne2ps_pbh(floats16(W + c * D, 32 * q + 16),
                                                    floats16(W + c * D, 32 * q));
}

/* 32 pixels from p as bf16, in the lane order of weights_to_bf16; the last span has 16. */
static inline __m512bh pixels_to_bf16(const uint8_t *p, int last) {
    __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)));
    __m512 hi = last ? _mm512_setzero_ps()
                     : _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                           _mm_loadu_si128((const __m128i *)(p + 16))));
    return _mm512_cvtne2ps_pbh(hi, lo);
}

/* z (n, C) = x W^T / 255 + b for uint8 rows xs[j] (n even), bf16 products, fp32 sums. */
static void scores_bf16_from_pixels(const __m512bh *Wb, const float *b, const uint8_t *const *xs,
                                    int n, float *z) {
    for (int j = 0; j < n; j += 2) {
        __m512 a0[C], a1[C];
        for (int k = 0; k < C; k++)
            a0[k] = a1[k] = _mm512_setzero_ps();
        for (int q = 0; q < SPANS; q++) {
            int last = 32 * q + 16 >= D;
            __m512bh u0 = pixels_to_bf16(xs[j] + 32 * q, last);
            __m512bh u1 = pixels_to_bf16(xs[j + 1] + 32 * q, last);
            for (int k = 0; k < C; k++) {
                a0[k] = _mm512_dpbf16_ps(a0[k], u0, Wb[k * SPANS + q]);
                a1[k] = _mm512_dpbf16_ps(a1[k], u1, Wb[k * SPANS + q]);
            }
        }
        for (int k = 0; k < C; k++) {
            z[j * C + k] = _mm512_reduce_add_ps(a0[k]) / 255.0f + b[k];
            z[(j + 1) * C + k] = _mm512_reduce_add_ps(a1[k]) / 255.0f + b[k];
        }
    }
}

/* The same from rows stored as bf16 (SPANS vectors each). */
static void scores_bf16_from_bf16(const __m512bh *Wb, const float *b, const __m512bh *const *xs,
                                  int n, float *z) {
    for (int j = 0; j < n; j += 2) {
        __m512 a0[C], a1[C];
        for (int k = 0; k < C; k++)
            a0[k] = a1[k] = _mm512_setzero_ps();
        for (int q = 0; q < SPANS; q++)
            for (int k = 0; k < C; k++) {
                a0[k] = _mm512_dpbf16_ps(a0[k], xs[j][q], Wb[k * SPANS + q]);
                a1[k] = _mm512_dpbf16_ps(a1[k], xs[j + 1][q], Wb[k * SPANS + q]);
            }
        for (int k = 0; k < C; k++) {
            z[j * C + k] = _mm512_reduce_add_ps(a0[k]) / 255.0f + b[k];
            z[(j + 1) * C + k] = _mm512_reduce_add_ps(a1[k]) / 255.0f + b[k];
        }
    }
}

int main(void) {
    static float X[N_BLOCK * D] LINE_ALIGNED, W[C * D] LINE_ALIGNED;
    static uint8_t pixels[N_BLOCK * D + 64] LINE_ALIGNED;
    static __m512bh Wb[C * SPANS], Xb[N_BLOCK * SPANS];
    static float z[N_BLOCK * C], z_bf16[N_BLOCK * C];
    float b[C] = {0}, row[SPANS * 32];
    const float *xs[N_BLOCK];
    const uint8_t *ps[N_BLOCK];
    const __m512bh *bs[N_BLOCK];
    for (int i = 0; i < N_BLOCK * D; i++) {
        pixels[i] = (uint8_t)(i * 7 % 256);
        X[i] = pixels[i] / 255.0f;
    }
    for (int i = 0; i < C * D; i++)
        W[i] = ((i % 17) - 8) * 0.01f;
    for (int j = 0; j < N_BLOCK; j++) {
        xs[j] = X + j * D;
        ps[j] = pixels + j * D;
        bs[j] = Xb + j * SPANS;
        for (int d = 0; d < SPANS * 32; d++)
            row[d] = d < D ? pixels[j * D + d] : 0.0f;
        for (int q = 0; q < SPANS; q++)
            Xb[j * SPANS + q] = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + 32 * q + 16),
                                                    _mm512_loadu_ps(row + 32 * q));
    }
    fastlr_dispatch_init();
    const struct fastlr_tiles *t = &fastlr_tiles_v4;
    double s;
    printf("one block: %d samples x %d features x %d classes, in cache\n", N_BLOCK, D, C);
    FASTEST(s, CALLS, t->scores_float(W, b, C, D, xs, N_BLOCK, z));
    report("fp32 FMA tile, float X", s);
    FASTEST(s, CALLS, t->scores_u8_float(W, b, C, D, ps, N_BLOCK, z));
    report("fp32 FMA tile, uint8 X", s);
    FASTEST(s, CALLS, weights_to_bf16(W, Wb));
    printf("  %-30s %6.2f us\n", "W rounded to bf16", s * 1e6);
    FASTEST(s, CALLS, scores_bf16_from_pixels(Wb, b, ps, N_BLOCK, z_bf16));
    report("vdpbf16ps tile, uint8 X", s);
    double error = 0, largest = 0;
    for (int i = 0; i < N_BLOCK * C; i++) {
        error = fmax(error, fabs(z_bf16[i] - z[i]));
        largest = fmax(largest, fabs(z[i]));
    }
    FASTEST(s, CALLS, scores_bf16_from_bf16(Wb, b, bs, N_BLOCK, z_bf16));
    report("vdpbf16ps tile, bf16 X", s);
    printf("  largest |bf16 score - fp32 score| %.2g, of scores up to %.2g\n", error, largest);
    return 0;
}
