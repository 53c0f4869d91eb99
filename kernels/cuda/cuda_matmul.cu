/* CUDA matmul: y[n, rows] = x[n, cols] W^T (+ bias) for MLX affine q4/q8 and dense weights.
 *
 * n == 1 (decode) is a matvec bound by the bandwidth of reading W once. The quantized matvec is
 * "x-stationary": a block's threads cover one row's 16-byte chunks of packed words (lane i of
 * the block owns chunk i of every row), so each thread loads its 32 (q4) or 16 (q8) values of x
 * into registers once and then streams rows, R at a time, through them: per row a thread does
 * one coalesced 16-byte load, a shuffle reduction finishes the warp's share and one barrier
 * a batch the block's. Two pipelines feed it: the next batch's words in registers (narrow
 * rows), or the next three batches' words copied by cp.async into each thread's own slots of
 * shared memory (wide rows, where it measured faster). (A first version that re-read x per chunk from L1 ran at a third of copy bandwidth: lanes
 * 128 bytes apart made every x load touch 32 cache lines.) One chunk lies inside one
 * quantization group, so a thread applies its group's scale and bias once per row.
 *
 * The dequantization costs two instructions an element, so that arithmetic keeps up with HBM:
 * a PRMT builds the float 0.5 + q/256 straight from a nibble byte (exponent byte 0x3F, the
 * nibble in the high mantissa bits), an FFMA accumulates it against x. Per chunk, with
 * F = sum (0.5 + q/256) x and X = sum x:  sum q x = 256 F - 128 X, so the chunk adds
 *   scale * (256 F - 128 X) + bias * X.
 * (The cancellation costs about 5 of float's 24 bits: far inside the 1e-3 contract.)
 *
 * Rows wider than a 1024-thread block (q4: 32768 columns) and dense weights take a simpler
 * matvec whose warps split the columns; n > 1 (prefill) and every layout neither takes (ragged
 * dense columns, groups that are not multiples of a chunk, other bit widths) run a tiled
 * kernel: 64 tokens x 64 rows a block, W dequantized into shared memory once per tile, f32
 * accumulation. */
#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/cuda_internal.h"

/* ---- loads ---- */

/* weights are read once per token: stream them past L1 so that x stays cached there */
__device__ __forceinline__ uint4 ld_stream(const uint4 *p) {
    uint4 r;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
        : "l"(p));
    return r;
}

template <typename T> __device__ __forceinline__ float ld_s(const T *p, size_t i);
template <> __device__ __forceinline__ float ld_s<__half>(const __half *p, size_t i) {
    return __half2float(__ushort_as_half(__ldg((const unsigned short *)p + i)));
}
template <> __device__ __forceinline__ float ld_s<__nv_bfloat16>(const __nv_bfloat16 *p, size_t i) {
    return __uint_as_float((unsigned)__ldg((const unsigned short *)p + i) << 16);
}
template <> __device__ __forceinline__ float ld_s<float>(const float *p, size_t i) { return __ldg(p + i); }

/* byte m of v (a nibble or a byte) as the float 0.5 + v/256 (exact) */
__device__ __forceinline__ float nib_f(uint32_t v, int m) {
    return __int_as_float((int)__byte_perm(v, 0x3F000000u, 0x7044u | ((unsigned)m << 8)));
}
/* byte m of v as the float 2^23 + v (exact) */
__device__ __forceinline__ float byte_f(uint32_t v, int m) {
    return __int_as_float((int)__byte_perm(v, 0x4B000000u, 0x7650u | (unsigned)m));
}

/* ---- one 16-byte chunk of R rows ---- */

/* 4-bit: a chunk is 4 words = 32 elements; x points at its 32 floats */
template <typename ST, int R>
__device__ __forceinline__ void chunk_q4(const uint4 (&w)[R], const float4 *__restrict__ x,
                                         const ST *const (&sc)[R], const ST *const (&bi)[R], int g,
                                         float (&acc)[R]) {
    float4 xv[8];
#pragma unroll
    for (int i = 0; i < 8; i++) xv[i] = __ldg(x + i);
    float X = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; i++) X += (xv[i].x + xv[i].y) + (xv[i].z + xv[i].w);
#pragma unroll
    for (int r = 0; r < R; r++) {
        uint32_t words[4] = {w[r].x, w[r].y, w[r].z, w[r].w};
        float F = 0.0f;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            /* byte m of lo is element 2m of the word, byte m of hi element 2m + 1 */
            uint32_t lo = words[j] & 0x0F0F0F0Fu, hi = (words[j] >> 4) & 0x0F0F0F0Fu;
            float4 a = xv[2 * j], b = xv[2 * j + 1];
            F = fmaf(nib_f(lo, 0), a.x, F);
            F = fmaf(nib_f(hi, 0), a.y, F);
            F = fmaf(nib_f(lo, 1), a.z, F);
            F = fmaf(nib_f(hi, 1), a.w, F);
            F = fmaf(nib_f(lo, 2), b.x, F);
            F = fmaf(nib_f(hi, 2), b.y, F);
            F = fmaf(nib_f(lo, 3), b.z, F);
            F = fmaf(nib_f(hi, 3), b.w, F);
        }
        float s = ld_s(sc[r], g), b = ld_s(bi[r], g);
        acc[r] += s * (256.0f * F - 128.0f * X) + b * X;
    }
}

/* 8-bit: a chunk is 4 words = 16 elements */
template <typename ST, int R>
__device__ __forceinline__ void chunk_q8(const uint4 (&w)[R], const float4 *__restrict__ x,
                                         const ST *const (&sc)[R], const ST *const (&bi)[R], int g,
                                         float (&acc)[R]) {
    float4 xv[4];
#pragma unroll
    for (int i = 0; i < 4; i++) xv[i] = __ldg(x + i);
    float X = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; i++) X += (xv[i].x + xv[i].y) + (xv[i].z + xv[i].w);
#pragma unroll
    for (int r = 0; r < R; r++) {
        uint32_t words[4] = {w[r].x, w[r].y, w[r].z, w[r].w};
        float Q = 0.0f;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float4 a = xv[j];
            Q = fmaf(byte_f(words[j], 0) - 8388608.0f, a.x, Q);
            Q = fmaf(byte_f(words[j], 1) - 8388608.0f, a.y, Q);
            Q = fmaf(byte_f(words[j], 2) - 8388608.0f, a.z, Q);
            Q = fmaf(byte_f(words[j], 3) - 8388608.0f, a.w, Q);
        }
        acc[r] += ld_s(sc[r], g) * Q + ld_s(bi[r], g) * X;
    }
}

/* ---- the matvec kernels: block (32, warps), R rows a block ---- */

#define MV_MAX_WARPS 8

/* sums acc over the block's warps and writes y for the block's rows */
template <int R>
__device__ __forceinline__ void mv_finish(float (&acc)[R], float *y, int r0, int rows, const void *obias,
                                          int obias_dtype) {
    __shared__ float part[MV_MAX_WARPS][R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = warp_sum(acc[r]);
    if (blockDim.y > 1) {
        if (threadIdx.x == 0) {
#pragma unroll
            for (int r = 0; r < R; r++) part[threadIdx.y][r] = acc[r];
        }
        __syncthreads();
        if (threadIdx.y != 0) return;
        if (threadIdx.x == 0)
            for (int wi = 1; wi < (int)blockDim.y; wi++)
#pragma unroll
                for (int r = 0; r < R; r++) acc[r] += part[wi][r];
    }
    if (threadIdx.x == 0) {
#pragma unroll
        for (int r = 0; r < R; r++)
            if (r0 + r < rows) y[r0 + r] = acc[r] + (obias ? cu_load_float(obias, obias_dtype, r0 + r) : 0.0f);
    }
}

/* chunk c (16 bytes of each of R rows) at either width; x4: the whole x */
template <int BITS, typename ST, int R>
__device__ __forceinline__ void chunk_at(const uint4 (&w)[R], const float4 *__restrict__ x4, int c,
                                         const ST *const (&sc)[R], const ST *const (&bi)[R], int cpg,
                                         float (&acc)[R]) {
    if constexpr (BITS == 4) chunk_q4<ST, R>(w, x4 + (size_t)c * 8, sc, bi, c / cpg, acc);
    else chunk_q8<ST, R>(w, x4 + (size_t)c * 4, sc, bi, c / cpg, acc);
}

template <int BITS, typename ST, int R>
__global__ void __launch_bounds__(256) mv_quant_kernel(const uint4 *__restrict__ W, const ST *__restrict__ S,
                                                       const ST *__restrict__ B, const float *__restrict__ x,
                                                       float *__restrict__ y, int rows, int cols, int group,
                                                       const void *obias, int obias_dtype) {
    const int per_chunk = BITS == 4 ? 32 : 16; /* elements in 16 bytes */
    int chunks = cols / per_chunk, chunks_per_group = group / per_chunk, groups = cols / group;
    int r0 = blockIdx.x * R;
    const uint4 *wr[R];
    const ST *sr[R], *br[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        int row = r0 + r < rows ? r0 + r : rows - 1; /* a ragged last block re-reads a row, writes none */
        wr[r] = W + (size_t)row * chunks;
        sr[r] = S + (size_t)row * groups;
        br[r] = B + (size_t)row * groups;
    }
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
    const float4 *x4 = (const float4 *)x;
    const int step = blockDim.y * 32;
    int c = threadIdx.y * 32 + threadIdx.x;
    /* two chunks a row in flight before any is used */
    for (; c + step < chunks; c += 2 * step) {
        uint4 w0[R], w1[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            w0[r] = ld_stream(wr[r] + c);
            w1[r] = ld_stream(wr[r] + c + step);
        }
        chunk_at<BITS, ST, R>(w0, x4, c, sr, br, chunks_per_group, acc);
        chunk_at<BITS, ST, R>(w1, x4, c + step, sr, br, chunks_per_group, acc);
    }
    if (c < chunks) {
        uint4 w0[R];
#pragma unroll
        for (int r = 0; r < R; r++) w0[r] = ld_stream(wr[r] + c);
        chunk_at<BITS, ST, R>(w0, x4, c, sr, br, chunks_per_group, acc);
    }
    mv_finish<R>(acc, y, r0, rows, obias, obias_dtype);
}

/* dense weights: a chunk is 16 bytes of WT (8 halves or 4 floats) */
template <typename WT> __device__ __forceinline__ float dense_dot(uint4 w, const float4 *x);
template <> __device__ __forceinline__ float dense_dot<float>(uint4 w, const float4 *x) {
    float4 a = __ldg(x);
    return __uint_as_float(w.x) * a.x + __uint_as_float(w.y) * a.y + __uint_as_float(w.z) * a.z +
           __uint_as_float(w.w) * a.w;
}
__device__ __forceinline__ float2 half2_lo_hi(uint32_t u, bool bf16) {
    if (bf16) return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
    return __half22float2(*(const __half2 *)&u);
}
template <> __device__ __forceinline__ float dense_dot<__half>(uint4 w, const float4 *x) {
    float4 a = __ldg(x), b = __ldg(x + 1);
    float2 p = half2_lo_hi(w.x, false), q = half2_lo_hi(w.y, false), r = half2_lo_hi(w.z, false),
           s = half2_lo_hi(w.w, false);
    return p.x * a.x + p.y * a.y + q.x * a.z + q.y * a.w + r.x * b.x + r.y * b.y + s.x * b.z + s.y * b.w;
}
template <> __device__ __forceinline__ float dense_dot<__nv_bfloat16>(uint4 w, const float4 *x) {
    float4 a = __ldg(x), b = __ldg(x + 1);
    float2 p = half2_lo_hi(w.x, true), q = half2_lo_hi(w.y, true), r = half2_lo_hi(w.z, true),
           s = half2_lo_hi(w.w, true);
    return p.x * a.x + p.y * a.y + q.x * a.z + q.y * a.w + r.x * b.x + r.y * b.y + s.x * b.z + s.y * b.w;
}

template <typename WT, int R>
__global__ void __launch_bounds__(256) mv_dense_kernel(const uint4 *__restrict__ W, const float *__restrict__ x,
                                                       float *__restrict__ y, int rows, int cols, const void *obias,
                                                       int obias_dtype) {
    const int per_chunk = 16 / sizeof(WT);
    int chunks = cols / per_chunk, r0 = blockIdx.x * R;
    const uint4 *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) wr[r] = W + (size_t)(r0 + r < rows ? r0 + r : rows - 1) * chunks;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
    const float4 *x4 = (const float4 *)x;
    for (int c = threadIdx.y * 32 + threadIdx.x; c < chunks; c += blockDim.y * 32) {
        uint4 w[R];
#pragma unroll
        for (int r = 0; r < R; r++) w[r] = ld_stream(wr[r] + c);
#pragma unroll
        for (int r = 0; r < R; r++) acc[r] += dense_dot<WT>(w[r], x4 + (size_t)c * (per_chunk / 4));
    }
    mv_finish<R>(acc, y, r0, rows, obias, obias_dtype);
}

/* ---- the x-stationary quantized matvec ---- */

#define XS_MAX_WARPS 32 /* 1024 threads: up to 1024 chunks a row */

template <int BITS, typename ST, int R>
__device__ __forceinline__ void xs_load(const uint4 *__restrict__ W, const ST *__restrict__ S,
                                        const ST *__restrict__ B, int rows, int chunks, int groups, int batch,
                                        int c, int g, bool active, uint4 (&w)[R], float (&s)[R], float (&b)[R]) {
#pragma unroll
    for (int r = 0; r < R; r++) {
        int row = batch * R + r < rows ? batch * R + r : rows - 1;
        if (active) {
            w[r] = ld_stream(W + (size_t)row * chunks + c);
            s[r] = ld_s(S, (size_t)row * groups + g);
            b[r] = ld_s(B, (size_t)row * groups + g);
        } else {
            w[r] = make_uint4(0, 0, 0, 0);
            s[r] = b[r] = 0.0f;
        }
    }
}

/* one row's share of this thread: its chunk of words against its x */
template <int BITS>
__device__ __forceinline__ float xs_dot(uint4 w, const float4 (&xv)[BITS == 4 ? 8 : 4], float X, float s, float b) {
    uint32_t words[4] = {w.x, w.y, w.z, w.w};
    if constexpr (BITS == 4) {
        float F = 0.0f;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            uint32_t lo = words[j] & 0x0F0F0F0Fu, hi = (words[j] >> 4) & 0x0F0F0F0Fu;
            float4 a = xv[2 * j], c = xv[2 * j + 1];
            F = fmaf(nib_f(lo, 0), a.x, F);
            F = fmaf(nib_f(hi, 0), a.y, F);
            F = fmaf(nib_f(lo, 1), a.z, F);
            F = fmaf(nib_f(hi, 1), a.w, F);
            F = fmaf(nib_f(lo, 2), c.x, F);
            F = fmaf(nib_f(hi, 2), c.y, F);
            F = fmaf(nib_f(lo, 3), c.z, F);
            F = fmaf(nib_f(hi, 3), c.w, F);
        }
        return s * (256.0f * F - 128.0f * X) + b * X;
    } else {
        float Q = 0.0f;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float4 a = xv[j];
            Q = fmaf(byte_f(words[j], 0) - 8388608.0f, a.x, Q);
            Q = fmaf(byte_f(words[j], 1) - 8388608.0f, a.y, Q);
            Q = fmaf(byte_f(words[j], 2) - 8388608.0f, a.z, Q);
            Q = fmaf(byte_f(words[j], 3) - 8388608.0f, a.w, Q);
        }
        return s * Q + b * X;
    }
}

/* block: 32 * ceil(chunks / 32) threads; grid: any number of blocks, each striding over batches
 * of R rows */
/* registers: x (32) plus two batches of R words, scales and biases; a block of up to 1024
 * threads leaves 64 a thread, enough for R <= 2; larger batches take smaller blocks */
#define XS_MAX_THREADS(R) ((R) <= 2 ? 1024 : (R) == 4 ? 512 : 256)

template <int BITS, typename ST, int R>
__global__ void __launch_bounds__(XS_MAX_THREADS(R)) mv_xs_kernel(const uint4 *__restrict__ W, const ST *__restrict__ S,
                                                     const ST *__restrict__ B, const float *__restrict__ x,
                                                     float *__restrict__ y, int rows, int cols, int group,
                                                     const void *obias, int obias_dtype) {
    constexpr int PC = BITS == 4 ? 32 : 16; /* elements a chunk */
    constexpr int NX = PC / 4;              /* float4s of x a chunk */
    __shared__ float part[2][XS_MAX_WARPS][R];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    int chunks = cols / PC, groups = cols / group;
    int c = threadIdx.x;
    bool active = c < chunks;
    if (!active) c = 0;
    int g = c * PC / group;
    float4 xv[NX];
    float X = 0.0f;
#pragma unroll
    for (int i = 0; i < NX; i++) {
        xv[i] = active ? __ldg((const float4 *)x + (size_t)c * NX + i) : make_float4(0.f, 0.f, 0.f, 0.f);
        X += (xv[i].x + xv[i].y) + (xv[i].z + xv[i].w);
    }
    int batches = (rows + R - 1) / R;
    int batch = blockIdx.x;
    uint4 cur[R];
    float cs[R], cb[R];
    xs_load<BITS, ST, R>(W, S, B, rows, chunks, groups, batch, c, g, active, cur, cs, cb);
    int buf = 0;
    for (; batch < batches; batch += gridDim.x) {
        int next = batch + gridDim.x;
        uint4 nw[R];
        float ns[R], nb[R];
        /* the next batch's words are in flight while this one is summed */
        xs_load<BITS, ST, R>(W, S, B, rows, chunks, groups, next < batches ? next : batch, c, g,
                             active && next < batches, nw, ns, nb);
        float p[R];
#pragma unroll
        for (int r = 0; r < R; r++) p[r] = warp_sum(xs_dot<BITS>(cur[r], xv, X, cs[r], cb[r]));
        if (lane == 0) {
#pragma unroll
            for (int r = 0; r < R; r++) part[buf][warp][r] = p[r];
        }
        /* one barrier a batch: part is double-buffered, and a warp can only come back to this
         * buffer after the next barrier, which warp 0 passes only once it has read it */
        __syncthreads();
        if (warp == 0 && lane < R) {
            int row = batch * R + lane;
            if (row < rows) {
                float t = 0.0f;
                for (int wi = 0; wi < n_warps; wi++) t += part[buf][wi][lane];
                y[row] = t + (obias ? cu_load_float(obias, obias_dtype, row) : 0.0f);
            }
        }
        buf ^= 1;
#pragma unroll
        for (int r = 0; r < R; r++) {
            cur[r] = nw[r];
            cs[r] = ns[r];
            cb[r] = nb[r];
        }
    }
}

/* ---- the x-stationary matvec with a shared-memory pipeline ----
 * The same work split, but each thread's words, scales and biases for the next XS_STAGES - 1
 * batches travel by cp.async into its own slots of shared memory: many more bytes in flight
 * than registers allow, and no barrier for them, since a thread reads back only what it
 * copied itself. Scales and biases travel as the aligned 4-byte word that holds them
 * (allocations carry 16 bytes of padding for the last one). */

#define XS_STAGES 4

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
    unsigned a = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(a), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async4(void *smem, const void *gmem) {
    unsigned a = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(a), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

/* the 4-byte word holding element i of a scale vector, and the element out of it */
template <typename ST> __device__ __forceinline__ const void *scale_word(const ST *p, size_t i) {
    return sizeof(ST) == 4 ? (const void *)(p + i) : (const void *)((uintptr_t)(p + i) & ~(uintptr_t)3);
}
template <typename ST> __device__ __forceinline__ float scale_of(uint32_t word, size_t i);
template <> __device__ __forceinline__ float scale_of<float>(uint32_t word, size_t i) {
    (void)i;
    return __uint_as_float(word);
}
template <> __device__ __forceinline__ float scale_of<__half>(uint32_t word, size_t i) {
    return __half2float(__ushort_as_half((unsigned short)(i & 1 ? word >> 16 : word & 0xffff)));
}
template <> __device__ __forceinline__ float scale_of<__nv_bfloat16>(uint32_t word, size_t i) {
    return __uint_as_float(i & 1 ? word & 0xffff0000u : word << 16);
}

template <int BITS, typename ST, int R>
__global__ void __launch_bounds__(XS_MAX_THREADS(R)) mv_async_kernel(const uint4 *__restrict__ W,
                                                                     const ST *__restrict__ S,
                                                                     const ST *__restrict__ B,
                                                                     const float *__restrict__ x,
                                                                     float *__restrict__ y, int rows, int cols,
                                                                     int group, const void *obias, int obias_dtype) {
    constexpr int PC = BITS == 4 ? 32 : 16;
    constexpr int NX = PC / 4;
    extern __shared__ __align__(16) unsigned char xs_smem[];
    __shared__ float part[2][XS_MAX_WARPS][R];
    const int T = blockDim.x, tid = threadIdx.x;
    uint4 *ring_w = (uint4 *)xs_smem;                         /* [stage][r][T] */
    uint32_t *ring_s = (uint32_t *)(ring_w + XS_STAGES * R * T); /* [stage][r][T] */
    uint32_t *ring_b = ring_s + XS_STAGES * R * T;
    int lane = tid & 31, warp = tid >> 5, n_warps = T >> 5;
    int chunks = cols / PC, groups = cols / group;
    int c = tid;
    bool active = c < chunks;
    if (!active) c = 0;
    int g = c * PC / group;
    float4 xv[NX];
    float X = 0.0f;
#pragma unroll
    for (int i = 0; i < NX; i++) {
        xv[i] = active ? __ldg((const float4 *)x + (size_t)c * NX + i) : make_float4(0.f, 0.f, 0.f, 0.f);
        X += (xv[i].x + xv[i].y) + (xv[i].z + xv[i].w);
    }
    int batches = (rows + R - 1) / R;
    /* copies of one batch into one stage; every thread commits a group per call, empty or not,
     * so that wait_group counts the same batches in every thread */
    auto issue = [&](int batch, int stage) {
        if (active && batch < batches) {
#pragma unroll
            for (int r = 0; r < R; r++) {
                int row = batch * R + r < rows ? batch * R + r : rows - 1;
                size_t gi = (size_t)row * groups + g;
                int slot = (stage * R + r) * T + tid;
                cp_async16(ring_w + slot, W + (size_t)row * chunks + c);
                cp_async4(ring_s + slot, scale_word(S, gi));
                cp_async4(ring_b + slot, scale_word(B, gi));
            }
        }
        cp_async_commit();
    };
#pragma unroll
    for (int k = 0; k < XS_STAGES - 1; k++) issue(blockIdx.x + k * gridDim.x, k);
    int buf = 0, it = 0;
    for (int batch = blockIdx.x; batch < batches; batch += gridDim.x, it++) {
        issue(batch + (XS_STAGES - 1) * gridDim.x, (it + XS_STAGES - 1) % XS_STAGES);
        cp_async_wait<XS_STAGES - 1>(); /* this batch's group has landed */
        int stage = it % XS_STAGES;
        float p[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            int row = batch * R + r < rows ? batch * R + r : rows - 1;
            size_t gi = (size_t)row * groups + g;
            int slot = (stage * R + r) * T + tid;
            float v = 0.0f;
            if (active)
                v = xs_dot<BITS>(ring_w[slot], xv, X, scale_of<ST>(ring_s[slot], gi), scale_of<ST>(ring_b[slot], gi));
            p[r] = warp_sum(v);
        }
        if (lane == 0) {
#pragma unroll
            for (int r = 0; r < R; r++) part[buf][warp][r] = p[r];
        }
        __syncthreads();
        if (warp == 0 && lane < R) {
            int row = batch * R + lane;
            if (row < rows) {
                float t = 0.0f;
                for (int wi = 0; wi < n_warps; wi++) t += part[buf][wi][lane];
                y[row] = t + (obias ? cu_load_float(obias, obias_dtype, row) : 0.0f);
            }
        }
        buf ^= 1;
    }
    cp_async_wait<0>();
}

/* ---- the tiled kernel: any weight, any n ---- */

#define TILE_T 64 /* tokens */
#define TILE_R 64 /* rows */
#define TILE_K 32

__global__ void __launch_bounds__(256) tiled_kernel(cu_weight w, const float *__restrict__ x, float *__restrict__ y,
                                                    int n, const void *obias, int obias_dtype) {
    /* +1: the loaders' column writes land in distinct banks */
    __shared__ float ws[TILE_K][TILE_R + 1];
    __shared__ float xs[TILE_K][TILE_T + 1];
    int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    int r0 = blockIdx.x * TILE_R, t0 = blockIdx.y * TILE_T;
    int lr = tid >> 2, lk = (tid & 3) * 8; /* loader: 8 consecutive columns of one row / token */
    float acc[4][4] = {};
    for (int k0 = 0; k0 < w.cols; k0 += TILE_K) {
        int row = r0 + lr, tok = t0 + lr;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int c = k0 + lk + i;
            ws[lk + i][lr] = row < w.rows && c < w.cols ? cu_weight_at(w, row, c) : 0.0f;
            xs[lk + i][lr] = tok < n && c < w.cols ? x[(size_t)tok * w.cols + c] : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < TILE_K; kk++) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = xs[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; j++) b[j] = ws[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int tok = t0 + ty + 16 * i;
        if (tok >= n) continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int row = r0 + tx + 16 * j;
            if (row < w.rows)
                y[(size_t)tok * w.rows + row] = acc[i][j] + (obias ? cu_load_float(obias, obias_dtype, row) : 0.0f);
        }
    }
}

/* ---- launch ---- */

static int tune_variant, tune_rows, tune_blocks; /* 0: the heuristic */

extern "C" int cuda_matvec_tune(int variant, int rows_per_block, int blocks_per_sm) {
    if (variant < 0 || variant > 3 || rows_per_block < 0 || rows_per_block > 8 || rows_per_block == 3 ||
        (rows_per_block > 4 && rows_per_block < 8) || blocks_per_sm < 0 || blocks_per_sm > 32)
        return -1;
    tune_variant = variant;
    tune_rows = rows_per_block;
    tune_blocks = blocks_per_sm;
    return 0;
}

extern "C" void cuda_matvec_tuning(int *rows_per_block, int *blocks_per_sm) {
    *rows_per_block = tune_rows;
    *blocks_per_sm = tune_blocks;
}

/* Which matvec kernel: the warp kernel (cuda_matvec.cu) wherever it takes the weight; of the
 * x-stationary ones, measured on an H100 in round 1 (bench/RESULTS-cuda.md), the cp.async one
 * wins on wide rows (down_proj: 448-592 chunks a row, +1-11%), the register one on the rest.
 * The environment overrides: STRATA_CUDA_MATVEC=regs, async or warp. */
static int pick_variant(const bk_weight *w, int chunks) {
    static int forced = -1;
    if (forced < 0) {
        const char *e = getenv("STRATA_CUDA_MATVEC");
        forced = !e                  ? 0
                 : !strcmp(e, "regs")  ? CUDA_MV_REGS
                 : !strcmp(e, "async") ? CUDA_MV_ASYNC
                 : !strcmp(e, "warp")  ? CUDA_MV_WARP
                                       : 0;
    }
    int v = tune_variant ? tune_variant : forced;
    if (v == CUDA_MV_WARP && !cuda_warp_takes(w)) v = 0;
    if (v) return v;
    if (cuda_warp_takes(w)) return CUDA_MV_WARP;
    return chunks > 256 ? CUDA_MV_ASYNC : CUDA_MV_REGS;
}

static int sm_count(void) {
    static int n;
    if (!n) {
        int dev = 0;
        cudaGetDevice(&dev);
        if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) n = 1;
    }
    return n;
}

extern "C" void cuda_matvec_pick(int rows, int cols, int bits, int *rows_per_block, int *blocks_per_sm) {
    (void)cols;
    (void)bits;
    /* measured on an H100 (bench/RESULTS-cuda.md): two rows a batch beat one (half the
     * barriers) and four or eight (the registers they take cost occupancy); tiny matrices
     * keep one so that the grid still covers the SMs */
    *rows_per_block = rows >= 2 * sm_count() ? 2 : 1;
    *blocks_per_sm = 0; /* as many as fit */
}

template <int BITS, typename ST, int R>
static void launch_xs_r(cudaStream_t s, int variant, int blocks_per_sm, const bk_weight *w, const float *x, float *y,
                        const void *ob, int obt) {
    const int PC = BITS == 4 ? 32 : 16;
    int chunks = w->cols / PC, threads = (chunks + 31) / 32 * 32, warps = threads / 32;
    int async = variant == CUDA_MV_ASYNC;
    size_t smem = async ? (size_t)XS_STAGES * R * threads * (16 + 4 + 4) : 0;
    /* blocks an SM, by warps a block, from the occupancy API; shared memory limits the async
     * kernel, registers the other */
    static int fit[2][XS_MAX_WARPS + 1];
    static size_t smem_allowed; /* the kernel's dynamic shared memory limit, only ever raised */
    if (async && smem > smem_allowed) {
        if (cudaFuncSetAttribute(mv_async_kernel<BITS, ST, R>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) ==
            cudaSuccess)
            smem_allowed = smem;
        else
            cudaGetLastError(); /* too much for this GPU: fit says so below */
    }
    if (!fit[async][warps]) {
        int n = 0;
        cudaError_t e;
        if (async) {
            e = smem <= smem_allowed ? cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, mv_async_kernel<BITS, ST, R>,
                                                                                     threads, smem)
                                     : cudaErrorInvalidValue;
        } else {
            e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, mv_xs_kernel<BITS, ST, R>, threads, 0);
        }
        if (e != cudaSuccess) cudaGetLastError(); /* an answer, not a failure of the stream */
        if (e != cudaSuccess || n < 1) n = -1;  /* the async kernel does not fit: use the other */
        fit[async][warps] = n;
    }
    if (async && fit[1][warps] < 0) {
        launch_xs_r<BITS, ST, R>(s, CUDA_MV_REGS, blocks_per_sm, w, x, y, ob, obt);
        return;
    }
    int can = fit[async][warps] > 0 ? fit[async][warps] : 1;
    int per_sm = blocks_per_sm && blocks_per_sm < can ? blocks_per_sm : can;
    long batches = (w->rows + R - 1) / R, grid = (long)per_sm * sm_count();
    if (grid > batches) grid = batches;
    const uint4 *Wp = (const uint4 *)w->w->d;
    const ST *S = (const ST *)w->scales->d, *B = (const ST *)w->biases->d;
    if (async)
        mv_async_kernel<BITS, ST, R><<<(unsigned)grid, threads, smem, s>>>(Wp, S, B, x, y, w->rows, w->cols,
                                                                          w->group_size, ob, obt);
    else
        mv_xs_kernel<BITS, ST, R><<<(unsigned)grid, threads, 0, s>>>(Wp, S, B, x, y, w->rows, w->cols, w->group_size,
                                                                     ob, obt);
}

template <int BITS, typename ST>
static void launch_xs(cudaStream_t s, int variant, int R, int blocks_per_sm, const bk_weight *w, const float *x,
                      float *y, const void *ob, int obt) {
    const int PC = BITS == 4 ? 32 : 16;
    int threads = (w->cols / PC + 31) / 32 * 32;
    if (variant == CUDA_MV_ASYNC && R > 4) R = 4;
    while (R > 1 && threads > XS_MAX_THREADS(R)) R /= 2; /* wide rows: smaller batches */
    if (R == 1) launch_xs_r<BITS, ST, 1>(s, variant, blocks_per_sm, w, x, y, ob, obt);
    else if (R == 2) launch_xs_r<BITS, ST, 2>(s, variant, blocks_per_sm, w, x, y, ob, obt);
    else if (R == 4) launch_xs_r<BITS, ST, 4>(s, variant, blocks_per_sm, w, x, y, ob, obt);
    else launch_xs_r<BITS, ST, 8>(s, CUDA_MV_REGS, blocks_per_sm, w, x, y, ob, obt);
}

/* the column-split matvec: W warps a block share R rows */
static int split_warps(int rows, int cols, int bits, int R) {
    int per_chunk = bits == 4 ? 32 : bits == 8 ? 16 : 8;
    int chunks = cols / per_chunk, blocks = (rows + R - 1) / R, W = 1;
    while (W < MV_MAX_WARPS && (long)blocks * W < 4096 && chunks >= 32 * W * 2) W *= 2;
    return W;
}

template <int BITS, typename ST>
static void launch_quant(cudaStream_t s, int R, int W, const bk_weight *w, const float *x, float *y,
                         const void *ob, int obt) {
    const uint4 *Wp = (const uint4 *)w->w->d;
    const ST *S = (const ST *)w->scales->d, *B = (const ST *)w->biases->d;
    dim3 block(32, W);
    unsigned grid = (unsigned)((w->rows + R - 1) / R);
    if (R == 1) mv_quant_kernel<BITS, ST, 1><<<grid, block, 0, s>>>(Wp, S, B, x, y, w->rows, w->cols, w->group_size, ob, obt);
    else if (R == 2) mv_quant_kernel<BITS, ST, 2><<<grid, block, 0, s>>>(Wp, S, B, x, y, w->rows, w->cols, w->group_size, ob, obt);
    else mv_quant_kernel<BITS, ST, 4><<<grid, block, 0, s>>>(Wp, S, B, x, y, w->rows, w->cols, w->group_size, ob, obt);
}

template <typename WT>
static void launch_dense(cudaStream_t s, int R, int W, const bk_weight *w, const float *x, float *y, const void *ob,
                         int obt) {
    const uint4 *Wp = (const uint4 *)w->w->d;
    dim3 block(32, W);
    unsigned grid = (unsigned)((w->rows + R - 1) / R);
    if (R == 1) mv_dense_kernel<WT, 1><<<grid, block, 0, s>>>(Wp, x, y, w->rows, w->cols, ob, obt);
    else if (R == 2) mv_dense_kernel<WT, 2><<<grid, block, 0, s>>>(Wp, x, y, w->rows, w->cols, ob, obt);
    else mv_dense_kernel<WT, 4><<<grid, block, 0, s>>>(Wp, x, y, w->rows, w->cols, ob, obt);
}

/* whether the matvec kernels take this weight: whole 16-byte chunks a row, each inside a group */
static int matvec_fits(const bk_weight *w) {
    if (w->bits == 4) return w->cols % 32 == 0 && w->group_size % 32 == 0;
    if (w->bits == 8) return w->cols % 16 == 0 && w->group_size % 16 == 0;
    if (w->bits == 0) return w->wdtype == BK_F32 ? w->cols % 4 == 0 : w->cols % 8 == 0;
    return 0;
}

extern "C" int cuda_matvec_variant(const bk_weight *w) {
    if (!matvec_fits(w) || !w->bits) return 0;
    return pick_variant(w, w->cols / (w->bits == 4 ? 32 : 16));
}

extern "C" int cuda_launch_matmul(void *stream, const bk_weight *w, const float *x, float *y, int n) {
    cudaStream_t s = (cudaStream_t)stream;
    const void *ob = w->bias.data ? w->bias.data->d : NULL;
    int obt = (int)w->bias.dtype;
    if (w->rows <= 0 || w->cols <= 0) return 0;
    if (w->bits != 0 && w->bits != 2 && w->bits != 4 && w->bits != 8) return -1;
    if (w->bits && (w->group_size <= 0 || w->cols % w->group_size || !w->scales || !w->biases)) return -1;
    if (w->bits && w->sdtype != BK_F16 && w->sdtype != BK_BF16 && w->sdtype != BK_F32) return -1;
    if (!w->bits && w->wdtype != BK_F16 && w->wdtype != BK_BF16 && w->wdtype != BK_F32) return -1;
    if (n == 1 && matvec_fits(w)) {
        int R, G, per_chunk = w->bits == 4 ? 32 : 16;
        int V = pick_variant(w, w->cols / per_chunk);
        if (V == CUDA_MV_WARP) {
            cuda_mv_group g;
            memset(&g, 0, sizeof g);
            g.w[0] = w;
            g.y[0] = y;
            g.n_parts = 1;
            if (!cuda_launch_mv_group(s, &g, x, tune_rows > 4 ? 4 : tune_rows, tune_blocks)) return 0;
            V = CUDA_MV_REGS;
        }
        cuda_matvec_pick(w->rows, w->cols, w->bits, &R, &G);
        if (tune_rows) R = tune_rows;
        if (tune_blocks) G = tune_blocks;
        if (w->bits && w->cols / per_chunk <= 32 * XS_MAX_WARPS) {
            if (w->bits == 4) {
                if (w->sdtype == BK_F16) launch_xs<4, __half>(s, V, R, G, w, x, y, ob, obt);
                else if (w->sdtype == BK_BF16) launch_xs<4, __nv_bfloat16>(s, V, R, G, w, x, y, ob, obt);
                else launch_xs<4, float>(s, V, R, G, w, x, y, ob, obt);
            } else {
                if (w->sdtype == BK_F16) launch_xs<8, __half>(s, V, R, G, w, x, y, ob, obt);
                else if (w->sdtype == BK_BF16) launch_xs<8, __nv_bfloat16>(s, V, R, G, w, x, y, ob, obt);
                else launch_xs<8, float>(s, V, R, G, w, x, y, ob, obt);
            }
            return 0;
        }
        if (R > 4) R = 4;
        int W = split_warps(w->rows, w->cols, w->bits, R);
        if (w->bits == 4) {
            if (w->sdtype == BK_F16) launch_quant<4, __half>(s, R, W, w, x, y, ob, obt);
            else if (w->sdtype == BK_BF16) launch_quant<4, __nv_bfloat16>(s, R, W, w, x, y, ob, obt);
            else launch_quant<4, float>(s, R, W, w, x, y, ob, obt);
        } else if (w->bits == 8) {
            if (w->sdtype == BK_F16) launch_quant<8, __half>(s, R, W, w, x, y, ob, obt);
            else if (w->sdtype == BK_BF16) launch_quant<8, __nv_bfloat16>(s, R, W, w, x, y, ob, obt);
            else launch_quant<8, float>(s, R, W, w, x, y, ob, obt);
        } else {
            if (w->wdtype == BK_F16) launch_dense<__half>(s, R, W, w, x, y, ob, obt);
            else if (w->wdtype == BK_BF16) launch_dense<__nv_bfloat16>(s, R, W, w, x, y, ob, obt);
            else launch_dense<float>(s, R, W, w, x, y, ob, obt);
        }
        return 0;
    }
    dim3 grid((unsigned)((w->rows + TILE_R - 1) / TILE_R), (unsigned)((n + TILE_T - 1) / TILE_T));
    tiled_kernel<<<grid, 256, 0, s>>>(cu_weight_of(w), x, y, n, ob, obt);
    return 0;
}
