/* Which tiles run, and how: the best instruction set this CPU and its operating system
   support (__builtin_cpu_supports; for AMX also the operating system's permission), unless
   fastlr_set_isa_level chose a lower one, to compare the levels or to reproduce bitwise the
   results of an older CPU; and the span of the score tile, from the size of the CPU's L1
   data cache, unless fastlr_set_score_span chose one. The only place that decides.

   Levels differ in their rounding, not only in speed: the lane sums of the scores and the
   FMAs of v3 and v4 round differently from the baseline, and the AMX level's bf16 pairs
   differently again (all well within the tolerances of fastlr/backends/check.py), so a
   result is bitwise reproducible for a given level. */
#include <unistd.h>

#include "tiles.h"

#if FASTLR_AMX
#include <sys/syscall.h>
#endif

const struct fastlr_tiles *fastlr_active_tiles = &fastlr_tiles_base;
const struct fastlr_amx_tiles *fastlr_active_amx = NULL;
static int active_level = 1;

/* Each level: its number (kernels.h), its vector tiles and its AMX tiles (or NULL), from the
   best down. The AMX level is v4 with the AMX path for pixels with float weights. */
static const struct {
    int level;
    const struct fastlr_tiles *tiles;
    const struct fastlr_amx_tiles *amx;
} LEVELS[] = {
#if FASTLR_AMX
    {FASTLR_ISA_AMX, &fastlr_tiles_v4, &fastlr_amx_tiles},
#endif
#if FASTLR_MULTI_ISA
    {4, &fastlr_tiles_v4, NULL},
    {3, &fastlr_tiles_v3, NULL},
#endif
    {1, &fastlr_tiles_base, NULL},
};

/* Whether the tile instructions may run: the CPU has AMX-TILE and AMX-BF16, and Linux lets
   this process use the tile data registers (8 KB of state it saves on a context switch
   only for the processes that asked: arch_prctl ARCH_REQ_XCOMP_PERM for
   XFEATURE_XTILEDATA, Linux 5.16 and later; without it the first tile instruction raises
   SIGILL). The request holds for every thread of the process, and asking again is harmless.
   Found once by fastlr_dispatch_init. */
static int amx_usable = 0;

#if FASTLR_AMX
static int amx_permitted(void) {
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("x86-64-v4") || !__builtin_cpu_supports("amx-tile")
        || !__builtin_cpu_supports("amx-bf16"))
        return 0;
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}
#endif

int fastlr_best_isa_level(void) {
    if (amx_usable)
        return FASTLR_ISA_AMX;
#if FASTLR_MULTI_ISA
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4"))
        return 4;
    if (__builtin_cpu_supports("x86-64-v3"))
        return 3;
#endif
    return 1;
}

int fastlr_isa_level(void) { return active_level; }

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
#if FASTLR_AMX
    amx_usable = amx_permitted();
#endif
    fastlr_set_isa_level(fastlr_best_isa_level());
}

/* Whole rows when the score tile's rows of W fit in three quarters of L1 (the rest holds the
   two rows of X they meet), else spans of 1 KB. On Sapphire Rapids (48 KB) the 10 rows of
   MNIST's W (31 KB) fit, and one span made the tile alone faster; on Zen 4 (32 KB) they do
   not, and 1 KB spans made the epoch faster than whole rows (docs/journal/). */
ptrdiff_t fastlr_score_span(ptrdiff_t row_bytes, int rows) {
    if (forced_score_span > 0)
        return forced_score_span;
    return rows * row_bytes <= l1_bytes / 4 * 3 ? row_bytes : 1024;
}

void fastlr_set_score_span(ptrdiff_t bytes) { forced_score_span = bytes > 0 ? bytes : 0; }

int fastlr_set_isa_level(int level) {
    if (level > fastlr_best_isa_level())
        return -1;
    for (size_t i = 0; i < sizeof LEVELS / sizeof LEVELS[0]; i++)
        if (LEVELS[i].level == level) {
            fastlr_active_tiles = LEVELS[i].tiles;
            fastlr_active_amx = LEVELS[i].amx;
            active_level = level;
            return 0;
        }
    return -1;
}

ptrdiff_t fastlr_scratch_size(ptrdiff_t C, ptrdiff_t D) {
    ptrdiff_t values = 3 * FASTLR_BLOCK * C;
    if (fastlr_active_amx != NULL && C <= FASTLR_AMX_CLASSES) {
        struct fastlr_amx_scratch unused;
        /* In floats, the type of the only weights the AMX path takes. */
        ptrdiff_t amx = fastlr_amx_scratch(0, C, D, &unused) / (ptrdiff_t)sizeof(float) + 1;
        if (amx > values)
            values = amx;
    }
    return (values + 15) / 16 * 16;
}
