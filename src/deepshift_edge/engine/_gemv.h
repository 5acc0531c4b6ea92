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
 * independent outputs (blocks, or frames), never from splitting one sum, so push() and
 * push_many() give bit-identical results.
 *
 * Widths: the kernels are written once (DSE_KERNELS) over a vector type and instantiated
 * at the machine's native width, with as many blocks/frames per pass as its registers
 * hold. A 256-bit type on a 128-bit machine is NOT free: GCC then keeps the accumulators
 * on the stack (measured: x86-64 SSE2 10x slower; aarch64's inner loop was all ldp/stp).
 *   - base, 4 floats: SSE2 on x86-64 (16 registers: 2 blocks or 2 frames per pass), NEON
 *     on aarch64 (32 registers: 4 and 4), scalar VFP on armv7 (1 and 1).
 *   - neon, 4 floats, armv7 only: the same kernels on NEON intrinsics (vfma, 2 blocks or 2
 *     frames per pass), chosen at run time where AT_HWCAP has NEON and VFPv4; it flushes
 *     denormals to zero (DSE_KERNELS=baseline keeps the IEEE VFP path).
 *   - avx2, 8 floats, x86-64 only: compiled with target("avx2,fma") and chosen once at run
 *     time from the CPU's features (__builtin_cpu_supports). One wheel runs on any x86-64
 *     and uses AVX2 where it exists. No -march flags.
 *   - avx512, 16 floats (one register per block), x86-64 only: target("arch=x86-64-v4")
 *     (AVX-512 F/BW/DQ/VL/CD), chosen the same way where the CPU and OS have it. 32 zmm
 *     registers: push runs up to 8 blocks per pass; push_many 2 blocks x 8 frames per pass
 *     (16 accumulators, each broadcast input feeds two FMAs, each weight vector eight).
 *
 * Entry points: push (one frame, or one feature position of a 2-D conv; bias/ReLU fused into the
 * stores if asked), frames (push_many), rows (strip rows), streams (batched push).
 *
 * Run-time switch: DSE_KERNELS=baseline|avx2|avx512 (read once, at the first kernel call)
 * caps the path, so one machine can test every path it can run; a request the CPU cannot
 * run falls back to the best one below it (kernel_isa() says which ran). The compile-time
 * switch -DDSE_NO_CLONES builds the base width only.
 */
#ifndef DSE_GEMV_H
#define DSE_GEMV_H

#include <stddef.h>
#include <string.h>

#define DSE_BLK 16

#if defined(__GNUC__)
#define DSE_INLINE __attribute__((always_inline)) /* inlined, hence compiled per width */
#else
#define DSE_INLINE
#endif

/* The loops over blocks/frames/vectors of one pass must unroll completely: the accumulators
 * then live in registers (a rolled loop indexes them, and an indexed array lives on the stack). */
#if defined(__GNUC__) && !defined(__clang__)
#define DSE_UNROLL _Pragma("GCC unroll 16")
#elif defined(__clang__)
#define DSE_UNROLL _Pragma("unroll")
#else
#define DSE_UNROLL
#endif

/* Blocks (push) and frames (push_many) per pass of the base width. DSE_BASE_X4: push reads
 * four inputs with one load and multiplies by lane (fmla v, w, x.s[l]) instead of a broadcast
 * load per input: with 16 accumulators that is what keeps aarch64's loop out of the stack and
 * the load port free for the weights (llvm-mca cortex-a72: 69% -> 97% of the FMLA peak;
 * neoverse-n1: 69% -> 94%; bench/arm_mca.py). The terms and their order are unchanged. */
#if defined(__aarch64__)
#define DSE_BASE_NB 4
#define DSE_BASE_NF 4
#define DSE_BASE_X4 1
#elif defined(__x86_64__) || defined(__SSE2__)
#define DSE_BASE_NB 2
#define DSE_BASE_NF 2
#else
#define DSE_BASE_NB 1
#define DSE_BASE_NF 1
#endif

#ifndef DSE_BASE_X4
#define DSE_BASE_X4 0
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(DSE_NO_CLONES)
#define DSE_X86_DISPATCH 1
#else
#define DSE_X86_DISPATCH 0
#endif

/* Vectors as values; aligned(4): loads need only float alignment. */
typedef float dse_v4 __attribute__((vector_size(16), aligned(4)));
typedef int dse_i4 __attribute__((vector_size(16), aligned(4)));
#if DSE_X86_DISPATCH
typedef float dse_v8 __attribute__((vector_size(32), aligned(4)));
typedef int dse_i8 __attribute__((vector_size(32), aligned(4)));
typedef float dse_v16 __attribute__((vector_size(64), aligned(4)));
typedef int dse_i16 __attribute__((vector_size(64), aligned(4)));
#endif

/* max(x, +0) with NaN -> +0: a bit mask for vector types (C has no vector ?:), a compare for floats. */
#define DSE_RELU_VEC(VT, IT, x, zero) ((VT)((IT)(x) & (IT)((x) > (zero))))
#define DSE_RELU_SCALAR(VT, IT, x, zero) ((x) > (zero) ? (x) : (zero))
/* acc + w * x (x a float: broadcast for vectors) and a + b, as C operators: what every path but
 * armv7 NEON uses (GCC contracts the first to one FMA where the target has one). */
#define DSE_MADD(acc, w, x) ((acc) + (w) * (x))
#define DSE_VADD(a, b) ((a) + (b))
/* A path's own load of the 16 weights at p (float aligned) into dst[0..NV), yielding 1; or 0,
 * meaning the kernels load them as C does (every path but armv7 NEON). */
#define DSE_LOADBLK(VT, NV, dst, p) 0

/* aarch64 compiles push's 2-block pass as a function of its own: inlined beside the 4- and 1-block
 * passes, GCC's register allocation rotated the 8 accumulators through 13 vector moves per
 * iteration of the 4-channel loop (llvm-mca: cortex-a72 82%, neoverse-n1 71% of the FMLA peak;
 * on its own 89% and 80%, bench/arm_mca.py). Elsewhere it stays inlined: the same split made the
 * armv7 NEON 2-block loop spill (99% -> 50%), and x86's passes were not held back. */
#if defined(__aarch64__)
#define DSE_PASS2_ATTR __attribute__((noinline))
#else
#define DSE_PASS2_ATTR inline DSE_INLINE
#endif

/* The kernels for vector type VT (NV vectors per block of DSE_BLK outputs), at most MAXNB
 * blocks per pass in push, at most MAXNF frames x FB blocks per pass in push_many (FB is 1
 * or 2), compiled with function attribute ATTR; names end in _S.
 *
 * dse_gemv_push_S (push): out[b*DSE_BLK + m] for the nout outputs of nblk blocks (+ shift[m],
 *   max(v, 0) if asked; also to out2, the mirrored ring's twin row, unless NULL); w points at
 *   the first block, blocks blk_stride floats apart; chunk j reads x[j][0..clen[j]) against
 *   w_block + woff[j].
 * dse_gemv_frames_S (push_many): the same product for nf frames whose chunk inputs are
 *   xstride floats apart (frame f reads x[j] + f * xstride). Chunk j has clen[j] channels:
 *   the caller merges chunks adjacent both in the input row and in the weights (taps of
 *   dilation 1, neighbouring feature taps), which keeps the order of terms and lengthens
 *   the loops. The frames of a pass share each weight vector loaded, so a layer whose
 *   weights live in L2 costs 1/MAXNF of the traffic per frame. Frame f's nout outputs go to
 *   out[f] + ooff (and out2[f] + ooff, the mirrored ring's twin row, unless out2 is NULL),
 *   + shift[m] and max(v, 0) if asked: the same float operations, in the same order, as
 *   the epilogue push() runs after its sums, so fusing them here changes no bit.
 * dse_gemv_streams_S (batched push, issue 14): the same product for ns streams of a batch,
 *   one frame each: stream s reads chunk j at x[j] + xoff[s] (its own ring; the chunk list,
 *   built from stream 0's rows, is the same for all, only the rows' addresses differ). The
 *   streams of a pass share each weight vector loaded, as the frames of push_many do: a
 *   small GEMM instead of ns matrix-vector products, each output's terms in the same order. */
#define DSE_KERNELS(S, VT, IT, NV, MAXNB, MAXNF, FB, RELU, MADD, VADD, LOADBLK, ATTR)                              \
    static inline DSE_INLINE ATTR void dse_nb_##S(const int nb, const float *const *x,                    \
                                                  const ptrdiff_t *woff, ptrdiff_t n_chunks,              \
                                                  const ptrdiff_t *clen, const float *wb,                 \
                                                  ptrdiff_t blk_stride, float *out)                       \
    {                                                                                                     \
        const int NB = nb < (MAXNB) ? nb : (MAXNB);                                                       \
        VT acc[(MAXNB) * (NV)];                                                                           \
        for (int q = 0; q < NB * (NV); q++) acc[q] = (VT){0};                                             \
        for (ptrdiff_t j = 0; j < n_chunks; j++) {                                                        \
            const float *xj = x[j];                                                                       \
            const float *wj = wb + woff[j];                                                               \
            ptrdiff_t c = 0;                                                                              \
            if (DSE_BASE_X4 && sizeof(VT) == sizeof(dse_v4)) /* 4 inputs per load, FMA by lane */         \
            for (; c + 4 <= clen[j]; c += 4) {                                                            \
                const dse_v4 x4 = *(const dse_v4 *)(xj + c);                                              \
                DSE_UNROLL for (int l = 0; l < 4; l++)                                                    \
                    DSE_UNROLL for (int q = 0; q < NB; q++) {                                             \
                        const VT *wv = (const VT *)(wj + q * blk_stride + (c + l) * DSE_BLK);             \
                        DSE_UNROLL for (int v = 0; v < (NV); v++)                                         \
                            acc[q * (NV) + v] = MADD(acc[q * (NV) + v], wv[v], x4[l]);                    \
                    }                                                                                     \
            }                                                                                             \
            for (; c < clen[j]; c++) {                                                                    \
                const float xv = xj[c];                                                                   \
                DSE_UNROLL for (int q = 0; q < NB; q++) {                                                 \
                    VT wl[NV];                                                                            \
                    const VT *wv = (const VT *)(wj + q * blk_stride + c * DSE_BLK);                       \
                    if (LOADBLK(VT, NV, wl, (const float *)wv)) wv = wl;                                  \
                    DSE_UNROLL for (int v = 0; v < (NV); v++)                                             \
                        acc[q * (NV) + v] = MADD(acc[q * (NV) + v], wv[v], xv);                           \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
        memcpy(out, acc, (size_t)NB * (NV) * sizeof(VT));                                                 \
    }                                                                                                     \
                                                                                                          \
    /* The bench's memory floor: the sum of w[0..n), read with this width's vector loads into             \
     * four accumulators, as the push kernel reads its weights (the time of one call is what              \
     * streaming that many weight bytes costs, with no arithmetic to wait for). */                        \
    static ATTR float dse_read_##S(const float *w, ptrdiff_t n)                                           \
    {                                                                                                     \
        const ptrdiff_t L = (ptrdiff_t)(sizeof(VT) / sizeof(float));                                      \
        VT a[4];                                                                                          \
        float t[4 * sizeof(VT) / sizeof(float)], sum = 0.0f;                                              \
        ptrdiff_t i = 0;                                                                                  \
        for (int k = 0; k < 4; k++) a[k] = (VT){0};                                                       \
        /* unrolled, loads as values: rolled, GCC kept a[] on the stack and staged each load         \
         * through it (AVX2: 7 B/ns instead of ~200 from L2, a floor 30x too high) */                     \
        for (; i + 4 * L <= n; i += 4 * L)                                                                \
            DSE_UNROLL for (int k = 0; k < 4; k++)                                                        \
                a[k] = VADD(a[k], *(const VT *)(w + i + k * L));                                          \
        memcpy(t, a, sizeof(a));                                                                          \
        for (ptrdiff_t k = 0; k < 4 * L; k++) sum += t[k];                                                \
        for (; i < n; i++) sum += w[i];                                                                   \
        return sum;                                                                                       \
    }                                                                                                     \
                                                                                                          \
    /* nb (1 or FB) blocks x nf frames; out[(q * nf + f) * NV + v]. */                                    \
    static inline DSE_INLINE ATTR void dse_fr_##S(const int nb, const int nf, const float *const *x,      \
                                                  ptrdiff_t xoff, ptrdiff_t xstride,                      \
                                                  const ptrdiff_t *woff, ptrdiff_t n_chunks,              \
                                                  const ptrdiff_t *clen, const float *wb,                 \
                                                  ptrdiff_t blk_stride, VT *out)                          \
    {                                                                                                     \
        const int NB = nb < (FB) ? nb : (FB);                                                             \
        const int NF = nf < (MAXNF) ? nf : (MAXNF);                                                       \
        VT acc[(FB) * (MAXNF) * (NV)];                                                                    \
        for (int q = 0; q < NB * NF * (NV); q++) acc[q] = (VT){0};                                        \
        for (ptrdiff_t j = 0; j < n_chunks; j++) {                                                        \
            const float *xj = x[j] + xoff;                                                                \
            const VT *wv = (const VT *)(wb + woff[j]);                                                    \
            for (ptrdiff_t c = 0; c < clen[j]; c++, wv += (NV)) {                                         \
                VT wr[(FB) * (NV)];                                                                       \
                DSE_UNROLL for (int q = 0; q < NB; q++)                                                   \
                    if (!LOADBLK(VT, NV, wr + q * (NV), (const float *)wv + q * blk_stride))              \
                        DSE_UNROLL for (int v = 0; v < (NV); v++)                                         \
                            wr[q * (NV) + v] = *(const VT *)((const float *)(wv + v) + q * blk_stride);   \
                DSE_UNROLL for (int f = 0; f < NF; f++) {                                                 \
                    const float xv = xj[f * xstride + c];                                                 \
                    DSE_UNROLL for (int q = 0; q < NB; q++)                                               \
                        DSE_UNROLL for (int v = 0; v < (NV); v++)                                         \
                            acc[(q * NF + f) * (NV) + v] =                                                \
                                MADD(acc[(q * NF + f) * (NV) + v], wr[q * (NV) + v], xv);                 \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
        memcpy(out, acc, (size_t)NB * NF * (NV) * sizeof(VT));                                            \
    }                                                                                                     \
                                                                                                          \
    /* One pass of nb blocks x k frames, k one of the pass sizes, each a literal below. */                \
    static inline DSE_INLINE ATTR void dse_frk_##S(const int nb, const int k, const float *const *x,      \
                                                   ptrdiff_t xoff, ptrdiff_t xstride,                     \
                                                   const ptrdiff_t *woff, ptrdiff_t n_chunks,             \
                                                   const ptrdiff_t *clen, const float *wb,                \
                                                   ptrdiff_t blk_stride, VT *acc)                         \
    {                                                                                                     \
        if (k == (MAXNF))                                                                                 \
            dse_fr_##S(nb, (MAXNF), x, xoff, xstride, woff, n_chunks, clen, wb, blk_stride, acc);         \
        else if (k == 6)                                                                                  \
            dse_fr_##S(nb, 6, x, xoff, xstride, woff, n_chunks, clen, wb, blk_stride, acc);               \
        else if (k == 4)                                                                                  \
            dse_fr_##S(nb, 4, x, xoff, xstride, woff, n_chunks, clen, wb, blk_stride, acc);               \
        else if (k == 2)                                                                                  \
            dse_fr_##S(nb, 2, x, xoff, xstride, woff, n_chunks, clen, wb, blk_stride, acc);               \
        else                                                                                              \
            dse_fr_##S(nb, 1, x, xoff, xstride, woff, n_chunks, clen, wb, blk_stride, acc);               \
    }                                                                                                     \
                                                                                                          \
    static inline DSE_INLINE ATTR void dse_store_##S(float *o, float *o2, const VT *acc,                  \
                                                     ptrdiff_t rem, const float *shift,                   \
                                                     int relu)                                            \
    {                                                                                                     \
        if (rem >= DSE_BLK) {                                                                             \
            VT v[NV];                                                                                     \
            const VT zero = {0};                                                                          \
            for (int k = 0; k < (NV); k++) {                                                              \
                v[k] = acc[k];                                                                            \
                if (shift) v[k] = VADD(v[k], *(const VT *)(shift + k * (DSE_BLK / (NV))));                \
                if (relu) /* v > 0 ? v : +0, NaN -> +0, like the scalar epilogue */                       \
                    v[k] = RELU(VT, IT, v[k], zero);                                                      \
            }                                                                                             \
            memcpy(o, v, sizeof(v));                                                                      \
            if (o2) memcpy(o2, v, sizeof(v));                                                             \
        } else {                                                                                          \
            float t[DSE_BLK];                                                                             \
            memcpy(t, acc, sizeof(t));                                                                    \
            for (ptrdiff_t m = 0; m < rem; m++) {                                                         \
                float v = t[m];                                                                           \
                if (shift) v = v + shift[m];                                                              \
                if (relu) v = v > 0.0f ? v : 0.0f;                                                        \
                o[m] = v;                                                                                 \
                if (o2) o2[m] = v;                                                                        \
            }                                                                                             \
        }                                                                                                 \
    }                                                                                                     \
                                                                                                          \
    /* push: nb blocks of one product, then their epilogue (+ shift, ReLU) stored to out + at             \
     * (and out2 + at) for the nout - at outputs left. */                                                 \
    static inline DSE_INLINE ATTR void dse_nbst_##S(const int nb, const float *const *x,                  \
                                                    const ptrdiff_t *woff, ptrdiff_t n_chunks,            \
                                                    const ptrdiff_t *clen, const float *wb,               \
                                                    ptrdiff_t blk_stride, ptrdiff_t at, ptrdiff_t nout,   \
                                                    float *out, float *out2, const float *shift,          \
                                                    int relu)                                             \
    {                                                                                                     \
        VT acc[(MAXNB) * (NV)];                                                                           \
        dse_nb_##S(nb, x, woff, n_chunks, clen, wb, blk_stride, (float *)acc);                            \
        for (int q = 0; q < nb && q < (MAXNB); q++) {                                                     \
            const ptrdiff_t o = at + q * DSE_BLK;                                                         \
            dse_store_##S(out + o, out2 ? out2 + o : NULL, acc + q * (NV), nout - o,                      \
                          shift ? shift + o : NULL, relu);                                                \
        }                                                                                                 \
    }                                                                                                     \
                                                                                                          \
    /* The 2-block pass on its own (DSE_PASS2_ATTR: why, where it is defined). */                          \
    static DSE_PASS2_ATTR ATTR void dse_nbst2_##S(const float *const *x, const ptrdiff_t *woff,           \
                                                  ptrdiff_t n_chunks, const ptrdiff_t *clen,              \
                                                  const float *wb, ptrdiff_t blk_stride, ptrdiff_t at,    \
                                                  ptrdiff_t nout, float *out, float *out2,                \
                                                  const float *shift, int relu)                           \
    {                                                                                                     \
        dse_nbst_##S(2, x, woff, n_chunks, clen, wb, blk_stride, at, nout, out, out2, shift, relu);       \
    }                                                                                                     \
                                                                                                          \
    static ATTR void dse_gemv_push_##S(const float *const *x, const ptrdiff_t *woff,                      \
                                       ptrdiff_t n_chunks, const ptrdiff_t *clen, const float *w,         \
                                       ptrdiff_t nblk, ptrdiff_t blk_stride, ptrdiff_t nout,              \
                                       float *out, float *out2, const float *shift, int relu)             \
    {                                                                                                     \
        ptrdiff_t b = 0;                                                                                  \
        if ((MAXNB) >= 8)                                                                                 \
            for (; b + 8 <= nblk; b += 8)                                                                 \
                dse_nbst_##S(8, x, woff, n_chunks, clen, w + b * blk_stride, blk_stride, b * DSE_BLK,     \
                             nout, out, out2, shift, relu);                                               \
        if ((MAXNB) >= 4)                                                                                 \
            for (; b + 4 <= nblk; b += 4)                                                                 \
                dse_nbst_##S(4, x, woff, n_chunks, clen, w + b * blk_stride, blk_stride, b * DSE_BLK,     \
                             nout, out, out2, shift, relu);                                               \
        if ((MAXNB) >= 2)                                                                                 \
            for (; b + 2 <= nblk; b += 2)                                                                 \
                dse_nbst2_##S(x, woff, n_chunks, clen, w + b * blk_stride, blk_stride, b * DSE_BLK,       \
                              nout, out, out2, shift, relu);                                              \
        for (; b < nblk; b++)                                                                             \
            dse_nbst_##S(1, x, woff, n_chunks, clen, w + b * blk_stride, blk_stride, b * DSE_BLK,         \
                         nout, out, out2, shift, relu);                                                   \
    }                                                                                                     \
                                                                                                          \
    static ATTR void dse_gemv_frames_##S(const float *const *x, ptrdiff_t xstride,                        \
                                         const ptrdiff_t *woff, ptrdiff_t n_chunks,                       \
                                         const ptrdiff_t *clen, const float *w, ptrdiff_t nblk,           \
                                         ptrdiff_t blk_stride, ptrdiff_t nout, ptrdiff_t nf,              \
                                         float *const *out, float *const *out2, ptrdiff_t ooff,           \
                                         const float *shift, int relu)                                    \
    {                                                                                                     \
        VT acc[(FB) * (MAXNF) * (NV)];                                                                    \
        ptrdiff_t f0 = 0;                                                                                 \
        while (f0 < nf) {                                                                                 \
            const ptrdiff_t left = nf - f0;                                                               \
            const int k = left >= (MAXNF) ? (MAXNF) : ((MAXNF) >= 6 && left >= 6) ? 6                     \
                          : ((MAXNF) >= 4 && left >= 4) ? 4 : ((MAXNF) >= 2 && left >= 2) ? 2 : 1;        \
            const ptrdiff_t xoff = f0 * xstride;                                                          \
            for (ptrdiff_t b = 0; b < nblk;) {                                                            \
                /* nb and k are literals at every call: the accumulators stay in registers */             \
                const int nb = ((FB) >= 2 && b + 2 <= nblk) ? 2 : 1;                                      \
                const float *wb = w + b * blk_stride;                                                     \
                if (nb == 2)                                                                              \
                    dse_frk_##S(2, k, x, xoff, xstride, woff, n_chunks, clen, wb, blk_stride, acc);       \
                else                                                                                      \
                    dse_frk_##S(1, k, x, xoff, xstride, woff, n_chunks, clen, wb, blk_stride, acc);       \
                for (int q = 0; q < nb; q++, b++)                                                         \
                    for (int f = 0; f < k; f++) {                                                         \
                        const ptrdiff_t at = ooff + b * DSE_BLK;                                          \
                        dse_store_##S(out[f0 + f] + at, out2 ? out2[f0 + f] + at : NULL,                  \
                                      acc + (q * k + f) * (NV), nout - b * DSE_BLK,                       \
                                      shift ? shift + b * DSE_BLK : NULL, relu);                          \
                    }                                                                                     \
            }                                                                                             \
            f0 += k;                                                                                      \
        }                                                                                                 \
    }                                                                                                     \
                                                                                                          \
    /* Strip rows: nb blocks x nf rows, chunk j of row f reading x[xrow[j] + f0 + f] + xoff[j]. */        \
    static inline DSE_INLINE ATTR void dse_rw_##S(const int nb, const int nf, const float *const *x,      \
                                                  ptrdiff_t f0, const ptrdiff_t *xrow,                    \
                                                  const ptrdiff_t *xoff, const ptrdiff_t *woff,           \
                                                  ptrdiff_t n_chunks, const ptrdiff_t *clen,              \
                                                  const float *wb, ptrdiff_t blk_stride, VT *out)         \
    {                                                                                                     \
        const int NB = nb < (FB) ? nb : (FB);                                                             \
        const int NF = nf < (MAXNF) ? nf : (MAXNF);                                                       \
        VT acc[(FB) * (MAXNF) * (NV)];                                                                    \
        for (int q = 0; q < NB * NF * (NV); q++) acc[q] = (VT){0};                                        \
        for (ptrdiff_t j = 0; j < n_chunks; j++) {                                                        \
            const float *const *xr = x + xrow[j] + f0;                                                    \
            const float *xf[MAXNF];                                                                       \
            DSE_UNROLL for (int f = 0; f < NF; f++) xf[f] = xr[f] + xoff[j];                              \
            const VT *wv = (const VT *)(wb + woff[j]);                                                    \
            for (ptrdiff_t c = 0; c < clen[j]; c++, wv += (NV)) {                                         \
                VT wr[(FB) * (NV)];                                                                       \
                DSE_UNROLL for (int q = 0; q < NB; q++)                                                   \
                    if (!LOADBLK(VT, NV, wr + q * (NV), (const float *)wv + q * blk_stride))              \
                        DSE_UNROLL for (int v = 0; v < (NV); v++)                                         \
                            wr[q * (NV) + v] = *(const VT *)((const float *)(wv + v) + q * blk_stride);   \
                DSE_UNROLL for (int f = 0; f < NF; f++) {                                                 \
                    const float xv = xf[f][c];                                                            \
                    DSE_UNROLL for (int q = 0; q < NB; q++)                                               \
                        DSE_UNROLL for (int v = 0; v < (NV); v++)                                         \
                            acc[(q * NF + f) * (NV) + v] =                                                \
                                MADD(acc[(q * NF + f) * (NV) + v], wr[q * (NV) + v], xv);                 \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
        memcpy(out, acc, (size_t)NB * NF * (NV) * sizeof(VT));                                            \
    }                                                                                                     \
                                                                                                          \
    static inline DSE_INLINE ATTR void dse_rwk_##S(const int nb, const int k, const float *const *x,      \
                                                   ptrdiff_t f0, const ptrdiff_t *xrow,                   \
                                                   const ptrdiff_t *xoff, const ptrdiff_t *woff,          \
                                                   ptrdiff_t n_chunks, const ptrdiff_t *clen,             \
                                                   const float *wb, ptrdiff_t blk_stride, VT *acc)        \
    {                                                                                                     \
        if (k == (MAXNF))                                                                                 \
            dse_rw_##S(nb, (MAXNF), x, f0, xrow, xoff, woff, n_chunks, clen, wb, blk_stride, acc);        \
        else if (k == 6)                                                                                  \
            dse_rw_##S(nb, 6, x, f0, xrow, xoff, woff, n_chunks, clen, wb, blk_stride, acc);              \
        else if (k == 4)                                                                                  \
            dse_rw_##S(nb, 4, x, f0, xrow, xoff, woff, n_chunks, clen, wb, blk_stride, acc);              \
        else if (k == 2)                                                                                  \
            dse_rw_##S(nb, 2, x, f0, xrow, xoff, woff, n_chunks, clen, wb, blk_stride, acc);              \
        else                                                                                              \
            dse_rw_##S(nb, 1, x, f0, xrow, xoff, woff, n_chunks, clen, wb, blk_stride, acc);              \
    }                                                                                                     \
                                                                                                          \
    static ATTR void dse_gemv_rows_##S(const float *const *x, const ptrdiff_t *xrow,                      \
                                       const ptrdiff_t *xoff, const ptrdiff_t *woff, ptrdiff_t n_chunks,  \
                                       const ptrdiff_t *clen, const float *w, ptrdiff_t nblk,             \
                                       ptrdiff_t blk_stride, ptrdiff_t nout, ptrdiff_t nf,                \
                                       float *const *out, ptrdiff_t ooff, const float *shift, int relu)   \
    {                                                                                                     \
        VT acc[(FB) * (MAXNF) * (NV)];                                                                    \
        ptrdiff_t f0 = 0;                                                                                 \
        while (f0 < nf) {                                                                                 \
            const ptrdiff_t left = nf - f0;                                                               \
            const int k = left >= (MAXNF) ? (MAXNF) : ((MAXNF) >= 6 && left >= 6) ? 6                     \
                          : ((MAXNF) >= 4 && left >= 4) ? 4 : ((MAXNF) >= 2 && left >= 2) ? 2 : 1;        \
            for (ptrdiff_t b = 0; b < nblk;) {                                                            \
                const int nb = ((FB) >= 2 && b + 2 <= nblk) ? 2 : 1;                                      \
                const float *wb = w + b * blk_stride;                                                     \
                if (nb == 2)                                                                              \
                    dse_rwk_##S(2, k, x, f0, xrow, xoff, woff, n_chunks, clen, wb, blk_stride, acc);      \
                else                                                                                      \
                    dse_rwk_##S(1, k, x, f0, xrow, xoff, woff, n_chunks, clen, wb, blk_stride, acc);      \
                for (int q = 0; q < nb; q++, b++)                                                         \
                    for (int f = 0; f < k; f++) {                                                         \
                        const ptrdiff_t at = ooff + b * DSE_BLK;                                          \
                        dse_store_##S(out[f0 + f] + at, NULL, acc + (q * k + f) * (NV),                   \
                                      nout - b * DSE_BLK, shift ? shift + b * DSE_BLK : NULL, relu);      \
                    }                                                                                     \
            }                                                                                             \
            f0 += k;                                                                                      \
        }                                                                                                 \
    }                                                                                                     \
                                                                                                          \
    /* nb (1 or FB) blocks x ns streams: stream s reads chunk j at x[j] + xo[s]. */                       \
    static inline DSE_INLINE ATTR void dse_bs_##S(const int nb, const int ns, const float *const *x,      \
                                                  const ptrdiff_t *xo, const ptrdiff_t *woff,             \
                                                  ptrdiff_t n_chunks, const ptrdiff_t *clen,              \
                                                  const float *wb, ptrdiff_t blk_stride, VT *out)         \
    {                                                                                                     \
        const int NB = nb < (FB) ? nb : (FB);                                                             \
        const int NS = ns < (MAXNF) ? ns : (MAXNF);                                                       \
        VT acc[(FB) * (MAXNF) * (NV)];                                                                    \
        for (int q = 0; q < NB * NS * (NV); q++) acc[q] = (VT){0};                                        \
        for (ptrdiff_t j = 0; j < n_chunks; j++) {                                                        \
            const float *xs[(MAXNF)];                                                                     \
            DSE_UNROLL for (int s = 0; s < NS; s++) xs[s] = x[j] + xo[s];                                 \
            const VT *wv = (const VT *)(wb + woff[j]);                                                    \
            for (ptrdiff_t c = 0; c < clen[j]; c++, wv += (NV)) {                                         \
                VT wr[(FB) * (NV)];                                                                       \
                DSE_UNROLL for (int q = 0; q < NB; q++)                                                   \
                    if (!LOADBLK(VT, NV, wr + q * (NV), (const float *)wv + q * blk_stride))              \
                        DSE_UNROLL for (int v = 0; v < (NV); v++)                                         \
                            wr[q * (NV) + v] = *(const VT *)((const float *)(wv + v) + q * blk_stride);   \
                DSE_UNROLL for (int s = 0; s < NS; s++) {                                                 \
                    const float xv = xs[s][c];                                                            \
                    DSE_UNROLL for (int q = 0; q < NB; q++)                                               \
                        DSE_UNROLL for (int v = 0; v < (NV); v++)                                         \
                            acc[(q * NS + s) * (NV) + v] =                                                \
                                MADD(acc[(q * NS + s) * (NV) + v], wr[q * (NV) + v], xv);                 \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
        memcpy(out, acc, (size_t)NB * NS * (NV) * sizeof(VT));                                            \
    }                                                                                                     \
                                                                                                          \
    static inline DSE_INLINE ATTR void dse_bsk_##S(const int nb, const int k, const float *const *x,      \
                                                   const ptrdiff_t *xo, const ptrdiff_t *woff,            \
                                                   ptrdiff_t n_chunks, const ptrdiff_t *clen,             \
                                                   const float *wb, ptrdiff_t blk_stride, VT *acc)        \
    {                                                                                                     \
        if (k == (MAXNF))                                                                                 \
            dse_bs_##S(nb, (MAXNF), x, xo, woff, n_chunks, clen, wb, blk_stride, acc);                    \
        else if (k == 6)                                                                                  \
            dse_bs_##S(nb, 6, x, xo, woff, n_chunks, clen, wb, blk_stride, acc);                          \
        else if (k == 4)                                                                                  \
            dse_bs_##S(nb, 4, x, xo, woff, n_chunks, clen, wb, blk_stride, acc);                          \
        else if (k == 2)                                                                                  \
            dse_bs_##S(nb, 2, x, xo, woff, n_chunks, clen, wb, blk_stride, acc);                          \
        else                                                                                              \
            dse_bs_##S(nb, 1, x, xo, woff, n_chunks, clen, wb, blk_stride, acc);                          \
    }                                                                                                     \
                                                                                                          \
    static ATTR void dse_gemv_streams_##S(const float *const *x, const ptrdiff_t *xoff,                   \
                                          const ptrdiff_t *woff, ptrdiff_t n_chunks,                      \
                                          const ptrdiff_t *clen, const float *w, ptrdiff_t nblk,          \
                                          ptrdiff_t blk_stride, ptrdiff_t nout, ptrdiff_t ns,             \
                                          float *const *out, float *const *out2, ptrdiff_t ooff,          \
                                          const float *shift, int relu)                                   \
    {                                                                                                     \
        VT acc[(FB) * (MAXNF) * (NV)];                                                                    \
        ptrdiff_t s0 = 0;                                                                                 \
        while (s0 < ns) {                                                                                 \
            const ptrdiff_t left = ns - s0;                                                               \
            const int k = left >= (MAXNF) ? (MAXNF) : ((MAXNF) >= 6 && left >= 6) ? 6                     \
                          : ((MAXNF) >= 4 && left >= 4) ? 4 : ((MAXNF) >= 2 && left >= 2) ? 2 : 1;        \
            for (ptrdiff_t b = 0; b < nblk;) {                                                            \
                const int nb = ((FB) >= 2 && b + 2 <= nblk) ? 2 : 1;                                      \
                const float *wb = w + b * blk_stride;                                                     \
                if (nb == 2)                                                                              \
                    dse_bsk_##S(2, k, x, xoff + s0, woff, n_chunks, clen, wb, blk_stride, acc);           \
                else                                                                                      \
                    dse_bsk_##S(1, k, x, xoff + s0, woff, n_chunks, clen, wb, blk_stride, acc);           \
                for (int q = 0; q < nb; q++, b++)                                                         \
                    for (int s = 0; s < k; s++) {                                                         \
                        const ptrdiff_t at = ooff + b * DSE_BLK;                                          \
                        dse_store_##S(out[s0 + s] + at, out2 ? out2[s0 + s] + at : NULL,                  \
                                      acc + (q * k + s) * (NV), nout - b * DSE_BLK,                       \
                                      shift ? shift + b * DSE_BLK : NULL, relu);                          \
                    }                                                                                     \
            }                                                                                             \
            s0 += k;                                                                                      \
        }                                                                                                 \
    }

#if defined(__arm__) && !defined(__aarch64__)
/* 32-bit ARM baseline: plain floats, 16 accumulators in VFP registers (armhf's VFPv3-D16: any
 * ARMv7 board). GCC does not do float vector arithmetic with ARMv7 NEON through C operators
 * (NEON is not IEEE: it flushes denormals to zero), so a 4-float vector type only moved every
 * operation through the stack (llvm-mca, cortex-a72: 5-9% of the FMLA peak); the NEON path
 * below says what it means with intrinsics. */
DSE_KERNELS(base, float, int, DSE_BLK, DSE_BASE_NB, DSE_BASE_NF, 1, DSE_RELU_SCALAR, DSE_MADD, DSE_VADD, DSE_LOADBLK, )
#else
DSE_KERNELS(base, dse_v4, dse_i4, DSE_BLK / 4, DSE_BASE_NB, DSE_BASE_NF, 1, DSE_RELU_VEC, DSE_MADD, DSE_VADD, DSE_LOADBLK, )
#endif

/* armv7 with NEON and VFPv4 (every Pi from the Pi 2 on, in a 32-bit OS): the same kernels on
 * NEON intrinsics, 4 floats a q register, vfma (fused, as the x86 FMA paths), picked at run
 * time from AT_HWCAP. 16 q registers: 2 blocks (8 accumulators) per push pass, 2 frames of
 * one block per push_many pass. NEON flushes denormal operands and results to zero: a term
 * below 1.2e-38 in magnitude becomes 0 where the scalar path keeps it (DSE_KERNELS=baseline
 * runs the IEEE path). */
#if defined(__arm__) && !defined(__aarch64__) && defined(__GNUC__) && !defined(__clang__) &&                \
    defined(__linux__) && !defined(DSE_NO_CLONES)
#define DSE_ARM32_DISPATCH 1
#else
#define DSE_ARM32_DISPATCH 0
#endif

#if DSE_ARM32_DISPATCH
#include <stdlib.h>
#include <sys/auxv.h>
#pragma GCC push_options
#pragma GCC target("fpu=neon-vfpv4")
#include <arm_neon.h>
#pragma GCC pop_options
#ifndef HWCAP_NEON
#define HWCAP_NEON (1 << 12)
#endif
#ifndef HWCAP_VFPv4
#define HWCAP_VFPv4 (1 << 16)
#endif
typedef float32x4_t dse_n4 __attribute__((aligned(4)));
typedef uint32x4_t dse_u4 __attribute__((aligned(4)));
#define DSE_MADD_NEON(acc, w, x) vfmaq_f32((acc), (w), vdupq_n_f32(x))
#define DSE_VADD_NEON(a, b) vaddq_f32((a), (b))
#define DSE_RELU_NEON(VT, IT, x, zero)                                                                    \
    vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(x), vcgtq_f32((x), (zero))))
/* A block's 16 weights as two 4-register vld1 (GCC splits a 64-byte copy into single-register
 * loads, each after an address add: llvm-mca, cortex-a72, 2-block push loop 66% of peak; with
 * these 99% in a stand-alone loop). %h prints the {dN-dN+3} list of a 2-register structure. */
#define DSE_LOADBLK_NEON(VT, NV, dst, p)                                                                  \
    __extension__({                                                                                       \
        const float *p_ = (p);                                                                            \
        float32x4x2_t lo_, hi_;                                                                           \
        __asm__("vld1.32 %h0, [%1]" : "=w"(lo_) : "r"(p_), "m"(*(const float(*)[8])p_));                  \
        __asm__("vld1.32 %h0, [%1]" : "=w"(hi_) : "r"(p_ + 8), "m"(*(const float(*)[8])(p_ + 8)));        \
        (dst)[0] = lo_.val[0];                                                                            \
        (dst)[1] = lo_.val[1];                                                                            \
        (dst)[2] = hi_.val[0];                                                                            \
        (dst)[3] = hi_.val[1];                                                                            \
        1;                                                                                                \
    })
DSE_KERNELS(neon, dse_n4, dse_u4, DSE_BLK / 4, 2, 2, 1, DSE_RELU_NEON, DSE_MADD_NEON, DSE_VADD_NEON,
            DSE_LOADBLK_NEON, __attribute__((target("fpu=neon-vfpv4"))))

static int dse_neon_cached = -1; /* decided on first use; a racing second decision agrees */

/* Whether the NEON path runs: the CPU has NEON and VFPv4, and DSE_KERNELS does not cap it. */
static inline int dse_neon(void)
{
    if (dse_neon_cached < 0) {
        const char *want = getenv("DSE_KERNELS");
        const unsigned long hw = getauxval(AT_HWCAP);
        int cap = want && (!strcmp(want, "baseline") || !strcmp(want, "base") || !strcmp(want, "scalar"));
        dse_neon_cached = !cap && (hw & HWCAP_NEON) && (hw & HWCAP_VFPv4);
    }
    return dse_neon_cached;
}
#define DSE_NEON_DISPATCH(call) \
    if (dse_neon()) {           \
        call;                   \
        return;                 \
    }
#else
#define DSE_NEON_DISPATCH(call)
#endif

#if DSE_X86_DISPATCH
#include <stdlib.h>
/* 16 ymm registers: 4 blocks (8 accumulators) or 6 frames (12 accumulators + 2 weights +
 * 1 broadcast) per pass. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
/* The whole x86-64-v3 level (AVX2, FMA, BMI1/2, ...): BMI2's shifts help the address
 * arithmetic of the frame loops (measured ~4% on push_many against "avx2,fma" alone). */
#define DSE_AVX2_ATTR __attribute__((target("arch=x86-64-v3")))
#define DSE_AVX2_CPU() __builtin_cpu_supports("x86-64-v3")
#define DSE_AVX512_ATTR __attribute__((target("arch=x86-64-v4")))
#define DSE_AVX512_CPU() __builtin_cpu_supports("x86-64-v4")
#else
#define DSE_AVX2_ATTR __attribute__((target("avx2,fma")))
#define DSE_AVX2_CPU() (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
#define DSE_AVX512_ATTR __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))
#define DSE_AVX512_CPU() (DSE_AVX2_CPU() && __builtin_cpu_supports("avx512f") && \
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") && \
                          __builtin_cpu_supports("avx512dq"))
#endif
DSE_KERNELS(avx2, dse_v8, dse_i8, DSE_BLK / 8, 4, 6, 1, DSE_RELU_VEC, DSE_MADD, DSE_VADD, DSE_LOADBLK, DSE_AVX2_ATTR)
/* 32 zmm registers, one per block: push up to 8 blocks per pass; push_many 2 blocks x 8
 * frames (16 accumulators + 2 weights + 1 broadcast). */
DSE_KERNELS(avx512, dse_v16, dse_i16, DSE_BLK / 16, 8, 8, 2, DSE_RELU_VEC, DSE_MADD, DSE_VADD, DSE_LOADBLK, DSE_AVX512_ATTR)

enum { DSE_PATH_BASE = 0, DSE_PATH_AVX2 = 1, DSE_PATH_AVX512 = 2 };
static int dse_path_cached = -1; /* decided on first use; a racing second decision agrees */

/* The best path the CPU runs, capped by DSE_KERNELS=baseline|avx2|avx512 if set. */
static inline int dse_path(void)
{
    if (dse_path_cached < 0) {
        int best = DSE_PATH_BASE, cap = DSE_PATH_AVX512;
        const char *want = getenv("DSE_KERNELS");
        __builtin_cpu_init();
        if (DSE_AVX2_CPU()) best = DSE_AVX512_CPU() ? DSE_PATH_AVX512 : DSE_PATH_AVX2;
        if (want && (!strcmp(want, "baseline") || !strcmp(want, "base") || !strcmp(want, "sse2")))
            cap = DSE_PATH_BASE;
        else if (want && !strcmp(want, "avx2"))
            cap = DSE_PATH_AVX2;
        dse_path_cached = best < cap ? best : cap;
    }
    return dse_path_cached;
}
#endif

/* push() of one conv column: the blocked product with its bias/ReLU epilogue fused, written to
 * out[0..nout) and, unless NULL, to the mirrored ring's twin row out2 (the same floats). */
static void dse_gemv_push(const float *const *x, const ptrdiff_t *woff, ptrdiff_t n_chunks,
                          const ptrdiff_t *clen, const float *w, ptrdiff_t nblk, ptrdiff_t blk_stride,
                          ptrdiff_t nout, float *out, float *out2, const float *shift, int relu)
{
    DSE_NEON_DISPATCH(dse_gemv_push_neon(x, woff, n_chunks, clen, w, nblk, blk_stride, nout, out, out2, shift, relu))
#if DSE_X86_DISPATCH
    switch (dse_path()) {
    case DSE_PATH_AVX512:
        dse_gemv_push_avx512(x, woff, n_chunks, clen, w, nblk, blk_stride, nout, out, out2, shift, relu);
        return;
    case DSE_PATH_AVX2:
        dse_gemv_push_avx2(x, woff, n_chunks, clen, w, nblk, blk_stride, nout, out, out2, shift, relu);
        return;
    }
#endif
    dse_gemv_push_base(x, woff, n_chunks, clen, w, nblk, blk_stride, nout, out, out2, shift, relu);
}

static void dse_gemv_frames(const float *const *x, ptrdiff_t xstride, const ptrdiff_t *woff,
                            ptrdiff_t n_chunks, const ptrdiff_t *clen, const float *w, ptrdiff_t nblk,
                            ptrdiff_t blk_stride, ptrdiff_t nout, ptrdiff_t nf, float *const *out,
                            float *const *out2, ptrdiff_t ooff, const float *shift, int relu)
{
    DSE_NEON_DISPATCH(dse_gemv_frames_neon(x, xstride, woff, n_chunks, clen, w, nblk, blk_stride, nout, nf, out, out2,
                                           ooff, shift, relu))
#if DSE_X86_DISPATCH
    switch (dse_path()) {
    case DSE_PATH_AVX512:
        dse_gemv_frames_avx512(x, xstride, woff, n_chunks, clen, w, nblk, blk_stride, nout, nf, out,
                               out2, ooff, shift, relu);
        return;
    case DSE_PATH_AVX2:
        dse_gemv_frames_avx2(x, xstride, woff, n_chunks, clen, w, nblk, blk_stride, nout, nf, out,
                             out2, ooff, shift, relu);
        return;
    }
#endif
    dse_gemv_frames_base(x, xstride, woff, n_chunks, clen, w, nblk, blk_stride, nout, nf, out, out2,
                         ooff, shift, relu);
}

/* Strip rows (the positions that padding reaches, recomputed for every window): nf rows
 * whose inputs have no common stride, each chunk's input a pointer of its own. Chunk j of row
 * f reads x[xrow[j] + f] + xoff[j]; otherwise as dse_gemv_frames (out2 NULL), and per output
 * the same terms in the same order as one row at a time. */
static void dse_gemv_rows(const float *const *x, const ptrdiff_t *xrow, const ptrdiff_t *xoff,
                          const ptrdiff_t *woff, ptrdiff_t n_chunks, const ptrdiff_t *clen,
                          const float *w, ptrdiff_t nblk, ptrdiff_t blk_stride, ptrdiff_t nout,
                          ptrdiff_t nf, float *const *out, ptrdiff_t ooff, const float *shift, int relu)
{
    DSE_NEON_DISPATCH(dse_gemv_rows_neon(x, xrow, xoff, woff, n_chunks, clen, w, nblk, blk_stride, nout, nf, out, ooff,
                                         shift, relu))
#if DSE_X86_DISPATCH
    switch (dse_path()) {
    case DSE_PATH_AVX512:
        dse_gemv_rows_avx512(x, xrow, xoff, woff, n_chunks, clen, w, nblk, blk_stride, nout, nf, out,
                             ooff, shift, relu);
        return;
    case DSE_PATH_AVX2:
        dse_gemv_rows_avx2(x, xrow, xoff, woff, n_chunks, clen, w, nblk, blk_stride, nout, nf, out,
                           ooff, shift, relu);
        return;
    }
#endif
    dse_gemv_rows_base(x, xrow, xoff, woff, n_chunks, clen, w, nblk, blk_stride, nout, nf, out, ooff,
                       shift, relu);
}

static void dse_gemv_streams(const float *const *x, const ptrdiff_t *xoff, const ptrdiff_t *woff,
                             ptrdiff_t n_chunks, const ptrdiff_t *clen, const float *w, ptrdiff_t nblk,
                             ptrdiff_t blk_stride, ptrdiff_t nout, ptrdiff_t ns, float *const *out,
                             float *const *out2, ptrdiff_t ooff, const float *shift, int relu)
{
    DSE_NEON_DISPATCH(dse_gemv_streams_neon(x, xoff, woff, n_chunks, clen, w, nblk, blk_stride, nout, ns, out, out2,
                                            ooff, shift, relu))
#if DSE_X86_DISPATCH
    switch (dse_path()) {
    case DSE_PATH_AVX512:
        dse_gemv_streams_avx512(x, xoff, woff, n_chunks, clen, w, nblk, blk_stride, nout, ns, out, out2,
                                ooff, shift, relu);
        return;
    case DSE_PATH_AVX2:
        dse_gemv_streams_avx2(x, xoff, woff, n_chunks, clen, w, nblk, blk_stride, nout, ns, out, out2,
                              ooff, shift, relu);
        return;
    }
#endif
    dse_gemv_streams_base(x, xoff, woff, n_chunks, clen, w, nblk, blk_stride, nout, ns, out, out2, ooff,
                          shift, relu);
}

/* The sum of w[0..n) on the path push runs (the bench's weight-streaming floor). */
static float dse_read_floats(const float *w, ptrdiff_t n)
{
#if DSE_ARM32_DISPATCH
    if (dse_neon()) return dse_read_neon(w, n);
#endif
#if DSE_X86_DISPATCH
    switch (dse_path()) {
    case DSE_PATH_AVX512: return dse_read_avx512(w, n);
    case DSE_PATH_AVX2: return dse_read_avx2(w, n);
    }
#endif
    return dse_read_base(w, n);
}

/* Which kernels run here (reported by debug_info / the bench header). */
static const char *dse_kernel_isa(void)
{
#if DSE_X86_DISPATCH
    switch (dse_path()) {
    case DSE_PATH_AVX512: return "avx512 (x86-64-v4, 16 floats)";
    case DSE_PATH_AVX2: return "avx2+fma (8 floats)";
    }
#endif
#if DSE_ARM32_DISPATCH
    if (dse_neon()) return "neon-vfpv4 (4 floats, denormals flushed)";
#endif
#if defined(__aarch64__) || defined(__ARM_NEON)
    return "neon (4 floats)";
#elif defined(__x86_64__) || defined(__SSE2__)
    return "sse2 (4 floats)";
#else
    return "scalar";
#endif
}

#endif
