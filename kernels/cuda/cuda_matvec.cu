/* The warp matvec: y_k = x W_k^T for MLX affine q4/q8 weights, n == 1 (decode), one launch for
 * up to three weights that share x (q/k/v, gate/up), with the residual add or the SwiGLU as an
 * optional epilogue.
 *
 * Why this shape (round 2 of issue 8; round 1's x-stationary kernels in cuda_matmul.cu reached
 * 48-57% of copy bandwidth on the 7b projections):
 * - Warps own rows. A warp takes R rows (a "batch") and walks them in tiles: per tile each lane
 *   loads 4/R 16-byte chunks of each row (lanes 512 bytes apart: every load instruction of the
 *   warp reads 512 contiguous bytes). Two tiles are in registers at once (the next one loads
 *   while this one is summed), and no barrier is ever taken, so a slow warp holds up
 *   nobody. Blocks are persistent; warps stride over batches.
 * - x is converted once per launch, by a small kernel before the matvec, into a per-stream
 *   scratch buffer as 16-bit fixed point per 32-element chunk (scale = max|x| / 32639), split
 *   in a signed high and low byte; the matvec's warps read it through L1 (every warp of an SM
 *   reads the same few KB). (A first version packed x into shared memory in every block's
 *   prologue: 30-50% slower at the 7b shapes, the whole x read and converted by each of
 *   hundreds of blocks before their first sum, down_proj worst. Round 3: the pack runs a
 *   thread per 8 elements, not per chunk, and computes a fused RMSNorm in the same pass:
 *   7b decode +9%.) A chunk's dot product
 *   is then exact integer arithmetic, 4 dp4a per packed word (2 for q8) instead of 8 float
 *   conversions and 8 FMAs, which kept round 1's kernels issue-bound. The fixed point costs at
 *   most 1.5e-5 of a chunk's largest |x| per element (the contract's tolerance is 1e-3); the
 *   chunk's float sum of x, kept beside it, carries the bias exactly: sum (s q + b) x = s sum q x
 *   + b sum x.
 * - The first tile's weights are requested before the kernel waits for its predecessor
 *   (programmatic dependent launch): the launch gap and the first DRAM round trip overlap the
 *   previous kernel's tail.
 * q4 nibble trick: lo = w & 0x0F0F0F0F holds the even elements of a word as bytes, hi = w &
 * 0xF0F0F0F0 the odd ones times 16; dp4a.u32.s32 takes both as unsigned bytes. */
#include <cuda_runtime.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/cuda_mv_common.h"

#define MVW_MAX_THREADS 256
#define MVW_LOADS 4              /* 16-byte chunks a lane loads per tile, over its R rows */
#define XQ_MAX 32639.0f          /* 127 * 256 + 127: the high and low byte both fit an int8 */

struct mvw_args {
    mvw_part p[CUDA_MV_MAX_PARTS];
    const int4 *xq;   /* packed x (mv_pack_kernel) */
    const float2 *xm; /* per chunk: scale, sum of x */
    float *add_to;
    int n_parts, cols, group, batches, epi;
};

__device__ __forceinline__ uint4 ldw_stream(const uint4 *p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

/* high and low signed bytes of v (|v| <= 32639): v = 256 hi + lo */
__device__ __forceinline__ void split16(int v, int &hi, int &lo) {
    hi = (v + 128) >> 8;
    lo = v - hi * 256;
}
__device__ __forceinline__ int pack4(int a, int b, int c, int d) {
    return (int)((uint32_t)(a & 255) | (uint32_t)(b & 255) << 8 | (uint32_t)(c & 255) << 16 | (uint32_t)(d & 255) << 24);
}

/* converts chunk c of x into the packed layout and its (scale, sum) pair */
template <int BITS>
__device__ __forceinline__ void pack_chunk(const float *__restrict__ x, int c, int4 *xq, float2 *xm) {
    constexpr int PC = xpack<BITS>::PC;
    const float4 *x4 = (const float4 *)(x + (size_t)c * PC);
    float4 f[PC / 4];
    float m = 0.0f, X = 0.0f;
#pragma unroll
    for (int i = 0; i < PC / 4; i++) {
        f[i] = __ldcg(x4 + i); /* from L2: x was just written by the previous kernel */
        m = fmaxf(fmaxf(m, fmaxf(fabsf(f[i].x), fabsf(f[i].y))), fmaxf(fabsf(f[i].z), fabsf(f[i].w)));
        X += (f[i].x + f[i].y) + (f[i].z + f[i].w);
    }
    float inv = m > 0.0f ? XQ_MAX / m : 0.0f, sx = m / XQ_MAX;
    /* 8 elements at a time: int4 i of the chunk */
#pragma unroll
    for (int i = 0; i < xpack<BITS>::NI; i++) {
        float4 f0 = f[2 * i], f1 = f[2 * i + 1];
        float v[8] = {f0.x, f0.y, f0.z, f0.w, f1.x, f1.y, f1.z, f1.w};
        int hi[8], lo[8];
#pragma unroll
        for (int e = 0; e < 8; e++) split16(__float2int_rn(v[e] * inv), hi[e], lo[e]);
        if constexpr (BITS == 4) /* word i: even elements' high, low bytes, then the odd ones' */
            xq[xpack<4>::pos(c, i)] = make_int4(pack4(hi[0], hi[2], hi[4], hi[6]), pack4(lo[0], lo[2], lo[4], lo[6]),
                                                pack4(hi[1], hi[3], hi[5], hi[7]), pack4(lo[1], lo[3], lo[5], lo[7]));
        else /* words 2i and 2i + 1, each as (high bytes, low bytes) of its 4 elements */
            xq[xpack<8>::pos(c, i)] = make_int4(pack4(hi[0], hi[1], hi[2], hi[3]), pack4(lo[0], lo[1], lo[2], lo[3]),
                                                pack4(hi[4], hi[5], hi[6], hi[7]), pack4(lo[4], lo[5], lo[6], lo[7]));
    }
    /* q4: the odd elements are summed 16 times too large, the even ones are scaled to match */
    xm[c] = make_float2(BITS == 4 ? sx * (1.0f / 16.0f) : sx, X);
}

/* the rows of batch b: part k[r], row[r] (clamped into the part), ok[r] whether it exists */
template <int R>
__device__ __forceinline__ void batch_rows(const mvw_args &a, int b, int (&k)[R], int (&row)[R], bool (&ok)[R]) {
    if (a.epi == CUDA_EPI_SWIGLU) { /* R == 2: row b of gate and of up */
#pragma unroll
        for (int r = 0; r < R; r++) {
            k[r] = r < 2 ? r : 1;
            ok[r] = r < 2 && b < a.p[0].rows;
            row[r] = ok[r] ? b : 0;
        }
        return;
    }
    int kk = 0;
    if (a.n_parts > 1 && b >= a.p[1].batch0) kk = 1;
    if (a.n_parts > 2 && b >= a.p[2].batch0) kk = 2;
    int rows = a.p[kk].rows, r0 = (b - a.p[kk].batch0) * R;
#pragma unroll
    for (int r = 0; r < R; r++) {
        k[r] = kk;
        ok[r] = r0 + r < rows;
        row[r] = ok[r] ? r0 + r : rows - 1; /* a ragged batch re-reads a row and writes none */
    }
}

template <typename ST, int R> struct mvw_tile {
    uint4 w[R][MVW_LOADS / R];
    uint32_t s[R][MVW_LOADS / R], b[R][MVW_LOADS / R];
};

template <int BITS, typename ST, int R>
__device__ __forceinline__ void load_tile(const mvw_args &a, int batch, int step, int lane, int chunks, int groups,
                                          int cpg, int cpg_shift, mvw_tile<ST, R> &t) {
    constexpr int U = MVW_LOADS / R;
    int k[R], row[R];
    bool ok[R];
    batch_rows<R>(a, batch, k, row, ok);
#pragma unroll
    for (int r = 0; r < R; r++) {
        const uint4 *W = a.p[k[r]].W + (size_t)row[r] * chunks;
        size_t g0 = (size_t)row[r] * groups;
        const void *S = a.p[k[r]].S, *B = a.p[k[r]].B;
#pragma unroll
        for (int u = 0; u < U; u++) {
            int c = (step * U + u) * 32 + lane;
            if (c < chunks) {
                t.w[r][u] = ldw_stream(W + c);
                int g = cpg_shift >= 0 ? c >> cpg_shift : c / cpg; /* MLX groups: powers of two */
                t.s[r][u] = ld_raw<ST>(S, g0 + g);
                t.b[r][u] = ld_raw<ST>(B, g0 + g);
            } else {
                t.w[r][u] = make_uint4(0, 0, 0, 0);
                t.s[r][u] = t.b[r][u] = 0;
            }
        }
    }
}

template <int BITS, typename ST, int R>
__device__ __forceinline__ void sum_tile(const mvw_tile<ST, R> &t, int step, int lane, int chunks, const int4 *xq,
                                         const float2 *xm, float (&acc)[R]) {
    constexpr int U = MVW_LOADS / R, NI = xpack<BITS>::NI;
#pragma unroll
    for (int u = 0; u < U; u++) {
        int c = (step * U + u) * 32 + lane;
        if (c < chunks) {
            int4 q[NI];
#pragma unroll
            for (int i = 0; i < NI; i++) q[i] = __ldg(xq + xpack<BITS>::pos(c, i));
            float2 m = __ldg(xm + c);
#pragma unroll
            for (int r = 0; r < R; r++) {
                float d = (float)chunk_dot<BITS>(t.w[r][u], q);
                acc[r] = fmaf(d, raw_f<ST>(t.s[r][u]) * m.x, fmaf(raw_f<ST>(t.b[r][u]), m.y, acc[r]));
            }
        }
    }
}

template <int R> __device__ __forceinline__ void finish_batch(const mvw_args &a, int batch, int lane, float (&acc)[R]) {
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = warp_sum(acc[r]);
    if (lane != 0) return;
    int k[R], row[R];
    bool ok[R];
    batch_rows<R>(a, batch, k, row, ok);
    float v[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        const mvw_part &p = a.p[k[r]];
        v[r] = acc[r] + (p.obias ? cu_load_float(p.obias, p.obias_dtype, row[r]) : 0.0f);
    }
    if (a.epi == CUDA_EPI_SWIGLU) {
        if (ok[0]) {
            float g = v[0], u = v[R > 1 ? 1 : 0];
            a.p[1].y[row[0]] = u;
            a.p[0].y[row[0]] = g / (1.0f + expf(-g)) * u;
        }
        return;
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        if (!ok[r]) continue;
        a.p[k[r]].y[row[r]] = v[r];
        if (a.epi == CUDA_EPI_ADD) a.add_to[row[r]] += v[r];
    }
}

template <int BITS, typename ST, int R>
__global__ void __launch_bounds__(MVW_MAX_THREADS, 2) mv_warp_kernel(const __grid_constant__ mvw_args a) {
    constexpr int U = MVW_LOADS / R;
    const int chunks = a.cols / xpack<BITS>::PC, groups = a.cols / a.group, cpg = a.group / xpack<BITS>::PC;
    const int cpg_shift = (cpg & (cpg - 1)) ? -1 : __ffs(cpg) - 1;
    const int4 *xq = a.xq;
    const float2 *xm = a.xm;
    const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    const int gw = blockIdx.x * warps + (threadIdx.x >> 5), tw = gridDim.x * warps;
    const int steps = (chunks + 32 * U - 1) / (32 * U);
    /* tiles of this warp: batch gw + (t / steps) * tw, step t % steps */
    const int n_tiles = gw < a.batches ? ((a.batches - 1 - gw) / tw + 1) * steps : 0;

    mvw_tile<ST, R> t0, t1;
    if (n_tiles > 0) load_tile<BITS, ST, R>(a, gw, 0, lane, chunks, groups, cpg, cpg_shift, t0); /* weights only */
    pdl_wait(); /* the packed x is complete */
    pdl_trigger();

    float acc[R];
    int batch = gw, step = 0;
    /* the tile after (batch, step) */
#define MVW_NEXT(b, s)      \
    do {                    \
        if (++(s) == steps) { \
            (s) = 0;        \
            (b) += tw;      \
        }                   \
    } while (0)
    int nb = batch, ns = step;
    for (int t = 0; t < n_tiles; t += 2) {
        /* tile t is in t0; t + 1 goes to t1 while t0 is summed, then t + 2 to t0 */
        MVW_NEXT(nb, ns);
        if (t + 1 < n_tiles) load_tile<BITS, ST, R>(a, nb, ns, lane, chunks, groups, cpg, cpg_shift, t1);
        if (step == 0)
#pragma unroll
            for (int r = 0; r < R; r++) acc[r] = 0.0f;
        sum_tile<BITS, ST, R>(t0, step, lane, chunks, xq, xm, acc);
        if (step == steps - 1) finish_batch<R>(a, batch, lane, acc);
        if (t + 1 >= n_tiles) break;
        batch = nb;
        step = ns;
        MVW_NEXT(nb, ns);
        if (t + 2 < n_tiles) load_tile<BITS, ST, R>(a, nb, ns, lane, chunks, groups, cpg, cpg_shift, t0);
        if (step == 0)
#pragma unroll
            for (int r = 0; r < R; r++) acc[r] = 0.0f;
        sum_tile<BITS, ST, R>(t1, step, lane, chunks, xq, xm, acc);
        if (step == steps - 1) finish_batch<R>(a, batch, lane, acc);
        batch = nb;
        step = ns;
    }
#undef MVW_NEXT
}

/* The packs wait for the kernel before them (it writes x). early: they let the matvec after
 * them launch first (it waits for the pack in turn), so that a bulk matvec requests its first
 * tiles while the kernels before it still run; the warp kernel prefetches one tile only and
 * keeps the plain order. */
__device__ __forceinline__ void pdl_order(int early) {
    if (early) pdl_trigger();
    pdl_wait();
    if (!early) pdl_trigger();
}

/* x into the packed layout, one thread a chunk; launched right before the matvec, whose
 * weight prefetch overlaps it (PDL) */
template <int BITS>
__global__ void __launch_bounds__(128) mv_pack_kernel(const float *__restrict__ x, int chunks, int4 *xq, float2 *xm,
                                                      int early) {
    pdl_order(early); /* x is written by the kernel before */
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < chunks) pack_chunk<BITS>(x, c, xq, xm);
}

/* the token's RMSNorm (rmsnorm_kernel in cuda_ops.cu: same threads, same float arithmetic,
 * so the same values) and then the pack of its output, in one launch of one block */
__device__ float norm_block_sum(float v, float *red) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return warp_sum(v);
}

template <int BITS>
__global__ void __launch_bounds__(1024) mv_norm_pack_kernel(const float *x, const void *w, int wdtype, float *out,
                                                            int dim, float eps, int4 *xq, float2 *xm, int early) {
    pdl_order(early);
    __shared__ float red[32];
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += x[i] * x[i];
    ss = norm_block_sum(ss, red);
    float inv = 1.0f / sqrtf(ss / (float)dim + eps);
    /* each thread rewrites only the elements it read: out may alias x */
    for (int i = threadIdx.x; i < dim; i += blockDim.x) out[i] = x[i] * inv * cu_load_float(w, wdtype, i);
    __syncthreads(); /* the block's writes of out are visible to the whole block */
    int chunks = dim / xpack<BITS>::PC;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) pack_chunk<BITS>(out, c, xq, xm);
}

/* Round 3 packs (cuda_feature_pack): one thread per 8 elements, i.e. per int4 of packed x,
 * so a chunk is NI adjacent lanes of one warp that combine its max and sum by shuffles. The
 * thread-a-chunk kernels above run 8 (q4) serial float4 loads and 32 conversions a thread on
 * 100-600 threads; here each thread does 2 loads and 8 conversions, 4x the threads. */
template <int BITS>
__device__ __forceinline__ void pack_lanes(const float (&v)[8], int c, int i, bool ok, int4 *xq, float2 *xm) {
    constexpr int NI = xpack<BITS>::NI;
    float m = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; e++) m = fmaxf(m, fabsf(v[e]));
    float X = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
    /* every lane of the group ends with the same m (max is exact) and X (a + b == b + a) */
#pragma unroll
    for (int o = 1; o < NI; o <<= 1) {
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        X += __shfl_xor_sync(0xffffffffu, X, o);
    }
    if (!ok) return;
    float inv = m > 0.0f ? XQ_MAX / m : 0.0f, sx = m / XQ_MAX;
    int hi[8], lo[8];
#pragma unroll
    for (int e = 0; e < 8; e++) split16(__float2int_rn(v[e] * inv), hi[e], lo[e]);
    if constexpr (BITS == 4)
        xq[xpack<4>::pos(c, i)] = make_int4(pack4(hi[0], hi[2], hi[4], hi[6]), pack4(lo[0], lo[2], lo[4], lo[6]),
                                            pack4(hi[1], hi[3], hi[5], hi[7]), pack4(lo[1], lo[3], lo[5], lo[7]));
    else
        xq[xpack<8>::pos(c, i)] = make_int4(pack4(hi[0], hi[1], hi[2], hi[3]), pack4(lo[0], lo[1], lo[2], lo[3]),
                                            pack4(hi[4], hi[5], hi[6], hi[7]), pack4(lo[4], lo[5], lo[6], lo[7]));
    if (i == 0) xm[c] = make_float2(BITS == 4 ? sx * (1.0f / 16.0f) : sx, X);
}

/* thread t packs elements 8t..8t+7: int4 t % NI of chunk t / NI */
template <int BITS>
__global__ void __launch_bounds__(128) mv_pack8_kernel(const float *__restrict__ x, int chunks, int4 *xq, float2 *xm,
                                                       int early) {
    pdl_order(early);
    constexpr int NI = xpack<BITS>::NI;
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    bool ok = t < chunks * NI;
    float v[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    if (ok) {
        const float4 *p = (const float4 *)(x + (size_t)t * 8);
        float4 a = __ldcg(p), b = __ldcg(p + 1);
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    }
    pack_lanes<BITS>(v, t / NI, t % NI, ok, xq, xm);
}

/* the token's RMSNorm and the pack of its output from registers, one block of dim / 8 threads
 * (rounded up to whole warps, dim <= 8192, dim a multiple of the chunk); out may alias x: every
 * read of x precedes the block's reduction barrier, every write follows it */
template <int BITS>
__global__ void __launch_bounds__(1024) mv_norm_pack8_kernel(const float *x, const void *w, int wdtype, float *out,
                                                             int dim, float eps, int4 *xq, float2 *xm, int early) {
    pdl_order(early);
    __shared__ float red[32];
    constexpr int NI = xpack<BITS>::NI;
    int t = threadIdx.x;
    bool ok = t * 8 < dim;
    float v[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    float ss = 0.0f;
    if (ok) {
        const float4 *p = (const float4 *)(x + (size_t)t * 8);
        float4 a = __ldcg(p), b = __ldcg(p + 1);
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
#pragma unroll
        for (int e = 0; e < 8; e++) ss += v[e] * v[e];
    }
    ss = norm_block_sum(ss, red);
    float inv = 1.0f / sqrtf(ss / (float)dim + eps);
    if (ok) {
#pragma unroll
        for (int e = 0; e < 8; e++) v[e] = v[e] * inv * cu_load_float(w, wdtype, t * 8 + e);
        float4 *o = (float4 *)(out + (size_t)t * 8);
        o[0] = make_float4(v[0], v[1], v[2], v[3]);
        o[1] = make_float4(v[4], v[5], v[6], v[7]);
    }
    pack_lanes<BITS>(v, t / NI, t % NI, ok, xq, xm);
}

/* ---- host side ---- */

/* each stream's scratch buffer for the packed x (a launch's pack overwrites the previous one's
 * only after that launch has completed: stream order, and PDL waits for completion) */
#define MVW_STREAMS 16
static struct {
    cudaStream_t s;
    void *p;
} scratch[MVW_STREAMS];
static pthread_mutex_t scratch_mu = PTHREAD_MUTEX_INITIALIZER;

static void *scratch_of(cudaStream_t s) {
    void *p = NULL;
    pthread_mutex_lock(&scratch_mu);
    for (int i = 0; i < MVW_STREAMS && !p; i++)
        if (scratch[i].p && scratch[i].s == s) p = scratch[i].p;
    for (int i = 0; i < MVW_STREAMS && !p; i++)
        if (!scratch[i].p) {
            if (cudaMalloc(&scratch[i].p, MVW_MAX_PACKED) != cudaSuccess) {
                cudaGetLastError();
                scratch[i].p = NULL;
                break;
            }
            scratch[i].s = s;
            p = scratch[i].p;
        }
    pthread_mutex_unlock(&scratch_mu);
    return p;
}

extern "C" void cuda_matvec_release(void *stream) {
    pthread_mutex_lock(&scratch_mu);
    for (int i = 0; i < MVW_STREAMS; i++)
        if (scratch[i].p && scratch[i].s == (cudaStream_t)stream) {
            cudaFree(scratch[i].p);
            scratch[i].p = NULL;
        }
    pthread_mutex_unlock(&scratch_mu);
}

static int sms(void) {
    static int n;
    if (!n) {
        int dev = 0;
        cudaGetDevice(&dev);
        if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) n = 1;
    }
    return n;
}

static size_t packed_bytes(int bits, int cols) {
    int pc = bits == 4 ? 32 : 16, ni = bits == 4 ? 4 : 2;
    return (size_t)(cols / pc) * (ni * 16 + 8);
}

extern "C" int cuda_warp_takes(const bk_weight *w) {
    if (w->bits != 4 && w->bits != 8) return 0;
    int pc = w->bits == 4 ? 32 : 16;
    if (w->group_size <= 0 || w->cols <= 0 || w->cols % w->group_size || w->group_size % pc) return 0;
    if (w->sdtype != BK_F16 && w->sdtype != BK_BF16 && w->sdtype != BK_F32) return 0;
    if (!w->scales || !w->biases) return 0;
    return packed_bytes(w->bits, w->cols) <= MVW_MAX_PACKED;
}

extern "C" int cuda_warp_compatible(const bk_weight *a, const bk_weight *b) {
    return cuda_warp_takes(a) && cuda_warp_takes(b) && a->bits == b->bits && a->cols == b->cols &&
           a->group_size == b->group_size && a->sdtype == b->sdtype;
}

/* the launch that packs x (or computes the group's RMSNorm and packs its output) into xq, xm */
template <int BITS>
static void launch_pack(cudaStream_t s, const int4 *xq, const float2 *xm, const float *x, const cuda_mv_group *g,
                        int cols, int early) {
    int chunks = cols / xpack<BITS>::PC;
    bool pack8 = cuda_feature_pack() && ((uintptr_t)x & 15) == 0;
    if (g->norm_x && pack8 && g->norm_dim % xpack<BITS>::PC == 0 && g->norm_dim <= 8192 &&
        ((uintptr_t)g->norm_x & 15) == 0) {
        int d = g->norm_dim, nt = (d / 8 + 31) / 32 * 32;
        cu_launch(s, dim3(1), dim3(nt), 0, mv_norm_pack8_kernel<BITS>, g->norm_x, g->norm_w, g->norm_wdtype,
                  (float *)x, d, g->norm_eps, (int4 *)xq, (float2 *)xm, early);
    } else if (g->norm_x) {
        int d = g->norm_dim, nt = d >= 1024 ? 1024 : d >= 256 ? 256 : 64; /* as cuda_launch_rmsnorm */
        cu_launch(s, dim3(1), dim3(nt), 0, mv_norm_pack_kernel<BITS>, g->norm_x, g->norm_w, g->norm_wdtype, (float *)x,
                  d, g->norm_eps, (int4 *)xq, (float2 *)xm, early);
    } else if (pack8) {
        int nt = chunks * xpack<BITS>::NI;
        cu_launch(s, dim3((unsigned)((nt + 127) / 128)), dim3(128), 0, mv_pack8_kernel<BITS>, x, chunks, (int4 *)xq,
                  (float2 *)xm, early);
    } else {
        cu_launch(s, dim3((unsigned)((chunks + 127) / 128)), dim3(128), 0, mv_pack_kernel<BITS>, x, chunks,
                  (int4 *)xq, (float2 *)xm, early);
    }
}

template <int BITS, typename ST, int R>
static void launch_r(cudaStream_t s, mvw_args &a, const float *x, const cuda_mv_group *g, int blocks_per_sm) {
    auto kernel = mv_warp_kernel<BITS, ST, R>;
    size_t smem = 0;
    /* batches of R rows; a SwiGLU batch is one row of gate and one of up */
    int total = 0;
    for (int k = 0; k < a.n_parts; k++) {
        a.p[k].batch0 = total;
        total += a.epi == CUDA_EPI_SWIGLU ? (k == 0 ? a.p[0].rows : 0) : (a.p[k].rows + R - 1) / R;
    }
    a.batches = total;
    /* small matrices: smaller blocks, so that more SMs take part */
    int threads = total >= 16 * sms() ? 256 : 128, warps = threads / 32;
    /* blocks an SM from the occupancy API, cached by (threads, shared memory: none now) */
    static struct { int threads; size_t smem; int fit; } cache[8];
    int fit = 0;
    for (int i = 0; i < 8 && cache[i].threads; i++)
        if (cache[i].threads == threads && cache[i].smem == smem) fit = cache[i].fit;
    if (!fit) {
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fit, kernel, threads, smem) != cudaSuccess || fit < 1) {
            cudaGetLastError();
            fit = 1;
        }
        for (int i = 0; i < 8; i++)
            if (!cache[i].threads || i == 7) {
                cache[i].threads = threads;
                cache[i].smem = smem;
                cache[i].fit = fit;
                break;
            }
    }
    int per_sm = blocks_per_sm && blocks_per_sm < fit ? blocks_per_sm : fit;
    long grid = (long)per_sm * sms(), need = (total + warps - 1) / warps;
    if (grid > need) grid = need;
    if (grid < 1) grid = 1;
    launch_pack<BITS>(s, a.xq, a.xm, x, g, a.cols, 0);
    cu_launch(s, dim3((unsigned)grid), dim3(threads), smem, kernel, a);
}

template <int BITS, typename ST>
static void launch_st(cudaStream_t s, mvw_args &a, const float *x, const cuda_mv_group *g, int R, int blocks_per_sm) {
    if (R == 1) launch_r<BITS, ST, 1>(s, a, x, g, blocks_per_sm);
    else if (R == 2) launch_r<BITS, ST, 2>(s, a, x, g, blocks_per_sm);
    else launch_r<BITS, ST, 4>(s, a, x, g, blocks_per_sm);
}

extern "C" int cuda_launch_mv_group(void *stream, const cuda_mv_group *g, const float *x, int rows_per_warp,
                                    int blocks_per_sm) {
    if (g->n_parts < 1 || g->n_parts > CUDA_MV_MAX_PARTS) return -1;
    const bk_weight *w0 = g->w[0];
    for (int k = 0; k < g->n_parts; k++)
        if (!cuda_warp_compatible(w0, g->w[k])) return -1;
    if (g->epilogue == CUDA_EPI_SWIGLU && (g->n_parts != 2 || g->w[0]->rows != g->w[1]->rows)) return -1;
    if (g->epilogue == CUDA_EPI_ADD && (g->n_parts != 1 || !g->add_to)) return -1;
    if (g->norm_x && (g->norm_dim != w0->cols || !g->norm_w)) return -1;
    mvw_args a;
    memset(&a, 0, sizeof a);
    for (int k = 0; k < g->n_parts; k++) {
        const bk_weight *w = g->w[k];
        a.p[k].W = (const uint4 *)w->w->d;
        a.p[k].S = w->scales->d;
        a.p[k].B = w->biases->d;
        a.p[k].obias = w->bias.data ? w->bias.data->d : NULL;
        a.p[k].obias_dtype = (int)w->bias.dtype;
        a.p[k].y = g->y[k];
        a.p[k].rows = w->rows;
        if (w->rows <= 0) return -1;
    }
    cudaStream_t s = (cudaStream_t)stream;
    void *xs = scratch_of(s);
    if (!xs) return -1;
    a.xq = (const int4 *)xs;
    a.xm = (const float2 *)((const char *)xs + (size_t)(w0->cols / (w0->bits == 4 ? 32 : 16)) * (w0->bits == 4 ? 64 : 32));
    a.add_to = g->add_to;
    a.n_parts = g->n_parts;
    a.cols = w0->cols;
    a.group = w0->group_size;
    a.epi = g->epilogue;
    if (cuda_feature_bulk() && !rows_per_warp && !blocks_per_sm) {
        mvb_in in;
        memcpy(in.p, a.p, sizeof in.p);
        in.xq = a.xq;
        in.xm = a.xm;
        in.add_to = a.add_to;
        in.n_parts = a.n_parts;
        in.cols = a.cols;
        in.group = a.group;
        in.bits = w0->bits;
        in.sdtype = (int)w0->sdtype;
        in.epi = a.epi;
        if (mv_bulk_takes(&in)) {
            if (w0->bits == 4) launch_pack<4>(s, a.xq, a.xm, x, g, a.cols, 1);
            else launch_pack<8>(s, a.xq, a.xm, x, g, a.cols, 1);
            mv_bulk_launch(s, &in);
            return 0;
        }
    }
    /* rows a warp (each x load serves R rows): measured on an H100 at the 7b/8b shapes
     * (bench/RESULTS-cuda.md), 2 beat 1 by 6-18% from 3584 rows up, 4 won only on the
     * lm_heads (+2%); 1 for small matrices, where more warps matter more. SwiGLU pairs are two
     * rows by construction. */
    int rows = 0;
    for (int k = 0; k < g->n_parts; k++) rows += g->w[k]->rows;
    int R = rows_per_warp ? rows_per_warp : rows >= 65536 ? 4 : rows >= 1024 ? 2 : 1;
    if (R != 1 && R != 2 && R != 4) R = 2;
    if (g->epilogue == CUDA_EPI_SWIGLU) R = 2;
    if (w0->bits == 4) {
        if (w0->sdtype == BK_F16) launch_st<4, __half>(s, a, x, g, R, blocks_per_sm);
        else if (w0->sdtype == BK_BF16) launch_st<4, __nv_bfloat16>(s, a, x, g, R, blocks_per_sm);
        else launch_st<4, float>(s, a, x, g, R, blocks_per_sm);
    } else {
        if (w0->sdtype == BK_F16) launch_st<8, __half>(s, a, x, g, R, blocks_per_sm);
        else if (w0->sdtype == BK_BF16) launch_st<8, __nv_bfloat16>(s, a, x, g, R, blocks_per_sm);
        else launch_st<8, float>(s, a, x, g, R, blocks_per_sm);
    }
    return 0;
}
