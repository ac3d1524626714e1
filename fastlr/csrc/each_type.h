/* Instantiates the template FASTLR_TEMPLATE (a header name) once per type pair the kernels
   take: X of FLOAT with FLOAT weights, float and double, then X of uint8 pixels (PIXELS) with
   float and double weights. Included by kernels.c and tiles_isa.h, each with its template. */

#define FLOAT float
#include FASTLR_TEMPLATE
#undef FLOAT

#define FLOAT double
#include FASTLR_TEMPLATE
#undef FLOAT

#define PIXELS
#define FLOAT float
#include FASTLR_TEMPLATE
#undef FLOAT
#define FLOAT double
#include FASTLR_TEMPLATE
#undef FLOAT
#undef PIXELS
