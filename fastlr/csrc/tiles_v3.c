/* The tiles for x86-64-v3 (AVX2 + FMA: 16 registers of 32 bytes). The scores take 5 classes
   x 2 samples (10 of the 16 ymm registers); the gradient 10 classes x one 32-byte vector. */
#include "tiles.h"

#if FASTLR_MULTI_ISA
#pragma GCC target("arch=x86-64-v3")

#define ISA v3
#define ISA_LEVEL 3
#define VECTOR_BYTES 32
#define SCORE_TILE 5
#define GRAD_TILE 10
/* As in tiles_v4.c: one load of a row of W for the two FMAs that use it. */
#define KEEP_IN_REGISTER(v) __asm__("" : "+x"(v))

#include "tiles_isa.h"
#endif
