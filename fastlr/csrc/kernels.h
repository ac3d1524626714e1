/* fastlr's C kernels: the functions fastlr/_kernels.pyx calls, for float and double.

   Shapes: N samples, D features, C classes, B batch, K chunks of a batch (parts). Every
   array is C-contiguous: X (N, D), W (C, D), b (C,), y (N,) int64 labels in 0..C-1, sw (N,)
   sample weights, parts (K, C, D) or (K, C) the partial sums of a batch's K chunks.

   The kernels only compute. The driver (fastlr/sgd.py) has checked every dtype and shape;
   _kernels.pyx owns the threads: which thread takes which chunks, the meetings, the buffers.
   Every sum has an order fixed in the source, so the same inputs, the same K and the same
   instruction set give bitwise the same result, on any number of threads.

   Where the code is:
     kernels_impl.h  these functions, written once for FLOAT (compiled by kernels.c): a
                     thread's chunk of a batch in blocks of FASTLR_BLOCK samples (scores,
                     softmax, gradient), prediction, the reduction of the parts
     tiles_impl.h    the loops that do the arithmetic (register tiles of the scores and the
                     gradient, the update), compiled once per instruction set by tiles_v4.c,
                     tiles_v3.c and tiles_base.c (tiles_isa.h)
     tiles_amx.c     the AMX level's bf16 tile products for uint8 pixels with float weights
     dispatch.c      which instruction set runs: the CPU's features, or set_isa_level */
#ifndef FASTLR_KERNELS_H
#define FASTLR_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Samples per block: their scores, then their gradient, while their rows are in L2 and the
   next block's are asked for. Tried: 32 and 64; 32 chosen, since on Sapphire Rapids blocks of
   64 were slower on float32 rows and on uint8, as for the Numba kernel
   (docs/journal/xeon-sapphire-rapids.md). */
enum { FASTLR_BLOCK = 32 };

/* The values of FLOAT scratch one thread needs for chunk_grad at the active instruction set
   level, a multiple of 16 so that threads share no cache line: the block's scores
   (FASTLR_BLOCK, C), then room for FASTLR_BLOCK * C doubles (the exponentials); at the AMX
   level (C <= 16), the packed weights and deltas and the staged pixels as well (tiles.h). */
ptrdiff_t fastlr_scratch_size(ptrdiff_t C, ptrdiff_t D);

/* The gradient of samples lo..hi-1 of a batch of size 1 / inv_batch, written into gW (C, D)
   and gb (C,) (overwritten, zeros for an empty chunk); returns their sum of s_i l_i, with
   l_i = log sum_k exp(z_ik) - z_i,y_i the cross-entropy at the scores z_i = W x_i + b.
   Sample i of the batch is X[rows[i]], or X[i] when rows is NULL. The rows X[next_rows[k]],
   k < n_next, come after this chunk (the thread's chunk of the next step) and are
   prefetched. scratch holds fastlr_scratch_size(C) values. *correct is set to the sum of
   s_i over the chunk's samples whose highest score (the first one on a tie, as argmax) is
   their label. */
double fastlr_chunk_grad_float(const float *X, const int64_t *y, const float *sw,
                               const int64_t *rows, ptrdiff_t lo, ptrdiff_t hi,
                               const float *W, const float *b, ptrdiff_t C, ptrdiff_t D,
                               double inv_batch, float *gW, float *gb, float *scratch,
                               const int64_t *next_rows, ptrdiff_t n_next, double *correct);
double fastlr_chunk_grad_double(const double *X, const int64_t *y, const double *sw,
                                const int64_t *rows, ptrdiff_t lo, ptrdiff_t hi,
                                const double *W, const double *b, ptrdiff_t C, ptrdiff_t D,
                                double inv_batch, double *gW, double *gb, double *scratch,
                                const int64_t *next_rows, ptrdiff_t n_next, double *correct);

/* The same two for X (N, D) of uint8 pixels, whose features are X / 255 (the scale
   multiplies each tile's sum once), with float or double weights. */
double fastlr_chunk_grad_u8_float(const uint8_t *X, const int64_t *y, const float *sw,
                                  const int64_t *rows, ptrdiff_t lo, ptrdiff_t hi,
                                  const float *W, const float *b, ptrdiff_t C, ptrdiff_t D,
                                  double inv_batch, float *gW, float *gb, float *scratch,
                                  const int64_t *next_rows, ptrdiff_t n_next, double *correct);
double fastlr_chunk_grad_u8_double(const uint8_t *X, const int64_t *y, const double *sw,
                                   const int64_t *rows, ptrdiff_t lo, ptrdiff_t hi,
                                   const double *W, const double *b, ptrdiff_t C,
                                   ptrdiff_t D, double inv_batch, double *gW, double *gb,
                                   double *scratch, const int64_t *next_rows,
                                   ptrdiff_t n_next, double *correct);

/* The scores X W^T + b of rows FASTLR_BLOCK block .. FASTLR_BLOCK (block + 1) - 1 of
   X (N, D) (fewer in the last block) into the same rows of out (N, C). */
void fastlr_predict_block_float(const float *X, const float *W, const float *b, ptrdiff_t N,
                                ptrdiff_t C, ptrdiff_t D, ptrdiff_t block, float *out);
void fastlr_predict_block_double(const double *X, const double *W, const double *b,
                                 ptrdiff_t N, ptrdiff_t C, ptrdiff_t D, ptrdiff_t block,
                                 double *out);
void fastlr_predict_block_u8_float(const uint8_t *X, const float *W, const float *b,
                                   ptrdiff_t N, ptrdiff_t C, ptrdiff_t D, ptrdiff_t block,
                                   float *out);
void fastlr_predict_block_u8_double(const uint8_t *X, const double *W, const double *b,
                                    ptrdiff_t N, ptrdiff_t C, ptrdiff_t D, ptrdiff_t block,
                                    double *out);

/* out[j] = parts[0, j] + parts[1, j] + ... + parts[T-1, j] for j in j0..j1-1, in that
   order; row t of parts starts at parts + t * stride. */
void fastlr_sum_parts_float(const float *parts, ptrdiff_t T, ptrdiff_t stride, ptrdiff_t j0,
                            ptrdiff_t j1, float *out);
void fastlr_sum_parts_double(const double *parts, ptrdiff_t T, ptrdiff_t stride,
                             ptrdiff_t j0, ptrdiff_t j1, double *out);

/* The SGD update of W[j0:j1] with the gradient sum_parts would write (in one pass, the sum
   written nowhere): v = momentum v + (grad + alpha W); W -= lr v, in float64 and rounded
   once, as the reference does; vel is untouched when momentum is 0. */
void fastlr_sum_update_float(float *W, float *vel, const float *parts, ptrdiff_t T,
                             ptrdiff_t stride, ptrdiff_t j0, ptrdiff_t j1, double lr,
                             double momentum, double alpha);
void fastlr_sum_update_double(double *W, double *vel, const double *parts, ptrdiff_t T,
                              ptrdiff_t stride, ptrdiff_t j0, ptrdiff_t j1, double lr,
                              double momentum, double alpha);

/* The instruction set the kernels run: FASTLR_ISA_AMX (x86-64-v4 with AMX-BF16 tiles for
   the gradient of uint8 pixels with float weights and at most 16 classes), 4 (x86-64-v4:
   AVX-512), 3 (x86-64-v3: AVX2 + FMA) or 1 (the x86-64 baseline). At first the baseline;
   fastlr_set_isa_level changes it and returns 0, or returns -1 and changes nothing for a
   level this build or this CPU cannot run. Set it between kernel calls, not during one
   (the scratch chunk_grad needs depends on it). */
enum { FASTLR_ISA_AMX = 5 };
int fastlr_isa_level(void);
int fastlr_best_isa_level(void);
int fastlr_set_isa_level(int level);

/* Once, before any kernel: read what dispatch.c needs from the CPU, and choose the best
   instruction set. */
void fastlr_dispatch_init(void);

/* The span, in bytes of each row of W, in which the score tile walks D when it reads `rows`
   rows of row_bytes: this CPU's choice, or the one fastlr_set_score_span forced, bytes > 0
   (0 goes back to the CPU's choice). The span changes the speed only: the sums and their
   order, so the results, are the same whatever it is. Set it between kernel calls. */
ptrdiff_t fastlr_score_span(ptrdiff_t row_bytes, int rows);
void fastlr_set_score_span(ptrdiff_t bytes);

#endif
