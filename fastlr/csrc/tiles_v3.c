/* The tiles for x86-64-v3 (AVX2 + FMA: 16 registers of 32 bytes). The scores take 5 classes
   x 2 samples (10 of the 16 ymm registers); the gradient 6 classes x two 32-byte vectors (12
   registers: per sample, two x loads and 6 broadcasts feed 12 FMAs, where 10 classes x one
   vector needed 11 loads for 10 FMAs; on Zen 3 the faster at every class count tried,
   docs/journal/epyc-zen3.md). */
#include "tiles.h"

#if FASTLR_MULTI_ISA
#pragma GCC target("arch=x86-64-v3")

#define ISA v3
#define ISA_LEVEL 3
#define VECTOR_BYTES 32
#define SCORE_TILE 5
#define GRAD_TILE 6
#define GRAD_VECTORS 2
/* As in tiles_v4.c: one load of a row of W for the two FMAs that use it. */
#define KEEP_IN_REGISTER(v) __asm__("" : "+x"(v))

#include "tiles_isa.h"
#endif
