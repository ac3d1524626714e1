/* The OpenMP calls _kernels.pyx needs beyond Cython's parallel blocks, and their serial
   stand-ins when the extension is built without OpenMP (setup.py). */
#ifndef FASTLR_THREADS_H
#define FASTLR_THREADS_H

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

#endif
