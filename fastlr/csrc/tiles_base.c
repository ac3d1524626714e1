/* The tiles for the x86-64 baseline (SSE2: 16 registers of 16 bytes), compiled with the
   extension's own flags, so on any CPU and compiler that builds the extension. */
#include "tiles.h"

#define ISA base
#define ISA_LEVEL 1
#define VECTOR_BYTES 16
#define SCORE_TILE 5
#define GRAD_TILE 10
#define GRAD_VECTORS 1
#define KEEP_IN_REGISTER(v) ((void)0)

#include "tiles_isa.h"
