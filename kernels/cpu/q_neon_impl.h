/* The NEON levels' kernels (aarch64), written once and compiled twice: q_neon.c (base NEON,
 * every aarch64 CPU) and q_neon_dot.c (with the dot-product instructions of ARMv8.2, built with
 * -march=armv8.2-a+dotprod; the level is picked at run time, cpu_fast.c). The includer defines
 * NEON_DOT (0 or 1), NEON_LEVEL (the level's name) and NEON_TABLE (its cpu_kernels) first.
 *
 * The integer scheme is the planar one of cpu_kern.h, as the AVX2 level: per block of 32 weights,
 * the 16 bytes of 4-bit codes split into low and high nibbles (0..15, valid as signed bytes) that
 * meet the even and odd activation codes; 8-bit codes are recentred to q - 128 (signed) with
 * 128 * sum(x) added back. dot16 adds 16 byte products into 4 int32 lanes: sdot where there is
 * one, else widening multiplies into int16 (two products a lane: at most 2 * 128 * 127, no
 * overflow) pairwise-added into int32. A block's lanes share one scale, so they are scaled as a
 * vector and summed once a row. */
#include <arm_neon.h>

#include "kernels/cpu/cpu_kern.h"

#define INLINE static inline __attribute__((always_inline))

INLINE int32x4_t dot16(int32x4_t acc, int8x16_t w, int8x16_t x) {
#if NEON_DOT
    return vdotq_s32(acc, w, x);
#else
    int16x8_t p = vmull_s8(vget_low_s8(w), vget_low_s8(x));
    p = vmlal_high_s8(p, w, x);
    return vpadalq_s16(acc, p);
#endif
}

INLINE float scale_at(const void *p, bk_dtype t, size_t i) {
    if (t == BK_F32) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    return t == BK_F16 ? bk_f16_to_f32(h) : bk_bf16_to_f32(h);
}

/* rows [r, r + R) x tokens [t, t + T) of y, over all blocks (R <= 4, T <= 2) */
INLINE void qtile(const bk_weight *w, const cpu_qact *a, float *y, int r, int t, const int R, const int T, const int bits,
                  const int planes) {
    const int K = w->cols, G = w->group_size, nb = K / 32, ng = K / G;
    const size_t row_bytes = (size_t)K * bits / 8;
    const uint8x16_t m0f = vdupq_n_u8(0x0f), flip = vdupq_n_u8(0x80);
    const int8x16_t ones = vdupq_n_s8(1);
    float32x4_t acc[4][2];
    float bacc[4][2] = {{0}};
    for (int i = 0; i < R; i++)
        for (int j = 0; j < T; j++) acc[i][j] = vdupq_n_f32(0.0f);
    for (int b = 0; b < nb; b++) {
        int8x16_t w0[4], w1[4];
        float sc[4];
        for (int i = 0; i < R; i++) {
            const uint8_t *wr = (const uint8_t *)w->w->data + (size_t)(r + i) * row_bytes + (size_t)b * 32 * bits / 8;
            if (bits == 4) {
                uint8x16_t v = vld1q_u8(wr);
                w0[i] = vreinterpretq_s8_u8(vandq_u8(v, m0f)); /* even elements */
                w1[i] = vreinterpretq_s8_u8(vshrq_n_u8(v, 4)); /* odd elements */
            } else {
                w0[i] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(wr), flip));
                w1[i] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(wr + 16), flip));
            }
            sc[i] = scale_at(w->scales->data, w->sdtype, (size_t)(r + i) * ng + (size_t)b * 32 / G);
        }
        for (int j = 0; j < T; j++) {
            const size_t tb = (size_t)(t + j) * nb + b;
            const int8_t *xh = a->hi + (size_t)(t + j) * K, *xl = planes == 2 ? a->lo + (size_t)(t + j) * K : NULL;
            /* the activation codes this block meets: 4-bit, evens and odds (cpu_kern.h); 8-bit, in order */
            const size_t o0 = bits == 4 ? (size_t)16 * b : (size_t)32 * b, o1 = bits == 4 ? (size_t)K / 2 + 16 * b : o0 + 16;
            int8x16_t h0 = vld1q_s8(xh + o0), h1 = vld1q_s8(xh + o1), l0 = h0, l1 = h1;
            if (planes == 2) l0 = vld1q_s8(xl + o0), l1 = vld1q_s8(xl + o1);
            int32x4_t hs = vdupq_n_s32(0), ls = hs;
            if (bits == 8) { /* the 128 * sum(x) that the recentring took off */
                hs = vshlq_n_s32(dot16(dot16(hs, ones, h0), ones, h1), 7);
                if (planes == 2) ls = vshlq_n_s32(dot16(dot16(ls, ones, l0), ones, l1), 7);
            }
            for (int i = 0; i < R; i++) {
                int32x4_t ia = dot16(dot16(hs, w0[i], h0), w1[i], h1);
                if (planes == 2) ia = vaddq_s32(vshlq_n_s32(ia, 8), dot16(dot16(ls, w0[i], l0), w1[i], l1));
                acc[i][j] = vfmaq_n_f32(acc[i][j], vcvtq_f32_s32(ia), sc[i] * a->d[tb]);
            }
        }
    }
    /* the bias term from the exact block sums */
    for (int i = 0; i < R; i++)
        for (int g = 0; g < ng; g++) {
            float bias = scale_at(w->biases->data, w->sdtype, (size_t)(r + i) * ng + g);
            for (int j = 0; j < T; j++) bacc[i][j] += bias * cpu_group_xsum(a, t + j, g, G);
        }
    for (int j = 0; j < T; j++)
        for (int i = 0; i < R; i++) y[(size_t)(t + j) * w->rows + r + i] = vaddvq_f32(acc[i][j]) + bacc[i][j];
}

CPU_QMM_LEVEL(, qmm, qtile)

/* 4 dense weights from element i as f32 */
INLINE float32x4_t load_w4(const void *p, bk_dtype t, size_t i) {
    if (t == BK_F32) return vld1q_f32((const float *)p + i);
    uint16x4_t h = vld1_u16((const uint16_t *)p + i);
    if (t == BK_F16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
}

static void dmm(const bk_weight *w, const float *x, float *y, int r0, int r1, int t0, int t1) {
    const int K = w->cols;
    for (int r = r0; r < r1; r++)
        for (int t = t0; t < t1; t++) {
            const float *xt = x + (size_t)t * K;
            float32x4_t acc = vdupq_n_f32(0.0f);
            int c = 0;
            for (; c + 4 <= K; c += 4) acc = vfmaq_f32(acc, load_w4(w->w->data, w->wdtype, (size_t)r * K + c), vld1q_f32(xt + c));
            float s = vaddvq_f32(acc);
            for (; c < K; c++) s += bk_load_float(w->w->data, w->wdtype, (size_t)r * K + c) * xt[c];
            y[(size_t)t * w->rows + r] = s;
        }
}

static float dot(const float *a, const float *b, int n) {
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy(float *y, float a, const float *x, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), a));
    for (; i < n; i++) y[i] += a * x[i];
}

const cpu_kernels NEON_TABLE = {
    .name = NEON_LEVEL,
    .quant = cpu_quant_portable,
    .qmm = qmm,
    .dmm = dmm,
    .dot = dot,
    .axpy = axpy,
    .swiglu = cpu_swiglu_portable,
};
