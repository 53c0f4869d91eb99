/* What the two q4/q8 matvec kernels share (cuda_matvec.cu: the warp kernel, and the pack of x
 * both read; cuda_matvec_bulk.cu: the bulk kernel): a weight of a launch, the packed-x layout
 * and the integer dot product of a 16-byte chunk of weights with it. Device code: .cu only. */
#ifndef STRATA_CUDA_MV_COMMON_H
#define STRATA_CUDA_MV_COMMON_H

#include <stdint.h>

#include "kernels/cuda/cuda_device.h"

#define MVW_MAX_PACKED (100 << 10) /* bytes of packed x (a stream's scratch buffer) */

/* a weight of a launch and where its rows go */
struct mvw_part {
    const uint4 *W;
    const void *S, *B, *obias;
    float *y;
    int obias_dtype, rows, batch0; /* batch0: the first batch (warp kernel) or tile (bulk) of this part */
};

/* c + sum over the 4 bytes of a (unsigned) times those of b (signed) */
__device__ __forceinline__ int dp4a_us(uint32_t a, int b, int c) {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

/* a scale or bias as loaded (raw bits: converted only when used, so that nothing waits on the
 * load before the tile is summed) */
template <typename ST> __device__ __forceinline__ uint32_t ld_raw(const void *p, size_t i) {
    if constexpr (sizeof(ST) == 4) return __float_as_uint(__ldg((const float *)p + i));
    else return __ldg((const unsigned short *)p + i);
}
template <typename ST> __device__ __forceinline__ float raw_f(uint32_t r);
template <> __device__ __forceinline__ float raw_f<float>(uint32_t r) { return __uint_as_float(r); }
template <> __device__ __forceinline__ float raw_f<__half>(uint32_t r) {
    return __half2float(__ushort_as_half((unsigned short)r));
}
template <> __device__ __forceinline__ float raw_f<__nv_bfloat16>(uint32_t r) { return __uint_as_float(r << 16); }

/* packed x: NI int4 a chunk; int4 i of chunk c sits at c * NI + (i ^ swz(c)) */
template <int BITS> struct xpack {
    static constexpr int PC = BITS == 4 ? 32 : 16; /* elements a chunk */
    static constexpr int NI = BITS == 4 ? 4 : 2;   /* int4s a chunk */
    static __device__ __forceinline__ int pos(int c, int i) {
        return c * NI + (i ^ (BITS == 4 ? (c >> 1) & 3 : (c >> 2) & 1));
    }
};

/* sum over a chunk of q times the fixed-point x, in the units xm.x scales back */
template <int BITS> __device__ __forceinline__ int chunk_dot(uint4 w, const int4 (&xq)[xpack<BITS>::NI]) {
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    if constexpr (BITS == 4) {
        int eh = 0, el = 0, oh = 0, ol = 0;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            uint32_t even = words[j] & 0x0F0F0F0Fu, odd16 = words[j] & 0xF0F0F0F0u;
            eh = dp4a_us(even, xq[j].x, eh);
            el = dp4a_us(even, xq[j].y, el);
            oh = dp4a_us(odd16, xq[j].z, oh);
            ol = dp4a_us(odd16, xq[j].w, ol);
        }
        /* |result| <= 2^28: 16 (256 eh + el) + 256 oh + ol */
        return eh * 4096 + el * 16 + oh * 256 + ol;
    } else {
        int h = 0, l = 0;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int4 &q = xq[j >> 1];
            h = dp4a_us(words[j], j & 1 ? q.z : q.x, h);
            l = dp4a_us(words[j], j & 1 ? q.w : q.y, l);
        }
        return h * 256 + l;
    }
}

/* a launch of the bulk matvec (cuda_matvec_bulk.cu): the parts as the warp kernel's (batch0
 * unused), x already packed into xq/xm by a pack launched with early trigger */
struct mvb_in {
    mvw_part p[CUDA_MV_MAX_PARTS];
    const int4 *xq;
    const float2 *xm;
    float *add_to;
    int n_parts, cols, group, bits, sdtype, epi;
};
/* whether the bulk kernel takes this launch: 16-byte aligned rows, scales and biases, rows that
 * fit a stage (the warp kernel takes the rest) */
bool mv_bulk_takes(const mvb_in *in);
/* enqueues the bulk matvec on s (after the pack of x) */
void mv_bulk_launch(cudaStream_t s, const mvb_in *in);

#endif
