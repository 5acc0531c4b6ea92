/* Register-blocked matrix-vector product for the streaming conv kernel.
 *
 * One output column of a conv is a matrix-vector product: out[m] = sum over chunks j
 * (time tap x feature tap) and input channels c of w[j][c][m] * x_j[c]. Weights are
 * stored in blocks of DSE_BLK output channels, so the accumulators stay in registers
 * for the whole sum and every weight is read once, contiguously.
 *
 * Portable by construction: plain C with GCC/Clang vector extensions, which compile
 * for the baseline ISA (SSE2 on x86-64, NEON on aarch64, scalar VFP on armv7 without
 * NEON). On x86-64 with glibc, GCC's target_clones adds an AVX2+FMA (haswell) version
 * chosen at load time from the CPU (ifunc), so one wheel runs everywhere and uses AVX2
 * where it exists. No -march flags.
 */
#ifndef DSE_GEMV_H
#define DSE_GEMV_H

#include <stddef.h>
#include <string.h>

#define DSE_BLK 16

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__) \
    && !defined(DSE_NO_CLONES)
#define DSE_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define DSE_CLONES
#endif

/* Eight floats as one value. aligned(4): loads need only float alignment. */
typedef float dse_v8 __attribute__((vector_size(32), aligned(4)));

/* out[b*DSE_BLK + m] for nblk blocks; w points at the first block, blocks blk_stride
 * floats apart; chunk j reads x[j][0..cin) against weights w_block + woff[j].
 * Four input channels go to separate accumulators (8 independent multiply-add chains
 * hide the FMA latency); they are added at the end. */
DSE_CLONES
static void dse_gemv_blocked(const float *const *x, const ptrdiff_t *woff, ptrdiff_t n_chunks,
                             ptrdiff_t cin, const float *w, ptrdiff_t nblk, ptrdiff_t blk_stride,
                             float *out)
{
    for (ptrdiff_t b = 0; b < nblk; b++) {
        dse_v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
        const float *wb = w + b * blk_stride;
        for (ptrdiff_t j = 0; j < n_chunks; j++) {
            const float *xj = x[j];
            const dse_v8 *wv = (const dse_v8 *)(wb + woff[j]);
            ptrdiff_t c = 0;
            for (; c + 4 <= cin; c += 4, wv += 8) {
                a0 += wv[0] * xj[c];
                a1 += wv[1] * xj[c];
                a2 += wv[2] * xj[c + 1];
                a3 += wv[3] * xj[c + 1];
                a4 += wv[4] * xj[c + 2];
                a5 += wv[5] * xj[c + 2];
                a6 += wv[6] * xj[c + 3];
                a7 += wv[7] * xj[c + 3];
            }
            for (; c < cin; c++, wv += 2) {
                a0 += wv[0] * xj[c];
                a1 += wv[1] * xj[c];
            }
        }
        dse_v8 lo = (a0 + a2) + (a4 + a6), hi = (a1 + a3) + (a5 + a7);
        memcpy(out + b * DSE_BLK, &lo, sizeof(lo));
        memcpy(out + b * DSE_BLK + 8, &hi, sizeof(hi));
    }
}

#endif
