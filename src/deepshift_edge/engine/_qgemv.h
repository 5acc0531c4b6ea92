/* int8 matrix-vector products for the int8 streaming conv kernel (exact, int32 accumulators).
 *
 * One output position of an int8 conv: acc[o] = sum over chunks j (time tap x feature tap)
 * and input channels c of w[j][c][o] * x_j[c], with x int8 activations and w int8 weights.
 * The caller adds the bias and subtracts (zero point + dse_qoffset()) * sum of the weights of
 * the chunks it used, then requantizes (gemmlowp arithmetic, in _kernels.pyx).
 *
 * Weights come in blocks of DSE_QBLK outputs, in one of two layouts (dse_qlayout()):
 *   - DSE_QLAYOUT_C16: int16 [group][block][chunk][cin][16]: one multiply-accumulate of 16
 *     outputs per input channel. Plain C, vectorised by the compiler (x86 SSE2/AVX2, NEON's
 *     widening SMLAL on aarch64 and armv7).
 *   - DSE_QLAYOUT_PAIRS: int16 [group][block][chunk][ceil(cin/2)][16][2]: two channels per
 *     PMADDWD (x86 without VNNI: SSE2 baseline and AVX2), which multiplies int16 pairs and adds
 *     each pair exactly into int32 (|x| <= 128, |w| <= 127: a pair is at most 32,512).
 *   - DSE_QLAYOUT_DOT4: int8 [group][block][chunk][ceil(cin/4)][16][4]: four channels per
 *     dot-product instruction (x86 VPDPBUSD with AVX-VNNI or AVX512-VNNI, ARMv8.2 SDOT).
 *     VPDPBUSD multiplies unsigned by signed bytes, so the x86 kernels feed x XOR 0x80 = x + 128
 *     and report an input offset of 128 (dse_qoffset()), which the caller's correction removes.
 * Every path adds the same integers, so all give identical results (integer addition is exact).
 *
 * Chosen at run time on the CPU that runs it: __builtin_cpu_supports on x86-64,
 * getauxval(AT_HWCAP) on ARM. DSE_QKERNELS=scalar|c16|avxvnni|avx512vnni|dotprod forces a path
 * the CPU has (tests run every one); DSE_KERNELS=baseline caps x86 at the plain C path too.
 */
#ifndef DSE_QGEMV_H
#define DSE_QGEMV_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>

#define DSE_QBLK 16
enum { DSE_QLAYOUT_C16 = 0, DSE_QLAYOUT_DOT4 = 1, DSE_QLAYOUT_PAIRS = 2 };
enum { DSE_QPATH_C16 = 0, DSE_QPATH_AVXVNNI = 1, DSE_QPATH_AVX512VNNI = 2, DSE_QPATH_DOTPROD = 3,
       DSE_QPATH_C16_V3 = 4, DSE_QPATH_C16_NEON = 5 };

/* ---------------------------------------------------------------------------- the C16 layout */
#define DSE_QC16_BODY                                                                             \
    for (ptrdiff_t b = 0; b < nblk; b++) {                                                        \
        int32_t a[DSE_QBLK] = {0};                                                                \
        const int16_t *wb = (const int16_t *)w + b * blk_stride;                                  \
        for (ptrdiff_t j = 0; j < n; j++) {                                                       \
            const int8_t *xj = x[j];                                                              \
            const int16_t *wj = wb + chunk[j] * cin * DSE_QBLK;                                   \
            for (ptrdiff_t c = 0; c < cin; c++) {                                                 \
                const int32_t xc = xj[c];                                                         \
                for (int o = 0; o < DSE_QBLK; o++)                                                \
                    a[o] += (int32_t)wj[c * DSE_QBLK + o] * xc;                                   \
            }                                                                                     \
        }                                                                                         \
        memcpy(acc + b * DSE_QBLK, a, sizeof(a));                                                 \
    }

#define DSE_QC16_SIG(NAME, ATTR)                                                                  \
    ATTR static void NAME(const int8_t *const *x, const ptrdiff_t *chunk, ptrdiff_t n,            \
                          ptrdiff_t cin, const void *w, ptrdiff_t nblk, ptrdiff_t blk_stride,     \
                          int32_t *acc)

DSE_QC16_SIG(dse_qgemv_c16, ) { DSE_QC16_BODY }

#if defined(__x86_64__) && defined(__GNUC__) && !defined(DSE_NO_CLONES)
#define DSE_QX86 1
#include <immintrin.h>
DSE_QC16_SIG(dse_qgemv_c16_v3, __attribute__((target("avx2")))) { DSE_QC16_BODY }

/* Channels c and c+1 sign-extended to int16, as one 32-bit lane (past cin: 0; its weight is 0). */
static inline int32_t dse_q2s(const int8_t *x, ptrdiff_t c, ptrdiff_t cin)
{
    const uint32_t lo = (uint16_t)(int16_t)x[c];
    const uint32_t hi = c + 1 < cin ? (uint16_t)(int16_t)x[c + 1] : 0u;
    return (int32_t)(lo | (hi << 16));
}

/* The PAIRS layout, SSE2 (every x86-64): 16 outputs in 4 xmm accumulators, one PMADDWD each
 * per channel pair. */
static void dse_qgemv_pairs_sse2(const int8_t *const *x, const ptrdiff_t *chunk, ptrdiff_t n,
                                 ptrdiff_t cin, const void *w, ptrdiff_t nblk, ptrdiff_t blk_stride,
                                 int32_t *acc)
{
    const ptrdiff_t cp = (cin + 1) / 2;
    for (ptrdiff_t b = 0; b < nblk; b++) {
        __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
        const int16_t *wb = (const int16_t *)w + b * blk_stride;
        for (ptrdiff_t j = 0; j < n; j++) {
            const int8_t *xj = x[j];
            const int16_t *wj = wb + chunk[j] * cp * DSE_QBLK * 2;
            for (ptrdiff_t q = 0; q < cp; q++) {
                const __m128i xv = _mm_set1_epi32(dse_q2s(xj, 2 * q, cin));
                const __m128i *wq = (const __m128i *)(wj + q * DSE_QBLK * 2);
                a0 = _mm_add_epi32(a0, _mm_madd_epi16(_mm_loadu_si128(wq), xv));
                a1 = _mm_add_epi32(a1, _mm_madd_epi16(_mm_loadu_si128(wq + 1), xv));
                a2 = _mm_add_epi32(a2, _mm_madd_epi16(_mm_loadu_si128(wq + 2), xv));
                a3 = _mm_add_epi32(a3, _mm_madd_epi16(_mm_loadu_si128(wq + 3), xv));
            }
        }
        _mm_storeu_si128((__m128i *)(acc + b * DSE_QBLK), a0);
        _mm_storeu_si128((__m128i *)(acc + b * DSE_QBLK + 4), a1);
        _mm_storeu_si128((__m128i *)(acc + b * DSE_QBLK + 8), a2);
        _mm_storeu_si128((__m128i *)(acc + b * DSE_QBLK + 12), a3);
    }
}

/* The PAIRS layout, AVX2: 16 outputs in 2 ymm accumulators per block, two blocks per pass
 * (4 independent chains), one VPMADDWD per 8 outputs and channel pair. */
__attribute__((target("avx2")))
static void dse_qgemv_pairs_avx2(const int8_t *const *x, const ptrdiff_t *chunk, ptrdiff_t n,
                                 ptrdiff_t cin, const void *w, ptrdiff_t nblk, ptrdiff_t blk_stride,
                                 int32_t *acc)
{
    const ptrdiff_t cp = (cin + 1) / 2;
    for (ptrdiff_t b = 0; b < nblk; b += 2) {
        const int two = b + 1 < nblk;
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
        const int16_t *w0 = (const int16_t *)w + b * blk_stride;
        const int16_t *w1 = two ? w0 + blk_stride : w0;
        for (ptrdiff_t j = 0; j < n; j++) {
            const int8_t *xj = x[j];
            const ptrdiff_t off = chunk[j] * cp * DSE_QBLK * 2;
            const int16_t *p0 = w0 + off, *p1 = w1 + off;
            for (ptrdiff_t q = 0; q < cp; q++) {
                const __m256i xv = _mm256_set1_epi32(dse_q2s(xj, 2 * q, cin));
                const __m256i *q0 = (const __m256i *)(p0 + q * DSE_QBLK * 2);
                const __m256i *q1 = (const __m256i *)(p1 + q * DSE_QBLK * 2);
                a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_loadu_si256(q0), xv));
                a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_loadu_si256(q0 + 1), xv));
                if (two) {
                    a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_loadu_si256(q1), xv));
                    a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_loadu_si256(q1 + 1), xv));
                }
            }
        }
        _mm256_storeu_si256((__m256i *)(acc + b * DSE_QBLK), a0);
        _mm256_storeu_si256((__m256i *)(acc + b * DSE_QBLK + 8), a1);
        if (two) {
            _mm256_storeu_si256((__m256i *)(acc + (b + 1) * DSE_QBLK), a2);
            _mm256_storeu_si256((__m256i *)(acc + (b + 1) * DSE_QBLK + 8), a3);
        }
    }
}

/* x^0x80 of 4 channels as one 32-bit lane (the tail zero-padded: its weights are 0). */
static inline int32_t dse_q4u(const int8_t *x, ptrdiff_t c, ptrdiff_t cin)
{
    int32_t v;
    if (c + 4 <= cin) {
        memcpy(&v, x + c, 4); /* one unaligned load */
    } else {
        /* the 1-3 channels left, assembled in a register: a byte-wise memcpy into a stack word
         * then a 4-byte load stalls store forwarding (and calls memcpy), per position */
        uint32_t u = 0;
        for (ptrdiff_t i = 0; i < cin - c; i++)
            u |= (uint32_t)(uint8_t)x[c + i] << (8 * i);
        v = (int32_t)u;
    }
    return v ^ (int32_t)0x80808080;
}

static inline int32_t dse_q4raw(const int8_t *x)
{
    int32_t v;
    memcpy(&v, x, 4);
    return v;
}

/* AVX-VNNI: 2 blocks (4 ymm accumulators) per pass, quads in pairs on two accumulator sets
 * (8 independent chains hide VPDPBUSD's latency); the tail quad zero-padded. */
__attribute__((target("avx2,avxvnni")))
static void dse_qgemv_avxvnni(const int8_t *const *x, const ptrdiff_t *chunk, ptrdiff_t n,
                              ptrdiff_t cin, const void *w, ptrdiff_t nblk, ptrdiff_t blk_stride,
                              int32_t *acc)
{
    const ptrdiff_t cq = (cin + 3) / 4, full = cin / 4;
    const __m256i k80 = _mm256_set1_epi32((int32_t)0x80808080);
    for (ptrdiff_t b = 0; b < nblk; b += 2) {
        const int two = b + 1 < nblk;
        __m256i a[4], e[4];
        for (int k = 0; k < 4; k++) a[k] = e[k] = _mm256_setzero_si256();
        const int8_t *w0 = (const int8_t *)w + b * blk_stride;
        const int8_t *w1 = two ? w0 + blk_stride : w0;
        for (ptrdiff_t j = 0; j < n; j++) {
            const int8_t *xj = x[j];
            const ptrdiff_t off = chunk[j] * cq * DSE_QBLK * 4;
            const int8_t *p0 = w0 + off, *p1 = w1 + off;
            ptrdiff_t q = 0;
            for (; q + 1 < full; q += 2) {
                const __m256i xa = _mm256_xor_si256(_mm256_set1_epi32(dse_q4raw(xj + 4 * q)), k80);
                const __m256i xb = _mm256_xor_si256(_mm256_set1_epi32(dse_q4raw(xj + 4 * q + 4)), k80);
                a[0] = _mm256_dpbusd_avx_epi32(a[0], xa, _mm256_loadu_si256((const __m256i *)(p0 + q * 64)));
                a[1] = _mm256_dpbusd_avx_epi32(a[1], xa, _mm256_loadu_si256((const __m256i *)(p0 + q * 64 + 32)));
                e[0] = _mm256_dpbusd_avx_epi32(e[0], xb, _mm256_loadu_si256((const __m256i *)(p0 + q * 64 + 64)));
                e[1] = _mm256_dpbusd_avx_epi32(e[1], xb, _mm256_loadu_si256((const __m256i *)(p0 + q * 64 + 96)));
                if (two) {
                    a[2] = _mm256_dpbusd_avx_epi32(a[2], xa, _mm256_loadu_si256((const __m256i *)(p1 + q * 64)));
                    a[3] = _mm256_dpbusd_avx_epi32(a[3], xa, _mm256_loadu_si256((const __m256i *)(p1 + q * 64 + 32)));
                    e[2] = _mm256_dpbusd_avx_epi32(e[2], xb, _mm256_loadu_si256((const __m256i *)(p1 + q * 64 + 64)));
                    e[3] = _mm256_dpbusd_avx_epi32(e[3], xb, _mm256_loadu_si256((const __m256i *)(p1 + q * 64 + 96)));
                }
            }
            for (; q < cq; q++) {
                const __m256i xa = _mm256_set1_epi32(dse_q4u(xj, 4 * q, cin));
                a[0] = _mm256_dpbusd_avx_epi32(a[0], xa, _mm256_loadu_si256((const __m256i *)(p0 + q * 64)));
                a[1] = _mm256_dpbusd_avx_epi32(a[1], xa, _mm256_loadu_si256((const __m256i *)(p0 + q * 64 + 32)));
                if (two) {
                    a[2] = _mm256_dpbusd_avx_epi32(a[2], xa, _mm256_loadu_si256((const __m256i *)(p1 + q * 64)));
                    a[3] = _mm256_dpbusd_avx_epi32(a[3], xa, _mm256_loadu_si256((const __m256i *)(p1 + q * 64 + 32)));
                }
            }
        }
        _mm256_storeu_si256((__m256i *)(acc + b * DSE_QBLK), _mm256_add_epi32(a[0], e[0]));
        _mm256_storeu_si256((__m256i *)(acc + b * DSE_QBLK + 8), _mm256_add_epi32(a[1], e[1]));
        if (two) {
            _mm256_storeu_si256((__m256i *)(acc + (b + 1) * DSE_QBLK), _mm256_add_epi32(a[2], e[2]));
            _mm256_storeu_si256((__m256i *)(acc + (b + 1) * DSE_QBLK + 8), _mm256_add_epi32(a[3], e[3]));
        }
    }
}

/* AVX512-VNNI: up to 4 blocks (one zmm each) per pass, quads in pairs on two accumulator
 * sets: 8 independent chains. */
#define DSE_Q512_PASS(NB)                                                                          \
    {                                                                                              \
        __m512i a[NB], e[NB];                                                                      \
        for (int k = 0; k < NB; k++) a[k] = e[k] = _mm512_setzero_si512();                         \
        for (ptrdiff_t j = 0; j < n; j++) {                                                        \
            const int8_t *xj = x[j];                                                               \
            const int8_t *p = (const int8_t *)w + b * blk_stride + chunk[j] * cq * DSE_QBLK * 4;   \
            ptrdiff_t q = 0;                                                                       \
            for (; q + 1 < full; q += 2) {                                                         \
                const __m512i xa = _mm512_xor_si512(_mm512_set1_epi32(dse_q4raw(xj + 4 * q)), k80);   \
                const __m512i xb = _mm512_xor_si512(_mm512_set1_epi32(dse_q4raw(xj + 4 * q + 4)), k80); \
                for (int k = 0; k < NB; k++) {                                                     \
                    a[k] = _mm512_dpbusd_epi32(a[k], xa, _mm512_loadu_si512((const void *)(p + k * blk_stride + q * 64)));      \
                    e[k] = _mm512_dpbusd_epi32(e[k], xb, _mm512_loadu_si512((const void *)(p + k * blk_stride + q * 64 + 64))); \
                }                                                                                  \
            }                                                                                      \
            for (; q < cq; q++) {                                                                  \
                const __m512i xa = _mm512_set1_epi32(dse_q4u(xj, 4 * q, cin));                     \
                for (int k = 0; k < NB; k++)                                                       \
                    a[k] = _mm512_dpbusd_epi32(a[k], xa, _mm512_loadu_si512((const void *)(p + k * blk_stride + q * 64))); \
            }                                                                                      \
        }                                                                                          \
        for (int k = 0; k < NB; k++)                                                               \
            _mm512_storeu_si512((void *)(acc + (b + k) * DSE_QBLK), _mm512_add_epi32(a[k], e[k])); \
        b += NB;                                                                                   \
    }

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void dse_qgemv_avx512vnni(const int8_t *const *x, const ptrdiff_t *chunk, ptrdiff_t n,
                                 ptrdiff_t cin, const void *w, ptrdiff_t nblk, ptrdiff_t blk_stride,
                                 int32_t *acc)
{
    const ptrdiff_t cq = (cin + 3) / 4, full = cin / 4;
    const __m512i k80 = _mm512_set1_epi32((int32_t)0x80808080);
    ptrdiff_t b = 0;
    while (b + 4 <= nblk) DSE_Q512_PASS(4)
    if (b + 2 <= nblk) DSE_Q512_PASS(2)
    if (b < nblk) DSE_Q512_PASS(1)
}

/* Strip rows (dse_qgemv_rows): NR rows x one block per pass, one accumulator per row (NR
 * independent chains), each weight vector loaded once for the NR rows. */
#define DSE_Q512_ROWS(NR)                                                                          \
    {                                                                                              \
        __m512i a[NR];                                                                             \
        for (int f = 0; f < NR; f++) a[f] = _mm512_setzero_si512();                                \
        for (ptrdiff_t j = 0; j < n; j++) {                                                        \
            const int8_t *xr[NR];                                                                  \
            for (int f = 0; f < NR; f++) xr[f] = x[xrow[j] + f0 + f] + xoff[j];                    \
            const int8_t *p = (const int8_t *)w + b * blk_stride + chunk[j] * cq * DSE_QBLK * 4;   \
            ptrdiff_t q = 0;                                                                       \
            for (; q < full; q++) {                                                                \
                const __m512i wv = _mm512_loadu_si512((const void *)(p + q * 64));                 \
                for (int f = 0; f < NR; f++)                                                       \
                    a[f] = _mm512_dpbusd_epi32(a[f], _mm512_xor_si512(                             \
                        _mm512_set1_epi32(dse_q4raw(xr[f] + 4 * q)), k80), wv);                    \
            }                                                                                      \
            for (; q < cq; q++) {                                                                  \
                const __m512i wv = _mm512_loadu_si512((const void *)(p + q * 64));                 \
                for (int f = 0; f < NR; f++)                                                       \
                    a[f] = _mm512_dpbusd_epi32(a[f], _mm512_set1_epi32(dse_q4u(xr[f], 4 * q, cin)), wv); \
            }                                                                                      \
        }                                                                                          \
        for (int f = 0; f < NR; f++)                                                               \
            _mm512_storeu_si512((void *)(acc + (f0 + f) * astride + b * DSE_QBLK), a[f]);          \
        f0 += NR;                                                                                  \
    }

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void dse_qgemv_rows_avx512vnni(const int8_t *const *x, const ptrdiff_t *xrow,
                                      const ptrdiff_t *xoff, const ptrdiff_t *chunk, ptrdiff_t n,
                                      ptrdiff_t cin, const void *w, ptrdiff_t nblk,
                                      ptrdiff_t blk_stride, ptrdiff_t nf, int32_t *acc,
                                      ptrdiff_t astride)
{
    const ptrdiff_t cq = (cin + 3) / 4, full = cin / 4;
    const __m512i k80 = _mm512_set1_epi32((int32_t)0x80808080);
    for (ptrdiff_t b = 0; b < nblk; b++) {
        ptrdiff_t f0 = 0;
        while (f0 + 8 <= nf) DSE_Q512_ROWS(8)
        if (f0 + 4 <= nf) DSE_Q512_ROWS(4)
        if (f0 + 2 <= nf) DSE_Q512_ROWS(2)
        if (f0 < nf) DSE_Q512_ROWS(1)
    }
}
#else
#define DSE_QX86 0
#endif

#if defined(__aarch64__) && defined(__GNUC__) && defined(__linux__)
#define DSE_QARM64 1
#include <arm_neon.h>
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
static inline int32_t dse_q4s(const int8_t *x, ptrdiff_t c, ptrdiff_t cin)
{
    int32_t v;
    if (c + 4 <= cin) {
        memcpy(&v, x + c, 4);
    } else {  /* the 1-3 channels left, in a register (see dse_q4u) */
        uint32_t u = 0;
        for (ptrdiff_t i = 0; i < cin - c; i++)
            u |= (uint32_t)(uint8_t)x[c + i] << (8 * i);
        v = (int32_t)u;
    }
    return v;
}

/* SDOT: two blocks of 16 outputs per pass (8 accumulator chains), each broadcast input quad
 * used for both; the whole quads without a bounds check, the 1-3 channels past them after.
 * DSE_QDOT_QUAD: one input quad xv times quad q of the NB blocks' weights (4 SDOT each). */
#define DSE_QDOT_QUAD(NB)                                                                          \
    for (int k = 0; k < NB; k++) {                                                                 \
        const int8_t *wq = wj + k * blk_stride + q * 64;                                           \
        a[4 * k] = vdotq_s32(a[4 * k], vld1q_s8(wq), xv);                                          \
        a[4 * k + 1] = vdotq_s32(a[4 * k + 1], vld1q_s8(wq + 16), xv);                             \
        a[4 * k + 2] = vdotq_s32(a[4 * k + 2], vld1q_s8(wq + 32), xv);                             \
        a[4 * k + 3] = vdotq_s32(a[4 * k + 3], vld1q_s8(wq + 48), xv);                             \
    }

#define DSE_QDOT_PASS(NB)                                                                          \
    {                                                                                              \
        int32x4_t a[4 * NB];                                                                       \
        for (int k = 0; k < 4 * NB; k++) a[k] = vdupq_n_s32(0);                                    \
        for (ptrdiff_t j = 0; j < n; j++) {                                                        \
            const int8_t *xj = x[j];                                                               \
            const int8_t *wj = (const int8_t *)w + b * blk_stride + chunk[j] * cq * DSE_QBLK * 4;  \
            ptrdiff_t q = 0;                                                                       \
            for (; q < full; q++) {                                                                \
                int32_t v;                                                                         \
                memcpy(&v, xj + 4 * q, 4);                                                         \
                const int8x16_t xv = vreinterpretq_s8_s32(vdupq_n_s32(v));                         \
                DSE_QDOT_QUAD(NB)                                                                  \
            }                                                                                      \
            for (; q < cq; q++) {                                                                  \
                const int8x16_t xv = vreinterpretq_s8_s32(vdupq_n_s32(dse_q4s(xj, 4 * q, cin)));   \
                DSE_QDOT_QUAD(NB)                                                                  \
            }                                                                                      \
        }                                                                                          \
        for (int k = 0; k < 4 * NB; k++)                                                           \
            vst1q_s32(acc + b * DSE_QBLK + 4 * k, a[k]);                                           \
        b += NB;                                                                                   \
    }

__attribute__((target("arch=armv8.2-a+dotprod")))
static void dse_qgemv_dotprod(const int8_t *const *x, const ptrdiff_t *chunk, ptrdiff_t n,
                              ptrdiff_t cin, const void *w, ptrdiff_t nblk, ptrdiff_t blk_stride,
                              int32_t *acc)
{
    const ptrdiff_t cq = (cin + 3) / 4, full = cin / 4;
    ptrdiff_t b = 0;
    while (b + 2 <= nblk) DSE_QDOT_PASS(2)
    if (b < nblk) DSE_QDOT_PASS(1)
}
/* Without the dot-product extension (the Pi 4's Cortex-A72): the C16 layout's int16 weights
 * times each input channel widened to int16, SMLAL/SMLAL2 by lane into int32, four channels
 * per step, two blocks per pass (8 accumulator chains: SMLAL's latency is 4 on the A72). The
 * plain C of DSE_QC16_BODY adds the same products; GCC's vectorisation of it spills. */
#define DSE_QSMLAL_LANE(K, WC, L)                                                                 \
    {                                                                                              \
        const int16x8_t w0 = vld1q_s16(WC), w1 = vld1q_s16((WC) + 8);                              \
        a[4 * (K)] = vmlal_lane_s16(a[4 * (K)], vget_low_s16(w0), xv, L);                          \
        a[4 * (K) + 1] = vmlal_high_lane_s16(a[4 * (K) + 1], w0, xv, L);                           \
        a[4 * (K) + 2] = vmlal_lane_s16(a[4 * (K) + 2], vget_low_s16(w1), xv, L);                  \
        a[4 * (K) + 3] = vmlal_high_lane_s16(a[4 * (K) + 3], w1, xv, L);                           \
    }
#define DSE_QSMLAL_PASS(NB)                                                                        \
    {                                                                                              \
        int32x4_t a[4 * NB];                                                                       \
        for (int k = 0; k < 4 * NB; k++) a[k] = vdupq_n_s32(0);                                    \
        for (ptrdiff_t j = 0; j < n; j++) {                                                        \
            const int8_t *xj = x[j];                                                               \
            const int16_t *wj = (const int16_t *)w + b * blk_stride + chunk[j] * cin * DSE_QBLK;   \
            ptrdiff_t c = 0;                                                                       \
            for (; c + 4 <= cin; c += 4) {                                                         \
                int32_t v;                                                                         \
                memcpy(&v, xj + c, 4);                                                             \
                const int16x4_t xv = vget_low_s16(vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(v))));   \
                for (int k = 0; k < NB; k++) {                                                     \
                    const int16_t *wc = wj + k * blk_stride + c * DSE_QBLK;                        \
                    DSE_QSMLAL_LANE(k, wc, 0)                                                      \
                    DSE_QSMLAL_LANE(k, wc + DSE_QBLK, 1)                                           \
                    DSE_QSMLAL_LANE(k, wc + 2 * DSE_QBLK, 2)                                       \
                    DSE_QSMLAL_LANE(k, wc + 3 * DSE_QBLK, 3)                                       \
                }                                                                                  \
            }                                                                                      \
            for (; c < cin; c++) {                                                                 \
                const int16x4_t xv = vdup_n_s16((int16_t)xj[c]);                                   \
                for (int k = 0; k < NB; k++)                                                       \
                    DSE_QSMLAL_LANE(k, wj + k * blk_stride + c * DSE_QBLK, 0)                      \
            }                                                                                      \
        }                                                                                          \
        for (int k = 0; k < 4 * NB; k++)                                                           \
            vst1q_s32(acc + b * DSE_QBLK + 4 * k, a[k]);                                           \
        b += NB;                                                                                   \
    }

static void dse_qgemv_smlal(const int8_t *const *x, const ptrdiff_t *chunk, ptrdiff_t n,
                            ptrdiff_t cin, const void *w, ptrdiff_t nblk, ptrdiff_t blk_stride,
                            int32_t *acc)
{
    ptrdiff_t b = 0;
    while (b + 2 <= nblk) DSE_QSMLAL_PASS(2)
    if (b < nblk) DSE_QSMLAL_PASS(1)
}
#else
#define DSE_QARM64 0
#endif

#if defined(__arm__) && !defined(__aarch64__) && defined(__GNUC__) && defined(__linux__)
#define DSE_QARM32 1
#include <sys/auxv.h>
#ifndef HWCAP_NEON
#define HWCAP_NEON (1 << 12)
#endif
/* armv7: the same C, compiled for NEON (integer NEON is exact), chosen where HWCAP_NEON says so. */
DSE_QC16_SIG(dse_qgemv_c16_neon, __attribute__((target("fpu=neon")))) { DSE_QC16_BODY }
#else
#define DSE_QARM32 0
#endif

/* ---------------------------------------------------------------------------- int8 max pool
 * One output row of an int8 max pool (run_qpool): out[fo * cout + c] = the maximum of
 * taps[i][fi * cin + c] over the time taps present (NULL: padding) and the feature taps
 * fi = fo * sf - pf + k inside the frame; -128 where there is none. 16 channels stay in a vector
 * register over every tap and are stored once (the per-tap helper this replaces loaded and
 * stored the running maximum each time: 80 calls of 16 bytes for spectrogram's first pool).
 * A maximum is exact: the same bytes. GCC's vector extensions: SSE2 compare and select, NEON. */
typedef signed char dse_q16 __attribute__((vector_size(16), aligned(1)));

static void dse_qpool_max_row(const int8_t *const *taps, ptrdiff_t ntaps, ptrdiff_t kf, ptrdiff_t sf,
                              ptrdiff_t pf, ptrdiff_t fin, ptrdiff_t fout, ptrdiff_t cin, ptrdiff_t cout,
                              int8_t *out)
{
    for (ptrdiff_t fo = 0; fo < fout; fo++) {
        int8_t *o = out + fo * cout;
        ptrdiff_t c = 0;
        for (; c + 16 <= cout; c += 16) {
            dse_q16 m;
            memset(&m, -128, sizeof(m));
            for (ptrdiff_t i = 0; i < ntaps; i++) {
                if (!taps[i]) continue;
                for (ptrdiff_t k = 0; k < kf; k++) {
                    const ptrdiff_t fi = fo * sf - pf + k;
                    if (fi < 0 || fi >= fin) continue;
                    dse_q16 x;
                    memcpy(&x, taps[i] + fi * cin + c, sizeof(x));
                    const dse_q16 gt = x > m; /* -1 where x > m */
                    m = (x & gt) | (m & ~gt);
                }
            }
            memcpy(o + c, &m, sizeof(m));
        }
        if (c < cout) { /* the last cout - c < 16 channels, one walk over the taps */
            const ptrdiff_t rem = cout - c;
            int8_t m[16];
            memset(m, -128, sizeof(m));
            for (ptrdiff_t i = 0; i < ntaps; i++) {
                if (!taps[i]) continue;
                for (ptrdiff_t k = 0; k < kf; k++) {
                    const ptrdiff_t fi = fo * sf - pf + k;
                    if (fi < 0 || fi >= fin) continue;
                    const int8_t *x = taps[i] + fi * cin + c;
                    for (ptrdiff_t r = 0; r < rem; r++) m[r] = x[r] > m[r] ? x[r] : m[r];
                }
            }
            memcpy(o + c, m, (size_t)rem);
        }
    }
}

/* ---------------------------------------------------------------------------- the input quantizer
 * roundf(v) (half away from zero) without the libm call, for |v| clamped to 1024 first (a larger
 * value saturates the int8 result either way). Exact: v - trunc(v) is exact in float32. */
static inline int32_t dse_qround(float v)
{
    v = v > 1024.0f ? 1024.0f : (v < -1024.0f ? -1024.0f : v);
    const int32_t t = (int32_t)v;
    const float d = v - (float)t;
    return t + (d >= 0.5f) - (d <= -0.5f);
}

/* ---------------------------------------------------------------------------- requantization
 * out[i] = clamp(zp + MultiplyByQuantizedMultiplier(acc[i] + bias[i], m0[i], shift[i])) with
 * gemmlowp's rounding: the same integer steps as quant/scheme.py, element for element.
 * acc + bias fits int32 (quantize() bounds every layer's accumulators). */
static inline int8_t dse_qrequant1(int32_t x, int32_t m0, int32_t sh, int32_t zp, int32_t lo, int32_t hi)
{
    const int left = sh > 0 ? sh : 0, right = sh > 0 ? 0 : -sh;
    int64_t xl = (int64_t)x * ((int64_t)1 << left);
    xl = xl > INT32_MAX ? INT32_MAX : (xl < INT32_MIN ? INT32_MIN : xl);
    const int64_t ab = xl * (int64_t)m0;
    const int64_t v = ab + (ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30)));
    const int32_t h = (int32_t)(v >= 0 ? (v >> 31) : -((-v) >> 31));
    const int32_t mask = (int32_t)(((int64_t)1 << right) - 1);
    const int32_t rem = h & mask, thr = (mask >> 1) + (h < 0 ? 1 : 0);
    /* int64: a saturated h (a left shift of a large sum) plus the zero point must not wrap */
    const int64_t q = (int64_t)(h >> right) + (rem > thr ? 1 : 0) + zp;
    return (int8_t)(q < lo ? lo : (q > hi ? hi : q));
}

/* TFLite's single rounding (TFLITE_SINGLE_ROUNDING; LiteRT's FULLY_CONNECTED): the exact
 * product x * M0 rounded once, half up, by (x * M0 + 2^(total - 1)) >> total with total =
 * 31 - shift in 1..62 (|x * M0| < 2^62; >> of a negative int64 is arithmetic in GCC and
 * Clang). quant/scheme.py: multiply_by_quantized_multiplier_single. */
static void dse_qrequant_single(const int32_t *acc, const int32_t *bias, const int32_t *m0,
                                const int32_t *shift, int32_t zp, int32_t lo, int32_t hi, int8_t *out,
                                ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        /* acc + bias fits int32 (quantize() bounds it); summed as the two-step path sums it */
        const int64_t xs = (int32_t)((uint32_t)acc[i] + (uint32_t)bias[i]);
        int64_t q = zp;
        if (m0[i] != 0) {
            const int total = 31 - shift[i];
            q += (xs * (int64_t)m0[i] + ((int64_t)1 << (total - 1))) >> total;
        }
        out[i] = (int8_t)(q < lo ? lo : (q > hi ? hi : q));
    }
}

/* onnxruntime's and XNNPACK's float requantization (quant/scheme.py: requantize_float):
 * float32(acc + bias) * scale[i] in float32, clamped to [lo - zp, hi - zp], rounded to nearest
 * with ties to even, plus zp. The rounding adds and takes away 1.5 * 2^23, as MLAS does: exact
 * for |v| <= 255, in the default rounding mode, whatever the ISA (no libm call, and GCC
 * vectorises the loop). The clamp sits between the product and the addition, so no FMA can
 * fuse them (-ffp-contract). */
static inline int8_t dse_qrequant_float1(int32_t x, float scale, int32_t zp, int32_t lo, int32_t hi)
{
    const float flo = (float)(lo - zp), fhi = (float)(hi - zp), magic = 12582912.0f;
    float v = (float)x * scale;
    v = v < flo ? flo : v;
    v = v > fhi ? fhi : v;
    return (int8_t)((int32_t)((v + magic) - magic) + zp);
}

static void dse_qrequant_float(const int32_t *acc, const int32_t *bias, const float *scale, int32_t zp,
                               int32_t lo, int32_t hi, int8_t *out, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)  /* acc + bias fits int32 (quantize() bounds it) */
        out[i] = dse_qrequant_float1((int32_t)((uint32_t)acc[i] + (uint32_t)bias[i]), scale[i], zp, lo, hi);
}

static void dse_qrequant_base(const int32_t *acc, const int32_t *bias, const int32_t *m0,
                              const int32_t *shift, int32_t zp, int32_t lo, int32_t hi, int8_t *out,
                              ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        out[i] = dse_qrequant1(acc[i] + bias[i], m0[i], shift[i], zp, lo, hi);
}

#if DSE_QX86
/* 16 lanes at a time where every shift is <= 0 (a multiplier < 1, the usual case): the
 * doubling high multiply on even and odd lanes (VPMULDQ), rounded as gemmlowp does, then the
 * rounding right shift per lane. Lanes with a left shift go through the scalar step. A tail
 * of fewer than 16 (a conv of few outputs: every strip row) runs the same lanes masked. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
static inline __m512i dse_qrequant16(__m512i x, __m512i m, __m512i sh, __m512i vzp, __m512i vlo,
                                     __m512i vhi)
{
    /* In 64-bit lanes, where nothing can overflow. SaturatingRoundingDoublingHighMul is
     * (x*m + 2^30) >> 31 with an arithmetic shift: for a negative product gemmlowp's nudge
     * 1 - 2^30 and truncating division come to the same integer, and it never saturates
     * (m0 > 0). RoundingDivideByPOT by e = -shift is then (h + 2^(e-1) - [h < 0]) >> e, the
     * correction only where e > 0. The same integers as dse_qrequant1, in fewer steps. */
    const __m512i two30 = _mm512_set1_epi64((int64_t)1 << 30);
    const __m512i one64 = _mm512_set1_epi64(1);
    const __m512i right = _mm512_sub_epi32(_mm512_setzero_si512(), sh);
    __m512i half[2];
    for (int odd = 0; odd < 2; odd++) {
        const __m512i xo = odd ? _mm512_srli_epi64(x, 32) : x;
        const __m512i mo = odd ? _mm512_srli_epi64(m, 32) : m;
        const __m512i e = odd ? _mm512_srli_epi64(right, 32) : _mm512_and_si512(right, _mm512_set1_epi64(0xffffffff));
        const __m512i h = _mm512_srai_epi64(_mm512_add_epi64(_mm512_mul_epi32(xo, mo), two30), 31);
        const __m512i rnd = _mm512_srli_epi64(_mm512_sllv_epi64(one64, e), 1);           /* 2^(e-1), 0 if e = 0 */
        const __mmask8 fix = _mm512_test_epi64_mask(e, e);                                 /* e > 0 */
        const __m512i adj = _mm512_maskz_mov_epi64(fix, _mm512_srai_epi64(h, 63));          /* -1 for h < 0 */
        half[odd] = _mm512_srav_epi64(_mm512_add_epi64(_mm512_add_epi64(h, rnd), adj), e);
    }
    __m512i q = _mm512_mask_blend_epi32((__mmask16)0xAAAA, half[0], _mm512_slli_epi64(half[1], 32));
    /* clamp to [lo - zp, hi - zp] first, then add zp: a q near the int32 edge cannot wrap */
    q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_sub_epi32(vlo, vzp)), _mm512_sub_epi32(vhi, vzp));
    return _mm512_add_epi32(q, vzp);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
static void dse_qrequant_avx512(const int32_t *acc, const int32_t *bias, const int32_t *m0,
                                const int32_t *shift, int32_t zp, int32_t lo, int32_t hi, int8_t *out,
                                ptrdiff_t n)
{
    const __m512i zero = _mm512_setzero_si512();
    const __m512i vzp = _mm512_set1_epi32(zp), vlo = _mm512_set1_epi32(lo), vhi = _mm512_set1_epi32(hi);
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i sh = _mm512_loadu_si512((const void *)(shift + i));
        if (_mm512_cmpgt_epi32_mask(sh, zero)) {  /* a left shift: exact scalar steps */
            for (int k = 0; k < 16; k++)
                out[i + k] = dse_qrequant1(acc[i + k] + bias[i + k], m0[i + k], shift[i + k], zp, lo, hi);
            continue;
        }
        const __m512i x = _mm512_add_epi32(_mm512_loadu_si512((const void *)(acc + i)),
                                           _mm512_loadu_si512((const void *)(bias + i)));
        const __m512i q = dse_qrequant16(x, _mm512_loadu_si512((const void *)(m0 + i)), sh, vzp, vlo, vhi);
        _mm_storeu_si128((__m128i *)(out + i), _mm512_cvtepi32_epi8(q));
    }
    if (i < n) {
        const __mmask16 mk = (__mmask16)((1u << (n - i)) - 1);
        const __m512i sh = _mm512_maskz_loadu_epi32(mk, shift + i);
        if (_mm512_mask_cmpgt_epi32_mask(mk, sh, zero)) {
            for (; i < n; i++)
                out[i] = dse_qrequant1(acc[i] + bias[i], m0[i], shift[i], zp, lo, hi);
            return;
        }
        const __m512i x = _mm512_add_epi32(_mm512_maskz_loadu_epi32(mk, acc + i),
                                           _mm512_maskz_loadu_epi32(mk, bias + i));
        const __m512i q = dse_qrequant16(x, _mm512_maskz_loadu_epi32(mk, m0 + i), sh, vzp, vlo, vhi);
        _mm512_mask_cvtepi32_storeu_epi8(out + i, mk, q);
    }
}

/* The same steps, 8 lanes, AVX2. AVX2 has no 64-bit arithmetic shift: the truncating division
 * of the nudged product by 2^31 adds 2^31 - 1 to negative products first, then shifts
 * logically; the quotient fits int32, so its low 32 bits are the same either way. */
__attribute__((target("avx2")))
static void dse_qrequant_avx2(const int32_t *acc, const int32_t *bias, const int32_t *m0,
                              const int32_t *shift, int32_t zp, int32_t lo, int32_t hi, int8_t *out,
                              ptrdiff_t n)
{
    const __m256i one = _mm256_set1_epi32(1), zero = _mm256_setzero_si256();
    const __m256i two30 = _mm256_set1_epi64x((int64_t)1 << 30);
    const __m256i low31 = _mm256_set1_epi64x(((int64_t)1 << 31) - 1);
    const __m256i vzp = _mm256_set1_epi32(zp), vlo = _mm256_set1_epi32(lo), vhi = _mm256_set1_epi32(hi);
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i sh = _mm256_loadu_si256((const __m256i *)(shift + i));
        if (_mm256_movemask_epi8(_mm256_cmpgt_epi32(sh, zero))) {  /* a left shift: exact scalar steps */
            for (int k = 0; k < 8; k++)
                out[i + k] = dse_qrequant1(acc[i + k] + bias[i + k], m0[i + k], shift[i + k], zp, lo, hi);
            continue;
        }
        const __m256i x = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(acc + i)),
                                           _mm256_loadu_si256((const __m256i *)(bias + i)));
        const __m256i m = _mm256_loadu_si256((const __m256i *)(m0 + i));
        __m256i half[2];
        for (int odd = 0; odd < 2; odd++) {
            const __m256i xo = odd ? _mm256_srli_epi64(x, 32) : x;
            const __m256i mo = odd ? _mm256_srli_epi64(m, 32) : m;
            const __m256i ab = _mm256_mul_epi32(xo, mo);                 /* sign-extended 32x32 -> 64 */
            const __m256i neg = _mm256_cmpgt_epi64(zero, ab);            /* all ones where ab < 0 */
            const __m256i v = _mm256_add_epi64(ab, _mm256_sub_epi64(two30, _mm256_and_si256(neg, low31)));
            const __m256i vneg = _mm256_cmpgt_epi64(zero, v);
            half[odd] = _mm256_srli_epi64(_mm256_add_epi64(v, _mm256_and_si256(vneg, low31)), 31);
        }
        const __m256i h = _mm256_blend_epi32(half[0], _mm256_slli_epi64(half[1], 32), 0xAA);
        const __m256i right = _mm256_sub_epi32(zero, sh);
        const __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, right), one);
        const __m256i rem = _mm256_and_si256(h, mask);
        const __m256i thr = _mm256_add_epi32(_mm256_srli_epi32(mask, 1), _mm256_srli_epi32(h, 31));
        __m256i q = _mm256_srav_epi32(h, right);
        q = _mm256_sub_epi32(q, _mm256_cmpgt_epi32(rem, thr));         /* +1 where rem > thr */
        /* clamp to [lo - zp, hi - zp] first, then add zp: a q near the int32 edge cannot wrap */
        q = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(q, _mm256_sub_epi32(vlo, vzp)),
                                              _mm256_sub_epi32(vhi, vzp)), vzp);
        /* 8 int32 already in [lo, hi] to 8 bytes: the saturating packs change nothing */
        const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        _mm_storel_epi64((__m128i *)(out + i), _mm_packs_epi16(w16, w16));
    }
    for (; i < n; i++)
        out[i] = dse_qrequant1(acc[i] + bias[i], m0[i], shift[i], zp, lo, hi);
}
#endif

#if DSE_QARM64
/* NEON (every aarch64 core): 8 lanes per step, gemmlowp's own NEON steps. VQRDMULH is
 * SaturatingRoundingDoublingHighMul exactly (both round (2ab + 2^31) >> 32 toward -inf, which
 * is gemmlowp's nudge-and-truncate on every input); RoundingDivideByPOT is its fixup (-1 on
 * negative lanes with a right shift, VQADD) then the rounding shift VRSHL, i.e. half away from
 * zero. A left shift (shift > 0) is VQSHL, saturating as the scalar step clamps. */
static void dse_qrequant_neon(const int32_t *acc, const int32_t *bias, const int32_t *m0,
                              const int32_t *shift, int32_t zp, int32_t lo, int32_t hi, int8_t *out,
                              ptrdiff_t n)
{
    const int32x4_t zero = vdupq_n_s32(0), vzp = vdupq_n_s32(zp);
    const int32x4_t vlo = vdupq_n_s32(lo), vhi = vdupq_n_s32(hi);
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        int16x4_t h[2];
        for (int k = 0; k < 2; k++) {
            const ptrdiff_t j = i + 4 * k;
            const int32x4_t sh = vld1q_s32(shift + j);
            const int32x4_t right = vminq_s32(sh, zero);  /* <= 0: VRSHL by it shifts right */
            int32x4_t x = vaddq_s32(vld1q_s32(acc + j), vld1q_s32(bias + j));
            x = vqshlq_s32(x, vmaxq_s32(sh, zero));
            x = vqrdmulhq_s32(x, vld1q_s32(m0 + j));
            x = vrshlq_s32(vqaddq_s32(x, vshrq_n_s32(vandq_s32(x, right), 31)), right);
            x = vminq_s32(vmaxq_s32(vqaddq_s32(x, vzp), vlo), vhi);  /* saturating: no wrap */
            h[k] = vmovn_s32(x);
        }
        vst1_s8(out + i, vmovn_s16(vcombine_s16(h[0], h[1])));
    }
    for (; i < n; i++)
        out[i] = dse_qrequant1(acc[i] + bias[i], m0[i], shift[i], zp, lo, hi);
}
#endif

static int dse_qpath_cached = -1;
static int dse_qplain = 0;  /* DSE_QKERNELS=scalar: the plain C (aarch64: no NEON intrinsics) */

static int dse_qpath(void)
{
    if (dse_qpath_cached >= 0)
        return dse_qpath_cached;
    const char *want = getenv("DSE_QKERNELS");
    const char *cap = getenv("DSE_KERNELS");
    (void)cap;
    int best = DSE_QPATH_C16;
#if DSE_QX86
    __builtin_cpu_init();
    int vnni = __builtin_cpu_supports("avxvnni") && __builtin_cpu_supports("avx2");
    int v512 = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
    int v3 = __builtin_cpu_supports("avx2");
    best = v512 ? DSE_QPATH_AVX512VNNI : vnni ? DSE_QPATH_AVXVNNI : v3 ? DSE_QPATH_C16_V3 : DSE_QPATH_C16;
    if (cap && (!strcmp(cap, "baseline") || !strcmp(cap, "base") || !strcmp(cap, "sse2")))
        best = DSE_QPATH_C16;
    else if (cap && !strcmp(cap, "avx2") && best == DSE_QPATH_AVX512VNNI)
        best = vnni ? DSE_QPATH_AVXVNNI : DSE_QPATH_C16_V3;
    if (want && !strcmp(want, "avxvnni") && vnni) best = DSE_QPATH_AVXVNNI;
    if (want && !strcmp(want, "avx512vnni") && v512) best = DSE_QPATH_AVX512VNNI;
    if (want && !strcmp(want, "c16") && v3) best = DSE_QPATH_C16_V3;
#elif DSE_QARM64
    if (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) best = DSE_QPATH_DOTPROD;
#elif DSE_QARM32
    if (getauxval(AT_HWCAP) & HWCAP_NEON) best = DSE_QPATH_C16_NEON;
#endif
    if (want && (!strcmp(want, "scalar") || !strcmp(want, "baseline"))) {
        best = DSE_QPATH_C16;
        dse_qplain = 1;  /* aarch64: the plain C multiply-adds and requantization, to test them */
    }
#if DSE_QARM64 || DSE_QARM32
    if (want && !strcmp(want, "c16")) best = DSE_QPATH_C16;
#endif
    dse_qpath_cached = best;
    return best;
}

/* Which weight layout the running path reads, and the offset its inputs carry. */
static int dse_qlayout(void)
{
    int p = dse_qpath();
    if (p == DSE_QPATH_AVXVNNI || p == DSE_QPATH_AVX512VNNI || p == DSE_QPATH_DOTPROD)
        return DSE_QLAYOUT_DOT4;
#if DSE_QX86
    return DSE_QLAYOUT_PAIRS;  /* x86-64 without VNNI: PMADDWD, SSE2 or AVX2 */
#else
    return DSE_QLAYOUT_C16;
#endif
}

static int dse_qoffset(void)
{
    int p = dse_qpath();
    return (p == DSE_QPATH_AVXVNNI || p == DSE_QPATH_AVX512VNNI) ? 128 : 0;
}

/* ---------------------------------------------------------------------------- depthwise
 * One position of an int8 depthwise conv: acc[c] = sum over the n chunks j of
 * (x_j[c] - zin) * w[chunk[j]][c], weights [chunk][channel]. Each product fits int16 (|x - zin|
 * <= 255, |w| <= 127: at most 32,385). dse_qdw_from: channels c0..cout in plain C (`restrict`:
 * the int32 sums alias no input byte); GCC leaves it about scalar on x86's SSE2 baseline. */
#define DSE_QDW_SIG(NAME, ATTR)                                                                   \
    ATTR static void NAME(const int8_t *const *x, const ptrdiff_t *chunk, ptrdiff_t n, const int8_t *w, \
                          ptrdiff_t cout, ptrdiff_t c0, int32_t zin, int32_t *restrict acc)
#define DSE_QDW_BODY                                                                              \
    for (ptrdiff_t c = c0; c < cout; c++) acc[c] = 0;                                             \
    for (ptrdiff_t j = 0; j < n; j++) {                                                           \
        const int8_t *restrict xj = x[j];                                                         \
        const int8_t *restrict wj = w + chunk[j] * cout;                                          \
        for (ptrdiff_t c = c0; c < cout; c++)                                                     \
            acc[c] += (int16_t)((int16_t)(xj[c] - zin) * (int16_t)wj[c]);                         \
    }
DSE_QDW_SIG(dse_qdw_from, ) { DSE_QDW_BODY }
#if DSE_QARM32
/* armv7: the same C compiled for NEON (integer NEON is exact), where HWCAP_NEON says so */
DSE_QDW_SIG(dse_qdw_neon, __attribute__((target("fpu=neon")))) { DSE_QDW_BODY }
#endif

#if DSE_QX86
/* AVX2: 16 channels per step, int16 products (VPMULLW), widened into two int32 vectors; the
 * channels past the last 16 in plain C. (GCC's own AVX-512 vectorisation of the plain loop was
 * 6x slower than SSE2's on 16 channels: hence intrinsics.) */
__attribute__((target("avx2")))
static void dse_qdw_avx2(const int8_t *const *x, const ptrdiff_t *chunk, ptrdiff_t n, const int8_t *w,
                         ptrdiff_t cout, int32_t zin, int32_t *restrict acc)
{
    const __m256i vz = _mm256_set1_epi16((int16_t)zin);
    ptrdiff_t c0 = 0;
    for (; c0 + 16 <= cout; c0 += 16) {
        __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
        for (ptrdiff_t j = 0; j < n; j++) {
            const __m256i xv = _mm256_sub_epi16(
                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(x[j] + c0))), vz);
            const __m256i wv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + chunk[j] * cout + c0)));
            const __m256i p = _mm256_mullo_epi16(xv, wv);  /* exact: |p| <= 32,385 */
            lo = _mm256_add_epi32(lo, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(p)));
            hi = _mm256_add_epi32(hi, _mm256_cvtepi16_epi32(_mm256_extracti128_si256(p, 1)));
        }
        _mm256_storeu_si256((__m256i *)(acc + c0), lo);
        _mm256_storeu_si256((__m256i *)(acc + c0 + 8), hi);
    }
    dse_qdw_from(x, chunk, n, w, cout, c0, zin, acc);
}
#endif

static void dse_qdw(const int8_t *const *x, const ptrdiff_t *chunk, ptrdiff_t n, const int8_t *w,
                    ptrdiff_t cout, int32_t zin, int32_t *acc)
{
#if DSE_QX86
    const int p = dse_qpath();
    if (p == DSE_QPATH_AVX512VNNI || p == DSE_QPATH_AVXVNNI || p == DSE_QPATH_C16_V3) {  /* all imply AVX2 */
        dse_qdw_avx2(x, chunk, n, w, cout, zin, acc);
        return;
    }
#endif
#if DSE_QARM32
    if (dse_qpath() == DSE_QPATH_C16_NEON) {
        dse_qdw_neon(x, chunk, n, w, cout, 0, zin, acc);
        return;
    }
#endif
    dse_qdw_from(x, chunk, n, w, cout, 0, zin, acc);
}

static void dse_qgemv(const int8_t *const *x, const ptrdiff_t *chunk, ptrdiff_t n, ptrdiff_t cin,
                      const void *w, ptrdiff_t nblk, ptrdiff_t blk_stride, int32_t *acc)
{
    switch (dse_qpath()) {
#if DSE_QX86
    case DSE_QPATH_AVX512VNNI: dse_qgemv_avx512vnni(x, chunk, n, cin, w, nblk, blk_stride, acc); return;
    case DSE_QPATH_AVXVNNI: dse_qgemv_avxvnni(x, chunk, n, cin, w, nblk, blk_stride, acc); return;
    case DSE_QPATH_C16_V3: dse_qgemv_pairs_avx2(x, chunk, n, cin, w, nblk, blk_stride, acc); return;
    case DSE_QPATH_C16: dse_qgemv_pairs_sse2(x, chunk, n, cin, w, nblk, blk_stride, acc); return;
#endif
#if DSE_QARM64
    case DSE_QPATH_DOTPROD: dse_qgemv_dotprod(x, chunk, n, cin, w, nblk, blk_stride, acc); return;
#endif
#if DSE_QARM32
    case DSE_QPATH_C16_NEON: dse_qgemv_c16_neon(x, chunk, n, cin, w, nblk, blk_stride, acc); return;
#endif
    default:
#if DSE_QARM64
        if (!dse_qplain) {
            dse_qgemv_smlal(x, chunk, n, cin, w, nblk, blk_stride, acc);
            return;
        }
#endif
        dse_qgemv_c16(x, chunk, n, cin, w, nblk, blk_stride, acc);
        return;
    }
}

/* Strip rows: nf positions whose chunk inputs are pointers of their own, row f's chunk j at
 * x[xrow[j] + f] + xoff[j]; row f's sums go to acc + f * astride (nblk blocks). Integer sums:
 * the same bits as dse_qgemv row by row, whatever the order. AVX512-VNNI runs up to 8 rows
 * per pass over the weights; the other paths run dse_qgemv per row (tmp: n pointers). */
static void dse_qgemv_rows(const int8_t *const *x, const ptrdiff_t *xrow, const ptrdiff_t *xoff,
                           const ptrdiff_t *chunk, ptrdiff_t n, ptrdiff_t cin, const void *w,
                           ptrdiff_t nblk, ptrdiff_t blk_stride, ptrdiff_t nf, int32_t *acc,
                           ptrdiff_t astride, const int8_t **tmp)
{
#if DSE_QX86
    if (dse_qpath() == DSE_QPATH_AVX512VNNI) {
        dse_qgemv_rows_avx512vnni(x, xrow, xoff, chunk, n, cin, w, nblk, blk_stride, nf, acc, astride);
        return;
    }
#endif
    for (ptrdiff_t f = 0; f < nf; f++) {
        for (ptrdiff_t j = 0; j < n; j++)
            tmp[j] = x[xrow[j] + f] + xoff[j];
        dse_qgemv(tmp, chunk, n, cin, w, nblk, blk_stride, acc + f * astride);
    }
}

static void dse_qrequant(const int32_t *acc, const int32_t *bias, const int32_t *m0,
                         const int32_t *shift, int32_t zp, int32_t lo, int32_t hi, int8_t *out,
                         ptrdiff_t n)
{
#if DSE_QX86
    if (dse_qpath() == DSE_QPATH_AVX512VNNI) {
        dse_qrequant_avx512(acc, bias, m0, shift, zp, lo, hi, out, n);
        return;
    }
    if (dse_qpath() == DSE_QPATH_AVXVNNI || dse_qpath() == DSE_QPATH_C16_V3) {  /* both imply AVX2 */
        dse_qrequant_avx2(acc, bias, m0, shift, zp, lo, hi, out, n);
        return;
    }
#endif
#if DSE_QARM64
    if (dse_qpath() >= 0 && !dse_qplain) {  /* dse_qpath() reads DSE_QKERNELS first */
        dse_qrequant_neon(acc, bias, m0, shift, zp, lo, hi, out, n);
        return;
    }
#endif
    dse_qrequant_base(acc, bias, m0, shift, zp, lo, hi, out, n);
}

static const char *dse_qkernel_isa(void)
{
    switch (dse_qpath()) {
    case DSE_QPATH_AVX512VNNI: return "avx512vnni (vpdpbusd, 16 outputs)";
    case DSE_QPATH_AVXVNNI: return "avxvnni (vpdpbusd, 8 outputs)";
    case DSE_QPATH_C16_V3: return "avx2 (vpmaddwd, 16 outputs)";
    case DSE_QPATH_DOTPROD: return "neon dotprod (sdot)";
    case DSE_QPATH_C16_NEON: return "neon (widening multiply-accumulate)";
    default:
#if defined(__aarch64__)
        return dse_qplain ? "plain C (DSE_QKERNELS=scalar; the compiler's vectorisation)"
                          : "neon (smlal by lane, 2 blocks)";
#elif DSE_QX86
        return "sse2 (pmaddwd, 16 outputs)";
#elif defined(__x86_64__) || defined(__SSE2__)
        return "sse2 (widening multiply-add)";
#else
        return "scalar";
#endif
    }
}

#endif
