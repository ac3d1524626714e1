/* The tiles for x86-64-v4 (AVX-512: 32 registers of 64 bytes). The scores take 10 classes x
   2 samples (20 of the 32 zmm registers), so a row of W is read once per two samples; the
   gradient 10 classes x one 64-byte vector. */
#include "tiles.h"

#if FASTLR_MULTI_ISA
#pragma GCC target("arch=x86-64-v4")

#define ISA v4
#define ISA_LEVEL 4
#define VECTOR_BYTES 64
#define SCORE_TILE 10
#define GRAD_TILE 10
#define GRAD_VECTORS 1
/* Without it GCC folds the load of a row of W into both FMAs that use it, loading it twice
   (a load-bound loop). */
#define KEEP_IN_REGISTER(v) __asm__("" : "+x"(v))

#include "tiles_isa.h"
#endif
