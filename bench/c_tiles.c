/* The C kernels' tiles timed in isolation, on this CPU: the score tile, the gradient tile and
   the softmax's exponentials of one block of FASTLR_BLOCK samples (MNIST's shape, D = 784 and
   C = 10, unless -DN_FEATURES=... -DN_CLASSES=... choose another), rows in cache, for every
   instruction set this CPU runs, float X and uint8 pixels.

       gcc -O3 -Ifastlr/csrc [-DN_CLASSES=345] bench/c_tiles.c fastlr/csrc/dispatch.c \
           fastlr/csrc/tiles_v4.c fastlr/csrc/tiles_v3.c fastlr/csrc/tiles_base.c \
           -o /tmp/c_tiles && /tmp/c_tiles

   Each figure is the fastest of CALLS calls: on a shared machine the fastest call is the one
   no other process interrupted. There are no hardware counters in a virtual machine without
   a PMU (perf stat: "not supported"), so this is how the kernels are profiled there;
   "ms/epoch" is the time of the 60,000 / FASTLR_BLOCK blocks of an epoch on one thread. The
   block is the kernels' own (the score tile keeps the accumulators of that many samples). */
#include <stdio.h>
#include <stdlib.h>

#include "tiles.h"
#include "timing.h"

#ifndef N_FEATURES
#define N_FEATURES 784
#endif
#ifndef N_CLASSES
#define N_CLASSES 10
#endif
enum { N_BLOCK = FASTLR_BLOCK, D = N_FEATURES, C = N_CLASSES, CALLS = 2000 };
#define LINE_ALIGNED __attribute__((aligned(64)))

static void report(const char *what, double s) {
    double gflops = 2.0 * N_BLOCK * C * D / s / 1e9;
    printf("  %-22s %6.2f us  %6.1f GFLOP/s  %5.1f ms/epoch\n", what, s * 1e6, gflops,
           s * 60000.0 / N_BLOCK * 1e3);
}

int main(void) {
    /* Rows that start on a cache line (784 floats are 49 lines): with X and W 16 bytes off
       a line, every vector load straddles two lines and the float tiles run 1.4x slower. */
    static float X[N_BLOCK * D] LINE_ALIGNED, W[C * D] LINE_ALIGNED, gW[C * D] LINE_ALIGNED;
    static float z[N_BLOCK * C];
    static uint8_t pixels[N_BLOCK * D] LINE_ALIGNED;
    static double ex[N_BLOCK * C];
    float b[C] = {0}, gb[C];
    const float *xs[2 * N_BLOCK];
    const uint8_t *ps[2 * N_BLOCK];
    for (int i = 0; i < N_BLOCK * D; i++) {
        pixels[i] = (uint8_t)(i * 7 % 256);
        X[i] = pixels[i] / 255.0f;
    }
    for (int i = 0; i < C * D; i++)
        W[i] = (i % 17) * 0.01f;
    for (int j = 0; j < 2 * N_BLOCK; j++) {
        xs[j] = X + (j % N_BLOCK) * D;
        ps[j] = pixels + (j % N_BLOCK) * D;
    }
    fastlr_dispatch_init();
    const struct fastlr_tiles *levels[] = {
#if FASTLR_MULTI_ISA
        &fastlr_tiles_v4, &fastlr_tiles_v3,
#endif
        &fastlr_tiles_base};
    printf("one block: %d samples x %d features x %d classes; score span %td bytes\n", N_BLOCK,
           D, C, fastlr_score_span(D * sizeof(float), 10));
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        const struct fastlr_tiles *t = levels[i];
        if (t->isa_level > fastlr_best_isa_level())
            continue;
        double s;
        printf("ISA level %d\n", t->isa_level);
        FASTEST(s, CALLS, t->scores_float(W, b, C, D, xs, N_BLOCK, z));
        report("scores", s);
        FASTEST(s, CALLS, t->accumulate_float(gW, gb, C, D, xs, N_BLOCK, N_BLOCK, 0, z));
        report("gradient (+prefetch)", s);
        FASTEST(s, CALLS, t->scores_u8_float(W, b, C, D, ps, N_BLOCK, z));
        report("scores, uint8", s);
        FASTEST(s, CALLS, t->accumulate_u8_float(gW, gb, C, D, ps, N_BLOCK, N_BLOCK, 0, z));
        report("gradient, uint8", s);
        FASTEST(s, CALLS, {
            for (int k = 0; k < N_BLOCK * C; k++)
                ex[k] = -(k % 30) * 0.5;
            t->exp_nonpositive(ex, N_BLOCK * C);
        });
        printf("  %-22s %6.2f us  (with refilling its input)\n", "exp of the block", s * 1e6);
    }
    return 0;
}
