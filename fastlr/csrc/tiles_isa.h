/* One instruction set's table of tiles: what each tiles_<isa>.c compiles after choosing its
   target and defining the parameters tiles_impl.h lists (ISA_LEVEL: its level). */

#include "tiles.h"

#define FASTLR_TEMPLATE "tiles_impl.h"
#include "each_type.h"
#undef FASTLR_TEMPLATE

/* v[i] = exp(v[i]) for the n arguments v[i] <= 0 of a block's softmax, in float64 and
   vectorized (libm's exp is a call per value): exp(x) = 2^k exp(r) with k = round(x / ln 2)
   and r = x - k ln 2 (ln 2 in two parts, so r is exact to about 2^-60), |r| <= 0.35, and
   exp(r) by its Taylor polynomial to degree 13 (truncation below 1e-17), so within a few
   units in the last place. Arguments below -708 give exp(-708) ~ 3e-308 instead of a
   smaller number or 0: they are added to a sum that is at least 1. A NaN stays NaN.
   Without trapping math (which changes no value, only what GCC assumes of floating-point
   exceptions): with it GCC does not compute the clamp of an argument for every lane and
   keeps the loop scalar ("control flow in loop"). */
__attribute__((optimize("no-trapping-math")))
static void FASTLR_CAT(fastlr_exp_nonpositive_, ISA)(double *v, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) {
        double x = v[i] < -708.0 ? -708.0 : v[i];
        double k = __builtin_rint(x * 1.4426950408889634);
        double r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
        double p = 1.0 / 6227020800.0;
        p = p * r + 1.0 / 479001600.0;
        p = p * r + 1.0 / 39916800.0;
        p = p * r + 1.0 / 3628800.0;
        p = p * r + 1.0 / 362880.0;
        p = p * r + 1.0 / 40320.0;
        p = p * r + 1.0 / 5040.0;
        p = p * r + 1.0 / 720.0;
        p = p * r + 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;
        p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;
        p = p * r + 1.0;
        p = p * r + 1.0;
        /* 2^k from the bits of k + 1.5 * 2^52 (exact: k is a whole number, |k| < 2^51), whose
           low bits hold k: the same bits as ((int64_t)k + 1023) << 52, without a conversion
           of a double to an integer, which AVX2 has no vector instruction for, so the loop
           is vectorized at every level. */
        double k_low = k + 0x1.8p52;
        int64_t bits;
        memcpy(&bits, &k_low, sizeof bits);
        bits = (bits + 1023) << 52;
        double scale;
        memcpy(&scale, &bits, sizeof scale);
        v[i] = p * scale;
    }
}

const struct fastlr_tiles FASTLR_CAT(fastlr_tiles_, ISA) = {
    .isa_level = ISA_LEVEL,
    .scores_float = FASTLR_TILE_NAME(scores, float),
    .scores_double = FASTLR_TILE_NAME(scores, double),
    .accumulate_float = FASTLR_TILE_NAME(accumulate, float),
    .accumulate_double = FASTLR_TILE_NAME(accumulate, double),
    .scores_u8_float = FASTLR_TILE_NAME(scores, u8_float),
    .scores_u8_double = FASTLR_TILE_NAME(scores, u8_double),
    .accumulate_u8_float = FASTLR_TILE_NAME(accumulate, u8_float),
    .accumulate_u8_double = FASTLR_TILE_NAME(accumulate, u8_double),
    .sum_parts_float = FASTLR_TILE_NAME(sum_parts, float),
    .sum_parts_double = FASTLR_TILE_NAME(sum_parts, double),
    .sum_update_float = FASTLR_TILE_NAME(sum_update, float),
    .sum_update_double = FASTLR_TILE_NAME(sum_update, double),
    .exp_nonpositive = FASTLR_CAT(fastlr_exp_nonpositive_, ISA),
};
