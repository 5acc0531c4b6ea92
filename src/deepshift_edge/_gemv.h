/* Register-blocked matrix-vector products for the streaming conv kernel.
 *
 * One output column of a conv is a matrix-vector product: out[m] = sum over chunks j
 * (time tap x feature tap) and input channels c of w[j][c][m] * x_j[c]. Weights are
 * stored in blocks of DSE_BLK output channels ([block][chunk][c][DSE_BLK]), so the
 * accumulators stay in registers for the whole sum and every weight is read once,
 * contiguously.
 *
 * Exactness between entry points: every kernel adds each output's terms in the same
 * order (chunks, then channels, one multiply-add at a time). Parallelism comes from
 * independent outputs (four blocks, or four frames), never from splitting one sum, so
 * push() and push_many() give bit-identical results.
 *
 * Portability: plain C with GCC/Clang vector extensions, compiled for the baseline ISA
 * (SSE2 on x86-64, NEON on aarch64, scalar VFP on armv7 without NEON). On x86-64 with
 * glibc and GCC, target_clones adds an AVX2+FMA (x86-64-v3) version of each entry point,
 * chosen once at load time from the CPU (ifunc): one wheel runs on any x86-64 and uses
 * AVX2 where it exists. No -march flags.
 */
#ifndef DSE_GEMV_H
#define DSE_GEMV_H

#include <stddef.h>
#include <string.h>

#define DSE_BLK 16

/* "arch=haswell" would test for that CPU *model* (an AMD Zen would get the baseline);
 * "arch=x86-64-v3" (GCC >= 12) tests the features: AVX2, FMA, BMI1/2, ... */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__) \
    && !defined(DSE_NO_CLONES) && __GNUC__ >= 12
#define DSE_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__) \
    && !defined(DSE_NO_CLONES)
#define DSE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DSE_CLONES
#endif

#if defined(__GNUC__)
#define DSE_INLINE __attribute__((always_inline)) /* inlined, hence compiled per clone */
#else
#define DSE_INLINE
#endif

/* Eight floats as one value. aligned(4): loads need only float alignment. */
typedef float dse_v8 __attribute__((vector_size(32), aligned(4)));

/* NB consecutive blocks of one frame (2*NB independent accumulator chains). */
#define DSE_GEMV_NB(NB)                                                                     \
    static inline DSE_INLINE void dse_gemv_nb##NB(const float *const *x, const ptrdiff_t *woff, \
                                                  ptrdiff_t n_chunks, ptrdiff_t cin,       \
                                                  const float *wb, ptrdiff_t blk_stride,   \
                                                  float *out)                              \
    {                                                                                       \
        dse_v8 acc[2 * NB];                                                                 \
        for (int q = 0; q < 2 * NB; q++) acc[q] = (dse_v8){0};                              \
        for (ptrdiff_t j = 0; j < n_chunks; j++) {                                          \
            const float *xj = x[j];                                                         \
            const float *wj = wb + woff[j];                                                 \
            for (ptrdiff_t c = 0; c < cin; c++) {                                           \
                const float xv = xj[c];                                                     \
                for (int q = 0; q < NB; q++) {                                              \
                    const dse_v8 *wv = (const dse_v8 *)(wj + q * blk_stride + c * DSE_BLK); \
                    acc[2 * q] += wv[0] * xv;                                               \
                    acc[2 * q + 1] += wv[1] * xv;                                           \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
        memcpy(out, acc, sizeof(acc));                                                      \
    }

DSE_GEMV_NB(4)
DSE_GEMV_NB(2)
DSE_GEMV_NB(1)

/* out[b*DSE_BLK + m] for nblk blocks; w points at the first block, blocks blk_stride
 * floats apart; chunk j reads x[j][0..cin) against weights w_block + woff[j]. */
DSE_CLONES
static void dse_gemv_blocked(const float *const *x, const ptrdiff_t *woff, ptrdiff_t n_chunks,
                             ptrdiff_t cin, const float *w, ptrdiff_t nblk, ptrdiff_t blk_stride,
                             float *out)
{
    ptrdiff_t b = 0;
    for (; b + 4 <= nblk; b += 4)
        dse_gemv_nb4(x, woff, n_chunks, cin, w + b * blk_stride, blk_stride, out + b * DSE_BLK);
    for (; b + 2 <= nblk; b += 2)
        dse_gemv_nb2(x, woff, n_chunks, cin, w + b * blk_stride, blk_stride, out + b * DSE_BLK);
    for (; b < nblk; b++)
        dse_gemv_nb1(x, woff, n_chunks, cin, w + b * blk_stride, blk_stride, out + b * DSE_BLK);
}

/* push_many: the same product for nf frames whose chunk inputs are xstride floats apart
 * (frame f reads x[j] + f * xstride). Chunk j has clen[j] channels: the caller merges
 * chunks that are adjacent both in the input row and in the weights (taps of dilation 1,
 * neighbouring feature taps), which keeps the order of terms and lengthens the loops. Up to six frames per pass share each weight vector
 * loaded (12 accumulators + 2 weights + 1 broadcast fit the 16 vector registers of
 * AVX2), so a layer whose weights live in L2 costs a sixth of the traffic per frame and
 * the FMA units, not the loads, set the pace. Per output, the same order of terms as
 * dse_gemv_blocked: push() and push_many() agree bit for bit. */
#define DSE_GEMV_FR(NF)                                                                      \
    static inline DSE_INLINE void dse_gemv_fr##NF(const float *const *x, ptrdiff_t xoff,       \
                                                  ptrdiff_t xstride,                          \
                                                  const ptrdiff_t *woff, ptrdiff_t n_chunks,  \
                                                  const ptrdiff_t *clen, const float *wb,     \
                                                  dse_v8 *out)                                \
    {                                                                                        \
        dse_v8 acc[NF][2];                                                                   \
        for (int f = 0; f < NF; f++) acc[f][0] = acc[f][1] = (dse_v8){0};                    \
        for (ptrdiff_t j = 0; j < n_chunks; j++) {                                           \
            const float *xj = x[j] + xoff;                                                   \
            const dse_v8 *wv = (const dse_v8 *)(wb + woff[j]);                               \
            for (ptrdiff_t c = 0; c < clen[j]; c++, wv += 2) {                               \
                const dse_v8 w0 = wv[0], w1 = wv[1];                                         \
                for (int f = 0; f < NF; f++) {                                               \
                    const float xv = xj[f * xstride + c];                                    \
                    acc[f][0] += w0 * xv;                                                    \
                    acc[f][1] += w1 * xv;                                                    \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
        memcpy(out, acc, sizeof(acc));                                                       \
    }

DSE_GEMV_FR(6)
DSE_GEMV_FR(4)
DSE_GEMV_FR(2)
DSE_GEMV_FR(1)

typedef int dse_i8 __attribute__((vector_size(32), aligned(4)));

/* Store one block of outputs (rem of them if fewer than DSE_BLK remain) at o and, when
 * o2 is not NULL, at o2 (the mirrored ring's twin row), after + shift[m] and max(v, 0)
 * if asked. The same float operations, in the same order, as the epilogue push() runs
 * after its sums, so fusing them here changes no bit. */
static inline DSE_INLINE void dse_store_blk(float *o, float *o2, const dse_v8 *acc, ptrdiff_t rem,
                                            const float *shift, int relu)
{
    if (rem >= DSE_BLK) {
        dse_v8 v0 = acc[0], v1 = acc[1];
        if (shift) {
            v0 += *(const dse_v8 *)shift;
            v1 += *(const dse_v8 *)(shift + 8);
        }
        if (relu) { /* v > 0 ? v : +0, NaN -> +0, like the scalar epilogue */
            const dse_v8 zero = {0};
            v0 = (dse_v8)((dse_i8)v0 & (dse_i8)(v0 > zero));
            v1 = (dse_v8)((dse_i8)v1 & (dse_i8)(v1 > zero));
        }
        memcpy(o, &v0, sizeof(v0));
        memcpy(o + 8, &v1, sizeof(v1));
        if (o2) {
            memcpy(o2, &v0, sizeof(v0));
            memcpy(o2 + 8, &v1, sizeof(v1));
        }
    } else {
        float t[DSE_BLK];
        memcpy(t, acc, sizeof(t));
        for (ptrdiff_t m = 0; m < rem; m++) {
            float v = t[m];
            if (shift) v = v + shift[m];
            if (relu) v = v > 0.0f ? v : 0.0f;
            o[m] = v;
            if (o2) o2[m] = v;
        }
    }
}

/* nf frames of one output position: frame f's nout outputs go to out[f] + ooff (and to
 * out2[f] + ooff unless out2 is NULL). shift (nout floats or NULL) and relu are fused
 * into the store. */
DSE_CLONES
static void dse_gemv_frames(const float *const *x, ptrdiff_t xstride, const ptrdiff_t *woff,
                            ptrdiff_t n_chunks, const ptrdiff_t *clen, const float *w, ptrdiff_t nblk,
                            ptrdiff_t blk_stride, ptrdiff_t nout, ptrdiff_t nf, float *const *out,
                            float *const *out2, ptrdiff_t ooff, const float *shift, int relu)
{
    dse_v8 acc[6][2];
    ptrdiff_t f0 = 0;
    while (f0 < nf) {
        const ptrdiff_t left = nf - f0;
        const int k = left >= 6 ? 6 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
        const ptrdiff_t xoff = f0 * xstride;
        for (ptrdiff_t b = 0; b < nblk; b++) {
            const float *wb = w + b * blk_stride;
            if (k == 6)
                dse_gemv_fr6(x, xoff, xstride, woff, n_chunks, clen, wb, &acc[0][0]);
            else if (k == 4)
                dse_gemv_fr4(x, xoff, xstride, woff, n_chunks, clen, wb, &acc[0][0]);
            else if (k == 2)
                dse_gemv_fr2(x, xoff, xstride, woff, n_chunks, clen, wb, &acc[0][0]);
            else
                dse_gemv_fr1(x, xoff, xstride, woff, n_chunks, clen, wb, &acc[0][0]);
            for (int f = 0; f < k; f++) {
                const ptrdiff_t at = ooff + b * DSE_BLK;
                dse_store_blk(out[f0 + f] + at, out2 ? out2[f0 + f] + at : NULL, acc[f],
                              nout - b * DSE_BLK, shift ? shift + b * DSE_BLK : NULL, relu);
            }
        }
        f0 += k;
    }
}

#endif
