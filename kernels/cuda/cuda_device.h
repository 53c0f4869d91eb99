/* Device-side helpers shared by the CUDA kernels (included by .cu files only). */
#ifndef STRATA_CUDA_DEVICE_H
#define STRATA_CUDA_DEVICE_H

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "kernels/cuda/cuda_internal.h"

/* value i of a float vector whose dtype is known only at run time (norm weights, biases) */
__device__ __forceinline__ float cu_load_float(const void *p, int dtype, size_t i) {
    switch (dtype) {
    case BK_F16: return __half2float(((const __half *)p)[i]);
    case BK_BF16: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

/* A weight as the generic kernels see it (plain pointers and sizes; no host structs). */
struct cu_weight {
    const void *w, *scales, *biases;
    int wdtype, sdtype, rows, cols, bits, group;
};

static inline cu_weight cu_weight_of(const bk_weight *w) {
    cu_weight d;
    d.w = w->w->d;
    d.scales = w->scales ? w->scales->d : nullptr;
    d.biases = w->biases ? w->biases->d : nullptr;
    d.wdtype = w->wdtype;
    d.sdtype = w->sdtype;
    d.rows = w->rows;
    d.cols = w->cols;
    d.bits = w->bits;
    d.group = w->group_size;
    return d;
}

/* element (r, c), dequantized: the reference's cpu_weight_at, on the device */
__device__ __forceinline__ float cu_weight_at(const cu_weight &d, int r, int c) {
    if (d.bits == 0) return cu_load_float(d.w, d.wdtype, (size_t)r * d.cols + c);
    int per_word = 32 / d.bits;
    size_t words_per_row = (size_t)d.cols / per_word;
    uint32_t word = __ldg((const uint32_t *)d.w + (size_t)r * words_per_row + c / per_word);
    uint32_t v = (word >> ((c % per_word) * d.bits)) & ((1u << d.bits) - 1);
    size_t gi = (size_t)r * (d.cols / d.group) + c / d.group;
    return cu_load_float(d.scales, d.sdtype, gi) * (float)v + cu_load_float(d.biases, d.sdtype, gi);
}

/* Programmatic dependent launch (sm_90): a kernel launched with cu_launch() may start while
 * the kernel before it still runs; pdl_wait() returns once that kernel has completed and its
 * writes are visible, so every such kernel calls it before it reads activations or writes
 * anything. What comes before the wait may only read weights. pdl_trigger() lets the next
 * kernel start early. Both are no-ops on older GPUs and for kernels launched plainly. */
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* Launches `kernel` on `s`, with programmatic stream serialization when the feature is on.
 * Only kernels that call pdl_wait() before touching activations may be launched this way. */
template <typename... P, typename... A>
static inline void cu_launch(cudaStream_t s, dim3 grid, dim3 block, size_t smem, void (*kernel)(P...), A... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = cuda_feature_pdl() ? 1 : 0;
    cudaLaunchKernelEx(&cfg, kernel, ((P)args)...);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#endif
