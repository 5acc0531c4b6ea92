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

/* The same product for four frames at once (push_many): each weight vector loaded is
 * used four times, so a layer whose weights live in L2 costs a quarter of the memory
 * traffic per frame. x holds 4 * n_chunks pointers, frame-major; out[f] receives frame
 * f's nblk * DSE_BLK outputs. Per output, the same order of terms as above. */
DSE_CLONES
static void dse_gemv_blocked_x4(const float *const *x, const ptrdiff_t *woff, ptrdiff_t n_chunks,
                                ptrdiff_t cin, const float *w, ptrdiff_t nblk, ptrdiff_t blk_stride,
                                float *const *out)
{
    for (ptrdiff_t b = 0; b < nblk; b++) {
        dse_v8 a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0}, c0 = {0}, c1 = {0}, d0 = {0}, d1 = {0};
        const float *wb = w + b * blk_stride;
        for (ptrdiff_t j = 0; j < n_chunks; j++) {
            const float *x0 = x[j], *x1 = x[n_chunks + j], *x2 = x[2 * n_chunks + j],
                        *x3 = x[3 * n_chunks + j];
            const dse_v8 *wv = (const dse_v8 *)(wb + woff[j]);
            for (ptrdiff_t c = 0; c < cin; c++, wv += 2) {
                const dse_v8 w0 = wv[0], w1 = wv[1];
                a0 += w0 * x0[c];
                a1 += w1 * x0[c];
                b0 += w0 * x1[c];
                b1 += w1 * x1[c];
                c0 += w0 * x2[c];
                c1 += w1 * x2[c];
                d0 += w0 * x3[c];
                d1 += w1 * x3[c];
            }
        }
        memcpy(out[0] + b * DSE_BLK, &a0, sizeof(a0));
        memcpy(out[0] + b * DSE_BLK + 8, &a1, sizeof(a1));
        memcpy(out[1] + b * DSE_BLK, &b0, sizeof(b0));
        memcpy(out[1] + b * DSE_BLK + 8, &b1, sizeof(b1));
        memcpy(out[2] + b * DSE_BLK, &c0, sizeof(c0));
        memcpy(out[2] + b * DSE_BLK + 8, &c1, sizeof(c1));
        memcpy(out[3] + b * DSE_BLK, &d0, sizeof(d0));
        memcpy(out[3] + b * DSE_BLK + 8, &d1, sizeof(d1));
    }
}

#endif
