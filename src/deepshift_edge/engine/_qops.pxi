# int8 ops of the compiled core (included by _kernels.pyx; plans from quant/plan.py).
#
# The arithmetic is TFLite's / gemmlowp's, step for step as in quant/scheme.py, which is the
# readable reference these loops are tested against bit for bit: int32 accumulators,
# SaturatingRoundingDoublingHighMul, RoundingDivideByPOT, round half away from zero.

from libc.stdint cimport int8_t, int32_t, uint8_t

cdef extern from "_qgemv.h" nogil:
    enum: DSE_QBLK
    void dse_qgemv(const int8_t* const* x, const Py_ssize_t* chunk, Py_ssize_t n, Py_ssize_t cin,
                   const void* w, Py_ssize_t nblk, Py_ssize_t blk_stride, int32_t* acc)
    void dse_qdw(const int8_t* const* x, const Py_ssize_t* chunk, Py_ssize_t n, const int8_t* w,
                 Py_ssize_t cout, int32_t zin, int32_t* acc)
    int dse_qlayout()
    int32_t dse_qround(float v)
    int dse_qoffset()
    const char* dse_qkernel_isa()
    void dse_qrequant(const int32_t* acc, const int32_t* bias, const int32_t* m0, const int32_t* shift,
                      int32_t zp, int32_t lo, int32_t hi, int8_t* out, Py_ssize_t n)
    void dse_qpool_max_row(const int8_t* const* taps, Py_ssize_t ntaps, Py_ssize_t kf, Py_ssize_t sf, Py_ssize_t pf,
                           Py_ssize_t fin, Py_ssize_t fout, Py_ssize_t cin, Py_ssize_t cout, int8_t* out)
    int8_t dse_qrequant_float1(int32_t x, float scale, int32_t zp, int32_t lo, int32_t hi)
    void dse_qrequant_float(const int32_t* acc, const int32_t* bias, const float* scale, int32_t zp,
                            int32_t lo, int32_t hi, int8_t* out, Py_ssize_t n)
    void dse_qrequant_single(const int32_t* acc, const int32_t* bias, const int32_t* m0, const int32_t* shift,
                             int32_t zp, int32_t lo, int32_t hi, int8_t* out, Py_ssize_t n)
    void dse_qgemv_rows(const int8_t* const* x, const Py_ssize_t* xrow, const Py_ssize_t* xoff,
                        const Py_ssize_t* chunk, Py_ssize_t n, Py_ssize_t cin, const void* w, Py_ssize_t nblk,
                        Py_ssize_t blk_stride, Py_ssize_t nf, int32_t* acc, Py_ssize_t astride,
                        const int8_t** tmp)

cdef enum:
    K_QCONV = 20
    K_QPOOL_MAX = 21
    K_QPOOL_AVG = 22
    K_QGMAX = 23
    K_QGMEAN = 24
    K_QRSUM = 25
    K_QGAPMIX = 26
    K_QADD = 27
    K_QMUL = 28
    K_QCONCAT = 29
    K_QLUT = 30
    K_DEQ = 31

DEF INT32_MIN_ = -2147483648
DEF INT32_MAX_ = 2147483647


# ---------------------------------------------------------------------------- gemmlowp
cdef inline int32_t q_sat32(int64_t v) noexcept nogil:
    if v > INT32_MAX_:
        return INT32_MAX_
    if v < INT32_MIN_:
        return INT32_MIN_
    return <int32_t>v


cdef inline int32_t q_srdhm(int32_t a, int32_t b) noexcept nogil:
    """SaturatingRoundingDoublingHighMul: (a*b*2 + 2^31) >> 32, rounding to nearest."""
    cdef int64_t ab, nudge, v
    if a == INT32_MIN_ and b == INT32_MIN_:
        return INT32_MAX_
    ab = <int64_t>a * <int64_t>b
    nudge = (1 << 30) if ab >= 0 else (1 - (1 << 30))
    v = ab + nudge
    # C division truncates toward zero, as gemmlowp's does
    return <int32_t>(v / (<int64_t>1 << 31))


cdef inline int32_t q_rdbp(int32_t x, int e) noexcept nogil:
    """RoundingDivideByPOT: x / 2^e rounded half away from zero."""
    cdef int32_t mask, remainder, threshold
    if e == 0:
        return x
    mask = (<int32_t>1 << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


cdef inline int32_t q_mbqm(int32_t x, int32_t m0, int32_t shift) noexcept nogil:
    """MultiplyByQuantizedMultiplier: x * m0 * 2^(shift - 31)."""
    cdef int left = shift if shift > 0 else 0
    cdef int right = 0 if shift > 0 else -shift
    return q_rdbp(q_srdhm(q_sat32(<int64_t>x * (<int64_t>1 << left)), m0), right)


cdef inline int8_t q_clamp(int64_t v, int32_t lo, int32_t hi) noexcept nogil:
    """Clamp to [lo, hi]; int64, so that a zero point added to a saturated value cannot wrap
    (callers add it in int64)."""
    return <int8_t>(lo if v < lo else (hi if v > hi else v))


cdef inline int32_t q_div_round(int32_t acc, int32_t count) noexcept nogil:
    """acc / count rounded half away from zero (count > 0)."""
    if acc >= 0:
        return (acc + count // 2) // count
    return -((-acc + count // 2) // count)


# ---------------------------------------------------------------------------- kernels
cdef inline Py_ssize_t qblk_stride(int layout, Py_ssize_t nchunks, Py_ssize_t cin_g) noexcept nogil:
    """One block of DSE_QBLK outputs' weights, in weight elements (plan.qkernel_weights): C16
    cin*16 int16, PAIRS ceil(cin/2)*16*2 int16, DOT4 ceil(cin/4)*16*4 int8."""
    if layout == 0:
        return nchunks * cin_g * DSE_QBLK
    if layout == 2:
        return nchunks * ((cin_g + 1) // 2) * DSE_QBLK * 2
    return nchunks * ((cin_g + 3) // 4) * DSE_QBLK * 4


cdef inline Py_ssize_t qweight_esize(int layout) noexcept nogil:
    return 1 if layout == 1 else 2  # DOT4 holds int8; C16 and PAIRS int16


cdef inline void op_requant(const Op* op, const int32_t* acc, const int32_t* bias, const int32_t* m0,
                            const int32_t* shift, int8_t* out, Py_ssize_t n) noexcept nogil:
    """An int8 conv's requantization, rounded as its model says (op.qround; with 2, float
    requantization, the multipliers are the float32 scales, their bits held as int32)."""
    if op.qround == 2:
        dse_qrequant_float(acc, bias, <const float*>m0, op.qzp_out, op.qlo, op.qhi, out, n)
    elif op.qround == 1:
        dse_qrequant_single(acc, bias, m0, shift, op.qzp_out, op.qlo, op.qhi, out, n)
    else:
        dse_qrequant(acc, bias, m0, shift, op.qzp_out, op.qlo, op.qhi, out, n)


cdef void run_qconv_merged(Net* net, const Op* op, const char** taps, int8_t* out) noexcept nogil:
    """A conv of fewer than 4 input channels (op.qmerged): per output feature position its
    taps' channels gathered into one vector of ntaps * kf * cin, padding as the input's zero
    point (which adds nothing once the zero-point term is taken off: the bias is always
    qbias_full), then one kernel call over that one chunk. Per tap, the kernels would read a
    quad (or pair) of channels mostly zero."""
    cdef Py_ssize_t cm = op.ntaps * op.kf * op.cin
    cdef Py_ssize_t nblk = (op.cout + DSE_QBLK - 1) // DSE_QBLK
    cdef Py_ssize_t blk_stride = qblk_stride(dse_qlayout(), 1, cm)
    cdef int8_t* v = net.qgather
    cdef int8_t zin = <int8_t>op.qzp_in[0]
    cdef Py_ssize_t fo, i, k, fi, c, m
    cdef const int8_t* x
    net.qx[0] = v
    net.qchunk[0] = 0
    for fo in range(op.fout):
        m = 0
        for i in range(op.ntaps):
            x = <const int8_t*>taps[i]
            for k in range(op.kf):
                fi = fo * op.sf - op.pf + k * op.df
                if x == NULL or fi < 0 or fi >= op.fin:
                    for c in range(op.cin):
                        v[m + c] = zin
                else:
                    for c in range(op.cin):
                        v[m + c] = x[fi * op.cin + c]
                m += op.cin
        dse_qgemv(net.qx, net.qchunk, 1, cm, op.qweight, nblk, blk_stride, net.qacc)
        op_requant(op, net.qacc, op.qbias_full, op.qm0, op.qshift, out + fo * op.cout, op.cout)


cdef void run_qconv(Net* net, const Op* op, const char** taps, int8_t* out, Py_ssize_t fo0,
                    Py_ssize_t fo1) noexcept nogil:
    """Positions fo0 .. fo1 - 1 of an int8 conv, one at a time: the int32 products of _qgemv.h
    over the (time tap, feature tap) chunks inside the padded frame, the bias less the
    zero-point term of the chunks used (all of them: precomputed, qbias_full), then the
    requantization."""
    cdef Py_ssize_t cin_g = op.cin // op.groups
    cdef Py_ssize_t cout_g = op.cout // op.groups
    cdef Py_ssize_t nchunks = op.ntaps * op.kf
    cdef Py_ssize_t nblk = (cout_g + DSE_QBLK - 1) // DSE_QBLK
    cdef bint depthwise = cin_g == 1 and cout_g == 1
    cdef int layout = dse_qlayout()
    cdef Py_ssize_t blk_stride = qblk_stride(layout, nchunks, cin_g)
    cdef Py_ssize_t esz = qweight_esize(layout)
    cdef int32_t zin = op.qzp_in[0], offset = dse_qoffset()
    cdef Py_ssize_t fo, i, k, fi, g, m, c, n, o
    cdef const int8_t* x
    cdef int8_t* yo
    cdef int64_t corr
    cdef const int32_t* bias
    cdef int32_t* tmp = net.qacc + op.cout + DSE_QBLK  # the bias of this position, when not all chunks
    for fo in range(fo0, fo1):
        yo = out + fo * op.cout
        n = 0
        for i in range(op.ntaps):
            x = <const int8_t*>taps[i]
            if x == NULL:
                continue
            for k in range(op.kf):
                fi = fo * op.sf - op.pf + k * op.df
                if fi < 0 or fi >= op.fin:
                    continue
                net.qx[n] = x + fi * op.cin
                net.qchunk[n] = i * op.kf + k
                n += 1
        if depthwise:  # weights [chunk][channel], a multiply-add over contiguous channels
            dse_qdw(net.qx, net.qchunk, n, <const int8_t*>op.qweight, op.cout, zin, net.qacc)
            op_requant(op, net.qacc, op.qbias, op.qm0, op.qshift, yo, op.cout)
            continue
        for g in range(op.groups):
            for m in range(n):
                net.qx[n + m] = net.qx[m] + g * cin_g
            dse_qgemv(net.qx + n, net.qchunk, n, cin_g,
                      <const char*>op.qweight + g * nblk * blk_stride * esz, nblk, blk_stride, net.qacc)
            if n == nchunks:
                bias = op.qbias_full + g * cout_g
            else:  # a strip position: only the chunks it read carry the zero-point term
                for m in range(cout_g):
                    o = g * cout_g + m
                    corr = 0
                    for c in range(n):
                        corr += op.qwsum[o * nchunks + net.qchunk[c]]
                    tmp[m] = <int32_t>(<int64_t>op.qbias[o] - (<int64_t>zin + offset) * corr)
                bias = tmp
            op_requant(op, net.qacc, bias, op.qm0 + g * cout_g, op.qshift + g * cout_g, yo + g * cout_g, cout_g)


cdef void run_qconv_merged_rows(Net* net, const Op* op, const char** taps, int8_t* out) noexcept nogil:
    """run_qconv_merged for a 2-D conv (fout > 1): every position's vector gathered first (a
    tap whose feature window lies inside the frame as a run of kf * cin bytes), then one
    dse_qgemv_rows call runs them all (AVX512-VNNI: 8 positions per pass over the weights),
    then each position's requantization. Integer sums: the bits of one call per position."""
    cdef Py_ssize_t cm = op.ntaps * op.kf * op.cin
    cdef Py_ssize_t nblk = (op.cout + DSE_QBLK - 1) // DSE_QBLK
    cdef Py_ssize_t blk_stride = qblk_stride(dse_qlayout(), 1, cm)
    cdef Py_ssize_t astride = nblk * DSE_QBLK
    cdef int8_t* v
    cdef int8_t zin = <int8_t>op.qzp_in[0]
    cdef Py_ssize_t fo, i, k, fi, c, m
    cdef const int8_t* x
    for fo in range(op.fout):
        v = net.qgather + fo * cm
        m = 0
        for i in range(op.ntaps):
            x = <const int8_t*>taps[i]
            fi = fo * op.sf - op.pf
            if x != NULL and op.df == 1 and fi >= 0 and fi + op.kf <= op.fin:
                x = x + fi * op.cin  # the feature window inside the frame: kf * cin contiguous bytes
                for c in range(op.kf * op.cin):  # a few bytes: a loop, not a memcpy call
                    v[m + c] = x[c]
                m += op.kf * op.cin
                continue
            for k in range(op.kf):
                fi = fo * op.sf - op.pf + k * op.df
                if x == NULL or fi < 0 or fi >= op.fin:
                    for c in range(op.cin):
                        v[m + c] = zin
                else:
                    for c in range(op.cin):
                        v[m + c] = x[fi * op.cin + c]
                m += op.cin
    net.qchunk[0] = 0
    for fo in range(op.fout):
        net.rptrs[fo] = <const float*>(net.qgather + fo * cm)
    net.rxrow[0] = 0
    net.rxoff[0] = 0
    dse_qgemv_rows(<const int8_t* const*>net.rptrs, net.rxrow, net.rxoff, net.qchunk, 1, cm, op.qweight, nblk,
                   blk_stride, op.fout, net.qracc, astride, net.qx)
    for fo in range(op.fout):
        op_requant(op, net.qracc + fo * astride, op.qbias_full, op.qm0, op.qshift, out + fo * op.cout, op.cout)


cdef void run_qconv_interior(Net* net, const Op* op, const char** taps, int8_t* out, Py_ssize_t fo_lo,
                             Py_ssize_t npos) noexcept nogil:
    """Positions fo_lo .. fo_lo + npos - 1 of a 2-D int8 conv, every tap inside the frame: one
    dse_qgemv_rows call per group reads each weight once for up to 8 positions (AVX512-VNNI;
    the other paths run dse_qgemv per position), then each position's requantization. Every
    chunk counts, so the bias is qbias_full, as run_qconv's per-position loop finds. Integer
    sums: the bits of that loop. Chunk j's input for position f is net.rptrs[j * npos + f]."""
    cdef Py_ssize_t cin_g = op.cin // op.groups
    cdef Py_ssize_t cout_g = op.cout // op.groups
    cdef Py_ssize_t nchunks = op.ntaps * op.kf
    cdef Py_ssize_t nblk = (cout_g + DSE_QBLK - 1) // DSE_QBLK
    cdef int layout = dse_qlayout()
    cdef Py_ssize_t blk_stride = qblk_stride(layout, nchunks, cin_g)
    cdef Py_ssize_t esz = qweight_esize(layout)
    cdef Py_ssize_t astride = nblk * DSE_QBLK
    cdef Py_ssize_t i, k, j, f, g
    cdef const int8_t* x
    for i in range(op.ntaps):
        for k in range(op.kf):
            j = i * op.kf + k
            x = <const int8_t*>taps[i] + (fo_lo * op.sf - op.pf + k * op.df) * op.cin
            for f in range(npos):
                net.rptrs[j * npos + f] = <const float*>(x + f * op.sf * op.cin)
            net.rxrow[j] = j * npos
            net.qchunk[j] = j
    for g in range(op.groups):
        for j in range(nchunks):
            net.rxoff[j] = g * cin_g
        dse_qgemv_rows(<const int8_t* const*>net.rptrs, net.rxrow, net.rxoff, net.qchunk, nchunks, cin_g,
                       <const char*>op.qweight + g * nblk * blk_stride * esz, nblk, blk_stride, npos,
                       net.qracc, astride, net.qx)
        for f in range(npos):
            op_requant(op, net.qracc + f * astride, op.qbias_full + g * cout_g, op.qm0 + g * cout_g,
                       op.qshift + g * cout_g, out + (fo_lo + f) * op.cout + g * cout_g, cout_g)


cdef void run_qconv_2d(Net* net, const Op* op, const char** taps, int8_t* out) noexcept nogil:
    """A plain (not merged) int8 conv over fout > 1 feature positions: the interior ones,
    every tap inside the frame, batched (run_qconv_interior), the edges one at a time."""
    cdef Py_ssize_t i, fo_lo, fo_hi
    if op.cin == op.groups and op.cout == op.groups:  # depthwise: run_qconv's own loop
        run_qconv(net, op, taps, out, 0, op.fout)
        return
    fo_lo, fo_hi = interior_positions(op)
    for i in range(op.ntaps):
        if taps[i] == NULL:  # a padded time tap: each position takes its own bias
            fo_lo, fo_hi = 0, -1
    if fo_hi <= fo_lo:
        run_qconv(net, op, taps, out, 0, op.fout)
        return
    run_qconv(net, op, taps, out, 0, fo_lo)
    run_qconv_interior(net, op, taps, out, fo_lo, fo_hi - fo_lo + 1)
    run_qconv(net, op, taps, out, fo_hi + 1, op.fout)


cdef void run_qconv_rows(Net* net, const Op* op, int8_t* out) noexcept nogil:
    """An int8 strip conv over all its rows (plan.row_tables; inputs from resolve_rows, padding
    a column of the input's zero point, which adds nothing once the zero-point term is taken
    off, so every time tap counts and the bias is qbias_full). Per output feature position
    and group one dse_qgemv_rows call, then each row's requantization. Depthwise: run_qconv's
    loop per row, padding skipped. Integer sums: the bits of the row loop."""
    cdef Py_ssize_t nrows = op.nrows
    cdef Py_ssize_t cin_g = op.cin // op.groups
    cdef Py_ssize_t cout_g = op.cout // op.groups
    cdef Py_ssize_t nchunks = op.ntaps * op.kf
    cdef Py_ssize_t nblk = (cout_g + DSE_QBLK - 1) // DSE_QBLK
    cdef int layout = dse_qlayout()
    cdef Py_ssize_t blk_stride = qblk_stride(layout, nchunks, cin_g)
    cdef Py_ssize_t esz = qweight_esize(layout)
    cdef Py_ssize_t astride = nblk * DSE_QBLK
    cdef int32_t zin = op.qzp_in[0], offset = dse_qoffset()
    cdef Py_ssize_t r, i, fo, k, fi, g, m, c, n, o
    cdef const int8_t* x
    cdef int8_t* yo
    cdef int64_t corr
    cdef const int32_t* bias
    cdef int32_t* tmp = net.qacc + op.cout + DSE_QBLK
    cdef const int64_t* rt = op.rtab
    if cin_g == 1 and cout_g == 1:  # depthwise: weights [chunk][channel]
        for r in range(nrows):
            for fo in range(op.fout):
                yo = out + r * op.poscol + fo * op.cout
                n = 0
                for i in range(op.ntaps):
                    if rt[2 * (i * nrows + r)] == 0:
                        continue  # padding, or a Pad's zero points: (zp - zin) * w = 0
                    x = <const int8_t*>net.rptrs[i * nrows + r]
                    for k in range(op.kf):
                        fi = fo * op.sf - op.pf + k * op.df
                        if fi < 0 or fi >= op.fin:
                            continue
                        net.qx[n] = x + fi * op.cin
                        net.qchunk[n] = i * op.kf + k
                        n += 1
                dse_qdw(net.qx, net.qchunk, n, <const int8_t*>op.qweight, op.cout, zin, net.qacc)
                op_requant(op, net.qacc, op.qbias, op.qm0, op.qshift, yo, op.cout)
        return
    for fo in range(op.fout):
        n = 0
        for i in range(op.ntaps):
            for k in range(op.kf):
                fi = fo * op.sf - op.pf + k * op.df
                if fi < 0 or fi >= op.fin:
                    continue
                net.rxrow[n] = i * nrows
                net.rxoff[n] = fi * op.cin
                net.qchunk[n] = i * op.kf + k
                n += 1
        for g in range(op.groups):
            if g > 0:
                for c in range(n):
                    net.rxoff[c] += cin_g
            dse_qgemv_rows(<const int8_t* const*>net.rptrs, net.rxrow, net.rxoff, net.qchunk, n, cin_g,
                           <const char*>op.qweight + g * nblk * blk_stride * esz, nblk, blk_stride, nrows,
                           net.qracc, astride, net.qx)
            if n == nchunks:
                bias = op.qbias_full + g * cout_g
            else:  # feature padding: only the chunks read carry the zero-point term (every row alike)
                for m in range(cout_g):
                    o = g * cout_g + m
                    corr = 0
                    for c in range(n):
                        corr += op.qwsum[o * nchunks + net.qchunk[c]]
                    tmp[m] = <int32_t>(<int64_t>op.qbias[o] - (<int64_t>zin + offset) * corr)
                bias = tmp
            for r in range(nrows):
                op_requant(op, net.qracc + r * astride, bias, op.qm0 + g * cout_g, op.qshift + g * cout_g,
                           out + r * op.poscol + fo * op.cout + g * cout_g, cout_g)


cdef void run_qpool(Net* net, const Op* op, const char** taps, int8_t* out, float tdiv) noexcept nogil:
    """Max (padding ignored) or mean (PyTorch's divisor; padding as the zero point, i.e. a
    real zero) over the time taps and the feature window of each output position."""
    cdef Py_ssize_t fo, i, k, c, fi, fstart, fend, fcount
    cdef const int8_t* x
    cdef int8_t* yo
    cdef int32_t zp = op.qzp_in[0], count
    cdef int32_t* best = net.qacc
    cdef bint is_max = op.kind == K_QPOOL_MAX
    if is_max:  # the row in vector registers over every tap (_qgemv.h)
        dse_qpool_max_row(<const int8_t* const*>taps, op.ntaps, op.kf, op.sf, op.pf, op.fin, op.fout, op.cin,
                          op.cout, out)
        return
    for fo in range(op.fout):
        yo = out + fo * op.cout
        for c in range(op.cout):
            best[c] = 0
        for i in range(op.ntaps):
            if taps[i] == NULL:
                continue
            for k in range(op.kf):
                fi = fo * op.sf - op.pf + k
                if fi < 0 or fi >= op.fin:
                    continue
                x = <const int8_t*>taps[i] + fi * op.cin
                for c in range(op.cout):
                    best[c] += <int32_t>x[c] - zp
        fstart = fo * op.sf - op.pf
        fend = min(fstart + op.kf, op.fin + op.pfr)
        fcount = fend - fstart
        if not op.cip:
            fcount = min(fend, op.fin) - max(fstart, 0)
        count = <int32_t>(tdiv + 0.5) * <int32_t>fcount
        # the mean of the stored integers (sum of q - zp, plus zp per counted element),
        # rounded half away from zero, as TFLite's int8 average pool
        for c in range(op.cout):
            yo[c] = q_clamp(q_div_round(best[c] + zp * count, count), -128, 127)


cdef void run_qglobal(Net* net, const Op* op, const char** taps, int8_t* out) noexcept nogil:
    """Max, or mean (int32 sums of q - zero point, requantized) over positions and features;
    K_QGAPMIX: tap 0 holds the interior's int32 running sums, the others the strip positions."""
    cdef Py_ssize_t i, f, c, i0 = 0
    cdef const int8_t* x
    cdef const int32_t* sums
    cdef int32_t zp = op.qzp_in[0]
    cdef int64_t* acc = <int64_t*>net.scratch
    cdef bint is_max = op.kind == K_QGMAX
    for c in range(op.cin):
        acc[c] = -128 if is_max else 0
    if op.kind == K_QGAPMIX:
        sums = <const int32_t*>taps[0]
        for c in range(op.cin):
            acc[c] = sums[c]
        i0 = 1
    for i in range(i0, op.ntaps):
        x = <const int8_t*>taps[i]
        for f in range(op.fin):
            if is_max:
                for c in range(op.cin):
                    if x[f * op.cin + c] > acc[c]:
                        acc[c] = x[f * op.cin + c]
            else:
                for c in range(op.cin):
                    acc[c] += <int32_t>x[f * op.cin + c] - zp
    for c in range(op.cin):
        if is_max:
            out[c] = <int8_t>acc[c]
        elif op.qround == 2:  # float requantization (onnxruntime's): qm0 holds the float32 scale
            out[c] = dse_qrequant_float1(q_sat32(acc[c]), (<const float*>op.qm0)[0], op.qzp_out, -128, 127)
        else:
            out[c] = q_clamp(<int64_t>op.qzp_out + q_mbqm(q_sat32(acc[c]), op.qm0[0], op.qshift[0]), -128, 127)


cdef void run_qrsum(Net* net, const Op* op, Py_ssize_t b, int32_t* out, int64_t t,
                    int64_t t_end) noexcept nogil:
    """GlobalAvgPool's interior as exact running sums of q - zero point (int64: no drift, no
    re-sum needed); the output is the sum of the npos columns ending at frame t."""
    cdef int node = <int>op.ins[0]
    cdef Py_ssize_t lag = <Py_ssize_t>op.ins[1] + lag_of(net, node, t, t_end)
    cdef Py_ssize_t P = op.nslots, C = op.cin, F = op.fin, n = op.npos
    cdef const int8_t* new = <const int8_t*>ring_row(net, node, b, lag)
    cdef const int8_t* old = <const int8_t*>ring_row(net, node, b, lag + n * P)
    cdef Py_ssize_t slot = (t // op.period) % P
    cdef int64_t* sums = <int64_t*>op.aux + (b * P + slot) * C
    cdef Py_ssize_t f, c
    for f in range(F):
        for c in range(C):
            sums[c] += <int64_t>new[f * C + c] - <int64_t>old[f * C + c]
    for c in range(C):
        out[c] = q_sat32(sums[c])


cdef void run_qelementwise(const Op* op, const char** taps, int8_t* out) noexcept nogil:
    """Add (TFLite's: inputs to a common scale at 2^20, summed, requantized), Mul, Concat
    (each input requantized), a 256-entry table, per element of one position."""
    cdef Py_ssize_t j, s, f, off, ch, n = op.poscol
    cdef int64_t total
    cdef const int8_t* x
    if op.kind == K_QADD:
        for j in range(n):
            total = 0
            for s in range(op.nin):
                x = <const int8_t*>taps[s]
                total += q_mbqm((<int32_t>x[j] - op.qzp_in[s]) * (1 << 20), op.qm0[s], op.qshift[s])
            out[j] = q_clamp(<int64_t>op.qzp_out + q_mbqm(q_sat32(total), op.qm0[op.nin], op.qshift[op.nin]),
                             op.qlo, op.qhi)
    elif op.kind == K_QMUL:
        for j in range(n):
            total = (<int32_t>(<const int8_t*>taps[0])[j] - op.qzp_in[0]) * \
                (<int32_t>(<const int8_t*>taps[1])[j] - op.qzp_in[1])
            if op.qround == 2:  # float requantization (onnxruntime's QLinearMul): qm0 holds the scale
                out[j] = dse_qrequant_float1(<int32_t>total, (<const float*>op.qm0)[0], op.qzp_out, -128, 127)
            else:
                out[j] = q_clamp(<int64_t>op.qzp_out + q_mbqm(<int32_t>total, op.qm0[0], op.qshift[0]), -128, 127)
    elif op.kind == K_QCONCAT:
        for f in range(op.fout):
            off = 0
            for s in range(op.nin):
                ch = <Py_ssize_t>op.ins[4 * s + 2]
                x = <const int8_t*>taps[s] + f * ch
                for j in range(ch):
                    out[f * op.cout + off + j] = q_clamp(
                        <int64_t>op.qzp_out + q_mbqm(<int32_t>x[j] - op.qzp_in[s], op.qm0[s], op.qshift[s]), -128, 127)
                off += ch
    elif op.kind == K_QLUT:
        x = <const int8_t*>taps[0]
        for j in range(n):
            out[j] = op.qtable[<int32_t>x[j] + 128]


cdef void run_qop(Net* net, const Op* op, Py_ssize_t b, int64_t t, int64_t t_end) noexcept nogil:
    """Run an int8 op once for stream b at frame t (as run_op does for float ops)."""
    cdef char* out = advance(net, op.dst, b)
    cdef Py_ssize_t row, j
    cdef const int8_t* x
    cdef float* fo
    if op.kind == K_QRSUM:
        run_qrsum(net, op, b, <int32_t*>out, t, t_end)
        mirror(net, op.dst, b)
        return
    if op.rnodes != NULL:
        resolve_rows(net, op, b, t, t_end)
        run_qconv_rows(net, op, <int8_t*>out)
        mirror(net, op.dst, b)
        return
    for row in range(op.nrows):
        resolve_taps(net, op, b, row, t, t_end)
        if op.kind == K_QCONV and op.qmerged and op.fout > 1:
            run_qconv_merged_rows(net, op, net.taps, <int8_t*>out + row * op.poscol)
        elif op.kind == K_QCONV and op.qmerged:
            run_qconv_merged(net, op, net.taps, <int8_t*>out + row * op.poscol)
        elif op.kind == K_QCONV and op.fout > 1:
            run_qconv_2d(net, op, net.taps, <int8_t*>out + row * op.poscol)
        elif op.kind == K_QCONV:
            run_qconv(net, op, net.taps, <int8_t*>out + row * op.poscol, 0, 1)
        elif op.kind == K_QPOOL_MAX or op.kind == K_QPOOL_AVG:
            run_qpool(net, op, net.taps, <int8_t*>out + row * op.poscol,
                      op.rowdiv[row] if op.rowdiv != NULL else <float>op.ntaps)
        elif op.kind == K_QGMAX or op.kind == K_QGMEAN or op.kind == K_QGAPMIX:
            run_qglobal(net, op, net.taps, <int8_t*>out + row * op.poscol)
        elif op.kind == K_DEQ:
            x = <const int8_t*>net.taps[0]
            fo = <float*>out + row * op.poscol
            for j in range(op.poscol):
                fo[j] = <float>(<int32_t>x[j] - op.qzp_in[0]) * op.qscale
        else:
            run_qelementwise(op, net.taps, <int8_t*>out + row * op.poscol)
    mirror(net, op.dst, b)


cdef inline void write_qinput(Net* net, Py_ssize_t b, const float* frame) noexcept nogil:
    """Quantize a (C, F) frame into the int8 input ring (channels-last): round(x / scale) half
    away from zero (C's roundf on the float32 quotient), plus the zero point, clamped."""
    cdef int8_t* dst = <int8_t*>advance(net, 0, b)
    cdef Py_ssize_t c, f
    for c in range(net.in_c):
        for f in range(net.in_f):
            dst[f * net.in_c + c] = q_clamp(dse_qround(frame[c * net.in_f + f] / net.in_scale) + net.in_zp,
                                            -128, 127)
    mirror(net, 0, b)
