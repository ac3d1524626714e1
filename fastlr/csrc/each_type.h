/* Instantiates the template FASTLR_TEMPLATE (a header name) once per type pair the kernels
   take: X of FLOAT with FLOAT weights, float and double, then X of uint8 pixels (PIXELS) with
   float and double weights. Included by kernels.c and tiles_isa.h, each with its template.
   FLOAT_IS_SINGLE is defined while FLOAT is float, for code of one type only. */

#define FLOAT float
#define FLOAT_IS_SINGLE
#include FASTLR_TEMPLATE
#undef FLOAT_IS_SINGLE
#undef FLOAT

#define FLOAT double
#include FASTLR_TEMPLATE
#undef FLOAT

#define PIXELS
#define FLOAT float
#define FLOAT_IS_SINGLE
#include FASTLR_TEMPLATE
#undef FLOAT_IS_SINGLE
#undef FLOAT
#define FLOAT double
#include FASTLR_TEMPLATE
#undef FLOAT
#undef PIXELS
