/* The OpenMP calls _kernels.pyx needs beyond Cython's parallel blocks, the meeting of an
   epoch's threads, and their serial stand-ins when the extension is built without OpenMP
   (setup.py). */
#ifndef FASTLR_THREADS_H
#define FASTLR_THREADS_H

#include <sched.h>
#include <stdint.h>

#ifdef _OPENMP
#include <omp.h>
#define FASTLR_OPENMP 1
/* An orphaned barrier binds to the innermost enclosing parallel region. */
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

/* A meeting of the threads of one parallel region, as the Numba kernel's (sync.py), which
   counts its long waits: int64 flags, FASTLR_MEETING_SLOTS (a cache line) per thread, the
   meetings it has reached, then the long waits it had seen when it reached an even and an
   odd one. A thread waits by spinning, `pause` between tries on x86; after
   FASTLR_SPINS_BEFORE_YIELD tries it yields its core before every further try (a thread it
   waits for may share the core), and the wait counts as long: a thread that was not running,
   because another process took its core. */
enum { FASTLR_MEETING_SLOTS = 8, FASTLR_SPINS_BEFORE_YIELD = 1 << 13 };

/* Spin until *flag >= value (acquire); returns 1 if the wait was long, else 0. */
static inline int fastlr_wait_until(const int64_t *flag, int64_t value) {
    long tries = 0;
    while (__atomic_load_n(flag, __ATOMIC_ACQUIRE) < value) {
        if (++tries > FASTLR_SPINS_BEFORE_YIELD)
            sched_yield();
#if defined(__x86_64__) || defined(__i386__)
        else
            __builtin_ia32_pause();
#endif
    }
    return tries > FASTLR_SPINS_BEFORE_YIELD;
}

/* Thread tid's side of the count-th meeting of the team's `team` threads: publish its long
   waits so far, *long_waits, and the count, wait until every thread has, and add 1 to
   *long_waits if this wait was long. Returns the team's long waits, the sum of what every
   thread published at this meeting (the same in every thread). The counts alternate between
   two slots by parity: a thread reaches the next meeting of the same parity only after every
   thread has left this one, so no slot read here is written while it is read. */
static inline int64_t fastlr_meeting(int64_t *flags, int tid, int team, int64_t count,
                                     int64_t *long_waits) {
    int slot = 1 + (int)(count & 1);
    flags[FASTLR_MEETING_SLOTS * tid + slot] = *long_waits;
    __atomic_store_n(&flags[FASTLR_MEETING_SLOTS * tid], count, __ATOMIC_RELEASE);
    int long_wait = 0;
    for (int j = 0; j < team; j++)
        long_wait |= fastlr_wait_until(&flags[FASTLR_MEETING_SLOTS * j], count);
    int64_t total = 0;
    for (int j = 0; j < team; j++)
        total += flags[FASTLR_MEETING_SLOTS * j + slot];
    *long_waits += long_wait;
    return total;
}

#endif
