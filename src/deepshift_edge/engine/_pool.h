/* Pooling at the machine's vector width: max and sum pooling over one row of output feature
 * positions (dse_pool_row), and the running column sums of a global average (dse_colsum).
 *
 * out[fo * cout + c] = max (or sum, from +0) over the time taps i (NULL: padding, skipped) and
 * the feature taps k whose input position fi = fo * sf - pf + k lies inside the frame, of
 * taps[i][fi * cin + c], visited in the order i, then k: the order and the float operations
 * of the scalar loop this replaces, so every path gives the same bits (a max is a select,
 * x > m ? x : m, and a sum adds one input at a time). Averages are divided afterwards by the
 * caller (run_pool), which knows PyTorch's divisor.
 *
 * Why: compiled with the module's baseline flags, the per-channel loop ran at 4 floats and
 * stored every partial result between taps; a spectrogram CNN's two 2x2 max pools took 15%
 * of its push. Here the 16 channels of a block stay in registers over all taps, and AVX2 or
 * AVX-512 runs where the CPU has them (the dispatch of _gemv.h, DSE_KERNELS caps it too).
 */
#ifndef DSE_POOL_H
#define DSE_POOL_H

#include <math.h>

#include "_gemv.h"

#define DSE_SEL_VEC(VT, IT, gt, x, m) ((VT)(((IT)(x) & (IT)(gt)) | ((IT)(m) & ~(IT)(gt))))
#define DSE_SEL_SCALAR(VT, IT, gt, x, m) ((gt) ? (x) : (m))

#define DSE_POOL(S, VT, IT, NV, SEL, ATTR)                                                                \
    static ATTR void dse_pool_row_##S(int is_max, const float *const *taps, ptrdiff_t ntaps,             \
                                      ptrdiff_t kf, ptrdiff_t sf, ptrdiff_t pf, ptrdiff_t fin,           \
                                      ptrdiff_t fout, ptrdiff_t cin, ptrdiff_t cout, float *out)         \
    {                                                                                                     \
        const float start = is_max ? -INFINITY : 0.0f;                                                    \
        for (ptrdiff_t fo = 0; fo < fout; fo++) {                                                         \
            float *o = out + fo * cout;                                                                   \
            ptrdiff_t c = 0;                                                                              \
            for (; c + DSE_BLK <= cout; c += DSE_BLK) {                                                   \
                VT acc[NV];                                                                               \
                for (int v = 0; v < (NV); v++) acc[v] = (VT){0} + start;                                  \
                for (ptrdiff_t i = 0; i < ntaps; i++) {                                                   \
                    if (!taps[i]) continue;                                                               \
                    for (ptrdiff_t k = 0; k < kf; k++) {                                                  \
                        const ptrdiff_t fi = fo * sf - pf + k;                                            \
                        if (fi < 0 || fi >= fin) continue;                                                \
                        VT xv[NV];                                                                        \
                        memcpy(xv, taps[i] + fi * cin + c, sizeof(xv));                                   \
                        for (int v = 0; v < (NV); v++)                                                    \
                            acc[v] = is_max ? SEL(VT, IT, xv[v] > acc[v], xv[v], acc[v]) : acc[v] + xv[v];\
                    }                                                                                     \
                }                                                                                         \
                memcpy(o + c, acc, sizeof(acc));                                                          \
            }                                                                                             \
            if (c < cout) { /* the last cout - c < DSE_BLK channels, one walk over the taps */            \
                const ptrdiff_t rem = cout - c;                                                           \
                float m[DSE_BLK];                                                                         \
                for (ptrdiff_t r = 0; r < rem; r++) m[r] = start;                                         \
                for (ptrdiff_t i = 0; i < ntaps; i++) {                                                   \
                    if (!taps[i]) continue;                                                               \
                    for (ptrdiff_t k = 0; k < kf; k++) {                                                  \
                        const ptrdiff_t fi = fo * sf - pf + k;                                            \
                        if (fi < 0 || fi >= fin) continue;                                                \
                        const float *xr = taps[i] + fi * cin + c;                                         \
                        for (ptrdiff_t r = 0; r < rem; r++)                                               \
                            m[r] = is_max ? (xr[r] > m[r] ? xr[r] : m[r]) : m[r] + xr[r];                 \
                    }                                                                                     \
                }                                                                                         \
                memcpy(o + c, m, (size_t)rem * sizeof(float));                                            \
            }                                                                                             \
        }                                                                                                 \
    }

/* armv7's base is scalar VFP (see _gemv.h: C vector operators would go through the stack); the
 * 4-float type elsewhere (SSE2, aarch64 NEON: IEEE, so GCC vectorises C operators). */
#if defined(__arm__) && !defined(__aarch64__)
DSE_POOL(base, float, int, DSE_BLK, DSE_SEL_SCALAR, )
#else
DSE_POOL(base, dse_v4, dse_i4, DSE_BLK / 4, DSE_SEL_VEC, )
#endif
#if DSE_X86_DISPATCH
DSE_POOL(avx2, dse_v8, dse_i8, DSE_BLK / 8, DSE_SEL_VEC, DSE_AVX2_ATTR)
DSE_POOL(avx512, dse_v16, dse_i16, DSE_BLK / 16, DSE_SEL_VEC, DSE_AVX512_ATTR)
#endif

/* Running sums of a global average (run_rmean): for rows r = 0..nrows-1 (x + r * rstride) and
 * f = 0..F-1, in that order for every c, sums[c] += (double)x[f * C + c] (and, with old, the
 * one-row update, - (double)old[f * C + c] in the same expression): the scalar loop's
 * operations, 16 channels at a time held in registers over all rows and features. The
 * re-sum that refreshes a slot every npos updates is one call over its npos ring rows (a
 * mirrored ring keeps them evenly spaced); in the scalar loop it was a periodic spike
 * (spectrogram: 4 frames in 56 at 1.5x the median push). */
#define DSE_COLSUM(S, ATTR)                                                                               \
    static ATTR void dse_colsum_##S(double *sums, const float *x, const float *old, ptrdiff_t nrows,     \
                                    ptrdiff_t rstride, ptrdiff_t F, ptrdiff_t C)                          \
    {                                                                                                     \
        ptrdiff_t c = 0;                                                                                  \
        for (; c + 16 <= C; c += 16) {                                                                    \
            double a[16];                                                                                 \
            memcpy(a, sums + c, sizeof(a));                                                               \
            for (ptrdiff_t r = 0; r < nrows; r++)                                                         \
                for (ptrdiff_t f = 0; f < F; f++) {                                                       \
                    const float *xf = x + r * rstride + f * C + c;                                        \
                    if (old) {                                                                            \
                        const float *of = old + f * C + c;                                                \
                        for (int k = 0; k < 16; k++) a[k] += (double)xf[k] - (double)of[k];               \
                    } else {                                                                              \
                        for (int k = 0; k < 16; k++) a[k] += (double)xf[k];                               \
                    }                                                                                     \
                }                                                                                         \
            memcpy(sums + c, a, sizeof(a));                                                               \
        }                                                                                                 \
        for (; c < C; c++)                                                                                \
            for (ptrdiff_t r = 0; r < nrows; r++)                                                         \
                for (ptrdiff_t f = 0; f < F; f++) {                                                       \
                    const double v = (double)x[r * rstride + f * C + c];                                  \
                    sums[c] += old ? v - (double)old[f * C + c] : v;                                      \
                }                                                                                         \
    }

DSE_COLSUM(base, )
#if DSE_X86_DISPATCH
DSE_COLSUM(avx2, DSE_AVX2_ATTR)
DSE_COLSUM(avx512, DSE_AVX512_ATTR)
#endif

static void dse_colsum(double *sums, const float *x, const float *old, ptrdiff_t nrows, ptrdiff_t rstride,
                       ptrdiff_t F, ptrdiff_t C)
{
#if DSE_X86_DISPATCH
    switch (dse_path()) {
    case DSE_PATH_AVX512:
        dse_colsum_avx512(sums, x, old, nrows, rstride, F, C);
        return;
    case DSE_PATH_AVX2:
        dse_colsum_avx2(sums, x, old, nrows, rstride, F, C);
        return;
    }
#endif
    dse_colsum_base(sums, x, old, nrows, rstride, F, C);
}

static void dse_pool_row(int is_max, const float *const *taps, ptrdiff_t ntaps, ptrdiff_t kf, ptrdiff_t sf,
                         ptrdiff_t pf, ptrdiff_t fin, ptrdiff_t fout, ptrdiff_t cin, ptrdiff_t cout, float *out)
{
#if DSE_X86_DISPATCH
    switch (dse_path()) {
    case DSE_PATH_AVX512:
        dse_pool_row_avx512(is_max, taps, ntaps, kf, sf, pf, fin, fout, cin, cout, out);
        return;
    case DSE_PATH_AVX2:
        dse_pool_row_avx2(is_max, taps, ntaps, kf, sf, pf, fin, fout, cin, cout, out);
        return;
    }
#endif
    dse_pool_row_base(is_max, taps, ntaps, kf, sf, pf, fin, fout, cin, cout, out);
}

#endif
