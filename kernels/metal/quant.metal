// Linear layers and embedding lookup over MLX affine-quantized weights, read in place.
//
// MLX layout: W uint32 [rows, cols*bits/32], value 0 of a word in its lowest bits;
// scales and biases [rows, cols/group] in f16/bf16/f32; w = scale * q + bias.
// Since group sizes are 32, 64 or 128, every row is a whole number of 32-value chunks, and a
// 32-value chunk (16 bytes of q4, 32 of q8) never straddles two groups.
#include <metal_stdlib>
#include "msl_params.h"
#include "msl_common.h"
using namespace metal;

// ---- matvec (decode): y[t, r] = sum_c W[r, c] x[t, c], one token per grid z ----
//
// A simdgroup owns MV_ROWS_PER_SIMD rows; its 32 lanes walk K in 32-value chunks, so one pass
// of the simdgroup streams 1024 values of each row. A lane loads its x chunk once and reuses it
// for all of its rows, and folds the affine bias in with the chunk's sum of x:
//   sum_c (s q_c + b) x_c = s * sum_c q_c x_c + b * sum_c x_c.
// Lanes reduce with one simd_sum per row at the end; no threadgroup memory, no barrier.
template <int BITS, typename S>
[[kernel]] void qmv(device const uint *w [[buffer(0)]],
                    device const typename S::T *scales [[buffer(1)]],
                    device const typename S::T *biases [[buffer(2)]],
                    device const float *x [[buffer(3)]],
                    device float *y [[buffer(4)]],
                    device const uchar *out_bias [[buffer(5)]],
                    constant msl_mm_params &p [[buffer(6)]],
                    MSL_THREAD_ARGS) {
    const int per_word = 32 / BITS;
    const uint mask = (1u << BITS) - 1u;
    const int chunk_vec4 = MV_VALS_PER_LANE * BITS / 128; // uint4 loads per row chunk: 1 (q4) or 2 (q8)
    const int K = p.cols, words_per_row = K / per_word, n_groups = K / p.group_size;
    const int row0 = (int(tg_pos.x) * MV_SIMDS + int(simd_id)) * MV_ROWS_PER_SIMD;
    const int t = int(tg_pos.z);
    device const float *xt = x + (size_t)t * K;

    float acc[MV_ROWS_PER_SIMD];
    for (int r = 0; r < MV_ROWS_PER_SIMD; r++) acc[r] = 0.0f;

    for (int c0 = int(simd_lane) * MV_VALS_PER_LANE; c0 < K; c0 += 32 * MV_VALS_PER_LANE) {
        float xv[MV_VALS_PER_LANE];
        float xsum = 0.0f;
        device const float4 *x4 = (device const float4 *)(xt + c0);
        for (int i = 0; i < MV_VALS_PER_LANE / 4; i++) {
            float4 v = x4[i];
            xv[4 * i + 0] = v.x;
            xv[4 * i + 1] = v.y;
            xv[4 * i + 2] = v.z;
            xv[4 * i + 3] = v.w;
            xsum += (v.x + v.y) + (v.z + v.w);
        }
        const int g = c0 / p.group_size;
        for (int r = 0; r < MV_ROWS_PER_SIMD; r++) {
            const int row = row0 + r;
            if (row >= p.rows) break; // the same for every lane: the simdgroup stays converged
            device const uint4 *wq = (device const uint4 *)(w + (size_t)row * words_per_row + c0 / per_word);
            float dot = 0.0f;
            for (int j = 0; j < chunk_vec4; j++) {
                uint4 q = wq[j];
                for (int k = 0; k < 4; k++) {
                    uint word = q[k];
                    const int base = (4 * j + k) * per_word;
                    for (int e = 0; e < per_word; e++)
                        dot += xv[base + e] * float((word >> (e * BITS)) & mask);
                }
            }
            const size_t gi = (size_t)row * n_groups + g;
            acc[r] += S::get(scales[gi]) * dot + S::get(biases[gi]) * xsum;
        }
    }

    for (int r = 0; r < MV_ROWS_PER_SIMD; r++) {
        const int row = row0 + r;
        if (row >= p.rows) break;
        float sum = simd_sum(acc[r]);
        if (simd_lane == 0) {
            if (p.has_bias) sum += load_float(out_bias, p.bias_dtype, row);
            y[(size_t)t * p.rows + row] = sum;
        }
    }
}

// Dense (unquantized) matvec: the same row ownership, lanes striding K one value at a time so
// that any K works and each step of the simdgroup reads 32 consecutive values of a row.
template <typename S>
[[kernel]] void dmv(device const typename S::T *w [[buffer(0)]],
                    device const float *x [[buffer(1)]],
                    device float *y [[buffer(2)]],
                    device const uchar *out_bias [[buffer(3)]],
                    constant msl_mm_params &p [[buffer(4)]],
                    MSL_THREAD_ARGS) {
    const int K = p.cols;
    const int row0 = (int(tg_pos.x) * MV_SIMDS + int(simd_id)) * MV_ROWS_PER_SIMD;
    const int t = int(tg_pos.z);
    device const float *xt = x + (size_t)t * K;
    float acc[MV_ROWS_PER_SIMD];
    for (int r = 0; r < MV_ROWS_PER_SIMD; r++) acc[r] = 0.0f;
    for (int c = int(simd_lane); c < K; c += 32) {
        const float xv = xt[c];
        for (int r = 0; r < MV_ROWS_PER_SIMD; r++) {
            const int row = row0 + r;
            if (row >= p.rows) break;
            acc[r] += S::get(w[(size_t)row * K + c]) * xv;
        }
    }
    for (int r = 0; r < MV_ROWS_PER_SIMD; r++) {
        const int row = row0 + r;
        if (row >= p.rows) break;
        float sum = simd_sum(acc[r]);
        if (simd_lane == 0) {
            if (p.has_bias) sum += load_float(out_bias, p.bias_dtype, row);
            y[(size_t)t * p.rows + row] = sum;
        }
    }
}

// ---- tiled matmul (prefill): y[n, rows] = x[n, K] W^T ----
//
// A threadgroup computes a QMM_BM x QMM_BN tile of y. Per K step it stages QMM_BK columns of
// x and the matching QMM_BN dequantized weight rows in threadgroup memory, so each weight
// word is read from memory once per 32 tokens instead of once per token. Each thread then
// accumulates a 4 tokens x 2 rows block from threadgroup memory. The +1 padding keeps the
// column reads of a simdgroup on distinct banks.
template <int BITS, typename S>
[[kernel]] void qmm(device const uint *w [[buffer(0)]],
                    device const typename S::T *scales [[buffer(1)]],
                    device const typename S::T *biases [[buffer(2)]],
                    device const float *x [[buffer(3)]],
                    device float *y [[buffer(4)]],
                    device const uchar *out_bias [[buffer(5)]],
                    constant msl_mm_params &p [[buffer(6)]],
                    MSL_THREAD_ARGS) {
    threadgroup float xs[QMM_BM][QMM_BK + 1];
    threadgroup float ws[QMM_BN][QMM_BK + 1];

    const int per_word = 32 / BITS;
    const uint mask = (1u << BITS) - 1u;
    const int tile_words = QMM_BK / per_word; // uint32 per row per K step
    const int K = p.cols, words_per_row = K / per_word, n_groups = K / p.group_size;
    const int m0 = int(tg_pos.y) * QMM_BM, r0 = int(tg_pos.x) * QMM_BN;
    const int tid = int(t_idx);
    const int tm = tid / 16, tn = tid % 16; // this thread's 4 tokens and 2 rows

    // x staging: each thread loads 8 consecutive values of one token
    const int xl_tok = tid / 4, xl_col = (tid % 4) * 8;
    const bool x_live = m0 + xl_tok < p.n;
    device const float *xrow = x + (size_t)(x_live ? m0 + xl_tok : 0) * K;

    float acc[4][2];
    for (int i = 0; i < 4; i++) acc[i][0] = acc[i][1] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += QMM_BK) {
        float4 a = 0.0f, b = 0.0f;
        if (x_live) {
            device const float4 *x4 = (device const float4 *)(xrow + k0 + xl_col);
            a = x4[0];
            b = x4[1];
        }
        for (int i = 0; i < 4; i++) {
            xs[xl_tok][xl_col + i] = a[i];
            xs[xl_tok][xl_col + 4 + i] = b[i];
        }
        const int g = k0 / p.group_size;
        for (int i = tid; i < QMM_BN * tile_words; i += QMM_THREADS) {
            const int lr = i / tile_words, wi = i % tile_words, row = r0 + lr;
            if (row < p.rows) {
                const uint word = w[(size_t)row * words_per_row + k0 / per_word + wi];
                const size_t gi = (size_t)row * n_groups + g;
                const float s = S::get(scales[gi]), bb = S::get(biases[gi]);
                for (int e = 0; e < per_word; e++)
                    ws[lr][wi * per_word + e] = s * float((word >> (e * BITS)) & mask) + bb;
            } else {
                for (int e = 0; e < per_word; e++) ws[lr][wi * per_word + e] = 0.0f;
            }
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);

        for (int k = 0; k < QMM_BK; k++) {
            const float w0 = ws[2 * tn][k], w1 = ws[2 * tn + 1][k];
            for (int i = 0; i < 4; i++) {
                const float xv = xs[4 * tm + i][k];
                acc[i][0] += xv * w0;
                acc[i][1] += xv * w1;
            }
        }
        // the next step overwrites the tiles: everyone must be done reading them
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }

    for (int i = 0; i < 4; i++) {
        const int t = m0 + 4 * tm + i;
        if (t >= p.n) break;
        for (int j = 0; j < 2; j++) {
            const int row = r0 + 2 * tn + j;
            if (row >= p.rows) continue;
            float v = acc[i][j];
            if (p.has_bias) v += load_float(out_bias, p.bias_dtype, row);
            y[(size_t)t * p.rows + row] = v;
        }
    }
}

// ---- embedding rows: out[t, :] = W[ids[t], :] ----

// one thread per uint32 word of the row: per_word values, one group
template <int BITS, typename S>
[[kernel]] void qembed(device const uint *w [[buffer(0)]],
                       device const typename S::T *scales [[buffer(1)]],
                       device const typename S::T *biases [[buffer(2)]],
                       constant int *ids [[buffer(3)]],
                       device float *out [[buffer(4)]],
                       constant msl_embed_params &p [[buffer(5)]],
                       MSL_THREAD_ARGS) {
    const int per_word = 32 / BITS;
    const uint mask = (1u << BITS) - 1u;
    const int words_per_row = p.cols / per_word;
    const int wi = int(tg_pos.x) * EW_THREADS + int(t_idx);
    const int t = int(tg_pos.y);
    if (wi >= words_per_row) return;
    const size_t id = (size_t)ids[t];
    const uint word = w[id * words_per_row + wi];
    const int c = wi * per_word;
    const size_t gi = id * (size_t)(p.cols / p.group_size) + c / p.group_size;
    const float s = S::get(scales[gi]), b = S::get(biases[gi]);
    device float *o = out + (size_t)t * p.cols + c;
    for (int e = 0; e < per_word; e++) o[e] = s * float((word >> (e * BITS)) & mask) + b;
}

// dense table of any float dtype: one thread per value
[[kernel]] void dembed(device const uchar *w [[buffer(0)]],
                       constant int *ids [[buffer(1)]],
                       device float *out [[buffer(2)]],
                       constant msl_embed_params &p [[buffer(3)]],
                       MSL_THREAD_ARGS) {
    const int c = int(tg_pos.x) * EW_THREADS + int(t_idx);
    const int t = int(tg_pos.y);
    if (c >= p.cols) return;
    out[(size_t)t * p.cols + c] = load_float(w, p.dtype, ids[t] * p.cols + c);
}

// host names: <op>_<q4|q8>_<scale dtype>
template [[host_name("qmv_q4_f16")]] [[kernel]] decltype(qmv<4, ld_f16>) qmv<4, ld_f16>;
template [[host_name("qmv_q4_bf16")]] [[kernel]] decltype(qmv<4, ld_bf16>) qmv<4, ld_bf16>;
template [[host_name("qmv_q4_f32")]] [[kernel]] decltype(qmv<4, ld_f32>) qmv<4, ld_f32>;
template [[host_name("qmv_q8_f16")]] [[kernel]] decltype(qmv<8, ld_f16>) qmv<8, ld_f16>;
template [[host_name("qmv_q8_bf16")]] [[kernel]] decltype(qmv<8, ld_bf16>) qmv<8, ld_bf16>;
template [[host_name("qmv_q8_f32")]] [[kernel]] decltype(qmv<8, ld_f32>) qmv<8, ld_f32>;
template [[host_name("qmm_q4_f16")]] [[kernel]] decltype(qmm<4, ld_f16>) qmm<4, ld_f16>;
template [[host_name("qmm_q4_bf16")]] [[kernel]] decltype(qmm<4, ld_bf16>) qmm<4, ld_bf16>;
template [[host_name("qmm_q4_f32")]] [[kernel]] decltype(qmm<4, ld_f32>) qmm<4, ld_f32>;
template [[host_name("qmm_q8_f16")]] [[kernel]] decltype(qmm<8, ld_f16>) qmm<8, ld_f16>;
template [[host_name("qmm_q8_bf16")]] [[kernel]] decltype(qmm<8, ld_bf16>) qmm<8, ld_bf16>;
template [[host_name("qmm_q8_f32")]] [[kernel]] decltype(qmm<8, ld_f32>) qmm<8, ld_f32>;
template [[host_name("qembed_q4_f16")]] [[kernel]] decltype(qembed<4, ld_f16>) qembed<4, ld_f16>;
template [[host_name("qembed_q4_bf16")]] [[kernel]] decltype(qembed<4, ld_bf16>) qembed<4, ld_bf16>;
template [[host_name("qembed_q4_f32")]] [[kernel]] decltype(qembed<4, ld_f32>) qembed<4, ld_f32>;
template [[host_name("qembed_q8_f16")]] [[kernel]] decltype(qembed<8, ld_f16>) qembed<8, ld_f16>;
template [[host_name("qembed_q8_bf16")]] [[kernel]] decltype(qembed<8, ld_bf16>) qembed<8, ld_bf16>;
template [[host_name("qembed_q8_f32")]] [[kernel]] decltype(qembed<8, ld_f32>) qembed<8, ld_f32>;
template [[host_name("dmv_f16")]] [[kernel]] decltype(dmv<ld_f16>) dmv<ld_f16>;
template [[host_name("dmv_bf16")]] [[kernel]] decltype(dmv<ld_bf16>) dmv<ld_bf16>;
template [[host_name("dmv_f32")]] [[kernel]] decltype(dmv<ld_f32>) dmv<ld_f32>;
