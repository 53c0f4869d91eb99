// Causal GQA attention over the KV cache, for decode (n = 1) and prefill (n > 1) alike.
#include <metal_stdlib>
#include "msl_params.h"
#include "msl_common.h"
using namespace metal;

// One threadgroup per (head h, query t); query t sits at position pos0 + t and sees cache rows
// 0 .. pos0 + t of kv head h / (n_heads / n_kv_heads).
// Each simdgroup takes every ATTN_SIMDS-th key and keeps an online softmax (running max m,
// running sum l, rescaled output o): one simd_sum per key for the score, lanes own head dims
// lane, lane + 32, ... of q and o. The simdgroups' partial results then meet in threadgroup
// memory and are merged with their maxima: out = sum_s o_s e^(m_s - M) / sum_s l_s e^(m_s - M).
[[kernel]] void attention(device const float *q [[buffer(0)]],
                          device const float *k_cache [[buffer(1)]],
                          device const float *v_cache [[buffer(2)]],
                          device float *out [[buffer(3)]],
                          constant msl_attn_params &p [[buffer(4)]],
                          MSL_THREAD_ARGS) {
    threadgroup float part_max[ATTN_SIMDS];
    threadgroup float part_sum[ATTN_SIMDS];
    threadgroup float part_out[ATTN_SIMDS][ATTN_MAX_HEAD_DIM];

    const int dims_per_lane = ATTN_MAX_HEAD_DIM / 32;
    const int h = int(tg_pos.x), t = int(tg_pos.y);
    const int hd = p.head_dim;
    const int q_dim = p.n_heads * hd, kv_dim = p.n_kv_heads * hd;
    const int kh = h / (p.n_heads / p.n_kv_heads);
    const int len = p.pos0 + t + 1;
    const int lane = int(simd_lane), sg = int(simd_id);

    device const float *qh = q + (size_t)t * q_dim + (size_t)h * hd;
    float qv[dims_per_lane], o[dims_per_lane];
    for (int d = 0; d < dims_per_lane; d++) {
        const int i = lane + 32 * d;
        qv[d] = i < hd ? qh[i] : 0.0f;
        o[d] = 0.0f;
    }

    float m = -INFINITY, l = 0.0f;
    for (int pos = sg; pos < len; pos += ATTN_SIMDS) {
        device const float *kr = k_cache + (size_t)pos * kv_dim + (size_t)kh * hd;
        float s = 0.0f;
        for (int d = 0; d < dims_per_lane; d++) {
            const int i = lane + 32 * d;
            if (i < hd) s += qv[d] * kr[i];
        }
        s = simd_sum(s) * p.scale;
        const float m_new = max(m, s);
        const float corr = exp(m - m_new), e = exp(s - m_new);
        l = l * corr + e;
        device const float *vr = v_cache + (size_t)pos * kv_dim + (size_t)kh * hd;
        for (int d = 0; d < dims_per_lane; d++) {
            const int i = lane + 32 * d;
            if (i < hd) o[d] = o[d] * corr + e * vr[i];
        }
        m = m_new;
    }

    if (lane == 0) {
        part_max[sg] = m;
        part_sum[sg] = l;
    }
    for (int d = 0; d < dims_per_lane; d++) {
        const int i = lane + 32 * d;
        if (i < hd) part_out[sg][i] = o[d];
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);

    // simdgroup 0 always holds key 0, so M is finite; a simdgroup that saw no key has
    // m = -inf, l = 0, o = 0 and weighs e^(-inf) = 0
    float M = part_max[0];
    for (int s = 1; s < ATTN_SIMDS; s++) M = max(M, part_max[s]);
    float L = 0.0f;
    for (int s = 0; s < ATTN_SIMDS; s++) L += part_sum[s] * exp(part_max[s] - M);
    device float *oh = out + (size_t)t * q_dim + (size_t)h * hd;
    for (int i = int(t_idx); i < hd; i += ATTN_THREADS) {
        float acc = 0.0f;
        for (int s = 0; s < ATTN_SIMDS; s++) acc += part_out[s][i] * exp(part_max[s] - M);
        oh[i] = acc / L;
    }
}
