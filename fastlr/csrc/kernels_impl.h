/* The functions of kernels.h for one float type FLOAT; kernels.c includes this file once
   per type, and again with PIXELS defined for X of uint8 pixels (features X / 255), which
   compiles only the functions that read X: chunk_grad_u8_FLOAT and predict_block_u8_FLOAT.
   They are compiled for the extension's baseline instruction set and call the tiles of the
   level dispatch.c chose. */

#define KERNEL(name) FASTLR_CAT(fastlr_##name##_, FLOAT)
/* A tile of this FLOAT in a table: TILE(scores) is scores_float. */
#define TILE(name) FASTLR_CAT(name##_, FLOAT)
/* The same for the functions that read X, of type XT: XKERNEL(chunk_grad) is
   fastlr_chunk_grad_u8_float for pixels, fastlr_chunk_grad_float otherwise. */
#ifdef PIXELS
#define XT uint8_t
#define XKERNEL(name) FASTLR_CAT(fastlr_##name##_u8_, FLOAT)
#define XTILE(name) FASTLR_CAT(name##_u8_, FLOAT)
#else
#define XT FLOAT
#define XKERNEL(name) KERNEL(name)
#define XTILE(name) TILE(name)
#endif

#ifndef PIXELS

/* Turn the scores z (n, C) of the samples i0 .. i0 + n - 1 of the batch (X[rows[i]], or X[i]
   when rows is NULL) into s_i / B (softmax(z_i) - onehot(y_i)) in place; return their sum
   of s_i l_i with l_i = log sum_k exp(z_ik) - z_i,y_i, both with the row maximum
   subtracted, in float64, and add to *correct the s_i of the samples whose highest score
   (the first one on a tie, as argmax) is their label. ex holds n * C doubles. */
static double KERNEL(softmax_block)(FLOAT *z, ptrdiff_t n, ptrdiff_t C, const int64_t *y,
                                    const FLOAT *sw, const int64_t *rows, ptrdiff_t i0,
                                    double inv_batch, double *ex,
                                    const struct fastlr_tiles *tiles, double *correct) {
    double m[FASTLR_BLOCK];
    double loss = 0.0;
    for (ptrdiff_t j = 0; j < n; j++) {
        const FLOAT *zj = z + j * C;
        m[j] = zj[0];
        for (ptrdiff_t c = 1; c < C; c++)
            if (zj[c] > m[j])
                m[j] = zj[c];
        for (ptrdiff_t c = 0; c < C; c++)
            ex[j * C + c] = zj[c] - m[j];
    }
    /* The block's exponentials at once: the vectorized exp of the tiles (libm's exp, a
       call per value, was a visible part of an epoch). */
    tiles->exp_nonpositive(ex, n * C);
    for (ptrdiff_t j = 0; j < n; j++) {
        FLOAT *zj = z + j * C;
        int64_t idx = rows != NULL ? rows[i0 + j] : i0 + j;
        int64_t label = y[idx];
        double z_label = zj[label];
        int hit = z_label == m[j];
        for (int64_t c = 0; c < label; c++)
            hit &= zj[c] != m[j];
        if (hit)
            *correct += sw[idx];
        double total = 0.0;
        for (ptrdiff_t c = 0; c < C; c++)
            total += ex[j * C + c];
        double scale = sw[idx] * inv_batch;
        /* One division per sample instead of one per class. */
        double p_scale = scale / total;
        for (ptrdiff_t c = 0; c < C; c++)
            zj[c] = (FLOAT)(p_scale * ex[j * C + c]);
        zj[label] = (FLOAT)(zj[label] - scale);
        loss += sw[idx] * (m[j] + log(total) - z_label);
    }
    return loss;
}
#endif

/* Points xs[0..n-1] at the rows of samples i..i+n-1 of the batch (X[rows[i]], or X[i] when
   rows is NULL), and xs[n], xs[n + 1], ... at those of the up to `ahead` samples that come
   after them: the rest of the chunk (up to hi), then next_rows[0..n_next-1]. Returns how many
   came after, and prefetches their labels and weights, which would otherwise be a cache miss
   on the path from a sample's scores to its delta. */
static ptrdiff_t XKERNEL(block_rows)(const XT *X, const int64_t *y, const FLOAT *sw,
                                     const int64_t *rows, ptrdiff_t i, ptrdiff_t n,
                                     ptrdiff_t hi, ptrdiff_t D, const int64_t *next_rows,
                                     ptrdiff_t n_next, ptrdiff_t ahead, const XT **xs) {
    for (ptrdiff_t j = 0; j < n; j++)
        xs[j] = X + (rows != NULL ? rows[i + j] : i + j) * D;
    ptrdiff_t n_ahead = 0;
    for (; n_ahead < ahead; n_ahead++) {
        ptrdiff_t j = i + n + n_ahead;
        int64_t idx;
        if (j < hi)
            idx = rows != NULL ? rows[j] : j;
        else if (j - hi < n_next)
            idx = next_rows[j - hi];
        else
            break;
        xs[n + n_ahead] = X + idx * D;
        __builtin_prefetch(&y[idx], 0, 2);
        __builtin_prefetch(&sw[idx], 0, 2);
    }
    return n_ahead;
}

#if defined(PIXELS) && defined(FLOAT_IS_SINGLE)
/* chunk_grad (below) on the AMX tiles (tiles_amx.c): blocks of FASTLR_AMX_BLOCK samples,
   their scores and their gradient as tile products, while the next block's rows are
   prefetched; W packed (Wb) once per chunk, since it is the same for the whole step. The
   softmax is the same as the other levels', on pieces of FASTLR_BLOCK samples of the
   block. */
static double XKERNEL(chunk_grad_amx)(const uint8_t *X, const int64_t *y, const float *sw,
                                      const int64_t *rows, ptrdiff_t lo, ptrdiff_t hi,
                                      const float *W, const float *b, ptrdiff_t C,
                                      ptrdiff_t D, double inv_batch, float *gW, float *gb,
                                      float *scratch, const int64_t *next_rows,
                                      ptrdiff_t n_next, double *correct) {
    const struct fastlr_amx_tiles *amx = fastlr_active_amx;
    const struct fastlr_tiles *tiles = fastlr_active_tiles;
    const uint8_t *xs[2 * FASTLR_AMX_BLOCK];
    struct fastlr_amx_scratch s;
    fastlr_amx_scratch((uintptr_t)scratch, C, D, &s);
    double loss = 0.0;
    amx->pack_weights(W, C, D, s.Wb);
    for (ptrdiff_t i = lo; i < hi;) {
        ptrdiff_t n = hi - i < FASTLR_AMX_BLOCK ? hi - i : FASTLR_AMX_BLOCK;
        ptrdiff_t n_ahead = XKERNEL(block_rows)(X, y, sw, rows, i, n, hi, D, next_rows, n_next,
                                                FASTLR_AMX_BLOCK, xs);
        amx->scores(s.Wb, b, C, D, xs, n, n_ahead, s.z, s.stage);
        for (ptrdiff_t j = 0; j < n; j += FASTLR_BLOCK)
            loss += KERNEL(softmax_block)(s.z + j * C, n - j < FASTLR_BLOCK ? n - j : FASTLR_BLOCK,
                                          C, y, sw, rows, i + j, inv_batch, s.ex, tiles,
                                          correct);
        /* The first block overwrites gW: no separate pass to clear it. */
        amx->accumulate(gW, gb, C, D, xs, n, n_ahead, i == lo, s.z, s.Dt, s.stage, s.tail);
        i += n;
    }
    return loss;
}
#endif

/* A thread's chunk in blocks of FASTLR_BLOCK samples: the block's scores, its softmax, then
   its gradient, while the rows of the next FASTLR_AHEAD samples (the rest of the chunk, then
   the thread's chunk of the next step) are prefetched. At the AMX level, pixels with float
   weights, C <= FASTLR_AMX_CLASSES and a chunk of at least FASTLR_AMX_MIN_CHUNK samples go
   through chunk_grad_amx instead. */
double XKERNEL(chunk_grad)(const XT *X, const int64_t *y, const FLOAT *sw,
                           const int64_t *rows, ptrdiff_t lo, ptrdiff_t hi, const FLOAT *W,
                           const FLOAT *b, ptrdiff_t C, ptrdiff_t D, double inv_batch,
                           FLOAT *gW, FLOAT *gb, FLOAT *scratch, const int64_t *next_rows,
                           ptrdiff_t n_next, double *correct) {
    const struct fastlr_tiles *tiles = fastlr_active_tiles;
    const XT *xs[FASTLR_BLOCK + FASTLR_AHEAD];
    double loss = 0.0;
    *correct = 0.0;
    if (hi <= lo) {
        memset(gW, 0, C * D * sizeof(FLOAT));
        memset(gb, 0, C * sizeof(FLOAT));
        return 0.0;
    }
#if defined(PIXELS) && defined(FLOAT_IS_SINGLE)
    if (fastlr_active_amx != NULL && C <= FASTLR_AMX_CLASSES
        && hi - lo >= FASTLR_AMX_MIN_CHUNK)
        return XKERNEL(chunk_grad_amx)(X, y, sw, rows, lo, hi, W, b, C, D, inv_batch, gW, gb,
                                       scratch, next_rows, n_next, correct);
#endif
    for (ptrdiff_t i = lo; i < hi;) {
        ptrdiff_t n = hi - i < FASTLR_BLOCK ? hi - i : FASTLR_BLOCK;
        ptrdiff_t n_ahead = XKERNEL(block_rows)(X, y, sw, rows, i, n, hi, D, next_rows, n_next,
                                                FASTLR_AHEAD, xs);
        tiles->XTILE(scores)(W, b, C, D, xs, n, scratch);
        loss += KERNEL(softmax_block)(scratch, n, C, y, sw, rows, i, inv_batch,
                                      (double *)(scratch + FASTLR_BLOCK * C), tiles,
                                      correct);
        /* The first block overwrites gW: no separate pass to clear it. */
        tiles->XTILE(accumulate)(gW, gb, C, D, xs, n, n_ahead, i == lo, scratch);
        i += n;
    }
    return loss;
}

void XKERNEL(predict_block)(const XT *X, const FLOAT *W, const FLOAT *b, ptrdiff_t N,
                            ptrdiff_t C, ptrdiff_t D, ptrdiff_t block, FLOAT *out) {
    const XT *xs[FASTLR_BLOCK];
    ptrdiff_t start = block * FASTLR_BLOCK;
    ptrdiff_t n = N - start < FASTLR_BLOCK ? N - start : FASTLR_BLOCK;
    for (ptrdiff_t j = 0; j < n; j++)
        xs[j] = X + (start + j) * D;
    fastlr_active_tiles->XTILE(scores)(W, b, C, D, xs, n, out + start * C);
}

#ifndef PIXELS

void KERNEL(sum_parts)(const FLOAT *parts, ptrdiff_t T, ptrdiff_t stride, ptrdiff_t j0,
                       ptrdiff_t j1, FLOAT *out) {
    fastlr_active_tiles->TILE(sum_parts)(parts, T, stride, j0, j1, out);
}

void KERNEL(sum_update)(FLOAT *W, FLOAT *vel, const FLOAT *parts, ptrdiff_t T,
                        ptrdiff_t stride, ptrdiff_t j0, ptrdiff_t j1, double lr,
                        double momentum, double alpha) {
    fastlr_active_tiles->TILE(sum_update)(W, vel, parts, T, stride, j0, j1, lr, momentum,
                                          alpha);
}

#endif
#undef XTILE
#undef XKERNEL
#undef XT
#undef TILE
#undef KERNEL
