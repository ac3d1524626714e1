/* The functions of kernels.h: kernels_impl.h for float and for double X, then for uint8
   pixels with float and double weights. */
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "tiles.h"

/* How many of the samples that come next a thread asks for while it accumulates a block's
   gradient: a block's worth, the rows its next scores will read. */
enum { FASTLR_AHEAD = FASTLR_BLOCK };

#define FASTLR_TEMPLATE "kernels_impl.h"
#include "each_type.h"
#undef FASTLR_TEMPLATE
