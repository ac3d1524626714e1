/* The timing the C benchmarks share: a monotonic clock, and the fastest of many calls (on a
   shared machine the fastest call is the one no other process interrupted). */
#ifndef FASTLR_BENCH_TIMING_H
#define FASTLR_BENCH_TIMING_H

#include <time.h>

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* result = the fastest of `calls` runs of `call`, in seconds. */
#define FASTEST(result, calls, call)                \
    do {                                            \
        result = 1e9;                               \
        for (int r_ = 0; r_ < (calls); r_++) {      \
            double start_ = seconds();              \
            call;                                   \
            double took_ = seconds() - start_;      \
            result = took_ < result ? took_ : result; \
        }                                           \
    } while (0)

#endif
