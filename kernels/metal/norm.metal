// Per-token ops: RMSNorm and rotary position embedding.
#include <metal_stdlib>
#include "msl_params.h"
#include "msl_common.h"
using namespace metal;

// out[t, i] = x[t, i] / sqrt(mean(x[t]^2) + eps) * w[i]; one threadgroup per token.
// Sum of squares: per-thread partials, simd_sum within each simdgroup, then the simdgroup sums
// meet in threadgroup memory. out may alias x: each thread rewrites only the values it read.
[[kernel]] void rmsnorm(device const float *x [[buffer(0)]],
                        device const uchar *weight [[buffer(1)]],
                        device float *out [[buffer(2)]],
                        constant msl_norm_params &p [[buffer(3)]],
                        MSL_THREAD_ARGS) {
    threadgroup float partial[NORM_THREADS / 32];
    threadgroup float total;
    const int t = int(tg_pos.x);
    device const float *xt = x + (size_t)t * p.dim;
    device float *ot = out + (size_t)t * p.dim;

    float ss = 0.0f;
    for (int i = int(t_idx); i < p.dim; i += NORM_THREADS) ss += xt[i] * xt[i];
    ss = simd_sum(ss);
    if (simd_lane == 0) partial[simd_id] = ss;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (simd_id == 0) {
        float v = simd_lane < NORM_THREADS / 32 ? partial[simd_lane] : 0.0f;
        v = simd_sum(v);
        if (simd_lane == 0) total = v;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);

    const float inv = 1.0f / sqrt(total / float(p.dim) + p.eps);
    for (int i = int(t_idx); i < p.dim; i += NORM_THREADS) ot[i] = xt[i] * inv * load_float(weight, p.w_dtype, i);
}

// Rotate-half RoPE in place, one thread per (token, head, pair j < head_dim/2):
//   a = x[j], b = x[j + half], ang = (pos0 + t) * inv_freq[j]
//   x[j] = a cos - b sin, x[j + half] = b cos + a sin
// precise:: because angles reach tens of thousands of radians at long contexts, where fast
// sin/cos lose the phase.
[[kernel]] void rope(device float *x [[buffer(0)]],
                     device const float *inv_freq [[buffer(1)]],
                     constant msl_rope_params &p [[buffer(2)]],
                     MSL_THREAD_ARGS) {
    const int half_dim = p.head_dim / 2;
    const int i = int(tg_pos.x) * EW_THREADS + int(t_idx);
    if (i >= p.n * p.n_heads * half_dim) return;
    const int j = i % half_dim, th = i / half_dim; // th = t * n_heads + h
    const int t = th / p.n_heads;
    const float ang = float(p.pos0 + t) * inv_freq[j];
    const float c = precise::cos(ang), s = precise::sin(ang);
    device float *xh = x + (size_t)th * p.head_dim;
    const float a = xh[j], b = xh[j + half_dim];
    xh[j] = a * c - b * s;
    xh[j + half_dim] = b * c + a * s;
}
