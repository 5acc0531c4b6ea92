# cython: language_level=3
"""Compiled streaming core: executes a plan (see plan.py) one frame at a time.

Thin on purpose: validation, messages and orchestration live in Python (plan.py,
stream.py). This module owns the preallocated state and runs `noexcept nogil` loops
over raw pointers. Per frame it allocates nothing.

Ring buffers are *mirrored*: a node that keeps L rows has 2L rows, and every row is
written at h and h + L, so the last L rows are always contiguous at [h+1, h+L] and
the inner loops need no modulo.

Unsafe directives (boundscheck/wraparound off, C division) come from setup.py so a
debug build (DSE_DEBUG=1) turns the checks back on for the whole module.
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_C_CONTIGUOUS, PyBUF_FORMAT
from libc.math cimport expf, tanhf, erff, log1pf, fabsf, INFINITY, NAN
from libc.string cimport memcpy, memset
from libc.stdint cimport int64_t
from cpython.object cimport PyObject, PyTypeObject, Py_TYPE

cdef extern from "_gemv.h" nogil:
    enum: DSE_BLK
    void dse_gemv_blocked(const float* const* x, const Py_ssize_t* woff, Py_ssize_t n_chunks,
                          const Py_ssize_t* clen, const float* w, Py_ssize_t nblk, Py_ssize_t blk_stride,
                          float* out)
    void dse_gemv_frames(const float* const* x, Py_ssize_t xstride, const Py_ssize_t* woff,
                         Py_ssize_t n_chunks, const Py_ssize_t* clen, const float* w, Py_ssize_t nblk,
                         Py_ssize_t blk_stride, Py_ssize_t nout, Py_ssize_t nf, float* const* out,
                         float* const* out2, Py_ssize_t ooff, const float* shift, int relu)
    const char* dse_kernel_isa()

cdef extern from *:
    int DSE_DEBUG_BUILD  # defined by setup.py: 1 in the bounds-checked debug build

# NumPy's buffer export allocates (and frees) a small info block on every call, so the
# per-frame fast path reads an exact ndarray's header fields directly. These leading
# fields of PyArrayObject and PyArray_Descr are the same in NumPy 1.x and 2.x (every
# compiled extension's PyArray_DATA/NDIM/DIMS/FLAGS macros read them), and we need no
# NumPy headers to build. Anything else goes through the buffer protocol.
cdef extern from *:
    """
    typedef struct {
        PyObject_HEAD
        char *data;
        int nd;
        Py_ssize_t *dimensions;
        Py_ssize_t *strides;
        PyObject *base;
        PyObject *descr;
        int flags;
    } dse_ndarray_head;
    typedef struct {
        PyObject_HEAD
        PyTypeObject *typeobj;
        char kind;
        char type;
        char byteorder;
    } dse_descr_head;
    """
    ctypedef struct dse_ndarray_head:
        char* data
        int nd
        Py_ssize_t* dimensions
        PyObject* descr
        int flags
    ctypedef struct dse_descr_head:
        char kind
        char type
        char byteorder


cdef PyTypeObject* NDARRAY_TYPE = NULL
cdef int NPY_C_CONTIGUOUS_ALIGNED = 0x0001 | 0x0100  # NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED

# Op kinds and activation codes: must match plan.py.
cdef enum:
    K_CONV = 0
    K_POOL_MAX = 1
    K_POOL_AVG = 2
    K_ADD = 3
    K_COPY = 4
    K_GATHER = 5
    K_GMEAN = 6
    K_GMAX = 7
    K_SOFTMAX = 8
    K_RMEAN = 9
    A_NONE = 0
    A_RELU = 1
    A_RELU6 = 2
    A_LEAKY = 3
    A_SIGMOID = 4
    A_TANH = 5
    A_HARDSWISH = 6
    A_GELU_ERF = 7
    A_GELU_TANH = 8
    A_SILU = 9
    A_HARDSIGMOID = 10
    A_MISH = 11

N_INT_FIELDS = 22

cdef struct Op:
    int kind
    int src, src2, dst
    int64_t period, phase
    Py_ssize_t ntaps, tap_step, tap_offset
    Py_ssize_t cin, cout, groups, fin, fout, kf, sf, pf, df
    int act
    float act_param
    const float* weight
    const float* scale
    const float* shift
    const int64_t* index
    Py_ssize_t nslots, npos   # K_RMEAN: running sums per element, positions averaged
    int64_t delay             # K_RMEAN: output = sums of the column at t - delay
    double* aux               # K_RMEAN: (batch, nslots, cin) running sums
    int64_t* auxn             # K_RMEAN: (batch, nslots) updates since the last exact re-sum


cdef struct Net:
    Op* ops
    int n_ops
    int n_nodes
    float** rings          # per node: base of batch element 0; element b at + b * 2L * col
    Py_ssize_t* ring_len   # L per node
    Py_ssize_t* col        # floats per column per node
    int64_t* state         # per element: [t, h_0 .. h_{n_nodes-1}]
    Py_ssize_t state_stride
    Py_ssize_t in_c, in_f  # frame is (in_c, in_f) C-order; stored as (in_f, in_c)
    int64_t window, hop
    double* scratch        # per-channel accumulators of global pooling
    float* fscratch        # padded conv outputs of push
    int64_t* node_period   # schedule of each node's producer (push_many lags)
    int64_t* node_phase
    const float** xptrs    # conv chunk input pointers
    Py_ssize_t* woffs      # conv chunk weight offsets
    Py_ssize_t* clens      # channels per (merged) conv chunk
    Py_ssize_t* lags       # push_many: input lag of each frame a conv runs for (block)
    float** optrs          # push_many: a conv's output rows, then their mirror twins (2 * block);
                           # push: a 2-D conv's output positions (max fout)
    Py_ssize_t block
    int out_node
    bint out_transpose
    Py_ssize_t out_c, out_f


# ---------------------------------------------------------------------------- helpers
cdef inline float* ring_base(Net* net, int node, Py_ssize_t b) noexcept nogil:
    return net.rings[node] + b * 2 * net.ring_len[node] * net.col[node]


cdef inline const float* tap_row(Net* net, int node, Py_ssize_t b, const Op* op,
                                 Py_ssize_t i, Py_ssize_t lag) noexcept nogil:
    """Column read by tap i (0 = oldest) of op from node's ring, `lag` columns before
    the newest (push_many runs an op for earlier frames after its input moved on)."""
    cdef Py_ssize_t L = net.ring_len[node]
    cdef int64_t h = net.state[b * net.state_stride + 1 + node]
    return ring_base(net, node, b) + (h + L - lag - op.tap_offset - (op.ntaps - 1 - i) * op.tap_step) * net.col[node]


cdef inline float* advance(Net* net, int node, Py_ssize_t b) noexcept nogil:
    """Advance node's ring by one row and return where the new column goes (row h + L)."""
    cdef Py_ssize_t L = net.ring_len[node]
    cdef int64_t* h = &net.state[b * net.state_stride + 1 + node]
    h[0] = h[0] + 1
    if h[0] == L:
        h[0] = 0
    return ring_base(net, node, b) + (h[0] + L) * net.col[node]


cdef inline void mirror(Net* net, int node, Py_ssize_t b) noexcept nogil:
    """Copy the newest row (h + L) to its twin (h)."""
    cdef Py_ssize_t L = net.ring_len[node]
    cdef Py_ssize_t col = net.col[node]
    cdef int64_t h = net.state[b * net.state_stride + 1 + node]
    cdef float* base = ring_base(net, node, b)
    if L > 1:
        memcpy(base + h * col, base + (h + L) * col, col * sizeof(float))
    else:
        memcpy(base, base + col, col * sizeof(float))


cdef inline float activate(float v, int act, float param) noexcept nogil:
    if act == A_RELU:
        return v if v > 0.0 else 0.0
    if act == A_RELU6:
        return 0.0 if v < 0.0 else (6.0 if v > 6.0 else v)
    if act == A_LEAKY:
        return v if v >= 0.0 else v * param
    if act == A_SIGMOID:
        return 1.0 / (1.0 + expf(-v))
    if act == A_TANH:
        return tanhf(v)
    if act == A_HARDSWISH:
        return v * (0.0 if v < -3.0 else (6.0 if v > 3.0 else v + 3.0)) / 6.0
    if act == A_GELU_ERF:
        return 0.5 * v * (1.0 + erff(v * <float>0.7071067811865476))
    if act == A_GELU_TANH:
        return 0.5 * v * (1.0 + tanhf(<float>0.7978845608028654 * (v + <float>0.044715 * v * v * v)))
    if act == A_SILU:
        return v / (1.0 + expf(-v))
    if act == A_HARDSIGMOID:
        v = v * <float>(1.0 / 6.0) + 0.5
        return 0.0 if v < 0.0 else (1.0 if v > 1.0 else v)
    if act == A_MISH:  # softplus(v) = max(v, 0) + log1p(exp(-|v|)): no overflow
        return v * tanhf((v if v > 0.0 else <float>0.0) + log1pf(expf(-fabsf(v))))
    return v


cdef void epilogue(const Op* op, float* out) noexcept nogil:
    """Per-channel scale/shift then activation, over an (fout, cout) column."""
    cdef Py_ssize_t f, c
    cdef float* o
    cdef float v
    if op.scale == NULL and op.shift == NULL and op.act == A_NONE:
        return
    for f in range(op.fout):
        o = out + f * op.cout
        if op.scale != NULL:
            for c in range(op.cout):
                o[c] = o[c] * op.scale[c]
        if op.shift != NULL:
            for c in range(op.cout):
                o[c] = o[c] + op.shift[c]
        if op.act == A_RELU:  # the common case, kept as a tight loop
            for c in range(op.cout):
                v = o[c]
                o[c] = v if v > 0.0 else 0.0
        elif op.act != A_NONE:
            for c in range(op.cout):
                o[c] = activate(o[c], op.act, op.act_param)


# ---------------------------------------------------------------------------- kernels
cdef inline Py_ssize_t add_chunk(Net* net, Py_ssize_t n, const float* x, Py_ssize_t wo,
                                 Py_ssize_t clen) noexcept nogil:
    """Append a conv chunk (input x, weight offset wo, clen channels) to the n in net's lists;
    return the new count. A chunk that continues the previous one both in the input row and
    in the weights joins it: the same terms in the same order, one longer loop."""
    if n > 0 and x == net.xptrs[n - 1] + net.clens[n - 1] \
            and wo == net.woffs[n - 1] + net.clens[n - 1] * DSE_BLK:
        net.clens[n - 1] += clen
        return n
    net.xptrs[n] = x
    net.woffs[n] = wo
    net.clens[n] = clen
    return n + 1


cdef inline void group_chunks(Net* net, Py_ssize_t n, Py_ssize_t offset) noexcept nogil:
    """xptrs[n:2n] = the n chunk inputs moved `offset` channels on (one group's channels)."""
    cdef Py_ssize_t c
    for c in range(n):
        net.xptrs[n + c] = net.xptrs[c] + offset


cdef void run_conv(Net* net, const Op* op, Py_ssize_t b, float* out, Py_ssize_t lag) noexcept nogil:
    """out[fo, o] = sum over time taps i, feature taps kf, input channels of the group.

    General case: the register-blocked matrix-vector product of _gemv.h over the
    (tap, feature tap) chunks that fall inside the (zero padded) frame. Depthwise:
    weights (ntaps, kf, cin), a multiply-add over contiguous channels.
    """
    cdef Py_ssize_t cin_g = op.cin // op.groups
    cdef Py_ssize_t cout_g = op.cout // op.groups
    cdef Py_ssize_t nblk = (cout_g + DSE_BLK - 1) // DSE_BLK
    cdef Py_ssize_t blk_stride = op.ntaps * op.kf * cin_g * DSE_BLK
    cdef Py_ssize_t fo, i, k, fi, g, c, n
    cdef const float* x
    cdef const float* w
    cdef float* o
    cdef bint depthwise = cin_g == 1 and cout_g == 1
    # Feature positions whose taps all lie inside the frame share one chunk list, their inputs
    # op.sf * op.cin floats apart: one frames-kernel call runs them all (weights loaded once
    # for several positions; per output the same terms in the same order as one at a time).
    cdef Py_ssize_t fo_lo = 0, fo_hi = -1, num
    if not depthwise and op.fout > 1:
        fo_lo = (op.pf + op.sf - 1) // op.sf
        num = op.fin - 1 + op.pf - (op.kf - 1) * op.df
        fo_hi = min(num // op.sf, op.fout - 1) if num >= 0 else -1
        if fo_hi - fo_lo < 1:
            fo_lo, fo_hi = 0, -1
    for fo in range(op.fout):
        if fo_lo < fo <= fo_hi:
            continue  # computed with fo_lo
        o = out + fo * op.cout
        if depthwise:
            memset(o, 0, op.cout * sizeof(float))
        n = 0
        for i in range(op.ntaps):
            x = tap_row(net, op.src, b, op, i, lag)
            for k in range(op.kf):
                fi = fo * op.sf - op.pf + k * op.df
                if fi < 0 or fi >= op.fin:
                    continue
                if depthwise:
                    w = op.weight + (i * op.kf + k) * op.cin
                    for c in range(op.cin):
                        o[c] += w[c] * x[fi * op.cin + c]
                else:
                    n = add_chunk(net, n, x + fi * op.cin, (i * op.kf + k) * cin_g * DSE_BLK, cin_g)
        if depthwise:
            continue
        if fo == fo_lo and fo_hi > fo_lo:
            for c in range(fo_hi - fo_lo + 1):
                net.optrs[c] = out + (fo_lo + c) * op.cout
            for g in range(op.groups):
                group_chunks(net, n, g * cin_g)
                dse_gemv_frames(net.xptrs + n, op.sf * op.cin, net.woffs, n, net.clens,
                                op.weight + g * nblk * blk_stride, nblk, blk_stride, cout_g,
                                fo_hi - fo_lo + 1, net.optrs, NULL, g * cout_g, NULL, 0)
            continue
        for g in range(op.groups):
            group_chunks(net, n, g * cin_g)
            dse_gemv_blocked(net.xptrs + n, net.woffs, n, net.clens, op.weight + g * nblk * blk_stride,
                             nblk, blk_stride, net.fscratch)
            memcpy(o + g * cout_g, net.fscratch, cout_g * sizeof(float))
    epilogue(op, out)


cdef void run_pool(Net* net, const Op* op, Py_ssize_t b, float* out, Py_ssize_t lag) noexcept nogil:
    cdef Py_ssize_t fo, i, k, c
    cdef const float* x
    cdef float* o
    cdef bint is_max = op.kind == K_POOL_MAX
    cdef float inv = 1.0 / <float>(op.ntaps * op.kf)
    for fo in range(op.fout):
        o = out + fo * op.cout
        for c in range(op.cout):
            o[c] = -INFINITY if is_max else 0.0
        for i in range(op.ntaps):
            for k in range(op.kf):
                x = tap_row(net, op.src, b, op, i, lag) + (fo * op.sf + k) * op.cin
                if is_max:
                    for c in range(op.cout):  # a select, so it vectorises (inputs are finite)
                        o[c] = x[c] if x[c] > o[c] else o[c]
                else:
                    for c in range(op.cout):
                        o[c] += x[c]
        if not is_max:
            for c in range(op.cout):
                o[c] = o[c] * inv
    epilogue(op, out)


cdef void run_global(Net* net, const Op* op, Py_ssize_t b, float* out, Py_ssize_t lag) noexcept nogil:
    """Mean or max over ntaps positions (and features) per channel; double accumulators."""
    cdef Py_ssize_t i, f, c
    cdef const float* x
    cdef double* acc = net.scratch
    cdef bint is_max = op.kind == K_GMAX
    for c in range(op.cin):
        acc[c] = -INFINITY if is_max else 0.0
    for i in range(op.ntaps):
        x = tap_row(net, op.src, b, op, i, lag)
        for f in range(op.fin):
            if is_max:
                for c in range(op.cin):
                    if x[f * op.cin + c] > acc[c] or x[f * op.cin + c] != x[f * op.cin + c]:
                        acc[c] = x[f * op.cin + c]
            else:
                for c in range(op.cin):
                    acc[c] += x[f * op.cin + c]
    for c in range(op.cin):
        out[c] = <float>(acc[c] if is_max else acc[c] / <double>(op.ntaps * op.fin))
    epilogue(op, out)


cdef void run_rmean(Net* net, const Op* op, Py_ssize_t b, float* out, Py_ssize_t lag,
                    int64_t t) noexcept nogil:
    """Global average as running sums: add the new column, subtract the one leaving.

    One sum per stride phase (slot); every npos updates a slot is re-summed exactly from
    the ring, so rounding cannot accumulate over millions of frames."""
    cdef Py_ssize_t P = op.nslots, C = op.cin, F = op.fin, n = op.npos
    cdef Py_ssize_t L = net.ring_len[op.src], col = net.col[op.src]
    cdef int64_t h = net.state[b * net.state_stride + 1 + op.src]
    cdef const float* base = ring_base(net, op.src, b)
    cdef const float* new = base + (h + L - lag) * col
    cdef const float* old = base + (h + L - lag - n * P) * col
    cdef Py_ssize_t slot = (t // op.period) % P
    cdef double* sums = op.aux + (b * P + slot) * C
    cdef int64_t* count = op.auxn + b * P + slot
    cdef Py_ssize_t f, c, j
    cdef const float* x
    cdef int64_t oslot
    for f in range(F):
        for c in range(C):
            sums[c] += <double>new[f * C + c] - <double>old[f * C + c]
    count[0] += 1
    if count[0] >= n:
        count[0] = 0
        for c in range(C):
            sums[c] = 0.0
        for j in range(n):
            x = base + (h + L - lag - j * P) * col
            for f in range(F):
                for c in range(C):
                    sums[c] += x[f * C + c]
    oslot = ((t - op.delay) // op.period) % P
    if oslot < 0:
        oslot += P
    sums = op.aux + (b * P + oslot) * C
    for c in range(C):
        out[c] = <float>(sums[c] / <double>(n * F))
    epilogue(op, out)


cdef void run_softmax(Net* net, const Op* op, Py_ssize_t b, float* out, Py_ssize_t lag) noexcept nogil:
    cdef const float* x = tap_row(net, op.src, b, op, 0, lag)
    cdef Py_ssize_t f, c
    cdef float mx
    cdef double total
    for f in range(op.fout):
        mx = x[f * op.cin]
        for c in range(op.cin):
            if x[f * op.cin + c] > mx:
                mx = x[f * op.cin + c]
        total = 0.0
        for c in range(op.cin):
            out[f * op.cin + c] = expf(x[f * op.cin + c] - mx)
            total += out[f * op.cin + c]
        for c in range(op.cin):
            out[f * op.cin + c] = <float>(out[f * op.cin + c] / total)
    epilogue(op, out)


cdef void run_op(Net* net, const Op* op, Py_ssize_t b, Py_ssize_t lag, Py_ssize_t lag2,
                 int64_t t) noexcept nogil:
    """Run op once for stream b; its inputs are lag (src) and lag2 (src2) columns back."""
    cdef float* out = advance(net, op.dst, b)
    cdef Py_ssize_t j, n
    cdef const float* x
    cdef const float* y
    if op.kind == K_CONV:
        run_conv(net, op, b, out, lag)
    elif op.kind == K_POOL_MAX or op.kind == K_POOL_AVG:
        run_pool(net, op, b, out, lag)
    elif op.kind == K_GMEAN or op.kind == K_GMAX:
        run_global(net, op, b, out, lag)
    elif op.kind == K_SOFTMAX:
        run_softmax(net, op, b, out, lag)
    elif op.kind == K_RMEAN:
        run_rmean(net, op, b, out, lag, t)
    elif op.kind == K_ADD:
        n = net.col[op.dst]
        x = tap_row(net, op.src, b, op, 0, lag)
        y = ring_base(net, op.src2, b) + (net.state[b * net.state_stride + 1 + op.src2]
                                          + net.ring_len[op.src2] - lag2) * net.col[op.src2]
        for j in range(n):
            out[j] = x[j] + y[j]
        epilogue(op, out)
    elif op.kind == K_COPY:
        memcpy(out, tap_row(net, op.src, b, op, 0, lag), net.col[op.dst] * sizeof(float))
        epilogue(op, out)
    elif op.kind == K_GATHER:
        n = net.col[op.dst]
        for j in range(n):
            out[j] = tap_row(net, op.src, b, op, op.index[2 * j], lag)[op.index[2 * j + 1]]
    mirror(net, op.dst, b)


cdef inline void write_input(Net* net, Py_ssize_t b, const float* frame) noexcept nogil:
    """Append a (C, F) frame to the input ring, stored channels-last as (F, C)."""
    cdef float* dst = advance(net, 0, b)
    cdef Py_ssize_t c, f
    if net.in_f == 1:
        memcpy(dst, frame, net.in_c * sizeof(float))
    else:
        for c in range(net.in_c):
            for f in range(net.in_f):
                dst[f * net.in_c + c] = frame[c * net.in_f + f]
    mirror(net, 0, b)


cdef inline bint scheduled(const Op* op, int64_t t) noexcept nogil:
    """Whether op runs at frame t (period 1, the dense case, skips the division)."""
    return t >= op.phase and (op.period == 1 or (t - op.phase) % op.period == 0)


cdef inline bint emits(Net* net, int64_t t) noexcept nogil:
    """Whether frame t has an output: the window is full and t is on the hop grid."""
    return t >= net.window - 1 and (net.hop == 1 or (t - (net.window - 1)) % net.hop == 0)


cdef bint step(Net* net, Py_ssize_t b, const float* frame) noexcept nogil:
    """Push one frame into stream b; True when it produced an output."""
    cdef int64_t* st = net.state + b * net.state_stride
    cdef int64_t t = st[0]
    cdef Py_ssize_t k
    cdef const Op* op
    write_input(net, b, frame)
    for k in range(net.n_ops):
        op = &net.ops[k]
        if scheduled(op, t):
            run_op(net, op, b, 0, 0, t)
    st[0] = t + 1
    return emits(net, t)


cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk_id, timespec* tp)
    enum: CLOCK_MONOTONIC


cdef inline double now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec * 1e9 + <double>ts.tv_nsec


cdef bint step_profiled(Net* net, Py_ssize_t b, const float* frame, double* op_ns) noexcept nogil:
    """step() with a timer around every op (for the benchmark's per-layer breakdown)."""
    cdef int64_t* st = net.state + b * net.state_stride
    cdef int64_t t = st[0]
    cdef Py_ssize_t k
    cdef const Op* op
    cdef double t0
    write_input(net, b, frame)
    for k in range(net.n_ops):
        op = &net.ops[k]
        if scheduled(op, t):
            t0 = now_ns()
            run_op(net, op, b, 0, 0, t)
            op_ns[k] += now_ns() - t0
    st[0] = t + 1
    return emits(net, t)


cdef void write_output(Net* net, Py_ssize_t b, float* out, Py_ssize_t lag) noexcept nogil:
    cdef const float* src = ring_base(net, net.out_node, b) + (
        net.state[b * net.state_stride + 1 + net.out_node] + net.ring_len[net.out_node] - lag) * net.col[net.out_node]
    cdef Py_ssize_t c, f
    if net.out_transpose:
        for c in range(net.out_c):
            for f in range(net.out_f):
                out[c * net.out_f + f] = src[f * net.out_c + c]
    else:
        memcpy(out, src, net.col[net.out_node] * sizeof(float))


cdef void fill_nan(float* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = NAN


cdef bint push_all(Net* net, const float* src, Py_ssize_t frame_size, Py_ssize_t batch,
                   bint batched, float* out, Py_ssize_t out_size, char* ready) noexcept nogil:
    """One frame for each of the batch streams; True if any produced an output."""
    cdef Py_ssize_t b
    cdef bint any_ready = False
    for b in range(batch):
        if step(net, b, src + b * frame_size):
            write_output(net, b, out + b * out_size, 0)
            ready[b] = 1
            any_ready = True
        else:
            ready[b] = 0
            if batched:
                fill_nan(out + b * out_size, out_size)
    return any_ready


# ---------------------------------------------------------------------------- push_many: op by op
cdef inline int64_t runs_upto(int64_t t, int64_t period, int64_t phase) noexcept nogil:
    """How many times an op of this schedule ran at frames <= t."""
    if t < phase:
        return 0
    if period == 1:  # every op of a dense plan: no 64-bit division (~40 cycles each)
        return t - phase + 1
    return (t - phase) // period + 1


cdef inline Py_ssize_t lag_of(Net* net, int node, int64_t t, int64_t t_end) noexcept nogil:
    """Columns the node gained after frame t, up to the block's last frame t_end."""
    return <Py_ssize_t>(runs_upto(t_end, net.node_period[node], net.node_phase[node])
                        - runs_upto(t, net.node_period[node], net.node_phase[node]))


cdef void run_conv_frames(Net* net, const Op* op, Py_ssize_t b, const Py_ssize_t* lags,
                          Py_ssize_t nf) noexcept nogil:
    """A non-depthwise conv for nf frames whose inputs are evenly spaced in the ring
    (constant lags[f] - lags[f+1]): the kernel reads each weight once per six frames.
    When the epilogue is only bias and/or ReLU, the kernel applies it and writes both
    mirrored rows itself (no scratch copy, no second pass)."""
    cdef Py_ssize_t cin_g = op.cin // op.groups
    cdef Py_ssize_t cout_g = op.cout // op.groups
    cdef Py_ssize_t nblk = (cout_g + DSE_BLK - 1) // DSE_BLK
    cdef Py_ssize_t blk_stride = op.ntaps * op.kf * cin_g * DSE_BLK
    cdef Py_ssize_t col = net.col[op.dst]
    cdef Py_ssize_t xstride = (lags[0] - lags[1]) * net.col[op.src] if nf > 1 else 0
    cdef bint fused = op.scale == NULL and (op.act == A_NONE or op.act == A_RELU)
    cdef float** outs = net.optrs
    cdef float** twins = net.optrs + net.block
    cdef Py_ssize_t f, i, k, fi, fo, g, n
    cdef const float* row
    for f in range(nf):
        outs[f] = advance(net, op.dst, b)
        twins[f] = ring_base(net, op.dst, b) + net.state[b * net.state_stride + 1 + op.dst] * col
    for fo in range(op.fout):
        n = 0
        for i in range(op.ntaps):
            row = tap_row(net, op.src, b, op, i, lags[0])
            for k in range(op.kf):
                fi = fo * op.sf - op.pf + k * op.df
                if fi < 0 or fi >= op.fin:
                    continue
                n = add_chunk(net, n, row + fi * op.cin, (i * op.kf + k) * cin_g * DSE_BLK, cin_g)
        for g in range(op.groups):
            group_chunks(net, n, g * cin_g)
            dse_gemv_frames(net.xptrs + n, xstride, net.woffs, n, net.clens, op.weight + g * nblk * blk_stride,
                            nblk, blk_stride, cout_g, nf, outs, twins if fused else NULL,
                            fo * op.cout + g * cout_g,
                            op.shift + g * cout_g if fused and op.shift != NULL else NULL,
                            fused and op.act == A_RELU)
    if not fused:
        for f in range(nf):
            epilogue(op, outs[f])
            memcpy(twins[f], outs[f], col * sizeof(float))


cdef Py_ssize_t run_block(Net* net, Py_ssize_t b, const float* frames, Py_ssize_t n,
                          Py_ssize_t fstride, float* out, Py_ssize_t ostride, char* ready,
                          Py_ssize_t rstride, bint packed) noexcept nogil:
    """Push n frames (fstride floats apart) into stream b, running each op over the whole
    block before the next (weights stay in cache; convs take up to six frames per pass).
    Equal to n calls of step(). packed: outputs go to consecutive rows of out, and the
    count is returned; otherwise frame j's output goes to row j (NaN and ready[j] = 0
    when it has none)."""
    cdef int64_t* st = net.state + b * net.state_stride
    cdef int64_t t0 = st[0]
    cdef int64_t t_end = t0 + n - 1
    cdef int64_t t
    cdef Py_ssize_t j, k, cnt, m = 0, lag, lag2
    cdef Py_ssize_t* lags = net.lags
    cdef const Op* op
    cdef bint gemv
    for j in range(n):
        write_input(net, b, frames + j * fstride)
    for k in range(net.n_ops):
        op = &net.ops[k]
        gemv = op.kind == K_CONV and not (op.cin == op.groups and op.cout == op.groups)
        cnt = 0
        for j in range(n):
            t = t0 + j
            if not scheduled(op, t):
                continue
            lag = lag_of(net, op.src, t, t_end)
            if gemv:
                # a run of frames with evenly spaced inputs goes to the kernel in one call
                if cnt >= 2 and lags[cnt - 1] - lag != lags[0] - lags[1]:
                    run_conv_frames(net, op, b, lags, cnt)
                    cnt = 0
                lags[cnt] = lag
                cnt += 1
            else:
                lag2 = lag_of(net, op.src2, t, t_end) if op.kind == K_ADD else 0
                run_op(net, op, b, lag, lag2, t)
        if cnt:
            run_conv_frames(net, op, b, lags, cnt)
    for j in range(n):
        t = t0 + j
        if emits(net, t):
            lag = lag_of(net, net.out_node, t, t_end)
            if packed:
                write_output(net, b, out + m * ostride, lag)
                m += 1
            else:
                write_output(net, b, out + j * ostride, lag)
                ready[j * rstride] = 1
        elif not packed:
            fill_nan(out + j * ostride, net.out_c * net.out_f)
            ready[j * rstride] = 0
    st[0] = t_end + 1
    return m


# NaN/Inf have an all-ones exponent. Testing the bits with an OR-reduction vectorises
# (isfinite() per element did not: ~3.5 ns a float, 9 µs per 64-frame kws block).
cdef extern from *:
    """
    #include <stdint.h>
    static int dse_all_finite(const float *x, Py_ssize_t n)
    {
        uint32_t bad = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, x + i, sizeof(u));
            bad |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
        }
        return bad == 0;
    }
    """
    bint all_finite "dse_all_finite"(const float* x, Py_ssize_t n) noexcept nogil


cdef const float* ndarray_float32_data(object x, int nd, const Py_ssize_t* shape) noexcept:
    """Data pointer of an exact, aligned, C-contiguous native float32 ndarray of shape
    `shape` (nd dims), else NULL. Reads header fields only: no allocation."""
    cdef dse_ndarray_head* a
    cdef dse_descr_head* d
    cdef int i
    if NDARRAY_TYPE == NULL or Py_TYPE(x) != NDARRAY_TYPE:
        return NULL
    a = <dse_ndarray_head*><PyObject*>x
    if a.nd != nd or (a.flags & NPY_C_CONTIGUOUS_ALIGNED) != NPY_C_CONTIGUOUS_ALIGNED:
        return NULL
    d = <dse_descr_head*>a.descr
    if d.kind != b'f' or d.type != b'f' or not (d.byteorder == b'=' or (d.byteorder == b'<' and LITTLE_ENDIAN)):
        return NULL
    for i in range(nd):
        if a.dimensions[i] != shape[i]:
            return NULL
    return <const float*>a.data


cdef char* ndarray_data(object x, char kind, char typ) noexcept:
    """Data pointer of an exact, aligned, C-contiguous ndarray of native dtype
    (kind, type), e.g. (b'f', b'f') float32 or (b'b', b'?') bool; else NULL."""
    cdef dse_ndarray_head* a
    cdef dse_descr_head* d
    if NDARRAY_TYPE == NULL or Py_TYPE(x) != NDARRAY_TYPE:
        return NULL
    a = <dse_ndarray_head*><PyObject*>x
    if (a.flags & NPY_C_CONTIGUOUS_ALIGNED) != NPY_C_CONTIGUOUS_ALIGNED:
        return NULL
    d = <dse_descr_head*>a.descr
    if d.kind != kind or d.type != typ or not (d.byteorder == b'=' or d.byteorder == b'|'
                                               or (d.byteorder == b'<' and LITTLE_ENDIAN)):
        return NULL
    return a.data


cdef inline bint is_native_float32(const Py_buffer* view) noexcept:
    cdef const char* fmt = view.format
    if view.itemsize != 4 or fmt == NULL:
        return False
    if fmt[0] == b'f' and fmt[1] == 0:
        return True
    return (fmt[0] == b'@' or fmt[0] == b'=' or (fmt[0] == b'<' and LITTLE_ENDIAN)) \
        and fmt[1] == b'f' and fmt[2] == 0


import sys as _sys
cdef bint LITTLE_ENDIAN = _sys.byteorder == "little"


# ---------------------------------------------------------------------------- the Python face
cdef class StreamCore:
    """Owns the buffers of one (batched) stream and runs its plan.

    Built by :class:`deepshift_edge.stream.Stream`; not meant to be used directly.
    """

    cdef Net net
    cdef object _keep            # arrays whose memory the C structs point into
    cdef object _rings, _state, _ints, _aux
    cdef readonly object out     # (batch, *output_shape) float32, reused every push
    cdef readonly object ready   # (batch,) bool, which rows of `out` hold an output
    cdef object _out_single      # out[0], returned by unbatched push
    cdef float* _out_ptr
    cdef char* _ready_ptr
    cdef readonly Py_ssize_t batch
    cdef readonly bint batched
    cdef Py_ssize_t _frame_size, _out_size
    cdef tuple _frame_shape
    cdef Py_ssize_t _push_shape[4]   # expected shape of push's argument
    cdef int _push_nd
    cdef bint _release_gil
    cdef bint _busy                  # a push is running (guards against use from two threads)
    cdef Py_ssize_t _block
    cdef object _coerce_frame, _coerce_block, _reject

    def __cinit__(self):
        self.net.ops = NULL

    def _setup(self, plan, Py_ssize_t batch, bint batched, tuple frame_shape, float release_gil_macs,
               coerce_frame, coerce_block, reject):
        """Allocate every buffer; called once by Stream.__init__."""
        import numpy as np
        cdef int n_nodes = len(plan.nodes)
        cdef int n_ops = len(plan.ops)
        cdef Py_ssize_t i
        cdef float[::1] fview
        cdef int64_t[::1] iview
        cdef int64_t[:, ::1] itab
        self._coerce_frame, self._coerce_block, self._reject = coerce_frame, coerce_block, reject
        self.batch, self.batched, self._frame_shape = batch, batched, frame_shape
        keep = []
        ops = np.zeros(max(n_ops, 1) * sizeof(Op), dtype=np.uint8)
        ptrs = np.zeros(max(n_nodes, 1) * sizeof(float*), dtype=np.uint8)
        lens = np.zeros(max(n_nodes, 1), dtype=np.intp)
        cols = np.zeros(max(n_nodes, 1), dtype=np.intp)
        keep += [ops, ptrs, lens, cols]
        cdef unsigned char[::1] ops_bytes = ops
        cdef unsigned char[::1] ptr_bytes = ptrs
        cdef Py_ssize_t[::1] lens_v = lens
        cdef Py_ssize_t[::1] cols_v = cols
        self.net.ops = <Op*>&ops_bytes[0]
        self.net.rings = <float**>&ptr_bytes[0]
        self.net.ring_len = &lens_v[0]
        self.net.col = &cols_v[0]
        self.net.n_ops, self.net.n_nodes = n_ops, n_nodes
        self._rings = []
        self._aux = []
        for i in range(n_nodes):
            node = plan.nodes[i]
            ring = np.zeros((batch, 2 * node.ring, node.col), dtype=np.float32)
            self._rings.append(ring)
            fview = ring.reshape(-1)
            self.net.rings[i] = &fview[0]
            lens_v[i], cols_v[i] = node.ring, node.col
        self.net.state_stride = 1 + n_nodes
        self._state = np.zeros((batch, 1 + n_nodes), dtype=np.int64)
        iview = self._state.reshape(-1)
        self.net.state = &iview[0]
        max_c = max([o.cin for o in plan.ops] + [1])
        scratch = np.zeros(max_c, dtype=np.float64)
        keep.append(scratch)
        cdef double[::1] dview = scratch
        self.net.scratch = &dview[0]
        max_out = max([o.cout + DSE_BLK for o in plan.ops] + [DSE_BLK])
        fscratch = np.zeros(max_out, dtype=np.float32)
        max_chunks = max([o.ntaps * o.kf for o in plan.ops] + [1])
        xptrs = np.zeros(2 * max_chunks, dtype=np.uintp)   # chunk pointers, then their per-group copies
        self.net.block = plan.block
        lags = np.zeros(plan.block, dtype=np.intp)
        # push_many: a conv's output rows and their twins; push: a 2-D conv's feature positions
        optrs = np.zeros(max([2 * plan.block] + [o.fout for o in plan.ops]), dtype=np.uintp)
        keep += [lags, optrs]
        cdef Py_ssize_t[::1] lview = lags
        self.net.lags = &lview[0]
        cdef size_t[::1] oview = optrs
        self.net.optrs = <float**>&oview[0]
        periods = np.array([nd.period for nd in plan.nodes] + [1], dtype=np.int64)
        phases = np.array([nd.phase for nd in plan.nodes] + [0], dtype=np.int64)
        keep += [periods, phases]
        iview = periods
        self.net.node_period = &iview[0]
        iview = phases
        self.net.node_phase = &iview[0]
        woffs = np.zeros(max_chunks, dtype=np.intp)
        clens = np.zeros(max_chunks, dtype=np.intp)
        keep.append(clens)
        cdef Py_ssize_t[::1] cview = clens
        self.net.clens = &cview[0]
        keep += [fscratch, xptrs, woffs]
        fview = fscratch
        self.net.fscratch = &fview[0]
        cdef size_t[::1] pview = xptrs
        self.net.xptrs = <const float**>&pview[0]
        cdef Py_ssize_t[::1] wview = woffs
        self.net.woffs = &wview[0]
        table = plan.int_table()
        itab = table if n_ops else np.zeros((1, N_INT_FIELDS), dtype=np.int64)
        for i in range(n_ops):
            self.net.ops[i].kind = itab[i, 0]
            self.net.ops[i].src = itab[i, 1]
            self.net.ops[i].src2 = itab[i, 2]
            self.net.ops[i].dst = itab[i, 3]
            self.net.ops[i].period = itab[i, 4]
            self.net.ops[i].phase = itab[i, 5]
            self.net.ops[i].ntaps = itab[i, 6]
            self.net.ops[i].tap_step = itab[i, 7]
            self.net.ops[i].tap_offset = itab[i, 8]
            self.net.ops[i].cin = itab[i, 9]
            self.net.ops[i].cout = itab[i, 10]
            self.net.ops[i].groups = itab[i, 11]
            self.net.ops[i].fin = itab[i, 12]
            self.net.ops[i].fout = itab[i, 13]
            self.net.ops[i].kf = itab[i, 14]
            self.net.ops[i].sf = itab[i, 15]
            self.net.ops[i].pf = itab[i, 16]
            self.net.ops[i].df = itab[i, 17]
            self.net.ops[i].act = itab[i, 18]
            self.net.ops[i].nslots = itab[i, 19]
            self.net.ops[i].npos = itab[i, 20]
            self.net.ops[i].delay = itab[i, 21]
            self.net.ops[i].aux = NULL
            self.net.ops[i].auxn = NULL
            if itab[i, 0] == K_RMEAN:
                sums = np.zeros((batch, itab[i, 19], itab[i, 9]), dtype=np.float64)
                counts = np.zeros((batch, itab[i, 19]), dtype=np.int64)
                self._aux += [sums, counts]
                dview = sums.reshape(-1)
                self.net.ops[i].aux = &dview[0]
                iview = counts.reshape(-1)
                self.net.ops[i].auxn = &iview[0]
            op = plan.ops[i]
            self.net.ops[i].act_param = op.act_param
            self.net.ops[i].weight = self._float_ptr(plan.kernel_weight(op), keep)
            self.net.ops[i].scale = self._float_ptr(op.scale, keep)
            self.net.ops[i].shift = self._float_ptr(op.shift, keep)
            if op.index is not None:
                idx = np.ascontiguousarray(op.index, dtype=np.int64).reshape(-1)
                keep.append(idx)
                iview = idx
                self.net.ops[i].index = &iview[0]
            else:
                self.net.ops[i].index = NULL
        self._ints = table
        self._keep = keep
        self.net.in_c = frame_shape[0]
        self.net.in_f = frame_shape[1] if len(frame_shape) == 2 else 1
        self.net.window, self.net.hop = plan.window, plan.hop
        self.net.out_node = plan.ops[n_ops - 1].dst if n_ops else 0
        self.net.out_transpose = plan.out_transpose
        out_shape = tuple(plan.output_shape)
        self.net.out_c = out_shape[0]
        self.net.out_f = out_shape[1] if len(out_shape) == 2 else 1
        global NDARRAY_TYPE
        NDARRAY_TYPE = <PyTypeObject*>np.ndarray
        self._push_nd = 0
        if batched:
            self._push_shape[0] = batch
            self._push_nd = 1
        for i in range(len(frame_shape)):
            self._push_shape[self._push_nd] = frame_shape[i]
            self._push_nd += 1
        self._frame_size = 1
        for i in range(len(frame_shape)):
            self._frame_size *= frame_shape[i]
        self._out_size = self.net.out_c * self.net.out_f
        self.out = np.full((batch,) + out_shape, np.nan, dtype=np.float32)
        fview = self.out.reshape(-1)
        self._out_ptr = &fview[0]
        self.ready = np.zeros(batch, dtype=np.bool_)
        cdef unsigned char[::1] rview = self.ready.view(np.uint8)
        self._ready_ptr = <char*>&rview[0]
        self._out_single = self.out[0]
        self._release_gil = plan.macs_per_frame() * batch >= release_gil_macs
        self._block = plan.block

    cdef const float* _float_ptr(self, arr, list keep) except? NULL:
        import numpy as np
        cdef float[::1] v
        if arr is None:
            return NULL
        a = np.ascontiguousarray(arr, dtype=np.float32).reshape(-1)
        keep.append(a)
        v = a
        return &v[0]

    # -- frames -------------------------------------------------------------
    cdef bint _matches(self, Py_buffer* view):
        """Fast-path check: C-contiguous native float32 of exactly the frame shape."""
        cdef Py_ssize_t i, extra = 1 if self.batched else 0
        if not is_native_float32(view) or view.ndim != len(self._frame_shape) + extra:
            return False
        if (<size_t>view.buf) % sizeof(float):  # misaligned: the slow path copies it
            return False
        if self.batched and view.shape[0] != self.batch:
            return False
        for i in range(len(self._frame_shape)):
            if view.shape[i + extra] != <Py_ssize_t>self._frame_shape[i]:
                return False
        return True

    def push(self, x):
        """Push one frame; return the output for the window ending now, or None.

        The returned array is reused: its contents change on the next push.
        """
        cdef bint any_ready = False
        cdef const float* src
        if self._busy:
            self._raise_busy()
        self._busy = True  # set under the GIL: a second thread entering now sees it
        try:
            src = ndarray_float32_data(x, self._push_nd, self._push_shape)
            any_ready = self._push_checked(x, src)
        finally:
            self._busy = False
        if not any_ready:
            return None
        return self.out if self.batched else self._out_single

    cdef bint _push_checked(self, x, const float* src) except -1:
        cdef Py_buffer view
        cdef bint have = False
        cdef bint any_ready = False
        if src == NULL:  # not a plain float32 ndarray: buffer protocol, else the slow path
            try:
                PyObject_GetBuffer(x, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
                have = True
            except Exception:
                pass
            if have and not self._matches(&view):
                PyBuffer_Release(&view)
                have = False
            if not have:
                x = self._coerce_frame(x)          # raises a clear error on bad input
                PyObject_GetBuffer(x, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
                have = True
            src = <const float*>view.buf
        try:
            if not all_finite(src, self._frame_size * self.batch):
                self._reject(x)                    # raises: NaN/Inf are refused, state untouched
            if self._release_gil:
                with nogil:
                    any_ready = push_all(&self.net, src, self._frame_size, self.batch,
                                         self.batched, self._out_ptr, self._out_size, self._ready_ptr)
            else:
                any_ready = push_all(&self.net, src, self._frame_size, self.batch,
                                     self.batched, self._out_ptr, self._out_size, self._ready_ptr)
        finally:
            if have:
                PyBuffer_Release(&view)
        return any_ready

    def _run_block(self, block, out, ready, bint guard=True, bint check_finite=False):
        """Push a validated float32 C-contiguous block of shape (N, batch*frame).

        Unbatched: outputs are packed into `out` (M, out) in order, returns M; `ready`
        is unused (may be None). Batched: out is (N, batch, out) with NaN where no
        output, ready (N, batch). Either way the stream's `out`/`ready` then describe
        the block's last frame. Frames go through in chunks of at most `plan.block`,
        op by op. check_finite: a block holding NaN/Inf is refused before anything
        runs (returns -1). guard=False: the caller already holds the busy guard.
        """
        cdef Py_ssize_t n = block.shape[0], m = 0
        cdef const float[::1] xb
        cdef float[::1] ob
        cdef unsigned char[::1] rb
        if n == 0:
            return 0
        # Arrays straight from NumPy: read the header (a memoryview costs ~1 µs each).
        cdef const float* xptr = <const float*>ndarray_data(block, b'f', b'f')
        cdef float* optr = <float*>ndarray_data(out, b'f', b'f')
        cdef char* rptr = ndarray_data(ready, b'b', b'?') if self.batched else NULL
        if xptr == NULL:
            xb = block.reshape(-1)
            xptr = &xb[0]
        if optr == NULL and out.size:
            ob = out.reshape(-1)
            optr = &ob[0]
        if rptr == NULL and self.batched:
            rb = ready.reshape(-1).view('uint8')
            rptr = <char*>&rb[0]
        if check_finite and not all_finite(xptr, n * self.batch * self._frame_size):
            return -1
        if not guard:
            return self._run_chunks(xptr, n, optr, rptr)
        if self._busy:
            self._raise_busy()
        self._busy = True
        try:
            m = self._run_chunks(xptr, n, optr, rptr)
        finally:
            self._busy = False
        return m

    cdef Py_ssize_t _run_chunks(self, const float* xb, Py_ssize_t n, float* optr, char* rptr) except -1:
        cdef Py_ssize_t i, b, m = 0, chunk
        cdef Py_ssize_t fs = self._frame_size, os = self._out_size, B = self.batch
        cdef bint batched = self.batched
        with nogil:
            i = 0
            while i < n:
                chunk = min(self._block, n - i)
                for b in range(B):
                    if batched:
                        run_block(&self.net, b, xb + (i * B + b) * fs, chunk, B * fs,
                                  optr + (i * B + b) * os, B * os, rptr + i * B + b, B, False)
                    else:
                        m += run_block(&self.net, b, xb + i * fs, chunk, fs,
                                       optr + m * os if optr != NULL else NULL, os, NULL, 0, True)
                i += chunk
            # out/ready describe the last frame, as after a push (updated under the guard)
            if batched:
                memcpy(self._ready_ptr, rptr + (n - 1) * B, B)
                memcpy(self._out_ptr, optr + (n - 1) * B * os, B * os * sizeof(float))
            else:
                self._ready_ptr[0] = emits(&self.net, self.net.state[0] - 1)
                if m > 0 and optr != NULL:
                    memcpy(self._out_ptr, optr + (m - 1) * os, os * sizeof(float))
        return m

    def _profile_block(self, block):
        """Push a validated float32 block (N, frame) into stream 0 with per-op timers;
        return the total ns spent in each op (float64 array)."""
        import numpy as np
        totals = np.zeros(max(self.net.n_ops, 1), dtype=np.float64)
        cdef double[::1] tv = totals
        cdef float[::1] xb = np.ascontiguousarray(block, dtype=np.float32).reshape(-1)
        cdef Py_ssize_t n = block.shape[0], i
        with nogil:
            for i in range(n):
                step_profiled(&self.net, 0, &xb[0] + i * self._frame_size, &tv[0])
        return totals[:self.net.n_ops]

    def _frames(self):
        """Frames pushed so far, per stream (int64 array, a copy)."""
        return self._state[:, 0].copy()

    def _raise_busy(self):
        from ..errors import StreamBusyError
        raise StreamBusyError(
            "this stream is already running a push in another thread; a stream is not "
            "thread-safe: use one stream per thread (or a lock around it); its state is unchanged")

    def _acquire(self):
        """Take the busy guard from Python (reset/restore): a push started meanwhile in
        another thread raises StreamBusyError instead of interleaving. Pair with _release."""
        if self._busy:
            self._raise_busy()
        self._busy = True

    def _release(self):
        self._busy = False

    def _reset_rows(self, rows):
        """Reset the given streams (an iterable of indices) to their fresh state."""
        self._acquire()
        try:
            self._reset_rows_unguarded(rows)
        finally:
            self._release()

    def _reset_rows_unguarded(self, rows):
        for b in rows:
            for ring in self._rings:
                ring[b] = 0
            for arr in self._aux:
                arr[b] = 0
            self._state[b] = 0
            self.ready[b] = False
            self.out[b] = float("nan")

    def _aux_buffers(self):
        """Per-op state besides the rings (running sums and their counters)."""
        return self._aux

    def _buffers(self):
        """(rings, state): the live state arrays (for snapshots and memory accounting)."""
        return self._rings, self._state




def debug_build():
    """True when this extension was compiled with DSE_DEBUG=1 (bounds checks on)."""
    return bool(DSE_DEBUG_BUILD)


def kernel_isa():
    """Which conv kernels run on this CPU, e.g. 'avx2+fma (8 floats)' or 'neon (4 floats)'."""
    return dse_kernel_isa().decode()
