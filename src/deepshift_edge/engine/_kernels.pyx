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
from libc.math cimport expf, expm1f, tanhf, erff, log1pf, fabsf, roundf, INFINITY, NAN
from libc.string cimport memcpy, memset
from libc.stdint cimport int64_t, int32_t, int8_t
from cpython.object cimport PyObject, PyTypeObject, Py_TYPE

cdef extern from "_gemv.h" nogil:
    enum: DSE_BLK
    void dse_gemv_push(const float* const* x, const Py_ssize_t* woff, Py_ssize_t n_chunks,
                       const Py_ssize_t* clen, const float* w, Py_ssize_t nblk, Py_ssize_t blk_stride,
                       Py_ssize_t nout, float* out, float* out2, const float* shift, int relu)
    void dse_gemv_frames(const float* const* x, Py_ssize_t xstride, const Py_ssize_t* woff,
                         Py_ssize_t n_chunks, const Py_ssize_t* clen, const float* w, Py_ssize_t nblk,
                         Py_ssize_t blk_stride, Py_ssize_t nout, Py_ssize_t nf, float* const* out,
                         float* const* out2, Py_ssize_t ooff, const float* shift, int relu)
    void dse_gemv_rows(const float* const* x, const Py_ssize_t* xrow, const Py_ssize_t* xoff,
                       const Py_ssize_t* woff, Py_ssize_t n_chunks, const Py_ssize_t* clen, const float* w,
                       Py_ssize_t nblk, Py_ssize_t blk_stride, Py_ssize_t nout, Py_ssize_t nf,
                       float* const* out, Py_ssize_t ooff, const float* shift, int relu)
    void dse_gemv_streams(const float* const* x, const Py_ssize_t* xoff, const Py_ssize_t* woff,
                          Py_ssize_t n_chunks, const Py_ssize_t* clen, const float* w, Py_ssize_t nblk,
                          Py_ssize_t blk_stride, Py_ssize_t nout, Py_ssize_t ns, float* const* out,
                          float* const* out2, Py_ssize_t ooff, const float* shift, int relu)
    const char* dse_kernel_isa()
    float dse_read_floats(const float* w, Py_ssize_t n)

cdef extern from "_pool.h" nogil:
    void dse_pool_row(int is_max, const float* const* taps, Py_ssize_t ntaps, Py_ssize_t kf, Py_ssize_t sf,
                      Py_ssize_t pf, Py_ssize_t fin, Py_ssize_t fout, Py_ssize_t cin, Py_ssize_t cout, float* out)
    void dse_colsum(double* sums, const float* x, const float* old, Py_ssize_t nrows, Py_ssize_t rstride,
                    Py_ssize_t F, Py_ssize_t C)

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
    K_MUL = 10
    K_CONCAT = 11
    K_SLICE = 12
    K_GAPMIX = 13
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
    A_ELU = 12
    A_CELU = 13
    A_SELU = 14
    A_PRELU = 15
    A_SOFTPLUS = 16
    A_SOFTSIGN = 17
    A_HARDTANH = 18
    REF_PAD = -1      # a tap on padding: convs skip it, max pools ignore it
    REF_ZERO = -2     # a tap on the shared zero column (the zeros of a Pad layer)

N_INT_FIELDS = 31

cdef struct Op:
    int kind
    int dst
    int64_t period, phase
    Py_ssize_t ntaps, tap_step
    Py_ssize_t cin, cout, groups, fin, fout, kf, sf, pf, pfr, df
    int act
    float act_param, act_param2
    Py_ssize_t nslots, npos   # K_RMEAN: running sums per element, positions averaged
    int64_t delay             # K_GAPMIX: positions of the window (the divisor's count)
    Py_ssize_t nin            # inputs
    Py_ssize_t nrows          # output positions per run (strip ops: the strip rows)
    Py_ssize_t cip, coff      # avg pools: count_include_pad; K_SLICE: first channel
    Py_ssize_t poscol         # elements per output position
    Py_ssize_t esize          # bytes per element of the output (4: float32, 1: int8)
    Py_ssize_t pstride, ppad, ppadr, pdil   # sequence semantics: position arithmetic of the taps
    const int64_t* ins        # (nin, 4): node, lag in rows, channels, position offset
    const int64_t* table      # NULL, or (nrows, nin*ntaps, 3): node|REF_PAD|REF_ZERO, lag, offset
    const float* weight
    const float* scale
    const float* shift
    const float* act_w        # A_PRELU: per-channel slopes
    const float* rowdiv       # K_POOL_AVG strip rows: the time part of each row's divisor
    const int64_t* index
    const int64_t* rtab       # float strip convs, all rows at once: (ntaps, nrows, 2) slot, byte offset
    const int64_t* rnodes     # the node of each slot >= 1 (slot 0: the zero column); NULL: row by row
    Py_ssize_t nrnodes
    int32_t qzp_out, qlo, qhi   # int8 ops (_qops.pxi): output zero point, clamps
    const int32_t* qzp_in       # input zero points
    const int32_t* qm0          # requantization multipliers (per channel, or per input + output)
    const int32_t* qshift
    const int32_t* qbias
    const int32_t* qbias_full   # K_QCONV: bias - (zero point + kernel offset) * all weight sums
    const int32_t* qwsum        # K_QCONV: (cout, ntaps*kf) weight sums
    const void* qweight         # K_QCONV: weights in the kernel's layout
    const int8_t* qtable        # K_QLUT
    float qscale                # K_DEQ
    bint qmerged                # K_QCONV: taps merged into one chunk (run_qconv_merged)
    int qround                  # K_QCONV: 1 = single rounding (LiteRT's FULLY_CONNECTED), 2 = float
                                # requantization (onnxruntime, XNNPACK): qm0 holds float32 scales
    double* aux               # K_RMEAN: (batch, nslots, cin) running sums
    int64_t* auxn             # K_RMEAN: (batch, nslots) updates since the last exact re-sum


cdef struct Net:
    Op* ops
    int n_ops
    int n_nodes
    char** rings           # per node: base of batch element 0; element b at + b * 2L * col * esize
    Py_ssize_t* ring_len   # L per node
    Py_ssize_t* col        # elements per row per node
    Py_ssize_t* esize      # bytes per element per node: 4 (float32) or 1 (int8)
    const unsigned char* framewise  # per node: written per emitted window (strips, heads, vectors)
    int64_t* state         # per element: [t, h_0 .. h_{n_nodes-1}]
    Py_ssize_t state_stride
    Py_ssize_t in_c, in_f  # frame is (in_c, in_f) C-order; stored as (in_f, in_c)
    int64_t window, hop
    double* scratch        # per-channel accumulators of global pooling
    const char* zeros      # the shared zero column (REF_ZERO; int8 ops resolve their own)
    const char** taps      # one run's input columns, resolved (max nin * ntaps)
    int64_t* node_period   # schedule of each node's producer (push_many lags)
    int64_t* node_phase
    const float** xptrs    # conv chunk input pointers
    Py_ssize_t* woffs      # conv chunk weight offsets
    Py_ssize_t* clens      # channels per (merged) conv chunk
    Py_ssize_t* lags       # push_many: input lag of each frame a conv runs for (block)
    float** optrs          # push_many: a conv's output rows, then their mirror twins (2 * block);
                           # push: a 2-D conv's output positions (max fout), a strip conv's rows;
                           # batched push: the streams' output rows, their twins, then per
                           # (stream, position) column the same (2 * batch * (max fout + 1))
    const char** rbases    # strip convs by rows: the zero column, then the newest row of each node read
    const float** rptrs    # their (tap, row) inputs
    Py_ssize_t* rxrow      # per chunk: its tap's first entry in rptrs
    Py_ssize_t* rxoff      # per chunk: elements on from those inputs (feature tap, group)
    int32_t* qracc         # int8 strip convs by rows: each row's sums (nrows x blocks)
    Py_ssize_t block
    Py_ssize_t* sel        # batched push: the streams an op runs for (batch)
    Py_ssize_t* xoffs      # batched push: their input rows, in floats from the first one's, then
                           # those of (stream, position) columns (batch * (max fout + 1))
    int64_t* tcur          # batched push: each pushed stream's frame index (batch)
    const int8_t** qx      # int8 conv chunk inputs (2 * max chunks)
    int8_t* qgather        # a merged int8 conv's input vectors, one per feature position (+ 4)
    Py_ssize_t* qchunk     # their weight chunk indices
    int32_t* qacc          # int8 accumulators (max cout + a block)
    bint in_int8           # int8 plans: frames are quantized as they are written
    float in_scale
    int32_t in_zp
    bint sequence          # semantics='sequence': state holds per-node counts after the heads
    int out_node
    bint out_transpose
    Py_ssize_t out_c, out_f


# ---------------------------------------------------------------------------- rings
cdef inline Py_ssize_t rowbytes(Net* net, int node) noexcept nogil:
    return net.col[node] * net.esize[node]


cdef inline char* ring_base(Net* net, int node, Py_ssize_t b) noexcept nogil:
    return net.rings[node] + b * 2 * net.ring_len[node] * rowbytes(net, node)


cdef inline const char* ring_row(Net* net, int node, Py_ssize_t b, Py_ssize_t lag) noexcept nogil:
    """The row of node written `lag` runs before its newest one."""
    cdef Py_ssize_t L = net.ring_len[node]
    cdef int64_t h = net.state[b * net.state_stride + 1 + node]
    return ring_base(net, node, b) + (h + L - lag) * rowbytes(net, node)


cdef inline const float* fring_row(Net* net, int node, Py_ssize_t b, Py_ssize_t lag) noexcept nogil:
    return <const float*>ring_row(net, node, b, lag)


cdef inline char* advance(Net* net, int node, Py_ssize_t b) noexcept nogil:
    """Advance node's ring by one row and return where the new row goes (row h + L)."""
    cdef Py_ssize_t L = net.ring_len[node]
    cdef int64_t* h = &net.state[b * net.state_stride + 1 + node]
    h[0] = h[0] + 1
    if h[0] == L:
        h[0] = 0
    return ring_base(net, node, b) + (h[0] + L) * rowbytes(net, node)


cdef inline float* twin_row(Net* net, int node, Py_ssize_t b) noexcept nogil:
    """The twin (row h) of a float node's newest row (h + L): a kernel that writes both
    itself leaves mirror() nothing to do."""
    return <float*>ring_base(net, node, b) + net.state[b * net.state_stride + 1 + node] * net.col[node]


cdef inline void mirror(Net* net, int node, Py_ssize_t b) noexcept nogil:
    """Copy the newest row (h + L) to its twin (h)."""
    cdef Py_ssize_t L = net.ring_len[node]
    cdef Py_ssize_t nb = rowbytes(net, node)
    cdef int64_t h = net.state[b * net.state_stride + 1 + node]
    cdef char* base = ring_base(net, node, b)
    if L > 1:
        memcpy(base + h * nb, base + (h + L) * nb, nb)
    else:
        memcpy(base, base + nb, nb)


cdef inline int64_t runs_upto(int64_t t, int64_t period, int64_t phase) noexcept nogil:
    """How many times an op of this schedule ran at frames <= t."""
    if t < phase:
        return 0
    if period == 1:  # every op of a dense plan: no 64-bit division (~40 cycles each)
        return t - phase + 1
    return (t - phase) // period + 1


cdef inline Py_ssize_t lag_of(Net* net, int node, int64_t t, int64_t t_end) noexcept nogil:
    """Rows the node gained after frame t, up to the block's last frame t_end (0 in push).
    Window nodes (strips, heads, vectors) run frame by frame even in push_many: 0."""
    if t == t_end or net.framewise[node]:
        return 0
    return <Py_ssize_t>(runs_upto(t_end, net.node_period[node], net.node_phase[node])
                        - runs_upto(t, net.node_period[node], net.node_phase[node]))


cdef void resolve_taps(Net* net, const Op* op, Py_ssize_t b, Py_ssize_t row, int64_t t,
                       int64_t t_end) noexcept nogil:
    """net.taps[s * ntaps + i] = the column tap i (0 = oldest) of input s reads, for output
    row `row` of a run at frame t (push_many: the block ends at t_end). NULL = padding."""
    cdef Py_ssize_t s, i, r, nrefs = op.nin * op.ntaps
    cdef int node
    cdef Py_ssize_t lag
    cdef const int64_t* ref
    if op.table == NULL:
        for s in range(op.nin):
            node = <int>op.ins[4 * s]
            lag = <Py_ssize_t>op.ins[4 * s + 1] + lag_of(net, node, t, t_end)
            for i in range(op.ntaps):
                net.taps[s * op.ntaps + i] = ring_row(net, node, b, lag + (op.ntaps - 1 - i) * op.tap_step)
        return
    ref = op.table + row * nrefs * 3
    for r in range(nrefs):
        node = <int>ref[3 * r]
        if node == REF_PAD:
            net.taps[r] = NULL
        elif node == REF_ZERO:  # the float zero column, or one of an int8 zero point
            net.taps[r] = net.zeros + ref[3 * r + 2]
        else:
            net.taps[r] = ring_row(net, node, b, <Py_ssize_t>ref[3 * r + 1] + lag_of(net, node, t, t_end)) \
                + ref[3 * r + 2]  # a byte offset (setup scales the plan's element offsets)


# ---------------------------------------------------------------------------- epilogue
cdef inline float activate(float v, int act, float p1, float p2) noexcept nogil:
    if act == A_RELU:
        return v if v > 0.0 else 0.0
    if act == A_RELU6:
        return 0.0 if v < 0.0 else (6.0 if v > 6.0 else v)
    if act == A_LEAKY:
        return v if v >= 0.0 else v * p1
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
    if act == A_ELU:
        return v if v > 0.0 else p1 * expm1f(v)
    if act == A_CELU:
        return v if v > 0.0 else p1 * expm1f(v / p1)
    if act == A_SELU:
        return <float>1.0507009873554805 * (v if v > 0.0 else <float>1.6732632423543772 * expm1f(v))
    if act == A_SOFTPLUS:  # PyTorch: linear above the threshold
        return v if p1 * v > p2 else log1pf(expf(p1 * v)) / p1
    if act == A_SOFTSIGN:
        return v / (1.0 + fabsf(v))
    if act == A_HARDTANH:
        return p1 if v < p1 else (p2 if v > p2 else v)
    return v


cdef inline bint fusable_epilogue(const Op* op) noexcept nogil:
    """Bias and/or ReLU only: what the conv kernels apply in their stores."""
    return op.scale == NULL and (op.act == A_NONE or op.act == A_RELU)


cdef void epilogue(const Op* op, float* out) noexcept nogil:
    """Per-channel scale/shift then activation, over one (fout, cout) position."""
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
        elif op.act == A_PRELU:
            for c in range(op.cout):
                v = o[c]
                o[c] = v if v >= 0.0 else v * op.act_w[c]
        elif op.act != A_NONE:
            for c in range(op.cout):
                o[c] = activate(o[c], op.act, op.act_param, op.act_param2)


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


cdef inline (Py_ssize_t, Py_ssize_t) interior_positions(const Op* op) noexcept nogil:
    """The first and last feature positions whose feature taps all lie inside the frame
    (the interior every conv path batches); (0, -1) when fewer than two."""
    cdef Py_ssize_t fo_lo = (op.pf + op.sf - 1) // op.sf
    cdef Py_ssize_t num = op.fin - 1 + op.pf - (op.kf - 1) * op.df
    cdef Py_ssize_t fo_hi = min(num // op.sf, op.fout - 1) if num >= 0 else -1
    if fo_hi - fo_lo < 1:
        return 0, -1
    return fo_lo, fo_hi


cdef void run_conv(Net* net, const Op* op, const char** taps, float* out) noexcept nogil:
    """out[fo, o] = sum over time taps i (NULL: padding, skipped), feature taps kf, input
    channels of the group; then the op's epilogue.

    General case: the register-blocked matrix-vector product of _gemv.h over the
    (tap, feature tap) chunks that fall inside the (zero padded) frame, a bias/ReLU
    epilogue fused into its stores (the same float operations as epilogue()). Depthwise:
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
    cdef bint fused = not depthwise and fusable_epilogue(op)
    cdef bint relu = fused and op.act == A_RELU
    # Feature positions whose taps all lie inside the frame share one chunk list, their inputs
    # op.sf * op.cin floats apart: one frames-kernel call runs them all (weights loaded once
    # for several positions; per output the same terms in the same order as one at a time).
    cdef Py_ssize_t fo_lo = 0, fo_hi = -1
    if not depthwise and op.fout > 1:
        fo_lo, fo_hi = interior_positions(op)
    for fo in range(op.fout):
        if fo_lo < fo <= fo_hi:
            continue  # computed with fo_lo
        o = out + fo * op.cout
        if depthwise:
            memset(o, 0, op.cout * sizeof(float))
        n = 0
        for i in range(op.ntaps):
            x = <const float*>taps[i]
            if x == NULL:
                continue
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
                                fo_hi - fo_lo + 1, net.optrs, NULL, g * cout_g,
                                op.shift + g * cout_g if fused and op.shift != NULL else NULL, relu)
            continue
        for g in range(op.groups):
            group_chunks(net, n, g * cin_g)
            dse_gemv_push(net.xptrs + n, net.woffs, n, net.clens, op.weight + g * nblk * blk_stride, nblk,
                          blk_stride, cout_g, o + g * cout_g, NULL,
                          op.shift + g * cout_g if fused and op.shift != NULL else NULL, relu)
    if not fused:
        epilogue(op, out)


cdef inline Py_ssize_t ring_chunks(Net* net, const Op* op, Py_ssize_t b, Py_ssize_t lag0,
                                   Py_ssize_t fo) noexcept nogil:
    """Fill net's chunk lists for feature position fo of an interior conv reading stream b's
    input ring (tap i at lag lag0 + (ntaps - 1 - i) * tap_step); return the chunk count."""
    cdef int src = <int>op.ins[0]
    cdef Py_ssize_t cin_g = op.cin // op.groups
    cdef Py_ssize_t i, k, fi, n = 0
    cdef const float* row
    for i in range(op.ntaps):
        row = fring_row(net, src, b, lag0 + (op.ntaps - 1 - i) * op.tap_step)
        for k in range(op.kf):
            fi = fo * op.sf - op.pf + k * op.df
            if fi < 0 or fi >= op.fin:
                continue
            n = add_chunk(net, n, row + fi * op.cin, (i * op.kf + k) * cin_g * DSE_BLK, cin_g)
    return n


cdef void run_conv_push(Net* net, const Op* op, Py_ssize_t b, float* out, Py_ssize_t lag) noexcept nogil:
    """One column of an interior, non-depthwise conv with one feature position (every 1-D
    conv), into the row `out` just advanced: run_conv_frames for one frame, on the push
    kernel (up to eight blocks a pass). A bias/ReLU epilogue is fused into the kernel, which
    also writes the mirrored twin row, so the column is stored once and not read back."""
    cdef Py_ssize_t lag0 = <Py_ssize_t>op.ins[1] + lag
    cdef Py_ssize_t cin_g = op.cin // op.groups
    cdef Py_ssize_t cout_g = op.cout // op.groups
    cdef Py_ssize_t nblk = (cout_g + DSE_BLK - 1) // DSE_BLK
    cdef Py_ssize_t blk_stride = op.ntaps * op.kf * cin_g * DSE_BLK
    cdef Py_ssize_t col = net.col[op.dst]
    cdef bint fused = fusable_epilogue(op)
    cdef float* twin = twin_row(net, op.dst, b)
    cdef Py_ssize_t g, n = ring_chunks(net, op, b, lag0, 0)  # the one position, fo = 0
    for g in range(op.groups):
        group_chunks(net, n, g * cin_g)
        dse_gemv_push(net.xptrs + n, net.woffs, n, net.clens, op.weight + g * nblk * blk_stride, nblk,
                      blk_stride, cout_g, out + g * cout_g, twin + g * cout_g if fused else NULL,
                      op.shift + g * cout_g if fused and op.shift != NULL else NULL,
                      fused and op.act == A_RELU)
    if not fused:
        epilogue(op, out)
        memcpy(twin, out, col * sizeof(float))


cdef inline void resolve_rows(Net* net, const Op* op, Py_ssize_t b, int64_t t,
                              int64_t t_end) noexcept nogil:
    """net.rptrs[i * nrows + r] = the column tap i of strip row r reads (plan.row_tables):
    each node's newest row resolved once, plus the entry's fixed byte offset; padding the
    zero column."""
    cdef Py_ssize_t s, e
    cdef int node
    cdef const char** bases = net.rbases
    cdef const int64_t* rt = op.rtab
    bases[0] = net.zeros
    for s in range(op.nrnodes):
        node = <int>op.rnodes[s]
        bases[s + 1] = ring_row(net, node, b, lag_of(net, node, t, t_end))
    for e in range(op.ntaps * op.nrows):
        net.rptrs[e] = <const float*>(bases[rt[2 * e]] + rt[2 * e + 1])


cdef void run_dwconv_rows(Net* net, const Op* op, float* out) noexcept nogil:
    """A depthwise strip conv over every row, inputs from resolve_rows: per output the
    terms of run_conv's depthwise loop in its order (padding skipped, as there)."""
    cdef Py_ssize_t nrows = op.nrows, cin = op.cin
    cdef Py_ssize_t r, i, fo, k, fi, c
    cdef const int64_t* rt = op.rtab
    cdef const float* x
    cdef const float* w
    cdef float* row
    cdef float* o
    for r in range(nrows):
        row = out + r * op.poscol
        memset(row, 0, op.poscol * sizeof(float))
        for i in range(op.ntaps):
            if rt[2 * (i * nrows + r)] == 0:
                continue  # padding (or a Pad's zeros: a zero term either way)
            x = net.rptrs[i * nrows + r]
            for fo in range(op.fout):
                o = row + fo * cin
                for k in range(op.kf):
                    fi = fo * op.sf - op.pf + k * op.df
                    if fi < 0 or fi >= op.fin:
                        continue
                    w = op.weight + (i * op.kf + k) * cin
                    for c in range(cin):
                        o[c] += w[c] * x[fi * cin + c]
        epilogue(op, row)


cdef void run_conv_rows(Net* net, const Op* op, float* out) noexcept nogil:
    """A float strip conv, all op.nrows rows at once (plan.row_tables), inputs from
    resolve_rows: per output feature position and group one dse_gemv_rows call runs every
    row. Per output the same terms in the same order as run_conv one row at a time (plus
    zero terms for padding)."""
    cdef Py_ssize_t nrows = op.nrows
    cdef Py_ssize_t cin_g = op.cin // op.groups
    cdef Py_ssize_t cout_g = op.cout // op.groups
    cdef Py_ssize_t nblk = (cout_g + DSE_BLK - 1) // DSE_BLK
    cdef Py_ssize_t blk_stride = op.ntaps * op.kf * cin_g * DSE_BLK
    cdef bint fused = fusable_epilogue(op)
    cdef Py_ssize_t r, n, fo, i, k, fi, g, c, wo
    if cin_g == 1 and cout_g == 1:
        run_dwconv_rows(net, op, out)
        return
    for r in range(nrows):
        net.optrs[r] = out + r * op.poscol
    for fo in range(op.fout):
        n = 0
        for i in range(op.ntaps):
            for k in range(op.kf):
                fi = fo * op.sf - op.pf + k * op.df
                if fi < 0 or fi >= op.fin:
                    continue
                wo = (i * op.kf + k) * cin_g * DSE_BLK
                # a feature tap that continues the previous one in every row's input and in
                # the weights joins it (as add_chunk does): one longer loop, the same order
                if n > 0 and net.rxrow[n - 1] == i * nrows and cin_g == op.cin \
                        and fi * op.cin == net.rxoff[n - 1] + net.clens[n - 1] \
                        and wo == net.woffs[n - 1] + net.clens[n - 1] * DSE_BLK:
                    net.clens[n - 1] += cin_g
                    continue
                net.rxrow[n] = i * nrows
                net.rxoff[n] = fi * op.cin
                net.woffs[n] = wo
                net.clens[n] = cin_g
                n += 1
        for g in range(op.groups):
            if g > 0:
                for c in range(n):
                    net.rxoff[c] += cin_g
            dse_gemv_rows(net.rptrs, net.rxrow, net.rxoff, net.woffs, n, net.clens,
                          op.weight + g * nblk * blk_stride, nblk, blk_stride, cout_g, nrows, net.optrs,
                          fo * op.cout + g * cout_g,
                          op.shift + g * cout_g if fused and op.shift != NULL else NULL,
                          fused and op.act == A_RELU)
    if not fused:
        for r in range(nrows):
            epilogue(op, out + r * op.poscol)


cdef void run_pool(const Op* op, const char** taps, float* out, float tdiv) noexcept nogil:
    """Max or mean over the time taps (NULL: padding) and the feature window of each output
    feature position. Averages divide by tdiv (the time taps PyTorch counts) times the
    feature count by the same rule."""
    cdef Py_ssize_t fo, c, fstart, fend, fcount
    cdef float* o
    cdef bint is_max = op.kind == K_POOL_MAX
    cdef float inv
    # the max (a select) or the sum over the taps of every position, at the vector width (_pool.h)
    dse_pool_row(is_max, <const float* const*>taps, op.ntaps, op.kf, op.sf, op.pf, op.fin, op.fout,
                 op.cin, op.cout, out)
    if is_max:
        return
    for fo in range(op.fout):
        o = out + fo * op.cout
        # PyTorch's divisor: the window clipped to the padded frame, or the real inputs.
        fstart = fo * op.sf - op.pf
        fend = min(fstart + op.kf, op.fin + op.pfr)
        fcount = fend - fstart
        if not op.cip:
            fcount = min(fend, op.fin) - max(fstart, 0)
        inv = 1.0 / (tdiv * <float>fcount)
        for c in range(op.cout):
            o[c] = o[c] * inv


cdef void run_global(Net* net, const Op* op, const char** taps, float* out) noexcept nogil:
    """Mean or max over ntaps positions (and features) per channel; double accumulators.
    K_GAPMIX: tap 0 is the interior's running mean over npos positions (one value per
    channel), the others the remaining positions of the window, `delay` in all."""
    cdef Py_ssize_t i, f, c, i0 = 0
    cdef const float* x
    cdef double* acc = net.scratch
    cdef bint is_max = op.kind == K_GMAX
    cdef double count = <double>(op.ntaps * op.fin)
    for c in range(op.cin):
        acc[c] = -INFINITY if is_max else 0.0
    if op.kind == K_GAPMIX:
        x = <const float*>taps[0]
        for c in range(op.cin):
            acc[c] = <double>x[c] * <double>(op.npos * op.fin)
        i0 = 1
        count = <double>(op.delay * op.fin)
    for i in range(i0, op.ntaps):
        x = <const float*>taps[i]
        for f in range(op.fin):
            if is_max:
                for c in range(op.cin):
                    if x[f * op.cin + c] > acc[c] or x[f * op.cin + c] != x[f * op.cin + c]:
                        acc[c] = x[f * op.cin + c]
            else:
                for c in range(op.cin):
                    acc[c] += x[f * op.cin + c]
    for c in range(op.cin):
        out[c] = <float>(acc[c] if is_max else acc[c] / count)


cdef void run_rmean(Net* net, const Op* op, Py_ssize_t b, float* out, int64_t t,
                    int64_t t_end) noexcept nogil:
    """Global average as running sums: add the new column, subtract the one leaving; the
    output is the mean of the npos columns ending at frame t (one sum per stride phase).

    Every npos updates a slot is re-summed exactly from the ring, so rounding cannot
    accumulate over millions of frames."""
    cdef int node = <int>op.ins[0]
    cdef Py_ssize_t lag = <Py_ssize_t>op.ins[1] + lag_of(net, node, t, t_end)
    cdef Py_ssize_t P = op.nslots, C = op.cin, F = op.fin, n = op.npos
    cdef const float* new = fring_row(net, node, b, lag)
    cdef const float* old = fring_row(net, node, b, lag + n * P)
    cdef Py_ssize_t slot = (t // op.period) % P
    cdef double* sums = op.aux + (b * P + slot) * C
    cdef int64_t* count = op.auxn + b * P + slot
    cdef Py_ssize_t c
    dse_colsum(sums, new, old, 1, 0, F, C)  # sums[c] += new - old over the F features (_pool.h)
    count[0] += 1
    if count[0] >= n:
        count[0] = 0
        for c in range(C):
            sums[c] = 0.0
        # rows lag, lag + P, ..., newest first: one row apart in the mirrored ring is net.col floats
        dse_colsum(sums, new, NULL, n, -P * net.col[node], F, C)
    for c in range(C):
        out[c] = <float>(sums[c] / <double>(n * F))


cdef void run_softmax(const Op* op, const float* x, float* out) noexcept nogil:
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


cdef void run_elementwise(const Op* op, const char** taps, float* out) noexcept nogil:
    """ADD / MUL of nin float inputs."""
    cdef Py_ssize_t j, s, n = op.poscol
    cdef const float* x
    if op.kind == K_ADD or op.kind == K_MUL:
        memcpy(out, taps[0], n * sizeof(float))
        for s in range(1, op.nin):
            x = <const float*>taps[s]
            if op.kind == K_ADD:
                for j in range(n):
                    out[j] = out[j] + x[j]
            else:
                for j in range(n):
                    out[j] = out[j] * x[j]


include "_qops.pxi"


cdef void run_move(const Op* op, const char** taps, char* out) noexcept nogil:
    """Data movement of elements of op.esize bytes (float32 or int8 alike): CONCAT along
    channels, SLICE of channels, COPY (NULL: zeros), GATHER."""
    cdef Py_ssize_t j, s, f, off, ch, es = op.esize, n = op.poscol
    if op.kind == K_CONCAT:
        for f in range(op.fout):
            off = 0
            for s in range(op.nin):
                ch = <Py_ssize_t>op.ins[4 * s + 2]
                memcpy(out + (f * op.cout + off) * es, taps[s] + f * ch * es, ch * es)
                off += ch
    elif op.kind == K_SLICE:
        for f in range(op.fout):
            memcpy(out + f * op.cout * es, taps[0] + (f * op.cin + op.coff) * es, op.cout * es)
    elif op.kind == K_COPY:
        memcpy(out, taps[0], n * es)
    elif op.kind == K_GATHER:
        for j in range(n):
            memcpy(out + j * es, taps[op.index[2 * j]] + op.index[2 * j + 1] * es, es)


cdef inline bint is_move(int kind) noexcept nogil:
    return kind == K_CONCAT or kind == K_SLICE or kind == K_COPY or kind == K_GATHER


cdef void run_op(Net* net, const Op* op, Py_ssize_t b, int64_t t, int64_t t_end) noexcept nogil:
    """Run op once for stream b at frame t; in push_many the block ends at t_end (inputs
    have moved on by then: lag_of)."""
    cdef char* out
    cdef Py_ssize_t row
    cdef float* o
    if op.kind >= K_QCONV:
        run_qop(net, op, b, t, t_end)
        return
    out = advance(net, op.dst, b)
    if op.kind == K_RMEAN:
        run_rmean(net, op, b, <float*>out, t, t_end)
        epilogue(op, <float*>out)
        mirror(net, op.dst, b)
        return
    if op.rnodes != NULL:
        resolve_rows(net, op, b, t, t_end)
        run_conv_rows(net, op, <float*>out)
        mirror(net, op.dst, b)
        return
    if op.kind == K_CONV and op.fout == 1 and op.nrows == 1 and batchable_conv(op):
        run_conv_push(net, op, b, <float*>out, lag_of(net, <int>op.ins[0], t, t_end))
        return
    for row in range(op.nrows):
        resolve_taps(net, op, b, row, t, t_end)
        if is_move(op.kind):
            run_move(op, net.taps, out + row * op.poscol * op.esize)
            if op.esize == 4:
                epilogue(op, <float*>out + row * op.poscol)
            continue
        o = <float*>out + row * op.poscol
        if op.kind == K_CONV:
            run_conv(net, op, net.taps, o)  # its epilogue included
            continue
        elif op.kind == K_POOL_MAX or op.kind == K_POOL_AVG:
            run_pool(op, net.taps, o, op.rowdiv[row] if op.rowdiv != NULL else <float>op.ntaps)
        elif op.kind == K_GMEAN or op.kind == K_GMAX or op.kind == K_GAPMIX:
            run_global(net, op, net.taps, o)
        elif op.kind == K_SOFTMAX:
            run_softmax(op, <const float*>net.taps[0], o)
        else:
            run_elementwise(op, net.taps, o)
        epilogue(op, o)
    mirror(net, op.dst, b)


cdef inline void write_input(Net* net, Py_ssize_t b, const float* frame) noexcept nogil:
    """Append a (C, F) frame to the input ring, stored channels-last as (F, C)."""
    cdef float* dst
    cdef Py_ssize_t c, f
    if net.in_int8:
        write_qinput(net, b, frame)
        return
    dst = <float*>advance(net, 0, b)
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
            run_op(net, op, b, t, t)
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
            run_op(net, op, b, t, t)
            op_ns[k] += now_ns() - t0
    st[0] = t + 1
    return emits(net, t)


cdef void write_output(Net* net, Py_ssize_t b, float* out, Py_ssize_t lag) noexcept nogil:
    cdef const float* src = fring_row(net, net.out_node, b, lag)
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


cdef inline bint batchable_conv(const Op* op) noexcept nogil:
    """An interior, non-depthwise float conv: what the matrix kernels run over several frames
    (push_many) or several streams (batched push) in one pass."""
    return op.kind == K_CONV and op.table == NULL and not (op.cin == op.groups and op.cout == op.groups)


cdef void run_conv_streams(Net* net, const Op* op, const Py_ssize_t* sel, Py_ssize_t ns) noexcept nogil:
    """One run of an interior conv (batchable_conv) for each of the ns streams sel[0..ns), at
    their own frames: the chunk list comes from stream sel[0]'s ring rows, and every other
    stream reads the same rows of its own ring, a fixed number of floats away (rows of a
    mirrored ring are contiguous whatever its head). The feature positions whose taps all
    lie inside the frame (a 2-D conv's interior, as run_conv finds them) share one chunk
    list too, sf * cin floats apart: one kernel call runs every (stream, position) column.
    The kernel reads each weight once per pass of up to eight columns; per output the same
    terms in the same order as step()."""
    cdef int src = <int>op.ins[0]
    cdef Py_ssize_t lag0 = <Py_ssize_t>op.ins[1]
    cdef Py_ssize_t cin_g = op.cin // op.groups
    cdef Py_ssize_t cout_g = op.cout // op.groups
    cdef Py_ssize_t nblk = (cout_g + DSE_BLK - 1) // DSE_BLK
    cdef Py_ssize_t blk_stride = op.ntaps * op.kf * cin_g * DSE_BLK
    cdef Py_ssize_t col = net.col[op.dst]
    cdef bint fused = fusable_epilogue(op)
    cdef float** outs = net.optrs
    cdef float** twins = net.optrs + ns
    cdef float** couts          # (stream, interior position) columns: outputs, then twins
    cdef float** ctwins
    cdef Py_ssize_t* cxo = net.xoffs + ns
    cdef Py_ssize_t s, p, c, fo, g, n, ncols = 0
    cdef Py_ssize_t b0 = sel[0]
    cdef Py_ssize_t fo_lo = 0, fo_hi = -1
    cdef const float* first = fring_row(net, src, b0, lag0)
    for s in range(ns):
        net.xoffs[s] = fring_row(net, src, sel[s], lag0) - first
        outs[s] = <float*>advance(net, op.dst, sel[s])
        twins[s] = twin_row(net, op.dst, sel[s])
    if op.fout > 1:
        fo_lo, fo_hi = interior_positions(op)
    if fo_hi > fo_lo:
        ncols = ns * (fo_hi - fo_lo + 1)
        couts = net.optrs + 2 * ns
        ctwins = couts + ncols
        c = 0
        for s in range(ns):
            for p in range(fo_hi - fo_lo + 1):
                cxo[c] = net.xoffs[s] + p * op.sf * op.cin
                couts[c] = outs[s] + (fo_lo + p) * op.cout
                ctwins[c] = twins[s] + (fo_lo + p) * op.cout
                c += 1
    for fo in range(op.fout):
        if fo_lo < fo <= fo_hi:
            continue  # computed with fo_lo
        n = ring_chunks(net, op, b0, lag0, fo)
        for g in range(op.groups):
            group_chunks(net, n, g * cin_g)
            if fo == fo_lo and ncols:
                dse_gemv_streams(net.xptrs + n, cxo, net.woffs, n, net.clens,
                                 op.weight + g * nblk * blk_stride, nblk, blk_stride, cout_g, ncols, couts,
                                 ctwins if fused else NULL, g * cout_g,
                                 op.shift + g * cout_g if fused and op.shift != NULL else NULL,
                                 fused and op.act == A_RELU)
            else:
                dse_gemv_streams(net.xptrs + n, net.xoffs, net.woffs, n, net.clens,
                                 op.weight + g * nblk * blk_stride, nblk, blk_stride, cout_g, ns, outs,
                                 twins if fused else NULL, fo * op.cout + g * cout_g,
                                 op.shift + g * cout_g if fused and op.shift != NULL else NULL,
                                 fused and op.act == A_RELU)
    if not fused:
        for s in range(ns):
            epilogue(op, outs[s])
            memcpy(twins[s], outs[s], col * sizeof(float))


cdef bint push_rows(Net* net, const Py_ssize_t* rows, Py_ssize_t n, const float* src,
                    Py_ssize_t frame_size, bint nan_fill, float* out, Py_ssize_t out_size,
                    char* ready) noexcept nogil:
    """One frame for each of n streams of the batch: frame i (src + i * frame_size) goes to
    stream rows[i] (rows NULL: stream i), its output to out + i * out_size and ready[i].
    Op by op over the streams, so that the interior convs run as one small GEMM for all of
    them (run_conv_streams); every other op runs stream by stream. Each stream's ops run in
    step()'s order on its own state, so its outputs are bit for bit those of step() whatever
    streams share the call. True if any produced an output."""
    cdef Py_ssize_t i, k, cnt, b
    cdef int64_t t
    cdef bint any_ready = False
    cdef const Op* op
    if n == 1:  # one stream: step() itself
        b = rows[0] if rows != NULL else 0
        if step(net, b, src):
            write_output(net, b, out, 0)
            ready[0] = 1
            return True
        ready[0] = 0
        if nan_fill:
            fill_nan(out, out_size)
        return False
    for i in range(n):
        b = rows[i] if rows != NULL else i
        net.tcur[i] = net.state[b * net.state_stride]
        write_input(net, b, src + i * frame_size)
    for k in range(net.n_ops):
        op = &net.ops[k]
        if batchable_conv(op):
            cnt = 0
            for i in range(n):
                if scheduled(op, net.tcur[i]):
                    net.sel[cnt] = rows[i] if rows != NULL else i
                    cnt += 1
            if cnt:
                run_conv_streams(net, op, net.sel, cnt)
            continue
        for i in range(n):
            t = net.tcur[i]
            if scheduled(op, t):
                run_op(net, op, rows[i] if rows != NULL else i, t, t)
    for i in range(n):
        b = rows[i] if rows != NULL else i
        t = net.tcur[i]
        net.state[b * net.state_stride] = t + 1
        if emits(net, t):
            write_output(net, b, out + i * out_size, 0)
            ready[i] = 1
            any_ready = True
        else:
            ready[i] = 0
            if nan_fill:
                fill_nan(out + i * out_size, out_size)
    return any_ready


cdef bint push_all(Net* net, const float* src, Py_ssize_t frame_size, Py_ssize_t batch,
                   bint batched, float* out, Py_ssize_t out_size, char* ready) noexcept nogil:
    """One frame for each of the batch streams; True if any produced an output."""
    return push_rows(net, NULL, batch, src, frame_size, batched, out, out_size, ready)


# ---------------------------------------------------------------------------- semantics='sequence'
# Per node the state keeps cnt (positions computed) and fin (positions in all + 1 after
# flush(), 0 before): an op computes its next position as soon as the newest input position
# that position reads exists, or its input is final. Taps before the start or past a final
# end are padding. See sequence.py.
cdef inline int64_t* seq_counts(Net* net, Py_ssize_t b) noexcept nogil:
    return net.state + b * net.state_stride + 1 + net.n_nodes


cdef inline bint seq_ready(Net* net, const Op* op, Py_ssize_t b) noexcept nogil:
    cdef int64_t* cnt = seq_counts(net, b)
    cdef int64_t* fin = cnt + net.n_nodes
    cdef int64_t j = cnt[op.dst], p
    cdef Py_ssize_t s
    cdef int node
    if fin[op.dst] > 0 and j >= fin[op.dst] - 1:
        return False
    for s in range(op.nin):
        node = <int>op.ins[4 * s]
        p = j * op.pstride - op.ppad + (op.ntaps - 1) * op.pdil + op.ins[4 * s + 3]
        if p >= cnt[node] and fin[node] == 0:
            return False
    return True


cdef float seq_taps(Net* net, const Op* op, Py_ssize_t b) noexcept nogil:
    """Resolve the taps of op's next position; return an average pool's time divisor."""
    cdef int64_t* cnt = seq_counts(net, b)
    cdef int64_t* fin = cnt + net.n_nodes
    cdef int64_t j = cnt[op.dst], p, start, end
    cdef Py_ssize_t s, i, valid = 0
    cdef int node
    for s in range(op.nin):
        node = <int>op.ins[4 * s]
        for i in range(op.ntaps):
            p = j * op.pstride - op.ppad + i * op.pdil + op.ins[4 * s + 3]
            if p < 0 or (fin[node] > 0 and p >= fin[node] - 1):
                net.taps[s * op.ntaps + i] = NULL
            else:
                net.taps[s * op.ntaps + i] = ring_row(net, node, b, <Py_ssize_t>(cnt[node] - 1 - p))
                valid += 1
    if not op.cip:
        return <float>valid
    # PyTorch's count_include_pad divisor: the window clipped to the padded end
    start = j * op.pstride - op.ppad
    end = start + op.ntaps
    node = <int>op.ins[0]
    if fin[node] > 0 and end > fin[node] - 1 + op.ppadr:
        end = fin[node] - 1 + op.ppadr
    return <float>(end - start)


cdef void run_seq_op(Net* net, const Op* op, Py_ssize_t b) noexcept nogil:
    cdef float tdiv = seq_taps(net, op, b)
    cdef char* raw = advance(net, op.dst, b)
    cdef float* out = <float*>raw
    if is_move(op.kind):
        run_move(op, net.taps, raw)
    elif op.kind == K_CONV:
        run_conv(net, op, net.taps, out)  # its epilogue included
    elif op.kind == K_POOL_MAX or op.kind == K_POOL_AVG:
        run_pool(op, net.taps, out, tdiv)
    elif op.kind == K_SOFTMAX:
        run_softmax(op, <const float*>net.taps[0], out)
    else:
        run_elementwise(op, net.taps, out)
    if op.kind != K_CONV:
        epilogue(op, out)
    mirror(net, op.dst, b)
    seq_counts(net, b)[op.dst] += 1


cdef Py_ssize_t step_seq(Net* net, Py_ssize_t b, const float* frame, float* out,
                         Py_ssize_t out_size, Py_ssize_t max_out) noexcept nogil:
    """Push one frame (frame != NULL) or, with frame == NULL, run what a flush allows; write
    each new output position to out (at most max_out); return how many."""
    cdef Py_ssize_t k, m = 0
    cdef const Op* op
    if frame != NULL:
        write_input(net, b, frame)
        seq_counts(net, b)[0] += 1
        net.state[b * net.state_stride] += 1
    for k in range(net.n_ops):
        op = &net.ops[k]
        while seq_ready(net, op, b):
            run_seq_op(net, op, b)
            if op.dst == net.out_node:
                if m < max_out:
                    write_output(net, b, out + m * out_size, 0)
                m += 1
    return m


cdef bint push_all_seq(Net* net, const float* src, Py_ssize_t frame_size, Py_ssize_t batch,
                       bint batched, float* out, Py_ssize_t out_size, char* ready) noexcept nogil:
    cdef Py_ssize_t b
    cdef bint any_ready = False
    for b in range(batch):
        if step_seq(net, b, src + b * frame_size, out + b * out_size, out_size, 1) > 0:
            ready[b] = 1
            any_ready = True
        else:
            ready[b] = 0
            if batched:
                fill_nan(out + b * out_size, out_size)
    return any_ready


# ---------------------------------------------------------------------------- push_many: op by op
cdef void run_conv_frames(Net* net, const Op* op, Py_ssize_t b, const Py_ssize_t* lags,
                          Py_ssize_t nf) noexcept nogil:
    """An interior, non-depthwise conv for nf frames whose inputs are evenly spaced in the
    ring (constant lags[f] - lags[f+1]): the kernel reads each weight once per six frames.
    When the epilogue is only bias and/or ReLU, the kernel applies it and writes both
    mirrored rows itself (no scratch copy, no second pass)."""
    cdef int src = <int>op.ins[0]
    cdef Py_ssize_t lag0 = <Py_ssize_t>op.ins[1] + lags[0]
    cdef Py_ssize_t cin_g = op.cin // op.groups
    cdef Py_ssize_t cout_g = op.cout // op.groups
    cdef Py_ssize_t nblk = (cout_g + DSE_BLK - 1) // DSE_BLK
    cdef Py_ssize_t blk_stride = op.ntaps * op.kf * cin_g * DSE_BLK
    cdef Py_ssize_t col = net.col[op.dst]
    cdef Py_ssize_t xstride = (lags[0] - lags[1]) * net.col[src] if nf > 1 else 0
    cdef bint fused = fusable_epilogue(op)
    cdef float** outs = net.optrs
    cdef float** twins = net.optrs + net.block
    cdef Py_ssize_t f, fo, g, n
    for f in range(nf):
        outs[f] = <float*>advance(net, op.dst, b)
        twins[f] = twin_row(net, op.dst, b)
    for fo in range(op.fout):
        n = ring_chunks(net, op, b, lag0, fo)
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
    cdef Py_ssize_t j, k, cnt, m = 0, lag
    cdef Py_ssize_t* lags = net.lags
    cdef const Op* op
    cdef bint gemv
    for j in range(n):
        write_input(net, b, frames + j * fstride)
    # Interior ops, each over the whole block; window ops (strips, heads, vectors), which read
    # the interiors, frame by frame afterwards, so their rows need no room for a block.
    for k in range(net.n_ops):
        op = &net.ops[k]
        if net.framewise[op.dst]:
            continue
        gemv = batchable_conv(op)
        cnt = 0
        for j in range(n):
            t = t0 + j
            if not scheduled(op, t):
                continue
            if gemv:
                # a run of frames with evenly spaced inputs goes to the kernel in one call
                lag = lag_of(net, <int>op.ins[0], t, t_end)
                if cnt >= 2 and lags[cnt - 1] - lag != lags[0] - lags[1]:
                    run_conv_frames(net, op, b, lags, cnt)
                    cnt = 0
                lags[cnt] = lag
                cnt += 1
            else:
                run_op(net, op, b, t, t_end)
        if cnt:
            run_conv_frames(net, op, b, lags, cnt)
    for j in range(n):
        t = t0 + j
        if emits(net, t):
            for k in range(net.n_ops):
                op = &net.ops[k]
                if net.framewise[op.dst] and scheduled(op, t):
                    run_op(net, op, b, t, t_end)
            if packed:
                write_output(net, b, out + m * ostride, 0)
                m += 1
            else:
                write_output(net, b, out + j * ostride, 0)
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


cdef const int8_t* ndarray_int8_data(object x, int nd, const Py_ssize_t* shape) noexcept:
    """Data pointer of an exact, C-contiguous int8 ndarray of shape `shape`, else NULL."""
    cdef char* p = ndarray_data(x, b'i', b'b')
    cdef dse_ndarray_head* a
    cdef int i
    if p == NULL:
        return NULL
    a = <dse_ndarray_head*><PyObject*>x
    if a.nd != nd:
        return NULL
    for i in range(nd):
        if a.dimensions[i] != shape[i]:
            return NULL
    return <const int8_t*>p


cdef void int8_to_float(const int8_t* q, float* x, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        x[i] = <float>q[i]


cdef void float_to_int8(const float* x, int8_t* q, Py_ssize_t n) noexcept nogil:
    """The unit-scale dequantize's integer-valued floats back to int8; NaN (a batched row
    without an output) becomes 0."""
    cdef Py_ssize_t i
    for i in range(n):
        q[i] = <int8_t>x[i] if x[i] == x[i] else 0


cdef inline bint is_native_float32(const Py_buffer* view) noexcept:
    cdef const char* fmt = view.format
    if view.itemsize != 4 or fmt == NULL:
        return False
    if fmt[0] == b'f' and fmt[1] == 0:
        return True
    return (fmt[0] == b'@' or fmt[0] == b'=' or (fmt[0] == b'<' and LITTLE_ENDIAN)) \
        and fmt[1] == b'f' and fmt[2] == 0


import sys as _sys


def cache_aligned(a):
    """a (C-contiguous), or a copy of it starting on a 64-byte boundary. The blocked conv
    weights are rows of 16 floats (one zmm, 64 bytes): from a 64-byte-aligned start every vector
    load stays inside one cache line. numpy's 16-byte alignment made every AVX-512 load straddle
    two: measured on an Intel Xeon (model 207), 273 KiB read from L2 in 5.0 us at an offset of
    16 bytes, 2.9 us aligned."""
    import numpy as np
    a = np.ascontiguousarray(a)
    if a.nbytes == 0 or a.ctypes.data % 64 == 0:
        return a
    buf = np.empty(a.nbytes + 64, np.uint8)
    start = (-buf.ctypes.data) % 64
    out = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


cdef bint LITTLE_ENDIAN = _sys.byteorder == "little"


# ---------------------------------------------------------------------------- the Python face
cdef class StreamCore:
    """Owns the buffers of one (batched) stream and runs its plan.

    Built by :class:`deepshift_edge.stream.Stream`; not meant to be used directly.
    """

    cdef Net net
    cdef object _keep            # arrays whose memory the C structs point into
    cdef object _rings, _state, _ints, _aux, _fills
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
    cdef public bint _flushed        # semantics='sequence': the recording has ended
    cdef Py_ssize_t _block
    cdef object _coerce_frame, _coerce_block, _reject
    # io="int8" streams: int8 frames are widened into _stage (exact), pushed through the
    # unit-scale input quantizer, and the unit-scale output narrowed into out_int8
    cdef bint _io_int8
    cdef object _stage, _coerce_int8
    cdef float* _stage_ptr
    cdef readonly object out_int8   # (batch, *output_shape) int8, reused every push
    cdef object _out_int8_single
    cdef int8_t* _out_int8_ptr

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
        esizes = np.zeros(max(n_nodes, 1), dtype=np.intp)
        framewise = np.array([bool(getattr(nd, "framewise", False)) for nd in plan.nodes] + [False],
                             dtype=np.uint8)
        keep += [ops, ptrs, lens, cols, esizes, framewise]
        cdef const unsigned char[::1] fw_v = framewise
        cdef unsigned char[::1] ops_bytes = ops
        cdef unsigned char[::1] ptr_bytes = ptrs
        cdef Py_ssize_t[::1] lens_v = lens
        cdef Py_ssize_t[::1] cols_v = cols
        cdef Py_ssize_t[::1] es_v = esizes
        cdef unsigned char[::1] bview
        self.net.ops = <Op*>&ops_bytes[0]
        self.net.rings = <char**>&ptr_bytes[0]
        self.net.ring_len = &lens_v[0]
        self.net.col = &cols_v[0]
        self.net.esize = &es_v[0]
        self.net.framewise = &fw_v[0]
        self.net.n_ops, self.net.n_nodes = n_ops, n_nodes
        self._rings = []
        self._aux = []
        self._fills = [getattr(nd, "fill", 0) for nd in plan.nodes]
        for i in range(n_nodes):
            node = plan.nodes[i]
            dtype = np.dtype(getattr(node, "dtype", "float32"))
            ring = np.zeros((batch, 2 * node.ring, node.col), dtype=dtype)
            if dtype.itemsize == 1:  # int8 rings start at their zero point, as if padding
                ring[...] = getattr(node, "fill", 0)
            self._rings.append(ring)
            bview = ring.reshape(-1).view(np.uint8)
            self.net.rings[i] = <char*>&bview[0]
            lens_v[i], cols_v[i], es_v[i] = node.ring, node.col, dtype.itemsize
        self.net.sequence = plan.sequence
        self.net.state_stride = 1 + n_nodes + (2 * n_nodes if plan.sequence else 0)
        self._state = np.zeros((batch, self.net.state_stride), dtype=np.int64)
        iview = self._state.reshape(-1)
        self.net.state = &iview[0]
        max_c = max([o.cin for o in plan.ops] + [1])
        scratch = np.zeros(max_c, dtype=np.float64)
        keep.append(scratch)
        cdef double[::1] dview = scratch
        self.net.scratch = &dview[0]
        zeros = plan.zero_bytes()  # float32 zeros, then int8 columns of each zero point needed
        keep.append(zeros)
        cdef unsigned char[::1] zview = zeros
        self.net.zeros = <const char*>&zview[0]
        max_qout = 2 * max([o.cout for o in plan.ops] + [1]) + DSE_QBLK * 4
        qacc = np.zeros(max_qout, dtype=np.int32)
        max_qchunks = max([o.ntaps * o.kf for o in plan.ops] + [1])
        qx = np.zeros(2 * max_qchunks, dtype=np.uintp)
        qchunk = np.zeros(max_qchunks, dtype=np.intp)
        # a merged int8 conv's vectors, one per feature position (run_qconv_merged)
        qgather = np.zeros(max([o.ntaps * o.kf * o.cin * o.fout for o in plan.ops if getattr(o, "qmerged", False)]
                               + [0]) + 4, dtype=np.int8)
        keep += [qacc, qx, qchunk, qgather]
        cdef signed char[::1] qgather_v = qgather
        self.net.qgather = <int8_t*>&qgather_v[0]
        cdef int32_t[::1] qacc_v = qacc
        cdef size_t[::1] qx_v = qx
        cdef Py_ssize_t[::1] qchunk_v = qchunk
        self.net.qacc = &qacc_v[0]
        self.net.qx = <const int8_t**>&qx_v[0]
        self.net.qchunk = &qchunk_v[0]
        self.net.in_int8 = plan.nodes[0].dtype == "int8"
        self.net.in_scale = plan.in_qparams[0]
        self.net.in_zp = plan.in_qparams[1]
        from .plan import qkernel_weights
        qlayout = dse_qlayout()
        max_refs = max([max(1, len(o.inputs)) * o.ntaps for o in plan.ops] + [1])
        taps = np.zeros(max_refs, dtype=np.uintp)
        keep.append(taps)
        cdef size_t[::1] tview = taps
        self.net.taps = <const char**>&tview[0]
        max_chunks = max([o.ntaps * o.kf for o in plan.ops] + [1])
        xptrs = np.zeros(2 * max_chunks, dtype=np.uintp)   # chunk pointers, then their per-group copies
        self.net.block = plan.block
        lags = np.zeros(plan.block, dtype=np.intp)
        # push_many: a conv's output rows and their twins; push: a 2-D conv's feature positions
        # batched push: per stream an output row and its twin, then per (stream, position) of
        # a 2-D conv's interior the same (run_conv_streams); their input offsets in xoffs
        max_fout = max([o.fout for o in plan.ops] + [1])
        # strip convs by rows: a row's output each (max nrows)
        optrs = np.zeros(max([2 * plan.block, 2 * batch * (max_fout + 1), max_fout] + [o.nrows for o in plan.ops]),
                         dtype=np.uintp)
        sel = np.zeros(batch, dtype=np.intp)
        xoffs = np.zeros(batch * (max_fout + 1), dtype=np.intp)
        tcur = np.zeros(batch, dtype=np.int64)
        keep += [lags, optrs, sel, xoffs, tcur]
        cdef Py_ssize_t[::1] sel_v = sel
        cdef Py_ssize_t[::1] xoffs_v = xoffs
        cdef int64_t[::1] tcur_v = tcur
        self.net.sel = &sel_v[0]
        self.net.xoffs = &xoffs_v[0]
        self.net.tcur = &tcur_v[0]
        rowops = [o for o in plan.ops if o.rnodes is not None]
        # int8 2-D convs run their feature positions as rows too (run_qconv_interior, run_qconv_merged;
        # a merged conv's strip rows go one by one through run_qconv_merged, rnodes or not)
        qposops = [o for o in plan.ops if o.kind == K_QCONV and o.fout > 1]
        rbases = np.zeros(max([len(o.rnodes) + 1 for o in rowops] + [1]), dtype=np.uintp)
        rptrs = np.zeros(max([o.ntaps * o.nrows for o in rowops] + [o.ntaps * o.kf * o.fout for o in qposops] + [1]),
                         dtype=np.uintp)
        rxrow = np.zeros(max([o.ntaps * o.kf for o in rowops + qposops] + [1]), dtype=np.intp)
        rxoff = np.zeros_like(rxrow)
        keep += [rbases, rptrs, rxrow, rxoff]
        cdef size_t[::1] rb_v = rbases
        cdef size_t[::1] rp_v = rptrs
        cdef Py_ssize_t[::1] rx_v = rxrow
        cdef Py_ssize_t[::1] ro_v = rxoff
        self.net.rbases = <const char**>&rb_v[0]
        self.net.rptrs = <const float**>&rp_v[0]
        self.net.rxrow = &rx_v[0]
        self.net.rxoff = &ro_v[0]
        qracc = np.zeros(max([o.nrows * (-(-max(o.cout // max(o.groups, 1), 1) // DSE_QBLK)) * DSE_QBLK
                              for o in rowops]
                             + [o.fout * (-(-max(o.cout // max(o.groups, 1), 1) // DSE_QBLK)) * DSE_QBLK
                                for o in qposops] + [1]), dtype=np.int32)
        keep.append(qracc)
        cdef int32_t[::1] qr_v = qracc
        self.net.qracc = &qr_v[0]
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
        keep += [xptrs, woffs]
        cdef size_t[::1] pview = xptrs
        self.net.xptrs = <const float**>&pview[0]
        cdef Py_ssize_t[::1] wview = woffs
        self.net.woffs = &wview[0]
        table = plan.int_table()
        itab = table if n_ops else np.zeros((1, N_INT_FIELDS), dtype=np.int64)
        cdef Op* cop
        for i in range(n_ops):
            cop = &self.net.ops[i]
            cop.kind = itab[i, 0]
            cop.dst = itab[i, 1]
            cop.period = itab[i, 2]
            cop.phase = itab[i, 3]
            cop.ntaps = itab[i, 4]
            cop.tap_step = itab[i, 5]
            cop.cin = itab[i, 6]
            cop.cout = itab[i, 7]
            cop.groups = itab[i, 8]
            cop.fin = itab[i, 9]
            cop.fout = itab[i, 10]
            cop.kf = itab[i, 11]
            cop.sf = itab[i, 12]
            cop.pf = itab[i, 13]
            cop.pfr = itab[i, 14]
            cop.df = itab[i, 15]
            cop.act = itab[i, 16]
            cop.nslots = itab[i, 17]
            cop.npos = itab[i, 18]
            cop.delay = itab[i, 19]
            cop.nin = itab[i, 20]
            cop.nrows = itab[i, 21]
            cop.cip = itab[i, 22]
            cop.coff = itab[i, 23]
            cop.pstride = itab[i, 24]
            cop.ppad = itab[i, 25]
            cop.ppadr = itab[i, 26]
            cop.pdil = itab[i, 27]
            cop.poscol = plan.nodes[cop.dst].col // cop.nrows
            cop.esize = np.dtype(getattr(plan.nodes[cop.dst], "dtype", "float32")).itemsize
            cop.aux = NULL
            cop.auxn = NULL
            op = plan.ops[i]
            ins = plan.input_table(op).reshape(-1)
            cop.ins = self._int_ptr(ins if ins.size else np.zeros(4, np.int64), keep)
            cop.table = NULL if op.table is None else self._int_ptr(plan.byte_table(op), keep)
            cop.index = NULL if op.index is None else self._int_ptr(op.index, keep)
            rtab, rnodes = getattr(op, "rtab", None), getattr(op, "rnodes", None)
            cop.rtab = cop.rnodes = NULL
            cop.nrnodes = 0
            if rtab is not None and rnodes is not None and (cop.kind == K_CONV or cop.kind == K_QCONV) \
                    and not getattr(op, "qmerged", False):  # a merged int8 conv: strip rows one by one
                if rtab.shape != (cop.ntaps, cop.nrows, 2) or not (0 <= rtab[..., 0]).all() \
                        or not (rtab[..., 0] <= len(rnodes)).all():
                    raise ValueError(f"op {i}: malformed row table")
                cop.rtab = self._int_ptr(rtab, keep)
                cop.rnodes = self._int_ptr(rnodes if len(rnodes) else np.zeros(1, np.int64), keep)
                cop.nrnodes = len(rnodes)
            if cop.kind == K_RMEAN or cop.kind == K_QRSUM:
                # float64 sums (re-summed exactly every window), or int64 ones (exact already)
                sums = np.zeros((batch, cop.nslots, cop.cin),
                                dtype=np.float64 if cop.kind == K_RMEAN else np.int64)
                counts = np.zeros((batch, cop.nslots), dtype=np.int64)
                self._aux += [sums, counts]
                cop.aux = <double*>self._bytes_ptr(sums, [])
                iview = counts.reshape(-1)
                cop.auxn = &iview[0]
            cop.act_param = op.act_param
            cop.act_param2 = op.act_param2
            cop.weight = self._float_ptr(plan.kernel_weight(op), keep)
            cop.scale = self._float_ptr(op.scale, keep)
            cop.shift = self._float_ptr(op.shift, keep)
            cop.act_w = self._float_ptr(op.act_w, keep)
            cop.rowdiv = self._float_ptr(op.rowdiv, keep)
            cop.qzp_out, cop.qlo, cop.qhi = op.qzp_out, op.qlo, op.qhi
            cop.qscale = op.qscale
            cop.qround = int(getattr(op, "qround", 0))
            cop.qmerged = bool(getattr(op, "qmerged", False))
            cop.qzp_in = self._i32_ptr(op.qzp_in, keep)
            cop.qm0 = self._i32_ptr(op.qm0, keep)
            cop.qshift = self._i32_ptr(op.qshift, keep)
            cop.qbias = self._i32_ptr(op.qbias, keep)
            cop.qwsum = self._i32_ptr(op.qwsum, keep)
            cop.qbias_full = self._i32_ptr(
                None if op.qwsum is None else
                op.qbias.astype(np.int64) - (int(op.qzp_in[0]) + dse_qoffset()) * op.qwsum.astype(np.int64).sum(axis=1),
                keep)
            cop.qtable = <const int8_t*>self._bytes_ptr(op.qtable, keep)
            cop.qweight = <const void*>self._bytes_ptr(
                None if op.qweight is None else cache_aligned(qkernel_weights(op, qlayout)), keep)
        self._ints = table
        self._keep = keep
        self.net.in_c = frame_shape[0]
        self.net.in_f = frame_shape[1] if len(frame_shape) == 2 else 1
        self.net.window, self.net.hop = plan.window, plan.hop
        self.net.out_node = plan.out_node
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

    cdef const int32_t* _i32_ptr(self, arr, list keep) except? NULL:
        import numpy as np
        cdef int32_t[::1] v
        if arr is None:
            return NULL
        a = np.ascontiguousarray(arr, dtype=np.int32).reshape(-1)
        keep.append(a)
        v = a
        return &v[0]

    cdef const char* _bytes_ptr(self, arr, list keep) except? NULL:
        import numpy as np
        cdef unsigned char[::1] v
        if arr is None:
            return NULL
        a = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
        keep.append(a)
        v = a
        return <const char*>&v[0]

    cdef const int64_t* _int_ptr(self, arr, list keep) except? NULL:
        import numpy as np
        cdef int64_t[::1] v
        a = np.ascontiguousarray(arr, dtype=np.int64).reshape(-1)
        keep.append(a)
        v = a
        return &v[0]

    cdef const float* _float_ptr(self, arr, list keep) except? NULL:
        import numpy as np
        cdef float[::1] v
        if arr is None:
            return NULL
        a = cache_aligned(np.ascontiguousarray(arr, dtype=np.float32).reshape(-1))
        keep.append(a)
        v = a
        return &v[0]

    def _enable_int8_io(self, coerce_int8):
        """Switch push to int8 frames in and int8 outputs out (an io="int8" plan: unit input
        and output scales). coerce_int8: the slow path for anything but an exact int8 ndarray."""
        import numpy as np
        cdef float[::1] sv
        cdef signed char[::1] qv
        self._stage = np.zeros(self.batch * self._frame_size, dtype=np.float32)
        sv = self._stage
        self._stage_ptr = &sv[0]
        self.out_int8 = np.zeros(self.out.shape, dtype=np.int8)
        qv = self.out_int8.reshape(-1)
        self._out_int8_ptr = <int8_t*>&qv[0]
        self._out_int8_single = self.out_int8[0]
        self._coerce_int8 = coerce_int8
        self._io_int8 = True

    cdef bint _push_int8(self, x) except -1:
        cdef const int8_t* q = ndarray_int8_data(x, self._push_nd, self._push_shape)
        cdef signed char[::1] qv
        cdef Py_ssize_t n = self._frame_size * self.batch
        cdef bint any_ready
        if q == NULL:
            qv = self._coerce_int8(x).reshape(-1)  # raises a clear error on bad input
            q = <const int8_t*>&qv[0]
        int8_to_float(q, self._stage_ptr, n)
        any_ready = self._push_checked(self._stage, self._stage_ptr)
        if any_ready:
            float_to_int8(self._out_ptr, self._out_int8_ptr, self._out_size * self.batch)
        return any_ready

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
        if self._flushed:
            self._raise_flushed()
        if self._busy:
            self._raise_busy()
        self._busy = True  # set under the GIL: a second thread entering now sees it
        try:
            if self._io_int8:
                any_ready = self._push_int8(x)
            else:
                src = ndarray_float32_data(x, self._push_nd, self._push_shape)
                any_ready = self._push_checked(x, src)
        finally:
            self._busy = False
        if not any_ready:
            return None
        if self._io_int8:
            return self.out_int8 if self.batched else self._out_int8_single
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
            if self.net.sequence:
                with nogil:
                    any_ready = push_all_seq(&self.net, src, self._frame_size, self.batch,
                                             self.batched, self._out_ptr, self._out_size, self._ready_ptr)
            elif self._release_gil:
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
        if self._flushed:
            self._raise_flushed()
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
        cdef Py_ssize_t got
        if self.net.sequence:
            with nogil:
                for i in range(n):
                    for b in range(B):
                        if batched:
                            got = step_seq(&self.net, b, xb + (i * B + b) * fs, optr + (i * B + b) * os, os, 1)
                            rptr[i * B + b] = got > 0
                            if got == 0:
                                fill_nan(optr + (i * B + b) * os, os)
                        else:
                            m += step_seq(&self.net, b, xb + i * fs, optr + m * os if optr != NULL else NULL,
                                          os, 1 if optr != NULL else 0)
                if batched:
                    memcpy(self._ready_ptr, rptr + (n - 1) * B, B)
                    memcpy(self._out_ptr, optr + (n - 1) * B * os, B * os * sizeof(float))
                elif m > 0 and optr != NULL:
                    memcpy(self._out_ptr, optr + (m - 1) * os, os * sizeof(float))
            return m
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

    def _push_rows(self, rows, frames, out, ready):
        """Push frames[i] into stream rows[i] for each i, all in one batched call (the pool's
        push: streams not listed are left as they are). rows: distinct int slot indices,
        an intp array (n,); frames: float32 C-contiguous (n, *frame_shape), finite (the
        caller checked); out: float32 (n, *output_shape), NaN where ready (n,) is False.
        Returns whether any stream had an output."""
        import numpy as np
        cdef Py_ssize_t n = rows.shape[0], i
        cdef bint any_ready = False
        if self.net.sequence:
            raise NotImplementedError("push of selected rows runs window models (semantics='window')")
        if frames.shape[0] != n or out.shape[0] != n or ready.shape[0] != n:
            raise ValueError("rows, frames, out and ready must have the same length")
        if n == 0:
            return False
        cdef const Py_ssize_t[::1] rview = rows
        cdef const Py_ssize_t* rp = &rview[0]
        cdef const float* xp = <const float*>ndarray_data(frames, b'f', b'f')
        cdef float* op_ = <float*>ndarray_data(out, b'f', b'f')
        cdef char* rdy = ndarray_data(ready, b'b', b'?')
        if xp == NULL or op_ == NULL or rdy == NULL:
            raise TypeError("_push_rows takes exact C-contiguous ndarrays: float32 frames and "
                            "out, bool ready")
        if frames.size != n * self._frame_size or out.size != n * self._out_size:
            raise ValueError("frames or out have the wrong size")
        for i in range(n):
            if rp[i] < 0 or rp[i] >= self.batch:
                raise IndexError(f"row {rp[i]} outside 0..{self.batch - 1}")
        if self._busy:
            self._raise_busy()
        self._busy = True
        try:
            if self._release_gil:
                with nogil:
                    any_ready = push_rows(&self.net, rp, n, xp, self._frame_size, True, op_,
                                          self._out_size, rdy)
            else:
                any_ready = push_rows(&self.net, rp, n, xp, self._frame_size, True, op_,
                                      self._out_size, rdy)
        finally:
            self._busy = False
        return any_ready

    def _push_row_block(self, Py_ssize_t row, block, out):
        """Push a block of frames (N, *frame_shape), float32 C-contiguous and finite, into
        stream `row` alone, op by op as push_many does; the outputs of the frames that have
        one go to consecutive rows of out (at least as many rows as could come); returns
        their count."""
        cdef Py_ssize_t n = block.shape[0], i = 0, chunk, m = 0
        cdef Py_ssize_t fs = self._frame_size, os = self._out_size
        if self.net.sequence:
            raise NotImplementedError("push of selected rows runs window models (semantics='window')")
        if row < 0 or row >= self.batch:
            raise IndexError(f"row {row} outside 0..{self.batch - 1}")
        if n == 0:
            return 0
        cdef const float* xp = <const float*>ndarray_data(block, b'f', b'f')
        cdef float* op_ = <float*>ndarray_data(out, b'f', b'f')
        if xp == NULL or op_ == NULL:
            raise TypeError("_push_row_block takes exact C-contiguous float32 ndarrays")
        if block.size != n * fs or out.size < self._max_outputs(n) * os:
            raise ValueError("block or out have the wrong size")
        if self._busy:
            self._raise_busy()
        self._busy = True
        try:
            with nogil:
                while i < n:
                    chunk = min(self._block, n - i)
                    m += run_block(&self.net, row, xp + i * fs, chunk, fs, op_ + m * os, os, NULL, 0, True)
                    i += chunk
        finally:
            self._busy = False
        return m

    cdef Py_ssize_t _max_outputs(self, Py_ssize_t n):
        return (n + self.net.hop - 1) // self.net.hop

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

    def _flush_seq(self, Py_ssize_t b, finals, out):
        """semantics='sequence': stream b's recording has ended; `finals` holds every node's
        length in all. Writes the remaining output positions to `out` (n, out_size float32)
        and returns how many."""
        cdef Py_ssize_t i, n = out.shape[0], m
        cdef float[::1] ob
        cdef float* optr = NULL
        cdef int64_t* fin = seq_counts(&self.net, b) + self.net.n_nodes
        for i in range(self.net.n_nodes):
            fin[i] = int(finals[i]) + 1
        if out.size:
            ob = out.reshape(-1)
            optr = &ob[0]
        if self._busy:
            self._raise_busy()
        self._busy = True
        try:
            with nogil:
                m = step_seq(&self.net, b, NULL, optr, self._out_size, n)
        finally:
            self._busy = False
        return m

    def _frames(self):
        """Frames pushed so far, per stream (int64 array, a copy)."""
        return self._state[:, 0].copy()

    def _raise_flushed(self):
        from ..errors import StreamInputError
        raise StreamInputError("this stream's recording was flushed (semantics='sequence'); "
                               "reset() starts a new recording")

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
            for ring, fill in zip(self._rings, self._fills):
                ring[b] = fill  # int8 rows hold their zero point, as zero padding does
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




def _all_finite(x):
    """Whether a float32 C-contiguous aligned ndarray holds no NaN/Inf (the push paths' own
    check, for callers that validate before pushing: the pool)."""
    cdef const float* p = <const float*>ndarray_data(x, b'f', b'f')
    if p == NULL:
        raise TypeError("_all_finite takes an exact C-contiguous aligned float32 ndarray")
    return bool(all_finite(p, x.size))


def debug_build():
    """True when this extension was compiled with DSE_DEBUG=1 (bounds checks on)."""
    return bool(DSE_DEBUG_BUILD)


def qkernel_isa():
    """Which int8 kernels run on this CPU, e.g. 'avx512vnni (vpdpbusd, 16 outputs)'."""
    return dse_qkernel_isa().decode()


def read_floats(w):
    """Sum of a float32 C-contiguous 1-D array, read with the vector loads of the kernel path
    push runs. The bench times one call over as many floats as a frame's weights: what
    streaming those bytes from wherever they live costs, with no arithmetic to wait for."""
    global NDARRAY_TYPE
    cdef const float* p
    cdef Py_ssize_t n
    cdef float s
    if NDARRAY_TYPE == NULL:  # set where a stream is built; this call may come first
        import numpy as np
        NDARRAY_TYPE = <PyTypeObject*>np.ndarray
    p = <const float*>ndarray_data(w, b'f', b'f')
    if p == NULL or (<dse_ndarray_head*><PyObject*>w).nd != 1:  # header fields: no call overhead
        raise TypeError(f"read_floats: expected an aligned C-contiguous 1-D float32 ndarray, got {type(w).__name__}"
                        f" {getattr(w, 'dtype', '')} {getattr(w, 'shape', '')}")
    n = (<dse_ndarray_head*><PyObject*>w).dimensions[0]
    with nogil:
        s = dse_read_floats(p, n)
    return s


def kernel_isa():
    """Which conv kernels run on this CPU, e.g. 'avx2+fma (8 floats)' or 'neon (4 floats)'."""
    return dse_kernel_isa().decode()


def quantize_input_probe(const float[::1] x, float scale, int zero_point):
    """The stream's input quantizer (write_qinput's arithmetic) on an array, for the tests that
    hold it against QParams.quantize on ties and near-ties."""
    out = bytearray(x.shape[0])
    cdef unsigned char[::1] o = out
    cdef Py_ssize_t i
    for i in range(x.shape[0]):
        o[i] = <unsigned char>q_clamp(dse_qround(x[i] / scale) + zero_point, -128, 127)
    return bytes(out)  # int8 values: np.frombuffer(..., np.int8)


def requantize_probe(const int32_t[::1] acc, const int32_t[::1] bias, const int32_t[::1] m0,
                     const int32_t[::1] shift, int zero_point, int lo, int hi, bint single=False,
                     bint float_scales=False):
    """The conv requantization (dse_qrequant, on the path this process picked) on arrays of
    one length, for the tests that hold it against quant.scheme.requantize. float_scales: m0
    holds float32 scales' bits (dse_qrequant_float, against scheme.requantize_float)."""
    cdef Py_ssize_t n = acc.shape[0]
    if bias.shape[0] != n or m0.shape[0] != n or shift.shape[0] != n or n == 0:
        raise ValueError("acc, bias, m0 and shift must be non-empty and of one length")
    out = bytearray(n)
    cdef unsigned char[::1] o = out
    if float_scales:  # float requantization (qround 2)
        dse_qrequant_float(&acc[0], &bias[0], <const float*>&m0[0], zero_point, lo, hi, <int8_t*>&o[0], n)
    elif single:  # single rounding (qround 1)
        dse_qrequant_single(&acc[0], &bias[0], &m0[0], &shift[0], zero_point, lo, hi, <int8_t*>&o[0], n)
    else:
        dse_qrequant(&acc[0], &bias[0], &m0[0], &shift[0], zero_point, lo, hi, <int8_t*>&o[0], n)
    return bytes(out)  # int8 values: np.frombuffer(..., np.int8)


def requantize_scalar_probe(const int32_t[::1] acc, const int32_t[::1] m0, const int32_t[::1] shift,
                            int zero_point, int lo, int hi):
    """The scalar requantization the add, mul, concat and pool ops use (q_mbqm, then the zero
    point and the clamp), for the same tests."""
    cdef Py_ssize_t i, n = acc.shape[0]
    out = bytearray(n)
    cdef unsigned char[::1] o = out
    for i in range(n):
        o[i] = <unsigned char>q_clamp(<int64_t>zero_point + q_mbqm(acc[i], m0[i], shift[i]), lo, hi)
    return bytes(out)
