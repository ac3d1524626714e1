/* How fast one core reads rows of X in an epoch's random order, with no arithmetic to hide
   behind: the rows of a 60,000 x 784 float32 array summed in order and in a random order,
   without and with software prefetches of the rows some samples ahead (into L2, prefetcht1,
   and into L1, prefetcht0), on 1 and 2 threads.

       gcc -O3 -march=native -fopenmp bench/row_gather.c -o /tmp/row_gather && /tmp/row_gather 2

   The fastest of 7 runs of each (on a shared machine the fastest is the one no other process
   interrupted). It is the memory side of an epoch: the bytes of X an epoch must read, and the
   rate this machine can deliver them at in the order SGD asks for them. */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "timing.h"

enum { N = 60000, D = 784, LINES = D * 4 / 64 };

/* The sum of rows perm[lo..hi-1], asking `ahead` rows ahead for every line of the row with
   `hint` (0: no prefetch). */
static float sum_rows(const float *X, const int64_t *perm, int lo, int hi, int hint, int ahead) {
    __m512 acc = _mm512_setzero_ps();
    for (int i = lo; i < hi; i++) {
        if (hint && i + ahead < hi) {
            const char *next = (const char *)(X + perm[i + ahead] * D);
            for (int l = 0; l < LINES; l++) {
                if (hint == 1)
                    _mm_prefetch(next + 64 * l, _MM_HINT_T1);
                else
                    _mm_prefetch(next + 64 * l, _MM_HINT_T0);
            }
        }
        const float *x = X + perm[i] * D;
        for (int d = 0; d < D; d += 16)
            acc = _mm512_add_ps(acc, _mm512_load_ps(x + d));
    }
    return _mm512_reduce_add_ps(acc);
}

int main(int argc, char **argv) {
    int T = argc > 1 ? atoi(argv[1]) : 1;
    float *X = aligned_alloc(64, (size_t)N * D * sizeof(float));
    int64_t *in_order = malloc(N * sizeof(int64_t)), *shuffled = malloc(N * sizeof(int64_t));
    if (!X || !in_order || !shuffled)
        return 1;
    for (size_t i = 0; i < (size_t)N * D; i++)
        X[i] = (float)(i % 7);
    for (int i = 0; i < N; i++)
        in_order[i] = shuffled[i] = i;
    srand(1);
    for (int i = N - 1; i > 0; i--) {
        int j = rand() % (i + 1);
        int64_t t = shuffled[i];
        shuffled[i] = shuffled[j];
        shuffled[j] = t;
    }
    struct {
        const char *name;
        const int64_t *perm;
        int hint, ahead;
    } cases[] = {{"in order, no prefetch", in_order, 0, 0},
                 {"random, no prefetch", shuffled, 0, 0},
                 {"random, L2 4 rows ahead", shuffled, 1, 4},
                 {"random, L2 16 rows ahead", shuffled, 1, 16},
                 {"random, L1 4 rows ahead", shuffled, 2, 4},
                 {"random, L1 16 rows ahead", shuffled, 2, 16}};
    enum { CASES = sizeof cases / sizeof cases[0] };
    double best[CASES];
    float sink = 0;
    for (int r = 0; r < 7; r++)
        for (int c = 0; c < CASES; c++) {
            double start = seconds();
            float total = 0;
#pragma omp parallel num_threads(T) reduction(+ : total)
            {
                int k = omp_get_thread_num();
                total += sum_rows(X, cases[c].perm, N * k / T, N * (k + 1) / T, cases[c].hint,
                                  cases[c].ahead);
            }
            double elapsed = seconds() - start;
            sink += total;
            if (r == 0 || elapsed < best[c])
                best[c] = elapsed;
        }
    printf("%d thread(s), 60,000 rows of 3136 bytes (188 MB)\n", T);
    for (int c = 0; c < CASES; c++)
        printf("  %-26s %6.2f ms  %5.1f GB/s\n", cases[c].name, 1e3 * best[c],
               (double)N * D * sizeof(float) / best[c] / 1e9);
    return sink == 1.0f;  /* keep the sums */
}
