/* Which tiles run, and how: the best instruction set this CPU and its operating system
   support (__builtin_cpu_supports), unless fastlr_set_isa_level chose a lower one, to compare
   the levels or to reproduce bitwise the results of an older CPU; and the span of the score
   tile, from the size of the CPU's L1 data cache, unless fastlr_set_score_span chose one.
   The only place that decides.

   Levels differ in their rounding, not only in speed: the lane sums of the scores and the
   FMAs of v3 and v4 round differently from the baseline (well within the tolerances of
   fastlr/backends/check.py), so a result is bitwise reproducible for a given level. */
#include <unistd.h>

#include "tiles.h"

const struct fastlr_tiles *fastlr_active_tiles = &fastlr_tiles_base;

/* The table of each level, from the best down. */
static const struct fastlr_tiles *const TABLES[] = {
#if FASTLR_MULTI_ISA
    &fastlr_tiles_v4,
    &fastlr_tiles_v3,
#endif
    &fastlr_tiles_base,
};

int fastlr_best_isa_level(void) {
#if FASTLR_MULTI_ISA
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4"))
        return 4;
    if (__builtin_cpu_supports("x86-64-v3"))
        return 3;
#endif
    return 1;
}

int fastlr_isa_level(void) { return fastlr_active_tiles->isa_level; }

/* The score tile's span, when fastlr_set_score_span chose one (0: this CPU's choice), and
   the CPU's L1 data cache in bytes (0 if unknown), found once by fastlr_dispatch_init: the C
   library asks the CPU (cpuid, a trap to the hypervisor in a virtual machine). */
static ptrdiff_t forced_score_span = 0;
static ptrdiff_t l1_bytes = 0;

void fastlr_dispatch_init(void) {
#ifdef _SC_LEVEL1_DCACHE_SIZE
    long bytes = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    l1_bytes = bytes > 0 ? bytes : 0;
#endif
    fastlr_set_isa_level(fastlr_best_isa_level());
}

/* Whole rows when the score tile's rows of W fit in three quarters of L1 (the rest holds the
   two rows of X they meet), else spans of 1 KB. On Sapphire Rapids (48 KB) the 10 rows of
   MNIST's W (31 KB) fit: one span, 150 -> 169 GFLOP/s for the tile alone; on Zen 4 (32 KB)
   they do not, and 1 KB spans gained 5% per epoch over whole rows. */
ptrdiff_t fastlr_score_span(ptrdiff_t row_bytes, int rows) {
    if (forced_score_span > 0)
        return forced_score_span;
    return rows * row_bytes <= l1_bytes / 4 * 3 ? row_bytes : 1024;
}

void fastlr_set_score_span(ptrdiff_t bytes) { forced_score_span = bytes > 0 ? bytes : 0; }

int fastlr_set_isa_level(int level) {
    if (level > fastlr_best_isa_level())
        return -1;
    for (size_t i = 0; i < sizeof TABLES / sizeof TABLES[0]; i++)
        if (TABLES[i]->isa_level == level) {
            fastlr_active_tiles = TABLES[i];
            return 0;
        }
    return -1;
}
