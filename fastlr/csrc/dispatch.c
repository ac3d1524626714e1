/* Which tiles run: the best instruction set this CPU and its operating system support
   (__builtin_cpu_supports), unless fastlr_set_isa_level chose a lower one, to compare the
   levels or to reproduce bitwise the results of an older CPU. The only place that decides.

   Levels differ in their rounding, not only in speed: the lane sums of the scores and the
   FMAs of v3 and v4 round differently from the baseline (well within the tolerances of
   fastlr/backends/check.py), so a result is bitwise reproducible for a given level. */
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
